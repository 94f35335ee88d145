"""MQTT codec: exact bytes, every packet type in both versions, malformed
input, wire-level findings and the streaming decoder.

R-MQTT.1 (MQTT 5.0) and R-MQTT.2 (MQTT 3.1.1): the suite's broker must read
both protocol levels byte for byte (TP-469 11.2 CONNECT, 11.8 SUBSCRIBE,
11.12 PUBLISH, 11.13 QoS).
"""

from __future__ import annotations

import pytest

from conformance.mtp.mqtt import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    MQTTDecodeError,
    MQTTDecoder,
    MQTTEncodeError,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
    PropertyId,
    ProtocolVersion,
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
    decode_vbi,
    encode,
    encode_vbi,
)
from conformance.mtp.mqtt.text import decode_text, encode_text, is_well_formed

V5 = ProtocolVersion.V5
V4 = ProtocolVersion.V3_1_1
H = bytes.fromhex

# --------------------------------------------------------------------------
# Exact bytes (non-normative examples of MQTT 5.0 chapter 3 and paho output)
# --------------------------------------------------------------------------


def test_connect_variable_header_example() -> None:
    """MQTT 5.0 Figure 3-6: name, level 5, flags 0xCE, Keep Alive 10,
    Session Expiry Interval 10."""
    packet = Connect(keep_alive=10, client_id="c", will=Will("w", b"", 1),
                     username="u", password=b"p",
                     properties=Properties.of(session_expiry_interval=10))
    data = encode(packet)
    assert data[2:18] == H("00044d5154540 5ce000a 05 110000000a".replace(" ", ""))


def test_publish_variable_header_example() -> None:
    """MQTT 5.0 Figure 3-9: Topic Name a/b, Packet Identifier 10, no properties."""
    data = encode(Publish("a/b", b"", qos=1, packet_id=10))
    assert data == H("3208" "0003612f62" "000a" "00")


def test_subscribe_examples() -> None:
    """MQTT 5.0 Figures 3-19 and 3-21: a/b QoS 1 and c/d QoS 2, id 10."""
    data = encode(Subscribe(10, [Subscription("a/b", 1), Subscription("c/d", 2)]))
    assert data == H("820f" "000a" "00" "0003612f6201" "0003632f6402")
    assert encode(Subscribe(10, [Subscription("a/b", 1)]), V4) == H("8208000a0003612f6201")


@pytest.mark.parametrize(("packet", "version", "wire"), [
    (Pingreq(), V5, "c000"), (Pingresp(), V4, "d000"), (Disconnect(), V5, "e000"),
    (Disconnect(), V4, "e000"), (Auth(), V5, "f000"),
    (Puback(3), V5, "40020003"), (Pubrec(4, 0x10), V5, "500300" "0410"),
    (Pubrel(5), V4, "62020005"), (Pubcomp(6), V4, "70020006"),
    (Connack(False, 0), V5, "2003000000"), (Connack(True, 0), V4, "20020100"),
    (Connack(False, 5), V4, "20020005"), (Suback(1, [0, 1, 2, 0x80]), V4, "9006000100010280"),
    (Unsuback(7), V4, "b0020007"), (Unsuback(7, [0x11]), V5, "b00400070011"),
    (Disconnect(0x8E), V5, "e0018e"),
    (Auth(0x18, Properties.of(authentication_method="m")), V5, "f006180415" "00016d"),
    (Connect(protocol_level=4, client_id="a"), V4, "100d00044d5154540402000000016" "1"),
])
def test_exact_encodings(packet: Packet, version: ProtocolVersion, wire: str) -> None:
    assert encode(packet, version) == H(wire)
    assert decode(H(wire), version) == packet


def test_connect_level_3_uses_the_311_layout() -> None:
    packet = Connect("MQIsdp", 3, client_id="x")
    data = encode(packet, V5)
    assert data == H("100f0006" + b"MQIsdp".hex() + "030200000001" + "78")
    decoded = decode(data, None)
    assert decoded == packet and decoded.version is V4


# --------------------------------------------------------------------------
# Every packet type, both versions
# --------------------------------------------------------------------------

