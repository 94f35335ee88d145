"""Add handler of the reference Agent (R-ADD.*, R-KEY.*, R-MSG.4a; TP-469 1.1-1.10, 1.81, 1.88, 1.95)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.context import FULL_ACCESS, Access, AgentState, RequestContext
from conformance.agent.core import AgentCore
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.defs import DataModel, ObjectDef, ParamDef, UniqueKey
from conformance.agent.datamodel.store import ObjectAdded, Store, StoreError
from conformance.agent.faults import FaultSet
from conformance.agent.messages.add import controller_row, handle_add
from conformance.usp import errors, messages, records
from conformance.usp.schema import Msg, MsgType
from tests.support.access import DenyRules as Deny

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"
SUB = "Device.LocalAgent.Subscription."
CLOCK = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def make_state(*faults: str, dm: DataModel | None = None, controller: bool = True) -> AgentState:
    dm = dm or load_definitions()
    state = AgentState(AGENT, dm, Store(dm), faults=FaultSet(faults), clock=lambda: CLOCK)
    if controller and dm is load_definitions():
        state.store.add("Device.LocalAgent.Controller.",
                        {"EndpointID": CTRL, "Alias": "cpe-1", "Enable": "true"})
    return state



def setting(param: str, value: str, required: bool = False) -> dict[str, Any]:
    return {"param": param, "value": value, "required": required}


def sub_settings(sub_id: str | None = "add1", *, enable: str = "true",
                 enable_required: bool = False,
                 extra: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    out = [setting("Enable", enable, enable_required), setting("NotifType", "ValueChange"),
           setting("ReferenceList", "Device.LocalAgent.SoftwareVersion", True)]
    if sub_id is not None:
        out.append(setting("ID", sub_id))
    return out + list(extra)


def add(state: AgentState, creates: list[dict[str, Any]], *, allow_partial: bool = False,
        access: Access = FULL_ACCESS, controller: str = CTRL) -> Msg:
    msg = messages.request("add", {"allow_partial": allow_partial, "create_objs": creates},
                           msg_id="add-1")
    reply = handle_add(state, RequestContext(controller, msg, access))
    assert reply.header.msg_id == "add-1"
    return reply


def results(reply: Msg) -> list[Any]:
    assert reply.body.WhichOneof("msg_body") == "response", reply
    return list(reply.body.response.add_resp.created_obj_results)


def status(result: Any) -> str:
    return result.oper_status.WhichOneof("oper_status")


def subs(state: AgentState) -> list[str]:
    return state.store.instances(SUB)


# --- success -------------------------------------------------------------------------------


@pytest.mark.parametrize("allow_partial", [False, True])
def test_single_object_success_reports_unique_keys(allow_partial: bool) -> None:
    """TP-469 1.1 / 1.2; R-ADD.5; Subscription Recipient and CreationDate set by the agent."""
    state = make_state()
    [res] = results(add(state, [{"obj_path": SUB, "param_settings": sub_settings()}],
                        allow_partial=allow_partial))
    assert res.requested_path == SUB and status(res) == "oper_success"
    ok = res.oper_status.oper_success
    assert ok.instantiated_path == SUB + "1."  # R-MSG.3 instance-number form
    assert list(ok.param_errs) == []
    assert dict(ok.unique_keys) == {"Alias": "cpe-1", "ID": "add1",
                                    "Recipient": "Device.LocalAgent.Controller.1"}
    values = state.store.params(SUB + "1.")
    assert values["Enable"] == "true" and values["NotifType"] == "ValueChange"
    assert values["ReferenceList"] == "Device.LocalAgent.SoftwareVersion"
    assert values["CreationDate"] == "2023-11-14T22:13:20Z"
    assert values["Recipient"] == "Device.LocalAgent.Controller.1"


def test_recipient_is_empty_when_no_controller_row_matches() -> None:
    state = make_state()
    [res] = results(add(state, [{"obj_path": SUB, "param_settings": sub_settings()}],
                        controller="proto::unknown"))
    assert res.oper_status.oper_success.unique_keys["Recipient"] == ""
    assert controller_row(state, CTRL) == "Device.LocalAgent.Controller.1"
    assert controller_row(state, "nobody") == ""


def test_multiple_objects_allow_partial_false() -> None:
    """TP-469 1.5: two CreatedObjectResults, both created."""
    state = make_state()
    out = results(add(state, [{"obj_path": SUB, "param_settings": sub_settings("add51")},
                              {"obj_path": SUB, "param_settings": sub_settings("add52")}]))
    assert [status(r) for r in out] == ["oper_success"] * 2
    assert [r.oper_status.oper_success.unique_keys["ID"] for r in out] == ["add51", "add52"]
    assert len(subs(state)) == 2


def test_omitted_parameters_get_defaults() -> None:
    state = make_state()
    results(add(state, [{"obj_path": SUB, "param_settings": [setting("ID", "x")]}]))
    assert state.store.get(SUB + "1.TriggerAction") == "Notify"
    assert state.store.get(SUB + "1.Enable") == "false"


def test_nested_single_instance_parameter() -> None:
    """CreateParamSetting.param may name a parameter of a single-instance sub-object."""
    state = make_state()
    [res] = results(add(state, [{"obj_path": "Device.LocalAgent.MTP.",
                                 "param_settings": [setting("STOMP.Destination", "q", True)]}]))
    inst = res.oper_status.oper_success.instantiated_path
    assert state.store.get(inst + "STOMP.Destination") == "q"


# --- allow_partial / required table -----------------------------------------------------------


@pytest.mark.parametrize("allow_partial", [False, True])
@pytest.mark.parametrize("required_given,required_fails,other_fails", [
    (False, False, False), (False, False, True), (True, False, False), (True, False, True)])
def test_table_rows_that_succeed(allow_partial: bool, required_given: bool, required_fails: bool,
                                 other_fails: bool) -> None:
    """The allow_partial/required table: rows 1-4 are oper_success, param_errs iff a failure."""
    state = make_state()
    params = [setting("ID", "t1"), setting("NotifRetry", "true", required_given)]
    if other_fails:
        params.append(setting("NotifExpiration", "-1"))  # not an unsignedInt: 7011
    [res] = results(add(state, [{"obj_path": SUB, "param_settings": params}],
                        allow_partial=allow_partial))
    ok = res.oper_status.oper_success
    assert status(res) == "oper_success"
    assert [(e.param, e.err_code) for e in ok.param_errs] == (
        [("NotifExpiration", errors.INVALID_TYPE)] if other_fails else [])  # R-ADD.4
    assert state.store.get(ok.instantiated_path + "NotifRetry") == "true"


def test_required_failure_allow_partial_true_is_oper_failure() -> None:
    """Table row 5; TP-469 1.8; R-ADD.3: the object is not created."""
    state = make_state()
    events: list[object] = []
    state.store.listen(events.append)
    [res] = results(add(state, [{"obj_path": SUB, "param_settings": sub_settings(
        "add8", enable="InvalidValue", enable_required=True)}], allow_partial=True))
    assert status(res) == "oper_failure"
    assert res.oper_status.oper_failure.err_code == errors.REQUIRED_PARAMETER_FAILED
    assert "Enable" in res.oper_status.oper_failure.err_msg
    assert subs(state) == [] and events == []


def test_required_failure_allow_partial_false_is_error() -> None:
    """Table row 6; TP-469 1.3: Error, one param_err naming Enable, nothing created."""
    state = make_state()
    reply = add(state, [{"obj_path": SUB, "param_settings": sub_settings(
        "add3", enable="InvalidValue", enable_required=True)}])
    err = reply.body.error
    assert err.err_code == errors.REQUIRED_PARAMETER_FAILED
    assert errors.is_appropriate(err.err_code, "add")
    assert [(p.param_path, p.err_code) for p in err.param_errs] == [
        (SUB + "Enable", errors.INVALID_TYPE)]
    assert subs(state) == []


def test_invalid_object_allow_partial_false() -> None:
    """TP-469 1.4 / 1.6: param_errs names the invalid path; nothing is created, no events."""
    state = make_state()
    events: list[object] = []
    state.store.listen(events.append)
    for creates in ([{"obj_path": "Device.LocalAgent.InvalidObject.", "param_settings": []}],
                    [{"obj_path": SUB, "param_settings": sub_settings("add61")},
                     {"obj_path": "Device.LocalAgent.InvalidObject.",
                      "param_settings": sub_settings("add62")}]):
        err = add(state, creates).body.error
        assert err.err_code == errors.INVALID_PATH
        assert [(p.param_path, p.err_code) for p in err.param_errs] == [
            ("Device.LocalAgent.InvalidObject.", errors.INVALID_PATH)]
    assert subs(state) == [] and events == []


def test_required_failure_in_one_of_several_objects_allow_partial_false() -> None:
    """TP-469 1.7: Error naming Enable; neither object exists afterwards (R-ADD.1)."""
    state = make_state()
    err = add(state, [{"obj_path": SUB, "param_settings": sub_settings(
        "add71", enable="InvalidValue", enable_required=True)},
        {"obj_path": SUB, "param_settings": sub_settings("add72")}]).body.error
    assert [p.param_path for p in err.param_errs] == [SUB + "Enable"]
    assert subs(state) == []
    # order reversed: the good object was created first and must be undone
    err = add(state, [{"obj_path": SUB, "param_settings": sub_settings("add72")},
                      {"obj_path": SUB, "param_settings": sub_settings(
                          "add71", enable="InvalidValue", enable_required=True)}]).body.error
    assert err.err_code == errors.REQUIRED_PARAMETER_FAILED
    assert subs(state) == []


def test_allow_partial_true_multiple_objects_one_fails() -> None:
    """TP-469 1.9; R-ADD.0: the valid object is created, the other fails."""
    state = make_state()
    out = results(add(state, [
        {"obj_path": SUB, "param_settings": sub_settings("add91")},
        {"obj_path": SUB, "param_settings": sub_settings(
            "add91", extra=[setting("InvalidParameter", "IrrelevantValue", True)])}],
        allow_partial=True))
    assert [status(r) for r in out] == ["oper_success", "oper_failure"]
    assert errors.is_appropriate(out[1].oper_status.oper_failure.err_code, "add")
    assert len(subs(state)) == 1 and state.store.get(SUB + "1.ID") == "add91"


# --- error codes ------------------------------------------------------------------------------


@pytest.mark.parametrize("param,value,code", [
    ("NoSuchParam", "x", errors.UNSUPPORTED_PARAMETER),
    ("Stats.Nope", "x", errors.UNSUPPORTED_PARAMETER),
    ("", "x", errors.UNSUPPORTED_PARAMETER),
    ("Enable", "yes", errors.INVALID_TYPE),
    ("TimeToLive", "4294967296", errors.INVALID_TYPE),
    ("NotifType", "Sometimes", errors.INVALID_VALUE),
    ("ID", "", errors.INVALID_VALUE),
    ("Alias", "88InvalidAlias", errors.INVALID_VALUE),
    ("Recipient", "Device.LocalAgent.Controller.1", errors.ATTEMPT_TO_UPDATE_NON_WRITEABLE_PARAMETER),
    ("CreationDate", "2020-01-01T00:00:00Z", errors.ATTEMPT_TO_UPDATE_NON_WRITEABLE_PARAMETER),
])
def test_parameter_error_codes(param: str, value: str, code: int) -> None:
    """7010/7011/7012/7013 as ParameterError of a created object (R-ADD.4)."""
    state = make_state()
    reply = add(state, [{"obj_path": SUB, "param_settings": [setting("ID", "e1"),
                                                             setting(param, value)]}],
                allow_partial=True)
    [res] = results(reply)
    if param in ("ID", "Alias", "Recipient"):  # unique keys are always required (TP-469 1.88)
        assert status(res) == "oper_failure"
        return
    assert [(e.param, e.err_code) for e in res.oper_status.oper_success.param_errs] == [(param, code)]


def test_conflicting_duplicate_setting_is_7014() -> None:
    state = make_state()
    [res] = results(add(state, [{"obj_path": SUB, "param_settings": [
        setting("NotifRetry", "true"), setting("NotifRetry", "false"), setting("Enable", "1"),
        setting("Enable", "1")]}]))
    ok = res.oper_status.oper_success
    assert [(e.param, e.err_code) for e in ok.param_errs] == [("NotifRetry", errors.VALUE_CONFLICT)]
    assert state.store.get(ok.instantiated_path + "Enable") == "1"


@pytest.mark.parametrize("path,code", [
    ("Device.LocalAgent.", errors.OBJECT_IS_NOT_A_TABLE),
    (SUB + "1.", errors.OBJECT_IS_NOT_A_TABLE),
    ("Device.LocalAgent.Controller.*.", errors.OBJECT_IS_NOT_A_TABLE),
    ("Device.LocalAgent.EndpointID", errors.OBJECT_IS_NOT_A_TABLE),
    ("Device.DeviceInfo.FirmwareImage.", errors.ATTEMPT_TO_CREATE_NON_CREATABLE_OBJECT),
    ("Device.LocalAgent.Controller.9.BootParameter.", errors.OBJECT_DOES_NOT_EXIST),
    ("Device.LocalAgent.InvalidObject.", errors.INVALID_PATH),
    ("Device..LocalAgent.", errors.INVALID_PATH_SYNTAX),
    ("", errors.INVALID_PATH_SYNTAX),
])
def test_path_error_codes(path: str, code: int) -> None:
    """Object-level failures: oper_failure (allow_partial true) / Error with the path."""
    state = make_state()
    state.store.add(SUB, {"ID": "x"})
    [res] = results(add(state, [{"obj_path": path}], allow_partial=True))
    assert res.oper_status.oper_failure.err_code == code
    err = add(state, [{"obj_path": path}]).body.error
    assert err.err_code == code and [p.param_path for p in err.param_errs] == [path]
    assert errors.is_appropriate(code, "add")


def test_max_entries_reached_is_7017_and_min_entries_ignored() -> None:
    dm = small_model()
    state = make_state(dm=dm)
    assert status(results(add(state, [{"obj_path": "Device.T."}]))[0]) == "oper_success"
    assert status(results(add(state, [{"obj_path": "Device.T."}]))[0]) == "oper_success"
    [res] = results(add(state, [{"obj_path": "Device.T."}], allow_partial=True))
    assert res.oper_status.oper_failure.err_code == errors.OBJECT_COULD_NOT_BE_CREATED


def test_permission_denied_on_table_and_on_parameters() -> None:
    """7006: Obj write on the table; Param write on a setting (Add note on permissions)."""
    state = make_state()
    [res] = results(add(state, [{"obj_path": SUB}], allow_partial=True,
                        access=Deny(("Obj", SUB, "w"))))
    assert res.oper_status.oper_failure.err_code == errors.PERMISSION_DENIED
    [res] = results(add(state, [{"obj_path": SUB, "param_settings": [
        setting("ID", "p1"), setting("NotifRetry", "true")]}],
        access=Deny(("Param", SUB + "1.NotifRetry", "w"))))
    ok = res.oper_status.oper_success
    assert [(e.param, e.err_code) for e in ok.param_errs] == [("NotifRetry", errors.PERMISSION_DENIED)]
    assert state.store.get(SUB + "1.NotifRetry") == "false"


def test_unreadable_unique_keys_are_not_returned() -> None:
    """R-ADD.6."""
    state = make_state()
    [res] = results(add(state, [{"obj_path": SUB, "param_settings": sub_settings()}],
                        access=Deny(("Param", SUB + "1.Recipient", "r"))))
    assert set(res.oper_status.oper_success.unique_keys) == {"Alias", "ID"}


# --- unique keys ------------------------------------------------------------------------------


def test_agent_generates_distinct_keys() -> None:
    """TP-469 1.81; R-ADD.5: Alias and ID differ, Recipient is the same."""
    state = make_state()
    out = results(add(state, [{"obj_path": SUB, "param_settings": sub_settings(None)},
                              {"obj_path": SUB, "param_settings": sub_settings(None)}]))
    keys = [dict(r.oper_status.oper_success.unique_keys) for r in out]
    assert keys[0]["Alias"] != keys[1]["Alias"] and keys[0]["ID"] != keys[1]["ID"]
    assert keys[0]["Recipient"] == keys[1]["Recipient"] == "Device.LocalAgent.Controller.1"
    assert all(k["Alias"].startswith("cpe-") for k in keys)  # TR-181 Alias


def test_generated_alias_avoids_values_in_use() -> None:
    state = make_state()
    state.store.add(SUB, {"Alias": "cpe-2", "ID": "cpe-2", "Recipient": "Device.LocalAgent.Controller.1"})
    state.store.delete(SUB + "1.")  # next instance number is 2, "cpe-2" is free again
    state.store.add(SUB, {"Alias": "cpe-3", "ID": "z"}, number=7)
    [res] = results(add(state, [{"obj_path": SUB, "param_settings": [setting("ID", "y")]}]))
    alias = res.oper_status.oper_success.unique_keys["Alias"]
    inst = res.oper_status.oper_success.instantiated_path
    number = inst[:-1].rpartition(".")[2]
    assert alias.startswith(f"cpe-{number}") and alias != "cpe-3"
    assert len({state.store.get(s + "Alias") for s in subs(state)}) == len(subs(state))


def test_controller_given_alias_is_kept() -> None:
    state = make_state()
    [res] = results(add(state, [{"obj_path": SUB, "param_settings": [
        setting("Alias", "mine"), setting("ID", "k")]}]))
    assert res.oper_status.oper_success.unique_keys["Alias"] == "mine"


def test_functional_key_default_kept_unless_it_clashes() -> None:
    """A functional key the controller omits keeps its default while it is unique."""
    state = make_state()
    bp = "Device.LocalAgent.Controller.1.BootParameter."
    first = results(add(state, [{"obj_path": bp}]))[0].oper_status.oper_success
    second = results(add(state, [{"obj_path": bp}]))[0].oper_status.oper_success
    assert first.unique_keys["ParameterName"] == ""
    assert second.unique_keys["ParameterName"] not in ("", first.unique_keys["ParameterName"])


def test_integer_keys_are_generated_as_numbers() -> None:
    state = make_state(dm=small_model())
    out = results(add(state, [{"obj_path": "Device.N."}, {"obj_path": "Device.N."}]))
    keys = [r.oper_status.oper_success.unique_keys["Port"] for r in out]
    assert all(k.isdigit() for k in keys) and keys[0] != keys[1]


@pytest.mark.parametrize("allow_partial", [False, True])
def test_duplicate_unique_key_is_7025(allow_partial: bool) -> None:
    """(Recipient, ID) already used by this controller: 7025, nothing created."""
    state = make_state()
    results(add(state, [{"obj_path": SUB, "param_settings": sub_settings("dup")}]))
    reply = add(state, [{"obj_path": SUB, "param_settings": sub_settings("dup")}],
                allow_partial=allow_partial)
    code = (reply.body.response.add_resp.created_obj_results[0].oper_status.oper_failure.err_code
            if allow_partial else reply.body.error.err_code)
    assert code == errors.OBJECT_EXISTS_WITH_DUPLICATE_KEY
    assert len(subs(state)) == 1


def test_duplicate_keys_within_one_message() -> None:
    """Keys are checked once the message is processed: both objects undone (R-ADD.1)."""
    state = make_state()
    err = add(state, [{"obj_path": SUB, "param_settings": sub_settings("same")},
                      {"obj_path": SUB, "param_settings": sub_settings("same")}]).body.error
    assert err.err_code == errors.OBJECT_EXISTS_WITH_DUPLICATE_KEY
    assert {p.param_path.rpartition(".")[2] for p in err.param_errs} == {"ID", "Recipient"}
    assert subs(state) == []
    out = results(add(state, [{"obj_path": SUB, "param_settings": sub_settings("same")},
                              {"obj_path": SUB, "param_settings": sub_settings("same")}],
                      allow_partial=True))
    assert [status(r) for r in out] == ["oper_success", "oper_failure"]


def test_invalid_unique_key_is_required() -> None:
    """TP-469 1.88: an invalid Alias fails the Add although required is false."""
    state = make_state()
    reply = add(state, [{"obj_path": SUB, "param_settings": [
        setting("Enable", "True"), setting("Alias", "88InvalidAlias"),
        setting("NotifType", "ValueChange")]}])
    assert reply.body.error.err_code == errors.REQUIRED_PARAMETER_FAILED
    # 'True' is not a TR-106 boolean: reported too, but it is not what fails the object
    assert [(p.param_path, p.err_code) for p in reply.body.error.param_errs] == [
        (SUB + "Enable", errors.INVALID_TYPE), (SUB + "Alias", errors.INVALID_VALUE)]
    assert subs(state) == []


# --- search paths -----------------------------------------------------------------------------


def _two_controllers(state: AgentState) -> None:
    state.store.add("Device.LocalAgent.Controller.",
                    {"EndpointID": "proto::other", "Alias": "cpe-2", "Enable": "false"})


def test_unique_key_addressing_in_parent() -> None:
    """TP-469 1.10."""
    state = make_state()
    path = 'Device.LocalAgent.Controller.[EndpointID=="proto::controller-1"&&Alias=="cpe-1"].BootParameter.'
    [res] = results(add(state, [{"obj_path": path, "param_settings": [
        setting("Enable", "true"), setting("ParameterName", "Device.LocalAgent.SoftwareVersion")]}]))
    ok = res.oper_status.oper_success
    assert ok.instantiated_path == "Device.LocalAgent.Controller.1.BootParameter.1."
    assert dict(ok.unique_keys) == {"ParameterName": "Device.LocalAgent.SoftwareVersion",
                                    "Alias": "cpe-1"}


def test_search_path_creates_one_instance_per_match() -> None:
    """TP-469 1.95; R-ADD.2 deprecated: one result per matched table, same requested_path."""
    state = make_state()
    _two_controllers(state)
    path = "Device.LocalAgent.Controller.*.MTP."
    out = results(add(state, [{"obj_path": path, "param_settings": [setting("Protocol", "WebSocket")]}]))
    assert [r.requested_path for r in out] == [path, path]
    assert [r.oper_status.oper_success.instantiated_path for r in out] == [
        "Device.LocalAgent.Controller.1.MTP.1.", "Device.LocalAgent.Controller.2.MTP.1."]
    out = results(add(state, [{"obj_path": "Device.LocalAgent.Controller.[Enable==true].BootParameter."}]))
    assert [r.oper_status.oper_success.instantiated_path for r in out] == [
        "Device.LocalAgent.Controller.1.BootParameter.1."]


def test_search_path_matching_nothing_is_empty_success() -> None:
    """R-MSG.4a."""
    state = make_state()
    [res] = results(add(state, [{"obj_path": 'Device.LocalAgent.Controller.[Enable==false].MTP.'}]))
    assert status(res) == "oper_success"
    assert res.oper_status.oper_success.instantiated_path == ""


def test_search_path_failure_allow_partial_false_changes_nothing() -> None:
    """R-ADD.2a: one matched table fails, so nothing is created."""
    state = make_state()
    _two_controllers(state)
    path = "Device.LocalAgent.Controller.*.BootParameter."
    deny = Deny(("Obj", "Device.LocalAgent.Controller.2.", "w"))
    err = add(state, [{"obj_path": path}], access=deny).body.error
    assert err.err_code == errors.PERMISSION_DENIED
    assert state.store.instances("Device.LocalAgent.Controller.1.BootParameter.") == []
    out = results(add(state, [{"obj_path": path}], access=deny, allow_partial=True))
    assert [status(r) for r in out] == ["oper_success", "oper_failure"]


# --- events and atomicity ------------------------------------------------------------------------


def test_events_only_after_success_and_without_value_changes() -> None:
    state = make_state()
    events: list[object] = []
    state.store.listen(events.append)
    results(add(state, [{"obj_path": SUB, "param_settings": sub_settings()}]))
    assert events == [ObjectAdded(SUB + "1.")]
    events.clear()
    add(state, [{"obj_path": SUB, "param_settings": sub_settings("a2")},
                {"obj_path": SUB, "param_settings": [setting("Nope", "1", True)]}])
    assert events == [] and subs(state) == [SUB + "1."]


def test_write_once_parameter_may_be_given_in_add() -> None:
    state = make_state(dm=small_model())
    [res] = results(add(state, [{"obj_path": "Device.T.", "param_settings": [
        setting("W", "first"), setting("Name", "n1")]}]))
    assert state.store.get(res.oper_status.oper_success.instantiated_path + "W") == "first"


# --- faults -------------------------------------------------------------------------------------


def test_fault_no_unique_keys() -> None:
    creates = [{"obj_path": SUB, "param_settings": sub_settings()}]
    assert results(add(make_state(), creates))[0].oper_status.oper_success.unique_keys
    assert not results(add(make_state("add.no_unique_keys"), creates))[0] \
        .oper_status.oper_success.unique_keys


def test_fault_ignore_required() -> None:
    creates = [{"obj_path": SUB, "param_settings": sub_settings(
        "f", enable="InvalidValue", enable_required=True)}]
    assert add(make_state(), creates).body.HasField("error")
    state = make_state("add.ignore_required")
    [res] = results(add(state, creates))
    assert status(res) == "oper_success" and len(subs(state)) == 1


def test_fault_partial_commit() -> None:
    creates: list[dict[str, Any]] = [{"obj_path": SUB, "param_settings": sub_settings("g1")},
                                     {"obj_path": "Device.LocalAgent.InvalidObject."}]
    state = make_state()
    assert add(state, creates).body.HasField("error") and subs(state) == []
    state = make_state("add.partial_commit")
    events: list[object] = []
    state.store.listen(events.append)
    assert add(state, creates).body.HasField("error")
    assert len(subs(state)) == 1 and events == [ObjectAdded(SUB + "1.")]


def test_fault_wrong_error_code() -> None:
    creates = [{"obj_path": "Device.LocalAgent.InvalidObject."}]
    err = add(make_state("add.wrong_error_code"), creates).body.error
    assert not errors.is_appropriate(err.err_code, "add")
    [res] = results(add(make_state("add.wrong_error_code"), creates, allow_partial=True))
    assert not errors.is_appropriate(res.oper_status.oper_failure.err_code, "add")


def test_fault_no_key_generation() -> None:
    creates = [{"obj_path": SUB, "param_settings": sub_settings(None)}] * 2
    assert len(results(add(make_state(), creates))) == 2
    state = make_state("add.no_key_generation")
    assert add(state, creates).body.error.err_code == errors.OBJECT_EXISTS_WITH_DUPLICATE_KEY


def test_fault_unique_key_not_required() -> None:
    creates = [{"obj_path": SUB, "param_settings": [setting("Alias", "88InvalidAlias")]}]
    state = make_state("add.unique_key_not_required")
    [res] = results(add(state, creates))
    assert [e.param for e in res.oper_status.oper_success.param_errs] == ["Alias"]


def test_fault_no_search_paths() -> None:
    creates = [{"obj_path": "Device.LocalAgent.Controller.*.BootParameter."}]
    assert status(results(add(make_state(), creates))[0]) == "oper_success"
    assert add(make_state("add.no_search_paths"), creates).body.error.err_code == errors.INVALID_PATH
    plain = [{"obj_path": SUB, "param_settings": sub_settings()}]
    assert status(results(add(make_state("add.no_search_paths"), plain))[0]) == "oper_success"


# --- end to end, robustness ---------------------------------------------------------------------


def test_end_to_end_through_core() -> None:
    state = make_state()
    core = AgentCore(state)
    msg = messages.request("add", {"allow_partial": False, "create_objs": [
        {"obj_path": SUB, "param_settings": sub_settings("e2e")}]}, msg_id="e2e-1")
    rec = records.no_session_record(msg, to_id=AGENT, from_id=CTRL, version="1.4")
    [out] = core.handle_record(records.serialize(rec), now=0.0)
    reply = records.unwrap_msg(out)
    assert reply is not None and reply.header.msg_id == "e2e-1"
    assert reply.header.msg_type == MsgType.ADD_RESP
    ok = reply.body.response.add_resp.created_obj_results[0].oper_status.oper_success
    assert ok.unique_keys["Recipient"] == "Device.LocalAgent.Controller.1"
    bad = messages.request("add", {"create_objs": [{"obj_path": "Device.Nope."}]}, msg_id="e2e-2")
    rec = records.no_session_record(bad, to_id=AGENT, from_id=CTRL, version="1.4")
    reply = records.unwrap_msg(core.handle_record(records.serialize(rec), now=0.0)[0])
    assert reply is not None and reply.body.error.err_code == errors.INVALID_PATH


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
_paths = st.one_of(_text, st.sampled_from([SUB, "Device.LocalAgent.Controller.*.MTP.",
                                           "Device.LocalAgent.Controller.1.BootParameter.",
                                           "Device.", "Device.T."]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_paths, st.lists(st.tuples(_text, _text, st.booleans()), max_size=4)),
                max_size=3), st.booleans())
def test_hostile_requests_never_crash(creates: list[Any], allow_partial: bool) -> None:
    state = make_state()
    body = [{"obj_path": p, "param_settings": [setting(n, v, r) for n, v, r in ps]}
            for p, ps in creates]
    before = state.store.object_paths()
    reply = add(state, body, allow_partial=allow_partial)
    kind = reply.body.WhichOneof("msg_body")
    assert kind in ("response", "error")
    if kind == "error":
        assert state.store.object_paths() == before  # R-ADD.1: nothing changed


# --- a small data model for facets the shipped TR-181 subset lacks --------------------------


def small_model() -> DataModel:
    def p(obj: str, name: str, access: str = "readWrite", **kw: Any) -> ParamDef:
        return ParamDef(name=name, path=obj + name, access=access, **kw)

    t, n = "Device.T.{i}.", "Device.N.{i}."
    return DataModel([
        ObjectDef("Device.", params={}),
        ObjectDef(t, access="readWrite", min_entries=1, max_entries=2,
                  unique_key_defs=(UniqueKey(("Name",), True), UniqueKey(("Alias",), False)),
                  params={"Alias": p(t, "Alias", data_type="Alias"), "Name": p(t, "Name"),
                          "W": p(t, "W", "writeOnceReadOnly")}),
        ObjectDef(n, access="readWrite", min_entries=0, max_entries=None,
                  unique_key_defs=(UniqueKey(("Port",), False),),
                  params={"Port": p(n, "Port", type="unsignedInt")}),
    ])


def test_store_failure_while_creating_is_7017(monkeypatch: pytest.MonkeyPatch) -> None:
    state = make_state()

    def broken(table: str, values: object = None, *, number: object = None) -> str:
        raise StoreError(f"{table} is gone")

    monkeypatch.setattr(state.store, "add", broken)
    [res] = results(add(state, [{"obj_path": SUB}], allow_partial=True))
    assert res.oper_status.oper_failure.err_code == errors.OBJECT_COULD_NOT_BE_CREATED
