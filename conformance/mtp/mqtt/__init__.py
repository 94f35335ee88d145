"""Strict sans-I/O MQTT 3.1.1 + 5.0 codec for the suite's MQTT broker.

The suite plays the MQTT server for the device under test (TP-469 section
11) and must see every byte: ``MQTTDecoder`` turns the byte stream into
packet objects that keep their raw bytes, fixed-header flags and property
lists in wire order; ``validate`` lists the MQTT rules a packet breaks
(R-MQTT.1 and R-MQTT.2 make the MQTT specifications binding on USP
Endpoints); ``encode`` writes packets, correct or deliberately broken.

Modules: ``constants`` (packet types, versions), ``properties`` (the 27
MQTT 5.0 properties), ``reason_codes``, ``packets`` (dataclasses),
``decoder``/``encoder`` (re-exported by ``codec``), ``text`` (UTF-8 strings),
``topics`` (Topic Name/Filter syntax and matching), ``validate`` and
``errors``.
"""

from __future__ import annotations

from conformance.mtp.mqtt.codec import (
    WIRE_OVERRIDES,
    MQTTDecoder,
    decode,
    decode_properties,
    decode_vbi,
    encode,
    encode_properties,
    encode_vbi,
)
from conformance.mtp.mqtt.constants import MAX_REMAINING_LENGTH, PacketType, ProtocolVersion
from conformance.mtp.mqtt.errors import MQTTDecodeError, MQTTEncodeError, Severity, Violation
from conformance.mtp.mqtt.packets import (
    PACKET_CLASSES,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    RetainHandling,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from conformance.mtp.mqtt.properties import (
    ALLOWED_PROPERTIES,
    PROPERTY_NAMES,
    PROPERTY_TYPES,
    WILL,
    Properties,
    PropertyId,
    PropertyType,
)
from conformance.mtp.mqtt.reason_codes import (
    REASON_CODES,
    ConnectReturnCode,
    ReasonCode,
    reason_code_name,
)
from conformance.mtp.mqtt.topics import topic_filter_problems, topic_matches, topic_name_problems
from conformance.mtp.mqtt.validate import RULES, Role, validate

__all__ = [
    "ALLOWED_PROPERTIES", "MAX_REMAINING_LENGTH", "PACKET_CLASSES", "PROPERTY_NAMES",
    "PROPERTY_TYPES", "REASON_CODES", "RULES", "WILL", "WIRE_OVERRIDES",
    "Auth", "Connack", "Connect", "ConnectReturnCode", "Disconnect", "MQTTDecodeError",
    "MQTTDecoder", "MQTTEncodeError", "Packet", "PacketType", "Pingreq", "Pingresp",
    "Properties", "PropertyId", "PropertyType", "ProtocolVersion", "Puback", "Pubcomp",
    "Publish", "Pubrec", "Pubrel", "ReasonCode", "RetainHandling", "Role", "Severity",
    "Suback", "Subscribe", "Subscription", "Unsuback", "Unsubscribe", "Violation", "Will",
    "decode", "decode_properties", "decode_vbi", "encode", "encode_properties", "encode_vbi",
    "reason_code_name", "topic_filter_problems", "topic_matches", "topic_name_problems", "validate",
]
