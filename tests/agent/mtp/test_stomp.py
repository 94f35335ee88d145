"""The reference Agent's STOMP client against the suite's STOMP broker (real loopback sockets).

R-STOMP.2..R-STOMP.30 and R-MTP.6 / R-MTP.7; TP-469 6.2 .. 6.8, 6.11, 6.12.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from conformance.agent.faults import REGISTRY, FaultSet
from conformance.agent.mtp import ControllerRoute, MTPNotConnected, NoRoute
from conformance.agent.mtp.backoff import STOMPRetry
from conformance.agent.mtp.stomp import STOMPMTP, STOMPConnectionConfig, _FaultyRetry
from conformance.mtp.stomp.binding import STOMPBinding
from conformance.mtp.stomp.broker import STOMPBroker, STOMPScenario
from conformance.mtp.stomp.frames import USP_CONTENT_TYPE
from conformance.mtp.timeline import Timeline
from conformance.usp import records
from tests.agent.mtp.support import (
    AGENT,
    CTRL,
    STEP,
    Echo,
    Sink,
    check_gaps,
    disconnect_record,
    get_record,
    mutual_tls,
)

CTRL_DEST = "/usp/controller"
AGENT_DEST = "/usp/agent"
FAST = STOMPRetry(0.2, 2000, 5)


@dataclass
class Rig:
    broker: STOMPBroker
    binding: STOMPBinding
    sink: Sink
    agent: STOMPMTP
    echo: Echo
    tl: Timeline
    atl: Timeline


@asynccontextmanager
async def rig(*, tls: bool = False, scenario: STOMPScenario | None = None,
              credentials: dict[str, str] | None = None, destination: str = AGENT_DEST,
              faults: tuple[str, ...] = (), **config: Any) -> AsyncIterator[Rig]:
    tl, atl = Timeline(), Timeline()
    pair = mutual_tls() if tls else None
    broker = await STOMPBroker(timeline=tl, ssl_context=pair.server if pair else None,
                               credentials=credentials, scenario=scenario).start()
    binding = broker.attach_controller(CTRL, CTRL_DEST)
    sink = Sink()
    binding.set_sink(sink)
    cfg = STOMPConnectionConfig(port=broker.port, retry=config.pop("retry", FAST), **config)
    agent = STOMPMTP(AGENT, cfg, destination=destination,
                     controllers=[ControllerRoute(CTRL, CTRL_DEST)],
                     ssl_context=pair.client if pair else None, timeline=atl)
    agent.faults = FaultSet(faults)
    echo = Echo(agent)
    try:
        await agent.start()
        yield Rig(broker, binding, sink, agent, echo, tl, atl)
    finally:
        await agent.stop()
        await broker.close()


def _frames(tl: Timeline, command: str) -> list[dict[str, Any]]:
    return [e.decoded for e in tl.filter(f"stomp.{command}", direction="in")]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mtls"])
def test_connect_subscribe_connect_record_and_round_trip(tls: bool) -> None:
    """TP-469 6.2/6.4/6.6/6.11/6.12: STOMP frame, SUBSCRIBE to the configured
    Destination, STOMPConnect Record, a Record answered on reply-to-dest."""
    creds = None if tls else {"agent": "secret"}
    login = {} if tls else {"username": "agent", "password": "secret"}

    async def main() -> None:
        async with rig(tls=tls, credentials=creds, virtual_host="usp-vhost", **login) as r:
            inbound, rec = await r.sink.next("stomp_connect")
            assert rec.stomp_connect.subscribed_destination == AGENT_DEST
            assert inbound.reply_to == AGENT_DEST  # R-STOMP.21
            headers = _frames(r.tl, "STOMP")[0]["headers"]
            assert headers["accept-version"] == "1.2" and headers["host"] == "usp-vhost"
            assert headers["endpoint-id"] == AGENT.replace(":", "\\c")  # R-STOMP.4 note
            assert "heart-beat" not in headers  # R-STOMP.9
            if tls:
                assert "login" not in headers and r.agent.tls  # certificate authentication
            else:
                assert (headers["login"], headers["passcode"]) == ("agent", "secret")
            session = await r.broker.wait_for_agent(AGENT, STEP)
            assert session.destinations == [AGENT_DEST] and session.subscriptions["0"].ack == "auto"
            send = _frames(r.tl, "SEND")[0]["headers"]
            assert send["content-type"] == USP_CONTENT_TYPE and send["destination"] == CTRL_DEST
            assert send["content-length"] == str(len(inbound.data))  # R-STOMP.19
            request = get_record()
            await r.binding.send(request, to_id=AGENT)
            answer, _ = await r.sink.next("no_session_context")
            assert answer.data == request
            route = r.echo.routes[-1]
            assert (route.mtp, route.reply_to, route.controller_hint) == ("stomp", CTRL_DEST, CTRL)
            assert r.tl.filter("stomp.violation") == []
            if tls:
                done = await r.tl.expect("tls.handshake_done", within=STEP, direction="in")
                assert done.decoded["peer_endpoint_ids"] == [AGENT]
    asyncio.run(main())


def test_subscribe_dest_from_the_server_wins() -> None:
    """R-STOMP.6 / R-STOMP.14 / TP-469 6.5; DestinationFromServer."""
    async def main() -> None:
        async with rig(scenario=STOMPScenario(subscribe_dest="/usp/assigned"),
                       escape_endpoint_id=False) as r:
            _, rec = await r.sink.next("stomp_connect")
            assert rec.stomp_connect.subscribed_destination == "/usp/assigned"
            assert r.agent.destination_from_server == "/usp/assigned"
            assert _frames(r.tl, "STOMP")[0]["headers"]["endpoint-id"] == AGENT
            assert _frames(r.tl, "SUBSCRIBE")[0]["headers"]["destination"] == "/usp/assigned"
            assert r.tl.filter("stomp.violation") == []
    asyncio.run(main())


def test_no_destination_disconnects_and_retries() -> None:
    """R-STOMP.16 / TP-469 6.7: DISCONNECT, then the retry state."""
    async def main() -> None:
        async with rig(destination="") as r:
            await r.tl.expect("stomp.DISCONNECT", within=STEP, direction="in")
            assert r.tl.filter("stomp.SUBSCRIBE") == []
            await r.atl.expect("stomp.retry", within=STEP)
            r.broker.set_scenario(subscribe_dest="/usp/late")
            _, rec = await r.sink.next("stomp_connect")
            assert rec.stomp_connect.subscribed_destination == "/usp/late"
    asyncio.run(main())


def test_heart_beats_both_ways() -> None:
    """R-STOMP.8/10/11 / TP-469 6.8: the agent sends at the negotiated interval and
    drops the connection when the server's heart-beats stop."""
    async def main() -> None:
        async with rig(scenario=STOMPScenario(heart_beat=(50, 50)), enable_heartbeats=True,
                       outgoing_heartbeat=40, incoming_heartbeat=40) as r:
            await r.sink.next("stomp_connect")
            assert _frames(r.tl, "STOMP")[0]["headers"]["heart-beat"] == "40,40"
            assert r.agent.heart_beat == (50, 50)
            first = await r.tl.expect("stomp.heartbeat", within=STEP, direction="in")
            await r.tl.expect("stomp.heartbeat", within=STEP, direction="in", since=first)
            await r.atl.expect("stomp.heartbeat", within=STEP, direction="in")
            assert r.tl.filter("stomp.heartbeat_missed") == []
            r.broker.set_scenario(send_heartbeats=False)
            missed = await r.atl.expect("stomp.heartbeat_missed", within=STEP)
            assert missed.decoded["expected_ms"] == 50
            r.broker.set_scenario(send_heartbeats=True)
            await r.agent.wait_connected(STEP, count=2)
    asyncio.run(main())


