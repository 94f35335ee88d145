"""The suite's UDS MTP server, client and Binding over real Unix sockets (R-UDS.2-25)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.mtp.binding import BindingClosed, InboundRecord
from conformance.mtp.timeline import Entry, Timeline
from conformance.mtp.uds import (
    TLV,
    TLVType,
    UDSDecoder,
    UDSFrame,
    decode_frame,
    encode_error,
    encode_frame,
    encode_handshake,
    encode_raw_frame,
    encode_record,
    encode_tlv,
)
from conformance.mtp.uds.peer import UDSPeer, UDSScenario, describe_frame, describe_tlv
from conformance.mtp.uds.server import UDSBinding, UDSClient, UDSServer
from conformance.usp import schema

CTRL, AGENT = "proto::controller-1", "os::00256D-0123456789"
STEP = 5.0


def record(to_id: str = CTRL, from_id: str = AGENT, payload: bytes = b"\x00p") -> bytes:
    return schema.Record(version="1.3", to_id=to_id, from_id=from_id,
                         no_session_context=schema.NoSessionContextRecord(payload=payload)
                         ).SerializeToString()


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    path = str(tmp_path / "uds.sock")
    if len(path) < 100:  # AF_UNIX path limit is ~108 octets
        return path
    return os.path.join(tempfile.mkdtemp(prefix="uds", dir="/tmp"), "s")  # pragma: no cover


def run(coro_fn: Callable[[], Awaitable[Any]], limit: float = 15.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), limit))


def dec(entry: Entry) -> dict[str, Any]:
    assert isinstance(entry.decoded, dict)
    return entry.decoded


def rules(entry: Entry) -> list[str]:
    assert isinstance(entry.decoded, dict)
    return [v["rule"] for v in dec(entry)["violations"]]


def tlv_names(entry: Entry) -> list[str]:
    assert isinstance(entry.decoded, dict)
    return [t["name"] for t in dec(entry)["tlvs"]]


class RawPeer:
    """A hand-driven UDS peer: writes any bytes, reads frames, sees EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = UDSDecoder()
        self.pending: list[UDSFrame] = []

    @classmethod
    async def connect(cls, path: str) -> RawPeer:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), STEP)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frame(self) -> UDSFrame:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), STEP)
            if not data:
                raise EOFError("peer closed")
            self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    async def frames_until_eof(self) -> list[UDSFrame]:
        out, self.pending = self.pending, []
        try:
            while data := await asyncio.wait_for(self.reader.read(65536), STEP):
                out += self.decoder.feed(data)
        except ConnectionResetError:
            pass
        return out

    async def handshake(self, endpoint_id: str = AGENT) -> UDSFrame:
        await self.send(encode_handshake(endpoint_id))
        return await self.frame()

    def close(self) -> None:
        self.writer.close()


