"""The reference Agent's UNIX domain socket client against the suite's UDSServer.

R-UDS.4, R-UDS.5, R-UDS.16, R-UDS.18, R-UDS.20, R-UDS.22..R-UDS.25,
R-UDS.23a, R-MTP.6 / R-MTP.7.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from conformance.agent.mtp import MTPNotConnected, NoRoute
from conformance.agent.mtp.backoff import UDSRetry
from conformance.agent.mtp.uds import UDSMTP
from conformance.mtp.timeline import Timeline
from conformance.mtp.uds.codec import encode_record
from conformance.mtp.uds.peer import UDSScenario
from conformance.mtp.uds.server import UDSServer
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

FAST = UDSRetry(0.05, 0.15)


@dataclass
class Rig:
    server: UDSServer
    sink: Sink
    agent: UDSMTP
    echo: Echo
    tl: Timeline
    atl: Timeline


@asynccontextmanager
async def rig(tmp_path: Path, *, tls: bool = False, handshake_timeout: float = 30.0,
              scenario: UDSScenario | None = None) -> AsyncIterator[Rig]:
    tl, atl = Timeline(), Timeline()
    pair = mutual_tls() if tls else None
    path = str(tmp_path / "controller.sock")
    server = await UDSServer(path, CTRL, timeline=tl, scenario=scenario,
                             ssl_context=pair.server if pair else None).start()
    sink = Sink()
    server.binding.set_sink(sink)
    agent = UDSMTP(AGENT, path, retry=FAST, timeline=atl, handshake_timeout=handshake_timeout,
                   ssl_context=pair.client if pair else None)
    echo = Echo(agent)
    try:
        await agent.start()
        yield Rig(server, sink, agent, echo, tl, atl)
    finally:
        await agent.stop()
        await server.close()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_handshake_connect_record_and_round_trip(tmp_path: Path, tls: bool) -> None:
    """R-UDS.16 (client Handshake first), R-MTP.6 (UDSConnect Record), R-UDS.22."""
    async def main() -> None:
        async with rig(tmp_path, tls=tls) as r:
            _, rec = await r.sink.next("uds_connect")
            assert (rec.to_id, rec.from_id) == (CTRL, AGENT)
            first = r.tl.filter("uds.frame", direction="in")[0].decoded
            assert [t["name"] for t in first["tlvs"]] == ["HANDSHAKE"]
            assert first["tlvs"][0]["text"] == AGENT
            await r.agent.wait_connected(STEP)
            assert r.agent.peer_endpoint_id == CTRL and r.agent.tls is tls
            data = get_record()
            await r.server.binding.send(data, to_id=AGENT)
            answer, _ = await r.sink.next("no_session_context")
            assert answer.data == data
            route = r.echo.routes[-1]
            assert (route.mtp, route.controller_hint, route.conn_id) == (
                "uds", CTRL, r.agent.conn_id)
            assert r.tl.filter("uds.violation") == []
    asyncio.run(main())


def test_reconnects_after_a_random_one_to_five_seconds(tmp_path: Path) -> None:
    """R-UDS.5 (range shortened for the test): the server closes, the client retries."""
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.sink.next("uds_connect")
            peer = await r.server.wait_for_peer(AGENT, STEP)
            r.server.set_scenario(UDSScenario(close_after_handshake=True))
            closed_at = time.monotonic()
            await peer.close()
            last = await r.tl.expect("conn.open", within=STEP, direction="in")
            for _ in range(3):  # three reconnections, each closed after the handshake
                last = await r.tl.expect("conn.open", within=STEP, direction="in", since=last)
            r.server.set_scenario(None)
            await r.sink.next("uds_connect")
            opens = [e.t for e in r.tl.filter("conn.open", direction="in")]
            waits = r.atl.filter("uds.retry")[:3]
            assert [w.decoded["retry"] for w in waits] == [1, 1, 1]  # reset on each handshake
            check_gaps([closed_at, *opens[1:4]], waits, FAST.bounds)
    asyncio.run(main())


def test_missing_server_handshake_closes_after_the_timeout(tmp_path: Path) -> None:
    """R-UDS.18: no Handshake back within the timeout -> close (and retry)."""
    async def main() -> None:
        async with rig(tmp_path, handshake_timeout=0.2,
                       scenario=UDSScenario(withhold_handshake=True)) as r:
            closed = await r.atl.expect("uds.closed", within=STEP,
                                        where=lambda e: e.decoded.get("rule") == "R-UDS.18")
            assert closed.decoded["by"] == "agent"
            await r.atl.expect("uds.retry", within=STEP)
            r.server.set_scenario(None)
            await r.sink.next("uds_connect")
    asyncio.run(main())


def test_undecodable_record_gets_an_error_and_a_close(tmp_path: Path) -> None:
    """R-UDS.23: a Record that cannot be extracted -> Error TLV, connection closed."""
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.sink.next("uds_connect")
            peer = await r.server.wait_for_peer(AGENT, STEP)
            await peer.send_raw(encode_record(b"\xff\xff not a record"))
            error = await r.tl.expect("uds.error", within=STEP, direction="in")
            assert "extract" in error.decoded["message"]
            await peer.wait_closed(STEP)
            assert r.echo.routes == []
    asyncio.run(main())


def test_error_from_the_server_closes_the_connection(tmp_path: Path) -> None:
    """R-UDS.25: a received Error TLV terminates the connection."""
    async def main() -> None:
        async with rig(tmp_path, scenario=UDSScenario(error_after_handshake="go away")) as r:
            err = await r.atl.expect("uds.error", within=STEP, direction="in")
            assert err.decoded["message"] == "go away"
            closed = await r.atl.expect("uds.closed", within=STEP,
                                        where=lambda e: e.decoded.get("rule") == "R-UDS.25")
            assert closed.decoded["by"] == "agent"
    asyncio.run(main())


def test_stop_sends_the_disconnect_record(tmp_path: Path) -> None:
    """R-MTP.7."""
    async def main() -> None:
        async with rig(tmp_path) as r:
            await r.sink.next("uds_connect")
            with pytest.raises(NoRoute):
                await r.agent.send(get_record("proto::x", AGENT), to_id="proto::x")
            await r.agent.stop(disconnect_record())
            _, rec = await r.sink.next("disconnect")
            assert rec.disconnect.reason_code == 7003
            assert not r.agent.connected
            with pytest.raises(MTPNotConnected):
                await r.agent.send(get_record(CTRL, AGENT), to_id=CTRL)
    asyncio.run(main())


def test_nothing_listening_is_retried_and_bad_timeouts_refused(tmp_path: Path) -> None:
    async def main() -> None:
        atl = Timeline()
        agent = UDSMTP(AGENT, str(tmp_path / "none.sock"), retry=FAST, timeline=atl)
        await agent.start()
        try:
            await atl.expect("uds.retry", within=STEP, where=lambda e: e.decoded["retry"] == 2)
            assert atl.filter("uds.state")[0].decoded["state"] == "connect_failed"
        finally:
            await agent.stop()
    asyncio.run(main())
    with pytest.raises(ValueError):
        UDSMTP(AGENT, "x", handshake_timeout=0)
