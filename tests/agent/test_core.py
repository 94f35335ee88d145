"""AgentCore: Record rules and dispatch (R-E2E.1, R-ENC.4, R-MSG.0a/1, R-MTP.5/7)."""

from __future__ import annotations

import pytest

from conformance.agent.context import AgentState
from conformance.agent.core import AgentCore, CoreEvent
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.store import Store
from conformance.agent.faults import REGISTRY, FaultSet, UnknownFault
from conformance.usp import messages, records, session
from conformance.usp.schema import Msg

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"


def _core(*faults: str, events=None) -> AgentCore:
    state = AgentState(AGENT, load_definitions(), Store(load_definitions()), faults=FaultSet(faults))
    return AgentCore(state, on_event=(events.append if events is not None else lambda e: None))


def _gsp(msg_id="g1") -> Msg:
    return messages.request("get_supported_protocol",
                            {"controller_supported_protocol_versions": "1.4"}, msg_id=msg_id)


def _send(core, msg_or_bytes, *, to=AGENT, frm=CTRL, version="1.4"):
    rec = records.no_session_record(msg_or_bytes, to_id=to, from_id=frm, version=version)
    return core.handle_record(records.serialize(rec), now=0.0)


def test_answers_in_same_record_type_to_the_sender():
    out = _send(_core(), _gsp())
    assert len(out) == 1
    rec = out[0]
    assert records.record_kind(rec) == "no_session_context"  # R-MSG.0a
    assert (rec.to_id, rec.from_id) == (CTRL, AGENT)
    reply = records.unwrap_msg(rec)
    assert reply.header.msg_id == "g1"
    assert reply.body.response.get_supported_protocol_resp.agent_supported_protocol_versions \
        == "1.0,1.1,1.2,1.3,1.4"


def test_record_for_another_endpoint_is_ignored():
    events: list[CoreEvent] = []
    assert _send(_core(events=events), _gsp(), to="os::someone-else") == []  # R-E2E.1
    assert events[0].kind == "ignored" and "R-E2E.1" in events[0].detail
    assert len(_send(_core("record.ignore_to_id"), _gsp(), to="os::someone-else")) == 1


def test_undecodable_records_and_msgs_are_ignored():
    events: list[CoreEvent] = []
    core = _core(events=events)
    assert core.handle_record(b"\xff\xff", now=0) == []
    assert _send(core, b"\xff\xff") == []  # no msg_id can be extracted: R-MTP.5 ignore
    rec = records.parse_record(b"\x0a\x031.4\x12" + bytes([len(AGENT)]) + AGENT.encode())
    assert core.handle_record(records.serialize(rec), now=0) == []  # R-ENC.4
    assert [e.kind for e in events] == ["ignored"] * 3


def test_unsupported_request_gets_error_7001():
    reply = records.unwrap_msg(_send(_core(), messages.request("register", {}, msg_id="r"))[0])
    assert reply.body.error.err_code == 7001 and reply.header.msg_id == "r"


def test_empty_body_gets_error_7004():
    msg = Msg()
    msg.header.msg_id = "e"
    msg.header.msg_type = 1
    reply = records.unwrap_msg(_send(_core(), msg)[0])
    assert reply.body.error.err_code == 7004


def test_responses_and_errors_from_controller_produce_no_reply():
    events: list[CoreEvent] = []
    core = _core(events=events)
    assert _send(core, messages.response("notify_resp", {"subscription_id": "s"}, msg_id="n")) == []
    assert _send(core, messages.error(7000, "x", msg_id="q")) == []
    assert [e.kind for e in events] == ["response", "error_from_controller"]


def test_handler_crash_is_internal_error():
    core = _core()
    core.handlers = {"get": "conformance.agent.core:_no_such_function_for_test"}
    with pytest.raises(AttributeError):  # a wrong registry entry is a suite bug, loud
        _send(core, messages.request("get", {"param_paths": ["Device."]}, msg_id="x"))

    def boom(state, ctx):
        raise RuntimeError("bug")
    core = _core()
    core._loaded["get"] = boom
    reply = records.unwrap_msg(_send(core, messages.request("get", {"param_paths": ["Device."]},
                                                            msg_id="x"))[0])
    assert reply.body.error.err_code == 7003


def test_faults_no_response_and_wrong_msg_id():
    assert _send(_core("msg.no_response"), _gsp()) == []
    reply = records.unwrap_msg(_send(_core("msg.wrong_msg_id"), _gsp("m7"))[0])
    assert reply.header.msg_id != "m7"
    reply = records.unwrap_msg(_send(_core("gsp.bad_version_list"), _gsp())[0])
    assert ";" in reply.body.response.get_supported_protocol_resp.agent_supported_protocol_versions


def test_session_context_requests_are_answered_in_session():
    core = _core()
    ctrl = session.SessionContext(CTRL, AGENT, session.SessionConfig())
    out = []
    for rec in ctrl.send(_gsp("s1").SerializeToString(), now=0.0):
        out += core.handle_record(records.serialize(rec), now=0.0)
    assert out and all(records.record_kind(r) == "session_context" for r in out)  # R-MSG.0a
    got = []
    for rec in out:
        for event in ctrl.receive(rec, now=0.0):
            if isinstance(event, session.MessageReceived):
                got.append(records.parse_msg(event.payload))
    assert [m.header.msg_id for m in got] == ["s1"]
    # A DisconnectRecord makes the agent forget the session (R-MTP.7).
    bye = records.disconnect_record(to_id=AGENT, from_id=CTRL, reason="bye")
    assert core.handle_record(records.serialize(bye), now=0.0) == []
    assert CTRL not in core._sessions


def test_fault_registry():
    assert {"msg.no_response", "record.ignore_to_id", "gsp.bad_version_list"} <= set(REGISTRY)
    assert all(f.requirement and f.description for f in REGISTRY.values())
    with pytest.raises(UnknownFault, match="unknown fault"):
        FaultSet(["no.such.fault"])
    with pytest.raises(UnknownFault):
        FaultSet().on("no.such.fault")
