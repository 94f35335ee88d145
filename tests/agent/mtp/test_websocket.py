"""The reference Agent's WebSocket MTP, both roles, against the suite's WSServer / WSClient.

R-WS.2, R-WS.4..R-WS.12a, R-WS.14, R-WS.16..R-WS.20, R-MTP.6 / R-MTP.7;
TP-469 7.1 .. 7.4, 7.6 .. 7.10.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from conformance.agent.faults import REGISTRY, FaultSet
from conformance.agent.mtp import ControllerRoute, MTPNotConnected, NoRoute
from conformance.agent.mtp.backoff import WebSocketRetry
from conformance.agent.mtp.websocket import WebSocketMTP, WSController, WSServerConfig
from conformance.mtp.timeline import Timeline
from conformance.mtp.websocket.client import WSClient, WSHandshakeError
from conformance.mtp.websocket.peer import WSScenario
from conformance.mtp.websocket.server import WSServer
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

FAST = WebSocketRetry(0.1, 2000)
CTRL2 = "proto::controller-2"


@dataclass
class ClientRig:
    server: WSServer
    sink: Sink
    agent: WebSocketMTP
    echo: Echo
    tl: Timeline
    atl: Timeline


@asynccontextmanager
async def client_rig(*, tls: bool = False, keep_alive: float | None = None,
                     faults: tuple[str, ...] = (), retry: WebSocketRetry = FAST,
                     scenario: WSScenario | None = None) -> AsyncIterator[ClientRig]:
    """The agent as WebSocket client of the suite's server (R-WS.5)."""
    tl, atl = Timeline(), Timeline()
    pair = mutual_tls() if tls else None
    server = await WSServer(CTRL, timeline=tl, ssl_context=pair.server if pair else None,
                            scenario=scenario).start()
    sink = Sink()
    server.binding.set_sink(sink)
    agent = WebSocketMTP(AGENT, controllers=[WSController(CTRL, server.url, keep_alive, retry)],
                         client_ssl_context=pair.client if pair else None, timeline=atl)
    agent.faults = FaultSet(faults)
    echo = Echo(agent)
    try:
        await agent.start()
        yield ClientRig(server, sink, agent, echo, tl, atl)
    finally:
        await agent.stop()
        await server.close()


@asynccontextmanager
async def server_agent(*, tls: bool = False, faults: tuple[str, ...] = (), **config: Any
                       ) -> AsyncIterator[tuple[WebSocketMTP, Timeline, Any]]:
    """The agent as WebSocket server (R-WS.6)."""
    atl = Timeline()
    pair = mutual_tls(AGENT, CTRL) if tls else None
    agent = WebSocketMTP(AGENT, server=WSServerConfig(**config),
                         server_ssl_context=pair.server if pair else None, timeline=atl)
    agent.faults = FaultSet(faults)
    Echo(agent)
    await agent.start()
    try:
        yield agent, atl, pair
    finally:
        await agent.stop()


# --------------------------------------------------------------------------- client role


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mtls"])
def test_client_session_connect_record_and_round_trip(tls: bool) -> None:
    """TP-469 7.1/7.9/7.10: upgrade with ?eid= and v1.usp, WebSocketConnect Record
    first, a Record answered in a binary message; Pings every KeepAliveInterval."""
    async def main() -> None:
        async with client_rig(tls=tls, keep_alive=0.05) as r:
            _, rec = await r.sink.next("websocket_connect")
            assert (rec.to_id, rec.from_id) == (CTRL, AGENT)
            request = (await r.tl.expect("ws.handshake_request", within=STEP)).decoded
            assert request["eid"] == AGENT and request["path"] == "/usp"  # R-WS.10b, R-WS.2
            assert request["target"] == "/usp?eid=os::012345-AGENT"
            assert request["subprotocols"] == ["v1.usp"]  # R-WS.10
            await r.agent.wait_connected(STEP)
            session = r.agent.session(CTRL)
            assert session is not None and session.role == "client"
            data = get_record()
            await r.server.binding.send(data, to_id=AGENT)
            answer, _ = await r.sink.next("no_session_context")
            assert answer.data == data and answer.meta["opcode"] == 2  # R-WS.14 binary
            route = r.echo.routes[-1]
            assert (route.mtp, route.controller_hint, route.reply_to) == ("websocket", CTRL, None)
            assert route.conn_id == session.conn_id
            # R-WS.17 / R-WS.18: Pings at the configured interval.
            ping = await r.tl.expect("ws.frame", within=STEP, direction="in",
                                     where=lambda e: e.decoded.get("type") == "ping")
            assert ping.decoded["masked"]
            assert r.tl.filter("ws.violation") == []
            if tls:
                done = await r.tl.expect("tls.handshake_done", within=STEP, direction="in")
                assert done.decoded["peer_endpoint_ids"] == [AGENT]
    asyncio.run(main())