PROPS5 = Properties.of(user_properties=[("usp-endpoint-id", "proto::agent")])

PACKETS_V5: list[Packet] = [
    Connect(client_id="proto::agent", keep_alive=60, clean_start=False,
            will=Will("w/t", b"bye", 2, True, Properties.of(will_delay_interval=5)),
            username="user", password=b"\x00pw",
            properties=Properties.of(request_response_information=1, receive_maximum=20,
                                     user_properties=[("usp-endpoint-id", "proto::agent")])),
    Connect(),
    Connack(True, 0, Properties.of(response_information="usp/replies/",
                                   user_properties=[("subscribe-topic", "usp/agent/#")])),
    Connack(False, 0x87),
    Publish("usp/controller", b"\x0a\x03rec", 1, False, True, 65535,
            Properties.of(response_topic="usp/agent/reply", content_type="usp.msg")),
    Publish("t", b"", 0, True, False, 0, PROPS5),
    Publish("t", b"x" * 300, 2, False, False, 1),
    Puback(1), Puback(2, 0x10), Puback(3, 0x87, PROPS5),
    Pubrec(1), Pubrec(2, 0x80, Properties.of(reason_string="no")),
    Pubrel(1), Pubrel(2, 0x92), Pubcomp(1), Pubcomp(2, 0x92, PROPS5),
    Subscribe(9, [Subscription("usp/agent/#", 1, True, True, 2),
                  Subscription("$share/g/x", 0, False, False, 1)],
              Properties.of(subscription_identifier=268_435_455)),
    Suback(9, [1, 0x80, 0xA2], Properties.of(reason_string="partly")),
    Unsubscribe(10, ["a", "b/+"], PROPS5), Unsuback(10, [0, 0x11]),
    Pingreq(), Pingresp(),
    Disconnect(), Disconnect(0x04), Disconnect(0, Properties.of(session_expiry_interval=0)),
    Auth(), Auth(0x19, Properties.of(authentication_method="SCRAM", authentication_data=b"d")),
]

PACKETS_V4: list[Packet] = [
    Connect(protocol_level=4, client_id="proto::agent", keep_alive=60,
            will=Will("w", b"", 1, False), username="u", password=b"p"),
    Connect(protocol_level=4, clean_start=False, password=b"only"),
    Connack(True, 0), Connack(False, 3),
    Publish("usp/controller/reply-to=usp%2Fagent", b"rec", 1, True, True, 42),  # R-MQTT.24
    Publish("t", b"", 0),
    Puback(1), Pubrec(2), Pubrel(3), Pubcomp(4),
    Subscribe(5, [Subscription("a/#", 1), Subscription("b", 2)]), Suback(5, [1, 0x80]),
    Unsubscribe(6, ["a/#"]), Unsuback(6), Pingreq(), Pingresp(), Disconnect(),
]


@pytest.mark.parametrize("packet", PACKETS_V5, ids=lambda p: type(p).__name__)
def test_round_trip_v5(packet: Packet) -> None:
    data = encode(packet, V5)
    decoded = decode(data, V5)
    assert decoded == packet
    assert decoded.raw == data
    assert decoded.flags == data[0] & 0x0F
    assert encode(decoded, V5) == data


@pytest.mark.parametrize("packet", PACKETS_V4, ids=lambda p: type(p).__name__)
def test_round_trip_v311(packet: Packet) -> None:
    data = encode(packet, V4)
    decoded = decode(data, V4)
    assert decoded == packet
    assert encode(decoded, 4) == data


def test_all_packet_types_are_covered() -> None:
    assert {type(p) for p in PACKETS_V5} == {
        Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe, Suback,
        Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth}
    assert {type(p) for p in PACKETS_V4} == {
        Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe, Suback,
        Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect}


def test_decoded_fields_keep_wire_details() -> None:
    data = encode(Connect(will=Will("w", b"", 1, True), username="u"))
    decoded = decode(data)
    assert isinstance(decoded, Connect)
    assert decoded.connect_flags == 0b1010_1110
    assert decoded.clean_session is True and decoded.packet_type == 1
    connack = decode(H("20030100" "00"))
    assert isinstance(connack, Connack) and connack.acknowledge_flags == 1


