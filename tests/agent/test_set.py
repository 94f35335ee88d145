"""Set handler and the shared write helpers of the reference Agent.

R-SET.0-3, R-SET.2a/2b, R-KEY.1/2, R-MSG.4a; TP-469 1.11-1.23, 1.96, 1.104.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.context import FULL_ACCESS, Access, AgentState, RequestContext
from conformance.agent.core import AgentCore
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.defs import DataModel, ObjectDef, ParamDef, UniqueKey
from conformance.agent.datamodel.store import (
    ObjectAdded,
    ObjectDeleted,
    Store,
    StoreError,
    ValueChanged,
)
from conformance.agent.faults import REGISTRY, FaultSet, catalogue
from conformance.agent.messages import write
from conformance.agent.messages.set import handle_set
from conformance.usp import errors, messages, records
from conformance.usp.schema import Msg, MsgType
from tests.support.access import DenyRules as Deny

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"
SUB = "Device.LocalAgent.Subscription."
CTRL_ROW = "Device.LocalAgent.Controller.1"


def make_state(*faults: str, subscriptions: int = 2) -> AgentState:
    dm = load_definitions()
    state = AgentState(AGENT, dm, Store(dm), faults=FaultSet(faults))
    state.store.add("Device.LocalAgent.Controller.", {"EndpointID": CTRL, "Alias": "cpe-1",
                                                      "Enable": "true"})
    for n in range(1, subscriptions + 1):
        state.store.add(SUB, {"Alias": f"cpe-{n}", "ID": f"sub{n}", "Recipient": CTRL_ROW,
                              "NotifExpiration": str(n - 1), "Enable": "true"})
    return state



def setting(param: str, value: str, required: bool = False) -> dict[str, Any]:
    return {"param": param, "value": value, "required": required}


def update(path: str, *params: dict[str, Any]) -> dict[str, Any]:
    return {"obj_path": path, "param_settings": list(params)}


def set_(state: AgentState, updates: list[dict[str, Any]], *, allow_partial: bool = False,
         access: Access = FULL_ACCESS) -> Msg:
    msg = messages.request("set", {"allow_partial": allow_partial, "update_objs": updates},
                           msg_id="set-1")
    reply = handle_set(state, RequestContext(CTRL, msg, access))
    assert reply.header.msg_id == "set-1"
    return reply


def results(reply: Msg) -> list[Any]:
    assert reply.body.WhichOneof("msg_body") == "response", reply
    return list(reply.body.response.set_resp.updated_obj_results)


def status(result: Any) -> str:
    return result.oper_status.WhichOneof("oper_status")


def inst_results(result: Any) -> list[tuple[str, dict[str, str], list[tuple[str, int]]]]:
    return [(r.affected_path, dict(r.updated_params), [(e.param, e.err_code) for e in r.param_errs])
            for r in result.oper_status.oper_success.updated_inst_results]


def retry(state: AgentState, n: int) -> str:
    return state.store.get(f"{SUB}{n}.NotifRetry")


# --- success -------------------------------------------------------------------------------


@pytest.mark.parametrize("allow_partial", [False, True])
def test_single_object_success(allow_partial: bool) -> None:
    """TP-469 1.11 / 1.12: one UpdatedInstanceResult with updated_params NotifRetry."""
    state = make_state()
    events: list[object] = []
    state.store.listen(events.append)
    [res] = results(set_(state, [update(SUB + "1.", setting("NotifRetry", "true", True))],
                         allow_partial=allow_partial))
    assert res.requested_path == SUB + "1." and status(res) == "oper_success"
    assert inst_results(res) == [(SUB + "1.", {"NotifRetry": "true"}, [])]
    assert retry(state, 1) == "true"
    assert events == [ValueChanged(SUB + "1.NotifRetry", "false", "true")]


def test_same_value_is_still_reported_without_event() -> None:
    """Note under R-SET.3: a parameter set to its current value is still in updated_params."""
    state = make_state()
    events: list[object] = []
    state.store.listen(events.append)
    [res] = results(set_(state, [update(SUB + "1.", setting("NotifRetry", "false"))]))
    assert inst_results(res)[0][1] == {"NotifRetry": "false"} and events == []


def test_single_instance_object_and_nested_parameter() -> None:
    state = make_state()
    [res] = results(set_(state, [update("Device.DeviceInfo.", setting("FriendlyName", "box"))]))
    assert inst_results(res) == [("Device.DeviceInfo.", {"FriendlyName": "box"}, [])]
    mtp = state.store.add("Device.LocalAgent.MTP.")
    [res] = results(set_(state, [update(mtp, setting("STOMP.Destination", "q", True))]))
    assert inst_results(res)[0][1] == {"STOMP.Destination": "q"}


def test_multiple_objects_allow_partial_false() -> None:
    """TP-469 1.13."""
    state = make_state()
    out = results(set_(state, [update(SUB + "1.", setting("NotifRetry", "true", True)),
                               update(SUB + "2.", setting("NotifRetry", "true", True))]))
    assert [inst_results(r)[0][:2] for r in out] == [
        (SUB + "1.", {"NotifRetry": "true"}), (SUB + "2.", {"NotifRetry": "true"})]


def test_unique_key_addressing() -> None:
    """TP-469 1.18: affected_path in instance-number form."""
    state = make_state()
    path = f'{SUB}[Recipient=="{CTRL_ROW}"&&ID=="sub2"].'
    [res] = results(set_(state, [update(path, setting("NotifRetry", "true", True))]))
    assert inst_results(res)[0][0] == SUB + "2."


def test_wildcard_and_expression_success() -> None:
    """TP-469 1.19 / 1.22."""
    state = make_state()
    [res] = results(set_(state, [update(SUB + "*.", setting("NotifRetry", "true", True))]))
    assert [r[0] for r in inst_results(res)] == [SUB + "1.", SUB + "2."]
    [res] = results(set_(state, [update(SUB + "[NotifExpiration>0].",
                                        setting("NotifRetry", "false", True))]))
    assert [r[0] for r in inst_results(res)] == [SUB + "2."]
    assert (retry(state, 1), retry(state, 2)) == ("true", "false")


@pytest.mark.parametrize("allow_partial", [False, True])
def test_search_matching_nothing_is_empty_success(allow_partial: bool) -> None:
    """TP-469 1.23; R-MSG.4a."""
    state = make_state()
    [res] = results(set_(state, [update(SUB + '[Recipient=="InvalidValue"].',
                                        setting("NotifRetry", "true", True))],
                         allow_partial=allow_partial))
    assert status(res) == "oper_success"
    assert list(res.oper_status.oper_success.updated_inst_results) == []


# --- allow_partial / required table -----------------------------------------------------------


@pytest.mark.parametrize("allow_partial", [False, True])
@pytest.mark.parametrize("required_given,other_fails", [
    (False, False), (False, True), (True, False), (True, True)])
def test_table_rows_that_succeed(allow_partial: bool, required_given: bool, other_fails: bool) -> None:
    """Rows 1-4 of the table: oper_success, param_errs only when something failed."""
    state = make_state()
    params = [setting("NotifRetry", "true", required_given)]
    if other_fails:
        params.append(setting("InvalidParameter", "IrrelevantValue"))
    [res] = results(set_(state, [update(SUB + "1.", *params)], allow_partial=allow_partial))
    expected_errs = [("InvalidParameter", errors.UNSUPPORTED_PARAMETER)] if other_fails else []
    assert inst_results(res) == [(SUB + "1.", {"NotifRetry": "true"}, expected_errs)]
    assert retry(state, 1) == "true"


def test_required_failure_allow_partial_false() -> None:
    """Row 6; TP-469 1.14: Error with one ParamError naming the full path."""
    state = make_state()
    reply = set_(state, [update(SUB + "1.", setting("NotifRetry", "true"),
                                setting("InvalidParameter", "IrrelevantValue", True))])
    err = reply.body.error
    assert err.err_code == errors.REQUIRED_PARAMETER_FAILED
    assert errors.is_appropriate(err.err_code, "set")
    assert [(p.param_path, p.err_code) for p in err.param_errs] == [
        (SUB + "1.InvalidParameter", errors.UNSUPPORTED_PARAMETER)]
    assert retry(state, 1) == "false"  # R-SET.2: nothing of the object was written


def test_required_failure_in_second_object_undoes_first() -> None:
    """TP-469 1.15; R-SET.1: no change, no ValueChange event."""
    state = make_state()
    events: list[object] = []
    state.store.listen(events.append)
    err = set_(state, [update(SUB + "1.", setting("NotifRetry", "true", True)),
                       update(SUB + "2.", setting("InvalidParameter", "x", True))]).body.error
    assert [p.param_path for p in err.param_errs] == [SUB + "2.InvalidParameter"]
    assert retry(state, 1) == "false" and events == []


def test_required_failure_allow_partial_true() -> None:
    """Row 5; TP-469 1.16: success for the first object, failure with instance details."""
    state = make_state()
    out = results(set_(state, [update(SUB + "1.", setting("NotifRetry", "true", True)),
                               update(SUB + "2.", setting("InvalidParameter", "x", True))],
                       allow_partial=True))
    assert status(out[0]) == "oper_success"
    fail = out[1].oper_status.oper_failure
    assert fail.err_code == errors.REQUIRED_PARAMETER_FAILED
    assert [(f.affected_path, [(e.param, e.err_code) for e in f.param_errs])
            for f in fail.updated_inst_failures] == [
        (SUB + "2.", [("InvalidParameter", errors.UNSUPPORTED_PARAMETER)])]
    assert retry(state, 1) == "true"


def test_non_required_failure_allow_partial_true() -> None:
    """TP-469 1.17."""
    state = make_state()
    [res] = results(set_(state, [update(SUB + "1.", setting("NotifRetry", "true"),
                                        setting("InvalidParameter", "x"))], allow_partial=True))
    assert inst_results(res) == [(SUB + "1.", {"NotifRetry": "true"},
                                  [("InvalidParameter", errors.UNSUPPORTED_PARAMETER)])]


def test_wildcard_required_failure_allow_partial_false() -> None:
    """TP-469 1.20: Error with a ParamError per failed instance."""
    state = make_state()
    err = set_(state, [update(SUB + "*.", setting("InvalidParameter", "x", True))]).body.error
    assert [p.param_path for p in err.param_errs] == [SUB + "1.InvalidParameter",
                                                      SUB + "2.InvalidParameter"]


def test_wildcard_required_failure_allow_partial_true() -> None:
    """TP-469 1.21; R-SET.2a: oper_failure with an UpdatedInstanceFailure per instance."""
    state = make_state()
    [res] = results(set_(state, [update(SUB + "*.", setting("Enable", "InvalidValue", True))],
                         allow_partial=True))
    fail = res.oper_status.oper_failure
    assert [(f.affected_path, [e.param for e in f.param_errs]) for f in fail.updated_inst_failures] \
        == [(SUB + "1.", ["Enable"]), (SUB + "2.", ["Enable"])]
    assert {state.store.get(s + "Enable") for s in state.store.instances(SUB)} == {"true"}


def test_search_path_is_holistic_even_with_allow_partial_true() -> None:
    """R-SET.2a: one matched object fails, so the others' changes are undone too."""
    state = make_state()
    events: list[object] = []
    state.store.listen(events.append)
    deny = Deny(("Param", SUB + "2.NotifRetry", "w"))
    [res] = results(set_(state, [update(SUB + "*.", setting("NotifRetry", "true", True))],
                         allow_partial=True, access=deny))
    fail = res.oper_status.oper_failure
    assert [f.affected_path for f in fail.updated_inst_failures] == [SUB + "2."]
    assert fail.updated_inst_failures[0].param_errs[0].err_code == errors.PERMISSION_DENIED
    assert retry(state, 1) == "false" and events == []