def test_error_frame_and_refused_connections_back_off() -> None:
    """R-STOMP.25 (ERROR -> retry state), R-STOMP.7 / TP-469 6.3: the n-th wait is
    drawn from [0, ServerRetryInitialInterval * (k/1000)^(n-1)]."""
    async def main() -> None:
        async with rig() as r:
            await r.sink.next("stomp_connect")
            r.broker.set_scenario(refuse_connections=True)
            errored_at = time.monotonic()
            await r.broker.send_error(AGENT, "going down")
            await r.atl.expect("stomp.retry", within=STEP, where=lambda e: e.decoded["retry"] == 3)
            r.broker.set_scenario(refuse_connections=False)
            await r.agent.wait_connected(STEP, count=2)
            await r.sink.next("stomp_connect")
            assert r.atl.filter("stomp.ERROR", direction="in")
            waits = r.atl.filter("stomp.retry")
            assert [w.decoded["retry"] for w in waits] == [1, 2, 3]
            check_gaps([errored_at, *r.broker.connection_attempts[1:]], waits, FAST.bounds)
    asyncio.run(main())


def test_stop_sends_disconnect_record_and_disconnect_with_receipt() -> None:
    """R-MTP.7, R-STOMP.28."""
    async def main() -> None:
        async with rig() as r:
            await r.sink.next("stomp_connect")
            await r.agent.stop(disconnect_record())
            _, rec = await r.sink.next("disconnect")
            assert rec.disconnect.reason == "shutting down"
            bye = _frames(r.tl, "DISCONNECT")[0]
            assert bye["headers"]["receipt"]
            assert r.atl.filter("stomp.RECEIPT", direction="in")
            assert not r.agent.connected
    asyncio.run(main())


