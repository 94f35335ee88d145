"""MQTT 3.1.1 and 5.0 packets as dataclasses, one class per packet type.

Fields follow the specification names.  Every field that can hold a wrong
value on the wire can hold it here too (QoS 3, reserved subscription option
bits, a Packet Identifier of 0, strings that are not valid UTF-8), so that a
decoded packet is kept as seen and ``validate()`` reports what is wrong.

Three keyword-only fields record what the decoder saw and take no part in
equality: ``flags`` (the fixed-header flag nibble), ``raw`` (the packet's
bytes) and ``wire_violations`` (problems only visible in the bytes, such as
a Variable Byte Integer that is not minimal).  The encoder ignores them: it
derives the flags from the fields (override them with ``encode(...,
overrides={"flags": ...})`` to send a broken packet).

MQTT 3.1.1 packets use the same classes with empty ``properties`` and zero
reason codes (the CONNACK ``reason_code`` is the 3.1.1 return code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

from conformance.mtp.mqtt.constants import PacketType, ProtocolVersion
from conformance.mtp.mqtt.errors import Violation
from conformance.mtp.mqtt.properties import Properties


class RetainHandling(IntEnum):
    """Retain Handling subscription option (MQTT 5.0 §3.8.3.1); 3 is reserved."""

    SEND_ON_SUBSCRIBE = 0
    SEND_IF_NEW_SUBSCRIPTION = 1
    DO_NOT_SEND = 2


@dataclass(slots=True)
class Packet:
    """Base of every packet; ``TYPE`` is the Control Packet type."""

    TYPE: ClassVar[PacketType]

    flags: int | None = field(default=None, kw_only=True, compare=False)
    raw: bytes | None = field(default=None, kw_only=True, compare=False, repr=False)
    wire_violations: tuple[Violation, ...] = field(
        default=(), kw_only=True, compare=False, repr=False)

    @property
    def packet_type(self) -> PacketType:
        """The Control Packet type of this packet."""
        return self.TYPE


@dataclass(slots=True)
class Will:
    """The Will Message of a CONNECT (Will Flag set, MQTT 5.0 §3.1.2.5)."""

    topic: str = ""
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Connect(Packet):
    """CONNECT (MQTT 5.0 §3.1).  ``protocol_level`` selects the layout: 5 has
    properties, 3 and 4 do not.  ``connect_flags`` is the flags byte as
    decoded (the encoder derives it from the fields unless overridden)."""

    TYPE: ClassVar[PacketType] = PacketType.CONNECT

    protocol_name: str = "MQTT"
    protocol_level: int = ProtocolVersion.V5
    clean_start: bool = True
    keep_alive: int = 0
    client_id: str = ""
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: Properties = field(default_factory=Properties)
    connect_flags: int | None = field(default=None, kw_only=True, compare=False)

    @property
    def clean_session(self) -> bool:
        """MQTT 3.1.1 name of the Clean Start bit."""
        return self.clean_start

    @property
    def version(self) -> ProtocolVersion:
        """The packet layout this CONNECT uses (and announces for the connection)."""
        return version_of_level(self.protocol_level)


@dataclass(slots=True)
class Connack(Packet):
    """CONNACK (MQTT 5.0 §3.2).  ``reason_code`` is a Connect Reason Code in
    5.0 and a Connect Return Code in 3.1.1.  ``acknowledge_flags`` is the
    flags byte as decoded."""

    TYPE: ClassVar[PacketType] = PacketType.CONNACK

    session_present: bool = False
    reason_code: int = 0
    properties: Properties = field(default_factory=Properties)
    acknowledge_flags: int | None = field(default=None, kw_only=True, compare=False)


@dataclass(slots=True)
class Publish(Packet):
    """PUBLISH (MQTT 5.0 §3.3).  ``packet_id`` is only on the wire for QoS > 0
    (a decoded QoS 0 PUBLISH has ``packet_id`` 0)."""

    TYPE: ClassVar[PacketType] = PacketType.PUBLISH

    topic: str = ""
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class _PubResponse(Packet):
    """Shared layout of PUBACK, PUBREC, PUBREL and PUBCOMP."""

    packet_id: int = 0
    reason_code: int = 0
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Puback(_PubResponse):
    """PUBACK (MQTT 5.0 §3.4), the answer to a QoS 1 PUBLISH."""

    TYPE: ClassVar[PacketType] = PacketType.PUBACK


@dataclass(slots=True)
class Pubrec(_PubResponse):
    """PUBREC (MQTT 5.0 §3.5), first answer to a QoS 2 PUBLISH."""

    TYPE: ClassVar[PacketType] = PacketType.PUBREC


@dataclass(slots=True)
class Pubrel(_PubResponse):
    """PUBREL (MQTT 5.0 §3.6), the answer to PUBREC."""

    TYPE: ClassVar[PacketType] = PacketType.PUBREL


@dataclass(slots=True)
class Pubcomp(_PubResponse):
    """PUBCOMP (MQTT 5.0 §3.7), the answer to PUBREL."""

    TYPE: ClassVar[PacketType] = PacketType.PUBCOMP


@dataclass(slots=True)
class Subscription:
    """One Topic Filter and its Subscription Options byte (MQTT 5.0 §3.8.3.1).

    In MQTT 3.1.1 the byte is the Requested QoS and bits 2-7 are reserved,
    so there ``no_local``, ``retain_as_published``, ``retain_handling`` and
    ``reserved`` must all be zero.  ``reserved`` holds bits 6-7.
    """

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = RetainHandling.SEND_ON_SUBSCRIBE
    reserved: int = 0

    @property
    def options(self) -> int:
        """The Subscription Options byte."""
        return ((self.reserved & 3) << 6 | (self.retain_handling & 3) << 4
                | bool(self.retain_as_published) << 3 | bool(self.no_local) << 2
                | (self.qos & 3))

    @classmethod
    def from_options(cls, topic_filter: str, options: int) -> Subscription:
        """Split an options byte into its fields (lossless)."""
        return cls(topic_filter, options & 3, bool(options & 4), bool(options & 8),
                   (options >> 4) & 3, options >> 6)


@dataclass(slots=True)
class Subscribe(Packet):
    """SUBSCRIBE (MQTT 5.0 §3.8)."""

    TYPE: ClassVar[PacketType] = PacketType.SUBSCRIBE

    packet_id: int = 0
    subscriptions: list[Subscription] = field(default_factory=list)
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Suback(Packet):
    """SUBACK (MQTT 5.0 §3.9): one Reason Code (3.1.1: return code) per filter."""

    TYPE: ClassVar[PacketType] = PacketType.SUBACK

    packet_id: int = 0
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Unsubscribe(Packet):
    """UNSUBSCRIBE (MQTT 5.0 §3.10)."""

    TYPE: ClassVar[PacketType] = PacketType.UNSUBSCRIBE

    packet_id: int = 0
    topic_filters: list[str] = field(default_factory=list)
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Unsuback(Packet):
    """UNSUBACK (MQTT 5.0 §3.11).  3.1.1 has no payload: ``reason_codes`` is empty."""

    TYPE: ClassVar[PacketType] = PacketType.UNSUBACK

    packet_id: int = 0
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Pingreq(Packet):
    """PINGREQ (MQTT 5.0 §3.12)."""

    TYPE: ClassVar[PacketType] = PacketType.PINGREQ


@dataclass(slots=True)
class Pingresp(Packet):
    """PINGRESP (MQTT 5.0 §3.13)."""

    TYPE: ClassVar[PacketType] = PacketType.PINGRESP


@dataclass(slots=True)
class Disconnect(Packet):
    """DISCONNECT (MQTT 5.0 §3.14).  3.1.1 has no variable header."""

    TYPE: ClassVar[PacketType] = PacketType.DISCONNECT

    reason_code: int = 0
    properties: Properties = field(default_factory=Properties)


@dataclass(slots=True)
class Auth(Packet):
    """AUTH (MQTT 5.0 §3.15); does not exist in 3.1.1."""

    TYPE: ClassVar[PacketType] = PacketType.AUTH

    reason_code: int = 0
    properties: Properties = field(default_factory=Properties)


#: Packet class per Control Packet type.
PACKET_CLASSES: dict[int, type[Packet]] = {
    cls.TYPE: cls for cls in (
        Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe, Suback,
        Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth)
}


def version_of_level(level: int) -> ProtocolVersion:
    """Packet layout for a CONNECT Protocol Level: 5 (and above) is MQTT 5.0,
    anything lower is the 3.1.1 layout.  Bit 7 (set by some bridges) is ignored."""
    return ProtocolVersion.V5 if (level & 0x7F) >= 5 else ProtocolVersion.V3_1_1