# --- error codes ------------------------------------------------------------------------------


@pytest.mark.parametrize("param,value,code", [
    ("NoSuch", "x", errors.UNSUPPORTED_PARAMETER),
    ("Enable.Sub", "x", errors.UNSUPPORTED_PARAMETER),
    ("1.Enable", "x", errors.UNSUPPORTED_PARAMETER),
    ("Enable", "on", errors.INVALID_TYPE),
    ("NotifExpiration", "-5", errors.INVALID_TYPE),
    ("NotifType", "Whatever", errors.INVALID_VALUE),
    ("TriggerAction", "notify", errors.INVALID_VALUE),
    ("Recipient", "x", errors.ATTEMPT_TO_UPDATE_NON_WRITEABLE_PARAMETER),
    ("CreationDate", "2024-01-01T00:00:00Z", errors.ATTEMPT_TO_UPDATE_NON_WRITEABLE_PARAMETER),
    ("ID", "changed", errors.ATTEMPT_TO_UPDATE_NON_WRITEABLE_PARAMETER),
    ("Alias", "changed", errors.ATTEMPT_TO_UPDATE_NON_WRITEABLE_PARAMETER),
])
def test_parameter_error_codes(param: str, value: str, code: int) -> None:
    """7010/7011/7012/7013 as ParameterError, and as Error param_errs when required."""
    state = make_state()
    [res] = results(set_(state, [update(SUB + "1.", setting(param, value))]))
    assert inst_results(res)[0][2] == [(param, code)]
    err = set_(state, [update(SUB + "1.", setting(param, value, True))]).body.error
    assert [(p.param_path, p.err_code) for p in err.param_errs] == [(SUB + "1." + param, code)]


