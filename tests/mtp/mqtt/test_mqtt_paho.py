"""Differential tests against paho-mqtt 2.x (an independent implementation).

* property tables and reason-code tables agree;
* v5 properties packed by ``paho.mqtt.properties.Properties`` decode with
  ours, and ours unpack with paho, for every packet context;
* packets built by paho's client (``Client._send_*`` with the queue
  captured, no socket) decode with ours and pass ``validate``;
* packets we encode parse with paho's ``_packet.decode_*`` functions.

R-MQTT.1 / R-MQTT.2: the broker must understand what real MQTT clients send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet as paho_packet
from paho.mqtt import client as paho_client
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.properties import VariableByteIntegers
from paho.mqtt.reasoncodes import ReasonCode as PahoReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from conformance.mtp.mqtt import (
    ALLOWED_PROPERTIES,
    PROPERTY_NAMES,
    PROPERTY_TYPES,
    REASON_CODES,
    WILL,
    Connack,
    Connect,
    Disconnect,
    PacketType,
    Pingreq,
    Pingresp,
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
    decode_vbi,
    encode,
    encode_properties,
    encode_vbi,
    validate,
)

P = PropertyId
SETTINGS = settings(max_examples=150, deadline=None)
PAHO_TYPES = {"Byte": PropertyType.BYTE, "Two Byte Integer": PropertyType.TWO_BYTE_INTEGER,
              "Four Byte Integer": PropertyType.FOUR_BYTE_INTEGER,
              "Variable Byte Integer": PropertyType.VARIABLE_BYTE_INTEGER,
              "Binary Data": PropertyType.BINARY_DATA,
              "UTF-8 Encoded String": PropertyType.UTF8_STRING,
              "UTF-8 String Pair": PropertyType.UTF8_STRING_PAIR}
CONTEXTS = list(ALLOWED_PROPERTIES)


def _paho_type(context: Any) -> int:
    return PacketTypes.WILLMESSAGE if context == WILL else int(context)


def _attr(pid: int) -> str:
    """paho's attribute name: the spec name without spaces."""
    return PROPERTY_NAMES[pid].replace(" ", "")


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------

def test_property_tables_agree_with_paho() -> None:
    paho = PahoProperties(PacketTypes.PUBLISH)
    assert {int(pid) for pid in PropertyId} == set(paho.properties)
    for pid, (type_index, packet_types) in paho.properties.items():
        assert PROPERTY_TYPES[pid] is PAHO_TYPES[paho.types[type_index]]
        contexts = {ctx for ctx in CONTEXTS if pid in ALLOWED_PROPERTIES[ctx]}
        assert {_paho_type(ctx) for ctx in contexts} == set(packet_types), hex(pid)
        assert paho.getIdentFromName(_attr(pid)) == pid


def test_reason_code_tables_agree_with_paho() -> None:
    theirs = {(ptype, code) for code, names in PahoReasonCode.names.items()
              for packet_types in names.values() for ptype in packet_types}
    ours = {(ptype, code) for ptype, codes in REASON_CODES.items() for code in codes}
    # paho leaves 0x99 (Payload format invalid) out of CONNACK; MQTT 5.0
    # §3.2.2.2 lists it for a Will Payload that does not match its format.
    assert ours - theirs == {(PacketType.CONNACK, 0x99)}
    assert theirs - ours == set()


@SETTINGS
@given(st.integers(0, 268_435_455))
def test_vbi_agrees_with_paho(value: int) -> None:
    assert encode_vbi(value) == VariableByteIntegers.encode(value)
    assert decode_vbi(encode_vbi(value)) == (value, VariableByteIntegers.decode(
        encode_vbi(value))[1])