def test_reason_code_short_forms_v5() -> None:
    """MQTT 5.0 §3.4.2.1 / §3.14.2.1: Reason Code and Property Length may be omitted."""
    assert decode(H("40020001")) == Puback(1, 0)
    assert decode(H("4003000110")) == Puback(1, 0x10)
    assert decode(H("400400011000")) == Puback(1, 0x10)
    assert decode(H("e0018e")) == Disconnect(0x8E)
    assert decode(H("e0028e00")) == Disconnect(0x8E)
    assert encode(Puback(1, 0x10)) == H("4003000110")
    assert encode(Disconnect(0x8E)) == H("e0018e")


def test_decoding_keeps_invalid_utf8_and_reencodes_it() -> None:
    """MQTT-1.5.4-1: ill-formed strings survive decoding for validate()."""
    data = H("3005" "0002fffe" "00")
    packet = decode(data)
    assert isinstance(packet, Publish)
    assert packet.topic == "\udcff\udcfe" and not is_well_formed(packet.topic)
    assert encode(packet) == data
    surrogate = H("eda080")  # U+D800 encoded, forbidden by MQTT-1.5.4-1
    assert encode_text(decode_text(surrogate)) == surrogate
    assert encode_text("\ud800") == surrogate
    assert is_well_formed("ok/😀")


# --------------------------------------------------------------------------
# Variable Byte Integers and the Remaining Length
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "wire"), [
    (0, "00"), (127, "7f"), (128, "8001"), (16_383, "ff7f"), (16_384, "808001"),
    (2_097_151, "ffff7f"), (2_097_152, "80808001"), (268_435_455, "ffffff7f"),
])
def test_vbi_boundaries(value: int, wire: str) -> None:
    """MQTT 5.0 Table 1-1."""
    assert encode_vbi(value) == H(wire)
    assert decode_vbi(H(wire)) == (value, len(H(wire)))


@pytest.mark.parametrize("value", [-1, 268_435_456])
def test_vbi_out_of_range(value: int) -> None:
    with pytest.raises(MQTTEncodeError):
        encode_vbi(value)


def test_vbi_decode_errors() -> None:
    with pytest.raises(MQTTDecodeError, match="longer than 4 bytes"):
        decode_vbi(H("8080808001"))
    with pytest.raises(MQTTDecodeError, match="truncated") as err:
        decode_vbi(H("00ff"), 1)
    assert err.value.offset == 1


def test_maximum_remaining_length_header_is_accepted() -> None:
    decoder = MQTTDecoder(V5)
    assert list(decoder.feed(H("30ffffff7f"))) == []
    assert decoder.buffered == 5
    assert list(decoder.feed(b"\x00" * 100)) == []


def test_large_publish_round_trip() -> None:
    packet = Publish("t", b"\xaa" * 2_100_000, 1, packet_id=1)
    data = encode(packet)
    assert data[1:5] == encode_vbi(len(data) - 5)
    assert decode(data) == packet


# --------------------------------------------------------------------------
# Malformed input: one documented exception with an offset
# --------------------------------------------------------------------------

# Framing problems: (wire, version, offset, reason).
BAD_FRAMES: list[tuple[str, ProtocolVersion | None, int, str]] = [
    ("", V5, 0, "fixed header is truncated"),
    ("30", V5, 1, "fixed header is truncated"),
    ("3080808080", V5, 1, "longer than 4 bytes"),
    ("308080", V5, 1, "truncated"),
    ("0000", V5, 0, "packet type 0 is reserved"),
    ("300200", V5, 3, "packet is truncated"),
    ("c00000", V5, 2, "after the end of the packet"),
    ("f000", V4, 0, "AUTH) is reserved in MQTT 3.1.1"),
    ("3003000161", None, 0, "before CONNECT"),
]