def test_nonfunctional_keys_are_immutable() -> None:
    """TP-469 1.96 (ID) and 1.104 (Alias); R-KEY.1. Setting the same value is no change."""
    state = make_state()
    for param, value in (("ID", "add96-NEW"), ("Alias", "test-1-104-new-alias")):
        before = state.store.get(SUB + "1." + param)
        assert set_(state, [update(SUB + "1.", setting(param, value, True))]).body.HasField("error")
        assert state.store.get(SUB + "1." + param) == before
    [res] = results(set_(state, [update(SUB + "1.", setting("Alias", "cpe-1", True))]))
    assert inst_results(res)[0][1] == {"Alias": "cpe-1"}


def test_functional_keys_may_change_but_stay_unique() -> None:
    """R-KEY.2: 7025 on a clash; a swap inside one message is fine (keys checked at the end)."""
    state = make_state()
    bp = "Device.LocalAgent.Controller.1.BootParameter."
    state.store.add(bp, {"ParameterName": "A", "Alias": "cpe-1"})
    state.store.add(bp, {"ParameterName": "B", "Alias": "cpe-2"})
    err = set_(state, [update(bp + "1.", setting("ParameterName", "B"))]).body.error
    assert err.err_code == errors.OBJECT_EXISTS_WITH_DUPLICATE_KEY
    assert err.param_errs[0].param_path.endswith(".ParameterName")
    [res] = results(set_(state, [update(bp + "1.", setting("ParameterName", "B"))],
                         allow_partial=True))
    fail = res.oper_status.oper_failure
    assert fail.err_code == errors.OBJECT_EXISTS_WITH_DUPLICATE_KEY
    assert fail.updated_inst_failures[0].param_errs[0].param == "ParameterName"
    assert state.store.get(bp + "1.ParameterName") == "A"
    out = results(set_(state, [update(bp + "1.", setting("ParameterName", "B")),
                               update(bp + "2.", setting("ParameterName", "A"))]))
    assert [status(r) for r in out] == ["oper_success"] * 2
    assert state.store.get(bp + "1.ParameterName") == "B"


