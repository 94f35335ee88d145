"""Reference Agent Get handler (TR-369 R-GET.0..5, R-MSG.3, R-MSG.4a; TP-469 1.36-1.51, 1.82,
1.86, 1.87, 1.89), its permission filtering (R-GET.1, R-GET.4, SecuredRoles) and its faults."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.context import FULL_ACCESS, AgentState, RequestContext
from conformance.agent.core import AgentCore
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.store import Store
from conformance.agent.faults import REGISTRY, FaultSet
from conformance.agent.messages.get import (
    get_path,
    handle_get,
    read_value,
    reads_secured,
    search_params_readable,
    unique_key_address,
)
from conformance.usp import messages, paths, records
from conformance.usp.schema import msg_pb2
from tests.support.access import DenyKinds as Deny

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"
LA = "Device.LocalAgent."
SUBS = "Device.LocalAgent.Subscription."
CTRLS = "Device.LocalAgent.Controller."
DM = load_definitions()
SUB_PARAMS = set(DM.object(SUBS + "{i}.").params)


def _state(*faults: str, subscriptions: bool = True) -> AgentState:
    store = Store(DM)
    store.set(LA + "EndpointID", AGENT)
    store.set(LA + "SoftwareVersion", "1.0.0")
    if subscriptions:
        for sid, enable, exp in (("a", "true", "20"), ("b", "false", "10"), ("c", "true", "5")):
            store.add(SUBS, {"ID": sid, "Alias": f"sub-{sid}", "Enable": enable,
                             "NotifExpiration": exp, "Recipient": CTRLS + "1"})
    c1 = store.add(CTRLS, {"EndpointID": CTRL, "Alias": "one"})
    store.add(c1 + "MTP.", {"Protocol": "WebSocket", "Alias": "ws"})
    store.add(c1 + "BootParameter.", {"ParameterName": "Device.LocalAgent.EndpointID"})
    store.add("Device.MQTT.Client.", {"Password": "secret", "Alias": "mq"})
    return AgentState(AGENT, DM, store, faults=FaultSet(faults))


def _get(state: AgentState, *param_paths: str, max_depth: int = 0,
         access=FULL_ACCESS) -> msg_pb2.GetResp:
    msg = messages.request("get", {"param_paths": list(param_paths), "max_depth": max_depth},
                           msg_id="m1")
    reply = handle_get(state, RequestContext(CTRL, msg, access))
    assert reply.header.msg_id == "m1"
    return reply.body.response.get_resp


def _one(state: AgentState, path: str, **kw) -> msg_pb2.GetResp.RequestedPathResult:
    resp = _get(state, path, **kw)
    assert len(resp.req_path_results) == 1
    return resp.req_path_results[0]


def _resolved(result) -> dict[str, dict[str, str]]:
    return {r.resolved_path: dict(r.result_params) for r in result.resolved_path_results}



class Secured(Deny):
    """Access with a secured role for paths below ``scope``."""

    def __init__(self, scope: str = "Device.") -> None:
        super().__init__()
        self.scope = scope
        self.asked: list[str] = []

    def reads_secured(self, param_path: str) -> bool:
        self.asked.append(param_path)
        return param_path.startswith(self.scope)


# --- TP-469 1.36-1.45: paths, grouping, relative names ------------------------------------


def test_full_parameter_path():
    """TP-469 1.36, R-GET.2, R-GET.3."""
    result = _one(_state(), LA + "EndpointID")
    assert result.err_code == 0 and result.requested_path == LA + "EndpointID"
    assert _resolved(result) == {LA: {"EndpointID": AGENT}}


def test_several_parameter_paths_same_and_different_objects():
    """TP-469 1.37, 1.38: one RequestedPathResult per requested path, in order."""
    resp = _get(_state(), LA + "EndpointID", LA + "SoftwareVersion", SUBS + "2.Enable")
    assert [r.requested_path for r in resp.req_path_results] == [
        LA + "EndpointID", LA + "SoftwareVersion", SUBS + "2.Enable"]
    assert [_resolved(r) for r in resp.req_path_results] == [
        {LA: {"EndpointID": AGENT}}, {LA: {"SoftwareVersion": "1.0.0"}},
        {SUBS + "2.": {"Enable": "false"}}]


def test_object_path_reports_each_sub_object_with_relative_names():
    """TP-469 1.39: one ResolvedPathResult per object, parameters relative to it (USP 1.2)."""
    state = _state()
    result = _one(state, LA)
    found = _resolved(result)
    assert result.err_code == 0
    assert next(iter(found)) == LA
    for path in (CTRLS + "1.", CTRLS + "1.MTP.1.", CTRLS + "1.MTP.1.WebSocket.", SUBS + "3.",
                 LA + "ControllerTrust."):
        assert path in found
    for path, params in found.items():
        assert path.startswith(LA)
        assert set(params) == set(state.store.object_def(path).params), path
    assert found[CTRLS + "1."]["EndpointID"] == CTRL


def test_results_are_depth_first_in_schema_order():
    found = list(_resolved(_one(_state(), CTRLS + "1.")))
    assert found[:3] == [CTRLS + "1.", CTRLS + "1.MTP.1.", CTRLS + "1.MTP.1.STOMP."]
    assert found.index(CTRLS + "1.BootParameter.1.") > found.index(CTRLS + "1.MTP.1.UDS.")


def test_object_instance_path():
    """TP-469 1.40."""
    found = _resolved(_one(_state(), SUBS + "2."))
    assert list(found) == [SUBS + "2."]
    assert set(found[SUBS + "2."]) == SUB_PARAMS
    assert found[SUBS + "2."]["ID"] == "b"


@pytest.mark.parametrize("path, code", [
    (LA + "InvalidParameter", 7026),            # TP-469 1.41
    ("Device.NoSuchObject.", 7026),
    (LA + "EndpointID.", 7026),                 # a parameter used as an object
    (SUBS + "9.", 7026),                        # R-GET.0: not in the instantiated model
    (SUBS + "9.Enable", 7026),
    (CTRLS + '9.MTP.[Alias=="x"].', 7026),      # the numbered part is an address
    (SUBS + "*.NoSuchParam", 7026),             # a search naming nothing supported
    (SUBS + "Enable", 7026),                    # a table needs an instance
    ("Device.Reboot()", 7026),                  # commands and events are not readable
    ("Device.Boot!", 7026),
    (LA + "..", 7008),
    ("LocalAgent.", 7008),
    ("", 7008),
    (SUBS + "[Enable>true].", 7008),            # ordering operator on a boolean
    (SUBS + "{i}.", 7008),                      # supported-path notation is no instance
])
def test_invalid_paths_get_an_error_in_their_own_result(path, code):
    """R-GET.0 (7026 Invalid path), 7008 for syntax; TP-469 1.41."""
    result = _one(_state(), path)
    assert (result.err_code, len(result.resolved_path_results)) == (code, 0)
    assert result.err_msg


def test_invalid_path_does_not_fail_the_valid_ones():
    """TP-469 1.42."""
    resp = _get(_state(), LA + "EndpointID", LA + "InvalidParameter", SUBS + "1.ID")
    assert [r.err_code for r in resp.req_path_results] == [0, 7026, 0]
    assert _resolved(resp.req_path_results[2]) == {SUBS + "1.": {"ID": "a"}}


def test_unique_key_addressing_reports_instance_numbers():
    """TP-469 1.43, R-MSG.3."""
    for path in (SUBS + '[Alias=="sub-b"].Enable', SUBS + f'[Recipient=="{CTRLS}1"&&ID=="b"].Enable'):
        result = _one(_state(), path)
        assert _resolved(result) == {SUBS + "2.": {"Enable": "false"}}


def test_wildcards():
    """TP-469 1.44, 1.45."""
    assert _resolved(_one(_state(), SUBS + "*.Enable")) == {
        SUBS + "1.": {"Enable": "true"}, SUBS + "2.": {"Enable": "false"},
        SUBS + "3.": {"Enable": "true"}}
    found = _resolved(_one(_state(), SUBS + "*."))
    assert list(found) == [SUBS + "1.", SUBS + "2.", SUBS + "3."]
    assert all(set(params) == SUB_PARAMS for params in found.values())
    found = _resolved(_one(_state(), CTRLS + "*.MTP.*.Protocol"))
    assert found == {CTRLS + "1.MTP.1.": {"Protocol": "WebSocket"}}


@pytest.mark.parametrize("expr, ids", [
    ("Enable==true", ["a", "c"]),               # TP-469 1.46
    ("Enable!=true", ["b"]),                    # 1.47
    ("NotifExpiration>10", ["a"]),              # 1.48
    ("NotifExpiration<10", ["c"]),              # 1.49
    ("NotifExpiration>=10", ["a", "b"]),        # 1.50
    ("NotifExpiration<=10", ["b", "c"]),        # 1.51
    ('ID=="b"&&Enable==false', ["b"]),
])
def test_search_expressions(expr, ids):
    """TP-469 1.46-1.51: only matching instances, all their parameters, relative names."""
    result = _one(_state(), f"{SUBS}[{expr}].")
    assert result.err_code == 0
    found = _resolved(result)
    assert [params["ID"] for params in found.values()] == ids
    assert all(set(params) == SUB_PARAMS for params in found.values())


def test_reference_following():
    found = _resolved(_one(_state(), SUBS + "1.Recipient+."))
    assert CTRLS + "1." in found and found[CTRLS + "1."]["Alias"] == "one"
    assert _resolved(_one(_state(), SUBS + "2.Recipient+.EndpointID")) == {
        CTRLS + "1.": {"EndpointID": CTRL}}
    # every subscription points at the same controller: reported once
    found = _resolved(_one(_state(), SUBS + "*.Recipient+.Alias"))
    assert found == {CTRLS + "1.": {"Alias": "one"}}


# --- empty results: R-GET.1a, R-GET.1b, R-MSG.4a ----------------------------------------


@pytest.mark.parametrize("path", [
    SUBS + "[Enable==true].",                     # TP-469 1.82, 1.86
    SUBS + '[ID=="none"].Enable',
    CTRLS + '[Alias=="none"].MTP.',               # a complete unique key counts as a search
    CTRLS + '[EndpointID=="proto::nobody"].',
    CTRLS + '[Alias=="one"].MTP.[Protocol=="CoAP"].Enable',
])
def test_search_matching_nothing_is_an_empty_success(path):
    """R-GET.1a, R-MSG.4a."""
    result = _one(_state(subscriptions=False), path)
    assert (result.err_code, len(result.resolved_path_results)) == (0, 0)


def test_table_without_instances_is_an_empty_success():
    """TP-469 1.87."""
    result = _one(_state(subscriptions=False), SUBS)
    assert (result.err_code, len(result.resolved_path_results)) == (0, 0)


def test_object_without_parameters_or_sub_objects_is_empty():
    """R-GET.1b: Device.SoftwareModules.ExecutionUnit.{i}.Extensions. has neither."""
    state = _state()
    eu = state.store.add("Device.SoftwareModules.ExecutionUnit.")
    result = _one(state, eu + "Extensions.")
    assert (result.err_code, len(result.resolved_path_results)) == (0, 0)


def test_table_path_lists_its_instances():
    assert list(_resolved(_one(_state(), SUBS))) == [SUBS + "1.", SUBS + "2.", SUBS + "3."]


def test_same_path_twice_is_answered_twice():
    resp = _get(_state(), SUBS + "1.ID", SUBS + "1.ID")
    assert [_resolved(r) for r in resp.req_path_results] == [{SUBS + "1.": {"ID": "a"}}] * 2


def test_empty_get():
    assert len(_get(_state()).req_path_results) == 0


# --- max_depth: R-GET.5, TP-469 1.89 ---------------------------------------------------------


def test_max_depth_1_gives_only_the_requested_object():
    assert list(_resolved(_one(_state(), LA, max_depth=1))) == [LA]


def test_max_depth_2_adds_the_immediate_sub_objects():
    found = set(_resolved(_one(_state(), LA, max_depth=2)))
    assert found == {LA, CTRLS + "1.", LA + "ControllerTrust.", SUBS + "1.", SUBS + "2.",
                     SUBS + "3."}


def test_max_depth_3_adds_the_second_level():
    found = set(_resolved(_one(_state(), LA, max_depth=3)))
    assert {CTRLS + "1.MTP.1.", CTRLS + "1.BootParameter.1.", CTRLS + "1.E2ESession."} <= found
    assert CTRLS + "1.MTP.1.WebSocket." not in found


def test_max_depth_0_is_the_whole_tree():
    found = set(_resolved(_one(_state(), LA, max_depth=0)))
    assert CTRLS + "1.MTP.1.WebSocket." in found
    assert found == set(_resolved(_one(_state(), LA)))


def test_max_depth_on_tables_searches_and_parameters():
    """A table and its instance count as one level; parameters ignore max_depth."""
    assert list(_resolved(_one(_state(), SUBS, max_depth=1))) == [SUBS + "1.", SUBS + "2.",
                                                                    SUBS + "3."]
    assert list(_resolved(_one(_state(), CTRLS + "*.", max_depth=1))) == [CTRLS + "1."]
    found = list(_resolved(_one(_state(), CTRLS + "1.", max_depth=2)))
    assert CTRLS + "1.MTP.1." in found and CTRLS + "1.MTP.1.WebSocket." not in found
    assert _resolved(_one(_state(), LA + "EndpointID", max_depth=1)) == {LA: {"EndpointID": AGENT}}


# --- the whole model ------------------------------------------------------------------------


def test_get_device_on_the_full_model():
    """Every object of the instantiated model, each once, numbered (R-MSG.3)."""
    state = _state()
    result = _one(state, "Device.")
    paths_seen = [r.resolved_path for r in result.resolved_path_results]
    assert result.err_code == 0 and len(paths_seen) == len(set(paths_seen)) > 20
    assert paths_seen[0] == "Device."
    for path in paths_seen:
        assert paths.check_instance_number_addressing(path) == []
    assert {SUBS + "3.", CTRLS + "1.MTP.1.WebSocket.", "Device.MQTT.Client.1."} <= set(paths_seen)
    total = sum(len(r.result_params) for r in result.resolved_path_results)
    assert total > 200


# --- permissions: R-GET.1, R-GET.4, InstantiatedObj, secured ----------------------------------


def test_unreadable_parameter_path_is_invalid():
    """R-GET.1: treated as not in the supported model, hence 7026."""
    access = Deny(Param=(LA + "EndpointID",))
    assert _one(_state(), LA + "EndpointID", access=access).err_code == 7026
    assert _one(_state(), LA + "SoftwareVersion", access=access).err_code == 0


def test_unreadable_object_path_is_invalid():
    access = Deny(Obj=(CTRLS,))
    assert _one(_state(), CTRLS + "1.", access=access).err_code == 7026
    assert _one(_state(), CTRLS + "1.Alias", access=access).err_code == 7026
    assert _one(_state(), CTRLS, access=access).err_code == 7026


def test_unreadable_parameters_are_left_out_of_object_results():
    """R-GET.4: the object is still reported."""
    access = Deny(Param=(SUBS + "1.",))
    found = _resolved(_one(_state(), SUBS + "1.", access=access))
    assert found == {SUBS + "1.": {}}
    found = _resolved(_one(_state(), SUBS + "*.Enable", access=access))
    assert list(found) == [SUBS + "2.", SUBS + "3."]


def test_unreadable_sub_objects_are_left_out():
    found = _resolved(_one(_state(), LA, access=Deny(Obj=(CTRLS,))))
    assert LA in found and not any(p.startswith(CTRLS) for p in found)


def test_search_needs_instantiated_object_read():
    access = Deny(InstantiatedObj=(SUBS + "2.",))
    assert list(_resolved(_one(_state(), SUBS + "*.", access=access))) == [SUBS + "1.", SUBS + "3."]
    assert list(_resolved(_one(_state(), SUBS + "2.", access=access))) == [SUBS + "2."]


def test_search_on_an_unreadable_parameter_is_invalid():
    access = Deny(Param=(SUBS + "{i}.Enable",))
    assert _one(_state(), SUBS + "[Enable==true].", access=access).err_code == 7026
    assert search_params_readable(access, paths.parse_path(SUBS + "[ID==\"a\"]."))
    assert search_params_readable(access, paths.parse_path(SUBS + '1.Recipient+.MTP.[Enable==true].'))


def test_secured_parameters_read_empty_without_a_secured_role():
    """TR-369 security "SecuredRoles": secured values are hidden by default."""
    path = "Device.MQTT.Client.1.Password"
    assert _resolved(_one(_state(), path)) == {"Device.MQTT.Client.1.": {"Password": ""}}
    access = Secured()
    assert _resolved(_one(_state(), path, access=access)) == {
        "Device.MQTT.Client.1.": {"Password": "secret"}}
    assert access.asked == [path]
    assert _one(_state(), "Device.MQTT.Client.1.", access=Secured("Device.STOMP."))\
        .resolved_path_results[0].result_params["Password"] == ""


def test_reads_secured_and_read_value_helpers():
    state = _state()
    assert reads_secured(FULL_ACCESS, "Device.MQTT.Client.1.Password") is False
    assert reads_secured(Secured(), "Device.MQTT.Client.1.Password") is True
    pdef = DM.object(LA).params["EndpointID"]
    assert read_value(state.store, FULL_ACCESS, pdef, LA + "EndpointID") == AGENT
    hidden = dataclasses.replace(pdef, hidden=True)
    assert read_value(state.store, Secured(), hidden, LA + "EndpointID") == ""


def test_unique_key_address_helper():
    store = _state().store
    assert unique_key_address(store, SUBS + "2.") == SUBS + '[Alias=="sub-b"].'
    assert unique_key_address(store, CTRLS + "1.MTP.1.WebSocket.") == \
        CTRLS + '[EndpointID=="proto::controller-1"].MTP.[Protocol=="WebSocket"].WebSocket.'
    store.set(SUBS + "1.Alias", 'q"%')
    assert unique_key_address(store, SUBS + "1.") == SUBS + '[Alias=="q%22%25"].'
    assert unique_key_address(store, LA) == LA


# --- faults ------------------------------------------------------------------------------------


def _codes(resp: msg_pb2.GetResp) -> list[int]:
    return [r.err_code for r in resp.req_path_results]


def _check_wrong_error_code(state):
    return _codes(_get(state, LA + "InvalidParameter")) == [7026]


def _check_invalid_fails_message(state):
    msg = messages.request("get", {"param_paths": [LA + "EndpointID", LA + "Invalid"]}, msg_id="x")
    reply = handle_get(state, RequestContext(CTRL, msg))
    return reply.body.WhichOneof("msg_body") == "response"


def _check_instance_number(state):
    found = _resolved(_one(state, SUBS + '[Alias=="sub-b"].Enable'))
    return all(paths.check_instance_number_addressing(p) == [] for p in found) and bool(found)


def _check_max_depth(state):
    return list(_resolved(_one(state, LA, max_depth=1))) == [LA]


def _check_all_params(state):
    return set(_resolved(_one(state, SUBS + "1."))[SUBS + "1."]) == SUB_PARAMS


def _check_relative_keys(state):
    return all(not k.startswith("Device.") for params in _resolved(_one(state, LA)).values()
               for k in params)


def _check_sub_objects_separate(state):
    found = _resolved(_one(state, CTRLS + "1."))
    return CTRLS + "1.MTP.1." in found and all("." not in k for p in found.values() for k in p)


def _check_unmatched_search(state):
    return _codes(_get(state, SUBS + '[ID=="none"].')) == [0]


def _check_empty_table(state):
    return _codes(_get(state, CTRLS + "1.MTP.1.WebSocket.", "Device.MQTT.Client.1.Stats.",
                       "Device.BulkData.Profile.")) == [0, 0, 0]


def _check_empty_table_no_result(state):
    """R-GET.1b: a table without instances has nothing to report (TP-469 1.87)."""
    for inst in list(state.store.instances(SUBS)):
        state.store.delete(inst)
    resp = _get(state, SUBS, CTRLS)                      # CTRLS still has an instance
    return [list(_resolved(r))[:1] for r in resp.req_path_results] == [[], [CTRLS + "1."]]


def _check_search(state):
    return [p["ID"] for p in _resolved(_one(state, SUBS + "[Enable==false].")).values()] == ["b"]


def _check_single_param(state):
    return _resolved(_one(state, SUBS + "1.ID")) == {SUBS + "1.": {"ID": "a"}}


def _check_every_path_answered(state):
    resp = _get(state, LA + "EndpointID", LA + "SoftwareVersion")
    return [r.requested_path for r in resp.req_path_results] == [LA + "EndpointID",
                                                                 LA + "SoftwareVersion"]


def _check_param_parent_path(state):
    return list(_resolved(_one(state, SUBS + "*.Enable"))) == [SUBS + "1.", SUBS + "2.", SUBS + "3."]


def _check_invalid_path_error(state):
    resp = _get(state, LA + "InvalidParameter", SUBS + "9.", LA + "EndpointID")
    return _codes(resp) == [7026, 7026, 0]


def _check_wildcard_all(state):
    return [p["ID"] for p in _resolved(_one(state, SUBS + "*.ID")).values()] == ["a", "b", "c"]


def _search_check(expr: str, ids: list[str]) -> Callable[[AgentState], bool]:
    def check(state: AgentState) -> bool:
        found = _resolved(_one(state, f"{SUBS}[{expr}]."))
        return [params["ID"] for params in found.values()] == ids
    return check


FAULT_CHECKS: dict[str, Callable[[AgentState], bool]] = {
    "get.wrong_error_code": _check_wrong_error_code,
    "get.invalid_path_fails_message": _check_invalid_fails_message,
    "get.instance_not_number": _check_instance_number,
    "get.ignore_max_depth": _check_max_depth,
    "get.missing_param": _check_all_params,
    "get.absolute_param_keys": _check_relative_keys,
    "get.flatten_subobjects": _check_sub_objects_separate,
    "get.unmatched_search_error": _check_unmatched_search,
    "get.empty_table_error": _check_empty_table,
    "get.empty_table_reports_table": _check_empty_table_no_result,
    "get.search_returns_all": _check_search,
    "get.extra_params": _check_single_param,
    "get.first_path_only": _check_every_path_answered,
    "get.param_resolved_path_full": _check_param_parent_path,
    "get.invalid_path_no_error": _check_invalid_path_error,
    "get.wildcard_first_only": _check_wildcard_all,
    # state: a (Enable true, NotifExpiration 20), b (false, 10), c (true, 5)
    "get.search_eq_as_ne": _search_check("Enable==true", ["a", "c"]),         # TP-469 1.46
    "get.search_ne_as_eq": _search_check("Enable!=true", ["b"]),              # 1.47
    "get.search_gt_inclusive": _search_check("NotifExpiration>10", ["a"]),    # 1.48
    "get.search_lt_inclusive": _search_check("NotifExpiration<10", ["c"]),    # 1.49
    "get.search_ge_exclusive": _search_check("NotifExpiration>=10", ["a", "b"]),  # 1.50
    "get.search_le_exclusive": _search_check("NotifExpiration<=10", ["b", "c"]),  # 1.51
}

# The operator each search fault breaks, as written in a search expression.
OPERATOR_FAULTS = {"get.search_eq_as_ne": "==", "get.search_ne_as_eq": "!=",
                   "get.search_gt_inclusive": ">", "get.search_lt_inclusive": "<",
                   "get.search_ge_exclusive": ">=", "get.search_le_exclusive": "<="}


def test_every_get_fault_has_a_check():
    assert {n for n in REGISTRY if n.startswith("get.")} == set(FAULT_CHECKS)


@pytest.mark.parametrize("fault", sorted(FAULT_CHECKS))
def test_fault_changes_the_behaviour(fault):
    check = FAULT_CHECKS[fault]
    assert check(_state()) is True
    assert check(_state(fault)) is False
    assert REGISTRY[fault].requirement


@pytest.mark.parametrize("fault", sorted(OPERATOR_FAULTS))
def test_operator_fault_leaves_the_other_operators_alone(fault):
    """R-ARC.9: each get.search_* fault breaks exactly one operator (TP-469 1.46-1.51)."""
    state = _state(fault)
    for other, op in OPERATOR_FAULTS.items():
        if other != fault:
            assert FAULT_CHECKS[other](state), op
    assert not FAULT_CHECKS[fault](state)


def test_operator_faults_only_touch_get():
    """The faults are Get's: GetInstances evaluates the same expression correctly."""
    from conformance.agent.messages.get import get_instances_path
    state = _state("get.search_gt_inclusive")
    found = get_instances_path(state, FULL_ACCESS, SUBS + "[NotifExpiration>10].", True)
    assert [inst for inst, _keys in found] == [SUBS + "1."]


