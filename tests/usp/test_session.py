"""Tests for conformance.usp.session: the E2E Session Context state machine.

Every test names the TR-369 requirement (R-E2E.*) or TP-469 case it checks.
The simulations at the bottom run a Controller context against an Agent
context over a pure, scripted wire that drops, duplicates and reorders
Records, and prove every payload arrives exactly once and in order.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.usp import schema
from conformance.usp.session import (
    DEFAULT_SEQUENCE_ID_LIMIT,
    STATUS_DOWN,
    STATUS_NEGOTIATING,
    STATUS_UP,
    UINT64_MAX,
    DuplicateIgnored,
    Event,
    MessageReceived,
    OutOfOrderBuffered,
    ProtocolViolation,
    RetransmitRequested,
    SegmentStored,
    SessionConfig,
    SessionContext,
    SessionExpired,
    SessionRestarted,
    SessionStarted,
    StaleRecordIgnored,
    Transmit,
    new_session_id,
    outgoing_records,
    retry_wait_interval,
    retry_wait_range,
)

CTRL = "proto::controller-1"
AGENT = "os::012345-SN0001"
NONE, BEGIN, INPROCESS, COMPLETE = (schema.PayloadSARState.NONE, schema.PayloadSARState.BEGIN,
                                    schema.PayloadSARState.INPROCESS,
                                    schema.PayloadSARState.COMPLETE)
PLAINTEXT, TLS12 = schema.PayloadSecurity.PLAINTEXT, schema.PayloadSecurity.TLS12


def pair(config: SessionConfig | None = None, **kwargs: object
         ) -> tuple[SessionContext, SessionContext]:
    cfg = config if config is not None else SessionConfig(**kwargs)  # type: ignore[arg-type]
    ctrl = SessionContext(CTRL, AGENT, cfg, rng=random.Random(1))
    agent = SessionContext(AGENT, CTRL, cfg, rng=random.Random(2))
    return ctrl, agent


def of(events: Iterable[Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def payloads(events: Iterable[Event]) -> list[bytes]:
    return [e.payload for e in of(events, MessageReceived)]


def peer_record(sid: int, seq: int, *, expected: int = 1, payload: Sequence[bytes] = (b"m",),
                retransmit: int = 0, sar: int = NONE, rec_sar: int = NONE,
                security: int = PLAINTEXT, to_id: str = CTRL, from_id: str = AGENT
                ) -> schema.Record:
    """A hand-made Record from the Agent to the Controller."""
    rec = schema.Record(version="1.4", to_id=to_id, from_id=from_id,
                        payload_security=cast(Any, security))
    ctx = rec.session_context
    ctx.session_id, ctx.sequence_id, ctx.expected_id = sid, seq, expected
    ctx.retransmit_id = retransmit
    ctx.payload_sar_state, ctx.payloadrec_sar_state = cast(Any, sar), cast(Any, rec_sar)
    ctx.payload.extend(payload)
    return rec


def deliver(records: Iterable[schema.Record], ctx: SessionContext, now: float = 0.0
            ) -> list[Event]:
    events: list[Event] = []
    for rec in records:
        events.extend(ctx.receive(rec, now=now))
    return events


def established(config: SessionConfig | None = None, **kwargs: object
                ) -> tuple[SessionContext, SessionContext]:
    """A Controller/Agent pair with an Up session (one round trip done)."""
    ctrl, agent = pair(config, **kwargs)
    deliver(ctrl.send(b"hello", now=0), agent)
    deliver(agent.send(b"hi", now=0), ctrl)
    assert ctrl.status == agent.status == STATUS_UP
    return ctrl, agent


# --- helpers -------------------------------------------------------------------


class _ScriptedRng(random.Random):
    def __init__(self, values: list[int]) -> None:
        super().__init__(0)
        self._values = values

    def randint(self, a: int, b: int) -> int:
        return self._values.pop(0)


def test_new_session_id_is_greater_than_one_and_avoids_used_ids() -> None:
    """R-E2E.3: ids > 1, scoped to the remote endpoint (no reuse)."""
    rng = random.Random(7)
    ids = {new_session_id(rng) for _ in range(200)}
    assert all(2 <= sid <= UINT64_MAX for sid in ids)
    assert new_session_id(_ScriptedRng([5, 5, 9]), exclude={5}) == 9
    assert new_session_id(random.Random(3)) == new_session_id(random.Random(3))


def test_retry_wait_range_follows_the_table() -> None:
    """R-E2E.10 default table (m=5, k=2000) and R-E2E.11 cap from retry #10 on."""
    expected = [(5, 10), (10, 20), (20, 40), (40, 80), (80, 160), (160, 320), (320, 640),
                (640, 1280), (1280, 2560), (2560, 5120)]
    for count, bounds in enumerate(expected, start=1):
        assert retry_wait_range(count) == pytest.approx(bounds)
    assert retry_wait_range(11) == retry_wait_range(10) == pytest.approx((2560, 5120))
    assert retry_wait_range(2, minimum_wait=3, multiplier=1500) == pytest.approx((4.5, 6.75))
    with pytest.raises(ValueError):
        retry_wait_range(0)
    rng = random.Random(1)
    for count in range(1, 13):
        low, high = retry_wait_range(count)
        assert low <= retry_wait_interval(count, rng) <= high


# --- configuration -------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"max_record_size": 511}, {"reserved_record_bytes": -1}, {"session_expiration": -1},
    {"max_retransmit_tries": -2}, {"retry_minimum_wait_interval": 0},
    {"retry_interval_multiplier": 999}, {"retransmit_request_after": -1},
    {"resend_unacknowledged_after": 0}, {"stale_session_timeout": 0},
    {"max_outgoing_records": 0},
    {"max_incoming_records": 0}, {"max_reassembled_size": 0}, {"retired_session_history": 0},
    {"sequence_id_limit": 0}, {"sequence_id_limit": UINT64_MAX + 1}, {"payload_security": 5},
])
def test_config_rejects_out_of_range_values(kwargs: dict[str, object]) -> None:
    """TR-181 E2ESession ranges (MaxUSPRecordSize >= 512, MaxRetransmitTries >= -1...)."""
    with pytest.raises(ValueError):
        SessionConfig(**kwargs)  # type: ignore[arg-type]


def test_config_defaults_and_segmentation_flag() -> None:
    cfg = SessionConfig()
    assert not cfg.segmentation_enabled and cfg.session_expiration == 0
    assert cfg.sequence_id_limit == DEFAULT_SEQUENCE_ID_LIMIT == UINT64_MAX - 10_000
    assert SessionConfig(max_record_size=512).segmentation_enabled
    assert not SessionConfig(max_record_size=0).segmentation_enabled


def test_config_from_e2e_session_parameters() -> None:
    """Device.LocalAgent.Controller.{i}.E2ESession.* values map onto the knobs."""
    cfg = SessionConfig.from_e2e_session({
        "SessionExpiration": "60", "SessionRetryMinimumWaitInterval": "7",
        "SessionRetryIntervalMultiplier": 3000, "MaxUSPRecordSize": "1024",
        "SegmentedPayloadChunkSize": "4096", "MaxRetransmitTries": "-1",
        "PayloadSecurity": "TLS"}, retransmit_request_after=2.0)
    assert cfg.session_expiration == 60 and cfg.retry_minimum_wait_interval == 7
    assert cfg.retry_interval_multiplier == 3000 and cfg.max_record_size == 1024
    assert cfg.max_retransmit_tries == -1 and cfg.payload_security == TLS12
    assert cfg.retransmit_request_after == 2.0
    legacy = SessionConfig.from_e2e_session({"MaxUSPRecordSize": "0",
                                             "SegmentedPayloadChunkSize": "600",
                                             "PayloadSecurity": "Plaintext"})
    assert legacy.max_record_size == 600 and legacy.payload_security == PLAINTEXT
    assert SessionConfig.from_e2e_session({"MaxUSPRecordSize": 0}).max_record_size is None
    assert SessionConfig.from_e2e_session({}) == SessionConfig()