class RawServer:
    """A hand-driven UDS listener standing in for an agent acting as server."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[RawPeer] = asyncio.Queue()
        self.all: list[RawPeer] = []
        self.server: asyncio.base_events.Server | None = None

    async def start(self, path: str) -> RawServer:
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            peer = RawPeer(r, w)
            self.all.append(peer)
            await self.accepted.put(peer)

        self.server = await asyncio.start_unix_server(on_conn, path)
        return self

    async def next(self) -> RawPeer:
        return await asyncio.wait_for(self.accepted.get(), STEP)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for peer in self.all:
            peer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.writer.wait_closed(), STEP)
        await asyncio.wait_for(self.server.wait_closed(), STEP)


# --- describe_frame / describe_tlv -----------------------------------------------------

def test_describe_frame_summarises_each_tlv_type():
    wire = encode_frame([TLV(TLVType.HANDSHAKE, AGENT.encode()), TLV(TLVType.ERROR, b"bad \xff"),
                         TLV(TLVType.USP_RECORD, record()), TLV(TLVType.USP_RECORD, b"text"),
                         TLV(9, b"\x01\x02")])
    summary = describe_frame(decode_frame(wire))
    assert summary["length"] == len(wire) - 8
    hs, err, rec, bad, unknown = summary["tlvs"]
    assert hs == {"type": 1, "name": "HANDSHAKE", "length": len(AGENT), "text": AGENT}
    assert err["name"] == "ERROR" and err["text"] == "bad \ufffd"
    assert rec["record"] == {"kind": "no_session_context", "version": "1.3",
                             "to_id": CTRL, "from_id": AGENT}
    assert bad["record"] is None
    assert unknown == {"type": 9, "name": "UNKNOWN", "length": 2, "value_hex": "0102"}
    assert describe_frame(UDSFrame(())) == {"length": None, "tlvs": []}


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=300))
def test_describe_tlv_never_raises_and_is_json(tlv_type: int, value: bytes):
    out = describe_tlv(TLV(tlv_type, value))
    assert json.loads(json.dumps(out))["length"] == len(value)


# --- client <-> server over a real socket ----------------------------------------------

def test_client_and_server_exchange_records_both_ways(sock_path: str):
    """R-UDS.2/3/4 connect, R-UDS.16/17 handshake order, R-UDS.22 Record TLVs."""
    async def main() -> None:
        tl = Timeline()
        at_server: list[InboundRecord] = []
        at_client: list[InboundRecord] = []
        async with UDSServer(sock_path, CTRL, timeline=tl) as server, \
                UDSClient(sock_path, AGENT, timeline=tl) as client:
            assert isinstance(server.binding, UDSBinding) and server.binding.mtp == "uds"
            assert server.binding.address == sock_path == client.binding.address
            server.binding.set_sink(at_server.append)
            client.binding.set_sink(at_client.append)
            peer = await client.connect()
            at_srv = await server.wait_for_peer(AGENT, STEP)
            assert await client.wait_for_peer(CTRL, STEP) is peer
            assert at_srv.peer_endpoint_id == AGENT and peer.peer_endpoint_id == CTRL
            assert await server.wait_for_peer(None, STEP) is at_srv

            await server.binding.send(record(AGENT, CTRL, b"down"), to_id=AGENT)
            await client.binding.send(record(CTRL, AGENT, b"up"), to_id=CTRL)
            await tl.expect("uds.frame", within=STEP, conn_id=at_srv.conn_id, direction="in",
                            where=lambda e: tlv_names(e) == ["USP_RECORD"])
            await tl.expect("uds.frame", within=STEP, conn_id=peer.conn_id, direction="in",
                            where=lambda e: tlv_names(e) == ["USP_RECORD"])
        assert [r.data for r in at_client] == [record(AGENT, CTRL, b"down")]
        assert [r.data for r in at_server] == [record(CTRL, AGENT, b"up")]
        assert at_server[0].mtp == "uds" and at_server[0].conn_id == at_srv.conn_id
        assert at_server[0].meta == {"peer_endpoint_id": AGENT, "role": "server"}
        assert at_client[0].meta == {"peer_endpoint_id": CTRL, "role": "client"}

        # Client Handshake first (R-UDS.16), then the server's answer (R-UDS.17).
        frames = [e for e in tl.filter("uds.frame") if e.conn_id == peer.conn_id]
        assert [(e.direction, tlv_names(e)) for e in frames[:2]] == [
            ("out", ["HANDSHAKE"]), ("in", ["HANDSHAKE"])]
        assert frames[0].raw == encode_handshake(AGENT)
        assert dec(frames[1])["tlvs"][0]["text"] == CTRL
        done = {dec(e)["role"]: dec(e)["peer_endpoint_id"]
                for e in tl.filter("uds.handshake_done")}
        assert done == {"server": AGENT, "client": CTRL}
        assert not tl.filter("uds.violation") and not tl.filter("uds.handshake_failed")
        closed = tl.filter("uds.closed")
        assert {dec(e)["by"] for e in closed} <= {"suite", "peer"} and len(closed) == 2
        assert not os.path.exists(sock_path)
        for e in tl.filter("uds.*"):
            json.dumps(e.to_json())
    run(main)


def test_binding_send_errors_and_close(sock_path: str):
    async def main() -> None:
        tl = Timeline()
        got: list[InboundRecord] = []
        async with UDSServer(sock_path, CTRL, timeline=tl) as server:
            with pytest.raises(BindingClosed):
                await server.binding.send(record(), to_id=AGENT)
            raw = await RawPeer.connect(sock_path)
            await raw.handshake()
            peer = await server.wait_for_peer(AGENT, STEP)
            server.binding.set_sink(got.append)
            await server.binding.close()
            await server.binding.close()  # idempotent
            await raw.send(encode_record(record()))
            await tl.expect("uds.frame", within=STEP, direction="in",
                            where=lambda e: tlv_names(e) == ["USP_RECORD"])
            assert got == []  # a closed binding delivers nothing
            with pytest.raises(BindingClosed):
                await server.binding.send(record(), to_id=AGENT)
            fresh = UDSBinding(server)
            await peer.close("test done")
            assert (await peer.wait_closed(STEP))["by"] == "suite"
            with pytest.raises(BindingClosed):
                await fresh.send(record(), to_id=AGENT)
            assert await raw.frames_until_eof() == []
            raw.close()
    run(main)


def test_wait_for_peer_times_out_and_bad_timeout_rejected(sock_path: str):
    async def main() -> None:
        async with UDSServer(sock_path, CTRL) as server:
            with pytest.raises(TimeoutError, match="os::nobody"):
                await server.wait_for_peer("os::nobody", 0.05)
            with pytest.raises(TimeoutError, match="any peer"):
                await server.wait_for_peer(timeout=0.05)
    run(main)
    with pytest.raises(ValueError):
        UDSServer(sock_path, CTRL, handshake_timeout=0)


def test_client_connect_to_missing_path_raises(sock_path: str):
    async def main() -> None:
        with pytest.raises(ConnectionError):
            await UDSClient(sock_path, AGENT).connect(timeout=STEP)
    run(main)


def test_works_without_timeline_and_with_split_and_multi_tlv_frames(sock_path: str):
    """Frames split over writes still decode; several TLVs in one frame run in order,
    so a Record after the Handshake TLV of the same frame is accepted."""
    async def main() -> None:
        got: list[InboundRecord] = []
        three = asyncio.Event()

        def sink(rec: InboundRecord) -> None:
            got.append(rec)
            if len(got) == 3:
                three.set()

        async with UDSServer(sock_path, CTRL) as server:
            server.binding.set_sink(sink)
            raw = await RawPeer.connect(sock_path)
            wire = encode_frame([TLV(TLVType.HANDSHAKE, AGENT.encode()),
                                 TLV(TLVType.USP_RECORD, record())])
            for i in range(len(wire)):
                await raw.send(wire[i:i + 1])
            answer = await raw.frame()
            assert answer.handshakes[0].text() == CTRL
            await server.wait_for_peer(AGENT, STEP)
            await raw.send(encode_record(record(payload=b"1")) + encode_record(record(payload=b"2")))
            await asyncio.wait_for(three.wait(), STEP)
            await server.binding.send(record(AGENT, CTRL), to_id=AGENT)
            assert (await raw.frame()).records[0].value == record(AGENT, CTRL)
            raw.close()
        assert [r.data for r in got] == [record(), record(payload=b"1"), record(payload=b"2")]
    run(main)


# --- hostile peers (agent acting as client) ---------------------------------------------

async def _expect_error_then_eof(raw: RawPeer) -> list[UDSFrame]:
    frames = await raw.frames_until_eof()
    assert frames and frames[-1].errors, frames
    return frames


@pytest.mark.parametrize("wire, rule", [
    (b"XUSP" + bytes(4), "R-UDS.8"),
    (encode_raw_frame(encode_tlv(1, AGENT.encode(), length=500)), "R-UDS.11"),
    (encode_raw_frame(b"\x01\x00"), "R-UDS.11"),
])
def test_unparseable_frame_gets_error_and_close(sock_path: str, wire: bytes, rule: str):
    """R-UDS.24: Error TLV then close; the bad bytes are a violation of R-UDS.8/11."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl):
            raw = await RawPeer.connect(sock_path)
            await raw.send(wire)
            await _expect_error_then_eof(raw)
            raw.close()
            viol = await tl.expect("uds.violation", within=STEP)
            assert rules(viol) == [rule]
            bad = tl.filter("uds.frame", direction="in")[-1]
            assert dec(bad)["rule"] == rule and bad.raw == wire
            closed = await tl.expect("uds.closed", within=STEP)
            assert dec(closed)["by"] == "suite" and dec(closed)["rule"] == "R-UDS.24"
            failed = await tl.expect("uds.handshake_failed", within=STEP)
            assert dec(failed)["rule"] == "R-UDS.24"
            err = await tl.expect("uds.error", within=STEP, direction="out")
            assert rule in dec(err)["message"]
    run(main)