@SETTINGS
@given(st.integers(0, 2), st.booleans(), st.booleans(), st.integers(0, 2))
def test_subscribe_options_agree_with_paho(qos: int, no_local: bool, rap: bool,
                                           handling: int) -> None:
    ours = Subscription("t", qos, no_local, rap, handling)
    theirs = SubscribeOptions(qos, no_local, rap, handling)
    assert bytes([ours.options]) == theirs.pack()
    back = SubscribeOptions()
    back.unpack(bytes([ours.options]))
    assert (back.QoS, back.noLocal, back.retainAsPublished, back.retainHandling) == \
        (qos, no_local, rap, handling)


# --------------------------------------------------------------------------
# Properties both ways
# --------------------------------------------------------------------------

# paho refuses U+0000, surrogates and U+FEFF in strings, and some values.
paho_text = st.text(alphabet=st.characters(exclude_categories=["Cs"],
                                           exclude_characters="\x00\ufeff"), max_size=10)
_LEGAL: dict[int, st.SearchStrategy[Any]] = {
    P.RECEIVE_MAXIMUM: st.integers(1, 0xFFFF), P.TOPIC_ALIAS: st.integers(1, 0xFFFF),
    P.MAXIMUM_PACKET_SIZE: st.integers(1, 268_435_455),
    P.SUBSCRIPTION_IDENTIFIER: st.integers(1, 268_435_455),
    P.PAYLOAD_FORMAT_INDICATOR: st.integers(0, 1),
    P.REQUEST_PROBLEM_INFORMATION: st.integers(0, 1),
    P.REQUEST_RESPONSE_INFORMATION: st.integers(0, 1),
}
_BY_TYPE: dict[PropertyType, st.SearchStrategy[Any]] = {
    PropertyType.BYTE: st.integers(0, 0xFF), PropertyType.TWO_BYTE_INTEGER: st.integers(0, 0xFFFF),
    PropertyType.FOUR_BYTE_INTEGER: st.integers(0, 0xFFFFFFFF),
    PropertyType.VARIABLE_BYTE_INTEGER: st.integers(0, 268_435_455),
    PropertyType.UTF8_STRING: paho_text, PropertyType.UTF8_STRING_PAIR: st.tuples(
        paho_text, paho_text), PropertyType.BINARY_DATA: st.binary(max_size=16),
}


def _value(pid: int) -> st.SearchStrategy[Any]:
    return _LEGAL.get(pid, _BY_TYPE[PROPERTY_TYPES[pid]])


@st.composite
def context_and_properties(draw: st.DrawFn) -> tuple[Any, Properties]:
    """A context and a property list paho accepts: each single-valued
    property once, User Property / Subscription Identifier repeatable."""
    context = draw(st.sampled_from(CONTEXTS))
    ids = draw(st.lists(st.sampled_from(sorted(ALLOWED_PROPERTIES[context])), max_size=6))
    items: list[tuple[int, Any]] = []
    seen: set[int] = set()
    for pid in ids:
        if pid in seen and pid not in (P.USER_PROPERTY, P.SUBSCRIPTION_IDENTIFIER):
            continue
        seen.add(pid)
        items.append((int(pid), draw(_value(pid))))
    return context, Properties(items)


def _by_id(props: Properties) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for pid, value in props.items:
        out.setdefault(pid, []).append(value)
    return out


def _paho_values(paho: PahoProperties) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for pid in PROPERTY_TYPES:
        if hasattr(paho, _attr(pid)):
            value = getattr(paho, _attr(pid))
            out[pid] = list(value) if isinstance(value, list) else [value]
    return out


@SETTINGS
@given(context_and_properties())
def test_paho_packed_properties_decode_with_ours(case: tuple[Any, Properties]) -> None:
    context, props = case
    paho = PahoProperties(_paho_type(context))
    for pid, value in props.items:
        setattr(paho, _attr(pid), value)
    packed = bytes(paho.pack())
    ours, end = decode_properties(packed)
    assert end == len(packed)
    assert _by_id(ours) == _paho_values(paho) == _by_id(props)