@pytest.mark.parametrize("params", [
    {"SessionExpiration": "soon"}, {"SessionExpiration": True},
    {"SessionRetryMinimumWaitInterval": "0"}, {"SessionRetryIntervalMultiplier": "999"},
    {"MaxRetransmitTries": "11"}, {"PayloadSecurity": "ROT13"}, {"MaxUSPRecordSize": "100"},
])
def test_config_from_e2e_session_rejects_bad_values(params: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SessionConfig.from_e2e_session(params)


def test_chunk_size_needs_room_for_headers() -> None:
    with pytest.raises(ValueError):
        SessionContext("x" * 400, "y" * 400, SessionConfig(max_record_size=512))
    assert SessionContext(CTRL, AGENT).chunk_size is None


def test_constructor_session_id_is_validated_and_used() -> None:
    """R-E2E.3 for caller-chosen ids; R-E2E.14 the first Record is sequence 1."""
    for bad in (0, 1, UINT64_MAX + 1):
        with pytest.raises(ValueError):
            SessionContext(CTRL, AGENT, session_id=bad)
    ctx = SessionContext(CTRL, AGENT, session_id=4242)
    assert ctx.session_id == 4242 and ctx.status == STATUS_NEGOTIATING
    [rec] = ctx.send(b"get", now=0)
    assert (rec.session_context.session_id, rec.session_context.sequence_id) == (4242, 1)


# --- transmission --------------------------------------------------------------


def test_send_builds_session_context_records() -> None:
    """R-E2E.14, R-E2E.15, R-E2E.17, R-E2E.18: seq starts at 1, grows by one,
    carries expected_id and one payload_security value; to_id/from_id/version
    are filled in."""
    ctrl = SessionContext(CTRL, AGENT, SessionConfig(payload_security=TLS12),
                          rng=random.Random(5))
    assert ctrl.status == STATUS_DOWN and ctrl.session_id is None
    records = [r for i in range(3) for r in ctrl.send(b"msg%d" % i, now=i)]
    assert [r.session_context.sequence_id for r in records] == [1, 2, 3]
    assert {r.session_context.session_id for r in records} == {ctrl.session_id}
    assert ctrl.session_id is not None and ctrl.session_id >= 2
    for rec in records:
        assert (rec.to_id, rec.from_id, rec.version) == (AGENT, CTRL, "1.4")
        assert rec.payload_security == TLS12
        assert rec.session_context.expected_id == 1
        assert rec.session_context.payload_sar_state == NONE
        assert rec.session_context.retransmit_id == 0
    assert ctrl.next_sequence_id == 4 and ctrl.status == STATUS_NEGOTIATING
    assert of(ctrl.poll(0), SessionStarted) == [SessionStarted(ctrl.session_id, False)]


def test_send_rejects_empty_payloads() -> None:
    ctrl = SessionContext(CTRL, AGENT)
    for bad in ([b""], [], [b"a", b""]):
        with pytest.raises(ValueError):
            ctrl.send_payload_records(bad, now=0)
    with pytest.raises(ValueError):
        ctrl.send(b"", now=0)


def test_returned_records_are_copies() -> None:
    """R-E2E.16: what the caller does to a returned Record (e.g. add a MAC)
    does not alter the copy kept for retransmission."""
    ctrl, agent = established()
    [rec] = ctrl.send(b"original", now=1)
    rec.session_context.payload[0] = b"tampered"
    rec.mac_signature = b"sig"
    req = peer_record(agent.session_id, 2, expected=2, payload=(),  # type: ignore[arg-type]
                      retransmit=rec.session_context.sequence_id)
    [event] = of(ctrl.receive(req, now=2), RetransmitRequested)
    assert event.records[0].session_context.payload[0] == b"original"
    assert event.records[0].mac_signature == b""


def test_expected_id_tracks_received_records() -> None:
    """R-E2E.17 / R-E2E.20 rule 4: expected_id = last in-order sequence_id + 1."""
    ctrl, agent = pair()
    deliver(ctrl.send(b"a", now=0) + ctrl.send(b"b", now=0), agent)
    assert agent.expected_id == 3
    [rec] = agent.send(b"resp", now=0)
    assert rec.session_context.expected_id == 3


# --- reception -----------------------------------------------------------------


def test_peer_starts_the_session() -> None:
    """R-E2E.4 and TP-469 3.8: a Record with an unknown session id starts a
    session; our first Record in it uses that id and sequence_id 1."""
    ctrl, agent = pair()
    events = deliver(ctrl.send(b"get", now=0), agent)
    assert of(events, SessionStarted) == [SessionStarted(ctrl.session_id, True)]  # type: ignore[arg-type]
    assert payloads(events) == [b"get"]
    assert agent.status == STATUS_UP and agent.session_id == ctrl.session_id
    [ack] = outgoing_records(agent.poll(0))  # the establishing Record gets an answer
    assert ack.session_context.session_id == ctrl.session_id
    assert ack.session_context.sequence_id == 1 and ack.session_context.expected_id == 2
    assert not ack.session_context.payload
    deliver([ack], ctrl)
    assert ctrl.status == STATUS_UP and ctrl.peer_expected_id == 2
    assert ctrl.outgoing_sequence_ids == ()


def test_record_for_another_endpoint_is_ignored() -> None:
    """R-E2E.1: wrong to_id is ignored without touching state."""
    ctrl = SessionContext(CTRL, AGENT)
    events = ctrl.receive(peer_record(77, 1, to_id="proto::someone-else"), now=0)
    assert [e.requirement for e in of(events, ProtocolViolation)] == ["R-E2E.1"]
    assert len(events) == 1
    assert ctrl.session_id is None and ctrl.expected_id == 1


def test_record_from_another_endpoint_or_kind_is_ignored() -> None:
    """R-E2E.3: a context is scoped to one remote endpoint; non-session Records
    are not its business."""
    ctrl = SessionContext(CTRL, AGENT)
    assert of(ctrl.receive(peer_record(77, 1, from_id="os::other"), now=0), ProtocolViolation)
    plain = schema.Record(to_id=CTRL, from_id=AGENT)
    plain.no_session_context.payload = b"x"
    assert of(ctrl.receive(plain, now=0), ProtocolViolation)
    assert ctrl.session_id is None


def test_out_of_order_records_wait_for_the_gap() -> None:
    """R-E2E.20 and TP-469 3.11: sequence 1, 4, 2, 3 is delivered as 1, 2, 3, 4."""
    ctrl = SessionContext(CTRL, AGENT)
    assert payloads(ctrl.receive(peer_record(99, 1, payload=[b"1"]), now=0)) == [b"1"]
    events = ctrl.receive(peer_record(99, 4, payload=[b"4"]), now=0)
    assert of(events, OutOfOrderBuffered) == [OutOfOrderBuffered(4, 2)]
    assert ctrl.buffered_sequence_ids == (4,)
    assert payloads(ctrl.receive(peer_record(99, 2, payload=[b"2"]), now=0)) == [b"2"]
    assert payloads(ctrl.receive(peer_record(99, 3, payload=[b"3"]), now=0)) == [b"3", b"4"]
    assert ctrl.expected_id == 5 and ctrl.buffered_sequence_ids == ()


def test_duplicates_are_ignored_and_acknowledged() -> None:
    """R-E2E.25 and R-E2E.20 rule 2 (TP-469 3.15): duplicates, processed or
    still buffered, are dropped; a processed one makes us re-acknowledge."""
    ctrl = SessionContext(CTRL, AGENT)
    first = peer_record(99, 1)
    assert payloads(ctrl.receive(first, now=0)) == [b"m"]
    ctrl.poll(0)  # answer the session start
    assert ctrl.receive(first, now=1) == [DuplicateIgnored(1)]
    [ack] = outgoing_records(ctrl.poll(1))
    assert ack.session_context.expected_id == 2 and not ack.session_context.payload
    ahead = peer_record(99, 3)
    ctrl.receive(ahead, now=2)
    assert ctrl.receive(ahead, now=2) == [DuplicateIgnored(3)]
    assert ctrl.buffered_sequence_ids == (3,)


def test_sequence_id_zero_is_reported() -> None:
    """R-E2E.14: sequence ids start at 1."""
    ctrl = SessionContext(CTRL, AGENT)
    events = ctrl.receive(peer_record(99, 0), now=0)
    assert [e.requirement for e in of(events, ProtocolViolation)] == ["R-E2E.14"]
    assert of(events, DuplicateIgnored) and not of(events, MessageReceived)


def test_outgoing_buffer_released_by_expected_id() -> None:
    """R-E2E.16: Records stay buffered until the peer's expected_id passes them."""
    ctrl, agent = pair()
    deliver(ctrl.send(b"a", now=0) + ctrl.send(b"b", now=0) + ctrl.send(b"c", now=0), agent)
    assert ctrl.outgoing_sequence_ids == (1, 2, 3)
    ctrl.receive(peer_record(ctrl.session_id, 1, expected=3), now=1)  # type: ignore[arg-type]
    assert ctrl.outgoing_sequence_ids == (3,) and ctrl.peer_expected_id == 3


def test_expected_id_beyond_what_was_sent_is_clamped() -> None:
    """R-E2E.17: an expected_id for Records never sent is a violation."""
    ctrl, _agent = established()
    sid = ctrl.session_id
    events = ctrl.receive(peer_record(sid, 2, expected=10**9), now=1)  # type: ignore[arg-type]
    assert [e.requirement for e in of(events, ProtocolViolation)] == ["R-E2E.17"]
    assert ctrl.peer_expected_id == ctrl.next_sequence_id


# --- retransmission ------------------------------------------------------------


def test_retransmit_request_resends_the_same_record() -> None:
    """R-E2E.16, R-E2E.20 rule 3.2 and TP-469 3.12: the requested Record is
    sent again unchanged, even a minute later."""
    ctrl, agent = established()
    [resp] = agent.send(b"GetResp", now=1)
    seq = resp.session_context.sequence_id
    req = ctrl.send(b"trigger", now=61)
    req[0].session_context.retransmit_id = seq  # hand-made request from the controller
    events = deliver(req, agent, now=61)
    [event] = of(events, RetransmitRequested)
    assert event.sequence_id == seq and event.records == (resp,)
    assert outgoing_records(events) == [resp]


def test_max_retransmit_tries_restarts_the_session() -> None:
    """TP-469 3.14 and R-E2E.21: with MaxRetransmitTries=2 the third request
    for a Record is a failure and a new session starts."""
    _ctrl, agent = established(max_retransmit_tries=2, retry_minimum_wait_interval=1)
    [resp] = agent.send(b"SetResp", now=1)
    seq, old = resp.session_context.sequence_id, agent.session_id
    for attempt in range(2):
        events = agent.receive(peer_record(old, 2 + attempt, expected=seq, payload=(),  # type: ignore[arg-type]
                                           retransmit=seq, to_id=AGENT, from_id=CTRL), now=2)
        assert [e.sequence_id for e in of(events, RetransmitRequested)] == [seq]
    events = agent.receive(peer_record(old, 4, expected=seq, payload=(), retransmit=seq,  # type: ignore[arg-type]
                                       to_id=AGENT, from_id=CTRL), now=3)
    assert not of(events, RetransmitRequested)
    [restart] = of(events, SessionRestarted)
    assert restart.requirement == "R-E2E.21" and not restart.initiated_by_peer
    assert restart.old_session_id == old and restart.new_session_id == agent.session_id != old
    assert restart.unacknowledged == (b"SetResp",)
    assert restart.records == ()  # deferred by the retry policy (R-E2E.10)


def test_max_retransmit_tries_zero_and_unlimited() -> None:
    """TR-181 MaxRetransmitTries: 0 never resends, -1 always does."""
    for tries, resent in ((0, False), (-1, True)):
        ctrl, agent = established(max_retransmit_tries=tries)
        [resp] = agent.send(b"r", now=1)
        seq = resp.session_context.sequence_id
        for n in range(5 if resent else 1):
            events = agent.receive(peer_record(ctrl.session_id, 2 + n, expected=seq,  # type: ignore[arg-type]
                                               payload=(), retransmit=seq, to_id=AGENT,
                                               from_id=CTRL), now=2)
            assert bool(of(events, RetransmitRequested)) is resent
            assert bool(of(events, SessionRestarted)) is not resent


def test_retransmit_of_unknown_or_acknowledged_records() -> None:
    """R-E2E.20/R-E2E.21: a request for a Record never sent fails the session;
    one for an acknowledged Record is stale and ignored."""
    ctrl, _agent = established()
    sid = ctrl.session_id
    stale = ctrl.receive(peer_record(sid, 2, expected=2, payload=(), retransmit=1), now=1)  # type: ignore[arg-type]
    assert not of(stale, RetransmitRequested) and not of(stale, SessionRestarted)
    bogus = ctrl.receive(peer_record(sid, 3, expected=2, payload=(), retransmit=50), now=1)  # type: ignore[arg-type]
    assert [e.requirement for e in of(bogus, ProtocolViolation)] == ["R-E2E.20"]
    assert of(bogus, SessionRestarted) and ctrl.session_id != sid


def test_evicted_record_cannot_be_retransmitted() -> None:
    """R-E2E.16 with a bounded buffer: asking for an evicted Record restarts."""
    ctrl, _agent = established(max_outgoing_records=2)
    for i in range(4):
        ctrl.send(b"%d" % i, now=1)
    assert ctrl.outgoing_sequence_ids == (4, 5)
    events = ctrl.receive(peer_record(ctrl.session_id, 2, expected=2, payload=(),  # type: ignore[arg-type]
                                      retransmit=2), now=2)
    assert of(events, SessionRestarted)


def test_gap_triggers_a_retransmit_request() -> None:
    """R-E2E.20 / "USP Record Retransmission": a gap that persists makes us ask
    for the missing Record, via poll or piggybacked on the next send."""
    ctrl = SessionContext(CTRL, AGENT, SessionConfig(retransmit_request_after=2.0))
    ctrl.receive(peer_record(99, 1), now=0)
    ctrl.poll(0)
    ctrl.receive(peer_record(99, 3), now=10)
    assert ctrl.next_deadline() == 12
    assert outgoing_records(ctrl.poll(11)) == []
    [req] = outgoing_records(ctrl.poll(12))
    assert req.session_context.retransmit_id == 2 and not req.session_context.payload
    assert outgoing_records(ctrl.poll(13)) == []  # paced
    [piggy] = ctrl.send(b"request", now=14)
    assert piggy.session_context.retransmit_id == 2 and piggy.session_context.payload
    [plain] = ctrl.send(b"another", now=14.5)
    assert plain.session_context.retransmit_id == 0
    assert payloads(ctrl.receive(peer_record(99, 2, payload=[b"2"]), now=15)) == [b"2", b"m"]
    assert ctrl.next_deadline() is None


def test_control_fields_of_buffered_records_act_at_once() -> None:
    """R-E2E.16/R-E2E.20: acknowledgements and retransmit requests on a Record
    that must wait in the buffer are honoured on arrival (no deadlock)."""
    ctrl, _agent = established()
    [a] = ctrl.send(b"a", now=1)
    sid = ctrl.session_id
    events = ctrl.receive(peer_record(sid, 3, expected=2, payload=(),  # type: ignore[arg-type]
                                      retransmit=a.session_context.sequence_id), now=2)
    assert of(events, OutOfOrderBuffered) and of(events, RetransmitRequested)
    # When the gap fills, the request is not honoured twice.
    events = ctrl.receive(peer_record(sid, 2, expected=3, payload=[b"x"]), now=3)  # type: ignore[arg-type]
    assert payloads(events) == [b"x"] and not of(events, RetransmitRequested)


def test_incoming_buffer_is_bounded() -> None:
    """R-E2E.21: a Record that cannot be buffered fails the session."""
    ctrl, _ = established(max_incoming_records=4)
    sid = ctrl.session_id
    events = ctrl.receive(peer_record(sid, 2 + 4), now=1)  # type: ignore[arg-type]
    assert [e.requirement for e in of(events, ProtocolViolation)] == ["R-E2E.21"]
    assert of(events, SessionRestarted) and ctrl.session_id != sid


def test_unacknowledged_records_are_resent_when_enabled() -> None:
    """R-E2E.25 makes repeats harmless: with resend_unacknowledged_after a lost
    last Record is recovered; the duplicate earns an acknowledgement."""
    ctrl, agent = established(resend_unacknowledged_after=5.0)
    ctrl.send(b"lost", now=10)  # dropped on the wire
    assert ctrl.next_deadline() == 15
    [again] = outgoing_records(ctrl.poll(15))
    assert payloads(agent.receive(again, now=15)) == [b"lost"]
    dup = agent.receive(again, now=16)
    assert dup == [DuplicateIgnored(again.session_context.sequence_id)]
    deliver(outgoing_records(agent.poll(16)), ctrl, now=16)
    assert ctrl.outgoing_sequence_ids == () and ctrl.next_deadline() is None


# --- payload security ------------------------------------------------------------


def test_payload_security_change_fails_the_record() -> None:
    """R-E2E.19 and TP-469 3.13: a Record with another payload_security gets
    no processing and a new session starts."""
    ctrl = SessionContext(CTRL, AGENT, rng=random.Random(3))
    ctrl.receive(peer_record(99, 1, security=TLS12), now=0)
    events = ctrl.receive(peer_record(99, 2, security=PLAINTEXT, payload=[b"get"]), now=1)
    assert not of(events, MessageReceived)
    assert [e.requirement for e in of(events, ProtocolViolation)] == ["R-E2E.19"]
    [restart] = of(events, SessionRestarted)
    assert restart.old_session_id == 99 and ctrl.session_id != 99
    unknown = SessionContext(CTRL, AGENT).receive(peer_record(99, 1, security=9), now=0)
    assert [e.requirement for e in of(unknown, ProtocolViolation)] == ["R-E2E.19"]


# --- session ids, restarts ---------------------------------------------------------


def test_peer_restart_with_new_session_id() -> None:
    """R-E2E.6 and TP-469 3.9: a different session id restarts the context
    with sequence ids back at 1; old late Records are then ignored."""
    ctrl, _agent = established()
    old = ctrl.session_id
    ctrl.send(b"pending", now=1)  # never acknowledged
    events = ctrl.receive(peer_record(777, 1, payload=[b"Get"]), now=2)
    [restart] = of(events, SessionRestarted)
    assert restart == SessionRestarted(777, old, True, "peer started a new session", "R-E2E.6",
                                       (), (b"pending",))
    assert payloads(events) == [b"Get"]
    [resp] = ctrl.send(b"GetResp", now=2)
    assert (resp.session_context.session_id, resp.session_context.sequence_id) == (777, 1)
    assert resp.session_context.expected_id == 2
    late = ctrl.receive(peer_record(old, 2), now=3)  # type: ignore[arg-type]
    assert [type(e) for e in late] == [StaleRecordIgnored]
    assert ctrl.session_id == 777 and old in ctrl.retired_session_ids


def test_peer_restart_whose_first_records_are_missing() -> None:
    """R-E2E.6 + R-E2E.20: joining a new session at sequence 3 buffers it and
    asks for sequence 1."""
    ctrl = SessionContext(CTRL, AGENT, SessionConfig(retransmit_request_after=0))
    events = ctrl.receive(peer_record(555, 3), now=0)
    assert of(events, SessionStarted) and of(events, OutOfOrderBuffered)
    [ack] = outgoing_records(ctrl.poll(0))
    assert ack.session_context.retransmit_id == 1 and ack.session_context.expected_id == 1


def test_previous_session_processed_through_last_expected_id() -> None:
    """R-E2E.22: everything below the expected_id we last sent was processed
    before the session changes."""
    ctrl, agent = pair()
    got = deliver(ctrl.send(b"1", now=0) + ctrl.send(b"2", now=0), agent)
    [last] = agent.send(b"resp", now=0)
    ctrl.send(b"3", now=0)  # lost
    got += agent.receive(peer_record(31337, 1, to_id=AGENT, from_id=CTRL), now=1)
    assert last.session_context.expected_id == 3 and payloads(got)[:2] == [b"1", b"2"]
    assert of(got, SessionRestarted)


def test_invalid_session_ids() -> None:
    """R-E2E.24: session_id 0 is ignored and the session restarts; R-E2E.3:
    session_id 1 is reported but tolerated."""
    ctrl, _ = established()
    sid = ctrl.session_id
    events = ctrl.receive(peer_record(0, 2, payload=[b"x"]), now=1)
    assert [e.requirement for e in of(events, ProtocolViolation)] == ["R-E2E.24"]
    assert not of(events, MessageReceived) and of(events, SessionRestarted)
    assert ctrl.session_id not in (sid, None)
    fresh = SessionContext(CTRL, AGENT)
    assert of(fresh.receive(peer_record(0, 1), now=0), ProtocolViolation)[0].requirement == "R-E2E.24"
    assert fresh.session_id is None
    events = fresh.receive(peer_record(1, 1), now=0)
    assert [e.requirement for e in of(events, ProtocolViolation)] == ["R-E2E.3"]
    assert payloads(events) == [b"m"]


def test_manual_restart_announces_the_new_session() -> None:
    """R-E2E.6 seen from the originator: an empty Record with sequence 1."""
    ctrl, agent = established()
    old = ctrl.session_id
    event = ctrl.restart(now=5)
    assert isinstance(event, SessionRestarted) and event.old_session_id == old
    [announce] = event.records
    ctx = announce.session_context
    assert (ctx.session_id, ctx.sequence_id, ctx.expected_id) == (ctrl.session_id, 1, 1)
    assert not ctx.payload and ctrl.status == STATUS_NEGOTIATING
    events = agent.receive(announce, now=5)
    assert of(events, SessionRestarted)[0].initiated_by_peer
    deliver(outgoing_records(agent.poll(5)), ctrl, now=5)
    assert ctrl.status == STATUS_UP and agent.session_id == ctrl.session_id


def test_restart_after_failure_is_deferred_by_retry_policy() -> None:
    """R-E2E.23 (integrity failure reported by the caller) + R-E2E.10: the new
    session is announced after the first retry wait."""
    ctrl, _ = established(retry_minimum_wait_interval=5)
    event = ctrl.restart(now=100, reason="integrity check failed", requirement="R-E2E.23",
                         failure=True)
    assert isinstance(event, SessionRestarted) and event.records == ()
    assert ctrl.current_retry_count == 1
    deadline = ctrl.next_deadline()
    assert deadline is not None and 105 <= deadline <= 110
    assert outgoing_records(ctrl.poll(deadline - 0.01)) == []
    [announce] = outgoing_records(ctrl.poll(deadline))
    assert announce.session_context.sequence_id == 1
    assert announce.session_context.session_id == event.new_session_id


def test_establish_sends_an_empty_first_record() -> None:
    """TP-469 3.8 (a Record with an empty payload establishes a session)."""
    ctrl = SessionContext(CTRL, AGENT, rng=random.Random(9))
    [rec] = ctrl.establish(now=0)
    assert rec.session_context.sequence_id == 1 and not rec.session_context.payload
    assert ctrl.establish(now=1) == []
    assert of(ctrl.poll(1), SessionStarted)
    chosen = SessionContext(CTRL, AGENT, session_id=99)
    [rec] = chosen.establish(now=0)
    assert rec.session_context.session_id == 99


def test_establish_record_goes_out_once() -> None:
    """The Record establish() returns is not handed out again by the next poll."""
    ctrl = SessionContext(CTRL, AGENT, rng=random.Random(9))
    assert len(ctrl.establish(now=0)) == 1
    events = ctrl.poll(0.5)
    assert of(events, SessionStarted) and outgoing_records(events) == []


def test_reconfigure_applies_to_the_running_session() -> None:
    """TR-181 E2ESession changes: SessionExpiration counts for the current session
    (TP-469 3.10), MaxRetransmitTries for the next request (TP-469 3.14), the record
    size for the next Record; payload_security stays for the session (R-E2E.18)."""
    ctrl, agent = pair(session_expiration=60, max_retransmit_tries=0)
    deliver(ctrl.send(b"hello", now=0), agent, now=0)
    [answer] = agent.send(b"answer", now=0)
    agent.reconfigure(SessionConfig(session_expiration=5, max_retransmit_tries=1,
                                    max_record_size=512, payload_security=TLS12))
    assert agent.config.session_expiration == 5 and agent.chunk_size is not None
    request = ctrl.send(b"again", now=1)[0]
    request.session_context.retransmit_id = answer.session_context.sequence_id
    [resent] = outgoing_records(agent.receive(request, now=1))
    assert resent == answer
    [later] = agent.send(b"x" * 10, now=2)
    assert later.payload_security == PLAINTEXT  # fixed for this session
    assert of(agent.poll(8), SessionExpired)  # 5 s after the last activity, not 60
    [fresh] = agent.send(b"y", now=9)
    assert fresh.payload_security == TLS12  # the next session takes the new value
    with pytest.raises(ValueError, match="no room"):
        SessionContext("a" * 600, "b").reconfigure(SessionConfig(max_record_size=512))
    kept = SessionContext(CTRL, AGENT, SessionConfig(retired_session_history=4))
    kept.reconfigure(SessionConfig(retired_session_history=2))
    assert kept.config.retired_session_history == 2


def test_restart_without_a_session_starts_one() -> None:
    event = SessionContext(CTRL, AGENT).restart(now=0)
    assert isinstance(event, SessionStarted) and len(event.records) == 1


# --- establishment retries, expiry, exhaustion -------------------------------------


def test_establishment_retries_back_off_until_an_answer() -> None:
    """R-E2E.10/R-E2E.11: the first Record is repeated with growing waits;
    R-E2E.12: a received Record resets the retry count."""
    ctrl = SessionContext(CTRL, AGENT, SessionConfig(retry_minimum_wait_interval=5),
                          rng=random.Random(4))
    [first] = ctrl.send(b"get", now=0)
    assert ctrl.next_deadline() == float("-inf")  # SessionStarted waits for poll
    assert of(ctrl.poll(0), SessionStarted)
    now, previous = 0.0, 0.0
    for count in range(1, 12):
        deadline = ctrl.next_deadline()
        assert deadline is not None
        low, high = retry_wait_range(count)
        assert low <= deadline - previous <= high
        [again] = outgoing_records(ctrl.poll(deadline))
        assert again == first and ctrl.current_retry_count == count
        now = previous = deadline
    ctrl.receive(peer_record(first.session_context.session_id, 1, expected=2), now=now)
    assert ctrl.current_retry_count == 0 and ctrl.status == STATUS_UP
    assert SessionContext(CTRL, AGENT).current_retry_count == 0  # R-E2E.13: after a reboot


def test_establishment_retries_stop_at_session_expiration() -> None:
    """R-E2E.11: retries continue until SessionExpiration is reached."""
    ctrl = SessionContext(CTRL, AGENT, SessionConfig(session_expiration=30),
                          rng=random.Random(4))
    ctrl.send(b"get", now=0)
    sent = 0
    while (deadline := ctrl.next_deadline()) is not None and deadline < 30:
        sent += len(outgoing_records(ctrl.poll(deadline)))
    assert sent >= 2
    events = ctrl.poll(30)
    assert of(events, SessionExpired) and ctrl.status == STATUS_DOWN
    assert ctrl.next_deadline() is None


def test_session_expiration() -> None:
    """R-E2E.7 and TP-469 3.10: activity keeps the session; idleness beyond
    SessionExpiration ends it and the next interaction starts a new one."""
    ctrl, agent = established(session_expiration=60)
    sid = agent.session_id
    for t in (30, 80, 130):
        [rec] = agent.send(b"Notify", now=t)
        assert rec.session_context.session_id == sid
        deliver([rec], ctrl, now=t)
    assert agent.next_deadline() == 190
    assert agent.poll(189) == []
    [expired] = of(agent.poll(190), SessionExpired)
    assert expired.session_id == sid and agent.status == STATUS_DOWN
    [rec] = agent.send(b"Notify", now=200)
    assert rec.session_context.session_id not in (sid, 0)
    assert rec.session_context.sequence_id == 1
    [restart] = of(agent.poll(200), SessionRestarted)
    assert restart.requirement == "R-E2E.7" and restart.old_session_id == sid
    assert of(deliver([rec], ctrl, now=200), SessionRestarted)


def test_expired_session_is_detected_lazily_and_on_peer_records() -> None:
    """R-E2E.7: a Record on the expired session makes us start a new one."""
    ctrl, _agent = established(session_expiration=10)
    old = ctrl.session_id
    events = ctrl.receive(peer_record(old, 2), now=50)  # type: ignore[arg-type]
    assert [type(e) for e in events][:2] == [SessionExpired, StaleRecordIgnored]
    [restart] = of(events, SessionRestarted)
    assert restart.requirement == "R-E2E.7" and len(restart.records) == 1
    assert restart.records[0].session_context.sequence_id == 1
    assert ctrl.session_id not in (old, None)
    assert SessionConfig().session_expiration == 0  # 0 disables expiry (TR-181)


def test_sequence_exhaustion_on_transmit() -> None:
    """R-E2E.9: after sending a sequence id within the margin, the next contact
    uses a new session."""
    ctrl, _agent = pair(sequence_id_limit=3)
    sent = [r for i in range(3) for r in ctrl.send(b"%d" % i, now=0)]
    sid = ctrl.session_id
    assert [r.session_context.sequence_id for r in sent] == [1, 2, 3]
    [rec] = ctrl.send(b"next", now=1)
    assert rec.session_context.sequence_id == 1 and rec.session_context.session_id != sid
    [restart] = of(ctrl.poll(1), SessionRestarted)
    assert restart.requirement == "R-E2E.9"
    assert restart.unacknowledged == (b"0", b"1", b"2")


def test_sequence_exhaustion_on_receive() -> None:
    """R-E2E.8: a received sequence id within 10,000 of the maximum is
    processed, then a new session is established."""
    ctrl = SessionContext(CTRL, AGENT)
    ctrl.receive(peer_record(99, 1), now=0)
    events = ctrl.receive(peer_record(99, 2, payload=[b"last"]), now=0)
    assert payloads(events) == [b"last"] and not of(events, SessionRestarted)
    near = SessionContext(CTRL, AGENT, SessionConfig(sequence_id_limit=2))
    near.receive(peer_record(99, 1), now=0)
    events = near.receive(peer_record(99, 2, payload=[b"last"]), now=0)
    assert payloads(events) == [b"last"]
    [restart] = of(events, SessionRestarted)
    assert restart.requirement == "R-E2E.8" and len(restart.records) == 1
    huge = SessionContext(CTRL, AGENT)
    huge.receive(peer_record(99, 1), now=0)
    assert of(huge.receive(peer_record(99, DEFAULT_SEQUENCE_ID_LIMIT), now=0), SessionRestarted)


# --- collisions --------------------------------------------------------------------


def test_simultaneous_session_starts_converge_on_the_larger_id() -> None:
    """R-E2E.5: at most one session survives when both sides originate."""
    ctrl, agent = pair()
    to_agent = ctrl.send(b"c1", now=0)
    to_ctrl = agent.send(b"a1", now=0)
    big, small = max(ctrl.session_id, agent.session_id), min(ctrl.session_id, agent.session_id)  # type: ignore[type-var]
    winner, loser = (ctrl, agent) if ctrl.session_id == big else (agent, ctrl)
    e_agent = deliver(to_agent, agent)
    e_ctrl = deliver(to_ctrl, ctrl)
    winner_events, loser_events = (e_ctrl, e_agent) if winner is ctrl else (e_agent, e_ctrl)
    assert of(winner_events, StaleRecordIgnored) and not payloads(winner_events)
    [restart] = of(loser_events, SessionRestarted)
    assert restart.new_session_id == big and restart.old_session_id == small
    assert loser.session_id == winner.session_id == big
    # The loser's unacknowledged payload is handed back for resending.
    lost_payload = restart.unacknowledged
    assert len(lost_payload) == 1
    records = loser.send(lost_payload[0], now=1) + outgoing_records(loser.poll(1))
    assert payloads(deliver(records, winner, now=1)) == list(lost_payload)
    # Late Records of the losing session stay ignored.
    late = to_ctrl if winner is ctrl else to_agent
    assert [type(e) for e in deliver(late, winner, now=2)] == [StaleRecordIgnored]


def test_peer_stuck_on_abandoned_session_gets_a_fresh_one() -> None:
    """R-E2E.24: if the winner took a late Record of the losing session for a
    restart, the loser recognises its abandoned id and starts afresh."""
    ctrl = SessionContext(CTRL, AGENT, rng=_ScriptedRng([1000, 3000]))
    agent = SessionContext(AGENT, CTRL, rng=_ScriptedRng([2000, 4000]))
    c1 = ctrl.send(b"c1", now=0)          # session 1000 (loses)
    a1 = agent.send(b"a1", now=0)         # session 2000 (wins)
    deliver(a1, ctrl)                     # ctrl joins 2000, abandons 1000
    deliver(outgoing_records(ctrl.poll(0)), agent)
    assert ctrl.session_id == agent.session_id == 2000
    events = deliver(c1, agent, now=1)     # late Record of 1000: agent "restarts"
    assert agent.session_id == 1000
    reply = agent.send(b"a2", now=1) + outgoing_records(agent.poll(1)) + outgoing_records(events)
    events = deliver(reply, ctrl, now=1)
    [restart] = of(events, SessionRestarted)
    assert restart.requirement == "R-E2E.24" and ctrl.session_id == 3000
    deliver(restart.records, agent, now=2)
    assert agent.session_id == 3000
    deliver(outgoing_records(agent.poll(2)), ctrl, now=2)
    assert ctrl.status == agent.status == STATUS_UP
    assert payloads(deliver(ctrl.send(b"after", now=3), agent, now=3)) == [b"after"]


def test_peer_stuck_on_a_retired_session_gets_a_fresh_one_after_timeout() -> None:
    """R-E2E.24: a peer that keeps using a retired session id, with nothing
    arriving on ours, is eventually offered a fresh session."""
    ctrl, _ = established(stale_session_timeout=10)
    old = ctrl.session_id
    ctrl.receive(peer_record(500, 1), now=1)  # peer restarts to 500
    assert ctrl.session_id == 500
    assert [type(e) for e in ctrl.receive(peer_record(old, 3), now=2)] == [StaleRecordIgnored]  # type: ignore[arg-type]
    ctrl.receive(peer_record(500, 2), now=5)  # progress on 500 resets the timer
    assert [type(e) for e in ctrl.receive(peer_record(old, 4), now=6)] == [StaleRecordIgnored]  # type: ignore[arg-type]
    assert [type(e) for e in ctrl.receive(peer_record(old, 5), now=15)] == [StaleRecordIgnored]  # type: ignore[arg-type]
    events = ctrl.receive(peer_record(old, 6), now=16)  # type: ignore[arg-type]
    [restart] = of(events, SessionRestarted)
    assert restart.requirement == "R-E2E.24" and restart.old_session_id == 500
    assert restart.records[0].session_context.sequence_id == 1
    assert ctrl.session_id not in (old, 500)
    off, _ = established(stale_session_timeout=None)
    gone = off.session_id
    off.receive(peer_record(501, 1), now=1)
    assert not of(deliver([peer_record(gone, 3)] * 3, off, now=1000), SessionRestarted)  # type: ignore[arg-type]


# --- segmentation and reassembly ------------------------------------------------------


SAR_CFG = SessionConfig(max_record_size=600)


def _sar_states(records: Sequence[schema.Record]) -> list[tuple[int, int]]:
    return [(r.session_context.payload_sar_state, r.session_context.payloadrec_sar_state)
            for r in records]


def test_sar_round_trip_around_the_chunk_boundary() -> None:
    """SAR algorithm (originating and receiving endpoint), PLAINTEXT case 1 and
    case 2: every Record fits MaxUSPRecordSize and payloadrec_sar_state equals
    payload_sar_state."""
    ctrl, agent = pair(SAR_CFG)
    chunk = ctrl.chunk_size
    assert chunk is not None and 0 < chunk < 600
    sizes = sorted({1, chunk - 1, chunk, chunk + 1, 2 * chunk - 1, 2 * chunk, 2 * chunk + 1,
                    5 * chunk + 3})
    rng = random.Random(0)
    for size in sizes:
        payload = rng.randbytes(size)
        records = ctrl.send(payload, now=0)
        assert all(r.ByteSize() <= 600 for r in records)
        states = _sar_states(records)
        if len(records) == 1:
            assert states == [(NONE, NONE)]
        else:
            assert len(records) == -(-size // chunk)
            expected = [BEGIN] + [INPROCESS] * (len(records) - 2) + [COMPLETE]
            assert states == [(s, s) for s in expected]
        events = deliver(records, agent)
        assert payloads(events) == [payload]
        assert len(of(events, SegmentStored)) == len(records) - 1


def test_single_record_when_whole_payload_fits() -> None:
    """SAR step 3: no segmentation while Message + header fit."""
    ctrl, _ = pair(SAR_CFG)
    chunk = ctrl.chunk_size
    assert chunk is not None
    [rec] = ctrl.send(b"x" * chunk, now=0)
    assert rec.ByteSize() <= 600
    assert len(ctrl.send(b"x" * (chunk + 40), now=0)) == 2


def test_reserved_bytes_leave_room_for_a_signature() -> None:
    """R-E2E.29 is applied after us: reserved_record_bytes keeps room for it."""
    cfg = SessionConfig(max_record_size=600, reserved_record_bytes=80)
    ctrl = SessionContext(CTRL, AGENT, cfg)
    for rec in ctrl.send(bytes(3000), now=0):
        rec.mac_signature = bytes(72)
        assert rec.ByteSize() <= 600


def test_sar_with_tls_records() -> None:
    """SAR cases 4, 6 and 7 (several payload records): all in one Record when
    they fit; else one per Record, oversized ones split with payloadrec_sar_state."""
    cfg = SessionConfig(max_record_size=600, payload_security=TLS12)
    ctrl, agent = pair(cfg)
    chunk = ctrl.chunk_size
    assert chunk is not None
    small = [b"a" * 50, b"b" * 60, b"c" * 70]
    [one] = ctrl.send_payload_records(small, now=0)  # case 4
    assert _sar_states([one]) == [(NONE, NONE)] and list(one.session_context.payload) == small
    events = deliver([one], agent)
    assert of(events, MessageReceived)[0].payload_records == tuple(small)
    case6 = [b"d" * (chunk - 10), b"e" * (chunk - 20)]
    records = ctrl.send_payload_records(case6, now=0)
    assert _sar_states(records) == [(BEGIN, NONE), (COMPLETE, NONE)]
    assert of(deliver(records, agent), MessageReceived)[0].payload_records == tuple(case6)
    case7 = [b"f" * 30, b"g" * (2 * chunk + 5), b"h" * 40]
    records = ctrl.send_payload_records(case7, now=0)
    assert _sar_states(records) == [(BEGIN, NONE), (INPROCESS, BEGIN), (INPROCESS, INPROCESS),
                                    (INPROCESS, COMPLETE), (COMPLETE, NONE)]
    assert all(r.ByteSize() <= 600 for r in records)
    [msg] = of(deliver(records, agent), MessageReceived)
    assert msg.payload_records == tuple(case7) and msg.payload == b"".join(case7)


def test_segments_out_of_order_reassemble_by_sequence_id() -> None:
    """SAR receiving step 3: payloads are appended in sequence_id order."""
    ctrl, agent = pair(SAR_CFG)
    payload = random.Random(1).randbytes(2000)
    records = ctrl.send(payload, now=0)
    shuffled = records[::-1]
    events = deliver(shuffled, agent)
    assert payloads(events) == [payload]


def test_unsegmented_receiver_accepts_segmented_records() -> None:
    """Reassembly does not depend on our own MaxUSPRecordSize."""
    ctrl = SessionContext(CTRL, AGENT, SAR_CFG)
    agent = SessionContext(AGENT, CTRL)
    data = bytes(range(256)) * 10
    assert payloads(deliver(ctrl.send(data, now=0), agent)) == [data]


@pytest.mark.parametrize("script", [
    [(INPROCESS, INPROCESS, [b"x"])],
    [(COMPLETE, COMPLETE, [b"x"])],
    [(BEGIN, BEGIN, [b"x"]), (BEGIN, BEGIN, [b"y"])],
    [(BEGIN, BEGIN, [b"x"]), (NONE, NONE, [b"y"])],
    [(NONE, BEGIN, [b"x"])],
    [(BEGIN, BEGIN, [b"x", b"y"])],
    [(BEGIN, NONE, [b"x"]), (INPROCESS, COMPLETE, [b"y"])],
    [(BEGIN, BEGIN, [b"x"]), (INPROCESS, NONE, [b"y"])],
    [(BEGIN, BEGIN, [b"x"]), (INPROCESS, BEGIN, [b"y"])],
    [(BEGIN, BEGIN, [b"x"]), (COMPLETE, INPROCESS, [b"y"])],
    [(7, NONE, [b"x"])],
    [(NONE, 9, [b"x"])],
])
def test_sar_violations_fail_the_record(script: list[tuple[int, int, list[bytes]]]) -> None:
    """SAR receiving algorithm: a reassembly failure fails the last Record and
    the session restarts (R-E2E.20, R-E2E.21); nothing is delivered."""
    ctrl = SessionContext(CTRL, AGENT)
    events: list[Event] = []
    for seq, (sar, rec_sar, parts) in enumerate(script, start=1):
        events += ctrl.receive(peer_record(99, seq, sar=sar, rec_sar=rec_sar, payload=parts),
                               now=0)
    assert not of(events, MessageReceived)
    assert [e.requirement for e in of(events, ProtocolViolation)] == ["R-E2E.20"]
    assert of(events, SessionRestarted)


def test_reassembly_size_is_bounded() -> None:
    ctrl = SessionContext(CTRL, AGENT, SessionConfig(max_reassembled_size=10))
    events = ctrl.receive(peer_record(99, 1, payload=[b"x" * 11]), now=0)
    assert of(events, ProtocolViolation) and not of(events, MessageReceived)
    ctrl = SessionContext(CTRL, AGENT, SessionConfig(max_reassembled_size=10))
    events = ctrl.receive(peer_record(99, 1, sar=BEGIN, rec_sar=BEGIN, payload=[b"x" * 6]),
                          now=0)
    events += ctrl.receive(peer_record(99, 2, sar=COMPLETE, rec_sar=COMPLETE,
                                       payload=[b"x" * 6]), now=0)
    assert of(events, ProtocolViolation) and not of(events, MessageReceived)


def test_empty_records_do_not_disturb_reassembly() -> None:
    """An empty Record (acknowledgement) between segments is not a payload."""
    ctrl = SessionContext(CTRL, AGENT)
    events = ctrl.receive(peer_record(99, 1, sar=BEGIN, rec_sar=BEGIN, payload=[b"ab"]), now=0)
    events += ctrl.receive(peer_record(99, 2, sar=INPROCESS, rec_sar=INPROCESS, payload=[]),
                           now=0)
    events += ctrl.receive(peer_record(99, 3, sar=COMPLETE, rec_sar=COMPLETE, payload=[b"cd"]),
                           now=0)
    assert payloads(events) == [b"abcd"]


def test_outgoing_records_collects_every_kind() -> None:
    rec = schema.Record(to_id="x")
    events: list[Event] = [RetransmitRequested(1, (rec,)), SessionStarted(5, False, (rec,)),
                           SessionRestarted(6, 5, False, "r", None, (rec,)),
                           Transmit((rec,), "ack"), DuplicateIgnored(3)]
    assert outgoing_records(events) == [rec, rec, rec, rec]


# --- two-endpoint simulation over a scripted wire ---------------------------------------

DELIVER, DROP, DUPLICATE, DELAY = range(4)


@dataclass
class Wire:
    """A pure wire: each transmitted Record consumes one scripted action.

    DELIVER after ``delay``; DROP; DUPLICATE (two copies, the second late);
    DELAY (long delay, so later Records overtake it). Once the script runs out
    every Record is delivered promptly.
    """

    script: list[tuple[int, float]]
    heap: list[tuple[float, int, str, bytes]] = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)

    def transmit(self, dest: str, records: Iterable[schema.Record], now: float) -> None:
        for rec in records:
            data = rec.SerializeToString()  # the wire carries bytes
            action, delay = self.script.pop(0) if self.script else (DELIVER, 0.05)
            delays = {DELIVER: [delay], DROP: [], DUPLICATE: [delay, delay + 1.7],
                      DELAY: [delay + 3.1]}[action]
            for d in delays:
                heapq.heappush(self.heap, (now + d, next(self.counter), dest, data))

    def due(self, now: float) -> list[tuple[str, bytes]]:
        out = []
        while self.heap and self.heap[0][0] <= now:
            _, _, dest, data = heapq.heappop(self.heap)
            out.append((dest, data))
        return out

    def next_time(self) -> float | None:
        return self.heap[0][0] if self.heap else None


SIM_CFG = SessionConfig(max_record_size=512, max_retransmit_tries=-1,
                        retransmit_request_after=0.5, resend_unacknowledged_after=2.0,
                        retry_minimum_wait_interval=1)


def simulate(ctrl_msgs: Sequence[bytes], agent_msgs: Sequence[bytes],
             script: Sequence[tuple[int, float]], config: SessionConfig = SIM_CFG, *,
             agent_waits: bool = True, seed: int = 11, max_iterations: int = 5000
             ) -> tuple[dict[str, list[bytes]], list[Event]]:
    """Run both contexts until everything is delivered and the wire is quiet.

    With ``agent_waits`` the Agent only speaks once it has joined the
    Controller's session (the usual Controller-originated pattern), so no
    restarts are expected. Otherwise both may originate; the application then
    sends again what a restart reports as unacknowledged.
    """
    ctxs = {CTRL: SessionContext(CTRL, AGENT, config, rng=random.Random(seed)),
            AGENT: SessionContext(AGENT, CTRL, config, rng=random.Random(seed + 1))}
    peer = {CTRL: AGENT, AGENT: CTRL}
    outbox = {CTRL: deque(ctrl_msgs), AGENT: deque(agent_msgs)}
    inbox: dict[str, list[bytes]] = {CTRL: [], AGENT: []}
    log: list[Event] = []
    wire = Wire(list(script))
    now = 0.0

    def handle(owner: str, events: list[Event]) -> None:
        for event in events:
            assert isinstance(event, Event)
            log.append(event)
            if isinstance(event, MessageReceived):
                inbox[owner].append(event.payload)
            if isinstance(event, (SessionRestarted, SessionExpired)):
                outbox[owner].extendleft(reversed(event.unacknowledged))
        wire.transmit(peer[owner], outgoing_records(events), now)

    for _ in range(max_iterations):
        for name, ctx in ctxs.items():
            if outbox[name] and (name == CTRL or not agent_waits or ctx.session_id is not None):
                wire.transmit(peer[name], ctx.send(outbox[name].popleft(), now=now), now)
        for dest, data in wire.due(now):
            handle(dest, ctxs[dest].receive(schema.Record.FromString(data), now=now))
        for name, ctx in ctxs.items():
            handle(name, ctx.poll(now))
        times = [t for t in (wire.next_time(), *(c.next_deadline() for c in ctxs.values()))
                 if t is not None]
        if any(outbox.values()):
            times.append(now + 0.2)
        if not times:
            return inbox, log
        now = max(now, min(times))
    raise AssertionError(f"simulation did not settle; delivered {inbox}")


def _assert_exactly_once(ctrl_msgs: Sequence[bytes], agent_msgs: Sequence[bytes],
                         script: Sequence[tuple[int, float]]) -> None:
    inbox, log = simulate(ctrl_msgs, agent_msgs, script)
    assert inbox[AGENT] == list(ctrl_msgs)
    assert inbox[CTRL] == list(agent_msgs)
    assert not of(log, ProtocolViolation) and not of(log, SessionRestarted)


MSGS_C = [b"Get %d " % i + bytes(i * 300) for i in range(6)]
MSGS_A = [b"Resp %d " % i + bytes(i * 250) for i in range(5)]


@pytest.mark.parametrize("script", [
    [],
    [(DROP, 0)],
    [(DROP, 0)] * 6,
    [(DELIVER, 0.05), (DROP, 0), (DELIVER, 0.05)] * 8,
    [(DUPLICATE, 0.05)] * 20,
    [(DELAY, 0.05), (DELIVER, 0.01)] * 12,
    [(DELIVER, 0.9 - 0.05 * i) for i in range(18)],
    [(DROP, 0), (DUPLICATE, 0.3), (DELAY, 0.1), (DELIVER, 0.2)] * 10,
], ids=["perfect", "first-lost", "burst-loss", "every-other", "duplicates", "reorder",
        "reverse", "mixed"])
def test_simulation_delivers_exactly_once_in_order(script: list[tuple[int, float]]) -> None:
    """R-E2E.16/R-E2E.20/R-E2E.25 together, plus SAR: every message arrives
    once and in order despite loss, duplication and reordering."""
    _assert_exactly_once(MSGS_C, MSGS_A, script)


wire_actions = st.tuples(st.sampled_from([DELIVER, DELIVER, DROP, DUPLICATE, DELAY]),
                         st.floats(min_value=0.0, max_value=2.0, allow_nan=False))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctrl_msgs=st.lists(st.binary(min_size=1, max_size=1400), min_size=1, max_size=5),
       agent_msgs=st.lists(st.binary(min_size=1, max_size=1400), max_size=5),
       script=st.lists(wire_actions, max_size=40))