# Body problems: (first byte, body, version, offset inside the body, reason).
BAD_BODIES: list[tuple[str, str, ProtocolVersion, int, str]] = [
    ("c0", "00", V5, 0, "unexpected bytes"),
    ("30", "000561", V5, 0, "Topic Name: length 5 runs past the end"),
    ("30", "00", V5, 0, "Topic Name: length prefix is truncated"),
    ("32", "00016100", V5, 3, "Packet Identifier: Two Byte Integer is truncated"),
    ("30", "000161" "050101", V5, 3, "properties length 5 runs past the end"),
    ("30", "000161" "027f00", V5, 4, "unknown property identifier 0x7f"),
    ("30", "000161" "03ff7f00", V5, 4, "unknown property identifier"),
    ("30", "000161" "03020000", V5, 5, "Message Expiry Interval: Four Byte Integer is trunc"),
    ("30", "000161" "040b808080", V5, 5, "Subscription Identifier: Variable Byte Integer is"),
    ("30", "000161" "050b80808080", V5, 5, "longer than 4 bytes"),
    ("30", "000161" "0101", V5, 5, "Payload Format Indicator: value is missing"),
    ("30", "000161" "05" "2600016100", V5, 8, "User Property value: length prefix"),
    ("30", "000161" "03" "090005", V5, 5, "Correlation Data: length 5 runs past"),
    ("30", "000161" "02" "2300", V5, 5, "Topic Alias: Two Byte Integer is truncated"),
    ("40", "00", V5, 0, "Packet Identifier"),
    ("40", "000100", V4, 2, "unexpected bytes"),
    ("20", "000000", V4, 2, "unexpected bytes"),
    ("b0", "000100", V4, 2, "unexpected bytes"),
    ("e0", "00", V4, 0, "unexpected bytes"),
    ("e0", "8e0500", V5, 1, "properties length 5 runs past"),
    ("82", "000100" "00", V5, 3, "Topic Filter: length prefix is truncated"),
    ("82", "000100" "000161", V5, 6, "Subscription Options: byte is missing"),
    ("a2", "000100" "0001", V5, 3, "Topic Filter: length 1 runs past the end"),
    ("10", "000451", V5, 0, "Protocol Name: length 4 runs past"),
    ("10", "00044d515454", V5, 6, "Protocol Level"),
    ("10", "00044d515454" "05", V5, 7, "Connect Flags"),
    ("10", "00044d515454" "0502" "00", V5, 8, "Keep Alive"),
    ("10", "00044d515454" "0502" "0000", V5, 10, "properties length"),
    ("10", "00044d515454" "0502" "0000" "00", V5, 11, "Client Identifier"),
    ("10", "00044d515454" "0502" "0000" "00" "0000" "00", V5, 13, "unexpected bytes"),
    ("10", "00044d515454" "0504" "0000" "00" "0000", V5, 13, "Will Properties length"),
    ("10", "00044d515454" "0504" "0000" "00" "0000" "00", V5, 14, "Will Topic"),
    ("10", "00044d515454" "0504" "0000" "00" "0000" "00" "0000", V5, 16, "Will Payload"),
    ("10", "00044d515454" "0580" "0000" "00" "0000", V5, 13, "User Name: length prefix"),
    ("10", "00044d515454" "0440" "0000" "0000", V4, 12, "Password: length prefix"),
    ("20", "00", V5, 1, "Connect Reason Code: byte is missing"),
    ("20", "000002", V5, 2, "properties length 2 runs past"),
]


@pytest.mark.parametrize(("wire", "version", "offset", "reason"), BAD_FRAMES)
def test_bad_frames_raise_decode_error(wire: str, version: ProtocolVersion | None,
                                       offset: int, reason: str) -> None:
    with pytest.raises(MQTTDecodeError) as err:
        decode(H(wire), version)
    assert reason in err.value.reason
    assert err.value.offset == offset


@pytest.mark.parametrize(("first", "body", "version", "offset", "reason"), BAD_BODIES)
def test_bad_bodies_raise_decode_error(first: str, body: str, version: ProtocolVersion,
                                       offset: int, reason: str) -> None:
    """Malformed Packets (MQTT 5.0 §1.2, §4.13): one exception type, with the offset."""
    data = H(first) + encode_vbi(len(H(body))) + H(body)
    with pytest.raises(MQTTDecodeError) as err:
        decode(data, version)
    assert reason in err.value.reason
    assert err.value.offset == 2 + offset
    assert err.value.reason_code == 0x81
    assert err.value.packet_type == H(first)[0] >> 4
    assert isinstance(err.value, ValueError)
    assert str(err.value).endswith(f"(at byte {2 + offset})")


