"""Delete handler of the reference Agent (R-DEL.0-4, R-DEL.2a, R-MSG.4a; TP-469 1.24-1.35, 1.90)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.context import FULL_ACCESS, Access, AgentState, RequestContext
from conformance.agent.core import AgentCore
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.defs import DataModel, ObjectDef, ParamDef
from conformance.agent.datamodel.store import ObjectDeleted, Store, StoreError
from conformance.agent.faults import FaultSet
from conformance.agent.messages.delete import handle_delete
from conformance.usp import errors, messages, records
from conformance.usp.schema import Msg, MsgType
from tests.support.access import DenyRules as Deny

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"
SUB = "Device.LocalAgent.Subscription."
CTRL_TABLE = "Device.LocalAgent.Controller."
BP = CTRL_TABLE + "1.BootParameter."


def make_state(*faults: str) -> AgentState:
    dm = load_definitions()
    state = AgentState(AGENT, dm, Store(dm), faults=FaultSet(faults))
    store = state.store
    store.add(CTRL_TABLE, {"EndpointID": CTRL, "Alias": "cpe-1", "Enable": "true"})
    for n, enable in ((1, "true"), (2, "false"), (3, "true")):
        store.add(BP, {"ParameterName": f"Device.P{n}", "Alias": f"cpe-{n}", "Enable": enable})
    for n in (1, 2):
        store.add(SUB, {"Alias": f"cpe-{n}", "ID": f"s{n}", "Enable": "true"})
    return state



def delete(state: AgentState, paths: list[str], *, allow_partial: bool = False,
           access: Access = FULL_ACCESS) -> Msg:
    msg = messages.request("delete", {"allow_partial": allow_partial, "obj_paths": paths},
                           msg_id="del-1")
    reply = handle_delete(state, RequestContext(CTRL, msg, access))
    assert reply.header.msg_id == "del-1"
    return reply


def results(reply: Msg) -> list[tuple[str, str, Any]]:
    assert reply.body.WhichOneof("msg_body") == "response", reply
    out: list[tuple[str, str, Any]] = []
    for r in reply.body.response.delete_resp.deleted_obj_results:
        kind = r.oper_status.WhichOneof("oper_status") or ""
        if kind == "oper_success":
            ok = r.oper_status.oper_success
            detail: Any = (list(ok.affected_paths),
                           [(u.unaffected_path, u.err_code) for u in ok.unaffected_path_errs])
        else:
            detail = r.oper_status.oper_failure.err_code
        out.append((r.requested_path, kind, detail))
    return out


def error(reply: Msg) -> tuple[int, list[tuple[str, int]]]:
    assert reply.body.WhichOneof("msg_body") == "error", reply
    err = reply.body.error
    return err.err_code, [(p.param_path, p.err_code) for p in err.param_errs]


def listen(state: AgentState) -> list[object]:
    events: list[object] = []
    state.store.listen(events.append)
    return events


# --- success -------------------------------------------------------------------------------


@pytest.mark.parametrize("allow_partial", [False, True])
def test_single_instance(allow_partial: bool) -> None:
    """TP-469 1.24: one affected_path; the instance is gone; ObjectDeletion event."""
    state = make_state()
    events = listen(state)
    assert results(delete(state, [SUB + "1."], allow_partial=allow_partial)) == [
        (SUB + "1.", "oper_success", ([SUB + "1."], []))]
    assert state.store.instances(SUB) == [SUB + "2."]
    assert events == [ObjectDeleted(SUB + "1.")]


@pytest.mark.parametrize("allow_partial", [False, True])
def test_missing_instance_is_empty_success(allow_partial: bool) -> None:
    """TP-469 1.25 / 1.29; R-DEL.2a."""
    state = make_state()
    for path in (SUB + "99.", CTRL_TABLE + "7.BootParameter.1.",
                 f'{CTRL_TABLE}[EndpointID=="nobody"].'):
        assert results(delete(state, [path], allow_partial=allow_partial)) == [
            (path, "oper_success", ([], []))]


def test_multiple_instances() -> None:
    """TP-469 1.27."""
    state = make_state()
    assert results(delete(state, [SUB + "1.", SUB + "2."])) == [
        (SUB + "1.", "oper_success", ([SUB + "1."], [])),
        (SUB + "2.", "oper_success", ([SUB + "2."], []))]
    assert state.store.instances(SUB) == []


def test_unique_key_addressing_reports_instance_numbers() -> None:
    """TP-469 1.33."""
    state = make_state()
    path = f'{CTRL_TABLE}[EndpointID=="{CTRL}"&&Alias=="cpe-1"].BootParameter.2.'
    assert results(delete(state, [path])) == [(path, "oper_success", ([BP + "2."], []))]
    assert state.store.instances(BP) == [BP + "1.", BP + "3."]


def test_wildcard_and_search_expression() -> None:
    """TP-469 1.34 / 1.35."""
    state = make_state()
    assert results(delete(state, [BP + "[Enable==true]."])) == [
        (BP + "[Enable==true].", "oper_success", ([BP + "1.", BP + "3."], []))]
    assert state.store.instances(BP) == [BP + "2."]
    assert results(delete(state, [SUB + "*."])) == [
        (SUB + "*.", "oper_success", ([SUB + "1.", SUB + "2."], []))]


def test_search_matching_nothing() -> None:
    """TP-469 1.90; R-MSG.4a."""
    state = make_state()
    assert results(delete(state, [SUB + "[Enable==false]."])) == [
        (SUB + "[Enable==false].", "oper_success", ([], []))]


def test_cascade_deletes_sub_instances_but_lists_the_matched_one() -> None:
    """Sub-objects go with their instance; each gets an ObjectDeletion event."""
    state = make_state()
    events = listen(state)
    assert results(delete(state, [CTRL_TABLE + "1."])) == [
        (CTRL_TABLE + "1.", "oper_success", ([CTRL_TABLE + "1."], []))]
    assert state.store.instances(BP) == []
    assert set(events) == {ObjectDeleted(CTRL_TABLE + "1.")} | {
        ObjectDeleted(f"{BP}{n}.") for n in (1, 2, 3)}


def test_instance_already_taken_along_by_an_earlier_entry() -> None:
    state = make_state()
    assert results(delete(state, [CTRL_TABLE + "1.", BP + "1."])) == [
        (CTRL_TABLE + "1.", "oper_success", ([CTRL_TABLE + "1."], [])),
        (BP + "1.", "oper_success", ([], []))]


# --- failures ---------------------------------------------------------------------------------


def test_invalid_object_allow_partial_false() -> None:
    """TP-469 1.26."""
    state = make_state()
    assert error(delete(state, ["Device.LocalAgent.InvalidObject."])) == (
        errors.INVALID_PATH, [("Device.LocalAgent.InvalidObject.", errors.INVALID_PATH)])


def test_invalid_object_among_valid_ones_allow_partial_false() -> None:
    """TP-469 1.28; R-DEL.1: nothing deleted, no events."""
    state = make_state()
    events = listen(state)
    assert error(delete(state, [SUB + "1.", "Device.LocalAgent.InvalidObject."]))[1] == [
        ("Device.LocalAgent.InvalidObject.", errors.INVALID_PATH)]
    assert len(state.store.instances(SUB)) == 2 and events == []


def test_invalid_object_allow_partial_true() -> None:
    """TP-469 1.30 / 1.31 / 1.32; R-DEL.0."""
    state = make_state()
    assert results(delete(state, ["Device.LocalAgent.InvalidObject."], allow_partial=True)) == [
        ("Device.LocalAgent.InvalidObject.", "oper_failure", errors.INVALID_PATH)]
    assert results(delete(state, [SUB + "1.", "Device.LocalAgent.InvalidObject.", SUB + "9."],
                          allow_partial=True)) == [
        (SUB + "1.", "oper_success", ([SUB + "1."], [])),
        ("Device.LocalAgent.InvalidObject.", "oper_failure", errors.INVALID_PATH),
        (SUB + "9.", "oper_success", ([], []))]


@pytest.mark.parametrize("path,code", [
    (SUB, errors.INVALID_PATH),
    ("Device.LocalAgent.", errors.OBJECT_IS_NOT_A_TABLE),
    ("Device.LocalAgent.Controller.1.TransferCompletePolicy.", errors.OBJECT_IS_NOT_A_TABLE),
    (SUB + "1.Enable", errors.OBJECT_IS_NOT_A_TABLE),
    ("Device.Reboot()", errors.OBJECT_IS_NOT_A_TABLE),
    ("Device.LocalAgent.Subscription.[Enable==", errors.INVALID_PATH_SYNTAX),
    ("", errors.INVALID_PATH_SYNTAX),
])
def test_path_error_codes(path: str, code: int) -> None:
    """Entries that are not Object Instance or Search Paths (R-DEL.1)."""
    state = make_state()
    assert error(delete(state, [path])) == (code, [(path, code)])
    assert results(delete(state, [path], allow_partial=True)) == [(path, "oper_failure", code)]
    assert errors.is_appropriate(code, "delete")


def test_permission_denied() -> None:
    """R-DEL.1 / R-DEL.3: 7006 without InstantiatedObj write permission."""
    state = make_state()
    deny = Deny(("InstantiatedObj", BP + "3.", "w"))
    assert error(delete(state, [BP + "*."], access=deny)) == (
        errors.PERMISSION_DENIED, [(BP + "3.", errors.PERMISSION_DENIED)])
    assert len(state.store.instances(BP)) == 3
    assert results(delete(state, [BP + "*."], allow_partial=True, access=deny)) == [
        (BP + "*.", "oper_success", ([BP + "1.", BP + "2."], [(BP + "3.", errors.PERMISSION_DENIED)]))]
    assert state.store.instances(BP) == [BP + "3."]


def test_unreadable_paths_are_left_out() -> None:
    """R-DEL.2 / R-DEL.4."""
    state = make_state()
    deny = Deny(("InstantiatedObj", BP + "1.", "r"), ("InstantiatedObj", BP + "3.", "r"),
                ("InstantiatedObj", BP + "3.", "w"))
    assert results(delete(state, [BP + "*."], allow_partial=True, access=deny)) == [
        (BP + "*.", "oper_success", ([BP + "2."], []))]
    assert state.store.instances(BP) == [BP + "3."]


def test_non_deletable_and_min_entries() -> None:
    """7024: a readOnly table, or below minEntries (R-DEL.1, R-DEL.3)."""
    dm = small_model()
    state = AgentState(AGENT, dm, Store(dm))
    ro = state.store.add("Device.R.")
    keep = [state.store.add("Device.T.") for _ in range(2)]
    assert error(delete(state, [ro])) == (errors.DELETE_FAILURE, [(ro, errors.DELETE_FAILURE)])
    assert results(delete(state, ["Device.T.*."], allow_partial=True)) == [
        ("Device.T.*.", "oper_success", ([keep[0]], [(keep[1], errors.DELETE_FAILURE)]))]


def test_firmware_image_table_is_read_only() -> None:
    state = make_state()
    inst = state.store.add("Device.DeviceInfo.FirmwareImage.")
    assert results(delete(state, [inst], allow_partial=True)) == [
        (inst, "oper_success", ([], [(inst, errors.DELETE_FAILURE)]))]


# --- faults ---------------------------------------------------------------------------------------


def test_fault_error_on_missing() -> None:
    state = make_state("delete.error_on_missing")
    assert error(delete(state, [SUB + "99."]))[0] == errors.OBJECT_DOES_NOT_EXIST


def test_fault_no_affected_paths() -> None:
    state = make_state("delete.no_affected_paths")
    assert results(delete(state, [SUB + "1."])) == [(SUB + "1.", "oper_success", ([], []))]
    assert state.store.instances(SUB) == [SUB + "2."]


def test_fault_partial_commit() -> None:
    state = make_state("delete.partial_commit")
    events = listen(state)
    assert error(delete(state, [SUB + "1.", "Device.LocalAgent.InvalidObject."]))[0] \
        == errors.INVALID_PATH
    assert state.store.instances(SUB) == [SUB + "2."] and events == [ObjectDeleted(SUB + "1.")]


def test_fault_search_no_match_error() -> None:
    state = make_state("delete.search_no_match_error")
    assert error(delete(state, [SUB + "[Enable==false]."]))[0] == errors.OBJECT_DOES_NOT_EXIST
    assert results(delete(state, [SUB + "9."])) == [(SUB + "9.", "oper_success", ([], []))]


def test_fault_ignore_invalid_path() -> None:
    state = make_state("delete.ignore_invalid_path")
    assert results(delete(state, ["Device.LocalAgent.InvalidObject."])) == [
        ("Device.LocalAgent.InvalidObject.", "oper_success", ([], []))]


def test_fault_reports_without_deleting() -> None:
    """TP-469 1.24 metric 3: the instance is reported as affected but stays."""
    state = make_state("delete.reports_without_deleting")
    events = listen(state)
    assert results(delete(state, [SUB + "1."])) == [(SUB + "1.", "oper_success", ([SUB + "1."], []))]
    assert state.store.instances(SUB) == [SUB + "1.", SUB + "2."] and events == []


def test_fault_first_path_only() -> None:
    """TP-469 1.27 / 1.32; R-DEL.0, R-DEL.1: every obj_paths entry gets a result."""
    for allow_partial in (False, True):
        state = make_state("delete.first_path_only")
        assert results(delete(state, [SUB + "1.", SUB + "2."], allow_partial=allow_partial)) == [
            (SUB + "1.", "oper_success", ([SUB + "1."], []))]
        assert state.store.instances(SUB) == [SUB + "2."]


def test_fault_ignore_allow_partial() -> None:
    """TP-469 1.30 / 1.31; R-DEL.0: with the fault one bad entry fails the whole message."""
    paths = [SUB + "1.", "Device.LocalAgent.InvalidObject."]
    state = make_state("delete.ignore_allow_partial")
    assert error(delete(state, paths, allow_partial=True)) == (
        errors.INVALID_PATH, [("Device.LocalAgent.InvalidObject.", errors.INVALID_PATH)])
    assert len(state.store.instances(SUB)) == 2
    clean = make_state()
    assert [kind for _, kind, _ in results(delete(clean, paths, allow_partial=True))] == [
        "oper_success", "oper_failure"]


def test_fault_affected_paths_as_requested() -> None:
    """TP-469 1.33; R-MSG.3: affected_paths must be instance number paths."""
    path = f'{CTRL_TABLE}[EndpointID=="{CTRL}"].BootParameter.[ParameterName=="Device.P2"].'
    state = make_state("delete.affected_paths_as_requested")
    assert results(delete(state, [path])) == [(path, "oper_success", ([path], []))]
    assert results(delete(make_state(), [path])) == [(path, "oper_success", ([BP + "2."], []))]
    # nothing matched: nothing to misreport
    assert results(delete(state, [SUB + "9."])) == [(SUB + "9.", "oper_success", ([], []))]


def test_fault_search_first_match_only() -> None:
    """TP-469 1.34; R-ARC.10: a wildcard deletes every instance it matches."""
    state = make_state("delete.search_first_match_only")
    assert results(delete(state, [SUB + "*."])) == [(SUB + "*.", "oper_success", ([SUB + "1."], []))]
    assert state.store.instances(SUB) == [SUB + "2."]
    # an instance number path is not a search: unaffected
    assert results(delete(state, [BP + "2."])) == [(BP + "2.", "oper_success", ([BP + "2."], []))]


def test_fault_search_ignores_expression() -> None:
    """TP-469 1.35 / 1.90; R-ARC.9: only instances matching the expression go."""
    state = make_state("delete.search_ignores_expression")
    assert results(delete(state, [BP + "[Enable==false]."])) == [
        (BP + "[Enable==false].", "oper_success", ([BP + "1.", BP + "2.", BP + "3."], []))]
    state = make_state("delete.search_ignores_expression")
    assert results(delete(state, [BP + "[Enable==true]."])) == [
        (BP + "[Enable==true].", "oper_success", ([BP + "1.", BP + "2.", BP + "3."], []))]
    assert state.store.instances(BP) == []
    assert results(delete(state, [SUB + '[NotifType=="a]b"].'])) == [
        (SUB + '[NotifType=="a]b"].', "oper_success", ([SUB + "1.", SUB + "2."], []))]
    # a unique key address is not a search: the fault leaves it alone
    state = make_state("delete.search_ignores_expression")
    state.store.add(CTRL_TABLE, {"EndpointID": "proto::other", "Alias": "cpe-2"})
    key = f'{CTRL_TABLE}[EndpointID=="{CTRL}"].'
    assert results(delete(state, [key + 'BootParameter.[Enable==false].'])) == [
        (key + 'BootParameter.[Enable==false].', "oper_success",
         ([BP + "1.", BP + "2.", BP + "3."], []))]
    assert results(delete(state, [key])) == [(key, "oper_success", ([CTRL_TABLE + "1."], []))]
    assert state.store.instances(CTRL_TABLE) == [CTRL_TABLE + "2."]


# --- end to end, robustness ---------------------------------------------------------------------


def test_end_to_end_through_core() -> None:
    state = make_state()
    core = AgentCore(state)
    msg = messages.request("delete", {"allow_partial": False, "obj_paths": [SUB + "*."]},
                           msg_id="e2e-del")
    rec = records.no_session_record(msg, to_id=AGENT, from_id=CTRL, version="1.4")
    reply = records.unwrap_msg(core.handle_record(records.serialize(rec), now=0.0)[0])
    assert reply is not None and reply.header.msg_type == MsgType.DELETE_RESP
    ok = reply.body.response.delete_resp.deleted_obj_results[0].oper_status.oper_success
    assert list(ok.affected_paths) == [SUB + "1.", SUB + "2."]


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=50)
_paths = st.one_of(_text, st.sampled_from([SUB + "1.", SUB + "*.", BP + "[Enable==true].",
                                           CTRL_TABLE + "1.", "Device.", SUB]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_paths, max_size=4), st.booleans())
def test_hostile_requests_never_crash(paths: list[str], allow_partial: bool) -> None:
    state = make_state()
    before = json.dumps(state.store.to_json(), sort_keys=True)
    reply = delete(state, paths, allow_partial=allow_partial)
    kind = reply.body.WhichOneof("msg_body")
    assert kind in ("response", "error")
    if kind == "error":
        assert json.dumps(state.store.to_json(), sort_keys=True) == before  # R-DEL.1: nothing deleted


def small_model() -> DataModel:
    return DataModel([
        ObjectDef("Device.", params={}),
        ObjectDef("Device.R.{i}.", access="readOnly", min_entries=0, max_entries=None,
                  params={"X": ParamDef("X", "Device.R.{i}.X")}),
        ObjectDef("Device.T.{i}.", access="readWrite", min_entries=1, max_entries=None,
                  params={"X": ParamDef("X", "Device.T.{i}.X", access="readWrite")}),
    ])


def test_store_failure_while_deleting_is_7024(monkeypatch: pytest.MonkeyPatch) -> None:
    state = make_state()

    def broken(inst: str) -> list[str]:
        raise StoreError(f"{inst} is stuck")

    monkeypatch.setattr(state.store, "delete", broken)
    assert results(delete(state, [SUB + "1."], allow_partial=True)) == [
        (SUB + "1.", "oper_success", ([], [(SUB + "1.", errors.DELETE_FAILURE)]))]
    assert error(delete(state, [SUB + "1."])) == (errors.DELETE_FAILURE,
                                                   [(SUB + "1.", errors.DELETE_FAILURE)])
