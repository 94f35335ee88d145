"""Record building and parsing (R-ENC.1, TR-369 Record types)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.usp import records as r
from conformance.usp.messages import request
from conformance.usp.schema import MQTTConnectRecord, PayloadSARState, PayloadSecurity

C, A = "proto::controller-1", "os::012345-ABC"


def test_no_session_record_round_trip_with_security_fields():
    msg = request("get", {"param_paths": ["Device.DeviceInfo."]}, msg_id="m1")
    sec = r.Security(payload_security=PayloadSecurity.TLS12, mac_signature=b"\x01\x02",
                     sender_cert=b"-----CERT-----")
    rec = r.no_session_record(msg, to_id=A, from_id=C, version="1.3", security=sec)
    back = r.parse_record(r.serialize(rec))
    assert back == rec
    assert (back.version, back.to_id, back.from_id) == ("1.3", A, C)
    assert back.payload_security == PayloadSecurity.TLS12
    assert back.mac_signature == b"\x01\x02" and back.sender_cert == b"-----CERT-----"
    assert r.record_kind(back) == "no_session_context"
    assert r.unwrap_msg(back) == msg


def test_no_session_record_accepts_serialized_payload():
    payload = request("get", {"param_paths": ["Device."]}, msg_id="m2").SerializeToString()
    rec = r.no_session_record(payload, to_id=A, from_id=C)
    assert r.record_payload(rec) == payload
    assert rec.version == "1.4"


def test_session_record_fields():
    rec = r.session_record(to_id=A, from_id=C, session_id=7, sequence_id=3, expected_id=2,
                           retransmit_id=1, payloads=[b"ab", b"cd"],
                           payload_sar_state=PayloadSARState.BEGIN,
                           payloadrec_sar_state=PayloadSARState.INPROCESS)
    sc = r.parse_record(r.serialize(rec)).session_context
    assert (sc.session_id, sc.sequence_id, sc.expected_id, sc.retransmit_id) == (7, 3, 2, 1)
    assert list(sc.payload) == [b"ab", b"cd"]
    assert sc.payload_sar_state == PayloadSARState.BEGIN
    assert sc.payloadrec_sar_state == PayloadSARState.INPROCESS
    assert r.record_payload(rec) is None  # segmented: reassembly is the session's job


def test_single_unsegmented_session_payload_unwraps():
    msg = request("get", {"param_paths": ["Device."]}, msg_id="m3")
    rec = r.session_record(to_id=A, from_id=C, session_id=2, sequence_id=1, expected_id=1,
                           payloads=[msg.SerializeToString()])
    assert r.unwrap_msg(rec) == msg


@pytest.mark.parametrize("mtp, kind", [("mqtt", "mqtt_connect"), ("stomp", "stomp_connect"),
                                       ("websocket", "websocket_connect"), ("uds", "uds_connect")])
def test_connect_records(mtp, kind):
    rec = r.connect_record(mtp, to_id=C, from_id=A)
    back = r.parse_record(r.serialize(rec))
    assert r.record_kind(back) == kind and kind in r.CONNECT_KINDS
    assert r.unwrap_msg(back) is None


def test_mqtt_and_stomp_connect_details():
    rec = r.mqtt_connect_record(to_id=C, from_id=A, mqtt_version=MQTTConnectRecord.V3_1_1,
                                subscribed_topic="/usp/agent")
    assert rec.mqtt_connect.version == MQTTConnectRecord.V3_1_1
    assert rec.mqtt_connect.subscribed_topic == "/usp/agent"
    rec = r.stomp_connect_record(to_id=C, from_id=A, subscribed_destination="/queue/agent")
    assert rec.stomp_connect.subscribed_destination == "/queue/agent"


def test_disconnect_record():
    rec = r.disconnect_record(to_id=C, from_id=A, reason="rebooting", reason_code=7003)
    back = r.parse_record(r.serialize(rec))
    assert r.record_kind(back) == "disconnect"
    assert (back.disconnect.reason, back.disconnect.reason_code) == ("rebooting", 7003)


def test_unknown_mtp_for_connect_record():
    with pytest.raises(ValueError, match="unknown MTP 'coap'"):
        r.connect_record("coap", to_id=C, from_id=A)


def test_record_kind_none_when_unset():
    rec = r.parse_record(b"\x0a\x031.4")
    assert r.record_kind(rec) is None and r.record_payload(rec) is None


def test_parse_errors_are_documented_types():
    with pytest.raises(r.RecordDecodeError, match="not a USP Record"):
        r.parse_record(b"\xff\xff\xff")
    rec = r.no_session_record(b"\xff\xff", to_id=A, from_id=C)
    with pytest.raises(r.MsgDecodeError, match="not a USP Msg"):
        r.unwrap_msg(rec)


def test_serialize_is_deterministic_for_maps():
    a = request("operate", {"command": "Device.X()", "input_args": {"b": "2", "a": "1"}}, msg_id="x")
    b = request("operate", {"command": "Device.X()", "input_args": {"a": "1", "b": "2"}}, msg_id="x")
    assert r.serialize(a) == r.serialize(b)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_parsers(data):
    for parse, err in ((r.parse_record, r.RecordDecodeError), (r.parse_msg, r.MsgDecodeError)):
        try:
            parse(data)
        except err:
            pass


@settings(max_examples=100, deadline=None)
@given(to_id=st.text(max_size=30), from_id=st.text(max_size=30), payload=st.binary(max_size=100),
       version=st.sampled_from(["1.0", "1.3", "1.4", ""]))
def test_no_session_round_trip_property(to_id, from_id, payload, version):
    rec = r.no_session_record(payload, to_id=to_id, from_id=from_id, version=version)
    back = r.parse_record(r.serialize(rec))
    assert (back.to_id, back.from_id, back.version) == (to_id, from_id, version)
    assert r.record_payload(back) == payload


def test_to_mapping_gives_non_payload_fields_as_plain_values():
    """Matchers see Record fields (R-E2E.*) as ints, names and hex, never protobuf objects."""
    msg = request("get", {"param_paths": ["Device."]}, msg_id="m1")
    sec = r.Security(mac_signature=b"\x01\x02", sender_cert=b"PEM")
    rec = r.session_record(to_id="a::1", from_id="b::2", session_id=7, sequence_id=3,
                                 expected_id=2, retransmit_id=1,
                                 payloads=[msg.SerializeToString()], security=sec)
    view = r.to_mapping(rec)
    assert view["type"] == "session_context" and view["payload_security"] == "PLAINTEXT"
    assert view["mac_signature"] == "0102" and view["sender_cert"] == "PEM"
    assert view["session_context"] == {
        "session_id": 7, "sequence_id": 3, "expected_id": 2, "retransmit_id": 1,
        "payload_sar": "NONE", "payloadrec_sar": "NONE", "payload_count": 1,
        "payload_hex": [msg.SerializeToString().hex()]}
    bye = r.to_mapping(r.disconnect_record(to_id="a", from_id="b", reason="x",
                                                       reason_code=7003))
    assert bye["disconnect"] == {"reason": "x", "reason_code": 7003}
    assert r.to_mapping(r.Record())["type"] is None