def test_bad_sync_after_handshake_reports_only_the_bad_bytes(sock_path: str):
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl):
            raw = await RawPeer.connect(sock_path)
            await raw.handshake()
            good = encode_record(record())
            await raw.send(good + b"_USX" + bytes(8))
            await _expect_error_then_eof(raw)
            raw.close()
            bad = await tl.expect("uds.frame", within=STEP, where=lambda e: "undecodable" in dec(e))
            assert bad.raw == b"_USX" + bytes(8) and dec(bad)["offset"] == len(
                encode_handshake(AGENT)) + len(good)
            assert not tl.filter("uds.handshake_failed")  # handshake had completed
    run(main)


def test_record_before_handshake_is_ignored(sock_path: str):
    """R-UDS.20: a Record TLV before the handshake is ignored, connection stays up."""
    async def main() -> None:
        tl = Timeline()
        got: list[InboundRecord] = []
        async with UDSServer(sock_path, CTRL, timeline=tl) as server:
            server.binding.set_sink(got.append)
            raw = await RawPeer.connect(sock_path)
            await raw.send(encode_record(record(payload=b"early")))
            ignored = await tl.expect("uds.ignored", within=STEP)
            assert ignored.decoded == {"reason": "USP Record before the handshake completed",
                                       "rule": "R-UDS.20", "tlv_type": 3}
            assert (await raw.handshake()).handshakes[0].text() == CTRL
            await raw.send(encode_record(record(payload=b"late")))
            await tl.expect("uds.frame", within=STEP, direction="in", since=ignored,
                            where=lambda e: tlv_names(e) == ["USP_RECORD"])
            raw.close()
        assert [r.data for r in got] == [record(payload=b"late")]
        assert not tl.filter("uds.violation")
    run(main)


