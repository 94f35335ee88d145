"""What a case script sets on the suite's WebSocket side for TP-469 section 7:
the one-off scenario actions (a Ping, an unsolicited Pong, a Close with a code,
a payload that is no USP Record, a second session), ``redial``, the peer's
``on_event`` hook and the ``query_eid`` of the request summary, over real
loopback sockets (R-WS.4, R-WS.8, R-WS.10b, R-WS.13, R-WS.16, R-WS.17).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.binding import InboundRecord
from conformance.mtp.timeline import Entry, Timeline
from conformance.mtp.websocket import Ping
from conformance.mtp.websocket.client import WSClient, connect_ws
from conformance.mtp.websocket.events import Event
from conformance.mtp.websocket.handshake import build_request, parse_request
from conformance.mtp.websocket.peer import (
    ONE_OFF_ACTIONS,
    WSPeer,
    WSScenario,
    apply_scenario,
    perform_action,
    request_summary,
)
from conformance.mtp.websocket.server import WSServer

CTRL = "self::usp-controller"
AGENT = "os::012345-AGENT01"
STEP = 5.0
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20.0))


@contextlib.asynccontextmanager
async def pair(tl: Timeline, **server_options: Any) -> AsyncIterator[tuple[WSServer, WSClient]]:
    """Our server and our client (the client plays the side that dials)."""
    server = await WSServer(CTRL, timeline=tl, **server_options).start()
    client = await connect_ws("127.0.0.1", server.port, "/usp", eid=AGENT, timeline=tl)
    try:
        yield server, client
    finally:
        await client.close()
        await server.close()


async def until(condition: Callable[[], bool], timeout: float = STEP) -> None:
    """Wait (bounded) for a state the other side reaches a moment after an event."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def actions(tl: Timeline) -> list[dict[str, Any]]:
    return [e.decoded for e in tl.filter("ws.scenario")]  # type: ignore[misc]


def frames_in(tl: Timeline, conn_id: str, type_: str, direction: str = "in") -> list[Entry]:
    return [e for e in tl.filter("ws.frame", direction=direction, conn_id=conn_id)
            if e.decoded["type"] == type_]  # type: ignore[index]


# --------------------------------------------------------------------------- pure parts


def test_apply_scenario_performs_actions_once_and_never_stores_them() -> None:
    current = WSScenario(fragment_size=4)
    stored, todo = apply_scenario(current, None, {"send_pong": "x", "send_ping": "p",
                                                  "withhold_pongs": True})
    assert stored == WSScenario(fragment_size=4, withhold_pongs=True)
    assert list(todo.items()) == [("send_pong", "x"), ("send_ping", "p")]  # order given
    # A whole scenario carrying actions: they are done, not kept.
    stored, todo = apply_scenario(current, WSScenario(send_close=1000, redial=True), {})
    assert stored == WSScenario(redial=True) and todo == {"send_close": 1000}
    assert WSScenario().actions() == {}
    assert set(ONE_OFF_ACTIONS) <= set(WSScenario.__dataclass_fields__)


@pytest.mark.parametrize("changes", [
    {"no_such_field": 1},
    {"send_ping": "x" * 126},          # a control payload holds at most 125 bytes
    {"send_pong": 5},
    {"send_close": 70000},
    {"send_close": True},
    {"send_payload_hex": "zz"},
    {"second_session": 0},
    {"second_session": "3"},
    {"reject_status": "409"},          # a type error becomes a ValueError
])
def test_apply_scenario_refuses_bad_fields_and_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        apply_scenario(WSScenario(), None, changes)


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=True),
                    st.text(max_size=140), st.binary(max_size=8))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([*WSScenario.__dataclass_fields__, "bogus"]), _VALUES,
                       max_size=4))
def test_apply_scenario_never_raises_anything_but_value_error(changes: dict[str, Any]) -> None:
    """Whatever a case script puts in ``set:``: a scenario or one ValueError."""
    try:
        stored, todo = apply_scenario(WSScenario(), None, changes)
    except ValueError:
        return
    assert stored.actions() == {} and set(todo) <= set(ONE_OFF_ACTIONS)