def test_non_usp_messages_are_dropped_and_send_errors() -> None:
    """STOMP "Handling Errors": bodies that are not USP Records are dropped silently."""
    async def main() -> None:
        async with rig() as r:
            await r.sink.next("stomp_connect")
            await r.binding.send(get_record(msg_id="a"), to_id=AGENT,
                                 headers={"content-type": "text/plain"})
            first = await r.atl.expect("stomp.dropped", within=STEP)
            await r.binding.send(b"\x00\xffgarbage", to_id=AGENT)
            await r.atl.expect("stomp.dropped", within=STEP, since=first)
            assert r.echo.routes == []
            with pytest.raises(NoRoute):
                await r.agent.send(get_record("proto::x", AGENT), to_id="proto::x")
    asyncio.run(main())


def test_send_before_connecting_and_config_validation() -> None:
    async def main() -> None:
        agent = STOMPMTP(AGENT, STOMPConnectionConfig(), destination=AGENT_DEST)
        with pytest.raises(MTPNotConnected):
            await agent.send(get_record(CTRL, AGENT), to_id=CTRL, reply_to=CTRL_DEST)
        await agent.stop()
    asyncio.run(main())
    with pytest.raises(ValueError):
        STOMPConnectionConfig(port=0)
    with pytest.raises(ValueError):
        STOMPConnectionConfig(outgoing_heartbeat=-1)
    with pytest.raises(ValueError):
        STOMPMTP(AGENT, STOMPConnectionConfig(), heartbeat_tolerance=0)


# --------------------------------------------------------------------- R-STOMP.29 / TP-469 6.10


class FakeStore:
    """Stands in for the agent's data-model Store: ``listen`` and change events."""

    @dataclass(frozen=True)
    class Changed:
        path: str
        old: str
        new: str

    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def listen(self, callback: Any) -> Any:
        self.listeners.append(callback)
        return lambda: self.listeners.remove(callback)

    def set(self, path: str, value: str) -> None:
        for listener in list(self.listeners):
            listener(self.Changed(path, "", value))


DEST_PARAM = "Device.LocalAgent.MTP.2.STOMP.Destination"


async def _moved(r: Rig, dest: str) -> None:
    """Wait until the broker sees the agent subscribed to ``dest``."""
    await r.tl.expect("stomp.SUBSCRIBE", within=STEP, direction="in",
                      where=lambda e: e.decoded["headers"]["destination"] == dest)


