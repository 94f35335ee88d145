"""The reference Agent's UNIX domain socket client against the suite's UDSServer, and
its named faults against a hand-made server.

R-UDS.4, R-UDS.5, R-UDS.6, R-UDS.8, R-UDS.9, R-UDS.11, R-UDS.14..R-UDS.16,
R-UDS.18..R-UDS.25, R-UDS.23a, R-MTP.6 / R-MTP.7 / R-MTP.8.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conformance.agent.faults import FaultSet
from conformance.agent.mtp import MTPNotConnected, NoRoute
from conformance.agent.mtp.backoff import UDSRetry
from conformance.agent.mtp.base import ControllerRoute
from conformance.agent.mtp.uds import UDSMTP
from conformance.mtp.timeline import Timeline
from conformance.mtp.uds.codec import (
    UDSDecoder,
    encode_error,
    encode_frame,
    encode_handshake,
    encode_raw_frame,
    encode_record,
)
from conformance.mtp.uds.frames import TLV, TLVType, UDSFrame
from conformance.mtp.uds.peer import UDSScenario
from conformance.mtp.uds.server import UDSServer
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


# --- named faults (conformance/agent/mtp/uds.py), driven by a hand-made UDS server ---------

@dataclass
class RawConn:
    """One connection of the agent to :func:`raw_rig`'s server: raw bytes both ways."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    decoder: UDSDecoder = field(default_factory=UDSDecoder)
    pending: list[UDSFrame] = field(default_factory=list)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frame(self, timeout: float = STEP) -> UDSFrame:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("the agent closed the connection")
            self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    async def handshake(self, ours: bytes | None = None) -> UDSFrame:
        """Read the agent's Handshake, answer it; returns the agent's Handshake frame."""
        first = await self.frame()
        await self.send(encode_handshake(CTRL) if ours is None else ours)
        return first

    async def connected(self) -> None:
        """Handshake both ways and read the UDSConnect Record."""
        await self.handshake()
        assert kind_of(await self.frame()) == "uds_connect"

    async def eof(self, timeout: float = STEP) -> list[UDSFrame]:
        """Frames until the agent closes (TimeoutError if it does not)."""
        out, self.pending = self.pending, []
        async with asyncio.timeout(timeout):
            while data := await self.reader.read(65536):
                out += self.decoder.feed(data)
        return out

    async def quiet(self, seconds: float = 0.3) -> list[UDSFrame]:
        """Frames arriving within ``seconds`` (the connection must stay open)."""
        out, self.pending = self.pending, []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    data = await self.reader.read(65536)
                    assert data, "the agent closed the connection"
                    out += self.decoder.feed(data)
        return out

    def close(self) -> None:
        self.writer.close()


@dataclass
class RawRig:
    conns: asyncio.Queue[RawConn]
    agent: UDSMTP
    atl: Timeline
    path: str
    server: asyncio.base_events.Server

    async def next(self, timeout: float = STEP) -> RawConn:
        return await asyncio.wait_for(self.conns.get(), timeout)


@asynccontextmanager
async def raw_rig(tmp_path: Path, faults: tuple[str, ...] = (), *, retry: UDSRetry = FAST,
                  handshake_timeout: float = 30.0) -> AsyncIterator[RawRig]:
    conns: asyncio.Queue[RawConn] = asyncio.Queue()
    path = str(tmp_path / "raw.sock")
    opened: list[RawConn] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = RawConn(reader, writer)
        opened.append(conn)
        await conns.put(conn)

    server = await asyncio.start_unix_server(on_conn, path)
    atl = Timeline()
    agent = UDSMTP(AGENT, path, controllers=[ControllerRoute(CTRL)], retry=retry, timeline=atl,
                   handshake_timeout=handshake_timeout)
    agent.faults = FaultSet(faults)
    Echo(agent)
    try:
        await agent.start()
        yield RawRig(conns, agent, atl, path, server)
    finally:
        await agent.stop()
        for conn in opened:
            conn.close()
        server.close()


def kind_of(frame: UDSFrame) -> str | None:
    return records.record_kind(records.parse_record(frame.records[0].value))


def msg_id_of(frame: UDSFrame) -> str:
    rec = records.parse_record(frame.records[0].value)
    msg = records.unwrap_msg(rec)
    assert msg is not None
    return msg.header.msg_id