def test_client_session_retry_back_off() -> None:
    """R-WS.19 / R-WS.20 / TP-469 7.8: after the TCP connection drops, retry n waits
    m*(k/1000)^(n-1) .. m*(k/1000)^n; the count restarts once connected."""
    async def main() -> None:
        async with client_rig() as r:
            await r.sink.next("websocket_connect")
            r.server.set_scenario(refuse_connections=True)
            dropped_at = time.monotonic()
            await r.server.abort_agent(AGENT)
            await r.server.wait_for_attempts(3, timeout=STEP)
            await r.atl.expect("ws.retry", within=STEP, where=lambda e: e.decoded["retry"] == 3)
            r.server.set_scenario(refuse_connections=False)
            await r.sink.next("websocket_connect")  # R-MTP.6 on every new session
            waits = r.atl.filter("ws.retry")
            assert [w.decoded["retry"] for w in waits] == [1, 2, 3]
            assert {w.decoded["controller"] for w in waits} == {CTRL}
            attempts = [a.t for a in r.server.connection_attempts]
            check_gaps([dropped_at, *attempts[1:]], waits, FAST.bounds)
            await r.server.abort_agent(AGENT)  # R-WS.20: next retry is #1 again
            again = await r.atl.expect("ws.retry", within=STEP, since=waits[-1])
            assert again.decoded["retry"] == 1
    asyncio.run(main())


def test_client_refuses_a_session_without_v1_usp() -> None:
    """R-WS.12: an answer without the v1.usp subprotocol establishes no session."""
    async def main() -> None:
        async with client_rig() as r:
            r.server.set_scenario(omit_subprotocol=True)
            await r.atl.expect("ws.state", within=STEP,
                               where=lambda e: e.decoded["state"] == "connect_failed")
            assert not r.agent.connected and r.sink.items == []
            r.server.set_scenario(omit_subprotocol=False)
            await r.sink.next("websocket_connect")
    asyncio.run(main())


# --------------------------------------------------------------------------- server role


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mtls"])
def test_server_accepts_a_controller_and_answers(tls: bool) -> None:
    """R-WS.6 / TP-469 7.3: v1.usp, eid from the query, the quoted bbf-usp-protocol
    answer, WebSocketConnect Record, Records answered; R-WS.4 second session refused."""
    async def main() -> None:
        async with server_agent(tls=tls) as (agent, atl, pair):
            ctl = Timeline()
            client = WSClient("127.0.0.1", agent.port, "/usp", eid=CTRL, timeline=ctl,
                              ssl_context=pair.client if pair else None)
            sink = Sink()
            client.binding.set_sink(sink)
            await client.connect()
            try:
                head = client.handshake.response.http  # type: ignore[union-attr]
                assert head.get("Sec-WebSocket-Extensions") == \
                    f'bbf-usp-protocol; eid="{AGENT}"'  # R-WS.11a, quoted
                assert head.get("Sec-WebSocket-Protocol") == "v1.usp"
                assert client.agent_eid == AGENT
                _, rec = await sink.next("websocket_connect")
                assert rec.to_id == CTRL
                data = get_record()
                await client.binding.send(data, to_id=AGENT)
                answer, _ = await sink.next("no_session_context")
                assert answer.data == data
                session = agent.session(CTRL)
                assert session is not None and session.role == "server"
                assert agent.url == f"{'wss' if tls else 'ws'}://127.0.0.1:{agent.port}/usp"
                # R-WS.4: one session per Controller.
                second = WSClient("127.0.0.1", agent.port, "/usp", eid=CTRL,
                                  ssl_context=pair.client if pair else None)
                with pytest.raises(WSHandshakeError) as refused:
                    await second.connect()
                assert refused.value.status == 409
                assert atl.filter("ws.duplicate_session")[0].decoded == {"eid": CTRL}
                assert ctl.filter("ws.violation") == []
            finally:
                await client.close()
    asyncio.run(main())