def test_destination_change_unsubscribes_then_subscribes() -> None:
    """R-STOMP.29 / TP-469 6.10: UNSUBSCRIBE the old id, SUBSCRIBE the new destination,
    and later SENDs name it in reply-to-dest; the store listener goes away on stop."""
    async def main() -> None:
        store = FakeStore()
        async with rig() as r:
            r.agent.follow_destination(store, DEST_PARAM)
            await r.sink.next("stomp_connect")
            store.set("Device.LocalAgent.MTP.2.STOMP.Other", "/ignored")
            store.set(DEST_PARAM, "/usp/agent-new")
            await _moved(r, "/usp/agent-new")
            commands = [e.decoded["command"] for e in r.tl.filter("stomp.*", direction="in")
                        if e.kind in ("stomp.SUBSCRIBE", "stomp.UNSUBSCRIBE")]
            assert commands == ["SUBSCRIBE", "UNSUBSCRIBE", "SUBSCRIBE"]
            assert _frames(r.tl, "UNSUBSCRIBE")[0]["headers"]["id"] == "0"
            assert _frames(r.tl, "SUBSCRIBE")[1]["headers"]["id"] == "1"
            assert r.agent.destination == r.agent.subscribed_destination == "/usp/agent-new"
            session = await r.broker.wait_for_agent(AGENT, STEP)
            assert session.destinations == ["/usp/agent-new"]
            await r.binding.send(get_record(), to_id=AGENT)
            answer, _ = await r.sink.next("no_session_context")
            assert answer.reply_to == "/usp/agent-new"
            # the same value again, and an empty one, change nothing on the live session
            await r.agent.change_destination("/usp/agent-new")
            await r.agent.change_destination("")
            assert len(_frames(r.tl, "UNSUBSCRIBE")) == 1 and r.agent.connected
            assert r.agent.subscribed_destination == "/usp/agent-new"
            assert r.agent.destination == ""
        assert store.listeners == []
    asyncio.run(main())


def test_destination_change_outside_a_loop_and_before_connecting() -> None:
    """A change with no connection (or no running loop) applies at the next connect."""
    store = FakeStore()
    agent = STOMPMTP(AGENT, STOMPConnectionConfig(), destination=AGENT_DEST)
    agent.follow_destination(store, DEST_PARAM)
    agent.follow_destination(store, DEST_PARAM)      # replaces the first listener
    assert len(store.listeners) == 1
    store.set(DEST_PARAM, "/usp/later")
    assert agent.destination == "/usp/later"
    asyncio.run(agent.change_destination("/usp/other"))
    assert agent.destination == "/usp/other" and agent.subscribed_destination is None


def test_destination_change_keeps_a_server_given_destination() -> None:
    """R-STOMP.29 applies only without subscribe-dest (R-STOMP.14 otherwise)."""
    async def main() -> None:
        async with rig(scenario=STOMPScenario(subscribe_dest="/usp/assigned")) as r:
            await r.sink.next("stomp_connect")
            await r.agent.change_destination("/usp/agent-new")
            assert _frames(r.tl, "UNSUBSCRIBE") == []
            assert r.agent.subscribed_destination == "/usp/assigned"
    asyncio.run(main())


@pytest.mark.parametrize("fault, expected", [
    ("stomp.destination_change_ignored", []),
    ("stomp.subscribe_before_unsubscribe", ["SUBSCRIBE", "SUBSCRIBE", "UNSUBSCRIBE"]),
])
def test_destination_change_faults(fault: str, expected: list[str]) -> None:
    """Faults of TP-469 6.10: no resubscription, or SUBSCRIBE before UNSUBSCRIBE."""
    async def main() -> None:
        async with rig(faults=(fault,)) as r:
            await r.sink.next("stomp_connect")
            await r.agent.change_destination("/usp/agent-new")
            # the agent's own timeline records each frame as it is written
            commands = [e.kind.split(".")[1] for e in r.atl.filter("stomp.*", direction="out")
                        if e.kind in ("stomp.SUBSCRIBE", "stomp.UNSUBSCRIBE")]
            assert commands == (expected or ["SUBSCRIBE"])
            if expected:
                await r.tl.expect("stomp.UNSUBSCRIBE", within=STEP, direction="in")
                assert _frames(r.tl, "UNSUBSCRIBE")[0]["headers"]["id"] == "0"
    asyncio.run(main())


# --------------------------------------------------------------------------- named faults


def test_every_stomp_fault_is_registered_with_its_requirement() -> None:
    names = [n for n in REGISTRY if n.startswith("stomp.")]
    assert len(names) == 19
    assert all("TP-469 6." in REGISTRY[n].requirement for n in names)