def test_duplicate_handshake_and_unknown_tlv_are_ignored(sock_path: str):
    """R-UDS.19 repeated Handshake and R-UDS.15 unknown TLV types are ignored."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl) as server:
            raw = await RawPeer.connect(sock_path)
            await raw.handshake()
            await raw.send(encode_handshake("os::someone-else"))
            await raw.send(encode_frame([TLV(77, b"x")]))
            first = await tl.expect("uds.ignored", within=STEP)
            second = await tl.expect("uds.ignored", within=STEP, since=first)
            assert (dec(first)["rule"], dec(second)["rule"]) == ("R-UDS.19", "R-UDS.15")
            peer = await server.wait_for_peer(AGENT, STEP)
            assert peer.is_open and peer.peer_endpoint_id == AGENT
            assert "os::someone-else" not in server.peers
            # still usable: the Controller can send
            await server.binding.send(record(AGENT, CTRL), to_id=AGENT)
            assert (await raw.frame()).records
            raw.close()
            info = await peer.wait_closed(STEP)
            assert info["by"] == "peer"
        # one handshake frame from us only
        out = [tlv_names(e) for e in tl.filter("uds.frame", direction="out")]
        assert out.count(["HANDSHAKE"]) == 1
    run(main)


@pytest.mark.parametrize("value", [b"", b"\xff\xfe", b"no-colons"])
def test_unprocessable_handshake_gets_error_and_close(sock_path: str, value: bytes):
    """R-UDS.21: a Handshake we cannot process is answered with an Error TLV."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl):
            raw = await RawPeer.connect(sock_path)
            await raw.send(encode_frame([TLV(TLVType.HANDSHAKE, value)]))
            frames = await _expect_error_then_eof(raw)
            assert not any(f.handshakes for f in frames)
            raw.close()
            assert rules(await tl.expect("uds.violation", within=STEP)) == ["R-UDS.16"]
            failed = await tl.expect("uds.handshake_failed", within=STEP)
            assert dec(failed)["rule"] == "R-UDS.21"
    run(main)


def test_peer_error_closes_connection(sock_path: str):
    """R-UDS.25: an Error TLV from the peer makes us close."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl) as server:
            raw = await RawPeer.connect(sock_path)
            await raw.handshake()
            peer = await server.wait_for_peer(AGENT, STEP)
            await raw.send(encode_error("agent is unhappy"))
            assert await raw.frames_until_eof() == []
            raw.close()
            err = await tl.expect("uds.error", within=STEP, direction="in")
            assert err.decoded == {"message": "agent is unhappy"}
            info = await peer.wait_closed(STEP)
            assert info["rule"] == "R-UDS.25" and info["by"] == "suite"
            assert AGENT not in server.peers and not server.connections
    run(main)


def test_unextractable_record_gets_error_and_close(sock_path: str):
    """R-UDS.23 (and R-UDS.22 violation): a Record TLV that is not a USP Record."""
    async def main() -> None:
        tl = Timeline()
        got: list[InboundRecord] = []
        async with UDSServer(sock_path, CTRL, timeline=tl) as server:
            server.binding.set_sink(got.append)
            raw = await RawPeer.connect(sock_path)
            await raw.handshake()
            await raw.send(encode_record(b"this is text"))
            await _expect_error_then_eof(raw)
            raw.close()
            assert rules(await tl.expect("uds.violation", within=STEP)) == ["R-UDS.22"]
            closed = await tl.expect("uds.closed", within=STEP)
            assert dec(closed)["rule"] == "R-UDS.23"
        assert got == []
    run(main)


def test_empty_frame_is_a_violation_but_ignored(sock_path: str):
    """R-UDS.6: a frame without TLV is reported and otherwise ignored."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl):
            raw = await RawPeer.connect(sock_path)
            await raw.send(encode_frame([]))
            assert rules(await tl.expect("uds.violation", within=STEP)) == ["R-UDS.6"]
            assert dec(await tl.expect("uds.ignored", within=STEP))["rule"] == "R-UDS.6"
            assert (await raw.handshake()).handshakes
            raw.close()
    run(main)


def test_peer_closing_before_handshake_is_a_failed_handshake(sock_path: str):
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl):
            raw = await RawPeer.connect(sock_path)
            raw.close()
            failed = await tl.expect("uds.handshake_failed", within=STEP)
            assert dec(failed)["by"] == "peer"
            assert dec(await tl.expect("uds.closed", within=STEP))["by"] == "peer"
    run(main)


# --- handshake timeouts -------------------------------------------------------------------