def test_server_refuses_bad_upgrades() -> None:
    """R-WS.12a (no subprotocol), R-WS.2 (other path: 404), R-WS.10b (no eid)."""
    async def main() -> None:
        async with server_agent() as (agent, _atl, _):
            cases = [("/usp", WSScenario(omit_subprotocol=True), 400),
                     ("/other", WSScenario(), 404),
                     ("/usp", WSScenario(omit_eid=True, omit_extension=True), 400)]
            for path, scenario, status in cases:
                client = WSClient("127.0.0.1", agent.port, path, eid=CTRL, scenario=scenario)
                with pytest.raises(WSHandshakeError) as refused:
                    await client.connect()
                assert refused.value.status == status, path
            assert agent.sessions == {} and not agent.connected
    asyncio.run(main())


def test_undecodable_record_closes_with_1003() -> None:
    """R-WS.16 / TP-469 7.6: a message that is not a USP Record -> Close 1003."""
    async def main() -> None:
        async with server_agent() as (agent, atl, _):
            client = WSClient("127.0.0.1", agent.port, "/usp", eid=CTRL)
            await client.connect()
            await client.binding.send(b"\xff\xff\xff", to_id=AGENT)
            assert client.peer is not None
            await client.peer.wait_closed(STEP)
            received = client.peer.ws.close_received
            assert received is not None and received.code == 1003
            assert atl.filter("ws.dropped")
    asyncio.run(main())


def test_both_roles_and_stop_sends_disconnect_records_on_every_session() -> None:
    """R-WS.5 + R-WS.6 in one MTP; R-MTP.7: each DisconnectRecord goes to the session
    of its to_id before the Close."""
    async def main() -> None:
        tl, atl = Timeline(), Timeline()
        async with await WSServer(CTRL, timeline=tl).start() as server:
            server_sink = Sink()
            server.binding.set_sink(server_sink)
            agent = WebSocketMTP(AGENT, controllers=[WSController(CTRL, server.url, None, FAST)],
                                 server=WSServerConfig(), timeline=atl)
            Echo(agent)
            await agent.start()
            client = WSClient("127.0.0.1", agent.port, "/usp", eid=CTRL2)
            client_sink = Sink()
            client.binding.set_sink(client_sink)
            try:
                await server_sink.next("websocket_connect")
                await client.connect()
                await client_sink.next("websocket_connect")
                assert {e: s.role for e, s in agent.sessions.items()} == {
                    CTRL: "client", CTRL2: "server"}
                await agent.stop([disconnect_record(CTRL2), disconnect_record(CTRL),
                                  disconnect_record("proto::unknown")])
                assert (await client_sink.next("disconnect"))[1].to_id == CTRL2
                assert (await server_sink.next("disconnect"))[1].to_id == CTRL
                assert client.peer is not None
                assert await client.peer.wait_closed(STEP)  # clean closing handshake
                marks = [(e.decoded["to_id"], e.decoded["sent"])
                         for e in atl.filter("ws.disconnect_record")]
                assert marks == [(CTRL2, True), (CTRL, True), ("proto::unknown", False)]
                assert not agent.connected
            finally:
                await client.close()
                await agent.stop()
    asyncio.run(main())


def test_send_errors_and_bad_configuration() -> None:
    async def main() -> None:
        agent = WebSocketMTP(AGENT, controllers=[ControllerRoute(CTRL, "ws://127.0.0.1:1/usp")])
        assert agent.url is None and agent.port == 0
        with pytest.raises(MTPNotConnected):
            await agent.send(get_record(CTRL, AGENT), to_id=CTRL)
        with pytest.raises(NoRoute):
            await agent.send(get_record("proto::x", AGENT), to_id="proto::x")
        await agent.stop()
    asyncio.run(main())
    with pytest.raises(ValueError):
        WebSocketMTP(AGENT, controllers=[ControllerRoute(CTRL, "http://x/usp")])


# --------------------------------------------------------------------------- faults (TP-469 7.x)
#
# Each named fault breaks one rule, and only when it is on; the clean agent's side of
# every rule is covered by the tests above.

WS_FAULTS = ("ws.no_eid_query", "ws.duplicate_sessions", "ws.no_close_reply",
             "ws.bad_record_wrong_close_code", "ws.no_pong", "ws.close_on_unsolicited_pong",
             "ws.retry_immediately", "ws.retry_fixed_interval", "ws.connect_record_no_to_id",
             "ws.require_extension", "ws.no_defragmentation")


def test_faults_are_registered_with_their_requirement() -> None:
    assert {n for n in REGISTRY if n.startswith("ws.")} == set(WS_FAULTS)
    for name in WS_FAULTS:
        fault = REGISTRY[name]
        assert fault.requirement.startswith("R-") and "TP-469 7." in fault.requirement
        assert fault.description


