"""WebSocket MTP peers over real loopback sockets: WSServer, WSClient, bindings,
keep-alive and scenario hooks (R-WS.4..22; TP-469 7.1-7.12), plus the pure
frame splitter and summaries of conformance.mtp.websocket.peer.

aiohttp serves as an independent WebSocket implementation on the other side.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp import pki
from conformance.mtp.binding import BindingClosed, InboundRecord
from conformance.mtp.timeline import Entry, Timeline
from conformance.mtp.transport import Connection, open_connection
from conformance.mtp.websocket import (
    Opcode,
    ProtocolViolation,
    Violation,
    WSUsageError,
    encode_frame,
)
from conformance.mtp.websocket.client import (
    WSClient,
    WSClientBinding,
    WSHandshakeError,
    connect_ws,
)
from conformance.mtp.websocket.frames import Frame, encode_close_payload
from conformance.mtp.websocket.handshake import parse_request, parse_response
from conformance.mtp.websocket.peer import (
    FrameSplitter,
    Piece,
    WSScenario,
    abort_connection,
    frame_summary,
    request_summary,
    response_summary,
    split_frames,
    violations_summary,
    wire_frame_size,
)
from conformance.mtp.websocket.server import (
    ConnectionAttempt,
    WSServer,
    WSServerBinding,
)
from conformance.usp import messages, records

CTRL = "self::usp-controller"
AGENT = "os::012345-AGENT01"
STEP = 5.0
MASK = b"\x0a\x0b\x0c\x0d"


def run(coro: Awaitable[Any]) -> Any:
    """Run one async test body with an overall timeout."""
    return asyncio.run(asyncio.wait_for(coro, 20.0))


def get_record(to_id: str = AGENT, from_id: str = CTRL) -> bytes:
    msg = messages.request("get", {"param_paths": ["Device.DeviceInfo."]}, msg_id="get-1")
    return records.serialize(records.no_session_record(msg, to_id=to_id, from_id=from_id))


def connect_record(from_id: str = AGENT, to_id: str = CTRL) -> bytes:
    return records.serialize(records.connect_record("websocket", to_id=to_id, from_id=from_id))


class Sink:
    """Collects InboundRecords and lets a test await the next one."""

    def __init__(self) -> None:
        self.items: list[InboundRecord] = []
        self._event = asyncio.Event()

    def __call__(self, record: InboundRecord) -> None:
        self.items.append(record)
        self._event.set()

    async def get(self, index: int, timeout: float = STEP) -> InboundRecord:
        async def wait() -> InboundRecord:
            while len(self.items) <= index:
                self._event.clear()
                await self._event.wait()
            return self.items[index]

        return await asyncio.wait_for(wait(), timeout)


@contextlib.asynccontextmanager
async def ws_server(tl: Timeline, **kwargs: Any) -> AsyncIterator[WSServer]:
    server = await WSServer(CTRL, timeline=tl, **kwargs).start()
    try:
        yield server
    finally:
        await server.close()


async def agent_client(server: WSServer, tl: Timeline, **kwargs: Any) -> WSClient:
    """Our client playing an agent that connects to our server."""
    kwargs.setdefault("eid", AGENT)
    return await connect_ws("127.0.0.1", server.port, "/usp", timeline=tl, **kwargs)


def dec(entry: Entry) -> dict[str, Any]:
    """An entry's decoded summary as a dict (every ws.* entry has one)."""
    assert isinstance(entry.decoded, dict)
    return entry.decoded


def entries(tl: Timeline, kind: str, **criteria: Any) -> list[Entry]:
    return tl.filter(kind, **criteria)


def scenario_actions(tl: Timeline) -> list[str]:
    return [dec(e)["action"] for e in tl.filter("ws.scenario")]


def frames(tl: Timeline, direction: str, conn_id: str, type_: str | None = None) -> list[Entry]:
    return [e for e in tl.filter("ws.frame", direction=direction, conn_id=conn_id)
            if type_ is None or dec(e)["type"] == type_]


def rule_ids(entry: Entry) -> list[str]:
    return [v["rule"] for v in dec(entry)["violations"]]


# --------------------------------------------------------------------------- pure helpers


def test_wire_frame_size_matches_encoder_for_every_length_form() -> None:
    for length in (0, 1, 125, 126, 65535, 65536):
        for key in (None, MASK):
            raw = encode_frame(Opcode.BINARY, b"x" * length, mask_key=key)
            assert wire_frame_size(raw) == len(raw)
            assert wire_frame_size(raw + b"more", 0) == len(raw)
            assert wire_frame_size(raw[:1]) is None
    forced = encode_frame(Opcode.BINARY, b"ab", length_size=8)
    assert wire_frame_size(forced) == len(forced) == 12
    assert wire_frame_size(forced[:9]) is None
    assert wire_frame_size(b"\x00\x00" + forced, 2) == len(forced)


def test_frame_splitter_keeps_exact_bytes_across_chunks() -> None:
    data = (encode_frame(Opcode.BINARY, b"hello", fin=False, mask_key=MASK)
            + encode_frame(Opcode.CONTINUATION, b"world", mask_key=MASK)
            + encode_frame(Opcode.PING, b"p"))
    splitter = FrameSplitter()
    pieces: list[Piece] = []
    for i in range(len(data)):  # one byte at a time
        pieces += splitter.feed(data[i : i + 1])
    assert b"".join(p.raw for p in pieces) == data
    assert [p.frame.opcode for p in pieces if p.frame] == [Opcode.BINARY, Opcode.CONTINUATION, Opcode.PING]
    assert pieces[0].frame is not None and pieces[0].frame.payload == b"hello"
    assert splitter.buffered == 0 and splitter.flush() == []