def test_server_gives_up_on_silent_client(sock_path: str):
    """A client that never sends its Handshake (R-UDS.16) is dropped after the timeout."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl, handshake_timeout=0.3):
            t0 = time.monotonic()
            raw = await RawPeer.connect(sock_path)
            assert await raw.frames_until_eof() == []
            assert time.monotonic() - t0 >= 0.29
            raw.close()
            failed = await tl.expect("uds.handshake_failed", within=STEP)
            assert dec(failed)["rule"] == "R-UDS.16" and dec(failed)["by"] == "suite"
    run(main)


def test_client_gives_up_without_server_handshake(sock_path: str):
    """R-UDS.18: the client terminates when no Handshake arrives in time."""
    async def main() -> None:
        tl = Timeline()
        agent = await RawServer().start(sock_path)
        try:
            async with UDSClient(sock_path, CTRL, timeline=tl, handshake_timeout=0.3) as client:
                peer = await client.connect()
                raw = await agent.next()
                hs = await raw.frame()
                assert hs.handshakes[0].text() == CTRL  # R-UDS.16: sent on connect
                info = await peer.wait_closed(STEP)
                assert info == {"by": "suite", "rule": "R-UDS.18",
                                "reason": "no Handshake from the server in time"}
                assert await raw.frames_until_eof() == []
                sent = tl.filter("uds.frame", direction="out")[0]
                failed = await tl.expect("uds.handshake_failed", within=STEP)
                assert failed.t - sent.t >= 0.29
                await tl.expect("conn.close", within=STEP, direction="out")
                assert not client.connections
        finally:
            await agent.close()
    run(main)


def test_client_handles_agent_server_frames(sock_path: str):
    """Client role: agent's Handshake, Records both ways, duplicate Handshake ignored."""
    async def main() -> None:
        tl = Timeline()
        got: list[InboundRecord] = []
        agent = await RawServer().start(sock_path)
        try:
            async with UDSClient(sock_path, CTRL, timeline=tl) as client:
                client.binding.set_sink(got.append)
                await client.connect()
                raw = await agent.next()
                await raw.frame()
                await raw.send(encode_handshake(AGENT))
                await client.wait_for_peer(AGENT, STEP)
                await raw.send(encode_handshake(AGENT) + encode_record(record()))
                await client.binding.send(record(AGENT, CTRL), to_id=AGENT)
                assert (await raw.frame()).records[0].value == record(AGENT, CTRL)
                assert dec(await tl.expect("uds.ignored", within=STEP))["rule"] == "R-UDS.19"
                await raw.send(b"garbage!")
                frames = await _expect_error_then_eof(raw)
                assert "R-UDS.8" in frames[-1].errors[0].text()
        finally:
            await agent.close()
        assert [r.data for r in got] == [record()]
    run(main)


# --- scenario hooks -----------------------------------------------------------------------

def scenario_actions(tl: Timeline, conn_id: str | None = None) -> list[str]:
    return [dec(e)["action"] for e in tl.filter("uds.scenario")
            if conn_id is None or e.conn_id == conn_id]


def test_scenario_withheld_server_handshake_makes_client_give_up(sock_path: str):
    """Server withholds its Handshake; our client then closes per R-UDS.18."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl) as server, \
                UDSClient(sock_path, AGENT, timeline=tl, handshake_timeout=0.3) as client:
            server.set_scenario(UDSScenario(withhold_handshake=True))
            peer = await client.connect()
            assert (await peer.wait_closed(STEP))["rule"] == "R-UDS.18"
            srv_peer_closed = await tl.expect("uds.closed", within=STEP,
                                              where=lambda e: e.conn_id != peer.conn_id)
            assert dec(srv_peer_closed)["by"] == "peer"
            assert scenario_actions(tl) == ["withhold_handshake"]
            assert not tl.filter("uds.frame", conn_id=srv_peer_closed.conn_id, direction="out")
            server.set_scenario(None)
            assert server.scenario == UDSScenario()
    run(main)


def test_scenario_withheld_client_handshake_server_times_out(sock_path: str):
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl, handshake_timeout=0.3), \
                UDSClient(sock_path, AGENT, timeline=tl,
                          scenario=UDSScenario(withhold_handshake=True)) as client:
            peer = await client.connect()
            assert (await peer.wait_closed(STEP))["by"] == "peer"
            failed = await tl.expect("uds.handshake_failed", within=STEP,
                                     where=lambda e: dec(e)["by"] == "suite")
            assert dec(failed)["rule"] == "R-UDS.16"
            assert scenario_actions(tl, peer.conn_id) == ["withhold_handshake"]
    run(main)


def test_scenario_malformed_handshake_answered_with_error(sock_path: str):
    """Server sends a bad Handshake; our client answers Error (R-UDS.21); server closes (R-UDS.25)."""
    async def main() -> None:
        tl = Timeline()
        bad = encode_frame([TLV(TLVType.HANDSHAKE, b"\xff")])
        async with UDSServer(sock_path, CTRL, timeline=tl,
                             scenario=UDSScenario(handshake_frame=bad)) as server, \
                UDSClient(sock_path, AGENT, timeline=tl) as client:
            peer = await client.connect()
            info = await peer.wait_closed(STEP)
            assert info["rule"] == "R-UDS.21"
            srv_err = await tl.expect("uds.error", within=STEP, direction="in",
                                      where=lambda e: e.conn_id != peer.conn_id)
            assert "Handshake" in dec(srv_err)["message"]
            srv_closed = await tl.expect("uds.closed", within=STEP, conn_id=srv_err.conn_id)
            assert dec(srv_closed)["rule"] == "R-UDS.25"
            assert scenario_actions(tl) == ["malformed_handshake"]
            assert tl.filter("uds.frame", direction="out", conn_id=srv_err.conn_id)[0].raw == bad
            assert rules(tl.filter("uds.violation", conn_id=peer.conn_id)[0]) == ["R-UDS.16"]
            assert not server.peers
    run(main)


def test_scenario_error_on_connect_and_after_handshake(sock_path: str):
    """Error TLVs from the scenario make the peer close (R-UDS.25), before or after handshake."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl,
                             scenario=UDSScenario(error_on_connect="go away")) as server, \
                UDSClient(sock_path, AGENT, timeline=tl) as client:
            peer = await client.connect()
            info = await peer.wait_closed(STEP)
            assert info["rule"] == "R-UDS.25"
            failed = await tl.expect("uds.handshake_failed", within=STEP, conn_id=peer.conn_id)
            assert dec(failed)["rule"] == "R-UDS.25"
            assert scenario_actions(tl) == ["error_on_connect"]

            server.set_scenario(None)
            client.set_scenario(UDSScenario(error_after_handshake="bye"))
            peer2 = await client.connect()
            await peer2.handshake_done.wait()
            err = await tl.expect("uds.error", within=STEP, direction="in",
                                  where=lambda e: e.decoded == {"message": "bye"})
            closed = await tl.expect("uds.closed", within=STEP, conn_id=err.conn_id)
            assert dec(closed)["rule"] == "R-UDS.25"
            assert (await peer2.wait_closed(STEP))["by"] == "peer"
            assert scenario_actions(tl, peer2.conn_id) == ["error_after_handshake"]
    run(main)


