"""Frames and TLVs that a case file describes, turned into bytes for the suite's UDS endpoint.

Scenario fields of :class:`~conformance.mtp.uds.peer.UDSScenario` that carry
wire data (a malformed Handshake, frames sent before a Record, TLVs put in
front of the Record TLV) are set from YAML, which has no bytes. They take:

* a **frame spec**: bytes; a string of hex digits (spaces allowed); or a
  mapping ``{hex: "..."}`` (raw bytes) or ``{tlvs: [tlv spec, ...],
  sync: "_USP", length: n}`` where ``sync`` (4 ASCII characters, default
  ``_USP``, R-UDS.8) and ``length`` (the header's declared length, R-UDS.9)
  may lie on purpose;
* a **TLV spec**: bytes (an encoded TLV) or ``{type: 0..255, text: "..." |
  hex: "..." | fill: n, length: n}``: the value as UTF-8 text, as hex, or
  ``n`` zero octets (a big TLV); ``length`` overrides the declared length
  (R-UDS.11).

Anything else is a :class:`FrameSpecError` naming what is wrong; nothing
here raises another exception, whatever the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conformance.mtp.uds.codec import encode_raw_frame, encode_tlv
from conformance.mtp.uds.frames import MAX_LENGTH, SYNC

__all__ = ["MAX_FILL", "FrameSpecError", "frame_bytes", "frames_bytes", "tlv_bytes", "tlvs_bytes"]

#: Largest ``fill`` accepted (a TLV of zero octets), to keep scenarios in memory.
MAX_FILL = 16 * 1024 * 1024
_TLV_KEYS = frozenset({"type", "text", "hex", "fill", "length"})
_FRAME_KEYS = frozenset({"hex", "tlvs", "sync", "length"})


class FrameSpecError(ValueError):
    """A frame or TLV spec that cannot be turned into bytes."""


def frame_bytes(spec: Any) -> bytes:
    """The bytes of one frame spec (see the module docstring)."""
    if isinstance(spec, (bytes, bytearray)):
        return bytes(spec)
    if isinstance(spec, str):
        return _hex(spec, "frame")
    if not isinstance(spec, Mapping):
        raise FrameSpecError(f"a frame is hex text or a mapping with hex or tlvs, not "
                             f"{type(spec).__name__}")
    _check_keys(spec, _FRAME_KEYS, "frame")
    if "hex" in spec:
        if len(spec) != 1:
            raise FrameSpecError("a frame given as hex takes no other key")
        return _hex(spec["hex"], "frame hex")
    tlvs = spec.get("tlvs", [])
    payload = tlvs_bytes(tlvs)
    sync = spec.get("sync", SYNC.decode("ascii"))
    if not isinstance(sync, str) or not sync.isascii() or len(sync) != len(SYNC):
        raise FrameSpecError(f"sync must be {len(SYNC)} ASCII characters, not {sync!r}")
    length = _optional_length(spec.get("length"), "frame length")
    return encode_raw_frame(payload, length=length, sync=sync.encode("ascii"))


def frames_bytes(specs: Any) -> tuple[bytes, ...]:
    """Several frame specs (a list) as a tuple of bytes."""
    return tuple(frame_bytes(s) for s in _sequence(specs, "frames"))


def tlv_bytes(spec: Any) -> bytes:
    """The bytes of one TLV spec (see the module docstring)."""
    if isinstance(spec, (bytes, bytearray)):
        return bytes(spec)
    if not isinstance(spec, Mapping):
        raise FrameSpecError(f"a TLV is a mapping with type and text, hex or fill, not "
                             f"{type(spec).__name__}")
    _check_keys(spec, _TLV_KEYS, "TLV")
    tlv_type = spec.get("type")
    if isinstance(tlv_type, bool) or not isinstance(tlv_type, int) or not 0 <= tlv_type <= 0xFF:
        raise FrameSpecError(f"TLV type must be an integer 0..255 (one octet, R-UDS.10), "
                             f"not {tlv_type!r}")
    given = [k for k in ("text", "hex", "fill") if k in spec]
    if len(given) > 1:
        raise FrameSpecError(f"a TLV value is one of text, hex or fill, not {' and '.join(given)}")
    value = b""
    if "text" in spec:
        if not isinstance(spec["text"], str):
            raise FrameSpecError(f"TLV text must be a string, not {type(spec['text']).__name__}")
        try:
            value = spec["text"].encode("utf-8")
        except UnicodeEncodeError as exc:
            raise FrameSpecError(f"TLV text is not encodable as UTF-8: {exc.reason}") from None
    elif "hex" in spec:
        value = _hex(spec["hex"], "TLV hex")
    elif "fill" in spec:
        fill = spec["fill"]
        if isinstance(fill, bool) or not isinstance(fill, int) or not 0 <= fill <= MAX_FILL:
            raise FrameSpecError(f"TLV fill must be an integer 0..{MAX_FILL}, not {fill!r}")
        value = bytes(fill)
    length = _optional_length(spec.get("length"), "TLV length")
    return encode_tlv(tlv_type, value, length=length)


def tlvs_bytes(specs: Any) -> bytes:
    """Several TLV specs (a list) as one run of bytes."""
    return b"".join(tlv_bytes(s) for s in _sequence(specs, "tlvs"))


def _sequence(specs: Any, what: str) -> Sequence[Any]:
    if isinstance(specs, (str, bytes, bytearray, Mapping)) or not isinstance(specs, Sequence):
        raise FrameSpecError(f"{what} must be a list, not {type(specs).__name__}")
    return specs


def _check_keys(spec: Mapping[Any, Any], allowed: frozenset[str], what: str) -> None:
    unknown = [str(k) for k in spec if k not in allowed]
    if unknown:
        raise FrameSpecError(f"unknown {what} key(s) {', '.join(sorted(unknown))}; allowed: "
                             f"{', '.join(sorted(allowed))}")


def _hex(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise FrameSpecError(f"{what} must be a string of hex digits, not {type(text).__name__}")
    try:
        return bytes.fromhex("".join(text.split()))
    except ValueError:
        raise FrameSpecError(f"{what} is not hex: {text[:40]!r}") from None


def _optional_length(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LENGTH:
        raise FrameSpecError(f"{what} must be an integer 0..{MAX_LENGTH} (4 octets), "
                             f"not {value!r}")
    return value