def test_frame_splitter_unframeable_bytes_become_error_pieces() -> None:
    top_bit = b"\x82\x7f" + (1 << 63).to_bytes(8, "big") + b"rest"
    splitter = FrameSplitter()
    first = splitter.feed(encode_frame(Opcode.BINARY, b"ok") + top_bit)
    assert first[0].frame is not None and first[1].frame is None and "top bit" in (first[1].error or "")
    assert first[1].raw == top_bit
    later = splitter.feed(b"xyz")
    assert later == [Piece(b"xyz", None, splitter.error)]
    assert splitter.feed(b"") == []
    small = FrameSplitter(max_payload=10)
    out = small.feed(encode_frame(Opcode.BINARY, b"y" * 11))
    assert out[0].frame is None and "exceeds" in (out[0].error or "")
    partial = split_frames(encode_frame(Opcode.BINARY, b"abc")[:-1])
    assert partial == [Piece(encode_frame(Opcode.BINARY, b"abc")[:-1], None, "incomplete frame")]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_frame_splitter_never_raises_and_loses_no_byte(data: bytes, cuts: list[int]) -> None:
    splitter = FrameSplitter(max_payload=1 << 20)
    pieces: list[Piece] = []
    pos = 0
    for cut in cuts:
        pieces += splitter.feed(data[pos : pos + cut])
        pos += cut
    pieces += splitter.feed(data[pos:])
    pieces += splitter.flush()
    assert b"".join(p.raw for p in pieces) == data
    for piece in pieces:
        summary = frame_summary(piece)
        assert isinstance(summary, dict) and "len" in summary


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_head_summaries_never_raise_on_hostile_bytes(data: bytes) -> None:
    assert isinstance(request_summary(parse_request(data)), dict)
    assert isinstance(response_summary(parse_response(data)), dict)


def test_frame_summary_fields() -> None:
    close = Piece(b"", Frame(Opcode.CLOSE, encode_close_payload(1003, "text")))
    assert frame_summary(close) == {"opcode": 8, "type": "close", "fin": True, "rsv": 0, "masked": False,
                                    "len": 6, "code": 1003, "reason": "text"}
    bad_close = frame_summary(Piece(b"", Frame(Opcode.CLOSE, encode_close_payload(1005))))
    assert bad_close["code"] == 1005 and "not allowed" in bad_close["problem"]
    ping = frame_summary(Piece(b"", Frame(Opcode.PING, b"\x01\x02", masked=True, mask_key=MASK)))
    assert ping["payload_hex"] == "0102" and ping["masked"] is True
    reserved = frame_summary(Piece(b"", Frame(0x3, b"", fin=False, rsv=4)))
    assert reserved["type"] == "reserved-0x3" and reserved["fin"] is False and reserved["rsv"] == 4
    assert frame_summary(Piece(b"ab", None, "boom")) == {"error": "boom", "len": 2}


def test_violations_summary_and_missing_heads() -> None:
    out = violations_summary([Violation("R-WS.10b", "no eid", blocking=False),
                              ProtocolViolation("R-WS.14", "text", 1003, True)])
    assert out["violations"][0] == {"rule": "R-WS.10b", "message": "no eid", "level": "MUST",
                                    "blocking": False, "close_code": None}
    assert out["violations"][1] == {"rule": "R-WS.14", "message": "text", "close_code": 1003, "fatal": True}
    assert "error" in request_summary(None) and "error" in response_summary(None)


def test_scenario_validation_and_replacement() -> None:
    with pytest.raises(ValueError):
        WSScenario(fragment_size=0)
    with pytest.raises(ValueError):
        WSScenario(reject_status=42)
    server = WSServer(CTRL)
    assert server.set_scenario(withhold_pongs=True).withhold_pongs
    assert server.set_scenario(fragment_size=3) == WSScenario(withhold_pongs=True, fragment_size=3)
    assert server.set_scenario(WSScenario()) == WSScenario()
    client = WSClient("127.0.0.1", 1, eid=CTRL)
    assert client.set_scenario(send_text=True).send_text
    assert client.url == "ws://127.0.0.1:1/usp"
    assert WSClient("::1", 2, "/x", eid=CTRL).url == "ws://[::1]:2/x"
    assert isinstance(client.binding, WSClientBinding) and client.binding.mtp == "websocket"
    assert isinstance(server.binding, WSServerBinding) and server.binding.mtp == "websocket"


# --------------------------------------------------------------------------- our client <-> our server