@pytest.mark.parametrize("fault, command, check", [
    ("stomp.connect_command", "CONNECT", lambda h: h["host"] == "127.0.0.1"),
    ("stomp.no_host_header", "STOMP", lambda h: "host" not in h),
])
def test_connect_frame_faults(fault: str, command: str, check: Any) -> None:
    """TP-469 6.2 faults: CONNECT instead of STOMP (R-STOMP.2); no host header."""
    async def main() -> None:
        async with rig(faults=(fault,)) as r:
            await r.sink.next("stomp_connect")
            assert check(_frames(r.tl, command)[0]["headers"])
            assert _frames(r.tl, "STOMP" if command == "CONNECT" else "CONNECT") == []
    asyncio.run(main())


def test_faulty_retry_policy() -> None:
    """TP-469 6.3 faults: the next interval's bound (retry_late), or the maximum from the
    second retry on (retry_max_interval); the recorded bounds stay the correct ones."""
    import random

    policy = STOMPRetry(1, 2000, 8)
    late = _FaultyRetry(policy, late=True)
    assert [late.delay(n, random.Random(1)) for n in (1, 2, 3, 4, 10)] == [2, 4, 8, 8, 8]
    assert late.bounds(2) == policy.bounds(2) == (0.0, 2.0)
    at_max = _FaultyRetry(policy, max_after_first=True)
    assert 0 <= at_max.delay(1, random.Random(1)) <= 1
    assert at_max.delay(2, random.Random(1)) == at_max.delay(5, random.Random(1)) == 8
    unbounded = _FaultyRetry(STOMPRetry(1, 2000, None), max_after_first=True)
    assert 0 <= unbounded.delay(2, random.Random(1)) <= 2


def test_retry_fault_reaches_the_back_off() -> None:
    """The agent's retry loop uses the faulty policy (stomp.retry_late)."""
    async def main() -> None:
        fast = STOMPRetry(0.05, 2000, 5)
        async with rig(faults=("stomp.retry_late",), retry=fast) as r:
            await r.sink.next("stomp_connect")
            await r.broker.drop(AGENT)
            wait = await r.atl.expect("stomp.retry", within=STEP)
            assert wait.decoded["delay"] == pytest.approx(0.1)
            assert wait.decoded["bounds"] == [0.0, 0.05]
    asyncio.run(main())


def test_send_header_faults() -> None:
    """TP-469 6.4 faults: no content-length (written although the body holds NUL), another
    content-type, no reply-to-dest."""
    async def main() -> None:
        faults = ("stomp.no_content_length", "stomp.wrong_content_type",
                  "stomp.no_reply_to_dest")
        async with rig(faults=faults) as r:
            await r.tl.expect("stomp.SEND", within=STEP, direction="in")
            headers = _frames(r.tl, "SEND")[0]["headers"]
            assert "content-length" not in headers and "reply-to-dest" not in headers
            assert headers["content-type"] == "application/octet-stream"
            await r.agent.send(b"\x00\x01", to_id=CTRL)      # NUL in the body: sent anyway
            entries = r.atl.filter("stomp.SEND", direction="out")
            assert entries[-1].raw is not None and b"content-length" not in entries[-1].raw
            # ... and the server cannot frame it: ERROR, close, the agent reconnects
            await r.tl.expect("stomp.ERROR", within=STEP, direction="out")
            await r.agent.wait_connected(STEP, count=2)
    asyncio.run(main())


def test_subscribe_dest_faults() -> None:
    """TP-469 6.5 faults: the configured Destination wins over subscribe-dest, or is put
    in reply-to-dest while the agent subscribed to subscribe-dest."""
    async def main() -> None:
        scenario = STOMPScenario(subscribe_dest="/usp/assigned")
        async with rig(scenario=scenario, faults=("stomp.ignore_subscribe_dest",)) as r:
            await r.sink.next("stomp_connect")
            assert _frames(r.tl, "SUBSCRIBE")[0]["headers"]["destination"] == AGENT_DEST
            assert r.agent.destination_from_server == "/usp/assigned"
        async with rig(scenario=scenario,
                       faults=("stomp.reply_to_configured_destination",)) as r:
            inbound, rec = await r.sink.next("stomp_connect")
            assert rec.stomp_connect.subscribed_destination == "/usp/assigned"
            assert inbound.reply_to == AGENT_DEST
    asyncio.run(main())