@pytest.mark.parametrize("path,code", [
    (SUB + "9.", errors.OBJECT_DOES_NOT_EXIST),
    (f'{SUB}[Recipient=="{CTRL_ROW}"&&ID=="nope"].', errors.OBJECT_DOES_NOT_EXIST),
    (SUB, errors.INVALID_PATH),
    (SUB + "1.Enable", errors.INVALID_PATH),
    ("Device.LocalAgent.InvalidObject.", errors.INVALID_PATH),
    ("Device.LocalAgent.Subscription.[", errors.INVALID_PATH_SYNTAX),
])
def test_path_error_codes(path: str, code: int) -> None:
    state = make_state()
    [res] = results(set_(state, [update(path, setting("Enable", "true"))], allow_partial=True))
    assert res.oper_status.oper_failure.err_code == code
    err = set_(state, [update(path, setting("Enable", "true"))]).body.error
    assert err.err_code == code and [p.param_path for p in err.param_errs] == [path]
    assert errors.is_appropriate(code, "set")


def test_duplicate_setting_with_different_values_is_7014() -> None:
    state = make_state()
    [res] = results(set_(state, [update(SUB + "1.", setting("NotifRetry", "true"),
                                        setting("NotifRetry", "false"))]))
    assert inst_results(res)[0][2] == [("NotifRetry", errors.VALUE_CONFLICT)]


def test_permissions() -> None:
    """7006 without Param write; R-SET.3: unreadable parameters left out of updated_params."""
    state = make_state()
    [res] = results(set_(state, [update(SUB + "1.", setting("NotifRetry", "true"))],
                         access=Deny(("Param", SUB + "1.NotifRetry", "w"))))
    assert inst_results(res)[0][2] == [("NotifRetry", errors.PERMISSION_DENIED)]
    [res] = results(set_(state, [update(SUB + "1.", setting("NotifRetry", "true"),
                                        setting("Persistent", "true"))],
                         access=Deny(("Param", SUB + "1.NotifRetry", "r"))))
    assert inst_results(res)[0][1] == {"Persistent": "true"}
    assert retry(state, 1) == "true"


def test_strong_reference_must_name_an_existing_row() -> None:
    state = make_state()
    ctrl = CTRL_ROW + "."
    role = state.store.add("Device.LocalAgent.ControllerTrust.Role.", {"Name": "r", "Alias": "a"})
    for value, code in (("Device.LocalAgent.ControllerTrust.Role.9", errors.INVALID_VALUE),
                        ("Device.LocalAgent.Controller.1", errors.INVALID_VALUE),
                        ("Device.LocalAgent.ControllerTrust.Role.", errors.INVALID_VALUE),
                        ("not a path", errors.INVALID_VALUE),
                        (role[:-1], None), (f"{role[:-1]}, {role}", None), ("", None)):
        [res] = results(set_(state, [update(ctrl, setting("AssignedRole", value))]))
        assert inst_results(res)[0][2] == ([] if code is None else [("AssignedRole", code)]), value


def test_write_once_parameter() -> None:
    """writeOnceReadOnly: settable while unset, read-only once set (TP-469 1.104 idea)."""
    dm = small_model()
    state = AgentState(AGENT, dm, Store(dm))
    inst = state.store.add("Device.T.", {"Name": "n"})
    [res] = results(set_(state, [update(inst, setting("W", "v1"))]))
    assert inst_results(res)[0][1] == {"W": "v1"}
    [res] = results(set_(state, [update(inst, setting("W", "v2"))]))
    assert inst_results(res)[0][2] == [("W", errors.ATTEMPT_TO_UPDATE_NON_WRITEABLE_PARAMETER)]


# --- faults ---------------------------------------------------------------------------------------


def test_fault_partial_commit() -> None:
    upds = [update(SUB + "1.", setting("NotifRetry", "true", True)),
            update(SUB + "2.", setting("InvalidParameter", "x", True))]
    state = make_state("set.partial_commit")
    events: list[object] = []
    state.store.listen(events.append)
    assert set_(state, upds).body.HasField("error")
    assert retry(state, 1) == "true" and len(events) == 1