def test_fault_eq_as_ne_also_breaks_unique_key_addressing():
    found = _resolved(_one(_state("get.search_eq_as_ne"), SUBS + '[Alias=="sub-b"].Enable'))
    assert set(found) == {SUBS + "1.", SUBS + "3."}


def test_fault_param_resolved_path_full_reports_the_parameter():
    """R-GET.2 broken: the resolved_path names the parameter (TP-469 1.38)."""
    resp = _get(_state("get.param_resolved_path_full"), LA + "EndpointID", SUBS + "2.Enable", LA)
    assert _resolved(resp.req_path_results[0]) == {LA + "EndpointID": {"EndpointID": AGENT}}
    assert _resolved(resp.req_path_results[1]) == {SUBS + "2.Enable": {"Enable": "false"}}
    assert LA in _resolved(resp.req_path_results[2])     # object paths are unaffected


def test_fault_invalid_path_no_error_keeps_syntax_errors():
    resp = _get(_state("get.invalid_path_no_error"), LA + "InvalidParameter", LA + "..")
    assert _codes(resp) == [0, 7008]
    assert len(resp.req_path_results[0].resolved_path_results) == 0


def test_fault_wildcard_first_only():
    """R-ARC.10 broken: only the first instance a wildcard matches (TP-469 1.44/1.45)."""
    state = _state("get.wildcard_first_only")
    assert list(_resolved(_one(state, SUBS + "*."))) == [SUBS + "1."]
    assert len(_resolved(_one(state, SUBS))) == 3           # a table path is no wildcard