def test_records_both_ways_plain() -> None:
    """R-WS.7, R-WS.9, R-WS.10b, R-WS.11a, R-WS.14; TP-469 7.1 / 7.10."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            server_sink = Sink()
            server.binding.set_sink(server_sink)
            assert server.binding.address == f"ws://127.0.0.1:{server.port}/usp"
            client = await agent_client(server, tl)
            client_sink = Sink()
            client.binding.set_sink(client_sink)
            assert client.agent_eid == CTRL  # from the echoed bbf-usp-protocol extension
            assert client.binding.address == f"ws://127.0.0.1:{server.port}/usp"
            await client.binding.send(connect_record(), to_id=CTRL)
            got = await server_sink.get(0)
            assert got.data == connect_record() and got.mtp == "websocket"
            assert got.meta == {"opcode": 2, "fragments": 1, "agent_eid": AGENT}
            peer = await server.wait_for_agent(AGENT, STEP)
            assert got.conn_id == peer.conn_id and server.peer_for(AGENT) is peer
            await server.binding.send(get_record(), to_id=AGENT)
            back = await client_sink.get(0)
            assert back.data == get_record() and back.meta["opcode"] == Opcode.BINARY
            assert back.meta["agent_eid"] == CTRL
            await client.close()
            await tl.expect("ws.closed", within=STEP, conn_id=peer.conn_id)
        request = entries(tl, "ws.handshake_request", direction="in")[0]
        assert request.raw is not None and request.raw.startswith(b"GET /usp?eid=os::012345-AGENT01 HTTP/1.1")
        assert dec(request)["eid"] == AGENT and dec(request)["subprotocols"] == ["v1.usp"]
        response = entries(tl, "ws.handshake_response", direction="out")[0]
        assert dec(response)["status"] == 101 and dec(response)["subprotocol"] == "v1.usp"
        assert dec(response)["extension_eid"] == CTRL
        agent_entry = entries(tl, "ws.agent", conn_id=peer.conn_id)[0]
        assert agent_entry.decoded == {"eid": AGENT, "source": "query"}
        inbound = frames(tl, "in", peer.conn_id, "binary")[0]
        assert inbound.raw is not None and dec(inbound)["masked"] is True
        assert dec(inbound)["len"] == len(connect_record())
        outbound = frames(tl, "out", peer.conn_id, "binary")[0]
        assert outbound.raw == encode_frame(Opcode.BINARY, get_record())
        assert not entries(tl, "ws.violation")
        assert server.connection_attempts[0].outcome == "accepted"
        assert server.connection_attempts[0].eid == AGENT

    run(main())


def test_mutual_tls_records_and_certificate_ids() -> None:
    """R-WS.22: wss with client certificates from the test PKI."""

    async def main() -> None:
        ca = pki.make_ca("ws peers CA")
        server_ctx = pki.ssl_context("server", pki.issue(ca, endpoint_id=CTRL, ips=["127.0.0.1"]), trust=[ca])
        client_ctx = pki.ssl_context("client", pki.issue(ca, endpoint_id=AGENT), trust=[ca])
        tl = Timeline()
        async with ws_server(tl, ssl_context=server_ctx) as server:
            assert server.url.startswith("wss://127.0.0.1:")
            sink = Sink()
            server.binding.set_sink(sink)
            client = await agent_client(server, tl, ssl_context=client_ctx)
            assert client.url.startswith("wss://")
            client_sink = Sink()
            client.binding.set_sink(client_sink)
            await client.binding.send(connect_record(), to_id=CTRL)
            assert (await sink.get(0)).data == connect_record()
            await server.binding.send(get_record(), to_id=AGENT)
            assert (await client_sink.get(0)).data == get_record()
            peer = await server.wait_for_agent(AGENT, STEP)
            await client.close()
        opened = entries(tl, "ws.open", conn_id=peer.conn_id)[0]
        assert dec(opened)["tls"] is True and dec(opened)["peer_endpoint_ids"] == [AGENT]
        assert entries(tl, "tls.handshake_done")

    run(main())


def test_agent_identified_from_first_record_when_no_eid() -> None:
    """R-WS.10b missing: reported (non-blocking); the agent is known from the Connect Record."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            client = await agent_client(server, tl, scenario=WSScenario(omit_eid=True))
            conn_id = next(iter(server.peers))
            violation = await tl.expect("ws.violation", within=STEP, conn_id=conn_id)
            assert rule_ids(violation) == ["R-WS.10b"]
            assert server.agents == {}
            waiter = asyncio.ensure_future(server.wait_for_agent(AGENT, STEP))
            await client.binding.send(connect_record(), to_id=CTRL)
            peer = await waiter
            assert peer.conn_id == conn_id and peer.remote_eid == AGENT
            assert entries(tl, "ws.agent", conn_id=conn_id)[0].decoded == {"eid": AGENT, "source": "record"}
            assert "omit_eid" in scenario_actions(tl)
            # Without an extension eid the client learns the remote id from a Record too.
            assert client.agent_eid is None
            await server.binding.send(records.serialize(records.connect_record(
                "websocket", to_id=AGENT, from_id="os::other")), to_id=AGENT)
            await tl.expect("ws.agent", within=STEP, conn_id=client.peer.conn_id)  # type: ignore[union-attr]
            assert client.agent_eid == "os::other"
            await client.close()

    run(main())


