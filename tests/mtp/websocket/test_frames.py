"""Frame codec (RFC 6455 5.1-5.5, 7.4; R-WS.13, R-WS.14)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.websocket import (
    CloseCode,
    Frame,
    FrameDecoder,
    Opcode,
    Violation,
    WSUsageError,
    apply_mask,
    encode_close_payload,
    encode_frame,
    frame_violations,
    is_valid_close_code,
    parse_close_payload,
)

MASK = b"\x37\xfa\x21\x3d"


def decode_one(data: bytes, **kwargs: int) -> Frame | Violation:
    items = FrameDecoder(**kwargs).feed(data)
    assert len(items) == 1
    return items[0]


def test_rfc_examples() -> None:
    """RFC 6455 5.7 sample frames."""
    assert encode_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert encode_frame(Opcode.TEXT, b"Hello", mask_key=MASK) == bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(Opcode.TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert encode_frame(Opcode.CONTINUATION, b"lo") == bytes.fromhex("80026c6f")
    assert encode_frame(Opcode.PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert encode_frame(Opcode.BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert encode_frame(Opcode.BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")
    frame = decode_one(bytes.fromhex("818537fa213d7f9f4d5158"))
    assert frame == Frame(Opcode.TEXT, b"Hello", masked=True, mask_key=MASK)


@pytest.mark.parametrize(
    ("length", "header"), [(0, 2), (125, 2), (126, 4), (127, 4), (65535, 4), (65536, 10), (70000, 10)]
)
@pytest.mark.parametrize("mask", [None, MASK])
def test_length_boundaries(length: int, header: int, mask: bytes | None) -> None:
    payload = bytes(i % 251 for i in range(length))
    data = encode_frame(Opcode.BINARY, payload, mask_key=mask)
    assert len(data) == header + (4 if mask else 0) + length
    frame = decode_one(data)
    assert isinstance(frame, Frame) and frame.payload == payload and frame.minimal_length
    assert frame.masked == (mask is not None) and frame.mask_key == mask


_lengths = st.sampled_from([0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537]) | st.integers(0, 3000)


@settings(max_examples=60, deadline=None)
@given(
    length=_lengths,
    opcode=st.integers(0, 15),
    fin=st.booleans(),
    rsv=st.integers(0, 7),
    mask=st.none() | st.binary(min_size=4, max_size=4),
    chunk=st.integers(1, 70000),
)
def test_round_trip_any_header(length: int, opcode: int, fin: bool, rsv: int, mask: bytes | None, chunk: int) -> None:
    payload = bytes([length % 256]) * length
    data = encode_frame(opcode, payload, fin=fin, rsv=rsv, mask_key=mask)
    decoder = FrameDecoder()
    items: list[Frame | Violation] = []
    for start in range(0, len(data), chunk):
        items += decoder.feed(data[start : start + chunk])
    assert items == [Frame(opcode, payload, fin, rsv, mask is not None, mask)]
    assert decoder.buffered == 0
    assert items[0].encode() == data  # type: ignore[union-attr]


def test_several_frames_in_one_feed_and_split() -> None:
    data = encode_frame(Opcode.PING, b"a") + encode_frame(Opcode.BINARY, b"bc") + encode_frame(Opcode.PONG)
    decoder = FrameDecoder()
    first = decoder.feed(data[:5])
    assert [f.opcode for f in first] == [Opcode.PING]  # type: ignore[union-attr]
    assert decoder.buffered == 2
    rest = decoder.feed(data[5:])
    assert [f.opcode for f in rest] == [Opcode.BINARY, Opcode.PONG]  # type: ignore[union-attr]


@pytest.mark.parametrize(("length", "size"), [(5, 2), (5, 8), (300, 8)])
def test_non_minimal_lengths_are_flagged(length: int, size: int) -> None:
    frame = decode_one(encode_frame(Opcode.BINARY, bytes(length), length_size=size))
    assert isinstance(frame, Frame) and not frame.minimal_length
    assert [v.rule for v in frame_violations(frame, expect_masked=None)] == ["RFC6455 5.2"]


def test_length_size_that_cannot_fit_is_misuse() -> None:
    with pytest.raises(WSUsageError):
        encode_frame(Opcode.BINARY, bytes(126), length_size=0)
    with pytest.raises(WSUsageError):
        encode_frame(Opcode.BINARY, bytes(65536), length_size=2)
    with pytest.raises(WSUsageError):
        encode_frame(Opcode.BINARY, b"", length_size=3)


@pytest.mark.parametrize("kwargs", [{"opcode": 16}, {"opcode": -1}, {"rsv": 8}, {"mask_key": b"abc"}])
def test_encoder_misuse(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"opcode": Opcode.BINARY}
    args.update(kwargs)
    with pytest.raises(WSUsageError):
        encode_frame(**args)  # type: ignore[arg-type]


def test_top_bit_length_is_fatal() -> None:
    decoder = FrameDecoder()
    data = b"\x82\x7f" + struct.pack("!Q", 1 << 63)
    items = decoder.feed(data)
    assert len(items) == 1 and isinstance(items[0], Violation) and items[0].close_code == 1002
    assert decoder.error is items[0] and decoder.feed(b"\x82\x00") == []


def test_payload_limit_is_fatal_before_buffering() -> None:
    decoder = FrameDecoder(max_payload=100)
    ok = encode_frame(Opcode.BINARY, bytes(100))
    items = decoder.feed(ok + encode_frame(Opcode.BINARY, bytes(101))[:4])
    assert isinstance(items[0], Frame) and isinstance(items[1], Violation) and items[1].close_code == 1009


def test_apply_mask_is_an_involution() -> None:
    assert apply_mask(b"", MASK) == b""
    assert apply_mask(apply_mask(b"Hello world", MASK), MASK) == b"Hello world"
    assert apply_mask(b"Hello", MASK) == bytes.fromhex("7f9f4d5158")


# --- per-frame rules --------------------------------------------------------


def test_mask_direction_rules() -> None:
    """RFC 6455 5.1: clients mask, servers do not."""
    masked = Frame(Opcode.BINARY, b"x", masked=True, mask_key=MASK)
    plain = Frame(Opcode.BINARY, b"x")
    assert frame_violations(masked, expect_masked=True) == []
    assert frame_violations(plain, expect_masked=False) == []
    assert [v.detail for v in frame_violations(plain, expect_masked=True)] == ["client-to-server frame is not masked"]
    assert [v.detail for v in frame_violations(masked, expect_masked=False)] == ["server-to-client frame is masked"]
    assert frame_violations(masked, expect_masked=None) == []


def test_rsv_opcode_and_control_rules() -> None:
    assert frame_violations(Frame(Opcode.BINARY, rsv=0b100), expect_masked=None)[0].rule == "RFC6455 5.2"
    assert frame_violations(Frame(Opcode.BINARY, rsv=0b100), expect_masked=None, allowed_rsv=0b100) == []
    assert "reserved opcode 0x3" in frame_violations(Frame(3), expect_masked=None)[0].detail
    assert "reserved opcode 0xB" in frame_violations(Frame(0xB), expect_masked=None)[0].detail
    too_big = frame_violations(Frame(Opcode.PING, bytes(126)), expect_masked=None)
    assert [v.rule for v in too_big] == ["RFC6455 5.5"]
    assert frame_violations(Frame(Opcode.PING, bytes(125)), expect_masked=None) == []
    fragmented = frame_violations(Frame(Opcode.CLOSE, fin=False), expect_masked=None)
    assert [v.detail for v in fragmented] == ["control frame is fragmented"]
    assert all(v.close_code == 1002 for v in too_big + fragmented)


def test_encoder_breaks_rules_on_purpose() -> None:
    """Oversized/fragmented control frames, RSV bits and reserved opcodes encode fine."""
    for data in (
        encode_frame(Opcode.PING, bytes(200)),
        encode_frame(Opcode.PONG, b"", fin=False),
        encode_frame(Opcode.BINARY, b"x", rsv=0b111),
        encode_frame(0x3, b"x"),
    ):
        frame = decode_one(data)
        assert isinstance(frame, Frame) and frame_violations(frame, expect_masked=False)


# --- close bodies -------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "valid"),
    [(999, False), (1000, True), (1003, True), (1004, False), (1005, False), (1006, False), (1007, True),
     (1011, True), (1014, True), (1015, False), (1016, False), (2999, False), (3000, True), (4999, True),
     (5000, False), (0, False)],
)
def test_close_code_ranges(code: int, valid: bool) -> None:
    """RFC 6455 7.4.1/7.4.2 plus IANA's 1012-1014."""
    assert is_valid_close_code(code) is valid
    info = parse_close_payload(encode_close_payload(code, "bye"))
    assert info.code == code and info.reason == "bye"
    assert (info.problem is None) is valid
    if not valid:
        assert info.problem is not None and info.problem.close_code == 1002