@SETTINGS
@given(context_and_properties())
def test_our_properties_unpack_with_paho(case: tuple[Any, Properties]) -> None:
    context, props = case
    content = encode_properties(props)
    paho, length = PahoProperties(_paho_type(context)).unpack(encode_vbi(len(content)) + content)
    assert length == len(content) + len(encode_vbi(len(content)))
    assert _paho_values(paho) == _by_id(props)


# --------------------------------------------------------------------------
# paho's packet builders -> our decoder
# --------------------------------------------------------------------------

@pytest.fixture
def paho5() -> Iterator[tuple[paho_client.Client, list[bytes]]]:
    yield from _capturing(MQTTProtocolVersion.MQTTv5)


@pytest.fixture
def paho311() -> Iterator[tuple[paho_client.Client, list[bytes]]]:
    yield from _capturing(MQTTProtocolVersion.MQTTv311)


def _capturing(protocol: MQTTProtocolVersion) -> Iterator[tuple[paho_client.Client, list[bytes]]]:
    """A paho Client whose outgoing packets land in a list (no socket)."""
    client = paho_client.Client(CallbackAPIVersion.VERSION2, client_id="proto::agent-1",
                                protocol=protocol)
    captured: list[bytes] = []

    def queue(command: int, packet: bytes, mid: int, qos: int, info: Any = None) -> Any:
        captured.append(bytes(packet))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    client._packet_queue = queue  # type: ignore[method-assign,assignment]
    yield client, captured
    client._sock = None


def _paho_props(ptype: int, **values: Any) -> PahoProperties:
    props = PahoProperties(ptype)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def _publish(client: paho_client.Client, *args: Any) -> None:
    client._sock = object()  # type: ignore[assignment]  # _send_publish wants a "connection"
    try:
        client._send_publish(*args)
    finally:
        client._sock = None


def test_paho_connect_v5(paho5: tuple[paho_client.Client, list[bytes]]) -> None:
    """The CONNECT of TP-469 11.2: usp-endpoint-id (R-MQTT.13), RRI (R-MQTT.12)."""
    client, sent = paho5
    client.username_pw_set("user", "secret")
    client.will_set("usp/agent/will", b"gone", 1, True,
                    _paho_props(PacketTypes.WILLMESSAGE, WillDelayInterval=5,
                                ContentType="text/plain"))
    client._connect_properties = _paho_props(
        PacketTypes.CONNECT, RequestResponseInformation=1, SessionExpiryInterval=60,
        UserProperty=("usp-endpoint-id", "proto::agent-1"))
    client._send_connect(30)
    packet = decode(sent[0], None)
    assert packet == Connect(
        "MQTT", 5, True, 30, "proto::agent-1",
        Will("usp/agent/will", b"gone", 1, True,
             Properties([(P.CONTENT_TYPE, "text/plain"), (P.WILL_DELAY_INTERVAL, 5)])),
        "user", b"secret",
        Properties([(P.SESSION_EXPIRY_INTERVAL, 60), (P.REQUEST_RESPONSE_INFORMATION, 1),
                    (P.USER_PROPERTY, ("usp-endpoint-id", "proto::agent-1"))]))
    assert packet.properties.user_property("usp-endpoint-id") == "proto::agent-1"
    assert validate(packet, sender="client") == []


def test_paho_connect_v311(paho311: tuple[paho_client.Client, list[bytes]]) -> None:
    client, sent = paho311
    client._send_connect(0)
    packet = decode(sent[0], None)
    assert packet == Connect("MQTT", 4, True, 0, "proto::agent-1")
    assert validate(packet, sender="client") == []


def test_paho_control_packets(paho5: tuple[paho_client.Client, list[bytes]],
                              paho311: tuple[paho_client.Client, list[bytes]]) -> None:
    for (client, sent), version in ((paho5, 5), (paho311, 4)):
        client._send_puback(1)
        client._send_pubrec(2)
        client._send_pubrel(3)
        client._send_pubcomp(4)
        client._send_pingreq()
        client._send_pingresp()
        client._send_unsubscribe(False, [b"usp/agent/#", b"b"])
        decoded = [decode(data, version) for data in sent]
        assert decoded == [Puback(1), Pubrec(2), Pubrel(3), Pubcomp(4), Pingreq(), Pingresp(),
                           Unsubscribe(1, ["usp/agent/#", "b"])]
        assert all(validate(p, version) == [] for p in decoded)


