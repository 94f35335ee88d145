"""Readable renderings of Records and Msgs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.usp import records as r
from conformance.usp import render
from conformance.usp.messages import error, request, response
from conformance.usp.schema import PayloadSARState

C, A = "proto::controller-1", "os::012345-ABC"


def test_render_record_decodes_payload_in_place():
    msg = request("get", {"param_paths": ["Device.DeviceInfo."]}, msg_id="m1")
    text = render.render_record(r.no_session_record(msg, to_id=A, from_id=C))
    assert 'to_id: "os::012345-ABC"' in text
    assert "payload[0]" in text and "msg_type: GET" in text
    assert 'param_paths: "Device.DeviceInfo."' in text


def test_render_record_undecodable_payload_shows_hex_and_error():
    rec = r.no_session_record(b"\xff" * 300, to_id=A, from_id=C)
    text = render.render_record(rec)
    assert "undecodable Msg" in text and "ff ff" in text and "(+44 bytes)" in text


def test_render_record_raw_mode_and_segments():
    rec = r.session_record(to_id=A, from_id=C, session_id=5, sequence_id=1, expected_id=1,
                           payloads=[b"\x01\x02"], payload_sar_state=PayloadSARState.BEGIN)
    assert "segment 01 02" in render.render_record(rec)
    assert "payload:" in render.render_record(rec, decode_payload=False)


def test_summaries():
    get = request("get", {"param_paths": ["Device.DeviceInfo.", "Device.LocalAgent."]}, msg_id="g")
    assert render.summary(get) == "GET id='g' get Device.DeviceInfo., Device.LocalAgent."
    resp = response("get_resp", {"req_path_results": [{"requested_path": "Device.DeviceInfo.",
                                                       "resolved_path_results": [{}, {}]}]},
                    msg_id="g")
    assert render.summary(resp) == "GET_RESP id='g' get_resp (2 resolved)"
    assert render.summary(error(7026, "Invalid Path", msg_id="q")) == \
        "ERROR id='q' err_code=7026 'Invalid Path'"
    line = render.summary(r.no_session_record(get, to_id=A, from_id=C))
    assert line.startswith(f"Record[no_session_context] {C} -> {A} v1.4: GET")
    assert "topic='/t'" in render.summary(r.mqtt_connect_record(to_id=C, from_id=A,
                                                                subscribed_topic="/t"))
    assert "code=1" in render.summary(r.disconnect_record(to_id=C, from_id=A, reason_code=1))
    assert "undecodable" in render.summary(r.no_session_record(b"\xff", to_id=A, from_id=C))
    add = request("add", {"create_objs": [{"obj_path": "Device.LocalAgent.Subscription."}]},
                  msg_id="a")
    assert render.summary(add).endswith("Device.LocalAgent.Subscription.")
    notify = request("notify", {"subscription_id": "s1", "event": {"obj_path": "Device."}},
                     msg_id="n")
    assert "sub='s1' event" in render.summary(notify)
    assert render.summary(request("operate", {"command": "Device.Reboot()"}, msg_id="o")) \
        .endswith("Device.Reboot()")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120))
def test_render_never_crashes_on_any_payload(payload):
    rec = r.no_session_record(payload, to_id=A, from_id=C)
    assert render.render_record(rec)
    assert render.summary(rec)
