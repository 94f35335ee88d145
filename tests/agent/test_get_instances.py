"""Reference Agent GetInstances handler (TR-369 "The GetInstances Message", R-GIN.0, R-GIN.1,
R-MSG.3, R-MSG.4a; TP-469 1.66-1.71, 1.83) and its faults."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.context import FULL_ACCESS, AgentState, RequestContext
from conformance.agent.core import AgentCore
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.resolve import ResolveError
from conformance.agent.datamodel.store import Store
from conformance.agent.faults import REGISTRY, FaultSet
from conformance.agent.messages.get import get_instances_path, handle_get_instances
from conformance.usp import messages, paths, records
from conformance.usp.schema import msg_pb2
from tests.support.access import DenyKinds as Deny

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"
LA = "Device.LocalAgent."
CTRLS = "Device.LocalAgent.Controller."
MTPS = "Device.LocalAgent.MTP."
DM = load_definitions()


def _state(*faults: str) -> AgentState:
    store = Store(DM)
    c1 = store.add(CTRLS, {"EndpointID": CTRL, "Alias": "one"})
    store.add(c1 + "MTP.", {"Protocol": "WebSocket", "Alias": "ws"})
    store.add(c1 + "MTP.", {"Protocol": "MQTT", "Alias": "mq"})
    store.add(c1 + "BootParameter.", {"ParameterName": "Device.LocalAgent.EndpointID",
                                      "Alias": "bp"})
    c2 = store.add(CTRLS, {"EndpointID": "proto::controller-2", "Alias": "two"})
    store.add(c2 + "MTP.", {"Protocol": "STOMP", "Alias": "st"})
    store.add(MTPS, {"Protocol": "WebSocket", "Alias": "agent-ws"})
    role = store.add("Device.LocalAgent.ControllerTrust.Role.", {"Alias": "full"})
    store.add(role + "Permission.", {"Alias": "p1"})
    return AgentState(AGENT, DM, store, faults=FaultSet(faults))


def _gin(state: AgentState, *obj_paths: str, first_level_only: bool = True,
         access=FULL_ACCESS) -> msg_pb2.GetInstancesResp:
    msg = messages.request("get_instances", {"obj_paths": list(obj_paths),
                                             "first_level_only": first_level_only}, msg_id="gi")
    reply = handle_get_instances(state, RequestContext(CTRL, msg, access))
    assert reply.header.msg_id == "gi"
    assert reply.header.msg_type == msg_pb2.Header.GET_INSTANCES_RESP
    return reply.body.response.get_instances_resp


def _one(state: AgentState, path: str, **kw) -> msg_pb2.GetInstancesResp.RequestedPathResult:
    resp = _gin(state, path, **kw)
    assert len(resp.req_path_results) == 1 and resp.req_path_results[0].requested_path == path
    return resp.req_path_results[0]


def _insts(result) -> list[str]:
    return [c.instantiated_obj_path for c in result.curr_insts]


def _keys(result) -> dict[str, dict[str, str]]:
    return {c.instantiated_obj_path: dict(c.unique_keys) for c in result.curr_insts}



# --- TP-469 cases -----------------------------------------------------------------------------


def test_first_level_only_true_lists_only_the_table_instances():
    """TP-469 1.66: every unique-key parameter with its value."""
    result = _one(_state(), CTRLS, first_level_only=True)
    assert result.err_code == 0
    assert _keys(result) == {CTRLS + "1.": {"EndpointID": CTRL, "Alias": "one"},
                             CTRLS + "2.": {"EndpointID": "proto::controller-2", "Alias": "two"}}


def test_first_level_only_false_adds_nested_instances_depth_first():
    """TP-469 1.67."""
    result = _one(_state(), CTRLS, first_level_only=False)
    assert _insts(result) == [CTRLS + "1.", CTRLS + "1.MTP.1.", CTRLS + "1.MTP.2.",
                              CTRLS + "1.BootParameter.1.", CTRLS + "2.", CTRLS + "2.MTP.1."]
    keys = _keys(result)
    assert keys[CTRLS + "1.MTP.2."] == {"Protocol": "MQTT", "Alias": "mq"}
    assert keys[CTRLS + "1.BootParameter.1."] == {"ParameterName": "Device.LocalAgent.EndpointID",
                                                  "Alias": "bp"}


def test_nested_instances_below_single_instance_objects():
    result = _one(_state(), "Device.LocalAgent.ControllerTrust.Role.", first_level_only=False)
    assert _insts(result) == ["Device.LocalAgent.ControllerTrust.Role.1.",
                              "Device.LocalAgent.ControllerTrust.Role.1.Permission.1."]


def test_multiple_objects():
    """TP-469 1.68."""
    resp = _gin(_state(), CTRLS, MTPS, first_level_only=True)
    assert [r.requested_path for r in resp.req_path_results] == [CTRLS, MTPS]
    assert [len(r.curr_insts) for r in resp.req_path_results] == [2, 1]


def test_wildcard_search_path():
    """TP-469 1.70."""
    result = _one(_state(), CTRLS + "*.MTP.", first_level_only=True)
    assert _insts(result) == [CTRLS + "1.MTP.1.", CTRLS + "1.MTP.2.", CTRLS + "2.MTP.1."]


def test_search_expression_search_path():
    """TP-469 1.71."""
    result = _one(_state(), CTRLS + '[Alias=="one"].BootParameter.', first_level_only=False)
    assert _insts(result) == [CTRLS + "1.BootParameter.1."]
    result = _one(_state(), CTRLS + '[Alias=="two"].MTP.', first_level_only=True)
    assert _insts(result) == [CTRLS + "2.MTP.1."]


@pytest.mark.parametrize("path", [
    CTRLS + '[Alias=="nobody"].BootParameter.',   # TP-469 1.83
    CTRLS + '[EndpointID=="proto::nobody"].',
    CTRLS + '[Alias=="one"].MTP.[Protocol=="CoAP"].',
    "Device.LocalAgent.Subscription.",            # an empty table
    "Device.LocalAgent.Subscription.*.",
])
def test_nothing_matched_is_an_empty_success(path):
    """R-MSG.4a, TP-469 1.83."""
    result = _one(_state(), path, first_level_only=False)
    assert (result.err_code, len(result.curr_insts)) == (0, 0)


def test_instance_paths_list_the_instance_itself():
    assert _insts(_one(_state(), CTRLS + "1.")) == [CTRLS + "1."]
    assert _insts(_one(_state(), CTRLS + "1.", first_level_only=False))[:2] == [
        CTRLS + "1.", CTRLS + "1.MTP.1."]
    assert _insts(_one(_state(), CTRLS + "*.")) == [CTRLS + "1.", CTRLS + "2."]


@pytest.mark.parametrize("path, code", [
    (LA, 7018),                                    # a single-instance object
    ("Device.", 7018),
    (CTRLS + "1.E2ESession.", 7018),
    (CTRLS + "*.E2ESession.", 7018),
    (LA + "EndpointID", 7018),                     # not an object at all
    ("Device.Reboot()", 7018),
    ("Device.Boot!", 7018),
    ("Device.NoSuchObject.", 7026),
    (CTRLS + "1.NoSuchTable.", 7026),
    (CTRLS + "9.", 7016),                          # an address to a missing instance
    (CTRLS + "9.MTP.", 7016),
    (CTRLS + '9.MTP.[Alias=="ws"].', 7016),
    (CTRLS + "..", 7008),
    ("", 7008),
    (CTRLS + "{i}.", 7008),
])
def test_per_path_errors(path, code):
    """TR-369 GetInstances error codes (7008, 7016, 7018, 7026); the other paths still succeed."""
    resp = _gin(_state(), path, MTPS)
    assert resp.req_path_results[0].err_code == code
    assert resp.req_path_results[0].err_msg
    assert len(resp.req_path_results[0].curr_insts) == 0
    assert resp.req_path_results[1].err_code == 0 and len(resp.req_path_results[1].curr_insts) == 1


def test_instance_paths_use_instance_numbers():
    """R-MSG.3, also for unique-key addressed requests."""
    result = _one(_state(), CTRLS + f'[EndpointID=="{CTRL}"].MTP.', first_level_only=False)
    assert _insts(result) == [CTRLS + "1.MTP.1.", CTRLS + "1.MTP.2."]
    for inst in _insts(_one(_state(), "Device.LocalAgent.", first_level_only=False)) or []:
        assert paths.check_instance_number_addressing(inst) == []


def test_reference_following():
    state = _state()
    state.store.add("Device.LocalAgent.Subscription.", {"Recipient": CTRLS + "2", "ID": "s"})
    assert _insts(_one(state, "Device.LocalAgent.Subscription.1.Recipient+.")) == [CTRLS + "2."]


# --- permissions: R-GIN.0, R-GIN.1 ---------------------------------------------------------


def test_instances_without_instantiated_object_read_are_absent():
    """R-GIN.0."""
    access = Deny(InstantiatedObj=(CTRLS + "1.",))
    assert _insts(_one(_state(), CTRLS, first_level_only=False, access=access)) == [
        CTRLS + "2.", CTRLS + "2.MTP.1."]
    access = Deny(InstantiatedObj=(CTRLS + "1.MTP.2.",))
    assert CTRLS + "1.MTP.2." not in _insts(_one(_state(), CTRLS, first_level_only=False,
                                                 access=access))


def test_search_on_unreadable_parameter_matches_nothing():
    """R-GIN.0: Param read is needed on every parameter a search expression tests."""
    access = Deny(Param=(CTRLS + "{i}.Alias",))
    result = _one(_state(), CTRLS + '[Alias=="one"].MTP.', access=access)
    assert (result.err_code, len(result.curr_insts)) == (0, 0)
    assert len(_one(_state(), CTRLS + '[EndpointID=="proto::controller-1"].MTP.',
                    access=access).curr_insts) == 2


def test_unreadable_unique_keys_are_left_out():
    """R-GIN.1."""
    access = Deny(Param=(CTRLS + "1.EndpointID",))
    keys = _keys(_one(_state(), CTRLS, access=access))
    assert keys == {CTRLS + "1.": {"Alias": "one"},
                    CTRLS + "2.": {"EndpointID": "proto::controller-2", "Alias": "two"}}


# --- faults ----------------------------------------------------------------------------------


def _check_unique_keys(state):
    return _keys(_one(state, CTRLS))[CTRLS + "1."] == {"EndpointID": CTRL, "Alias": "one"}


def _check_first_level_only(state):
    return _insts(_one(state, CTRLS, first_level_only=True)) == [CTRLS + "1.", CTRLS + "2."]


def _check_nested(state):
    return CTRLS + "1.MTP.1." in _insts(_one(state, CTRLS, first_level_only=False))


def _check_unmatched_search(state):
    return _one(state, CTRLS + '[Alias=="nobody"].BootParameter.').err_code == 0


def _check_all_paths(state):
    return len(_gin(state, CTRLS, MTPS).req_path_results) == 2


def _check_search_paths(state):
    # R-MSG.1: wildcards and search expressions are allowed in GetInstances obj_paths
    return (_one(state, CTRLS + "*.MTP.").err_code == 0
            and _one(state, CTRLS + '[Alias=="one"].MTP.').err_code == 0)


FAULT_CHECKS: dict[str, Callable[[AgentState], bool]] = {
    "gin.no_search_paths": _check_search_paths,
    "gin.no_unique_keys": _check_unique_keys,
    "gin.ignore_first_level_only": _check_first_level_only,
    "gin.no_nested_instances": _check_nested,
    "gin.unmatched_search_error": _check_unmatched_search,
    "gin.first_path_only": _check_all_paths,
}


def test_every_gin_fault_has_a_check():
    assert {n for n in REGISTRY if n.startswith("gin.")} == set(FAULT_CHECKS)


@pytest.mark.parametrize("fault", sorted(FAULT_CHECKS))
def test_fault_changes_the_behaviour(fault):
    check = FAULT_CHECKS[fault]
    assert check(_state()) is True
    assert check(_state(fault)) is False
    assert REGISTRY[fault].requirement


# --- end to end ----------------------------------------------------------------------------


def _roundtrip(core: AgentCore, msg) -> msg_pb2.Msg:
    rec = records.no_session_record(msg, to_id=AGENT, from_id=CTRL, version="1.4")
    out = core.handle_record(records.serialize(rec), now=0.0)
    assert len(out) == 1
    return records.unwrap_msg(out[0])


def test_end_to_end_get_instances_through_agent_core():
    core = AgentCore(_state())
    msg = messages.request("get_instances", {"obj_paths": [CTRLS, LA], "first_level_only": False},
                           msg_id="e2e-gi")
    reply = _roundtrip(core, msg)
    assert reply.header.msg_id == "e2e-gi"
    results = reply.body.response.get_instances_resp.req_path_results
    assert len(_insts(results[0])) == 6 and results[1].err_code == 7018


def test_end_to_end_fault():
    core = AgentCore(_state("gin.no_unique_keys"))
    msg = messages.request("get_instances", {"obj_paths": [CTRLS], "first_level_only": True},
                           msg_id="f")
    result = _roundtrip(core, msg).body.response.get_instances_resp.req_path_results[0]
    assert all(len(c.unique_keys) == 0 for c in result.curr_insts) and len(result.curr_insts) == 2


# --- hostile input ---------------------------------------------------------------------------

_STATE = _state()
_PATHISH = st.lists(st.sampled_from(["Device", "LocalAgent", "Controller", "MTP", "BootParameter",
                                     "1", "9", "*", '[Alias=="one"]', "[Enable==true]",
                                     "EndpointID", "{i}", "Reboot()", "", "Recipient+", "%"]),
                    min_size=1, max_size=6).map(".".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), _PATHISH), max_size=4), st.booleans())
def test_arbitrary_paths_never_crash(obj_paths, first_level_only):
    resp = _gin(_STATE, *obj_paths, first_level_only=first_level_only)
    assert [r.requested_path for r in resp.req_path_results] == obj_paths
    for r in resp.req_path_results:
        assert r.err_code in (0, 7008, 7016, 7018, 7026)
        assert r.err_code == 0 or len(r.curr_insts) == 0
        for c in r.curr_insts:
            assert paths.check_instance_number_addressing(c.instantiated_obj_path) == []


def test_get_instances_path_raises_resolve_error():
    with pytest.raises(ResolveError) as err:
        get_instances_path(_STATE, FULL_ACCESS, LA, True)
    assert err.value.code == 7018