def test_fault_no_eid_query() -> None:
    """R-WS.10b / TP-469 7.1: the fault leaves ?eid= out; the session still opens
    (the deprecated extension eid names the agent)."""
    async def main() -> None:
        async with client_rig(faults=("ws.no_eid_query",)) as r:
            await r.sink.next("websocket_connect")
            request = (await r.tl.expect("ws.handshake_request", within=STEP)).decoded
            assert request["query_eid"] is None and request["target"] == "/usp"
            assert request["eid"] == AGENT  # from the extension
            violations = r.tl.filter("ws.violation")
            assert any(v["rule"] == "R-WS.10b" for e in violations
                       for v in e.decoded["violations"])
    asyncio.run(main())


def test_fault_duplicate_sessions() -> None:
    """R-WS.4 / TP-469 7.2: with the fault a second session of the same Controller is
    accepted (no 409)."""
    async def main() -> None:
        async with server_agent(faults=("ws.duplicate_sessions",)) as (agent, atl, _):
            first = WSClient("127.0.0.1", agent.port, "/usp", eid=CTRL)
            second = WSClient("127.0.0.1", agent.port, "/usp", eid=CTRL)
            await first.connect()
            try:
                await second.connect()
                assert first.is_open and second.is_open
                assert atl.filter("ws.duplicate_session") == []
            finally:
                await second.close()
                await first.close()
    asyncio.run(main())


def test_fault_no_close_reply() -> None:
    """R-WS.8 / TP-469 7.4: the clean agent echoes the Close; the faulty one drops TCP."""
    async def closing(faults: tuple[str, ...]) -> tuple[list[Any], bool]:
        async with client_rig(faults=faults) as r:
            await r.sink.next("websocket_connect")
            peer = await r.server.wait_for_agent(AGENT, STEP)
            clean = await r.server.close_agent(AGENT, 1000, wait=STEP)
            closes = [e.decoded for e in r.tl.filter("ws.frame", direction="in")
                      if e.conn_id == peer.conn_id and e.decoded["type"] == "close"]
            await r.sink.next("websocket_connect")  # it reconnects either way
            return closes, clean

    async def main() -> None:
        closes, clean = await closing(())
        assert clean and [c["code"] for c in closes] == [1000]
        closes, clean = await closing(("ws.no_close_reply",))
        assert not clean and closes == []
    asyncio.run(main())


def test_fault_bad_record_wrong_close_code() -> None:
    """R-WS.16 / TP-469 7.6: the fault closes with 1002 instead of 1003."""
    async def main() -> None:
        async with server_agent(faults=("ws.bad_record_wrong_close_code",)) as (agent, atl, _):
            client = WSClient("127.0.0.1", agent.port, "/usp", eid=CTRL)
            await client.connect()
            await client.binding.send(b"\x0a\x03\x31\x2e\x34\x12", to_id=AGENT)
            assert client.peer is not None
            await client.peer.wait_closed(STEP)
            received = client.peer.ws.close_received
            assert received is not None and received.code == 1002
            assert atl.filter("ws.dropped")
    asyncio.run(main())


@pytest.mark.parametrize("fault", [None, "ws.no_pong"])
def test_fault_no_pong(fault: str | None) -> None:
    """R-WS.17 / TP-469 7.7 metric 1: Pings answered, unless the fault withholds Pongs."""
    async def main() -> None:
        async with client_rig(faults=(fault,) if fault else ()) as r:
            await r.sink.next("websocket_connect")
            peer = await r.server.wait_for_agent(AGENT, STEP)
            answered = await peer.ping(b"tp469-7.7", timeout=0.5 if fault else STEP)
            assert answered is (fault is None)
            assert peer.is_open
    asyncio.run(main())


@pytest.mark.parametrize("fault", [None, "ws.close_on_unsolicited_pong"])
def test_fault_close_on_unsolicited_pong(fault: str | None) -> None:
    """RFC 6455 5.5.3 / TP-469 7.7 metric 2: an unsolicited Pong is ignored, unless the
    fault closes the session with 1002."""
    async def main() -> None:
        async with server_agent(faults=(fault,) if fault else ()) as (agent, _atl, _):
            client = WSClient("127.0.0.1", agent.port, "/usp", eid=CTRL)
            sink = Sink()
            client.binding.set_sink(sink)
            await client.connect()
            try:
                await sink.next("websocket_connect")
                assert client.peer is not None
                await client.peer.pong(b"unsolicited")
                if fault:
                    await client.peer.wait_closed(STEP)
                    received = client.peer.ws.close_received
                    assert received is not None and received.code == 1002
                else:
                    await client.binding.send(get_record(), to_id=AGENT)
                    await sink.next("no_session_context")  # still answering
                    assert client.is_open
            finally:
                await client.close()
    asyncio.run(main())


