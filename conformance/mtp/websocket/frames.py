"""WebSocket frame codec (RFC 6455 5, 7.4) with a rule-breaking encoder.

:func:`encode_frame` writes any header the 16-bit layout can express
(reserved opcodes, RSV bits, masks in either role, fragmented or oversized
control frames, non-minimal lengths) so tests can send malformed traffic on
purpose; it only refuses arguments that cannot be encoded at all.
:class:`FrameDecoder` splits a byte stream into :class:`Frame` objects and
stops with a :class:`~.errors.Violation` on bytes it cannot frame.
:func:`frame_violations` checks a decoded frame against the per-frame rules
for a given role.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .errors import Violation, WSUsageError

__all__ = [
    "DEFAULT_MAX_FRAME_PAYLOAD",
    "MAX_CONTROL_PAYLOAD",
    "CloseCode",
    "CloseInfo",
    "Frame",
    "FrameDecoder",
    "Opcode",
    "apply_mask",
    "encode_close_payload",
    "encode_frame",
    "frame_violations",
    "is_valid_close_code",
    "parse_close_payload",
]

MAX_CONTROL_PAYLOAD = 125
DEFAULT_MAX_FRAME_PAYLOAD = 64 * 1024 * 1024


class Opcode(IntEnum):
    """Frame opcodes defined by RFC 6455 5.2 (others are reserved)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_KNOWN_OPCODES = frozenset(int(op) for op in Opcode)


class CloseCode(IntEnum):
    """Status codes from RFC 6455 7.4.1 plus IANA's 1012-1014."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # local only: never on the wire
    ABNORMAL = 1006  # local only: never on the wire
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # local only: never on the wire


_WIRE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def is_valid_close_code(code: int) -> bool:
    """True when ``code`` may appear in a Close frame (RFC 6455 7.4).

    Accepted: the defined codes except the local-only 1005/1006/1015 and the
    reserved 1004, and the 3000-4999 ranges for libraries and applications.
    """
    return code in _WIRE_CODES or 3000 <= code <= 4999


@dataclass(frozen=True)
class Frame:
    """One decoded (or to-be-encoded) frame; ``payload`` is unmasked.

    ``rsv`` is the 3-bit field (RSV1 is 0b100). ``minimal_length`` is False
    when the sender used a longer length form than needed (RFC 6455 5.2).
    """

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    masked: bool = False
    mask_key: bytes | None = None
    minimal_length: bool = True

    @property
    def is_control(self) -> bool:
        return bool(self.opcode & 0x8)

    def encode(self) -> bytes:
        """Re-encode this frame with its own mask key and flags."""
        return encode_frame(self.opcode, self.payload, fin=self.fin, rsv=self.rsv, mask_key=self.mask_key)


def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the repeating 4-byte ``key`` (RFC 6455 5.3)."""
    if not data:
        return b""
    length = len(data)
    pad = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")).to_bytes(length, "big")


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask_key: bytes | None = None,
    length_size: int | None = None,
) -> bytes:
    """Encode one frame; rules of RFC 6455 are *not* enforced here.

    ``mask_key`` (4 bytes) sets the MASK bit and masks the payload.
    ``length_size`` forces the length form: 0 (7-bit), 2 (16-bit) or 8
    (64-bit); None picks the minimal one. Raises :class:`WSUsageError` only
    for values that do not fit the header at all.
    """
    if not 0 <= opcode <= 0xF:
        raise WSUsageError(f"opcode {opcode} does not fit in 4 bits")
    if not 0 <= rsv <= 0x7:
        raise WSUsageError(f"rsv {rsv} does not fit in 3 bits")
    if mask_key is not None and len(mask_key) != 4:
        raise WSUsageError("mask key must be 4 bytes")
    length = len(payload)
    if length_size is None:
        length_size = 0 if length <= 125 else 2 if length <= 0xFFFF else 8
    if length_size == 0 and length <= 125:
        ext = b""
        len7 = length
    elif length_size == 2 and length <= 0xFFFF:
        ext = struct.pack("!H", length)
        len7 = 126
    elif length_size == 8 and length < 1 << 63:
        ext = struct.pack("!Q", length)
        len7 = 127
    else:
        raise WSUsageError(f"payload of {length} bytes cannot use a {length_size}-byte length form")
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    second = len7 | (0x80 if mask_key is not None else 0)
    if mask_key is None:
        return bytes((first, second)) + ext + bytes(payload)
    return bytes((first, second)) + ext + mask_key + apply_mask(bytes(payload), mask_key)


def encode_close_payload(code: int | None = 1000, reason: str | bytes = b"") -> bytes:
    """Close body: 2-byte code plus reason (RFC 6455 5.5.1).

    Any 16-bit code is encoded (even invalid ones, for negative tests);
    ``reason`` bytes are sent raw (possibly invalid UTF-8). None as code
    gives an empty body.
    """
    raw = reason.encode("utf-8") if isinstance(reason, str) else bytes(reason)
    if code is None:
        if raw:
            raise WSUsageError("a close reason needs a status code")
        return b""
    if not 0 <= code <= 0xFFFF:
        raise WSUsageError(f"close code {code} does not fit in 16 bits")
    return struct.pack("!H", code) + raw