def test_simulation_property(ctrl_msgs: list[bytes], agent_msgs: list[bytes],
                             script: list[tuple[int, float]]) -> None:
    """Random drop/duplicate/reorder schedules never lose, repeat or reorder a
    payload and never crash (R-E2E.16, R-E2E.20, R-E2E.25, SAR)."""
    _assert_exactly_once(ctrl_msgs, agent_msgs, script)


def _first_occurrences(items: Iterable[bytes]) -> list[bytes]:
    seen: list[bytes] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_ctrl=st.integers(1, 5), n_agent=st.integers(1, 5), seed=st.integers(0, 1000),
       script=st.lists(wire_actions, max_size=30))
def test_simulation_both_sides_originating_property(n_ctrl: int, n_agent: int, seed: int,
                                                    script: list[tuple[int, float]]) -> None:
    """R-E2E.5/R-E2E.6/R-E2E.24 liveness: when both sides start sessions at
    once over a bad wire, one session survives and nothing is lost or
    reordered. (A late Record of the losing session can make the winner
    process a payload twice, so only first occurrences are compared.)"""
    ctrl_msgs = [b"c%d" % i for i in range(n_ctrl)]
    agent_msgs = [b"a%d" % i for i in range(n_agent)]
    cfg = SessionConfig(max_retransmit_tries=-1, retransmit_request_after=0.5,
                        resend_unacknowledged_after=2.0, retry_minimum_wait_interval=1,
                        stale_session_timeout=5.0)
    inbox, log = simulate(ctrl_msgs, agent_msgs, script, cfg, agent_waits=False, seed=seed,
                          max_iterations=20000)
    assert _first_occurrences(inbox[AGENT]) == ctrl_msgs
    assert _first_occurrences(inbox[CTRL]) == agent_msgs
    assert not of(log, ProtocolViolation)


