"""Problem reports of the MQTT codec: the two exception types and ``Violation``.

``MQTTDecodeError`` is the only exception the decoder raises on hostile
input (bytes that cannot be parsed into a packet).  ``MQTTEncodeError`` is
raised when a packet object cannot be put on the wire at all (a value that
does not fit its field).  Everything that *can* be parsed but breaks a rule
of MQTT 3.1.1 or 5.0 is reported as a ``Violation`` by ``validate()``
instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

#: MQTT 5.0 Reason Code 0x81, the default for a packet that cannot be parsed.
MALFORMED_PACKET = 0x81


class MQTTDecodeError(ValueError):
    """Bytes that are not an MQTT packet (a Malformed Packet, MQTT 5.0 §1.2).

    ``offset`` is the byte position of the problem: inside the buffer given
    to ``decode()``, or counted from the first byte of the stream for
    ``MQTTDecoder``.  ``reason`` says what is wrong, ``packet_type`` is the
    type nibble when the fixed header was read, ``raw`` the bytes of the
    faulty packet when it could be framed, and ``reason_code`` the MQTT 5.0
    Reason Code a receiver would report (0x81 Malformed Packet, 0x95 Packet
    too large, ...).
    """

    def __init__(
        self,
        reason: str,
        offset: int,
        *,
        packet_type: int | None = None,
        raw: bytes | None = None,
        reason_code: int = MALFORMED_PACKET,
    ) -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset
        self.packet_type = packet_type
        self.raw = raw
        self.reason_code = reason_code


class MQTTEncodeError(ValueError):
    """A packet object whose fields cannot be encoded (e.g. a Packet
    Identifier above 65535, or MQTT 5.0 properties on an MQTT 3.1.1 packet)."""


class Severity(StrEnum):
    """Strength of the broken rule: ``ERROR`` for MUST, ``WARNING`` for SHOULD
    or for a receiver's MAY-reject (e.g. Disallowed Unicode code points)."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule in a packet.

    ``rule`` is the normative statement (``MQTT-3.1.2-3``) or, where the
    specification has no numbered statement, the section (``MQTT-5.0
    §3.8.3.1``).  ``code`` is a stable short name of the check
    (``reserved-flags``), ``field`` the packet field concerned (``topic``,
    ``properties[2]``, ``subscriptions[0].topic_filter``), and
    ``reason_code`` the MQTT 5.0 Reason Code a receiver would answer with,
    when the specification names one.
    """

    rule: str
    message: str
    code: str
    field: str | None = None
    severity: Severity = Severity.ERROR
    reason_code: int | None = None

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"
