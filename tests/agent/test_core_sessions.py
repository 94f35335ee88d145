"""The reference Agent's E2E session contexts (conformance/agent/sessions.py via AgentCore).

Checks the E2ESession parameters applied per Controller (TR-181
Device.LocalAgent.Controller.{i}.E2ESession.*), SessionMode Require/Allow/Forbid
(R-E2E.4, R-E2E.6a, R-E2E.6b), Notify inside sessions, and the TP-469 section 3
session cases 3.1, 3.8-3.12, 3.14 and 3.15 with and without their faults.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from conformance.agent.context import AgentState
from conformance.agent.core import AgentCore, CoreEvent
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.store import Store
from conformance.agent.faults import REGISTRY, FaultSet
from conformance.agent.sessions import (
    MODE_ALLOW,
    MODE_FORBID,
    MODE_REQUIRE,
    SESSION_NOT_ALLOWED,
    SESSION_TERMINATED,
)
from conformance.usp import messages, records, session
from conformance.usp.schema import Msg, Record

AGENT, CTRL, OTHER = "os::012345-AGENT", "proto::controller-1", "proto::controller-2"
E2E = "Device.LocalAgent.Controller.1.E2ESession."
SID, SID2 = 4242, 777


def _core(*faults: str, events: list[CoreEvent] | None = None, **e2e: str) -> AgentCore:
    dm = load_definitions()
    store = Store(dm)
    store.add("Device.LocalAgent.Controller.", {"EndpointID": CTRL, "Enable": "true"})
    for name, value in {"SessionMode": "Allow", "PayloadSecurity": "Plaintext",
                        "MaxRetransmitTries": "3", **e2e}.items():
        store.set(E2E + name, value)
    state = AgentState(AGENT, dm, store, faults=FaultSet(faults))
    core = AgentCore(state, on_event=(events.append if events is not None else lambda e: None))
    core.sessions._rng = random.Random(1)
    return core


def _get(path: str = "Device.DeviceInfo.ModelName", msg_id: str = "g1") -> Msg:
    return messages.request("get", {"param_paths": [path]}, msg_id=msg_id)


def _srec(seq: int, msg: Msg | None = None, *, sid: int = SID, expected: int = 1,
          retransmit: int = 0, frm: str = CTRL) -> bytes:
    payloads = [msg.SerializeToString()] if msg is not None else []
    return records.serialize(records.session_record(
        to_id=AGENT, from_id=frm, session_id=sid, sequence_id=seq, expected_id=expected,
        retransmit_id=retransmit, payloads=payloads))


def _plain(msg: Msg, frm: str = CTRL) -> bytes:
    return records.serialize(records.no_session_record(msg, to_id=AGENT, from_id=frm))


def _msgs(out: list[Record]) -> list[Msg]:
    found = []
    for rec in out:
        msg = records.unwrap_msg(rec)
        if msg is not None:
            found.append(msg)
    return found


def _ids(out: list[Record]) -> list[tuple[int, int]]:
    return [(r.session_context.session_id, r.session_context.sequence_id) for r in out
            if records.record_kind(r) == "session_context"]


def _set(core: AgentCore, name: str, value: str) -> None:
    core.state.store.set(E2E + name, value)


# --- settings from the data model ------------------------------------------------------


def test_settings_follow_the_controllers_e2esession_object():
    core = _core(SessionExpiration="60", MaxRetransmitTries="2",
                 SessionRetryMinimumWaitInterval="7", SessionRetryIntervalMultiplier="3000",
                 MaxUSPRecordSize="1024")
    got = core.sessions.settings(CTRL)
    assert got.mode == MODE_ALLOW and got.controller == "Device.LocalAgent.Controller.1."
    cfg = got.config
    assert (cfg.session_expiration, cfg.max_retransmit_tries, cfg.retry_minimum_wait_interval,
            cfg.retry_interval_multiplier, cfg.max_record_size) == (60, 2, 7, 3000, 1024)
    # the agent's local policy survives (knobs the data model does not have)
    assert cfg.retransmit_request_after == core.session_config.retransmit_request_after
    # deprecated SegmentedPayloadChunkSize is used when MaxUSPRecordSize is 0
    _set(core, "MaxUSPRecordSize", "0")
    _set(core, "SegmentedPayloadChunkSize", "600")
    assert core.sessions.settings(CTRL).config.max_record_size == 600


def test_unset_session_mode_falls_back_to_the_deprecated_enable():
    core = _core(SessionMode="Forbid")
    assert core.sessions.settings(CTRL).mode == MODE_FORBID
    core = _core()
    core.state.store._objects[E2E]["SessionMode"] = ""  # as a Controller added without it
    assert core.sessions.settings(CTRL).mode == MODE_ALLOW
    _set(core, "Enable", "true")
    assert core.sessions.settings(CTRL).mode == MODE_REQUIRE


def test_unknown_controller_gets_tr181_defaults():
    core = _core()
    got = core.sessions.settings("proto::nobody")
    assert got.mode == MODE_ALLOW and got.controller is None
    assert got.config.max_retransmit_tries == 0 and got.config.session_expiration == 0


def test_fault_overrides_of_settings():
    core = _core("session.ignores_expiration", "session.ignores_max_retransmit",
                 SessionExpiration="5", MaxRetransmitTries="2")
    cfg = core.sessions.settings(CTRL).config
    assert cfg.session_expiration == 0 and cfg.max_retransmit_tries == -1


def test_status_and_current_retry_count_reflect_the_session():
    """TR-181 E2ESession.Status / CurrentRetryCount (R-E2E.10, R-E2E.12)."""
    core = _core()
    store = core.state.store
    assert store.get(E2E + "Status") == "Down"
    assert store.get(E2E + "CurrentRetryCount") == "0"
    core.handle_record(_srec(1, _get()), now=0)
    assert store.get(E2E + "Status") == "Up"
    params = store.params(E2E)
    assert params["Status"] == "Up" and params["CurrentRetryCount"] == "0"
    # a retransmit request for a Record never sent fails: a new session of ours
    # announced after the retry wait (R-E2E.21, R-E2E.10)
    core.handle_record(_srec(2, None, retransmit=9), now=1)
    assert store.get(E2E + "Status") == "Negotiating"
    assert store.get(E2E + "CurrentRetryCount") == "1"


# --- SessionMode ---------------------------------------------------------------------


def test_forbid_answers_a_session_record_with_disconnect_7106():
    """R-E2E.6a: Session Context not allowed."""
    events: list[CoreEvent] = []
    core = _core(events=events, SessionMode="Forbid")
    [bye] = core.handle_record(_srec(1, _get()), now=0)
    assert records.record_kind(bye) == "disconnect"
    assert bye.disconnect.reason_code == SESSION_NOT_ALLOWED and bye.disconnect.reason
    assert (bye.to_id, bye.from_id) == (CTRL, AGENT)
    assert CTRL not in core._sessions
    assert any(e.kind == "session_refused" for e in events)
    # outside a session the controller is served as usual
    assert _msgs(core.handle_record(_plain(_get()), now=0))[0].header.msg_id == "g1"


def test_switching_to_forbid_terminates_the_session_with_7105():
    """R-E2E.6b and TR-181 SessionMode Forbid: immediate termination."""
    core = _core()
    assert core.handle_record(_srec(1, _get()), now=0)
    _set(core, "SessionMode", "Forbid")
    out = core.session_poll(1)
    [bye] = out[CTRL]
    assert bye.disconnect.reason_code == SESSION_TERMINATED
    assert CTRL not in core._sessions
    assert core.session_poll(2) == {}


def test_require_starts_a_session_and_ignores_messages_outside_one():
    """TR-181 SessionMode Require: setting it establishes a session; no Message is
    exchanged before."""
    core = _core()
    assert core.session_poll(0) == {}
    _set(core, "SessionMode", "Require")
    [hello] = core.session_poll(1)[CTRL]
    sc = hello.session_context
    assert sc.sequence_id == 1 and not sc.payload and sc.session_id >= 2  # R-E2E.3, R-E2E.14
    assert core.state.store.get(E2E + "Status") == "Negotiating"
    assert core.session_poll(1.5) == {}  # sent once (no double from the pending event)
    events: list[CoreEvent] = []
    core.on_event = events.append
    core.sessions._on_event = core._event
    assert core.handle_record(_plain(_get()), now=2) == []
    assert any("Require" in e.detail for e in events)
    # Notify goes in the session
    notify = messages.request("notify", {"subscription_id": "s", "send_resp": False,
                                         "event": {"obj_path": "Device.LocalAgent.",
                                                   "event_name": "Periodic!"}}, msg_id="n1")
    [rec] = core.outgoing(CTRL, notify, now=3)
    assert records.record_kind(rec) == "session_context"
    assert rec.session_context.session_id == sc.session_id
    assert rec.session_context.sequence_id == 2


def test_require_at_first_contact_joins_the_controllers_session():
    """R-E2E.4: no collision with a session of our own on the first Record."""
    core = _core(SessionMode="Require")
    out = core.handle_record(_srec(1, _get()), now=0)
    assert _ids(out) == [(SID, 1)] and _msgs(out)[0].header.msg_id == "g1"


def test_allow_sends_notify_in_session_only_while_the_controller_uses_one():
    core = _core()
    notify = messages.request("notify", {"subscription_id": "s", "send_resp": False,
                                         "on_board_req": {"oui": "012345"}}, msg_id="n1")
    [rec] = core.outgoing(CTRL, notify, now=0)
    assert records.record_kind(rec) == "no_session_context"
    core.handle_record(_srec(1, _get()), now=1)
    [rec] = core.outgoing(CTRL, notify, now=2)
    assert records.record_kind(rec) == "session_context" and _ids([rec]) == [(SID, 2)]
    core.handle_record(_plain(_get(msg_id="g2")), now=3)
    [rec] = core.outgoing(CTRL, notify, now=4)
    assert records.record_kind(rec) == "no_session_context"
    # Forbid never, whatever the controller did
    core.handle_record(_srec(2, _get(), expected=3), now=5)
    _set(core, "SessionMode", "Forbid")
    [rec] = core.outgoing(CTRL, notify, now=6)
    assert records.record_kind(rec) == "no_session_context"


def test_allow_drops_an_unanswered_restart_once_the_controller_talks_outside():
    core = _core()
    core.handle_record(_srec(1, _get()), now=0)
    core.handle_record(_srec(2, None, retransmit=9), now=1)  # fails: restart (R-E2E.21)
    assert core._sessions[CTRL].status == session.STATUS_NEGOTIATING
    core.handle_record(_plain(_get()), now=2)
    assert CTRL not in core._sessions


def test_disconnect_record_forgets_the_session():
    """R-MTP.7."""
    core = _core()
    core.handle_record(_srec(1, _get()), now=0)
    bye = records.disconnect_record(to_id=AGENT, from_id=CTRL, reason="bye")
    assert core.handle_record(records.serialize(bye), now=1) == []
    assert CTRL not in core._sessions


# --- parameters changed while a session runs -----------------------------------------


def test_session_expiration_applies_to_the_running_session():
    """R-E2E.7 / TP-469 3.10: after SessionExpiration without activity the next Notify
    starts a new session."""
    core = _core(SessionExpiration="60")
    core.handle_record(_srec(1, _get()), now=0)
    notify = messages.request("notify", {"subscription_id": "s", "send_resp": False,
                                         "on_board_req": {"oui": "012345"}}, msg_id="n1")
    first = _ids(core.outgoing(CTRL, notify, now=30))
    assert first == [(SID, 2)]
    _set(core, "SessionExpiration", "5")
    core.session_poll(31)  # the change is picked up
    assert core._sessions[CTRL].config.session_expiration == 5
    sids = {sid for sid, _ in (_ids(core.outgoing(CTRL, notify, now=t))[0]
                               for t in (40, 50, 60))}
    assert len(sids) == 3 and SID not in sids  # each one a new session of ours


def test_max_retransmit_tries_applies_to_the_running_session():
    """TP-469 3.14: MaxRetransmitTries 2; the third request starts a new session."""
    core = _core()
    setr = messages.request("set", {"update_objs": [{
        "obj_path": "Device.LocalAgent.Controller.1.E2ESession.",
        "param_settings": [{"param": "MaxRetransmitTries", "value": "2"}]}]}, msg_id="s1")
    [resp] = core.handle_record(_srec(1, setr), now=0)
    assert _msgs([resp])[0].body.response.WhichOneof("resp_type") == "set_resp"
    for seq in (2, 3):
        again = core.handle_record(_srec(seq, None, retransmit=1), now=seq)
        assert again == [resp]
    assert core.handle_record(_srec(4, None, retransmit=1), now=4) == []
    out = core.session_poll(4 + 11)[CTRL]  # after the R-E2E.10 wait (5-10 s)
    assert len(out) == 1 and out[0].session_context.session_id != SID
    assert out[0].session_context.sequence_id == 1 and not out[0].session_context.payload


def test_max_usp_record_size_segments_answers():
    """E2ESession.MaxUSPRecordSize: answers larger than it are segmented (SAR)."""
    core = _core(MaxUSPRecordSize="512")
    out = core.handle_record(_srec(1, _get("Device.DeviceInfo.")), now=0)
    assert len(out) > 1 and all(len(records.serialize(r)) <= 512 for r in out)
    assert out[0].session_context.payload_sar_state == 1  # BEGIN


def test_undecodable_payload_in_session_restarts_it():
    """R-E2E.21: a Record that cannot be processed starts a new session context."""
    core = _core()
    core.handle_record(_srec(1, _get()), now=0)
    bad = records.serialize(records.session_record(
        to_id=AGENT, from_id=CTRL, session_id=SID, sequence_id=2, expected_id=2,
        payloads=[b"\xff\xff\xff"]))
    assert core.handle_record(bad, now=1) == []
    assert core._sessions[CTRL].session_id != SID
    assert core._sessions[CTRL].status == session.STATUS_NEGOTIATING


# --- TP-469 section 3 cases, clean and with their faults --------------------------------


def test_3_1_malformed_records_are_ignored():
    """R-MTP.5 / TP-469 3.1."""
    core = _core()
    assert core.handle_record(bytes.fromhex("0a03312e3412"), now=0) == []
    garbage = records.serialize(records.no_session_record(b"\xff\xff", to_id=AGENT,
                                                          from_id=CTRL))
    assert core.handle_record(garbage, now=0) == []
    empty = records.serialize(records.no_session_record(b"", to_id=AGENT, from_id=CTRL))
    assert core.handle_record(empty, now=0) == []  # R-E2E.26: no Msg, no msg_id
    faulty = _core("record.malformed_answered")
    for data in (garbage, empty):
        [bye] = faulty.handle_record(data, now=0)
        assert records.record_kind(bye) == "disconnect" and bye.to_id == CTRL


def test_3_8_first_record_of_the_agent_is_sequence_1():
    """R-E2E.4, R-E2E.14 / TP-469 3.8."""
    out = _core().handle_record(_srec(1, _get()), now=0)
    assert _ids(out) == [(SID, 1)]
    assert out[0].session_context.expected_id == 2  # R-E2E.17
    out = _core("session.sequence_starts_at_0").handle_record(_srec(1, _get()), now=0)
    assert _ids(out) == [(SID, 0)]


def test_3_9_a_new_session_id_starts_a_new_session():
    """R-E2E.6 / TP-469 3.9."""
    for faults, want in (((), (SID2, 1)), (("session.ignores_new_session_id",), (SID, 1))):
        core = _core(*faults)
        assert _ids(core.handle_record(_srec(1, _get()), now=0)) == [(SID, 1)]
        assert _ids(core.handle_record(_srec(2, _get(), expected=2), now=1)) == [(SID, 2)]
        out = core.handle_record(_srec(1, _get("Device.DeviceInfo."), sid=SID2), now=2)
        assert _ids(out) == [want]


def test_3_11_records_are_processed_in_sequence_order():
    """R-E2E.20 / TP-469 3.11."""
    core = _core()
    paths = {1: "ModelNumber", 4: "SoftwareVersion", 2: "HardwareVersion", 3: "HardwareVersion"}

    def step(seq: int, now: float, c: AgentCore = core) -> list[Record]:
        return c.handle_record(_srec(seq, _get("Device.DeviceInfo." + paths[seq], f"m{seq}"),
                                     expected=seq), now=now)

    out = step(1, 0)
    assert [m.header.msg_id for m in _msgs(out)] == ["m1"] and _ids(out) == [(SID, 1)]
    assert step(4, 1) == []  # buffered
    assert core.session_poll(3) == {}  # no retransmit request within a few seconds
    out = step(2, 4)
    assert [m.header.msg_id for m in _msgs(out)] == ["m2"] and _ids(out) == [(SID, 2)]
    out = step(3, 5)
    assert [m.header.msg_id for m in _msgs(out)] == ["m3", "m4"]
    assert _ids(out) == [(SID, 3), (SID, 4)]

    faulty = _core("session.no_reordering")
    step(1, 0, faulty)
    assert [m.header.msg_id for m in _msgs(step(4, 1, faulty))] == ["m4"]  # at once


def test_3_12_records_are_kept_for_retransmission():
    """R-E2E.16 / TP-469 3.12."""
    core = _core()
    [resp] = core.handle_record(_srec(1, _get("Device.DeviceInfo.")), now=0)
    assert core.session_poll(60) == {}
    assert core.handle_record(_srec(2, None, retransmit=1), now=60) == [resp]
    faulty = _core("session.no_retransmit_buffer")
    faulty.handle_record(_srec(1, _get("Device.DeviceInfo.")), now=0)
    assert faulty.handle_record(_srec(2, None, retransmit=1), now=60) == []


def test_3_14_fault_ignores_max_retransmit_tries():
    core = _core("session.ignores_max_retransmit", MaxRetransmitTries="2")
    [resp] = core.handle_record(_srec(1, _get()), now=0)
    for seq in (2, 3, 4, 5):
        assert core.handle_record(_srec(seq, None, retransmit=1), now=seq) == [resp]


def test_3_15_duplicates_are_ignored():
    """R-E2E.25 / TP-469 3.15."""
    core = _core()
    first = core.handle_record(_srec(1, _get()), now=0)
    assert len(_msgs(first)) == 1
    for _ in range(3):
        assert _msgs(core.handle_record(_srec(1, _get()), now=1)) == []
    acks = core.session_poll(2)[CTRL]  # the peer missed our answer: an empty acknowledgement
    assert acks and _msgs(acks) == []
    faulty = _core("session.answers_duplicates")
    faulty.handle_record(_srec(1, _get()), now=0)
    again = [m for _ in range(3) for m in _msgs(faulty.handle_record(_srec(1, _get()), now=1))]
    assert len(again) == 3


def test_3_10_fault_keeps_one_session():
    core = _core("session.ignores_expiration", SessionExpiration="5")
    core.handle_record(_srec(1, _get()), now=0)
    notify = messages.request("notify", {"subscription_id": "s", "send_resp": False,
                                         "on_board_req": {"oui": "012345"}}, msg_id="n1")
    sids = {_ids(core.outgoing(CTRL, notify, now=t))[0][0] for t in (10, 20, 30)}
    assert sids == {SID}


def test_faults_are_registered():
    names = {"session.sequence_starts_at_0", "session.ignores_new_session_id",
             "session.ignores_expiration", "session.no_reordering",
             "session.no_retransmit_buffer", "session.ignores_max_retransmit",
             "session.answers_duplicates", "record.malformed_answered"}
    assert names <= set(REGISTRY)
    assert all("TP-469 3." in REGISTRY[n].requirement for n in names)


def test_other_controllers_are_independent():
    """R-E2E.5: one session context per controller."""
    core = _core()
    core.handle_record(_srec(1, _get()), now=0)
    out = core.handle_record(_srec(1, _get(), sid=SID2, frm=OTHER), now=0)
    assert _ids(out) == [(SID2, 1)]
    assert core._sessions[CTRL].session_id == SID and core._sessions[OTHER].session_id == SID2


@pytest.mark.parametrize("seq", [0, 2**64 - 1])
def test_hostile_sequence_ids_never_raise(seq: int):
    core = _core()
    core.handle_record(_srec(seq, _get()), now=0)
    core.session_poll(1)


def test_runtime_sends_notify_inside_the_session(tmp_path):
    """The running agent: with SessionMode Require a Notify travels in the session the
    agent starts (conformance/agent/runtime.py _send_notify and _timers)."""
    from conformance.agent.config import AgentConfig
    from conformance.agent.runtime import AgentRuntime
    from conformance.controller.controller import Controller
    from conformance.mtp.stomp.broker import STOMPBroker

    async def main() -> None:
        async with await STOMPBroker().start() as broker:
            values = {"Device.STOMP.Connection.1.Port": str(broker.port),
                      "Device.STOMP.Connection.1.Enable": "true",
                      "Device.LocalAgent.MTP.2.Enable": "true",
                      "Device.LocalAgent.Controller.1.MTP.2.Enable": "true"}
            ctrl = Controller("proto::controller-1", default_timeout=10)
            ctrl.attach(broker.attach_controller("proto::controller-1", "/queue/controller"),
                        agent_id="os::012345-0001")
            runtime = await AgentRuntime(AgentConfig(state_dir=tmp_path / "state",
                                                     extra_values=values)).start()
            try:
                await ctrl.connect_record("stomp_connect")
                ctrl.session_context = True
                resp = await ctrl.request(messages.request("set", {"update_objs": [{
                    "obj_path": "Device.LocalAgent.Controller.1.E2ESession.",
                    "param_settings": [{"param": "SessionMode", "value": "Require"}]}]}))
                assert resp.body.response.WhichOneof("resp_type") == "set_resp"
                add = await ctrl.request(messages.request("add", {"create_objs": [{
                    "obj_path": "Device.LocalAgent.Subscription.",
                    "param_settings": [
                        {"param": "ID", "value": "vc"}, {"param": "Enable", "value": "true"},
                        {"param": "NotifType", "value": "ValueChange"},
                        {"param": "ReferenceList",
                         "value": "Device.LocalAgent.Controller.1.PeriodicNotifInterval"}]}]}))
                assert add.body.response.WhichOneof("resp_type") == "add_resp"
                mark = ctrl.mark
                await ctrl.request(messages.request("set", {"update_objs": [{
                    "obj_path": "Device.LocalAgent.Controller.1.",
                    "param_settings": [{"param": "PeriodicNotifInterval", "value": "77"}]}]}))
                item = await ctrl.notification(since=mark)
                assert item.record is not None
                assert records.record_kind(item.record) == "session_context"
                ctx = ctrl._sessions["os::012345-0001"]
                assert item.record.session_context.session_id == ctx.session_id
                get = await ctrl.request(messages.request("get", {"param_paths": [
                    "Device.LocalAgent.Controller.1.E2ESession.Status"]}))
                res = get.body.response.get_resp.req_path_results[0].resolved_path_results[0]
                assert res.result_params["Status"] == "Up"
            finally:
                await runtime.stop()
                await ctrl.close()

    asyncio.run(asyncio.wait_for(main(), 60))
