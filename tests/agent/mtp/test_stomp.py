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

from conformance.agent.mtp import ControllerRoute, MTPNotConnected, NoRoute
from conformance.agent.mtp.backoff import STOMPRetry
from conformance.agent.mtp.stomp import STOMPMTP, STOMPConnectionConfig
from conformance.mtp.stomp.binding import STOMPBinding
from conformance.mtp.stomp.broker import STOMPBroker, STOMPScenario
from conformance.mtp.stomp.frames import USP_CONTENT_TYPE
from conformance.mtp.timeline import Timeline
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
              **config: Any) -> AsyncIterator[Rig]:
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
