"""The reference Agent's WebSocket MTP, both roles, against the suite's WSServer / WSClient.

R-WS.2, R-WS.4..R-WS.12a, R-WS.14, R-WS.16..R-WS.20, R-MTP.6 / R-MTP.7;
TP-469 7.1 .. 7.4, 7.6 .. 7.10.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

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
async def client_rig(*, tls: bool = False, keep_alive: float | None = None
                     ) -> AsyncIterator[ClientRig]:
    """The agent as WebSocket client of the suite's server (R-WS.5)."""
    tl, atl = Timeline(), Timeline()
    pair = mutual_tls() if tls else None
    server = await WSServer(CTRL, timeline=tl, ssl_context=pair.server if pair else None).start()
    sink = Sink()
    server.binding.set_sink(sink)
    agent = WebSocketMTP(AGENT, controllers=[WSController(CTRL, server.url, keep_alive, FAST)],
                         client_ssl_context=pair.client if pair else None, timeline=atl)
    echo = Echo(agent)
    try:
        await agent.start()
        yield ClientRig(server, sink, agent, echo, tl, atl)
    finally:
        await agent.stop()
        await server.close()


@asynccontextmanager
async def server_agent(*, tls: bool = False, **config: Any
                       ) -> AsyncIterator[tuple[WebSocketMTP, Timeline, Any]]:
    """The agent as WebSocket server (R-WS.6)."""
    atl = Timeline()
    pair = mutual_tls(AGENT, CTRL) if tls else None
    agent = WebSocketMTP(AGENT, server=WSServerConfig(**config),
                         server_ssl_context=pair.server if pair else None, timeline=atl)
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