def test_request_summary_has_the_query_eid() -> None:
    """R-WS.10b: the eid query pair, decoded, next to the best-known eid."""
    with_query = request_summary(parse_request(build_request("h:1", "/usp", key=KEY,
                                                             eid="os::a%b")))
    assert with_query["query_eid"] == "os::a%b" and with_query["target"] == "/usp?eid=os::a%25b"
    bare = request_summary(parse_request(build_request("h:1", "/usp", key=KEY)))
    assert bare["query_eid"] is None


def test_actions_need_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        WSServer(CTRL).set_scenario(send_ping="x")
    with pytest.raises(RuntimeError):
        WSClient("127.0.0.1", 1, eid=CTRL).set_scenario(second_session=1)


# --------------------------------------------------------------------------- peer actions


def test_server_ping_pong_payload_and_close_actions() -> None:
    """TP-469 7.7 (Ping, unsolicited Pong), 7.6 (a payload that is no Record), 7.4 (Close)."""
    async def main() -> None:
        tl = Timeline()
        async with pair(tl) as (server, client):
            got: list[InboundRecord] = []
            client.binding.set_sink(got.append)
            peer = await server.wait_for_agent(AGENT, STEP)
            server.set_scenario(send_ping="tp469")
            pong = await tl.expect("ws.frame", within=STEP, direction="in",
                                   where=lambda e: e.decoded["type"] == "pong")
            assert pong.decoded["payload_hex"] == b"tp469".hex()
            server.set_scenario(send_pong="unsolicited")
            await tl.expect("ws.frame", within=STEP, direction="out",
                            where=lambda e: e.decoded["type"] == "pong")
            assert client.peer is not None
            server.set_scenario(send_payload_hex="0a03312e3412")
            await tl.expect("ws.message", within=STEP, direction="in",
                            where=lambda e: e.conn_id == client.peer.conn_id)  # type: ignore[union-attr]
            assert got[-1].data == bytes.fromhex("0a03312e3412")
            assert server.scenario == WSScenario()  # nothing stored
            server.set_scenario(send_close=4000)
            assert await client.peer.wait_closed(STEP)
            received = client.peer.ws.close_received
            assert received is not None and received.code == 4000
            names = [a["action"] for a in actions(tl)]
            assert {"send_ping", "pong", "send_payload", "send_close"} <= set(names)
            assert peer.closed.is_set()
            # No open connection left: the action is skipped, nothing raised.
            server.set_scenario(send_ping="late")
            await tl.expect_none("ws.frame", during=0.1, direction="out",
                                 where=lambda e: e.decoded["type"] == "ping")
    run(main())


def test_perform_action_on_a_closed_peer_records_an_error() -> None:
    async def main() -> None:
        tl = Timeline()
        async with pair(tl) as (server, client):
            peer = await server.wait_for_agent(AGENT, STEP)
            await client.close()
            await peer.wait_closed(STEP)
            await perform_action(peer, "send_ping", "x")
            await perform_action(None, "send_ping", "x")
            assert actions(tl)[-1] == {"action": "send_ping", "error": "no open connection"}
    run(main())


def test_second_session_is_a_client_action() -> None:
    async def main() -> None:
        tl = Timeline()
        async with pair(tl) as (server, _client):
            peer = await server.wait_for_agent(AGENT, STEP)
            await perform_action(peer, "second_session", 1.0)
            assert actions(tl)[-1]["error"] == "not an action of this side"
    run(main())


def test_client_actions_and_on_event_hook() -> None:
    """The client side sends the same one-off actions; ``on_event`` sees each event."""
    async def main() -> None:
        tl = Timeline()
        async with pair(tl) as (server, client):
            peer = await server.wait_for_agent(AGENT, STEP)
            seen: list[Event] = []

            def watch(p: WSPeer, event: Event) -> None:
                assert p is peer
                seen.append(event)

            peer.on_event = watch
            client.set_scenario(send_ping="from-client")
            await tl.expect("ws.frame", within=STEP, direction="in",
                            where=lambda e: e.decoded["type"] == "pong"
                            and e.decoded["payload_hex"] == b"from-client".hex())
            assert Ping(b"from-client") in seen
    run(main())


# --------------------------------------------------------------------------- second session