def test_fault_wrong_error_code_keeps_syntax_errors():
    assert _codes(_get(_state("get.wrong_error_code"), LA + "..", LA + "Nope")) == [7008, 7016]


def test_fault_invalid_path_error_message_names_the_path():
    msg = messages.request("get", {"param_paths": [LA + "Nope"]}, msg_id="x")
    reply = handle_get(_state("get.invalid_path_fails_message"), RequestContext(CTRL, msg))
    assert reply.body.error.err_code == 7026
    assert reply.body.error.param_errs[0].param_path == LA + "Nope"


def test_fault_flatten_subobjects_uses_relative_sub_paths():
    found = _resolved(_one(_state("get.flatten_subobjects"), CTRLS + "1."))
    assert list(found) == [CTRLS + "1."]
    assert found[CTRLS + "1."]["MTP.1.Protocol"] == "WebSocket"


# --- end to end through AgentCore -----------------------------------------------------------


def _roundtrip(core: AgentCore, msg) -> msg_pb2.Msg:
    rec = records.no_session_record(msg, to_id=AGENT, from_id=CTRL, version="1.4")
    out = core.handle_record(records.serialize(rec), now=0.0)
    assert len(out) == 1
    return records.unwrap_msg(out[0])


def test_end_to_end_get_through_agent_core():
    core = AgentCore(_state())
    msg = messages.request("get", {"param_paths": [LA + "EndpointID", SUBS + "[Enable==true].ID",
                                                   LA + "Nope"]}, msg_id="e2e-1")
    reply = _roundtrip(core, msg)
    assert reply.header.msg_id == "e2e-1"
    assert reply.header.msg_type == msg_pb2.Header.GET_RESP
    results = reply.body.response.get_resp.req_path_results
    assert _resolved(results[0]) == {LA: {"EndpointID": AGENT}}
    assert _resolved(results[1]) == {SUBS + "1.": {"ID": "a"}, SUBS + "3.": {"ID": "c"}}
    assert results[2].err_code == 7026


