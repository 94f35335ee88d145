"""Sans-I/O codec for UNIX Domain Socket MTP frames: a streaming decoder and
encoders (with overrides to build malformed frames on purpose).

Layout and its requirement ids are described in
:mod:`conformance.mtp.uds.frames`.  The decoder checks the sync octets as
soon as they arrive, waits for the whole frame, then splits it into TLVs;
TLV lengths must add up to the header length exactly.  After a
``UDSDecodeError`` the stream cannot be resynchronised (R-UDS.24: send an
Error frame and close), so the decoder refuses further input.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from conformance.mtp.uds.frames import (
    HEADER_SIZE,
    MAX_LENGTH,
    SYNC,
    TLV,
    TLV_HEADER_SIZE,
    TLVType,
    UDSDecodeError,
    UDSFrame,
)

#: Largest frame length (header excluded) accepted by default.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024

_U32 = struct.Struct("!I")
_TLV_HEAD = struct.Struct("!BI")


def encode_tlv(tlv_type: int, value: bytes, *, length: int | None = None) -> bytes:
    """One TLV; ``length`` overrides the length field (to lie on purpose)."""
    if not 0 <= tlv_type <= 0xFF:
        raise ValueError(f"TLV type {tlv_type} does not fit one octet (R-UDS.10)")
    declared = len(value) if length is None else length
    if not 0 <= declared <= MAX_LENGTH:
        raise ValueError(f"TLV length {declared} does not fit 4 octets (R-UDS.11)")
    return _TLV_HEAD.pack(tlv_type, declared) + bytes(value)


def encode_raw_frame(payload: bytes, *, length: int | None = None, sync: bytes = SYNC) -> bytes:
    """Header + arbitrary ``payload``; ``length``/``sync`` override the header."""
    declared = len(payload) if length is None else length
    if not 0 <= declared <= MAX_LENGTH:
        raise ValueError(f"frame length {declared} does not fit 4 octets (R-UDS.9)")
    return bytes(sync) + _U32.pack(declared) + bytes(payload)


def encode_frame(tlvs: UDSFrame | Iterable[TLV], *, length: int | None = None,
                 sync: bytes = SYNC) -> bytes:
    """Serialise a frame from its TLVs (R-UDS.6 to R-UDS.11)."""
    items = tlvs.tlvs if isinstance(tlvs, UDSFrame) else tlvs
    payload = b"".join(encode_tlv(t.type, t.value) for t in items)
    return encode_raw_frame(payload, length=length, sync=sync)


def encode_handshake(endpoint_id: str) -> bytes:
    """Frame with one Handshake TLV carrying ``endpoint_id`` (R-UDS.12/16/17)."""
    return encode_frame([TLV(TLVType.HANDSHAKE, endpoint_id.encode("utf-8"))])


def encode_error(message: str) -> bytes:
    """Frame with one Error TLV carrying ``message`` (R-UDS.13/21/23/24)."""
    return encode_frame([TLV(TLVType.ERROR, message.encode("utf-8"))])


def encode_record(record: bytes) -> bytes:
    """Frame with one USP Record TLV (R-UDS.14/22)."""
    return encode_frame([TLV(TLVType.USP_RECORD, bytes(record))])


def parse_tlvs(payload: bytes, *, offset: int = 0) -> tuple[TLV, ...]:
    """Split a frame payload into TLVs; ``UDSDecodeError`` on any overrun."""
    tlvs: list[TLV] = []
    pos = 0
    while pos < len(payload):
        if len(payload) - pos < TLV_HEADER_SIZE:
            raise UDSDecodeError("truncated TLV header at the end of the frame",
                                 rule="R-UDS.11", offset=offset + HEADER_SIZE + pos)
        tlv_type, size = _TLV_HEAD.unpack_from(payload, pos)
        start = pos + TLV_HEADER_SIZE
        if size > len(payload) - start:
            raise UDSDecodeError(f"TLV length {size} overruns the frame ({len(payload) - start} "
                                 "octets left)", rule="R-UDS.11", offset=offset + HEADER_SIZE + pos)
        tlvs.append(TLV(tlv_type, bytes(payload[start:start + size])))
        pos = start + size
    return tuple(tlvs)


class UDSDecoder:
    """Incremental UDS frame decoder; ``feed`` bytes, get ``UDSFrame``s back."""

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._base = 0
        self._failed: UDSDecodeError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[UDSFrame]:
        """Add ``data``; return every complete frame, in order."""
        if self._failed is not None:
            raise UDSDecodeError(f"decoder failed earlier: {self._failed.reason}",
                                 rule=self._failed.rule)
        self._buf += data
        frames: list[UDSFrame] = []
        try:
            while (frame := self._next()) is not None:
                frames.append(frame)
        except UDSDecodeError as exc:
            exc.events = frames
            self._failed = exc
            raise
        return frames

    def _next(self) -> UDSFrame | None:
        buf = self._buf
        head = bytes(buf[:len(SYNC)])
        if head != SYNC[:len(head)]:
            raise UDSDecodeError(f"bad sync octets {head.hex()} (want {SYNC.hex()})",
                                 rule="R-UDS.8", offset=self._base)
        if len(buf) < HEADER_SIZE:
            return None
        (size,) = _U32.unpack_from(buf, len(SYNC))
        if size > self.max_frame_size:
            raise UDSDecodeError(f"frame length {size} exceeds max_frame_size "
                                 f"{self.max_frame_size}", rule="R-UDS.9", offset=self._base)
        end = HEADER_SIZE + size
        if len(buf) < end:
            return None
        tlvs = parse_tlvs(bytes(buf[HEADER_SIZE:end]), offset=self._base)
        raw = bytes(buf[:end])
        del buf[:end]
        self._base += end
        return UDSFrame(tlvs, raw)


def decode_frame(data: bytes, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> UDSFrame:
    """Decode exactly one complete frame (nothing before or after it)."""
    decoder = UDSDecoder(max_frame_size=max_frame_size)
    frames = decoder.feed(data)
    if decoder.buffered:
        raise UDSDecodeError("incomplete or trailing frame data",
                             offset=len(data) - decoder.buffered)
    if len(frames) != 1:
        raise UDSDecodeError(f"expected one frame, got {len(frames)}")
    return frames[0]