def test_second_session_both_open_is_reported_and_closed() -> None:
    """R-WS.4 / TP-469 7.2: our server accepts duplicates, so both stay open; the client
    closes the second and keeps the first."""
    async def main() -> None:
        tl = Timeline()
        async with pair(tl) as (_server, client):
            got: list[InboundRecord] = []
            client.binding.set_sink(got.append)
            first = client.peer
            client.set_scenario(second_session=0.3)
            outcome = await tl.expect("ws.second_session", within=STEP, direction="local")
            assert outcome.decoded["outcome"] == "both_open"
            assert outcome.decoded["status"] == 101
            assert tl.filter("ws.duplicate_session")  # our server saw it (R-WS.4)
            assert client.peer is first and first is not None and first.is_open
            # TP-469 7.2 step 3: a Get went over the second session.
            sent = tl.filter("ws.message", direction="out",
                             conn_id=outcome.decoded["second_conn_id"])
            assert len(sent) == 1 and sent[0].decoded["type"] == "binary"
    run(main())


def test_second_session_rejected() -> None:
    async def main() -> None:
        tl = Timeline()
        async with pair(tl) as (server, client):
            server.set_scenario(reject_status=409)
            client.set_scenario(second_session=1)
            outcome = await tl.expect("ws.second_session", within=STEP, direction="local")
            assert (outcome.decoded["outcome"], outcome.decoded["status"]) == ("rejected", 409)
            assert client.is_open
    run(main())


def test_second_session_first_closed_adopts_the_second() -> None:
    """When the agent ends the first session, the second becomes the client's own."""
    async def main() -> None:
        tl = Timeline()
        async with pair(tl) as (server, client):
            first_server_side = await server.wait_for_agent(AGENT, STEP)
            first = client.peer
            client.set_scenario(second_session=STEP)
            await tl.expect("ws.duplicate_session", within=STEP)
            await first_server_side.close(1000, wait=STEP)
            outcome = await tl.expect("ws.second_session", within=STEP, direction="local")
            assert outcome.decoded["outcome"] == "first_closed"
            assert client.peer is not first and client.is_open
            assert client.peer is not None and client.peer.conn_id == outcome.decoded["second_conn_id"]
    run(main())


def test_second_session_without_a_first_one_and_refused() -> None:
    async def main() -> None:
        tl = Timeline()
        lonely = WSClient("127.0.0.1", 1, eid=CTRL, timeline=tl)
        lonely.set_scenario(second_session=1)
        outcome = await tl.expect("ws.second_session", within=STEP, direction="local")
        assert outcome.decoded["outcome"] == "no_session"
        async with pair(tl, scenario=WSScenario()) as (server, client):
            server.set_scenario(refuse_connections=True)
            client.set_scenario(second_session=1)
            outcome = await tl.expect("ws.second_session", within=STEP, direction="local",
                                      where=lambda e: e.decoded["outcome"] != "no_session")
            assert outcome.decoded["outcome"] in ("refused", "rejected")
    run(main())


# --------------------------------------------------------------------------- redial


def test_redial_after_the_agent_closes_and_not_after_we_do() -> None:
    """TP-469 7.6 in agent-as-server runs: the suite dials again when the agent ends the
    session, not when the suite itself closes or aborts."""
    async def main() -> None:
        tl = Timeline()
        async with pair(tl) as (server, client):
            first = await server.wait_for_agent(AGENT, STEP)
            client.set_scenario(redial=True)
            await first.close(1003, wait=STEP)
            second = await server.wait_for_agent(AGENT, STEP)
            await until(lambda: client.is_open)
            assert second is not first and client.peer is not None
            assert {"action": "redial"} in actions(tl)
            await client.close()
            await tl.expect_none("ws.attempt", during=0.3, since=tl.entries[-1].t)
            assert server.peer_for(AGENT) is None and not client.is_open
    run(main())


def test_no_redial_by_default() -> None:
    async def main() -> None:
        tl = Timeline()
        async with pair(tl) as (server, client):
            first = await server.wait_for_agent(AGENT, STEP)
            await first.close(1000, wait=STEP)
            await tl.expect_none("ws.attempt", during=0.3, since=tl.entries[-1].t)
            assert server.peer_for(AGENT) is None and not client.is_open
            assert len(server.connection_attempts) == 1
    run(main())
