"""UNIX Domain Socket MTP frame model (TR-369 "UNIX Domain Socket Binding").

Wire layout, derived from R-UDS.6 to R-UDS.14::

    Frame  = Header TLV+
    Header = sync (4 octets: 0x5F 0x55 0x53 0x50, "_USP")        R-UDS.8
             length (uint32, network byte order): octets of the
             TLVs that follow, i.e. the frame minus its 8-octet
             header                                              R-UDS.9
    TLV    = type (1 octet)                                      R-UDS.10
             length (uint32, network byte order) of value        R-UDS.11
             value (length octets)

TLV types: 1 Handshake (UTF-8 Endpoint ID of the sender), 2 Error (UTF-8
text), 3 USP Record (protobuf octets).  Receivers ignore other types
(R-UDS.15), so the model keeps any type value 0..255.

Choices where the text is silent: a frame may hold several TLVs and they are
processed in order; a frame with no TLV decodes (``tlvs == ()``) and is
reported by validation (R-UDS.6) rather than as a decode error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

#: Synchronisation part of every frame header (R-UDS.8).
SYNC = b"_USP"
HEADER_SIZE = 8
TLV_HEADER_SIZE = 5
MAX_LENGTH = 0xFFFF_FFFF


class TLVType(IntEnum):
    """TLV types defined by the UDS binding."""

    HANDSHAKE = 1
    ERROR = 2
    USP_RECORD = 3


class UDSDecodeError(ValueError):
    """Raised for bytes that are not a well-formed UDS frame stream.

    ``rule`` names the requirement the bytes break (``R-UDS.8`` bad sync,
    ``R-UDS.11`` TLV length overrun, ...); per R-UDS.24 the receiver answers
    with an Error frame and closes.  ``offset`` is the stream offset of the
    frame (or offending byte); ``events`` holds the frames a
    ``UDSDecoder.feed`` call decoded before failing.
    """

    def __init__(self, message: str, *, rule: str = "R-UDS.24",
                 offset: int | None = None) -> None:
        super().__init__(f"[{rule}] {message}" + ("" if offset is None else f" (at byte {offset})"))
        self.reason = message
        self.rule = rule
        self.offset = offset
        self.events: list[UDSFrame] = []


@dataclass(frozen=True)
class TLV:
    """One Type-Length-Value field; ``type`` may be any octet value."""

    type: int
    value: bytes = b""

    def text(self) -> str:
        """The value as UTF-8 (Handshake/Error); ``UnicodeDecodeError`` if not."""
        return self.value.decode("utf-8")


@dataclass(frozen=True)
class UDSFrame:
    """One decoded frame: its TLVs in wire order plus the raw bytes."""

    tlvs: tuple[TLV, ...] = ()
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def of_type(self, tlv_type: int) -> list[TLV]:
        return [t for t in self.tlvs if t.type == tlv_type]

    @property
    def handshakes(self) -> list[TLV]:
        return self.of_type(TLVType.HANDSHAKE)

    @property
    def errors(self) -> list[TLV]:
        return self.of_type(TLVType.ERROR)

    @property
    def records(self) -> list[TLV]:
        return self.of_type(TLVType.USP_RECORD)

    @property
    def unknown(self) -> list[TLV]:
        """TLVs of a type the binding does not define (ignored, R-UDS.15)."""
        return [t for t in self.tlvs if t.type not in _KNOWN_TYPES]


_KNOWN_TYPES = frozenset(int(t) for t in TLVType)