def test_simulation_with_both_sides_originating() -> None:
    """R-E2E.5 under a perfect wire: both sides start sessions at once, the
    loser resends what it had sent, and everything arrives once."""
    ctrl = SessionContext(CTRL, AGENT, SIM_CFG, rng=random.Random(5))
    agent = SessionContext(AGENT, CTRL, SIM_CFG, rng=random.Random(6))
    inbox: dict[str, list[bytes]] = {CTRL: [], AGENT: []}
    queue: dict[str, list[schema.Record]] = {CTRL: [], AGENT: []}
    queue[AGENT] += ctrl.send(b"c0", now=0)
    queue[CTRL] += agent.send(b"a0", now=0)
    ctxs = {CTRL: ctrl, AGENT: agent}
    for step in range(1, 20):
        for name in (CTRL, AGENT):
            other = AGENT if name == CTRL else CTRL
            events = deliver(queue[name], ctxs[name], now=step)
            queue[name] = []
            events += ctxs[name].poll(step)
            for event in events:
                if isinstance(event, MessageReceived):
                    inbox[name].append(event.payload)
                if isinstance(event, SessionRestarted):
                    for payload in event.unacknowledged:
                        queue[other] += ctxs[name].send(payload, now=step)
            queue[other] += outgoing_records(events)
    assert inbox == {CTRL: [b"a0"], AGENT: [b"c0"]}
    assert ctrl.session_id == agent.session_id and ctrl.status == agent.status == STATUS_UP


