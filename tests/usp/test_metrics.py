"""TP-469 universal test metrics over Records and Msgs an EUT sends."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.usp import metrics as mt
from conformance.usp import records as r
from conformance.usp.messages import error, request, response
from conformance.usp.schema import Msg, MsgType

C, A = "proto::controller-1", "os::012345-ABC"


def _rec(msg: Msg | bytes, **kw) -> bytes:
    return r.serialize(r.no_session_record(msg, to_id=kw.get("to", C), from_id=kw.get("frm", A),
                                           version=kw.get("version", "1.4")))


def _get_resp(resolved: str, requested: str = "Device.LocalAgent.Subscription.*.") -> Msg:
    return response("get_resp", {"req_path_results": [{
        "requested_path": requested,
        "resolved_path_results": [{"resolved_path": resolved, "result_params": {"Enable": "true"}}],
    }]}, msg_id="m1")


def _metrics(check: mt.RecordCheck) -> set[tuple[int, str]]:
    return {(v.metric, v.requirement) for v in check.violations}


def test_clean_response_passes_every_metric():
    check = mt.check_record_bytes(_rec(_get_resp("Device.LocalAgent.Subscription.3.")),
                                  eut_endpoint_id=A, suite_endpoint_id=C)
    assert check.ok and check.violations == []
    assert check.msg is not None and check.record is not None


def test_undecodable_record_metric_2():
    check = mt.check_record_bytes(b"\xff\xff\xff")
    assert _metrics(check) == {(mt.SCHEMA, "R-ENC.1")} and not check.ok and check.record is None


def test_undecodable_payload_metric_2():
    check = mt.check_record_bytes(_rec(b"\xff\xff"))
    assert (mt.SCHEMA, "R-ENC.0") in _metrics(check) and check.msg is None


def test_unknown_fields_and_enum_values_metric_2():
    data = _rec(_get_resp("Device.LocalAgent.Subscription.3.")) + b"\xf8\x01\x01"  # field 31
    check = mt.check_record_bytes(data)
    assert any("numbers [31]" in v.message for v in check.violations)
    msg = _get_resp("Device.LocalAgent.Subscription.3.")
    raw = msg.SerializeToString() + bytes([0x0A, 0x02, 0x10, 0x63])  # header.msg_type = 99
    check = mt.check_record_bytes(_rec(raw))
    assert (mt.SCHEMA, "R-ENC.2") in _metrics(check)


def test_missing_oneofs_header_and_body():
    empty_record = r.serialize(r.parse_record(b"\x0a\x031.4\x1a\x0eos::012345-ABC"))
    assert (mt.SCHEMA, "R-ENC.3") in _metrics(mt.check_record_bytes(empty_record))
    msg = Msg()
    found = {(v.metric, v.requirement) for v in mt.check_msg(msg)}
    assert {(mt.SCHEMA, "R-MSG.6"), (mt.SCHEMA, "R-MSG.7"), (mt.SCHEMA, "R-MSG.8")} <= found
    add = response("add_resp", {"created_obj_results": [{"requested_path": "Device.X."}]},
                   msg_id="a")
    assert any(v.requirement == "R-ENC.3" and "oper_status" in v.location
               for v in mt.check_msg(add))


def test_msg_type_must_match_body():
    msg = _get_resp("Device.LocalAgent.Subscription.3.")
    msg.header.msg_type = MsgType.SET_RESP
    assert [v.requirement for v in mt.check_msg(msg)] == ["R-MSG.10"]


def test_version_and_addressing():
    check = mt.check_record_bytes(_rec(_get_resp("Device.DeviceInfo."), version=""))
    assert any(v.location == "record.version" for v in check.violations)
    check = mt.check_record_bytes(_rec(_get_resp("Device.DeviceInfo."), version="one"))
    assert any("major.minor" in v.message for v in check.violations)
    check = mt.check_record_bytes(_rec(_get_resp("Device.DeviceInfo."), version="1.3"))
    assert check.ok  # older agents are normal in the field (interop notes)
    check = mt.check_record_bytes(_rec(_get_resp("Device.DeviceInfo."), to="proto::other"),
                                  suite_endpoint_id=C)
    assert (mt.SCHEMA, "R-E2E.1") in _metrics(check)


def test_endpoint_id_metric_1():
    check = mt.check_record_bytes(_rec(_get_resp("Device.DeviceInfo."), frm="bogus id"))
    assert any(v.metric == mt.ENDPOINT_ID for v in check.violations) and not check.ok
    check = mt.check_record_bytes(_rec(_get_resp("Device.DeviceInfo."), frm=""))
    assert (mt.ENDPOINT_ID, "R-ARC.2") in _metrics(check)
    check = mt.check_record_bytes(_rec(_get_resp("Device.DeviceInfo.")),
                                  eut_endpoint_id="os::012345-OTHER")
    assert any("not the EUT's Endpoint ID" in v.message for v in check.violations)


def test_path_grammar_metric_3():
    check = mt.check_record_bytes(_rec(_get_resp("Device..Broken.")))
    assert (mt.PATH_GRAMMAR, "R-ARC.7") in _metrics(check)
    bad_param = response("get_resp", {"req_path_results": [{
        "requested_path": "Device.DeviceInfo.",
        "resolved_path_results": [{"resolved_path": "Device.DeviceInfo.",
                                   "result_params": {"Bad Name": "x"}}]}]}, msg_id="q")
    assert any(v.metric == mt.PATH_GRAMMAR and "Bad Name" in v.location
               for v in mt.check_msg(bad_param))


def test_instance_number_addressing_metric_4():
    for reported in ('Device.LocalAgent.Subscription.[ID=="s1"].',
                     "Device.LocalAgent.Subscription.*."):
        check = mt.check_record_bytes(_rec(_get_resp(reported)))
        assert (mt.INSTANCE_NUMBERS, "R-MSG.3") in _metrics(check), reported
    # An echoed requested_path may carry search syntax: it is the controller's.
    check = mt.check_record_bytes(_rec(_get_resp("Device.LocalAgent.Subscription.1.",
                                                 requested='Device.LocalAgent.Subscription.[ID=="a"].')))
    assert check.ok


def test_notify_paths_are_reported_paths():
    notify = request("notify", {"subscription_id": "s", "value_change": {
        "param_path": 'Device.LocalAgent.Subscription.[ID=="x"].Enable', "param_value": "1"}},
        msg_id="n")
    assert [v.requirement for v in mt.check_msg(notify)] == ["R-MSG.3"]
    ok = request("notify", {"subscription_id": "s", "event": {
        "obj_path": "Device.", "event_name": "Boot!", "params": {"Cause": "LocalReboot"}}},
        msg_id="n")
    assert mt.check_msg(ok) == []


def test_supported_dm_paths_allow_placeholders():
    gsdm = response("get_supported_dm_resp", {"req_obj_results": [{
        "req_obj_path": "Device.LocalAgent.",
        "supported_objs": [{"supported_obj_path": "Device.LocalAgent.Subscription.{i}.",
                            "supported_params": [{"param_name": "Enable"}],
                            "supported_commands": [{"command_name": "Cancel()"}],
                            "supported_events": [{"event_name": "Periodic!"}]}]}]}, msg_id="s")
    assert mt.check_msg(gsdm) == []
    reported = _get_resp("Device.LocalAgent.Subscription.{i}.")
    assert any(v.metric in (mt.PATH_GRAMMAR, mt.INSTANCE_NUMBERS) for v in mt.check_msg(reported))


def test_error_message_and_session_record():
    assert mt.check_msg(error(7026, "Invalid Path", msg_id="e",
                              param_errs=[("Device.Nope.", 7026, "no")])) == []
    rec = r.session_record(to_id=C, from_id=A, session_id=2, sequence_id=1, expected_id=1)
    check = mt.check_record_bytes(r.serialize(rec))
    assert check.violations == []  # an empty session Record announces a session (R-E2E.2 gone)
    msg = _get_resp("Device.LocalAgent.Subscription.1.")
    rec = r.session_record(to_id=C, from_id=A, session_id=2, sequence_id=1, expected_id=1,
                           payloads=[msg.SerializeToString()])
    check = mt.check_record_bytes(r.serialize(rec))
    assert check.ok and check.msg == msg


def test_violation_str_names_metric_and_requirement():
    v = mt.Violation(3, "R-ARC.7", "msg.x", "bad")
    assert str(v) == "[metric 3, R-ARC.7] msg.x: bad"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_never_raises_on_random_bytes(data):
    check = mt.check_record_bytes(data)
    assert isinstance(check.violations, list)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_never_raises_on_random_payloads(payload):
    mt.check_record_bytes(_rec(payload))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_never_raises_on_random_paths(resolved, key):
    msg = response("get_resp", {"req_path_results": [{
        "requested_path": key, "resolved_path_results": [{"resolved_path": resolved,
                                                          "result_params": {key: resolved}}]}]},
        msg_id="h")
    mt.check_record_bytes(_rec(msg, frm=key or A))