def test_destination_faults_without_any_destination() -> None:
    """TP-469 6.6/6.7 faults: a made-up /queue/<EndpointID> destination, or an idle
    session instead of DISCONNECT (R-STOMP.16)."""
    async def main() -> None:
        async with rig(destination="", faults=("stomp.destination_from_endpoint_id",)) as r:
            _, rec = await r.sink.next("stomp_connect")
            assert rec.stomp_connect.subscribed_destination == f"/queue/{AGENT}"
        async with rig(destination="", faults=("stomp.no_destination_idle",)) as r:
            await r.atl.expect("stomp.state", within=STEP,
                               where=lambda e: e.decoded["state"] == "no_destination")
            await r.atl.expect_none("stomp.retry", during=0.3)   # FAST retries within 0.2 s
            assert r.tl.filter("stomp.DISCONNECT") == []
            assert len(r.broker.connections) == 1 and r.tl.filter("stomp.SUBSCRIBE") == []
    asyncio.run(main())


def test_heartbeat_faults() -> None:
    """TP-469 6.8 faults: heart-beat header in the wrong order (R-STOMP.10); beats at twice
    the negotiated interval (R-STOMP.11)."""
    async def main() -> None:
        async with rig(scenario=STOMPScenario(heart_beat=(0, 0)), enable_heartbeats=True,
                       outgoing_heartbeat=40, incoming_heartbeat=60,
                       faults=("stomp.heartbeat_header_swapped",)) as r:
            await r.sink.next("stomp_connect")
            assert _frames(r.tl, "STOMP")[0]["headers"]["heart-beat"] == "60,40"
        async with rig(scenario=STOMPScenario(heart_beat=(0, 60)), enable_heartbeats=True,
                       outgoing_heartbeat=60, incoming_heartbeat=0,
                       faults=("stomp.heartbeat_slow",)) as r:
            await r.sink.next("stomp_connect")
            first = await r.tl.expect("stomp.heartbeat", within=STEP, direction="in")
            second = await r.tl.expect("stomp.heartbeat", within=STEP, direction="in",
                                       since=first)
            assert second.t - first.t >= 0.11        # 2 x 60 ms, not 60 ms
    asyncio.run(main())


def test_bad_record_is_ignored_or_ends_the_session_under_the_fault() -> None:
    """TP-469 6.9 / R-MTP.5: an unparseable Record is dropped and the session stays;
    with stomp.drop_on_bad_record the agent DISCONNECTs and reconnects."""
    async def main() -> None:
        async with rig() as r:
            await r.sink.next("stomp_connect")
            await r.binding.send(get_record()[:-1], to_id=AGENT)
            await r.atl.expect("stomp.dropped", within=STEP)
            assert r.agent.connected and r.tl.filter("stomp.DISCONNECT") == []
        async with rig(faults=("stomp.drop_on_bad_record",)) as r:
            await r.sink.next("stomp_connect")
            await r.binding.send(get_record()[:-1], to_id=AGENT)
            await r.tl.expect("stomp.DISCONNECT", within=STEP, direction="in")
            await r.agent.wait_connected(STEP, count=2)
    asyncio.run(main())


def test_plaintext_reconnect_fault() -> None:
    """TP-469 6.11 fault: the first connection uses TLS, the reconnection does not."""
    async def main() -> None:
        async with rig(tls=True, faults=("stomp.plaintext_reconnect",)) as r:
            await r.sink.next("stomp_connect")
            assert len(r.tl.filter("tls.handshake_done")) == 1
            await r.broker.drop(AGENT)
            await r.tl.expect("tls.handshake_failed", within=STEP, direction="in")
            assert len(r.tl.filter("tls.handshake_done")) == 1
    asyncio.run(main())


@pytest.mark.parametrize("fault, version, dest", [
    ("stomp.connect_record_bad_version", 1, AGENT_DEST),
    ("stomp.connect_record_no_destination", 0, ""),
])
def test_connect_record_faults(fault: str, version: int, dest: str) -> None:
    """TP-469 6.12 faults: STOMPVersion outside the enum; empty subscribed_destination."""
    async def main() -> None:
        async with rig(faults=(fault,)) as r:
            inbound, rec = await r.sink.next("stomp_connect")
            assert rec.stomp_connect.version == version
            assert rec.stomp_connect.subscribed_destination == dest
            assert records.record_kind(records.parse_record(inbound.data)) == "stomp_connect"
    asyncio.run(main())