def frame_with(*tlvs: TLV) -> bytes:
    return encode_frame(list(tlvs))


BIG = records.serialize(records.no_session_record(bytes(70_000), to_id=AGENT, from_id=CTRL))


def _spoilt(record: bytes, fault: str) -> bytes:
    """The frame the agent must send for ``record`` with the framing ``fault`` (by hand)."""
    n = len(record)
    tlv = {"uds.record_tlv_wrong_type": b"\x04"}.get(fault, b"\x03") + (
        n.to_bytes(4, "little") if fault == "uds.tlv_length_little_endian"
        else (n & 0xFFFF if fault == "uds.length_16_bit" else n).to_bytes(4, "big"))
    length = n + 5 + (8 if fault == "uds.frame_length_counts_header" else 0)
    if fault == "uds.length_16_bit":
        length &= 0xFFFF
    sync = b"_usp" if fault == "uds.frame_bad_sync" else b"_USP"
    head = encode_raw_frame(b"") if fault == "uds.empty_frame" else b""
    return head + sync + length.to_bytes(4, "big") + tlv + record


@pytest.mark.parametrize("fault", [None, "uds.frame_bad_sync", "uds.frame_length_counts_header",
                                   "uds.tlv_length_little_endian", "uds.record_tlv_wrong_type",
                                   "uds.empty_frame", "uds.length_16_bit"])
def test_framing_faults_spoil_msg_record_frames_only(tmp_path: Path, fault: str | None) -> None:
    """R-UDS.6, .8, .9, .11, .14: each framing fault breaks the frames of USP Msg Records
    exactly as named; Handshake and UDSConnect Record frames stay correct (the agent boots)."""
    async def main() -> None:
        async with raw_rig(tmp_path, (fault,) if fault else ()) as r:
            conn = await r.next()
            assert (await conn.handshake()).handshakes[0].text() == AGENT
            connect = await conn.frame()
            assert connect.raw == encode_record(connect.records[0].value)
            record = BIG if fault == "uds.length_16_bit" else get_record()
            await conn.send(encode_record(record))
            want = _spoilt(record, fault) if fault else encode_record(record)
            got = await asyncio.wait_for(conn.reader.readexactly(len(want)), STEP)
            assert got == want
            if fault == "uds.length_16_bit":
                assert got != encode_record(record)
    asyncio.run(main())


def test_handshake_faults(tmp_path: Path) -> None:
    """R-UDS.16: the Handshake names another Endpoint ID; R-UDS.20: a Record before it."""
    async def main() -> None:
        async with raw_rig(tmp_path, ("uds.handshake_wrong_endpoint_id",)) as r:
            conn = await r.next()
            assert (await conn.handshake()).handshakes[0].text() == AGENT + "-wrong"
        async with raw_rig(tmp_path, ("uds.record_before_handshake",)) as r:
            conn = await r.next()
            first = await conn.frame()
            assert kind_of(first) == "uds_connect"
            assert records.parse_record(first.records[0].value).to_id == CTRL
            assert (await conn.handshake()).handshakes[0].text() == AGENT
            assert kind_of(await conn.frame()) == "uds_connect"  # the proper one follows
    asyncio.run(main())


def test_connect_record_first_connection_only(tmp_path: Path) -> None:
    """R-MTP.6, R-MTP.8: no UDSConnect Record after reconnecting; the channel still works."""
    async def main() -> None:
        async with raw_rig(tmp_path, ("uds.connect_record_first_connection_only",)) as r:
            first = await r.next()
            await first.connected()
            first.close()
            second = await r.next()
            await second.handshake()
            await r.agent.wait_connected(STEP, count=2)
            await second.send(encode_record(get_record(msg_id="after")))
            answer = await second.frame()
            assert kind_of(answer) == "no_session_context" and msg_id_of(answer) == "after"
            skipped = r.atl.filter("uds.connect_record", direction="local")
            assert [e.decoded["sent"] for e in skipped] == [False]
    asyncio.run(main())


