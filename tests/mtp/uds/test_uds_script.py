"""Frame and TLV specs of UDS scenarios (conformance.mtp.uds.script): R-UDS.8 to R-UDS.11."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.uds import TLV, decode_frame, encode_frame, encode_tlv
from conformance.mtp.uds.frames import UDSDecodeError
from conformance.mtp.uds.script import (
    MAX_FILL,
    FrameSpecError,
    frame_bytes,
    frames_bytes,
    tlv_bytes,
    tlvs_bytes,
)


def test_tlv_specs_text_hex_fill_and_length():
    """R-UDS.10/11: one type octet, a 4-octet length (overridable), the value."""
    assert tlv_bytes({"type": 1, "text": "os::x"}) == encode_tlv(1, b"os::x")
    assert tlv_bytes({"type": 200, "hex": "00 ff"}) == encode_tlv(200, b"\x00\xff")
    assert tlv_bytes({"type": 7, "fill": 3}) == encode_tlv(7, b"\x00\x00\x00")
    assert tlv_bytes({"type": 3}) == encode_tlv(3, b"")
    assert tlv_bytes({"type": 3, "hex": "0a", "length": 1000}) == b"\x03\x00\x00\x03\xe8\x0a"
    assert tlv_bytes(b"\x01raw") == b"\x01raw"
    assert tlvs_bytes([{"type": 1, "text": "a"}, b"\x02"]) == encode_tlv(1, b"a") + b"\x02"


def test_frame_specs_tlvs_hex_sync_and_length():
    """R-UDS.6 to R-UDS.9: header (sync, length) + TLVs; sync and length may lie."""
    frame = frame_bytes({"tlvs": [{"type": 1, "text": "proto::c"}]})
    assert frame == encode_frame([TLV(1, b"proto::c")])
    assert decode_frame(frame).handshakes[0].text() == "proto::c"
    assert frame_bytes({}) == b"_USP\x00\x00\x00\x00"
    assert frame_bytes({"sync": "USP_", "tlvs": []}) == b"USP_\x00\x00\x00\x00"
    assert frame_bytes({"tlvs": [], "length": 9}) == b"_USP\x00\x00\x00\x09"
    assert frame_bytes("5f 555350") == b"_USP"
    assert frame_bytes({"hex": "00"}) == b"\x00"
    assert frame_bytes(bytearray(b"ab")) == b"ab"
    assert frames_bytes(["00", {"hex": "01"}]) == (b"\x00", b"\x01")
    assert frames_bytes(()) == ()
    with pytest.raises(UDSDecodeError):
        decode_frame(frame_bytes({"tlvs": [{"type": 3, "hex": "0a00", "length": 1000}]}))


@pytest.mark.parametrize("spec", [
    5, None, [1], {"tlvs": [], "bogus": 1}, {"hex": "00", "tlvs": []}, {"hex": 5}, "zz",
    {"sync": "_US"}, {"sync": "_ÜSP"}, {"sync": 4}, {"length": -1}, {"length": 2 ** 32},
    {"length": True}, {"tlvs": "01"}, {"tlvs": {"type": 1}}, {"tlvs": [5]},
    {"tlvs": [{"type": 256}]}, {"tlvs": [{"type": -1}]}, {"tlvs": [{"type": True}]},
    {"tlvs": [{"text": "x"}]}, {"tlvs": [{"type": 1, "text": "a", "hex": "00"}]},
    {"tlvs": [{"type": 1, "text": 5}]}, {"tlvs": [{"type": 1, "text": "\ud800"}]},
    {"tlvs": [{"type": 1, "fill": MAX_FILL + 1}]}, {"tlvs": [{"type": 1, "fill": -1}]},
    {"tlvs": [{"type": 1, "x": 1}]}, {"tlvs": [{"type": 1, "length": "9"}]},
])
def test_bad_specs_are_frame_spec_errors(spec: Any):
    with pytest.raises(FrameSpecError):
        frame_bytes(spec)


def test_frames_and_tlvs_need_lists():
    for bad in ("00", b"00", {"hex": "00"}, 5):
        with pytest.raises(FrameSpecError):
            frames_bytes(bad)
        with pytest.raises(FrameSpecError):
            tlvs_bytes(bad)


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 2 ** 33), st.text(max_size=12),
                  st.binary(max_size=8), st.sampled_from(["type", "text", "hex", "fill",
                                                          "length", "tlvs", "sync", "00ff"]))
_spec = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["type", "text", "hex", "fill", "length", "tlvs", "sync",
                                     "other"]), inner, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_spec)
def test_any_spec_gives_bytes_or_frame_spec_error(spec: Any):
    """Hostile case data never raises anything but FrameSpecError."""
    for convert in (frame_bytes, frames_bytes, tlv_bytes, tlvs_bytes):
        try:
            out = convert(spec)
        except FrameSpecError:
            continue
        assert isinstance(out, (bytes, tuple))