def test_binding_errors_and_wait_timeouts() -> None:
    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            with pytest.raises(BindingClosed):
                await server.binding.send(get_record(), to_id="os::nobody")
            with pytest.raises(BindingClosed):
                await server.close_agent("os::nobody")
            with pytest.raises(BindingClosed):
                await server.abort_agent("os::nobody")
            with pytest.raises(TimeoutError, match="os::nobody"):
                await server.wait_for_agent("os::nobody", 0.05)
            with pytest.raises(TimeoutError):
                await server.wait_for_attempts(1, 0.05)
            client = WSClient("127.0.0.1", server.port, eid=AGENT, timeline=tl)
            with pytest.raises(BindingClosed):
                await client.binding.send(get_record(), to_id=CTRL)
            assert await client.close() is False
            await client.connect()
            with pytest.raises(WSUsageError):
                await client.connect()
            assert await server.wait_for_agent(None, STEP) is server.peer_for(AGENT)
            await client.binding.close()
            assert not client.is_open
            with pytest.raises(BindingClosed):
                await client.binding.send(get_record(), to_id=CTRL)
            await tl.expect("ws.closed", within=STEP, direction="local",
                            where=lambda e: e.conn_id in {a.conn_id for a in server.connection_attempts})
            with pytest.raises(BindingClosed):
                await server.binding.send(get_record(), to_id=AGENT)
            await client.connect()  # reconnecting the same client works
            assert (await server.wait_for_agent(AGENT, STEP)).conn_id == server.connection_attempts[-1].conn_id
            await server.binding.close()
            await client.close()
        with pytest.raises(ConnectionError):
            await connect_ws("127.0.0.1", server.port, eid=AGENT, handshake_timeout=1.0)

    run(main())


def test_fragmented_messages_both_ways() -> None:
    """R-WS.14a/14b; TP-469 7.12: fragmented Records are reassembled and counted."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            sink = Sink()
            server.binding.set_sink(sink)
            client = await agent_client(server, tl, scenario=WSScenario(fragment_size=3))
            client_sink = Sink()
            client.binding.set_sink(client_sink)
            data = connect_record()
            await client.binding.send(data, to_id=CTRL)
            got = await sink.get(0)
            assert got.data == data and got.meta["fragments"] == math.ceil(len(data) / 3)
            peer = await server.wait_for_agent(AGENT, STEP)
            inbound = frames(tl, "in", peer.conn_id)
            assert [dec(e)["fin"] for e in inbound][-1] is True
            assert not any(dec(e)["fin"] for e in inbound[:-1])
            assert dec(inbound[0])["type"] == "binary" and dec(inbound[1])["type"] == "continuation"
            server.set_scenario(fragment_size=5)
            record = get_record()
            await server.binding.send(record, to_id=AGENT)
            back = await client_sink.get(0)
            assert back.data == record and back.meta["fragments"] == math.ceil(len(record) / 5)
            # A per-call size overrides the scenario; a size over the record sends one frame.
            await peer.send_record(record, fragment_size=1000)
            assert (await client_sink.get(1)).meta["fragments"] == 1
            await client.close()
        fragments = [e.decoded for e in tl.filter("ws.scenario") if dec(e)["action"] == "fragment"]
        assert {"action": "fragment", "fragment_size": 3} in fragments
        assert {"action": "fragment", "fragment_size": 5} in fragments
        assert len(fragments) == 2

    run(main())


def test_ping_answered_withheld_and_keepalive_pong_missed() -> None:
    """R-WS.13, R-WS.17; TP-469 7.7: Pongs answered, withheld, and missed ones detected."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            client = await agent_client(server, tl)
            peer = await server.wait_for_agent(AGENT, STEP)
            assert await peer.ping(timeout=STEP) is True
            assert await peer.ping(b"explicit") is None  # fire and forget
            await tl.expect("ws.frame", within=STEP, direction="in", conn_id=peer.conn_id,
                            where=lambda e: dec(e).get("payload_hex") == b"explicit".hex())
            client.set_scenario(withhold_pongs=True)
            assert await peer.ping(timeout=0.2) is False
            missed = await tl.expect("ws.pong_missed", within=STEP, conn_id=peer.conn_id)
            assert dec(missed)["waited"] == 0.2
            assert "withhold_pong" in scenario_actions(tl)
            client.set_scenario(withhold_pongs=False)
            assert await peer.ping(timeout=STEP) is True
            # An unsolicited Pong does not end the session (TP-469 7.7 metric 2).
            mark = tl.filter()[-1]
            await client.peer.pong(b"unasked")  # type: ignore[union-attr]
            await tl.expect("ws.frame", within=STEP, direction="in", conn_id=peer.conn_id, since=mark,
                            where=lambda e: dec(e)["type"] == "pong")
            assert peer.is_open and peer.unsolicited_pongs == 1
            await client.close()
        # Our keep-alive: periodic Pings, a withheld answer is recorded as ws.pong_missed.
        tl2 = Timeline()
        async with ws_server(tl2, ping_interval=0.05, pong_timeout=0.1) as server:
            client = await agent_client(server, tl2, scenario=WSScenario(withhold_pongs=True))
            peer = await server.wait_for_agent(AGENT, STEP)
            await tl2.expect("ws.pong_missed", within=STEP, conn_id=peer.conn_id)
            client.set_scenario(withhold_pongs=False)
            since = tl2.filter()[-1]
            await tl2.expect("ws.frame", within=STEP, direction="in", conn_id=peer.conn_id, since=since,
                             where=lambda e: dec(e)["type"] == "pong")
            await client.close()
        # Client keep-alive against a server that answers.
        tl3 = Timeline()
        async with ws_server(tl3) as server:
            client = await agent_client(server, tl3, ping_interval=0.02, pong_timeout=STEP)
            conn_id = client.peer.conn_id  # type: ignore[union-attr]
            for _ in range(2):
                await tl3.expect("ws.frame", within=STEP, direction="in", conn_id=conn_id,
                                 since=tl3.filter()[-1], where=lambda e: dec(e)["type"] == "pong")
            await client.close()
            assert not tl3.filter("ws.pong_missed")

    run(main())