@pytest.mark.parametrize("fault", [None, "uds.no_handshake_timeout"])
def test_handshake_timeout_fault(tmp_path: Path, fault: str | None) -> None:
    """R-UDS.18: the agent closes without the server's Handshake, unless the fault is on."""
    async def main() -> None:
        async with raw_rig(tmp_path, (fault,) if fault else (), handshake_timeout=0.2) as r:
            conn = await r.next()
            assert (await conn.frame()).handshakes  # never answered
            if fault is None:
                assert await conn.eof() == []
            else:
                assert await conn.quiet(0.6) == []
    asyncio.run(main())


@pytest.mark.parametrize("fault", [None, "uds.early_record_processed"])
def test_record_before_the_servers_handshake(tmp_path: Path, fault: str | None) -> None:
    """R-UDS.20: a Record before the handshake is ignored (the fault answers it later)."""
    async def main() -> None:
        async with raw_rig(tmp_path, (fault,) if fault else ()) as r:
            conn = await r.next()
            await conn.frame()
            await conn.send(encode_record(get_record(msg_id="early")))
            await conn.send(encode_handshake(CTRL))
            assert kind_of(await conn.frame()) == "uds_connect"
            await conn.send(encode_record(get_record(msg_id="late")))
            ids = [msg_id_of(f) for f in [await conn.frame()] + await conn.quiet(0.2)]
            assert ids == (["early", "late"] if fault else ["late"])
    asyncio.run(main())


UNKNOWN = TLV(200, b"?")


@pytest.mark.parametrize("fault", [None, "uds.unknown_tlv_error", "uds.unknown_tlv_drops_frame",
                                   "uds.repeated_handshake_error"])
def test_ignored_tlv_faults(tmp_path: Path, fault: str | None) -> None:
    """R-UDS.15, R-UDS.19: unknown TLVs and a repeated Handshake are ignored unless a
    fault answers them with Error and close, or drops the Record beside an unknown TLV."""
    async def main() -> None:
        async with raw_rig(tmp_path, (fault,) if fault else ()) as r:
            conn = await r.next()
            await conn.connected()
            if fault == "uds.repeated_handshake_error":
                await conn.send(encode_handshake(CTRL))
            else:
                await conn.send(frame_with(UNKNOWN))
            await conn.send(frame_with(UNKNOWN, TLV(TLVType.USP_RECORD, get_record(msg_id="a"))))
            if fault in ("uds.unknown_tlv_error", "uds.repeated_handshake_error"):
                frames = await conn.eof()
                assert [t.type for f in frames for t in f.tlvs] == [TLVType.ERROR]
                return
            await conn.send(encode_record(get_record(msg_id="b")))
            ids = [msg_id_of(f) for f in [await conn.frame()] + await conn.quiet(0.2)]
            assert ids == (["b"] if fault == "uds.unknown_tlv_drops_frame" else ["a", "b"])
    asyncio.run(main())


@pytest.mark.parametrize("fault", [None, "uds.bad_handshake_no_error"])
def test_unprocessable_handshake_fault(tmp_path: Path, fault: str | None) -> None:
    """R-UDS.21: an Error TLV for a Handshake that is not UTF-8 (none with the fault)."""
    async def main() -> None:
        async with raw_rig(tmp_path, (fault,) if fault else ()) as r:
            conn = await r.next()
            await conn.handshake(frame_with(TLV(TLVType.HANDSHAKE, b"\xc3\x28")))
            frames = await conn.eof()
            assert [bool(f.errors) for f in frames] == ([] if fault else [True])
    asyncio.run(main())


BAD_RECORD = frame_with(TLV(TLVType.USP_RECORD, b"this is text, not a USP Record"))
BAD_FRAME = b"USP_" + bytes(6)


@pytest.mark.parametrize(("wire", "fault", "error", "closes"), [
    (BAD_RECORD, None, True, True),
    (BAD_RECORD, "uds.bad_record_no_error", False, False),
    (BAD_RECORD, "uds.bad_record_keeps_connection", True, False),
    (BAD_FRAME, None, True, True),
    (BAD_FRAME, "uds.bad_frame_no_error", False, True),
    (BAD_FRAME, "uds.bad_frame_keeps_connection", True, False),
    (encode_error("bye"), None, False, True),
    (encode_error("bye"), "uds.error_ignored", False, False),
], ids=["record", "record-no-error", "record-keeps", "frame", "frame-no-error", "frame-keeps",
        "error", "error-ignored"])