def test_paho_subscribe_and_disconnect(paho5: tuple[paho_client.Client, list[bytes]],
                                       paho311: tuple[paho_client.Client, list[bytes]]) -> None:
    """TP-469 11.8: the Agent's SUBSCRIBE (R-MQTT.15)."""
    client, sent = paho5
    client._send_subscribe(False, [(b"usp/agent/#", SubscribeOptions(1, True, True, 2))],
                           _paho_props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    client._send_disconnect(PahoReasonCode(PacketTypes.DISCONNECT, identifier=0x04),
                            _paho_props(PacketTypes.DISCONNECT, ReasonString="bye"))
    assert decode(sent[0]) == Subscribe(1, [Subscription("usp/agent/#", 1, True, True, 2)],
                                        Properties([(P.SUBSCRIPTION_IDENTIFIER, 7)]))
    assert decode(sent[1]) == Disconnect(4, Properties([(P.REASON_STRING, "bye")]))
    client, sent = paho311
    client._send_subscribe(False, [(b"a/+", 2)])
    client._send_disconnect()
    assert decode(sent[0], 4) == Subscribe(1, [Subscription("a/+", 2)])
    assert decode(sent[1], 4) == Disconnect()


@SETTINGS
@given(paho_text.filter(bool), st.binary(max_size=64), st.integers(0, 2), st.booleans(),
       st.booleans(), st.integers(1, 0xFFFF), st.booleans(),
       st.sampled_from([None, "usp.msg", "application/vnd.bbf.usp.msg"]))
def test_paho_publish_decodes_with_ours(topic: str, payload: bytes, qos: int, retain: bool,
                                        dup: bool, mid: int, v5: bool,
                                        content_type: str | None) -> None:
    """TP-469 11.12/11.14/11.15: Response Topic (R-MQTT.23), Content Type (R-MQTT.27)."""
    sent: list[bytes] = []
    for client, captured in _capturing(_paho_version(v5)):
        props = None
        if v5 and content_type:
            props = _paho_props(PacketTypes.PUBLISH, ContentType=content_type,
                                ResponseTopic="usp/agent/reply")
        _publish(client, mid, topic.encode(), payload, qos, retain, dup, None, props)
        sent = captured
    packet = decode(sent[0], 5 if v5 else 4)
    expected = Publish(topic, payload, qos, retain, dup, mid if qos else 0)
    if v5 and content_type:
        expected.properties = Properties([(P.CONTENT_TYPE, content_type),
                                          (P.RESPONSE_TOPIC, "usp/agent/reply")])
    assert packet == expected


# --------------------------------------------------------------------------
# our encoder -> paho's decoders
# --------------------------------------------------------------------------

def _body(data: bytes) -> tuple[int, bytes]:
    _, start = decode_vbi(data, 1)
    return data[0], data[start:]


def _paho_version(v5: bool) -> MQTTProtocolVersion:
    return MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311


@SETTINGS
@given(paho_text.filter(bool), st.binary(max_size=64), st.integers(0, 2), st.booleans(),
       st.booleans(), st.integers(1, 0xFFFF), st.booleans(), context_and_properties())
def test_our_publish_decodes_with_paho(topic: str, payload: bytes, qos: int, retain: bool,
                                       dup: bool, mid: int, v5: bool,
                                       case: tuple[Any, Properties]) -> None:
    props = Properties([item for item in case[1].items
                        if item[0] in ALLOWED_PROPERTIES[PacketType.PUBLISH]]) if v5 \
        else Properties()
    packet = Publish(topic, payload, qos, retain, dup and qos > 0, mid if qos else 0, props)
    header, body = _body(encode(packet, 5 if v5 else 4))
    theirs = paho_packet.decode_publish(header, body, _paho_version(v5))
    assert (theirs.topic.decode(), bytes(theirs.payload), theirs.qos, theirs.retain,
            theirs.dup, theirs.mid) == (topic, payload, qos, retain, packet.dup, packet.packet_id)
    if v5:
        assert theirs.properties is not None
        assert _paho_values(theirs.properties) == _by_id(props)


# paho maps CONNACK code 1 to a 3.1.1 refusal and does not know 0x99 there (see above).
CONNACK_CODES = sorted(REASON_CODES[PacketType.CONNACK] - {0x01, 0x99})


@SETTINGS
@given(st.booleans(), st.sampled_from(CONNACK_CODES), context_and_properties())
def test_our_connack_decodes_with_paho(session: bool, code: int,
                                       case: tuple[Any, Properties]) -> None:
    """TP-469 11.10: a CONNACK with (or without) the subscribe-topic User Property."""
    props = Properties([item for item in case[1].items
                        if item[0] in ALLOWED_PROPERTIES[PacketType.CONNACK]])
    props.add(P.USER_PROPERTY, ("subscribe-topic", "usp/agent/#"))
    header, body = _body(encode(Connack(session, code, props)))
    theirs = paho_packet.decode_connack(header, body, MQTTProtocolVersion.MQTTv5)
    assert theirs.flags == int(session) and theirs.reason.value == code
    assert theirs.properties is not None
    assert _paho_values(theirs.properties) == _by_id(props)
    header, body = _body(encode(Connack(session, 5), 4))
    assert paho_packet.decode_connack(header, body, MQTTProtocolVersion.MQTTv311).rc == 5


@pytest.mark.parametrize(("packet", "decoder"), [
    (Puback(7, 0x10, Properties.of(reason_string="none")), paho_packet.decode_puback),
    (Pubrec(8, 0x80), paho_packet.decode_pubrec),
    (Pubrel(9, 0x92, Properties.of(user_properties=[("a", "b")])), paho_packet.decode_pubrel),
    (Pubcomp(10), paho_packet.decode_pubcomp),
])
def test_our_pub_responses_decode_with_paho(packet: Any, decoder: Callable[..., Any]) -> None:
    header, body = _body(encode(packet))
    theirs = decoder(header, body, MQTTProtocolVersion.MQTTv5)
    assert (theirs.mid, theirs.reason.value) == (packet.packet_id, packet.reason_code)
    assert _paho_values(theirs.properties) == _by_id(packet.properties)


def test_our_acks_and_disconnect_decode_with_paho() -> None:
    v5 = MQTTProtocolVersion.MQTTv5
    header, body = _body(encode(Suback(3, [0, 1, 2, 0x80, 0xA2],
                                       Properties.of(reason_string="r"))))
    suback = paho_packet.decode_suback(header, body, v5)
    assert suback.mid == 3 and [c.value for c in suback.reason_codes] == [0, 1, 2, 0x80, 0xA2]
    assert suback.properties.ReasonString == "r"  # type: ignore[attr-defined]
    header, body = _body(encode(Suback(3, [1, 0x80]), 4))
    assert paho_packet.decode_suback(header, body, MQTTProtocolVersion.MQTTv311).granted_qos \
        == (1, 0x80)
    header, body = _body(encode(Unsuback(4, [0, 0x11])))
    unsuback = paho_packet.decode_unsuback(header, body, v5)
    assert unsuback.mid == 4 and [c.value for c in unsuback.reason_codes] == [0, 0x11]
    header, body = _body(encode(Disconnect(0x8E, Properties.of(server_reference="b:1883"))))
    disconnect = paho_packet.decode_disconnect(header, body, v5)
    assert disconnect.reason is not None and disconnect.reason.value == 0x8E
    assert disconnect.properties is not None
    assert disconnect.properties.ServerReference == "b:1883"  # type: ignore[attr-defined]