# --- hostile input -------------------------------------------------------------------

_ids = st.one_of(st.integers(0, 12), st.integers(0, UINT64_MAX))


@st.composite
def hostile_records(draw: st.DrawFn, sid: int) -> schema.Record:
    rec = schema.Record(
        version=draw(st.text(max_size=4)),
        to_id=draw(st.sampled_from([CTRL, CTRL, CTRL, "", "proto::x"])),
        from_id=draw(st.sampled_from([AGENT, AGENT, AGENT, "os::y"])),
        payload_security=cast(Any, draw(st.sampled_from([PLAINTEXT, PLAINTEXT, TLS12, 2, 99]))))
    kind = draw(st.sampled_from(["session_context"] * 6 + ["no_session_context", "disconnect"]))
    if kind != "session_context":
        getattr(rec, kind).SetInParent()
        return rec
    ctx = rec.session_context
    ctx.session_id = draw(st.one_of(st.just(sid), st.just(sid), _ids))
    ctx.sequence_id = draw(_ids)
    ctx.expected_id = draw(_ids)
    ctx.retransmit_id = draw(st.one_of(st.just(0), _ids))
    ctx.payload_sar_state = cast(Any, draw(st.integers(0, 6)))
    ctx.payloadrec_sar_state = cast(Any, draw(st.integers(0, 6)))
    ctx.payload.extend(draw(st.lists(st.binary(max_size=40), max_size=3)))
    return rec


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_hostile_session_context_fields_only_produce_events(data: st.DataObject) -> None:
    """Garbage in every SessionContextRecord field yields events, never
    exceptions, and the machine's invariants hold afterwards."""
    cfg = SessionConfig(max_record_size=512, max_incoming_records=8, max_outgoing_records=8,
                        session_expiration=data.draw(st.sampled_from([0, 5])),
                        max_reassembled_size=100)
    ctrl, _agent = established(cfg)
    sid = ctrl.session_id
    assert sid is not None
    now = 0.0
    for _ in range(data.draw(st.integers(1, 15))):
        now += data.draw(st.floats(0, 3, allow_nan=False))
        action = data.draw(st.sampled_from(["recv", "recv", "recv", "poll", "send"]))
        if action == "recv":
            events = ctrl.receive(data.draw(hostile_records(sid)), now=now)
        elif action == "poll":
            events = ctrl.poll(now)
        else:
            events = []
            records = ctrl.send(data.draw(st.binary(min_size=1, max_size=700)), now=now)
            assert all(r.ByteSize() <= 512 for r in records)
        assert all(isinstance(e, Event) for e in events)
        for rec in outgoing_records(events):
            assert rec.WhichOneof("record_type") == "session_context"
            assert rec.to_id == AGENT and rec.from_id == CTRL
        assert ctrl.expected_id >= 1 and ctrl.next_sequence_id >= 1
        assert ctrl.status in (STATUS_UP, STATUS_NEGOTIATING, STATUS_DOWN)
        assert len(ctrl.buffered_sequence_ids) <= 8 and len(ctrl.outgoing_sequence_ids) <= 8
        assert all(s > ctrl.expected_id for s in ctrl.buffered_sequence_ids)
        if ctrl.session_id is not None:
            sid = ctrl.session_id