def test_error_handling_faults(tmp_path: Path, wire: bytes, fault: str | None, error: bool,
                               closes: bool) -> None:
    """R-UDS.23, R-UDS.24: Error TLV and close; R-UDS.25: a received Error closes. Each
    fault leaves out the Error or the close."""
    async def main() -> None:
        async with raw_rig(tmp_path, (fault,) if fault else ()) as r:
            conn = await r.next()
            await conn.connected()
            await conn.send(wire)
            if closes:
                frames = await conn.eof()
            else:
                await asyncio.sleep(0.1)  # let the agent read the bad bytes first
                await conn.send(encode_record(get_record(msg_id="next")))
                frames = await conn.quiet(0.3)
                assert msg_id_of(frames[-1]) == "next"
                frames = frames[:-1]
            assert [bool(f.errors) for f in frames] == ([True] if error else [])
            if error:
                frames[0].errors[0].text()  # UTF-8 (R-UDS.13)
    asyncio.run(main())


@pytest.mark.parametrize("fault", [None, "uds.one_read_per_frame"])
def test_split_frame_fault(tmp_path: Path, fault: str | None) -> None:
    """R-UDS.4/R-UDS.9: a frame split over two reads is reassembled (lost with the fault)."""
    async def main() -> None:
        async with raw_rig(tmp_path, (fault,) if fault else ()) as r:
            conn = await r.next()
            await conn.connected()
            wire = encode_record(get_record(msg_id="split"))
            await conn.send(wire[:5])
            await asyncio.sleep(0.1)
            await conn.send(wire[5:])
            if fault:
                assert [bool(f.errors) for f in await conn.eof()] == [True]
            else:
                assert msg_id_of(await conn.frame()) == "split"
    asyncio.run(main())


@pytest.mark.parametrize("fault", [None, "uds.max_frame_64k"])
def test_frame_over_64k_fault(tmp_path: Path, fault: str | None) -> None:
    """R-UDS.9: a 70 KB frame is read (refused as unparseable with the fault)."""
    async def main() -> None:
        async with raw_rig(tmp_path, (fault,) if fault else ()) as r:
            conn = await r.next()
            await conn.connected()
            await conn.send(frame_with(TLV(200, bytes(70_000)),
                                       TLV(TLVType.USP_RECORD, get_record(msg_id="big"))))
            if fault:
                assert [bool(f.errors) for f in await conn.eof()] == [True]
            else:
                assert msg_id_of(await conn.frame()) == "big"
    asyncio.run(main())


def test_retry_faults(tmp_path: Path) -> None:
    """R-UDS.5: uds.retry_no_wait skips every wait; uds.failed_attempt_no_wait skips it only
    after attempts that never completed the handshake."""
    slow = UDSRetry(0.4, 0.4)

    async def main() -> None:
        async with raw_rig(tmp_path, ("uds.retry_no_wait",), retry=slow) as r:
            first = await r.next()
            await first.connected()
            first.close()
            t0 = time.monotonic()
            await r.next()
            assert time.monotonic() - t0 < 0.3
            assert r.atl.filter("uds.retry")[0].decoded["no_wait"] is True
        async with raw_rig(tmp_path, ("uds.failed_attempt_no_wait",), retry=slow) as r:
            first = await r.next()
            await first.connected()
            first.close()                      # established, then lost: the normal wait
            t0 = time.monotonic()
            dropped = await r.next()
            assert time.monotonic() - t0 >= 0.35
            dropped.close()                    # before any Handshake: at once
            t1 = time.monotonic()
            await r.next()
            assert time.monotonic() - t1 < 0.3
            waits = [e.decoded for e in r.atl.filter("uds.retry")]
            assert "no_wait" not in waits[0] and waits[1]["no_wait"] is True
    asyncio.run(main())


def test_retry_gives_up_fault(tmp_path: Path) -> None:
    """R-UDS.5: the fault stops retrying once the socket cannot be connected any more."""
    async def main() -> None:
        async with raw_rig(tmp_path, ("uds.retry_gives_up",)) as r:
            conn = await r.next()
            await conn.connected()
            r.server.close()
            await r.server.wait_closed()
            Path(r.path).unlink()
            conn.close()
            await r.atl.expect("uds.state", within=STEP,
                               where=lambda e: e.decoded["state"] == "gave_up")
            assert r.agent._task is not None and r.agent._task.done()
    asyncio.run(main())