@dataclass(frozen=True)
class CloseInfo:
    """A parsed Close body; ``problem`` is set when it breaks RFC 6455."""

    code: int | None
    reason: str
    raw_reason: bytes = b""
    problem: Violation | None = None


def parse_close_payload(payload: bytes) -> CloseInfo:
    """Decode a Close body; never raises. ``code`` None means no code."""
    if not payload:
        return CloseInfo(None, "")
    if len(payload) == 1:
        return CloseInfo(None, "", payload, Violation("RFC6455 5.5.1", "close body of one byte", close_code=1002))
    (code,) = struct.unpack("!H", payload[:2])
    raw = bytes(payload[2:])
    reason = raw.decode("utf-8", errors="replace")
    problem: Violation | None = None
    if not is_valid_close_code(code):
        problem = Violation("RFC6455 7.4", f"close code {code} is not allowed on the wire", close_code=1002)
    else:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            problem = Violation("RFC6455 5.5.1", "close reason is not valid UTF-8", close_code=1007)
    return CloseInfo(code, reason, raw, problem)


class FrameDecoder:
    """Incremental frame splitter: ``feed`` bytes, get frames.

    Framing failures (a 64-bit length with its top bit set, or a payload
    over ``max_payload``) end decoding: ``feed`` returns the Violation as
    its last item, sets ``error`` and ignores later input.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_FRAME_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.error: Violation | None = None
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | Violation]:
        if self.error is not None:
            return []
        self._buf += data
        out: list[Frame | Violation] = []
        pos = 0
        buf = self._buf
        while True:
            item, used = self._parse_at(buf, pos)
            if item is None:
                break
            out.append(item)
            if isinstance(item, Violation):
                self.error = item
                self._buf = bytearray()
                return out
            pos += used
        del buf[:pos]
        return out

    def _parse_at(self, buf: bytearray, pos: int) -> tuple[Frame | Violation | None, int]:
        avail = len(buf) - pos
        if avail < 2:
            return None, 0
        b0, b1 = buf[pos], buf[pos + 1]
        masked = bool(b1 & 0x80)
        len7 = b1 & 0x7F
        header = 2
        minimal = True
        if len7 == 126:
            if avail < 4:
                return None, 0
            (length,) = struct.unpack_from("!H", buf, pos + 2)
            header, minimal = 4, length > 125
        elif len7 == 127:
            if avail < 10:
                return None, 0
            (length,) = struct.unpack_from("!Q", buf, pos + 2)
            if length >> 63:
                return Violation("RFC6455 5.2", "64-bit payload length has its top bit set", close_code=1002), 0
            header, minimal = 10, length > 0xFFFF
        else:
            length = len7
        if length > self.max_payload:
            return Violation("RFC6455 7.4.1", f"frame payload of {length} bytes exceeds {self.max_payload}",
                             close_code=1009), 0
        key = None
        if masked:
            if avail < header + 4:
                return None, 0
            key = bytes(buf[pos + header : pos + header + 4])
            header += 4
        if avail < header + length:
            return None, 0
        payload = bytes(buf[pos + header : pos + header + length])
        if key is not None:
            payload = apply_mask(payload, key)
        frame = Frame(
            opcode=b0 & 0x0F, payload=payload, fin=bool(b0 & 0x80), rsv=(b0 >> 4) & 0x7,
            masked=masked, mask_key=key, minimal_length=minimal,
        )
        return frame, header + length


def frame_violations(frame: Frame, *, expect_masked: bool | None, allowed_rsv: int = 0) -> list[Violation]:
    """Per-frame rule checks (RFC 6455 5.1-5.5); all carry close code 1002.

    ``expect_masked`` True for frames a server receives (client to server),
    False for frames a client receives, None to skip the mask check.
    ``allowed_rsv`` holds RSV bits a negotiated extension defined.
    """
    out: list[Violation] = []

    def add(rule: str, detail: str) -> None:
        out.append(Violation(rule, detail, close_code=1002))

    if expect_masked is True and not frame.masked:
        add("RFC6455 5.1", "client-to-server frame is not masked")
    elif expect_masked is False and frame.masked:
        add("RFC6455 5.1", "server-to-client frame is masked")
    if frame.rsv & ~allowed_rsv:
        add("RFC6455 5.2", f"RSV bits {frame.rsv:03b} set without a negotiated extension")
    if frame.opcode not in _KNOWN_OPCODES:
        add("RFC6455 5.2", f"reserved opcode 0x{frame.opcode:X}")
    if not frame.minimal_length:
        add("RFC6455 5.2", "payload length not in its minimal form")
    if frame.is_control:
        if len(frame.payload) > MAX_CONTROL_PAYLOAD:
            add("RFC6455 5.5", f"control frame payload of {len(frame.payload)} bytes (max 125)")
        if not frame.fin:
            add("RFC6455 5.5", "control frame is fragmented")
    return out