def test_scenario_close_after_handshake(sock_path: str):
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl,
                             scenario=UDSScenario(close_after_handshake=True)), \
                UDSClient(sock_path, AGENT, timeline=tl) as client:
            peer = await client.connect()
            await asyncio.wait_for(peer.handshake_done.wait(), STEP)
            assert (await peer.wait_closed(STEP))["by"] == "peer"
            srv = await tl.expect("uds.closed", within=STEP, where=lambda e: e.conn_id != peer.conn_id)
            assert srv.decoded == {"by": "suite", "reason": "scenario: close after handshake",
                                   "rule": None}
            assert scenario_actions(tl) == ["close_after_handshake"]
    run(main)


def test_scenario_delays(sock_path: str):
    """Handshake and Record delays are applied and recorded."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl,
                             scenario=UDSScenario(handshake_delay=0.2, record_delay=0.2)) as server, \
                UDSClient(sock_path, AGENT, timeline=tl,
                          scenario=UDSScenario(handshake_delay=0.2)) as client:
            peer = await client.connect()
            await server.wait_for_peer(AGENT, STEP)
            await client.wait_for_peer(CTRL, STEP)
            t0 = time.monotonic()
            await server.binding.send(record(AGENT, CTRL), to_id=AGENT)
            assert time.monotonic() - t0 >= 0.19
            marks = tl.filter("uds.scenario")
            assert [m.decoded for m in marks] == [
                {"action": "handshake_delay", "seconds": 0.2},
                {"action": "handshake_delay", "seconds": 0.2},
                {"action": "record_delay", "seconds": 0.2}]
            for mark in marks:
                sent = tl.filter("uds.frame", direction="out", conn_id=mark.conn_id, since=mark)[0]
                assert sent.t - mark.t >= 0.19
            assert marks[0].conn_id == peer.conn_id
    run(main)


def test_send_raw_and_send_error_are_recorded(sock_path: str):
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl) as server:
            raw = await RawPeer.connect(sock_path)
            await raw.handshake()
            peer: UDSPeer = await server.wait_for_peer(AGENT, STEP)
            await peer.send_raw(encode_frame([TLV(77, b"x")]), note="odd TLV")
            await peer.send_error("testing")
            assert (await raw.frame()).tlvs == (TLV(77, b"x"),)
            assert (await raw.frame()).errors[0].text() == "testing"
            assert peer.is_open  # sending an Error does not close our side
            await peer.send_raw(b"_USX")
            await peer.close()
            await peer.close()  # idempotent
            assert scenario_actions(tl) == ["send_raw", "send_error", "send_raw"]
            assert tl.filter("uds.scenario")[0].decoded == {"action": "send_raw", "length": 14,
                                                           "note": "odd TLV"}
            outs = tl.filter("uds.frame", direction="out")
            assert tlv_names(outs[1]) == ["UNKNOWN"] and tlv_names(outs[2]) == ["ERROR"]
            assert dec(outs[3])["rule"] == "R-UDS.8" and outs[3].note == "malformed"
            assert (await tl.expect("uds.error", within=STEP, direction="out")).decoded == {
                "message": "testing"}
            with pytest.raises(ConnectionError):
                await peer.send_record(record())
            raw.close()
    run(main)


# --- hostile bytes never crash the server -------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_never_crash_the_server(sock_path: str, data: bytes, handshake_first: bool):
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl):
            raw = await RawPeer.connect(sock_path)
            if handshake_first:
                await raw.handshake()
            with contextlib.suppress(OSError):
                await raw.send(data)
                raw.writer.write_eof()
            frames = await raw.frames_until_eof()
            raw.close()
            await tl.expect("uds.closed", within=STEP)
            assert all(not f.records for f in frames)
            if tl.filter("uds.error", direction="out"):
                assert frames and frames[-1].errors
        assert not tl.filter("conn.handler_error")
    run(main)


# --- scenario fields the UDS cases script (testcases/uds) --------------------------------

def test_set_scenario_takes_field_changes_and_frame_specs(sock_path: str):
    """The engine's ``scenario`` step calls set_scenario(field=value); YAML frame specs
    become bytes; a bad field or value is a ValueError; every change is recorded."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl) as server:
            new = server.set_scenario(withhold_handshake=True,
                                      handshake_frame={"tlvs": [{"type": 1, "hex": "ff"}]},
                                      frames_before_record=["00", {"tlvs": []}],
                                      tlvs_before_record=[{"type": 200, "fill": 2}])
            assert new is server.scenario and new.withhold_handshake
            assert new.handshake_frame == encode_frame([TLV(1, b"\xff")])
            assert new.frames_before_record == (b"\x00", b"_USP\x00\x00\x00\x00")
            assert new.tlvs_before_record == (encode_tlv(200, b"\x00\x00"),)
            server.set_scenario(record_delay=0.5)  # other fields are kept
            assert server.scenario.withhold_handshake and server.scenario.record_delay == 0.5
            server.set_scenario(UDSScenario(close_after_handshake=True), record_delay=1)
            assert server.scenario == UDSScenario(close_after_handshake=True, record_delay=1)
            server.set_scenario(None)
            assert server.scenario == UDSScenario()
            for bad in ({"nonsense": 1}, {"write_chunk": -1}, {"listening": "yes"},
                        {"handshake_delay": "x"}, {"error_after_handshake": 5},
                        {"frames_before_record": "00"}, {"tlvs_before_record": [{"type": 999}]}):
                with pytest.raises(ValueError):
                    server.set_scenario(**bad)
            assert server.scenario == UDSScenario()
            sets = tl.filter("uds.scenario_set")
            assert len(sets) == 4
            assert sets[0].decoded["handshake_frame"] == encode_frame([TLV(1, b"\xff")]).hex()
            json.dumps([e.decoded for e in sets])
    run(main)