def test_decode_error_names_the_packet_type() -> None:
    with pytest.raises(MQTTDecodeError) as err:
        decode(H("3003000561"))
    assert err.value.packet_type == 3


# --------------------------------------------------------------------------
# Findings only visible in the bytes
# --------------------------------------------------------------------------

def test_non_minimal_remaining_length_is_a_wire_violation() -> None:
    packet = decode(H("c08000"))
    assert packet == Pingreq()
    (violation,) = packet.wire_violations
    assert violation.code == "non-minimal-vbi" and violation.rule == "MQTT-1.5.5-1"
    assert decode(H("c08000"), V4).wire_violations[0].rule == "MQTT-3.1.1 §2.2.3"


def test_non_minimal_vbi_in_properties_is_a_wire_violation() -> None:
    packet = decode(H("3007" "000161" "03" "0b8100"))  # Subscription Identifier 1 as 81 00
    assert isinstance(packet, Publish)
    assert packet.properties.subscription_identifiers == [1]
    assert [v.code for v in packet.wire_violations] == ["non-minimal-vbi"]
    ident = decode(H("3007" "000161" "03" "810001"))  # identifier 0x01 written as 81 00
    assert isinstance(ident, Publish)
    assert ident.properties.payload_format_indicator == 1
    assert "property identifier" in ident.wire_violations[0].message


@pytest.mark.parametrize(("wire", "packet"), [
    ("20020100", Connack(True, 0)),
    ("90020001", Suback(1, [])),
    ("b0020001", Unsuback(1, [])),
    ("f00118", Auth(0x18)),
])
def test_missing_property_length_is_a_wire_violation(wire: str, packet: Packet) -> None:
    """MQTT-2.2.2-1: an empty property set is written as Property Length 0."""
    decoded = decode(H(wire), V5)
    assert decoded == packet
    assert [v.rule for v in decoded.wire_violations] == ["MQTT-2.2.2-1"]


# --------------------------------------------------------------------------
# Encoder errors
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("packet", "version", "match"), [
    (Publish("t", qos=1, packet_id=70_000), V5, "packet_id"),
    (Publish("t", qos=5), V5, "qos"),
    (Publish("t", payload="text"), V5, "payload must be bytes"),  # type: ignore[arg-type]
    (Publish(7), V5, "topic must be a str"),  # type: ignore[arg-type]
    (Publish("t" * 65_536), V5, "more than 65535"),
    (Connect(will=Will("w", b"", qos=4)), V5, "will.qos"),
    (Connect(keep_alive=-1), V5, "keep_alive"),
    (Connect(password="pw"), V5, "password must be bytes"),  # type: ignore[arg-type]
    (Connect(password=b"x" * 65_536), V5, "more than 65535"),
    (Connack(False, 256), V5, "reason_code"),
    (Suback(1, [300]), V5, "reason_codes"),
    (Subscribe(1, [Subscription("t", qos=4)]), V5, "qos"),
    (Subscribe(1, [Subscription("t", retain_handling=7)]), V5, "retain_handling"),
    (Publish("t", properties=Properties([(0x7F, 1)])), V5, "unknown property identifier"),
    (Publish("t", properties=Properties.of(topic_alias=70_000)), V5, "Topic Alias"),
    (Publish("t", properties=Properties.of(payload_format_indicator=256)), V5, "byte"),
    (Publish("t", properties=Properties.of(message_expiry_interval=-1)), V5, "Four Byte"),
    (Publish("t", properties=Properties.of(subscription_identifier=2**28)), V5, "Variable"),
    (Publish("t", properties=Properties.of(subscription_identifier="1")), V5, "not an int"),
    (Publish("t", properties=Properties.of(content_type=b"x")), V5, "must be a str"),
    (Publish("t", properties=Properties.of(correlation_data="x")), V5, "must be bytes"),
    (Publish("t", properties=Properties([(PropertyId.USER_PROPERTY, "x")])), V5, "pair"),
    (Publish("t", properties=PROPS5), V4, "MQTT 3.1.1 has no properties"),
    (Connect(protocol_level=4, will=Will(properties=PROPS5)), V4, "no properties"),
    (Puback(1, 0x80), V4, "no reason code"),
    (Disconnect(0x80), V4, "no reason code"),
    (Auth(), V4, "AUTH does not exist"),
    (Unsuback(1, [0]), V4, "no reason codes"),
])
def test_encode_errors(packet: Packet, version: ProtocolVersion, match: str) -> None:
    with pytest.raises(MQTTEncodeError, match=match):
        encode(packet, version)


