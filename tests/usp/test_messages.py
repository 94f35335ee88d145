"""Msg builders: mappings, text format, headers, msg_id allocation (R-MSG.*)."""

from __future__ import annotations

import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.usp import messages as m
from conformance.usp.schema import MsgType


def test_allocator_unique_and_prefixed():
    alloc = m.MsgIdAllocator("run7")
    assert [alloc.next(), alloc(), alloc.next()] == ["run7-1", "run7-2", "run7-3"]


def test_allocator_thread_safe():
    alloc = m.MsgIdAllocator("t")
    seen: list[str] = []
    lock = threading.Lock()

    def worker():
        ids = [alloc.next() for _ in range(500)]
        with lock:
            seen.extend(ids)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(seen) == len(set(seen)) == 2000


def test_mapping_with_json_names_fills_header():
    msg = m.msg_from_mapping(
        {"body": {"request": {"get": {"paramPaths": ["Device.DeviceInfo."], "maxDepth": 1}}}},
        allocator=m.MsgIdAllocator("a"))
    assert msg.header.msg_type == MsgType.GET and msg.header.msg_id == "a-1"
    assert list(msg.body.request.get.param_paths) == ["Device.DeviceInfo."]
    assert msg.body.request.get.max_depth == 1


def test_mapping_with_snake_names_and_yaml_scalars():
    msg = m.msg_from_mapping({
        "header": {"msg_id": "x1"},
        "body": {"request": {"add": {"allow_partial": False, "create_objs": [{
            "obj_path": "Device.LocalAgent.Subscription.",
            "param_settings": [{"param": "Enable", "value": True, "required": True},
                               {"param": "NotifRetry", "value": 0}]}]}}}})
    assert msg.header.msg_type == MsgType.ADD
    ps = msg.body.request.add.create_objs[0].param_settings
    assert [(p.param, p.value, p.required) for p in ps] == [("Enable", "true", True),
                                                            ("NotifRetry", "0", False)]


def test_map_fields_coerce_to_strings():
    msg = m.request("operate", {"command": "Device.ScheduleTimer()",
                                "input_args": {"DelaySeconds": 5, "Flag": False}}, msg_id="o")
    assert dict(msg.body.request.operate.input_args) == {"DelaySeconds": "5", "Flag": "false"}


def test_explicit_msg_type_kept_even_if_it_disagrees():
    """Negative tests need deliberately inconsistent messages."""
    msg = m.msg_from_mapping({"header": {"msg_id": "z", "msg_type": "SET"},
                              "body": {"request": {"get": {"param_paths": ["Device."]}}}})
    assert msg.header.msg_type == MsgType.SET
    assert not m.header_matches_body(msg)


def test_mapping_errors_are_clear():
    with pytest.raises(m.MsgBuildError, match="paramPathz|param_pathz"):
        m.msg_from_mapping({"header": {"msg_id": "1"},
                            "body": {"request": {"get": {"param_pathz": ["x"]}}}})
    with pytest.raises(m.MsgBuildError, match="must be a mapping"):
        m.msg_from_mapping(["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(m.MsgBuildError, match="no header.msg_id"):
        m.msg_from_mapping({"body": {"request": {"get": {}}}})


TP469_STYLE = """
header {
  msg_id: '<msg_id>'
  msg_type: SET
}
body {
  request {
    set {
      allow_partial: false
      update_objs {
        obj_path: 'Device.LocalAgent.Subscription.1.'
        param_settings {
          param: 'Enable'
          value: 'false'
          required: true
        }
      }
    }
  }
}
"""


def test_text_format_as_tp469_prints_it():
    msg = m.msg_from_text(TP469_STYLE, allocator=m.MsgIdAllocator("tp"))
    assert msg.header.msg_id == "tp-1" and msg.header.msg_type == MsgType.SET
    upd = msg.body.request.set.update_objs[0]
    assert upd.obj_path == "Device.LocalAgent.Subscription.1."
    assert upd.param_settings[0].required is True
    assert m.msg_from_text(TP469_STYLE, msg_id="fixed").header.msg_id == "fixed"


def test_text_format_error():
    with pytest.raises(m.MsgBuildError, match="text does not fit"):
        m.msg_from_text("header { msg_idd: 'x' }", msg_id="q")


def test_request_response_error_builders():
    req = m.request("get_supported_protocol", {"controller_supported_protocol_versions": "1.4"},
                    msg_id="p")
    assert req.header.msg_type == MsgType.GET_SUPPORTED_PROTO
    empty = m.request("get_instances", None, msg_id="e")
    assert empty.body.request.WhichOneof("req_type") == "get_instances"
    resp = m.response("get_supported_protocol_resp",
                      {"agent_supported_protocol_versions": "1.3,1.4"}, msg_id="p")
    assert resp.header.msg_type == MsgType.GET_SUPPORTED_PROTO_RESP and resp.header.msg_id == "p"
    err = m.error(7004, "Invalid Arguments", msg_id="p",
                  param_errs=[("Device.X.Y", 7010, "unsupported")])
    assert err.header.msg_type == MsgType.ERROR and err.body.error.err_code == 7004
    assert err.body.error.param_errs[0].param_path == "Device.X.Y"
    assert m.header_matches_body(req) and m.header_matches_body(resp) and m.header_matches_body(err)
    with pytest.raises(m.MsgBuildError, match="unknown request"):
        m.request("frobnicate", {}, msg_id="1")
    with pytest.raises(m.MsgBuildError, match="unknown response"):
        m.response("get", {}, msg_id="1")


def test_request_from_message_object():
    inner = m.request("get", {"param_paths": ["Device."]}, msg_id="i").body.request.get
    assert m.request("get", inner, msg_id="j").body.request.get == inner


@pytest.mark.parametrize("req, resp", [("get", "get_resp"), ("notify", "notify_resp"),
                                       ("get_supported_protocol", "get_supported_protocol_resp"),
                                       ("nope", None)])
def test_response_kind_for(req, resp):
    assert m.response_kind_for(req) == resp


def test_expected_msg_type_for_empty_body():
    assert m.expected_msg_type(m.msg_from_mapping({"header": {"msg_id": "q"}})) is None


def test_to_mapping_includes_defaults_and_enum_names():
    msg = m.request("delete", {"obj_paths": ["Device.LocalAgent.Subscription.3."]}, msg_id="d")
    data = m.to_mapping(msg)
    assert data["header"] == {"msg_id": "d", "msg_type": "DELETE"}
    assert data["body"]["request"]["delete"]["allow_partial"] is False
    assert "objPaths" in m.to_mapping(msg, json_names=True)["body"]["request"]["delete"]


@settings(max_examples=100, deadline=None)
@given(paths=st.lists(st.text(max_size=40), max_size=5), depth=st.integers(0, 2**32 - 1))
def test_mapping_round_trip_property(paths, depth):
    msg = m.request("get", {"param_paths": paths, "max_depth": depth}, msg_id="h")
    again = m.msg_from_mapping(m.to_mapping(msg))
    assert again == msg


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_only_raises_build_error(text):
    try:
        m.msg_from_text(text, msg_id="r")
    except m.MsgBuildError:
        pass


def test_msg_id_placeholder_pattern():
    assert re.fullmatch(r"uspc-\d+", m.MsgIdAllocator().next())


def test_request_without_id_leaves_it_for_the_sender():
    msg = m.request("get", {"param_paths": ["Device."]})
    assert msg.header.msg_id == "" and msg.header.msg_type == MsgType.GET
    m.complete_header(msg, allocator=m.MsgIdAllocator("s"))
    assert msg.header.msg_id == "s-1"