def test_frames_and_tlvs_before_record(sock_path: str):
    """Scripted frames go before the Record frame; scripted TLVs in front of its Record TLV."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl) as server:
            raw = await RawPeer.connect(sock_path)
            await raw.handshake()
            await server.wait_for_peer(AGENT, STEP)
            server.set_scenario(frames_before_record=[{"tlvs": [{"type": 200, "text": "x"}]}],
                                tlvs_before_record=[{"type": 201, "hex": "01"}])
            await server.binding.send(record(AGENT, CTRL), to_id=AGENT)
            assert (await raw.frame()).tlvs == (TLV(200, b"x"),)
            got = await raw.frame()
            assert got.tlvs == (TLV(201, b"\x01"), TLV(TLVType.USP_RECORD, record(AGENT, CTRL)))
            server.set_scenario(None)
            await server.binding.send(record(AGENT, CTRL), to_id=AGENT)
            assert (await raw.frame()).raw == encode_record(record(AGENT, CTRL))
            assert scenario_actions(tl) == ["frame_before_record", "tlvs_before_record"]
            raw.close()
    run(main)


def test_scripted_send_to_a_peer_that_closed_loses_the_record_quietly(sock_path: str):
    """Once a scripted frame is out, a peer that closes costs the Record, not an exception."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl) as server:
            raw = await RawPeer.connect(sock_path)
            await raw.handshake()
            peer = await server.wait_for_peer(AGENT, STEP)
            server.set_scenario(frames_before_record=["00"])
            writes: list[bytes] = []

            async def write_once(data: bytes) -> None:
                if writes:
                    raise ConnectionResetError("peer closed")
                writes.append(data)

            peer.conn.write = write_once  # type: ignore[method-assign]
            await server.binding.send(record(AGENT, CTRL), to_id=AGENT)
            assert writes == [b"\x00"]
            lost = [e.decoded for e in tl.filter("uds.scenario")][-1]
            assert lost["action"] == "record_lost" and "peer closed" in lost["reason"]
            raw.close()
    run(main)