def test_fault_ignore_required() -> None:
    upds = [update(SUB + "1.", setting("InvalidParameter", "x", True))]
    state = make_state("set.ignore_required")
    [res] = results(set_(state, upds))
    assert inst_results(res)[0][2] == [("InvalidParameter", errors.UNSUPPORTED_PARAMETER)]


def test_fault_no_updated_params() -> None:
    upds = [update(SUB + "1.", setting("NotifRetry", "true", True))]
    [res] = results(set_(make_state("set.no_updated_params"), upds))
    assert inst_results(res)[0][1] == {}


def test_fault_no_instance_failures() -> None:
    upds = [update(SUB + "*.", setting("Enable", "InvalidValue", True))]
    [res] = results(set_(make_state("set.no_instance_failures"), upds, allow_partial=True))
    assert list(res.oper_status.oper_failure.updated_inst_failures) == []


def test_fault_search_no_match_error() -> None:
    upds = [update(SUB + '[Recipient=="InvalidValue"].', setting("NotifRetry", "true", True))]
    [res] = results(set_(make_state("set.search_no_match_error"), upds, allow_partial=True))
    assert res.oper_status.oper_failure.err_code == errors.OBJECT_DOES_NOT_EXIST


def test_fault_mutable_nonfunctional_key() -> None:
    state = make_state("set.mutable_nonfunctional_key")
    [res] = results(set_(state, [update(SUB + "1.", setting("ID", "add96-NEW", True))]))
    assert status(res) == "oper_success" and state.store.get(SUB + "1.ID") == "add96-NEW"


def test_fault_mutable_alias() -> None:
    """TP-469 1.104 / R-KEY.1: only the Alias escapes the rule; ID stays immutable."""
    upds = [update(SUB + "1.", setting("Alias", "test-1-104-new-alias", True))]
    assert set_(make_state(), upds).body.HasField("error")
    state = make_state("set.mutable_alias")
    [res] = results(set_(state, upds))
    assert status(res) == "oper_success"
    assert state.store.get(SUB + "1.Alias") == "test-1-104-new-alias"
    assert set_(state, [update(SUB + "1.", setting("ID", "x", True))]).body.HasField("error")


def test_fault_not_applied() -> None:
    """TP-469 1.11 / R-SET.1: success is reported, the value is never written."""
    upds = [update(SUB + "1.", setting("NotifRetry", "true", True))]
    state = make_state("set.not_applied")
    events: list[object] = []
    state.store.listen(events.append)
    [res] = results(set_(state, upds))
    assert inst_results(res) == [(SUB + "1.", {"NotifRetry": "true"}, [])]
    assert retry(state, 1) == "false" and events == []


def test_fault_updated_params_absolute() -> None:
    """TP-469 1.12: updated_params keys are relative paths; the fault makes them absolute."""
    upds = [update(SUB + "1.", setting("NotifRetry", "true", True))]
    [res] = results(set_(make_state(), upds, allow_partial=True))
    assert inst_results(res)[0][1] == {"NotifRetry": "true"}
    [res] = results(set_(make_state("set.updated_params_absolute"), upds, allow_partial=True))
    assert inst_results(res)[0][1] == {SUB + "1.NotifRetry": "true"}


@pytest.mark.parametrize("allow_partial", [False, True])
def test_fault_first_update_only(allow_partial: bool) -> None:
    """TP-469 1.13: one UpdatedObjectResult per UpdateObject; the fault drops the second."""
    upds = [update(SUB + "1.", setting("NotifRetry", "true", True)),
            update(SUB + "2.", setting("NotifRetry", "true", True))]
    state = make_state("set.first_update_only")
    out = results(set_(state, upds, allow_partial=allow_partial))
    assert [r.requested_path for r in out] == [SUB + "1."]
    assert (retry(state, 1), retry(state, 2)) == ("true", "false")


def test_fault_error_param_path_relative() -> None:
    """TP-469 1.14/1.15/1.20: Error param_errs name the full path; the fault gives the name."""
    upds = [update(SUB + "*.", setting("InvalidParameter", "x", True))]
    err = set_(make_state("set.error_param_path_relative"), upds).body.error
    assert [p.param_path for p in err.param_errs] == ["InvalidParameter"] * 2
    err = set_(make_state("set.error_param_path_relative"),
               [update(SUB + "9.", setting("Enable", "true"))]).body.error
    assert [p.param_path for p in err.param_errs] == [SUB + "9."]  # an object path is kept


def test_fault_nonrequired_fails_object() -> None:
    """TP-469 1.17 / R-SET.0: a non-required failure must not fail the object."""
    upds = [update(SUB + "1.", setting("NotifRetry", "true"), setting("InvalidParameter", "x"))]
    state = make_state("set.nonrequired_fails_object")
    [res] = results(set_(state, upds, allow_partial=True))
    fail = res.oper_status.oper_failure
    assert fail.err_code == errors.REQUIRED_PARAMETER_FAILED
    assert [f.affected_path for f in fail.updated_inst_failures] == [SUB + "1."]
    assert retry(state, 1) == "false"