def test_retry_fault_policies() -> None:
    """R-WS.19 broken on purpose: retry #1 without a wait, or every wait = m."""
    from conformance.agent.mtp.websocket import _FixedRetry, _ImmediateFirstRetry

    rng = random.Random(7)
    normal = WebSocketRetry(1.0, 2000)
    immediate = _ImmediateFirstRetry(normal)
    assert immediate.bounds(1) == (0.0, 0.0) and immediate.delay(1, rng) == 0.0
    assert immediate.bounds(2) == normal.bounds(2) == (2.0, 4.0)
    assert 2.0 <= immediate.delay(2, rng) <= 4.0
    fixed = _FixedRetry(1.0)
    assert [fixed.delay(n, rng) for n in (1, 2, 10)] == [1.0, 1.0, 1.0]
    assert fixed.bounds(3) == (1.0, 1.0)


@pytest.mark.parametrize("fault,first,second", [
    ("ws.retry_immediately", (0.0, 0.0), (0.2, 0.4)),
    ("ws.retry_fixed_interval", (0.1, 0.1), (0.1, 0.1)),
])
def test_fault_retry_waits(fault: str, first: tuple[float, float],
                           second: tuple[float, float]) -> None:
    """TP-469 7.8: the agent's recorded retry waits follow the faulty policy."""
    async def main() -> None:
        async with client_rig(faults=(fault,)) as r:
            await r.sink.next("websocket_connect")
            r.server.set_scenario(refuse_connections=True)
            await r.server.abort_agent(AGENT)
            await r.atl.expect("ws.retry", within=STEP, where=lambda e: e.decoded["retry"] == 2)
            r.server.set_scenario(refuse_connections=False)
            await r.sink.next("websocket_connect")
            waits = [e.decoded for e in r.atl.filter("ws.retry")]
            assert [w["retry"] for w in waits] == [1, 2]
            assert waits[0]["bounds"] == list(first) and waits[1]["bounds"] == list(second)
            assert first[0] <= waits[0]["delay"] <= first[1]
    asyncio.run(main())


def test_fault_connect_record_no_to_id() -> None:
    """R-MTP.6 / TP-469 7.10: the fault's WebSocketConnect Record has an empty to_id."""
    async def main() -> None:
        async with client_rig(faults=("ws.connect_record_no_to_id",)) as r:
            _, rec = await r.sink.next("websocket_connect")
            assert (rec.from_id, rec.to_id) == (AGENT, "")
    asyncio.run(main())


@pytest.mark.parametrize("fault", [None, "ws.require_extension"])
def test_fault_require_extension(fault: str | None) -> None:
    """R-WS.11b / TP-469 7.11: an answer without bbf-usp-protocol opens the session,
    unless the fault counts it as a failed handshake."""
    async def main() -> None:
        async with client_rig(faults=(fault,) if fault else (),
                              scenario=WSScenario(omit_extension=True)) as r:
            if fault is None:
                await r.sink.next("websocket_connect")
                assert r.agent.connected
                return
            failed = await r.atl.expect("ws.state", within=STEP,
                                        where=lambda e: e.decoded["state"] == "connect_failed")
            assert "bbf-usp-protocol" in failed.decoded["error"]
            assert not r.agent.connected
            r.server.set_scenario(omit_extension=False)
            await r.sink.next("websocket_connect")
    asyncio.run(main())


@pytest.mark.parametrize("fault", [None, "ws.no_defragmentation"])
def test_fault_no_defragmentation(fault: str | None) -> None:
    """R-WS.14b / TP-469 7.12: a Record in 16-byte frames is answered, unless the fault
    takes the first frame for the Record (then R-WS.16: Close 1003)."""
    async def main() -> None:
        async with client_rig(faults=(fault,) if fault else (),
                              scenario=WSScenario(fragment_size=16)) as r:
            await r.sink.next("websocket_connect")
            peer = await r.server.wait_for_agent(AGENT, STEP)
            await r.server.binding.send(get_record(), to_id=AGENT)
            if fault is None:
                answer, _ = await r.sink.next("no_session_context")
                assert answer.data == get_record()
                return
            await peer.wait_closed(STEP)
            received = peer.ws.close_received
            assert received is not None and received.code == 1003
            assert r.echo.routes == []
    asyncio.run(main())