def test_early_record_goes_before_the_server_handshake(sock_path: str):
    """R-UDS.20 at the client: a Get Record arrives after its Handshake, before ours."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl, scenario=UDSScenario(early_record=True)):
            raw = await RawPeer.connect(sock_path)
            early = await raw.handshake()
            rec = schema.Record()
            rec.ParseFromString(early.records[0].value)
            assert (rec.to_id, rec.from_id) == (AGENT, CTRL)
            msg = schema.Msg()
            msg.ParseFromString(rec.no_session_context.payload)
            assert msg.header.msg_id == "uds-early-record"
            assert (await raw.frame()).handshakes[0].text() == CTRL
            assert scenario_actions(tl) == ["early_record"]
            raw.close()
    run(main)


def test_close_on_error_false_leaves_the_close_to_the_peer(sock_path: str):
    """R-UDS.25 switched off on the suite's side: the peer's own close is what is seen."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl,
                             scenario=UDSScenario(close_on_error=False)) as server:
            raw = await RawPeer.connect(sock_path)
            await raw.handshake()
            peer = await server.wait_for_peer(AGENT, STEP)
            await raw.send(encode_error("bad"))
            await tl.expect("uds.error", within=STEP, direction="in")
            await raw.send(encode_record(record()))  # recorded, not processed any more
            await tl.expect("uds.frame", within=STEP, direction="in",
                            where=lambda e: tlv_names(e) == ["USP_RECORD"])
            assert peer.close_info is None and not peer.is_open
            raw.close()
            assert (await peer.wait_closed(STEP))["by"] == "peer"
            assert scenario_actions(tl) == ["keep_open_after_error"]
    run(main)


def test_write_chunk_splits_frames_and_survives_a_peer_that_leaves(sock_path: str):
    """R-UDS.4: frames written in pieces still decode; a peer closing mid-frame is recorded."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl,
                             scenario=UDSScenario(write_chunk=3, chunk_pause=0.0)) as server:
            raw = await RawPeer.connect(sock_path)
            assert (await raw.handshake()).handshakes[0].text() == CTRL
            reads = []
            peer = await server.wait_for_peer(AGENT, STEP)
            server.set_scenario(write_chunk=4, chunk_pause=0.05)
            task = asyncio.create_task(server.binding.send(record(AGENT, CTRL), to_id=AGENT))
            reads.append(await asyncio.wait_for(raw.reader.read(100), STEP))
            raw.writer.transport.abort()
            await asyncio.wait_for(task, STEP)  # no exception
            assert reads == [encode_record(record(AGENT, CTRL))[:4]]
            actions = scenario_actions(tl, peer.conn_id)
            assert actions[0] == "write_chunk" and actions[-1] == "write_chunk_aborted"
    run(main)


def test_drop_connections_counts_down(sock_path: str):
    """R-UDS.5 at the client: the next N connections are closed before any Handshake."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl) as server:
            server.set_scenario(drop_connections=2)
            for left in (1, 0):
                raw = await RawPeer.connect(sock_path)
                assert await raw.frames_until_eof() == []
                assert server.scenario.drop_connections == left
                raw.close()
            raw = await RawPeer.connect(sock_path)
            assert (await raw.handshake()).handshakes[0].text() == CTRL
            drops = [e.decoded for e in tl.filter("uds.scenario")]
            assert drops == [{"action": "drop_connection", "left": 1},
                             {"action": "drop_connection", "left": 0}]
            assert len(tl.filter("conn.close", direction="local")) == 2
            raw.close()
    run(main)


def test_listening_false_removes_the_socket_and_true_brings_it_back(sock_path: str):
    """R-UDS.5 at the client: the socket goes away (its connection too) and comes back."""
    async def main() -> None:
        tl = Timeline()
        async with UDSServer(sock_path, CTRL, timeline=tl) as server:
            raw = await RawPeer.connect(sock_path)
            await raw.handshake()
            server.set_scenario(listening=False)
            gone = await tl.expect("uds.listening", within=STEP)
            assert gone.decoded == {"listening": False, "path": sock_path}
            assert not server.listening and not os.path.exists(sock_path)
            assert await raw.frames_until_eof() == []
            with pytest.raises(OSError):
                await asyncio.open_unix_connection(sock_path)
            server.set_scenario(None)  # back to normal: listening again
            back = await tl.expect("uds.listening", within=STEP, since=gone)
            assert back.decoded["listening"] is True and server.listening
            raw2 = await RawPeer.connect(sock_path)
            assert (await raw2.handshake()).handshakes[0].text() == CTRL
            server.set_scenario(listening=False)  # closing the server waits for the switch
            raw2.close()
        assert not os.path.exists(sock_path)
    run(main)
