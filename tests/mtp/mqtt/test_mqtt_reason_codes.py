"""MQTT 5.0 Reason Codes (§2.4) and MQTT 3.1.1 return codes (R-MQTT.1, R-MQTT.2)."""

from __future__ import annotations

from conformance.mtp.mqtt import REASON_CODES, ConnectReturnCode, PacketType, ReasonCode
from conformance.mtp.mqtt import reason_code_name as name
from conformance.mtp.mqtt.reason_codes import SUBACK_RETURN_CODES_V311


def test_aliases_share_value_zero() -> None:
    assert ReasonCode.SUCCESS == ReasonCode.NORMAL_DISCONNECTION == ReasonCode.GRANTED_QOS_0 == 0
    assert ReasonCode(0x99) is ReasonCode.PAYLOAD_FORMAT_INVALID
    assert len({int(code) for code in ReasonCode}) == 43


def test_is_error() -> None:
    assert ReasonCode.UNSPECIFIED_ERROR.is_error and ReasonCode.MALFORMED_PACKET.is_error
    assert not ReasonCode.NO_MATCHING_SUBSCRIBERS.is_error


def test_names_per_packet() -> None:
    assert name(PacketType.DISCONNECT, 0) == "NORMAL_DISCONNECTION"
    assert name(PacketType.SUBACK, 0) == "GRANTED_QOS_0"
    assert name(PacketType.CONNACK, 0) == "SUCCESS"
    assert name(PacketType.CONNACK, 0x87) == "NOT_AUTHORIZED"
    assert name(PacketType.CONNACK, 0x03) == "0x03"


def test_tables() -> None:
    assert set(REASON_CODES) == {2, 4, 5, 6, 7, 9, 11, 14, 15}
    assert REASON_CODES[PacketType.PUBREL] == {0x00, 0x92}
    assert REASON_CODES[PacketType.AUTH] == {0x00, 0x18, 0x19}
    assert 0x04 in REASON_CODES[PacketType.DISCONNECT]
    assert 0x04 not in REASON_CODES[PacketType.CONNACK]
    assert all(code in ReasonCode._value2member_map_ for codes in REASON_CODES.values()
               for code in codes)
    assert set(SUBACK_RETURN_CODES_V311) == {0, 1, 2, 0x80}
    assert [int(c) for c in ConnectReturnCode] == [0, 1, 2, 3, 4, 5]