def test_fault_affected_path_not_number() -> None:
    """TP-469 1.18 / R-MSG.3: affected_path uses instance numbers; the fault echoes the key."""
    path = f'{SUB}[Recipient=="{CTRL_ROW}"&&ID=="sub2"].'
    upds = [update(path, setting("NotifRetry", "true", True))]
    [res] = results(set_(make_state("set.affected_path_not_number"), upds))
    assert inst_results(res)[0][0] == path
    # a wildcard matching several objects still lists them by number
    [res] = results(set_(make_state("set.affected_path_not_number"),
                         [update(SUB + "*.", setting("NotifRetry", "true", True))]))
    assert [r[0] for r in inst_results(res)] == [SUB + "1.", SUB + "2."]


def test_fault_search_first_match_only() -> None:
    """TP-469 1.19 / R-ARC.10: a wildcard reaches every instance; the fault only the first."""
    state = make_state("set.search_first_match_only")
    [res] = results(set_(state, [update(SUB + "*.", setting("NotifRetry", "true", True))]))
    assert [r[0] for r in inst_results(res)] == [SUB + "1."]
    assert (retry(state, 1), retry(state, 2)) == ("true", "false")


def test_fault_search_matches_all() -> None:
    """TP-469 1.22 / R-ARC.9: the fault ignores the expression; bad paths still fail."""
    state = make_state("set.search_matches_all")
    [res] = results(set_(state, [update(SUB + "[NotifExpiration>0].",
                                        setting("NotifRetry", "true", True))]))
    assert [r[0] for r in inst_results(res)] == [SUB + "1.", SUB + "2."]
    err = set_(state, [update("Device.LocalAgent.Subscription.[",
                              setting("Enable", "true"))]).body.error
    assert err.err_code == errors.INVALID_PATH_SYNTAX


def test_fault_ignore_allow_partial() -> None:
    """TP-469 1.16/1.21 / R-SET.0: allow_partial true gives a SetResp; the fault an Error."""
    upds = [update(SUB + "1.", setting("NotifRetry", "true", True)),
            update(SUB + "2.", setting("InvalidParameter", "x", True))]
    state = make_state("set.ignore_allow_partial")
    reply = set_(state, upds, allow_partial=True)
    assert reply.body.error.param_errs[0].param_path == SUB + "2.InvalidParameter"
    assert retry(state, 1) == "false"
    # a Set that succeeds is answered the same way
    [res] = results(set_(state, upds[:1], allow_partial=True))
    assert status(res) == "oper_success"


def test_every_set_fault_is_tested() -> None:
    """Each set.* fault is registered with a requirement and switched on by some test here."""
    catalogue()
    names = {n for n in REGISTRY if n.startswith("set.")}
    source = Path(__file__).read_text(encoding="utf-8")
    assert len(names) >= 16 and all(REGISTRY[n].requirement for n in names)
    assert {n for n in names if f'"{n}"' not in source} == set()


# --- end to end, robustness -------------------------------------------------------------------------


def test_end_to_end_through_core() -> None:
    state = make_state()
    core = AgentCore(state)
    msg = messages.request("set", {"allow_partial": False, "update_objs": [
        update(SUB + "*.", setting("NotifRetry", "true", True))]}, msg_id="e2e-set")
    rec = records.no_session_record(msg, to_id=AGENT, from_id=CTRL, version="1.4")
    reply = records.unwrap_msg(core.handle_record(records.serialize(rec), now=0.0)[0])
    assert reply is not None and reply.header.msg_type == MsgType.SET_RESP
    assert len(reply.body.response.set_resp.updated_obj_results[0].oper_status.oper_success
               .updated_inst_results) == 2


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
_paths = st.one_of(_text, st.sampled_from([SUB + "1.", SUB + "*.", "Device.DeviceInfo.",
                                           SUB + "[Enable==true].", "Device."]))
_names = st.one_of(_text, st.sampled_from(["Enable", "ID", "Alias", "NotifRetry", "TimeToLive",
                                           "ReferenceList", "CreationDate"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_paths, st.lists(st.tuples(_names, _text, st.booleans()), max_size=4)),
                max_size=3), st.booleans())
def test_hostile_requests_never_crash(updates: list[Any], allow_partial: bool) -> None:
    state = make_state()
    before = json.dumps(state.store.to_json(), sort_keys=True)
    reply = set_(state, [update(p, *[setting(n, v, r) for n, v, r in ps]) for p, ps in updates],
                 allow_partial=allow_partial)
    kind = reply.body.WhichOneof("msg_body")
    assert kind in ("response", "error")
    if kind == "error":
        assert json.dumps(state.store.to_json(), sort_keys=True) == before  # R-SET.1: nothing changed


# --- shared write helpers ------------------------------------------------------------------------


