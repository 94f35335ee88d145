"""MQTT 5.0 properties: the identifier/type/context tables and the
``Properties`` container, and a wire round trip of every property.

R-MQTT.1 makes MQTT 5.0 binding; TP-469 11.2, 11.12, 11.14, 11.15 read the
CONNECT and PUBLISH properties (usp-endpoint-id User Property, R-MQTT.13;
Response Topic, R-MQTT.23; Content Type, R-MQTT.27).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conformance.mtp.mqtt import (
    ALLOWED_PROPERTIES,
    PROPERTY_NAMES,
    PROPERTY_TYPES,
    WILL,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Properties,
    PropertyId,
    PropertyType,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    decode,
    decode_properties,
    encode,
    encode_properties,
)
from conformance.mtp.mqtt.properties import allows_multiple, property_section

P = PropertyId
T = PropertyType


def test_there_are_27_properties_with_spec_ids() -> None:
    assert len(PropertyId) == 27
    assert len(PROPERTY_TYPES) == 27
    assert [int(p) for p in PropertyId] == [
        0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19,
        0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A]


@pytest.mark.parametrize(("pid", "kind"), [
    (P.PAYLOAD_FORMAT_INDICATOR, T.BYTE), (P.MESSAGE_EXPIRY_INTERVAL, T.FOUR_BYTE_INTEGER),
    (P.CONTENT_TYPE, T.UTF8_STRING), (P.CORRELATION_DATA, T.BINARY_DATA),
    (P.SUBSCRIPTION_IDENTIFIER, T.VARIABLE_BYTE_INTEGER), (P.SERVER_KEEP_ALIVE, T.TWO_BYTE_INTEGER),
    (P.USER_PROPERTY, T.UTF8_STRING_PAIR), (P.MAXIMUM_PACKET_SIZE, T.FOUR_BYTE_INTEGER),
    (P.TOPIC_ALIAS, T.TWO_BYTE_INTEGER), (P.AUTHENTICATION_DATA, T.BINARY_DATA),
])
def test_property_types(pid: PropertyId, kind: PropertyType) -> None:
    assert PROPERTY_TYPES[pid] is kind


def test_property_names() -> None:
    assert PROPERTY_NAMES[P.MAXIMUM_QOS] == "Maximum QoS"
    assert PROPERTY_NAMES[P.RESPONSE_TOPIC] == "Response Topic"


def test_allowed_contexts_follow_table_2_4() -> None:
    assert ALLOWED_PROPERTIES[WILL] == {P.WILL_DELAY_INTERVAL, P.PAYLOAD_FORMAT_INDICATOR,
                                        P.MESSAGE_EXPIRY_INTERVAL, P.CONTENT_TYPE,
                                        P.RESPONSE_TOPIC, P.CORRELATION_DATA, P.USER_PROPERTY}
    assert ALLOWED_PROPERTIES[PacketType.UNSUBSCRIBE] == {P.USER_PROPERTY}
    assert P.REQUEST_RESPONSE_INFORMATION in ALLOWED_PROPERTIES[PacketType.CONNECT]  # R-MQTT.12
    assert P.RESPONSE_INFORMATION in ALLOWED_PROPERTIES[PacketType.CONNACK]
    assert P.TOPIC_ALIAS not in ALLOWED_PROPERTIES[PacketType.CONNECT]
    # Every packet with properties allows User Property.
    assert all(P.USER_PROPERTY in ids for ids in ALLOWED_PROPERTIES.values())
    # Every property is allowed somewhere.
    assert set().union(*ALLOWED_PROPERTIES.values()) == set(PropertyId)


@pytest.mark.parametrize(("context", "pid", "section"), [
    (PacketType.CONNECT, P.SESSION_EXPIRY_INTERVAL, "3.1.2.11.2"),
    (PacketType.CONNECT, P.AUTHENTICATION_DATA, "3.1.2.11.10"),
    (WILL, P.WILL_DELAY_INTERVAL, "3.1.3.2.2"),
    (PacketType.CONNACK, P.RESPONSE_INFORMATION, "3.2.2.3.15"),
    (PacketType.CONNACK, P.AUTHENTICATION_DATA, "3.2.2.3.18"),
    (PacketType.PUBLISH, P.CONTENT_TYPE, "3.3.2.3.9"),
    (PacketType.PUBLISH, P.SUBSCRIPTION_IDENTIFIER, "3.3.2.3.8"),
    (PacketType.SUBSCRIBE, P.SUBSCRIPTION_IDENTIFIER, "3.8.2.1.2"),
    (PacketType.DISCONNECT, P.SERVER_REFERENCE, "3.14.2.2.5"),
    (PacketType.AUTH, P.AUTHENTICATION_METHOD, "3.15.2.2.2"),
    (PacketType.PUBACK, P.TOPIC_ALIAS, "3.4.2.2"),  # not allowed: the block's section
    (PacketType.PINGREQ, P.USER_PROPERTY, "2.2.2.2"),  # no properties at all
])
def test_property_section(context: PacketType, pid: PropertyId, section: str) -> None:
    assert property_section(context, pid) == section


def test_allows_multiple() -> None:
    assert allows_multiple(PacketType.CONNECT, P.USER_PROPERTY)
    assert allows_multiple(PacketType.PUBLISH, P.SUBSCRIPTION_IDENTIFIER)
    assert not allows_multiple(PacketType.SUBSCRIBE, P.SUBSCRIPTION_IDENTIFIER)
    assert not allows_multiple(PacketType.PUBLISH, P.CONTENT_TYPE)


def test_container_keeps_order_and_duplicates() -> None:
    props = Properties.of(content_type="usp.msg", user_properties=[("a", "1"), ("a", "2")],
                          subscription_identifiers=[3, 4])
    props.add(P.CONTENT_TYPE, "again")
    assert props.ids == [P.CONTENT_TYPE, P.USER_PROPERTY, P.USER_PROPERTY,
                         P.SUBSCRIPTION_IDENTIFIER, P.SUBSCRIPTION_IDENTIFIER, P.CONTENT_TYPE]
    assert props.content_type == "usp.msg"
    assert props.get_all(P.CONTENT_TYPE) == ["usp.msg", "again"]
    assert props.count(P.CONTENT_TYPE) == 2
    assert props.user_properties == [("a", "1"), ("a", "2")]
    assert props.user_property("a") == "1"
    assert props.user_property("b") is None
    assert props.user_property_values("a") == ["1", "2"]
    assert props.subscription_identifiers == [3, 4]
    assert props.subscription_identifier == 3
    assert props.response_topic is None
    assert props.get(P.RESPONSE_TOPIC, "dflt") == "dflt"
    assert P.CONTENT_TYPE in props and P.TOPIC_ALIAS not in props
    assert len(props) == 6 and bool(props) and not Properties()
    assert next(iter(props)) == (P.CONTENT_TYPE, "usp.msg")
    assert "CONTENT_TYPE='usp.msg'" in repr(props)
    assert "0x7f" in repr(Properties([(0x7F, 1)]))


def test_container_equality() -> None:
    a = Properties.of(response_topic="r")
    assert a == Properties([(P.RESPONSE_TOPIC, "r")])
    assert a != Properties.of(response_topic="x")
    assert a != Properties.of(content_type="r")
    assert (a == "r") is False
    with pytest.raises(TypeError):
        hash(a)


def test_of_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown MQTT property name"):
        Properties.of(colour="red")


def test_every_named_accessor_reads_its_property() -> None:
    for pid in PropertyId:
        props = Properties([(pid, 1)])
        if pid == P.USER_PROPERTY:
            assert props.user_properties == [1]
        else:
            assert getattr(props, pid.name.lower()) == 1


# One legal value per property, with the boundary of its data type.
VALUES: dict[PropertyType, Any] = {
    T.BYTE: 1, T.TWO_BYTE_INTEGER: 0xFFFF, T.FOUR_BYTE_INTEGER: 0xFFFFFFFF,
    T.VARIABLE_BYTE_INTEGER: 268_435_455, T.UTF8_STRING: "ünïcode/😀",
    T.UTF8_STRING_PAIR: ("usp-endpoint-id", "proto::agent-1"), T.BINARY_DATA: b"\x00\xff" * 3,
}


def _carrier(context: Any, props: Properties) -> tuple[Packet, Callable[[Any], Properties]]:
    """A packet that carries ``props`` in ``context``, and a getter for them."""
    if context == WILL:
        packet = Connect(will=Will("w", b"", 0, False, props))
        return packet, lambda p: p.will.properties
    cls: dict[Any, Any] = {PacketType.CONNECT: Connect, PacketType.CONNACK: Connack,
           PacketType.PUBLISH: Publish, PacketType.PUBACK: Puback,
           PacketType.PUBREC: Pubrec, PacketType.PUBREL: Pubrel, PacketType.PUBCOMP: Pubcomp,
           PacketType.SUBSCRIBE: lambda properties: Subscribe(1, [Subscription("t")], properties),
           PacketType.SUBACK: lambda properties: Suback(1, [0], properties),
           PacketType.UNSUBSCRIBE: lambda properties: Unsubscribe(1, ["t"], properties),
           PacketType.UNSUBACK: lambda properties: Unsuback(1, [0], properties),
           PacketType.DISCONNECT: Disconnect, PacketType.AUTH: Auth}
    return cls[context](properties=props), lambda p: p.properties


@pytest.mark.parametrize("context", list(ALLOWED_PROPERTIES), ids=str)
def test_every_allowed_property_round_trips_in_its_packet(context: Any) -> None:
    """R-MQTT.1: each property is encoded with its data type and read back."""
    for pid in sorted(ALLOWED_PROPERTIES[context]):
        props = Properties([(pid, VALUES[PROPERTY_TYPES[pid]])])
        packet, get = _carrier(context, props)
        decoded = decode(encode(packet))
        assert get(decoded) == props, PROPERTY_NAMES[pid]


def test_every_property_wire_bytes() -> None:
    for pid in PropertyId:
        value = VALUES[PROPERTY_TYPES[pid]]
        data = encode_properties(Properties([(pid, value)]))
        assert data[0] == pid
        block = bytes([len(data)]) + data
        props, end = decode_properties(block)
        assert props.items == [(pid, value)] and end == len(block)


def test_known_encodings() -> None:
    props = Properties.of(payload_format_indicator=1, topic_alias=0x0102,
                          message_expiry_interval=0x01020304, subscription_identifier=128,
                          content_type="ab", user_properties=[("k", "v")],
                          correlation_data=b"\x09")
    assert encode_properties(props) == bytes.fromhex(
        "0101" "230102" "0201020304" "0b8001" "030002" "6162" "2600016b000176" "0900" "0109")
