"""Checks on decoded UDS frames (TR-369 R-UDS.*), returning ``Violation``s.

Structural errors (sync, length, TLV overrun) never get here: the decoder
raises ``UDSDecodeError`` for them.  These checks cover what a well-framed
frame can still get wrong.  Unknown TLV types are not violations: receivers
must ignore them (R-UDS.15).
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.mtp.uds.frames import TLVType, UDSFrame


@dataclass(frozen=True)
class Violation:
    """One failed check; ``rule`` is a TR-369 id such as ``R-UDS.16``."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


def endpoint_id_problem(value: bytes) -> str | None:
    """Why ``value`` cannot be a Handshake Endpoint ID, or None if it can.

    Only what the binding needs to go on is checked (UTF-8, non-empty,
    ``scheme:[authority]:id`` with both ends filled, no control characters);
    the full R-ARC.* rules are ``conformance.usp.endpoint.validate_endpoint_id``.
    """
    if not value:
        return "empty Endpoint ID"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "Endpoint ID is not valid UTF-8"
    if text.count(":") < 2 or text.startswith(":") or text.endswith(":"):
        return f"{text[:60]!r} is not 'authority-scheme:[authority-id]:instance-id'"
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        return "Endpoint ID contains control characters"
    return None


def validate_frame(frame: UDSFrame, *, check_record: bool = True) -> list[Violation]:
    """Violations of one decoded frame, independent of connection state.

    ``check_record``: USP Record TLVs must hold a parseable protobuf USP
    Record (R-UDS.22/R-UDS.23).
    """
    out: list[Violation] = []
    if not frame.tlvs:
        out.append(Violation("R-UDS.6", "frame has no TLV"))
    for tlv in frame.tlvs:
        if tlv.type == TLVType.HANDSHAKE:
            problem = endpoint_id_problem(tlv.value)
            if problem:
                out.append(Violation("R-UDS.16", f"Handshake TLV: {problem}"))
        elif tlv.type == TLVType.ERROR:
            try:
                tlv.text()
            except UnicodeDecodeError:
                out.append(Violation("R-UDS.13", "Error TLV is not UTF-8 text"))
        elif tlv.type == TLVType.USP_RECORD:
            if not tlv.value:
                out.append(Violation("R-UDS.22", "USP Record TLV is empty"))
            elif check_record and not is_usp_record(tlv.value):
                out.append(Violation("R-UDS.22", "USP Record TLV is not a protobuf USP Record"))
    return out


def is_usp_record(data: bytes) -> bool:
    """True when ``data`` parses as a USP Record that names a record type."""
    from conformance.usp import schema

    record = schema.Record()
    try:
        record.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError, or RuntimeError on deep nesting
        return False
    return record.WhichOneof("record_type") is not None