def test_close_codes_both_directions() -> None:
    """R-WS.8; TP-469 7.4: closing handshakes with given codes, and a forbidden code."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            client = await agent_client(server, tl)
            peer = await server.wait_for_agent(AGENT, STEP)
            assert await client.close(4000, "bye") is True
            echo = frames(tl, "out", peer.conn_id, "close")[0]
            assert dec(echo)["code"] == 4000
            closed = entries(tl, "ws.closed", conn_id=peer.conn_id)[0]
            assert closed.decoded == {"clean": True, "close_sent": [4000, ""], "close_received": [4000, "bye"]}
            assert await client.close() is True  # already closed: idempotent
            # The server closes with 1001; our client echoes and the server drops TCP.
            client = await agent_client(server, tl)
            peer = await server.wait_for_agent(AGENT, STEP)
            assert await server.close_agent(AGENT, 1001, "going") is True
            received = frames(tl, "in", client.peer.conn_id, "close")[0]  # type: ignore[union-attr]
            assert dec(received)["code"] == 1001 and dec(received)["reason"] == "going"
            await client.peer.wait_closed(STEP)  # type: ignore[union-attr]
            # A code that may not be sent (1005) goes out raw; the server reports it and answers 1002.
            client = await agent_client(server, tl)
            peer = await server.wait_for_agent(AGENT, STEP)
            await client.close(1005)
            violation = await tl.expect("ws.violation", within=STEP, conn_id=peer.conn_id)
            assert rule_ids(violation) == ["RFC6455 7.4"]
            answer = frames(tl, "in", client.peer.conn_id, "close")[0]  # type: ignore[union-attr]
            assert dec(answer)["code"] == 1002
            closes = [e.decoded for e in tl.filter("ws.scenario") if dec(e)["action"] == "close"]
            assert {"action": "close", "code": 1005, "reason": ""} in closes

    run(main())


def test_text_frame_scenario_gets_1003() -> None:
    """R-WS.14, R-WS.16; TP-469 7.6: a Record in a text frame is closed with 1003."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            sink = Sink()
            server.binding.set_sink(sink)
            client = await agent_client(server, tl, scenario=WSScenario(send_text=True))
            peer = await server.wait_for_agent(AGENT, STEP)
            await client.binding.send(connect_record(), to_id=CTRL)
            await client.peer.wait_closed(STEP)  # type: ignore[union-attr]
            assert "text_frame" in scenario_actions(tl)
            assert dec(frames(tl, "in", peer.conn_id)[0])["type"] == "text"
            violation = entries(tl, "ws.violation", conn_id=peer.conn_id)[0]
            assert rule_ids(violation) == ["R-WS.14"]
            close = frames(tl, "in", client.peer.conn_id, "close")[0]  # type: ignore[union-attr]
            assert dec(close)["code"] == 1003
            assert sink.items == []
            assert dec(entries(tl, "ws.message", direction="in", conn_id=peer.conn_id)[0])["type"] == "text"

    run(main())


def test_malformed_frame_from_peer_is_reported() -> None:
    """RFC 6455 5.1 via WSPeer.send_frame: an unmasked client frame fails the connection (1002)."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            client = await agent_client(server, tl)
            peer = await server.wait_for_agent(AGENT, STEP)
            await client.peer.send_frame(Opcode.BINARY, b"raw", masked=False)  # type: ignore[union-attr]
            violation = await tl.expect("ws.violation", within=STEP, conn_id=peer.conn_id)
            assert rule_ids(violation) == ["RFC6455 5.1"]
            await client.peer.wait_closed(STEP)  # type: ignore[union-attr]
            assert dec(frames(tl, "out", peer.conn_id, "close")[0])["code"] == 1002
            raw = [e.decoded for e in tl.filter("ws.scenario") if dec(e)["action"] == "raw_frame"]
            assert raw == [{"action": "raw_frame", "opcode": 2, "len": 3, "options": {"masked": False}}]

    run(main())


def test_abort_either_side() -> None:
    """TP-469 7.8 step 2: the TCP connection is dropped without a Close frame."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            client = await agent_client(server, tl)
            peer = await server.wait_for_agent(AGENT, STEP)
            await server.abort_agent(AGENT)
            assert await client.peer.wait_closed(STEP) is False  # type: ignore[union-attr]
            assert peer.closed.is_set() and not frames(tl, "out", peer.conn_id, "close")
            with pytest.raises(BindingClosed):
                await client.binding.send(get_record(), to_id=CTRL)
            with pytest.raises(BindingClosed):
                await client.abort()
            client = await agent_client(server, tl)
            peer = await server.wait_for_agent(AGENT, STEP)
            await client.abort()
            assert await peer.wait_closed(STEP) is False
            assert scenario_actions(tl).count("abort") == 2

    run(main())


# --------------------------------------------------------------------------- handshake scenarios