def test_locate_param() -> None:
    store = make_state().store
    assert write.locate_param(store, SUB + "1.", "Enable") == (
        SUB + "1.Enable", store.param_def(SUB + "1.Enable"))
    mtp = store.add("Device.LocalAgent.MTP.")
    assert write.locate_param(store, mtp, "STOMP.Destination") is not None
    for bad in ("", "Nope", "STOMP.", ".Enable", "STOMP.Nope", "Controller.1.Enable", "a b"):
        assert write.locate_param(store, mtp, bad) is None
    assert write.locate_param(store, "Device.Nope.", "X") is None
    assert write.locate_param(store, "Device.LocalAgent.", "Controller.Enable") is None


def test_check_value_type_versus_value() -> None:
    store = make_state().store
    enable = store.param_def(SUB + "1.Enable")
    notif = store.param_def(SUB + "1.NotifType")
    refs = store.param_def(SUB + "1.ReferenceList")
    alias = store.param_def(SUB + "1.Alias")
    assert enable is not None and notif is not None and refs is not None and alias is not None
    assert write.check_value(store, enable, "true") is None
    assert write.check_value(store, enable, "True")[0] == errors.INVALID_TYPE  # type: ignore[index]
    assert write.check_value(store, notif, "Event") is None
    assert write.check_value(store, notif, "x")[0] == errors.INVALID_VALUE  # type: ignore[index]
    assert write.check_value(store, refs, "x" * 300)[0] == errors.INVALID_VALUE  # type: ignore[index]
    assert write.check_value(store, alias, "ok-1") is None
    for bad in ("", "1abc", "-x", "é"):
        assert write.check_value(store, alias, bad)[0] == errors.INVALID_VALUE  # type: ignore[index]


@settings(max_examples=200, deadline=None)
@given(_text, _text)
def test_check_value_and_locate_never_raise(name: str, value: str) -> None:
    store = _FUZZ_STORE
    located = write.locate_param(store, "Device.LocalAgent.Controller.1.", name)
    for pdef in _FUZZ_PARAMS:
        result = write.check_value(store, pdef, value)
        assert result is None or result[0] in (errors.INVALID_TYPE, errors.INVALID_VALUE)
    assert located is None or located[0].endswith(name)


def test_key_helpers() -> None:
    state = make_state()
    store = state.store
    odef = store.object_def(SUB + "1.")
    assert odef is not None
    assert write.key_params(odef) == ["Alias", "Recipient", "ID"]
    assert write.nonfunctional_key_params(odef) == {"Alias", "Recipient", "ID"}
    assert write.table_of(SUB + "12.") == SUB
    assert write.key_values(store, SUB + "1.", ("ID",)) == ("sub1",)
    assert write.key_values(store, SUB + "9.", ("ID",)) is None
    assert write.key_conflicts(store, SUB + "1.", odef) == []
    store.set(SUB + "2.ID", "sub1")
    assert [k.params for k in write.key_conflicts(store, SUB + "1.", odef)] == [("Recipient", "ID")]
    assert write.key_conflicts(store, SUB + "9.", odef) == []
    failure = write.conflict_failure(store, {SUB + "1.": odef})
    assert failure is not None and failure.code == errors.OBJECT_EXISTS_WITH_DUPLICATE_KEY
    assert write.conflict_failure(store, {}) is None
    alias = odef.params["Alias"]
    assert write.fresh_key_value(alias, 3, 0) == "cpe-3"
    assert write.fresh_key_value(alias, 3, 1) == "cpe-3-2"
    assert write.fresh_key_value(ParamDef("P", "x.P", type="unsignedInt"), 3, 2) == "5"
    assert write.fresh_key_value(ParamDef("P", "x.P", type="boolean"), 3, 0) is None
    assert write.fresh_key_value(odef.params["NotifType"], 3, 0) is None  # enumerated


def test_assign_missing_keys() -> None:
    state = make_state(subscriptions=0)
    store = state.store
    odef = store.object_def(SUB + "{i}.")
    assert odef is not None
    with write.atomic(store) as batch:
        inst = batch.add(SUB)
        store.set(inst + "Recipient", CTRL_ROW)
        write.assign_missing_keys(batch, inst, odef, {"Recipient"})
    assert (store.get(inst + "Alias"), store.get(inst + "ID")) == ("cpe-1", "cpe-1")
    with write.atomic(store) as batch:
        other = batch.add(SUB)
        store.set(other + "Alias", "given")
        write.assign_missing_keys(batch, other, odef, {"Alias", "Recipient", "ID"})
    assert store.get(other + "Alias") == "given" and store.get(other + "ID") == ""