def test_end_to_end_first_path_only():
    """TP-469 1.37 broken through the whole agent: one RequestedPathResult for two paths."""
    core = AgentCore(_state("get.first_path_only"))
    msg = messages.request("get", {"param_paths": [LA + "EndpointID", LA + "SoftwareVersion"]},
                           msg_id="e")
    results = _roundtrip(core, msg).body.response.get_resp.req_path_results
    assert [r.requested_path for r in results] == [LA + "EndpointID"]


def test_end_to_end_fault_turns_the_response_into_an_error():
    core = AgentCore(_state("get.invalid_path_fails_message"))
    reply = _roundtrip(core, messages.request("get", {"param_paths": [LA + "Nope"]}, msg_id="e"))
    assert reply.header.msg_type == msg_pb2.Header.ERROR and reply.body.error.err_code == 7026


def test_end_to_end_uses_the_controllers_access():
    core = AgentCore(_state(), access_for=lambda _cid: Deny(Param=(LA + "EndpointID",)))
    reply = _roundtrip(core, messages.request("get", {"param_paths": [LA + "EndpointID"]},
                                              msg_id="e"))
    assert reply.body.response.get_resp.req_path_results[0].err_code == 7026


# --- hostile input -----------------------------------------------------------------------------

_STATE = _state()
_PATHISH = st.lists(st.sampled_from(["Device", "LocalAgent", "Subscription", "Controller", "MTP",
                                     "1", "2", "*", "[Enable==true]", '[ID=="a"]', "Recipient+",
                                     "EndpointID", "Enable", "{i}", "Reboot()", "Boot!", "",
                                     "[NotifExpiration>x]", "#"]),
                    min_size=1, max_size=7).map(".".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), _PATHISH), max_size=4),
       st.integers(min_value=0, max_value=2**32 - 1))
def test_arbitrary_paths_never_crash(param_paths, max_depth):
    resp = _get(_STATE, *param_paths, max_depth=max_depth)
    assert [r.requested_path for r in resp.req_path_results] == param_paths
    for r in resp.req_path_results:
        assert r.err_code in (0, 7008, 7026)
        assert r.err_code == 0 or len(r.resolved_path_results) == 0
        for res in r.resolved_path_results:
            assert paths.check_instance_number_addressing(res.resolved_path) == []


def test_get_path_raises_only_resolve_error():
    from conformance.agent.datamodel.resolve import ResolveError
    with pytest.raises(ResolveError) as err:
        get_path(_STATE, FULL_ACCESS, "Device.Nope.")
    assert err.value.code == 7026
