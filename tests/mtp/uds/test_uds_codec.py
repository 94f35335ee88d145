"""UDS MTP framing: header, TLVs, streaming decoder, encoders (R-UDS.6 to R-UDS.15, R-UDS.24)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.uds import (
    HEADER_SIZE,
    SYNC,
    TLV,
    TLV_HEADER_SIZE,
    TLVType,
    UDSDecodeError,
    UDSDecoder,
    UDSFrame,
    decode_frame,
    encode_error,
    encode_frame,
    encode_handshake,
    encode_raw_frame,
    encode_record,
    encode_tlv,
    parse_tlvs,
)

EID = "os::00256D-0123456789"


def test_layout_constants():
    assert SYNC == bytes([0x5F, 0x55, 0x53, 0x50]) == b"_USP"  # R-UDS.8
    assert (HEADER_SIZE, TLV_HEADER_SIZE) == (8, 5)
    assert (TLVType.HANDSHAKE, TLVType.ERROR, TLVType.USP_RECORD) == (1, 2, 3)


def test_handshake_frame_bytes_match_the_chapter_example():
    """R-UDS.7/8/9/10/11/12: sync, big-endian frame length, type 1, big-endian TLV length."""
    wire = encode_handshake(EID)
    eid = EID.encode()
    assert wire == b"_USP" + struct.pack("!I", 5 + len(eid)) + b"\x01" + struct.pack("!I", len(eid)) + eid
    assert wire.hex()[:26] == "5f555350" "0000001a" "01" "00000015"


def test_error_and_record_frames():
    assert decode_frame(encode_error("bad")).tlvs == (TLV(2, b"bad"),)  # R-UDS.13
    rec = b"\x00\x01\x02" * 100
    frame = decode_frame(encode_record(rec))  # R-UDS.14
    assert frame.records == [TLV(TLVType.USP_RECORD, rec)] and frame.handshakes == []


def test_multi_tlv_frame_and_accessors():
    tlvs = [TLV(1, EID.encode()), TLV(9, b"??"), TLV(3, b"rec"), TLV(2, b"e"), TLV(3, b"")]
    frame = decode_frame(encode_frame(tlvs))
    assert frame.tlvs == tuple(tlvs)
    assert [t.value for t in frame.records] == [b"rec", b""]
    assert frame.errors == [TLV(2, b"e")] and frame.handshakes[0].text() == EID
    assert frame.unknown == [TLV(9, b"??")]  # kept, receivers ignore them (R-UDS.15)
    assert frame.of_type(9) == frame.unknown
    assert encode_frame(frame) == frame.raw


def test_empty_frame_decodes_without_tlvs():
    assert decode_frame(b"_USP\x00\x00\x00\x00") == UDSFrame(())


def test_streaming_partial_and_several_frames_per_chunk():
    wire = encode_handshake(EID) + encode_record(b"r" * 40) + encode_error("x")
    for chunk in (1, 3, 8, 13, len(wire)):
        dec = UDSDecoder()
        frames = []
        for i in range(0, len(wire), chunk):
            frames += dec.feed(wire[i:i + chunk])
        assert [f.tlvs[0].type for f in frames] == [1, 3, 2]
        assert dec.buffered == 0
        assert b"".join(f.raw for f in frames) == wire


@pytest.mark.parametrize("wire, rule", [
    (b"_USX", "R-UDS.8"),
    (b"X", "R-UDS.8"),
    (b"\x00\x00\x00\x00\x00\x00\x00\x00", "R-UDS.8"),
    (encode_raw_frame(b"\x03\x00\x00"), "R-UDS.11"),  # truncated TLV header
    (encode_raw_frame(encode_tlv(3, b"abc", length=4)), "R-UDS.11"),  # TLV overruns frame
    (encode_raw_frame(encode_tlv(3, b"abc") + b"\x01"), "R-UDS.11"),  # trailing octet
])
def test_decode_errors_carry_the_rule(wire: bytes, rule: str):
    with pytest.raises(UDSDecodeError) as info:
        UDSDecoder().feed(wire)
    assert info.value.rule == rule and isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"[{rule}]")


def test_bad_sync_detected_before_header_is_complete():
    dec = UDSDecoder()
    assert dec.feed(b"_U") == []
    with pytest.raises(UDSDecodeError, match="bad sync"):
        dec.feed(b"x")


def test_oversized_length_rejected_early():
    with pytest.raises(UDSDecodeError) as info:
        UDSDecoder(max_frame_size=100).feed(b"_USP" + struct.pack("!I", 101))
    assert info.value.rule == "R-UDS.9"


def test_header_length_longer_than_data_waits():
    dec = UDSDecoder()
    assert dec.feed(encode_frame([TLV(3, b"abc")], length=20)) == []
    assert dec.buffered == 16


def test_error_keeps_earlier_frames_offset_and_poisons_decoder():
    good = encode_handshake(EID)
    dec = UDSDecoder()
    with pytest.raises(UDSDecodeError) as info:
        dec.feed(good + b"JUNKJUNK")
    assert [f.tlvs for f in info.value.events] == [(TLV(1, EID.encode()),)]
    assert info.value.offset == len(good)
    with pytest.raises(UDSDecodeError, match="failed earlier"):
        dec.feed(good)


def test_decode_frame_requires_exactly_one_frame():
    one = encode_record(b"x")
    with pytest.raises(UDSDecodeError, match="incomplete"):
        decode_frame(one[:-1])
    with pytest.raises(UDSDecodeError, match="incomplete or trailing"):
        decode_frame(one + b"_U")
    with pytest.raises(UDSDecodeError, match="expected one frame, got 2"):
        decode_frame(one + one)


def test_encoder_overrides_and_limits():
    assert encode_frame([TLV(3, b"ab")], sync=b"XXXX")[:4] == b"XXXX"
    assert encode_frame([TLV(3, b"ab")], length=0)[4:8] == b"\x00\x00\x00\x00"
    assert encode_tlv(200, b"", length=7) == b"\xc8\x00\x00\x00\x07"
    with pytest.raises(ValueError, match="R-UDS.10"):
        encode_tlv(256, b"")
    with pytest.raises(ValueError, match="R-UDS.11"):
        encode_tlv(1, b"", length=2**32)
    with pytest.raises(ValueError, match="R-UDS.9"):
        encode_raw_frame(b"", length=-1)


def test_parse_tlvs_directly():
    assert parse_tlvs(b"") == ()
    assert parse_tlvs(encode_tlv(1, b"a") + encode_tlv(7, b"")) == (TLV(1, b"a"), TLV(7, b""))
    with pytest.raises(UDSDecodeError):
        parse_tlvs(b"\x01\x00")


# --- property tests -------------------------------------------------------------------

@given(st.binary(max_size=200), st.integers(1, 16))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_crash(data: bytes, chunk: int):
    dec = UDSDecoder(max_frame_size=1024)
    try:
        for i in range(0, len(data), chunk):
            assert all(isinstance(f, UDSFrame) for f in dec.feed(data[i:i + chunk]))
    except UDSDecodeError:
        pass


@given(st.binary(max_size=120))
@settings(max_examples=300, deadline=None)
def test_random_payload_after_valid_header_never_crashes(payload: bytes):
    try:
        frame = decode_frame(encode_raw_frame(payload))
    except UDSDecodeError as exc:
        assert exc.rule == "R-UDS.11"
    else:
        assert encode_frame(frame) == frame.raw


_tlvs = st.lists(st.builds(TLV, st.integers(0, 255), st.binary(max_size=40)), max_size=5)


@given(st.lists(_tlvs, min_size=1, max_size=4), st.integers(1, 30))
@settings(max_examples=300, deadline=None)
def test_round_trip(frames: list[list[TLV]], chunk: int):
    wire = b"".join(encode_frame(f) for f in frames)
    dec = UDSDecoder()
    got: list[UDSFrame] = []
    for i in range(0, len(wire), chunk):
        got += dec.feed(wire[i:i + chunk])
    assert [list(f.tlvs) for f in got] == frames
    assert b"".join(f.raw or b"" for f in got) == wire


@given(st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_handshake_and_error_text_round_trip(text: str):
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    assert decode_frame(encode_handshake(text)).handshakes[0].text() == text
    assert decode_frame(encode_error(text)).errors[0].text() == text
