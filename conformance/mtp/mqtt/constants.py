"""Packet types, protocol versions and size limits shared by the MQTT modules."""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class PacketType(IntEnum):
    """The MQTT Control Packet types (MQTT 5.0 §2.1.2, MQTT 3.1.1 §2.2.1).

    Value 0 is reserved in both versions; 15 (AUTH) is reserved in 3.1.1.
    """

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class ProtocolVersion(IntEnum):
    """The Protocol Level byte of CONNECT.  R-MQTT.1 requires 5.0 of USP
    Endpoints, R-MQTT.2 allows 3.1.1.  (Level 3, MQTT 3.1, shares the 3.1.1
    packet layout and is decoded as such.)"""

    V3_1_1 = 4
    V5 = 5


#: Largest Remaining Length (four-byte Variable Byte Integer, MQTT 5.0 §1.5.5).
MAX_REMAINING_LENGTH: Final = 268_435_455
#: Largest Variable Byte Integer value.
MAX_VBI: Final = MAX_REMAINING_LENGTH
#: Largest UTF-8 Encoded String or Binary Data length (two-byte length prefix).
MAX_STRING_BYTES: Final = 65_535

#: Value of the fixed-header flag nibble each packet type must carry
#: (MQTT 5.0 Table 2-2; PUBLISH carries DUP/QoS/RETAIN instead).
FIXED_FLAGS: Final[dict[int, int]] = {
    PacketType.CONNECT: 0,
    PacketType.CONNACK: 0,
    PacketType.PUBACK: 0,
    PacketType.PUBREC: 0,
    PacketType.PUBREL: 0b0010,
    PacketType.PUBCOMP: 0,
    PacketType.SUBSCRIBE: 0b0010,
    PacketType.SUBACK: 0,
    PacketType.UNSUBSCRIBE: 0b0010,
    PacketType.UNSUBACK: 0,
    PacketType.PINGREQ: 0,
    PacketType.PINGRESP: 0,
    PacketType.DISCONNECT: 0,
    PacketType.AUTH: 0,
}