def test_reject_status_scenario() -> None:
    """TP-469 7.8: the controller rejects new WebSocket connections."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl, scenario=WSScenario(reject_status=503)) as server:
            with pytest.raises(WSHandshakeError) as info:
                await agent_client(server, tl)
            assert info.value.status == 503
            server.set_scenario(reject_status=499, reject_reason="Go Away")
            with pytest.raises(WSHandshakeError) as info:
                await agent_client(server, tl)
            assert info.value.status == 499
            answers = entries(tl, "ws.handshake_response", direction="in")
            assert dec(answers[1])["start_line"] == "HTTP/1.1 499 Go Away"
            attempts = await server.wait_for_attempts(2, STEP)
            assert [a.outcome for a in attempts] == ["rejected", "rejected"]
            assert [a.status for a in attempts] == [503, 499]
            assert scenario_actions(tl) == ["reject_handshake", "reject_handshake"]

    run(main())


def test_server_alters_or_omits_subprotocol() -> None:
    """R-WS.11, R-WS.12; a client does not establish a session without v1.usp."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl, scenario=WSScenario(omit_subprotocol=True)) as server:
            with pytest.raises(WSHandshakeError) as info:
                await agent_client(server, tl)
            assert info.value.status == 101 and info.value.result is not None
            assert "R-WS.12" in [v.rule for v in info.value.result.violations]
            assert "R-WS.12" in rule_ids(entries(tl, "ws.violation", direction="in")[0])
            server.set_scenario(omit_subprotocol=False, subprotocol="v2.usp")
            with pytest.raises(WSHandshakeError):
                await agent_client(server, tl)
            client = await agent_client(server, tl, tolerant=True)  # kept despite the breach
            assert client.is_open and client.handshake is not None
            assert client.handshake.response is not None and client.handshake.response.subprotocol == "v2.usp"
            await client.close()
        assert scenario_actions(tl) == ["omit_subprotocol", "alter_subprotocol", "alter_subprotocol"]

    run(main())


def test_server_omits_or_alters_extension() -> None:
    """R-WS.11a (SHOULD), R-WS.11b; TP-469 7.11: sessions work without the extension."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl, scenario=WSScenario(omit_extension=True)) as server:
            client = await agent_client(server, tl)
            assert client.is_open and client.agent_eid is None
            violation = entries(tl, "ws.violation", direction="in")[0]
            assert dec(violation)["violations"][0]["rule"] == "R-WS.11a"
            assert dec(violation)["violations"][0]["blocking"] is False
            await client.close()
            server.set_scenario(omit_extension=False, extension='bbf-usp-protocol; eid="os::other-ctrl"')
            client = await agent_client(server, tl)
            assert client.agent_eid == "os::other-ctrl"
            sink = Sink()
            server.binding.set_sink(sink)
            await client.binding.send(connect_record(), to_id=CTRL)
            assert (await sink.get(0)).data == connect_record()
            await client.close()
        assert scenario_actions(tl)[:2] == ["omit_extension", "alter_extension"]
        # answer_extension=True sends the extension even when not offered.
        tl2 = Timeline()
        async with ws_server(tl2, answer_extension=True) as server:
            with pytest.raises(WSHandshakeError):  # not offered: RFC 6455 4.1 forbids it
                await agent_client(server, tl2, scenario=WSScenario(omit_extension=True))
            client = await agent_client(server, tl2, scenario=WSScenario(omit_extension=True), tolerant=True)
            assert client.agent_eid == CTRL
            await client.close()

    run(main())


def test_client_side_handshake_scenarios() -> None:
    """R-WS.10, R-WS.12a, R-WS.11c as seen by our server; TP-469 7.5 and 7.11 from the client."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            with pytest.raises(WSHandshakeError) as info:
                await agent_client(server, tl, scenario=WSScenario(omit_subprotocol=True))
            assert info.value.status == 400
            assert "R-WS.10" in rule_ids(entries(tl, "ws.violation", direction="in")[0])
            with pytest.raises(WSHandshakeError):
                await agent_client(server, tl, scenario=WSScenario(subprotocol="v9.other"))
            client = await agent_client(server, tl, scenario=WSScenario(omit_extension=True))
            response = entries(tl, "ws.handshake_response", direction="out")[-1]
            assert dec(response)["status"] == 101 and dec(response)["extensions"] == []
            await client.close()
            raw_ext = 'bbf-usp-protocol; eid="os::custom"'
            client = await agent_client(server, tl, scenario=WSScenario(extension=raw_ext))
            request = entries(tl, "ws.handshake_request", direction="in")[-1]
            assert ["bbf-usp-protocol", {"eid": "os::custom"}] in dec(request)["extensions"]
            await client.close()
            assert [a.outcome for a in server.connection_attempts] == ["rejected", "rejected", "accepted",
                                                                      "accepted"]
        assert scenario_actions(tl) == ["omit_subprotocol", "alter_subprotocol", "omit_extension",
                                        "alter_extension"]

    run(main())