# --------------------------------------------------------------------------
# Streaming decoder
# --------------------------------------------------------------------------

def _stream(packets: list[Packet], version: ProtocolVersion) -> bytes:
    return b"".join(encode(p, version) for p in packets)


def test_stream_byte_by_byte_and_in_one_chunk() -> None:
    for version, packets in ((V5, PACKETS_V5), (V4, PACKETS_V4)):
        first = Connect(protocol_level=version)
        data = _stream([first, *packets], version)
        one = MQTTDecoder()
        assert list(one.feed(data)) == [first, *packets]
        assert one.version is version and one.offset == len(data) and one.buffered == 0
        dribble = MQTTDecoder()
        out: list[Packet] = []
        for index in range(len(data)):
            out.extend(dribble.feed(data[index:index + 1]))
        assert out == [first, *packets]


def test_server_decoder_learns_the_version_from_connect() -> None:
    """R-MQTT.2: a 3.1.1 client's PUBLISH has no property block."""
    data = encode(Connect(protocol_level=4), V4) + encode(Publish("t", b"\x00\x01"), V4)
    packets = list(MQTTDecoder().feed(data))
    assert packets[1] == Publish("t", b"\x00\x01")


def test_fixed_version_decoder_does_not_learn() -> None:
    decoder = MQTTDecoder(V5, learn_version=False)
    list(decoder.feed(encode(Connect(protocol_level=4))))
    assert decoder.version is V5


def test_stream_error_offsets_and_recovery() -> None:
    """A malformed but framed packet is consumed; the next one still decodes."""
    decoder = MQTTDecoder(V5)
    good = encode(Pingreq())
    bad = H("3003000561")
    packets: list[Packet] = []
    with pytest.raises(MQTTDecodeError) as err:
        for packet in decoder.feed(good + bad + good):
            packets.append(packet)
    assert packets == [Pingreq()]
    assert err.value.offset == len(good) + 2
    assert err.value.raw == bad and err.value.packet_type == 3
    assert list(decoder.feed(b"")) == [Pingreq()]


def test_stream_packet_before_connect_is_an_error() -> None:
    """MQTT-3.1.0-1: a server cannot read anything before CONNECT."""
    decoder = MQTTDecoder()
    with pytest.raises(MQTTDecodeError, match="before CONNECT"):
        list(decoder.feed(encode(Pingreq())))


def test_stream_broken_framing_poisons_the_decoder() -> None:
    decoder = MQTTDecoder(V5)
    with pytest.raises(MQTTDecodeError, match="longer than 4 bytes") as err:
        list(decoder.feed(encode(Pingreq()) + H("30ffffffff")))
    assert err.value.offset == 3
    with pytest.raises(MQTTDecodeError, match="longer than 4 bytes"):
        list(decoder.feed(encode(Pingreq())))


def test_stream_maximum_packet_size() -> None:
    """MQTT 5.0 §3.1.2.11.4 / §3.2.2.3.6: too large packets are refused (0x95)."""
    decoder = MQTTDecoder(V5, max_packet_size=10)
    assert list(decoder.feed(encode(Publish("t", b"1234")))) == [Publish("t", b"1234")]
    with pytest.raises(MQTTDecodeError, match="exceeds the Maximum Packet Size") as err:
        list(decoder.feed(H("30ffffff7f")))
    assert err.value.reason_code == 0x95


def test_stream_accepts_bytearray_and_memoryview() -> None:
    data = encode(Pingresp())
    decoder = MQTTDecoder(V5)
    assert list(decoder.feed(bytearray(data))) + list(decoder.feed(memoryview(data))) == \
        [Pingresp(), Pingresp()]
