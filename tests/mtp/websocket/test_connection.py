"""WSConnection state machine (RFC 6455 5-7; R-WS.8, R-WS.13, R-WS.14,
R-WS.14a, R-WS.14b, R-WS.16, R-WS.17)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.websocket import (
    CloseReceived,
    ConnectionClosed,
    ConnectionState,
    Event,
    FrameReceived,
    Message,
    Opcode,
    Ping,
    Pong,
    ProtocolViolation,
    Role,
    WSConnection,
    WSUsageError,
    encode_close_payload,
    encode_frame,
)
from conformance.mtp.websocket.frames import Frame, FrameDecoder

MASK = b"\x01\x02\x03\x04"


def counter_random() -> Callable[[int], bytes]:
    """Deterministic mask source for reproducible client bytes."""
    counter = itertools.count(1)
    return lambda n: bytes((next(counter) + i) % 256 for i in range(n))


def pair(**kwargs: object) -> tuple[WSConnection, WSConnection]:
    client = WSConnection(Role.CLIENT, random_bytes=counter_random(), **kwargs)  # type: ignore[arg-type]
    server = WSConnection("server", **kwargs)  # type: ignore[arg-type]
    return client, server


def violations(events: list[Event]) -> list[ProtocolViolation]:
    return [e for e in events if isinstance(e, ProtocolViolation)]


def sent_frames(data: bytes) -> list[Frame]:
    items = FrameDecoder().feed(data)
    assert all(isinstance(i, Frame) for i in items)
    return items  # type: ignore[return-value]


def from_client(payload: bytes = b"x", opcode: int = Opcode.BINARY, **kwargs: object) -> bytes:
    return encode_frame(opcode, payload, mask_key=MASK, **kwargs)  # type: ignore[arg-type]


# --- messages -----------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"usp-record", bytes(70000), "text \u00e9"])
def test_messages_both_directions(data: bytes | str) -> None:
    client, server = pair()
    events = server.receive_data(client.send_message(data))
    expected = data.encode() if isinstance(data, str) else data
    assert events == [Message(expected, Opcode.TEXT if isinstance(data, str) else Opcode.BINARY, [expected])]
    events = client.receive_data(server.send_message(data))
    assert len(events) == 1 and isinstance(events[0], Message) and events[0].data == expected


def test_client_masks_and_server_does_not() -> None:
    """RFC 6455 5.1 / 5.3."""
    client, server = pair()
    assert all(f.masked for f in sent_frames(client.send_message(b"abc", 1) + client.ping() + client.pong()))
    assert not any(f.masked for f in sent_frames(server.send_message(b"abc", 1) + server.ping() + server.pong()))


def test_fragmentation_reassembly() -> None:
    """R-WS.14b: fragmented Records are reassembled; fragments are kept."""
    client, server = pair()
    data = client.send_message(b"abcdefghij", fragment_size=4)
    frames = sent_frames(data)
    assert [(f.opcode, f.fin) for f in frames] == [(Opcode.BINARY, False), (Opcode.CONTINUATION, False),
                                                   (Opcode.CONTINUATION, True)]
    events = []
    for byte in data:  # one byte at a time
        events += server.receive_data(bytes([byte]))
    assert events == [Message(b"abcdefghij", Opcode.BINARY, [b"abcd", b"efgh", b"ij"])]


def test_text_message_with_utf8_split_across_fragments() -> None:
    client, server = pair()
    events = server.receive_data(client.send_message("\u20ac\u20ac", fragment_size=2))
    assert len(events) == 1 and events[0].text == "\u20ac\u20ac" and events[0].is_text  # type: ignore[union-attr]


def test_control_frames_interleaved_in_fragmented_message() -> None:
    """RFC 6455 5.4: control frames may arrive between fragments."""
    _, server = pair()
    data = (from_client(b"ab", fin=False) + from_client(b"p", Opcode.PING) + from_client(b"cd", Opcode.CONTINUATION,
            fin=False) + from_client(b"q", Opcode.PONG) + from_client(b"ef", Opcode.CONTINUATION))
    events = server.receive_data(data)
    assert events == [Ping(b"p"), Pong(b"q", False), Message(b"abcdef", Opcode.BINARY, [b"ab", b"cd", b"ef"])]
    assert [(f.opcode, f.payload) for f in sent_frames(server.data_to_send())] == [(Opcode.PONG, b"p")]


def test_emit_frames() -> None:
    client, server = pair(emit_frames=True)
    events = server.receive_data(client.send_message(b"ab", 1))
    assert [type(e) for e in events] == [FrameReceived, FrameReceived, Message]


# --- ping / pong (R-WS.17) ----------------------------------------------------


def test_auto_pong_and_solicited_tracking() -> None:
    client, server = pair()
    assert server.receive_data(client.ping(b"k1")) == [Ping(b"k1")]
    pong = server.data_to_send()
    assert client.outstanding_pings == [b"k1"]
    assert client.receive_data(pong) == [Pong(b"k1", True)]
    assert client.outstanding_pings == []
    assert client.receive_data(server.pong(b"unasked")) == [Pong(b"unasked", False)]


def test_pong_for_latest_ping_clears_older_ones() -> None:
    client, server = pair()
    client.ping(b"1")
    client.ping(b"2")
    client.ping(b"3")
    assert client.receive_data(server.pong(b"2")) == [Pong(b"2", True)]
    assert client.outstanding_pings == [b"3"]


def test_withheld_pong() -> None:
    """auto_pong=False lets a test withhold the keep-alive answer."""
    client, server = pair(auto_pong=False)
    assert server.receive_data(client.ping(b"hb")) == [Ping(b"hb")]
    assert server.data_to_send() == b""
    assert client.outstanding_pings == [b"hb"]
    assert client.receive_data(server.pong(b"hb")) == [Pong(b"hb", True)]  # answered by hand


def test_control_payload_limits_are_misuse() -> None:
    client, _ = pair()
    with pytest.raises(WSUsageError):
        client.ping(bytes(126))
    with pytest.raises(WSUsageError):
        client.pong(bytes(126))


# --- closing handshake (R-WS.8) ------------------------------------------------


def test_close_handshake_initiated_by_client() -> None:
    client, server = pair()
    close = client.close(1000, "done")
    assert client.state is ConnectionState.CLOSE_SENT and client.close_sent == (1000, "done")
    assert server.receive_data(close) == [CloseReceived(1000, "done")]
    assert server.state is ConnectionState.CLOSED
    echo = server.data_to_send()
    assert client.receive_data(echo) == [CloseReceived(1000, "")]
    assert client.state is ConnectionState.CLOSED
    assert client.receive_eof() == [ConnectionClosed(True)] and client.receive_eof() == []
    with pytest.raises(WSUsageError):
        client.receive_data(b"")


def test_close_without_code_is_echoed_empty() -> None:
    client, server = pair()
    assert server.receive_data(client.close(None)) == [CloseReceived(None, "")]
    frames = sent_frames(server.data_to_send())
    assert frames[0].opcode == Opcode.CLOSE and frames[0].payload == b""


def test_manual_close_reply_and_data_while_closing() -> None:
    client, server = pair(auto_close_reply=False)
    assert server.receive_data(client.close(1001)) == [CloseReceived(1001, "")]
    assert server.state is ConnectionState.CLOSE_RECEIVED and server.data_to_send() == b""
    last = server.send_message(b"last words")  # allowed before our Close
    reply = server.close(1001)
    assert server.state is ConnectionState.CLOSED
    events = client.receive_data(last + reply)
    assert events == [Message(b"last words", Opcode.BINARY, [b"last words"]), CloseReceived(1001, "")]


def test_peer_keeps_sending_until_it_sees_our_close() -> None:
    client, server = pair()
    client.close()
    events = client.receive_data(server.send_message(b"in flight") + server.ping(b"p"))
    assert [type(e) for e in events] == [Message, Ping]
    assert sent_frames(client.data_to_send())[0].opcode == Opcode.PONG  # RFC 6455 5.5.2


def test_frames_after_peer_close_are_reported() -> None:
    client, server = pair()
    data = server.close() + encode_frame(Opcode.BINARY, b"late") + encode_frame(Opcode.BINARY, b"later")
    events = client.receive_data(data)
    assert events[0] == CloseReceived(1000, "")
    assert events[1:] == [ProtocolViolation("RFC6455 5.5.1", "frame received after the peer's Close", None, False)]


def test_unclean_eof() -> None:
    client, _ = pair()
    assert client.receive_eof() == [ConnectionClosed(False)]
    assert client.state is ConnectionState.CLOSED


def test_sending_misuse_after_close() -> None:
    client, server = pair()
    close = client.close()
    with pytest.raises(WSUsageError):
        client.send_message(b"x")
    with pytest.raises(WSUsageError):
        client.close()
    server.receive_data(close)  # auto reply: server is CLOSED
    with pytest.raises(WSUsageError):
        server.ping()
    with pytest.raises(WSUsageError):
        server.send_message(b"x")


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.close(1005),
        lambda c: c.close(None, "why"),
        lambda c: c.close(1000, "x" * 124),
        lambda c: c.send_message(b"x", fragment_size=0),
        lambda c: c.send_message(b"x", opcode=Opcode.PING),
    ],
)
def test_api_misuse_raises_usage_error(call: object) -> None:
    client, _ = pair()
    with pytest.raises(WSUsageError):
        call(client)  # type: ignore[operator]


def test_unknown_role_is_misuse() -> None:
    with pytest.raises(WSUsageError):
        WSConnection("proxy")


def test_send_frame_breaks_rules_on_purpose() -> None:
    """Raw frames: unmasked from a client, masked from a server, RSV bits."""
    client, server = pair()
    assert not sent_frames(client.send_frame(Opcode.BINARY, b"x", masked=False))[0].masked
    assert sent_frames(server.send_frame(Opcode.BINARY, b"x", masked=True))[0].masked
    assert sent_frames(server.send_frame(Opcode.BINARY, b"x", mask_key=MASK))[0].mask_key == MASK
    frame = sent_frames(server.send_frame(Opcode.PING, bytes(200), fin=False, rsv=0b001, length_size=8))[0]
    assert (frame.fin, frame.rsv, len(frame.payload), frame.minimal_length) == (False, 1, 200, False)
    events = client.receive_data(server.send_frame(Opcode.BINARY, b"x", rsv=0b100))
    assert [(v.rule, v.close_code) for v in violations(events)] == [("RFC6455 5.2", 1002)]


def test_send_frame_close_moves_state() -> None:
    client, server = pair()
    server.receive_data(client.send_message(b"x"))
    raw = server.send_frame(Opcode.CLOSE, encode_close_payload(4000, "app"))
    assert server.state is ConnectionState.CLOSE_SENT
    events = client.receive_data(raw)
    assert events == [CloseReceived(4000, "app")]
    assert server.receive_data(client.data_to_send()) == [CloseReceived(4000, "")]
    assert server.state is ConnectionState.CLOSED


# --- violations --------------------------------------------------------------


def _closing_code(conn: WSConnection) -> int | None:
    frames = sent_frames(conn.data_to_send())
    assert len(frames) == 1 and frames[0].opcode == Opcode.CLOSE
    return int.from_bytes(frames[0].payload[:2], "big")


@pytest.mark.parametrize(
    ("role", "data", "code", "rule"),
    [
        ("server", encode_frame(Opcode.BINARY, b"x"), 1002, "RFC6455 5.1"),  # unmasked client frame
        ("client", encode_frame(Opcode.BINARY, b"x", mask_key=MASK), 1002, "RFC6455 5.1"),  # masked server frame
        ("client", encode_frame(Opcode.BINARY, b"x", rsv=0b010), 1002, "RFC6455 5.2"),
        ("client", encode_frame(0x7, b"x"), 1002, "RFC6455 5.2"),
        ("client", encode_frame(Opcode.PING, bytes(126)), 1002, "RFC6455 5.5"),
        ("client", encode_frame(Opcode.PING, b"", fin=False), 1002, "RFC6455 5.5"),
        ("client", encode_frame(Opcode.CONTINUATION, b"x"), 1002, "RFC6455 5.4"),
        ("client", encode_frame(Opcode.BINARY, b"a", fin=False) + encode_frame(Opcode.TEXT, b"b"), 1002,
         "RFC6455 5.4"),
        ("client", encode_frame(Opcode.TEXT, b"\xff"), 1007, "RFC6455 8.1"),
        ("client", encode_frame(Opcode.TEXT, b"\xe2\x82", fin=False) + encode_frame(Opcode.CONTINUATION, b""),
         1007, "RFC6455 8.1"),
        ("client", encode_frame(Opcode.CLOSE, encode_close_payload(1005)), 1002, "RFC6455 7.4"),
        ("client", encode_frame(Opcode.CLOSE, b"\x03"), 1002, "RFC6455 5.5.1"),
        ("client", encode_frame(Opcode.CLOSE, encode_close_payload(1000, b"\xc3")), 1007, "RFC6455 5.5.1"),
        ("client", encode_frame(Opcode.BINARY, bytes(5), length_size=8), 1002, "RFC6455 5.2"),
        ("client", b"\x82\x7f\x80" + bytes(7), 1002, "RFC6455 5.2"),
    ],
)
def test_violations_fail_with_close_code(role: str, data: bytes, code: int, rule: str) -> None:
    conn = WSConnection(role, random_bytes=counter_random())
    events = conn.receive_data(data + encode_frame(Opcode.BINARY, b"ignored", mask_key=MASK if role == "server"
                                                   else None))
    found = violations(events)
    assert len(found) == 1 and found[0].rule == rule and found[0].close_code == code and found[0].fatal
    assert not any(isinstance(e, Message) and e.data == b"ignored" for e in events)
    assert conn.failure == found[0] and conn.state is ConnectionState.CLOSED
    assert _closing_code(conn) == code
    assert conn.receive_data(from_client()) == []


def test_message_too_big() -> None:
    conn = WSConnection("client", max_message_size=10)
    events = conn.receive_data(encode_frame(Opcode.BINARY, bytes(6), fin=False) +
                               encode_frame(Opcode.CONTINUATION, bytes(6)))
    assert [v.close_code for v in violations(events)] == [1009]
    assert _closing_code(conn) == 1009
    big_frame = WSConnection("client", max_frame_payload=10)
    assert [v.close_code for v in violations(big_frame.receive_data(encode_frame(Opcode.BINARY, bytes(11))))] == [1009]


def test_binary_only_closes_text_with_1003() -> None:
    """R-WS.14 / R-WS.16: a Record in a text frame ends with close code 1003."""
    conn = WSConnection("client", binary_only=True)
    events = conn.receive_data(encode_frame(Opcode.TEXT, b"not a record"))
    assert isinstance(events[0], Message)
    assert [(v.rule, v.close_code) for v in violations(events)] == [("R-WS.14", 1003)]
    assert _closing_code(conn) == 1003


def test_report_only_mode_keeps_decoding() -> None:
    """close_on_violation=False reports breaks and still delivers traffic."""
    conn = WSConnection("server", close_on_violation=False)
    data = (encode_frame(Opcode.BINARY, b"unmasked") + from_client(b"\xff", Opcode.TEXT) +
            from_client(b"a", fin=False) + from_client(b"b") + from_client(bytes(126), Opcode.PING) +
            from_client(b"x", Opcode.CONTINUATION) + from_client(b"", 0x3) +
            from_client(encode_close_payload(999), Opcode.CLOSE))
    events = conn.receive_data(data)
    assert [e.rule for e in violations(events)] == ["RFC6455 5.1", "RFC6455 8.1", "RFC6455 5.4", "RFC6455 5.5",
                                                    "RFC6455 5.4", "RFC6455 5.2", "RFC6455 7.4"]
    assert not any(v.fatal for v in violations(events))
    messages = [e for e in events if isinstance(e, Message)]
    assert [m.data for m in messages] == [b"unmasked", b"\xff", b"b"]
    assert Ping(bytes(126)) in events and CloseReceived(999, "") in events
    assert conn.failure is None
    # Oversized pings are not echoed; the bad close is answered with 1002.
    assert [f.opcode for f in sent_frames(conn.data_to_send())] == [Opcode.CLOSE]


def test_report_only_mode_still_stops_on_unframeable_bytes() -> None:
    conn = WSConnection("client", close_on_violation=False)
    events = conn.receive_data(b"\x82\x7f\xff" + bytes(7))
    assert violations(events)[0].fatal and conn.data_to_send() == b""
    assert conn.state is ConnectionState.OPEN  # the test decides how to close


# --- hostile bytes ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=6), st.sampled_from(["client", "server"]), st.booleans())
def test_random_bytes_never_crash(chunks: list[bytes], role: str, strict: bool) -> None:
    conn = WSConnection(role, close_on_violation=strict, max_message_size=256, random_bytes=counter_random())
    for chunk in chunks:
        conn.receive_data(chunk)
        conn.data_to_send()
    conn.receive_eof()


_frame_parts = st.tuples(
    st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11]), st.binary(max_size=130), st.booleans(), st.integers(0, 7),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_frame_parts, max_size=8), st.sampled_from(["client", "server"]), st.booleans())
def test_random_frame_sequences_never_crash(parts: list[tuple[int, bytes, bool, int, bool]], role: str,
                                            strict: bool) -> None:
    conn = WSConnection(role, close_on_violation=strict, random_bytes=counter_random())
    data = b"".join(encode_frame(op, body, fin=fin, rsv=rsv, mask_key=MASK if masked else None)
                    for op, body, fin, rsv, masked in parts)
    events = conn.receive_data(data)
    if strict:
        assert sum(1 for v in violations(events) if v.fatal) <= 1