def test_refused_connections_are_counted_and_timestamped() -> None:
    """R-WS.19 / TP-469 7.8: attempts during refusal are counted with times for back-off checks."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl, scenario=WSScenario(refuse_connections=True)) as server:
            for _ in range(2):
                with pytest.raises(ConnectionError):
                    await agent_client(server, tl, handshake_timeout=2.0)
            attempts = await server.wait_for_attempts(2, STEP)
            assert [a.outcome for a in attempts] == ["refused", "refused"]
            assert [a.number for a in attempts] == [1, 2]
            assert attempts[0].t <= attempts[1].t
            marks = entries(tl, "ws.attempt")
            assert [e.t for e in marks] == [a.t for a in attempts]
            assert scenario_actions(tl) == ["refuse_connection", "refuse_connection"]
            server.set_scenario(refuse_connections=False)
            client = await agent_client(server, tl)
            attempts = await server.wait_for_attempts(3, STEP)
            assert attempts[2] == ConnectionAttempt(3, attempts[2].t, attempts[2].conn_id, attempts[2].peer,
                                                    "accepted", 101, AGENT)
            await client.close()

    run(main())


def test_second_session_from_same_agent_is_recorded() -> None:
    """R-WS.4: a second session from the same Endpoint ID is flagged; the newest one is used."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            first = await agent_client(server, tl)
            first_peer = await server.wait_for_agent(AGENT, STEP)
            second = await agent_client(server, tl)
            dup = await tl.expect("ws.duplicate_session", within=STEP)
            assert dup.decoded == {"eid": AGENT, "previous_conn_id": first_peer.conn_id}
            sink = Sink()
            second.binding.set_sink(sink)
            await server.binding.send(get_record(), to_id=AGENT)
            assert (await sink.get(0)).conn_id == second.peer.conn_id  # type: ignore[union-attr]
            await first.close()
            await tl.expect("ws.closed", within=STEP, conn_id=first_peer.conn_id)
            assert server.peer_for(AGENT) is not first_peer
            await second.close()

    run(main())


async def raw_exchange(port: int, data: bytes, tl: Timeline) -> bytes:
    conn = await open_connection("raw", "127.0.0.1", port, timeline=tl)
    try:
        await conn.write(data)
        return await asyncio.wait_for(conn.reader.read(), STEP)
    finally:
        await conn.close()