def test_atomic_holds_events_until_commit_and_undoes_on_rollback() -> None:
    state = make_state()
    store = state.store
    events: list[object] = []
    store.listen(events.append)
    with write.atomic(store) as outer:
        with write.atomic(store, outer) as inner:
            inner.set(SUB + "1.NotifRetry", "true")
            inner.set(SUB + "1.Enable", "true")  # unchanged: no event
            inner.set(SUB + "2.NotifRetry", "true", notify=False)
        assert events == []  # the inner unit hands its events to the outer one
        with pytest.raises(write.Rollback), write.atomic(store, outer) as failing:
            failing.delete(SUB + "2.")
            raise write.Rollback(write.Failure(7000, "x"))
        assert store.exists(SUB + "2.")
    assert events == [ValueChanged(SUB + "1.NotifRetry", "false", "true")]
    events.clear()
    with write.atomic(store) as batch:
        added = batch.add(SUB)
        batch.delete(SUB + "1.")
    assert events == [ObjectAdded(added), ObjectDeleted(SUB + "1.")]
    events.clear()
    with pytest.raises(write.Rollback), write.atomic(store) as batch:
        batch.delete(SUB + "2.")
        raise write.Rollback(write.Failure.for_path("p", 7000, "m"))
    assert events == [] and store.exists(SUB + "2.")


def test_failure_and_error_msg() -> None:
    failure = write.Failure.for_path("Device.X.", 7026, "bad")
    assert failure.param_errs == [("Device.X.", 7026, "bad")]
    msg = write.error_msg(failure, "id-1")
    assert msg.header.msg_id == "id-1" and msg.body.error.err_code == 7026
    assert msg.body.error.param_errs[0].param_path == "Device.X."
    pf = write.ParamFailure("Enable", 7011, "nope", True)
    assert pf.text() == "Enable: nope"
    assert write.required_failed([pf, write.ParamFailure("X", 7010, "n", False)]) == [pf]
    assert write.describe([pf]) == "Enable: nope (7011)"


def test_check_settings_directly() -> None:
    state = make_state()
    ctx = RequestContext(CTRL, messages.request("set", {}, msg_id="x"))

    class S:
        def __init__(self, param: str, value: str, required: bool = False) -> None:
            self.param, self.value, self.required = param, value, required

    accepted, failures = write.check_settings(
        state.store, ctx, SUB + "1.", [S("NotifRetry", "true"), S("ID", "new"), S("Nope", "x", True)],
        creating=False)
    assert accepted == {SUB + "1.NotifRetry": "true"}
    assert [(f.param, f.code, f.required) for f in failures] == [
        ("ID", errors.ATTEMPT_TO_UPDATE_NON_WRITEABLE_PARAMETER, False),
        ("Nope", errors.UNSUPPORTED_PARAMETER, True)]
    accepted, failures = write.check_settings(state.store, ctx, SUB + "1.", [S("ID", "new")],
                                              creating=False, immutable_keys=False)
    assert accepted == {SUB + "1.ID": "new"} and failures == []
    accepted, failures = write.check_settings(state.store, ctx, SUB + "1.",
                                              [S("ID", "new"), S("Alias", "other")],
                                              creating=False, mutable_params=["Alias"])
    assert accepted == {SUB + "1.Alias": "other"}
    assert [(f.param, f.code) for f in failures] == [
        ("ID", errors.ATTEMPT_TO_UPDATE_NON_WRITEABLE_PARAMETER)]
    accepted, failures = write.check_settings(state.store, ctx, SUB + "1.", [S("ID", "")],
                                              creating=True, forced_required=["ID"])
    assert failures[0].required and failures[0].code == errors.INVALID_VALUE


# --- fixtures -------------------------------------------------------------------------------------

_FUZZ_STORE = make_state().store
_FUZZ_PARAMS = [pdef for path in ("Device.LocalAgent.Controller.{i}.", SUB + "{i}.")
                for pdef in load_definitions().object(path).params.values()]


def small_model() -> DataModel:
    t = "Device.T.{i}."
    return DataModel([
        ObjectDef("Device.", params={}),
        ObjectDef(t, access="readWrite", min_entries=0, max_entries=None,
                  unique_key_defs=(UniqueKey(("Name",), True),),
                  params={"Name": ParamDef("Name", t + "Name", access="readWrite"),
                          "W": ParamDef("W", t + "W", access="writeOnceReadOnly")}),
    ])


def test_store_failure_while_writing_is_7020(monkeypatch: pytest.MonkeyPatch) -> None:
    """An object that cannot be written fails with 7020 (Object could not be updated)."""
    state = make_state()

    def broken(path: str, value: str) -> str:
        raise StoreError(f"{path} vanished")

    monkeypatch.setattr(state.store, "set", broken)
    [res] = results(set_(state, [update(SUB + "1.", setting("NotifRetry", "true"))],
                         allow_partial=True))
    fail = res.oper_status.oper_failure
    assert fail.err_code == errors.OBJECT_COULD_NOT_BE_UPDATED
    assert [(f.affected_path, len(f.param_errs)) for f in fail.updated_inst_failures] == [
        (SUB + "1.", 0)]
    err = set_(state, [update(SUB + "1.", setting("NotifRetry", "true"))]).body.error
    assert (err.err_code, err.param_errs[0].param_path) == (errors.OBJECT_COULD_NOT_BE_UPDATED,
                                                            SUB + "1.")
