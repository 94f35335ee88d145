"""``encode(..., overrides=...)``: deliberately broken packets for negative
tests (the suite's broker sends them to check how an Agent copes; R-MQTT.1
and R-MQTT.2 make the MQTT rules binding, TP-469 section 11)."""

from __future__ import annotations

import pytest

from conformance.mtp.mqtt import (
    WIRE_OVERRIDES,
    Connack,
    Connect,
    Disconnect,
    MQTTDecodeError,
    MQTTDecoder,
    MQTTEncodeError,
    Pingreq,
    Properties,
    ProtocolVersion,
    Puback,
    Publish,
    Will,
    decode,
    encode,
    validate,
)

H = bytes.fromhex


def _codes(packet: object, version: int = 5) -> set[str]:
    return {v.code for v in validate(packet, version)}  # type: ignore[arg-type]


def test_flags_and_packet_type() -> None:
    data = encode(Pingreq(), overrides={"flags": 0b1111})
    assert data == H("cf00")
    packet = decode(data)
    assert packet.flags == 0b1111 and "reserved-flags" in _codes(packet)
    assert encode(Pingreq(), overrides={"packet_type": 0}) == H("0000")
    with pytest.raises(MQTTDecodeError, match="reserved"):
        decode(encode(Pingreq(), overrides={"packet_type": 0}))


def test_flags_override_does_not_need_a_valid_qos() -> None:
    assert encode(Publish("t", qos=3, packet_id=1), overrides={"flags": 0})[0] == 0x30


def test_remaining_length_value_and_bytes() -> None:
    data = encode(Publish("t", b"abc"), overrides={"remaining_length": 999})
    assert data[1:3] == H("e707")
    with pytest.raises(MQTTDecodeError, match="truncated"):
        decode(data)
    decoder = MQTTDecoder(5)
    assert list(decoder.feed(data)) == [] and decoder.buffered == len(data)
    padded = encode(Pingreq(), overrides={"remaining_length_bytes": b"\x80\x80\x00"})
    assert padded == H("c0808000")
    assert "non-minimal-vbi" in _codes(decode(padded))
    with pytest.raises(MQTTDecodeError, match="longer than 4 bytes"):
        decode(encode(Pingreq(), overrides={"remaining_length_bytes": b"\x80" * 4 + b"\x00"}))


def test_body_and_trailing() -> None:
    assert encode(Puback(1), overrides={"body": b"\x00"}) == H("400100")
    assert encode(Pingreq(), overrides={"trailing": b"\x00"}) == H("c00100")
    with pytest.raises(MQTTDecodeError, match="unexpected bytes"):
        decode(encode(Pingreq(), overrides={"trailing": b"\x00"}))


def test_raw_properties_and_property_length() -> None:
    data = encode(Publish("t"), overrides={"raw_properties": b"\x7f\x00"})
    assert data == H("3006" "000174" "027f00")
    with pytest.raises(MQTTDecodeError, match="unknown property identifier 0x7f"):
        decode(data)
    data = encode(Publish("t", properties=Properties.of(content_type="x")),
                  overrides={"property_length": 40})
    with pytest.raises(MQTTDecodeError, match="properties length 40 runs past"):
        decode(data)
    # Duplicated Content Type written by hand: decodes, and validate() objects.
    dup = encode(Publish("t"), overrides={"raw_properties": H("03000161" "03000162")})
    assert "duplicate-property" in _codes(decode(dup))


def test_property_block_forced_into_a_311_packet() -> None:
    data = encode(Publish("t", b"p"), 4, overrides={"raw_properties": b""})
    assert data == H("3005" "000174" "00" "70")
    assert decode(data, 4) == Publish("t", b"\x00p")


def test_will_property_overrides() -> None:
    packet = Connect(will=Will("w", b""))
    data = encode(packet, overrides={"will_raw_properties": H("1800000005" "1800000006")})
    assert "duplicate-property" in _codes(decode(data))
    with pytest.raises(MQTTDecodeError, match="Will Properties length"):
        decode(encode(packet, overrides={"will_property_length": 99}))


def test_connect_flags() -> None:
    base = Connect(client_id="c")
    assert "connect-reserved-flag" in _codes(decode(encode(base, overrides={
        "connect_flags": 0x03})))
    assert "will-qos-without-will" in _codes(decode(encode(base, overrides={
        "connect_flags": 0x0A})))
    assert "will-retain-without-will" in _codes(decode(encode(base, overrides={
        "connect_flags": 0x22})))
    # User Name flag without a User Name: the payload ends early.
    with pytest.raises(MQTTDecodeError, match="User Name"):
        decode(encode(base, overrides={"connect_flags": 0x82}))


def test_acknowledge_flags() -> None:
    data = encode(Connack(), overrides={"acknowledge_flags": 0xFF})
    assert data == H("2003ff0000")
    assert "connack-reserved-flags" in _codes(decode(data))


def test_short_form_off() -> None:
    assert encode(Puback(1), overrides={"short_form": False}) == H("40040001" "0000")
    assert encode(Disconnect(), overrides={"short_form": False}) == H("e0020000")
    assert encode(Disconnect(0x80), overrides={"short_form": False}) == H("e0028000")


def test_field_overrides_apply_to_a_copy() -> None:
    packet = Publish("a/b", b"", qos=1, packet_id=7)
    data = encode(packet, overrides={"qos": 3, "packet_id": 0, "topic": "a/#"})
    assert packet.qos == 1 and packet.topic == "a/b"
    codes = _codes(decode(data))
    assert {"qos-invalid", "packet-id-zero", "topic-name-wildcard"} <= codes
    connect = decode(encode(Connect(), overrides={"protocol_name": "MQTX"}))
    assert isinstance(connect, Connect) and connect.protocol_name == "MQTX"


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(MQTTEncodeError, match="unknown override"):
        encode(Pingreq(), overrides={"colour": 1})
    assert "flags" in WIRE_OVERRIDES


def test_connect_layout_follows_its_level_not_the_argument() -> None:
    data = encode(Connect(protocol_level=4), ProtocolVersion.V5)
    assert data == H("100c" "00044d515454" "04" "02" "0000" "0000")  # no property block
    connect = decode(data, None)
    assert isinstance(connect, Connect) and connect.protocol_level == 4