def test_hostile_handshakes_wrong_path_and_incomplete_requests() -> None:
    """RFC 6455 4.2.1 / R-WS.2: garbage gets an HTTP error, other paths 404, a dropped request is recorded."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            answer = await raw_exchange(server.port, b"\x16\x03\x01garbage\r\n\r\n", tl)
            assert answer.startswith(b"HTTP/1.1 426 ")  # no Sec-WebSocket-Version either
            assert entries(tl, "ws.violation", direction="in")
            request = (b"GET /other?eid=os::x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v1.usp\r\n\r\n")
            assert (await raw_exchange(server.port, request, tl)).startswith(b"HTTP/1.1 404 ")
            conn = await open_connection("raw", "127.0.0.1", server.port)
            await conn.write(b"GET /usp HTTP/1.1\r\n")
            await conn.close()
            incomplete = await tl.expect("ws.handshake_incomplete", within=STEP)
            assert incomplete.raw == b"GET /usp HTTP/1.1\r\n"
            attempts = await server.wait_for_attempts(3, STEP)
            assert [a.outcome for a in attempts] == ["rejected", "rejected", "incomplete"]
        async with ws_server(tl, path=None, handshake_timeout=0.1) as server:
            client = await connect_ws("127.0.0.1", server.port, "/anything", eid=AGENT, timeline=tl)
            assert client.is_open
            await client.close()
            conn = await open_connection("raw", "127.0.0.1", server.port)  # says nothing: times out
            await tl.expect("ws.handshake_incomplete", within=STEP, since=tl.filter()[-1])
            await conn.close()

    run(main())


def test_client_handles_silent_or_closing_servers() -> None:
    """No handshake answer (EOF or silence) raises WSHandshakeError with no result."""

    async def main() -> None:
        tl = Timeline()

        async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(WSHandshakeError) as info:
                await connect_ws("127.0.0.1", port, eid=CTRL, timeline=tl)
            assert info.value.result is None and info.value.status is None
        assert entries(tl, "ws.handshake_incomplete", direction="in")
        assert entries(tl, "conn.close", direction="out")

    run(main())


def test_broken_sink_does_not_kill_the_connection() -> None:
    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server:
            def broken(_: InboundRecord) -> None:
                raise RuntimeError("controller bug")

            server.binding.set_sink(broken)
            client = await agent_client(server, tl)
            await client.binding.send(connect_record(), to_id=CTRL)
            await tl.expect("ws.sink_error", within=STEP)
            peer = await server.wait_for_agent(AGENT, STEP)
            assert peer.is_open and await peer.ping(timeout=STEP)
            await client.close()

    run(main())


def test_server_close_sends_going_away() -> None:
    async def main() -> None:
        tl = Timeline()
        server = await WSServer(CTRL, timeline=tl).start()
        client = await agent_client(server, tl)
        await server.wait_for_agent(AGENT, STEP)
        waiter = asyncio.ensure_future(server.wait_for_agent("os::late", STEP))
        await asyncio.sleep(0)
        await server.close()
        with pytest.raises(ConnectionError, match="server closed"):
            await waiter
        await client.peer.wait_closed(STEP)  # type: ignore[union-attr]
        close = frames(tl, "in", client.peer.conn_id, "close")[0]  # type: ignore[union-attr]
        assert dec(close)["code"] == 1001

    run(main())


def test_context_managers_and_options() -> None:
    async def main() -> None:
        tl = Timeline()
        async with await WSServer(CTRL, timeline=tl).start() as server:
            client = WSClient("127.0.0.1", server.port, eid=AGENT, timeline=tl,
                              extra_headers=[("User-Agent", "usp-conformance")])
            async with await client.connect():
                peer = await server.wait_for_agent(AGENT, STEP)
                request = entries(tl, "ws.handshake_request", direction="in")[0]
                assert ["User-Agent", "usp-conformance"] in dec(request)["headers"]
                assert await peer.close(4002, wait=None) is False  # not waited for
                await client.peer.wait_closed(STEP)  # type: ignore[union-attr]
            assert not client.is_open
        assert server.peers == {} and server.agents == {}
        with pytest.raises(ValueError):
            WSServer(CTRL, ping_interval=0)
        with pytest.raises(ValueError):
            WSClient("127.0.0.1", 1, eid=CTRL, ping_interval=1.0, pong_timeout=-1)

    run(main())


# --------------------------------------------------------------------------- aiohttp as the other side


def test_aiohttp_client_against_our_server() -> None:
    """An independent client (aiohttp) with protocols=("v1.usp",) and ?eid= (R-WS.9, R-WS.10b)."""

    async def main() -> None:
        tl = Timeline()
        async with ws_server(tl) as server, aiohttp.ClientSession() as session:
            sink = Sink()
            server.binding.set_sink(sink)
            url = f"http://127.0.0.1:{server.port}/usp?eid={AGENT}"
            async with session.ws_connect(url, protocols=("v1.usp",), autoping=False) as ws:
                assert ws.protocol == "v1.usp"
                await ws.send_bytes(connect_record())
                assert (await sink.get(0)).data == connect_record()
                peer = await server.wait_for_agent(AGENT, STEP)
                assert dec(entries(tl, "ws.agent", conn_id=peer.conn_id)[0])["source"] == "query"
                server.set_scenario(fragment_size=4)
                await server.binding.send(get_record(), to_id=AGENT)
                msg = await ws.receive(STEP)
                assert msg.type is aiohttp.WSMsgType.BINARY and msg.data == get_record()
                assert len(frames(tl, "out", peer.conn_id, "continuation")) == math.ceil(len(get_record()) / 4) - 1
                # Our Ping reaches aiohttp; with autoping off it answers by hand.
                ping_task = asyncio.ensure_future(peer.ping(b"p1", timeout=STEP))
                msg = await ws.receive(STEP)
                assert msg.type is aiohttp.WSMsgType.PING and msg.data == b"p1"
                await ws.pong(msg.data)
                assert await ping_task is True
                # aiohttp's Ping gets our automatic Pong.
                await ws.ping(b"from-aiohttp")
                msg = await ws.receive(STEP)
                assert msg.type is aiohttp.WSMsgType.PONG and msg.data == b"from-aiohttp"
                await ws.close(code=4001, message=b"done")
            closed = await tl.expect("ws.closed", within=STEP, conn_id=peer.conn_id)
            assert dec(closed)["close_received"] == [4001, "done"]
            assert not entries(tl, "ws.violation", conn_id=peer.conn_id)

    run(main())


@contextlib.asynccontextmanager
async def aiohttp_agent(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/usp", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def test_our_client_against_aiohttp_agent_with_quoted_extension() -> None:
    """An agent-like aiohttp server answering `bbf-usp-protocol; eid="os::..."` quoted
    (interop notes); R-WS.11a, R-WS.14b, R-WS.17, TP-469 7.12."""

    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen["eid"] = request.query.get("eid")
        seen["extensions"] = request.headers.get("Sec-WebSocket-Extensions")
        ws = web.WebSocketResponse(protocols=("v1.usp",), autoping=False)
        ws.headers["Sec-WebSocket-Extensions"] = 'bbf-usp-protocol; eid="os::012345-ABC"'
        await ws.prepare(request)
        await ws.send_bytes(connect_record(from_id="os::012345-ABC"))
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)  # echo
                await ws.ping(b"agent-ping")
            elif msg.type is aiohttp.WSMsgType.PONG:
                seen["pong"] = msg.data
                await ws.send_bytes(b"pong-seen")
        return ws

    async def main() -> None:
        tl = Timeline()
        async with aiohttp_agent(handler) as port:
            client = await connect_ws("127.0.0.1", port, "/usp", eid=CTRL, timeline=tl,
                                      scenario=WSScenario(fragment_size=4))
            sink = Sink()
            client.binding.set_sink(sink)
            assert client.agent_eid == "os::012345-ABC"
            assert seen["eid"] == CTRL and "bbf-usp-protocol" in seen["extensions"]
            first = await sink.get(0)
            assert first.data == connect_record(from_id="os::012345-ABC")
            await client.binding.send(get_record(to_id="os::012345-ABC"), to_id="os::012345-ABC")
            echo = await sink.get(1)
            assert echo.data == get_record(to_id="os::012345-ABC")  # aiohttp reassembled our fragments
            assert (await sink.get(2)).data == b"pong-seen"
            assert seen["pong"] == b"agent-ping"
            assert not [v for e in entries(tl, "ws.violation") for v in dec(e)["violations"]
                        if v["blocking"]]
            assert await client.close() is True

    run(main())


def test_client_connection_refused_port() -> None:
    async def main() -> None:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        with pytest.raises(ConnectionError):
            await connect_ws("127.0.0.1", port, eid=CTRL, handshake_timeout=1.0)

    run(main())


def test_abort_connection_helper_resets() -> None:
    async def main() -> None:
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def reader(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                got.set_result(await r.read())
            except ConnectionError as exc:
                got.set_result(type(exc).__name__.encode())

        server = await asyncio.start_server(reader, "127.0.0.1", 0)
        async with server:
            conn: Connection = await open_connection("raw", "127.0.0.1", server.sockets[0].getsockname()[1])
            abort_connection(conn)
            assert conn.closing
            assert await asyncio.wait_for(got, STEP) in (b"", b"ConnectionResetError")

    run(main())