def test_close_payload_forms() -> None:
    assert encode_close_payload(None) == b""
    assert parse_close_payload(b"") == parse_close_payload(encode_close_payload(None))
    assert parse_close_payload(b"").code is None
    one = parse_close_payload(b"\x03")
    assert one.problem is not None and one.problem.close_code == 1002
    assert encode_close_payload(CloseCode.NORMAL, "ok\u00e9") == b"\x03\xe8ok\xc3\xa9"
    bad_utf8 = parse_close_payload(encode_close_payload(1000, b"\xff\xfe"))
    assert bad_utf8.problem is not None and bad_utf8.problem.close_code == 1007
    assert bad_utf8.raw_reason == b"\xff\xfe" and bad_utf8.reason == "\ufffd\ufffd"
    with pytest.raises(WSUsageError):
        encode_close_payload(None, "reason without code")
    with pytest.raises(WSUsageError):
        encode_close_payload(70000)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=130))
def test_random_close_bodies_never_crash(body: bytes) -> None:
    info = parse_close_payload(body)
    assert info.problem is None or info.problem.close_code in (1002, 1007)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8), st.integers(1, 200))
def test_random_bytes_never_crash_decoder(chunks: list[bytes], limit: int) -> None:
    decoder = FrameDecoder(max_payload=limit)
    for chunk in chunks:
        for item in decoder.feed(chunk):
            if isinstance(item, Frame):
                frame_violations(item, expect_masked=True)
                assert len(item.payload) <= limit
