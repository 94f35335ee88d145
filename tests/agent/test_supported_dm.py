"""Reference Agent GetSupportedDM handler (TR-369 "The GetSupportedDM Message", R-GSP.0;
TP-469 1.72-1.77, 1.97-1.99, 1.105-1.107) and its faults."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.context import FULL_ACCESS, AgentState, RequestContext
from conformance.agent.core import AgentCore
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.defs import DataModel, ObjectDef, ParamDef
from conformance.agent.datamodel.resolve import ResolveError
from conformance.agent.datamodel.store import Store
from conformance.agent.faults import REGISTRY, FaultSet
from conformance.agent.messages.supported_dm import (
    DATA_MODEL_URI,
    Flags,
    Target,
    find_target,
    handle_get_supported_dm,
    supported_objects,
)
from conformance.usp import messages, records
from conformance.usp.schema import msg_pb2
from tests.support.access import DenyKinds as Deny

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"
LA = "Device.LocalAgent."
SUBS = "Device.LocalAgent.Subscription."
CTRLS = "Device.LocalAgent.Controller."
DM = load_definitions()
G = msg_pb2.GetSupportedDMResp


def _state(*faults: str, dm: DataModel = DM) -> AgentState:
    store = Store(dm)
    if dm is DM:
        c1 = store.add(CTRLS, {"EndpointID": CTRL, "Alias": "one"})
        store.add(c1 + "MTP.", {"Protocol": "WebSocket"})
        store.add(SUBS, {"ID": "s1", "Recipient": CTRLS + "1"})
    return AgentState(AGENT, dm, store, faults=FaultSet(faults))


ALL = {"commands": True, "events": True, "params": True, "unique_key_sets": True}


def _gsdm(state: AgentState, *obj_paths: str, first_level_only: bool = False,
          commands: bool = False, events: bool = False, params: bool = False,
          unique_key_sets: bool = False, access=FULL_ACCESS) -> G:
    msg = messages.request("get_supported_dm", {
        "obj_paths": list(obj_paths), "first_level_only": first_level_only,
        "return_commands": commands, "return_events": events, "return_params": params,
        "return_unique_key_sets": unique_key_sets}, msg_id="sd")
    reply = handle_get_supported_dm(state, RequestContext(CTRL, msg, access))
    assert reply.header.msg_id == "sd"
    assert reply.header.msg_type == msg_pb2.Header.GET_SUPPORTED_DM_RESP
    return reply.body.response.get_supported_dm_resp


def _one(state: AgentState, path: str, **kw) -> G.RequestedObjectResult:
    resp = _gsdm(state, path, **kw)
    assert len(resp.req_obj_results) == 1 and resp.req_obj_results[0].req_obj_path == path
    return resp.req_obj_results[0]


def _objs(result) -> dict[str, G.SupportedObjectResult]:
    return {o.supported_obj_path: o for o in result.supported_objs}


def _has_details(obj: G.SupportedObjectResult) -> bool:
    return bool(obj.supported_params or obj.supported_commands or obj.supported_events)



def _assert_valid_details(obj: G.SupportedObjectResult, odef: ObjectDef) -> None:
    """TP-469 1.72 metrics 3-6."""
    assert [p.param_name for p in obj.supported_params] == list(odef.params)
    for p in obj.supported_params:
        assert p.value_type != G.PARAM_UNKNOWN and p.value_change != G.VALUE_CHANGE_UNKNOWN
        assert "." not in p.param_name
    assert [c.command_name for c in obj.supported_commands] == list(odef.commands)
    for c in obj.supported_commands:
        cdef = odef.commands[c.command_name]
        assert c.command_type == (G.CMD_ASYNC if cdef.is_async else G.CMD_SYNC)
        assert list(c.input_arg_names) == list(cdef.input_arg_names)
        assert list(c.output_arg_names) == list(cdef.output_arg_names)
    assert [e.event_name for e in obj.supported_events] == list(odef.events)
    for e in obj.supported_events:
        assert list(e.arg_names) == list(odef.events[e.event_name].arg_names)
    assert [tuple(k.key_names) for k in obj.unique_key_sets] == list(odef.unique_keys)


# --- TP-469 1.72-1.77 -------------------------------------------------------------------------


def test_single_object_whole_sub_tree_all_options():
    """TP-469 1.72."""
    result = _one(_state(), LA, **ALL)
    assert result.err_code == 0 and result.data_model_inst_uri == DATA_MODEL_URI
    objs = _objs(result)
    expected = [LA] + [o.path for o in DM.children(LA, first_level_only=False)]
    assert list(objs) == expected
    assert CTRLS + "{i}.MTP.{i}.WebSocket." in objs
    for path, obj in objs.items():
        odef = DM.object(path)
        assert obj.is_multi_instance == odef.multi_instance
        assert len(obj.divergent_paths) == 0
        _assert_valid_details(obj, odef)


def test_single_object_first_level_only_all_options():
    """TP-469 1.73: children carry no parameters, commands or events (unique keys they may)."""
    objs = _objs(_one(_state(), LA, first_level_only=True, **ALL))
    assert list(objs) == [LA] + [o.path for o in DM.children(LA, first_level_only=True)]
    _assert_valid_details(objs[LA], DM.object(LA))
    assert len(objs[LA].unique_key_sets) == 0  # a single-instance object
    for path, obj in list(objs.items())[1:]:
        assert not _has_details(obj), path
        assert [tuple(k.key_names) for k in obj.unique_key_sets] == list(DM.object(path).unique_keys)


def test_single_object_first_level_only_no_options():
    """TP-469 1.74."""
    objs = _objs(_one(_state(), LA, first_level_only=True))
    assert len(objs) == 1 + len(DM.children(LA))
    assert not any(_has_details(o) or o.unique_key_sets for o in objs.values())


def test_multiple_objects_first_level_only():
    """TP-469 1.75."""
    resp = _gsdm(_state(), CTRLS, "Device.LocalAgent.MTP.", first_level_only=True, **ALL)
    first, second = resp.req_obj_results
    assert list(_objs(first)) == [CTRLS + "{i}.", CTRLS + "{i}.MTP.{i}.",
                                  CTRLS + "{i}.TransferCompletePolicy.",
                                  CTRLS + "{i}.BootParameter.{i}.", CTRLS + "{i}.E2ESession."]
    assert _has_details(_objs(first)[CTRLS + "{i}."])
    assert [list(k.key_names) for k in _objs(first)[CTRLS + "{i}.MTP.{i}."].unique_key_sets] == \
        [["Protocol"], ["Alias"]]
    assert next(iter(_objs(second))) == "Device.LocalAgent.MTP.{i}."


def test_root_object_all_options():
    """TP-469 1.76: the entire supported model."""
    objs = _objs(_one(_state(), "Device.", **ALL))
    assert list(objs) == [o.path for o in DM]
    assert sum(len(o.supported_params) for o in objs.values()) == sum(len(o.params) for o in DM)
    assert sum(len(o.supported_commands) for o in objs.values()) == \
        sum(len(o.commands) for o in DM)
    for path, obj in objs.items():
        _assert_valid_details(obj, DM.object(path))


@pytest.mark.parametrize("path, code", [
    (LA + "UnsupportedObject.", 7026),              # TP-469 1.77
    (LA + "NoSuchParam", 7026),
    ("Device.NoSuchCommand()", 7026),
    ("Device.NoSuchEvent!", 7026),
    (SUBS + "Enable", 7026),                        # a table needs {i} before a parameter
    (CTRLS + "7.", 7016),                           # an instantiated path must exist
    (CTRLS + "7.MTP.", 7016),
    (CTRLS + '7.MTP.[Alias=="x"].', 7016),
    (LA + "..", 7008),
    ("LocalAgent.", 7008),
    ("", 7008),
    (SUBS + "{i}.{i}.", 7008),
])
def test_per_path_errors(path, code):
    """TR-369 GetSupportedDM error codes; the other path still succeeds."""
    resp = _gsdm(_state(), path, LA, **ALL)
    bad, good = resp.req_obj_results
    assert (bad.err_code, len(bad.supported_objs), bad.data_model_inst_uri) == (code, 0, "")
    assert bad.err_msg
    assert good.err_code == 0 and good.supported_objs


# --- TP-469 1.97-1.99, 1.105-1.107 --------------------------------------------------------------


def test_root_object_commands_only():
    """TP-469 1.97: command types, relative input argument names."""
    objs = _objs(_one(_state(), "Device.", commands=True))
    commands = [c for o in objs.values() for c in o.supported_commands]
    assert commands and not any(o.supported_params or o.supported_events for o in objs.values())
    assert {c.command_type for c in commands} == {G.CMD_SYNC, G.CMD_ASYNC}
    timer = next(c for c in objs["Device."].supported_commands if c.command_name == "ScheduleTimer()")
    assert (timer.command_type, list(timer.input_arg_names)) == (G.CMD_ASYNC, ["DelaySeconds"])
    activate = next(c for c in objs["Device.DeviceInfo.FirmwareImage.{i}."].supported_commands
                    if c.command_name == "Activate()")
    assert "TimeWindow.{i}.Start" in activate.input_arg_names
    assert all(not a.startswith("Device.") for c in commands for a in c.input_arg_names)


def test_root_object_events_only():
    """TP-469 1.98."""
    objs = _objs(_one(_state(), "Device.", events=True))
    events = [e for o in objs.values() for e in o.supported_events]
    assert events and not any(o.supported_params or o.supported_commands for o in objs.values())
    boot = next(e for e in objs["Device."].supported_events if e.event_name == "Boot!")
    assert list(boot.arg_names) == ["CommandKey", "Cause", "FirmwareUpdated", "ParameterMap"]


def test_unique_key_sets_of_subscription():
    """TP-469 1.99 (sent without the final dot)."""
    result = _one(_state(), "Device.LocalAgent.Subscription", unique_key_sets=True)
    assert result.err_code == 0
    (obj,) = result.supported_objs
    assert obj.supported_obj_path == SUBS + "{i}." and obj.is_multi_instance
    assert [list(k.key_names) for k in obj.unique_key_sets] == [["Alias"], ["Recipient", "ID"]]
    assert not _has_details(obj)


@pytest.mark.parametrize("path, owner, field, name", [
    ("Device.Reboot()", "Device.", "supported_commands", "Reboot()"),            # TP-469 1.105
    ("Device.Boot!", "Device.", "supported_events", "Boot!"),                    # 1.106
    (LA + "EndpointID", LA, "supported_params", "EndpointID"),                   # 1.107
    (CTRLS + "1.SendOnBoardRequest()", CTRLS + "{i}.", "supported_commands", "SendOnBoardRequest()"),
    (SUBS + "{i}.Enable", SUBS + "{i}.", "supported_params", "Enable"),
])
def test_leaf_paths_list_only_that_element(path, owner, field, name):
    """TP-469 1.105-1.107: the flags do not apply to element paths."""
    for flags in (ALL, {}):
        (obj,) = _one(_state(), path, **flags).supported_objs
        assert obj.supported_obj_path == owner
        items = getattr(obj, field)
        assert [getattr(i, field.replace("supported_", "")[:-1] + "_name") for i in items] == [name]
        others = {"supported_commands", "supported_events", "supported_params", "unique_key_sets"}
        assert not any(len(getattr(obj, f)) for f in others - {field})


@pytest.mark.parametrize("path", [
    SUBS + "{i}.", SUBS, SUBS + "*.", SUBS + "1.", SUBS + '[ID=="none"].',
    SUBS + '[Alias=="nobody"].', "Device.LocalAgent.Subscription",
])
def test_path_forms_name_the_same_object(path):
    """Supported form with or without the final {i}., and instantiated forms."""
    (obj,) = _one(_state(), path, first_level_only=True).supported_objs
    assert obj.supported_obj_path == SUBS + "{i}." and obj.access == G.OBJ_ADD_DELETE


def test_instantiated_path_and_reference_following():
    objs = _objs(_one(_state(), CTRLS + "1.MTP.", first_level_only=True))
    assert next(iter(objs)) == CTRLS + "{i}.MTP.{i}."
    (obj, *_rest) = _one(_state(), SUBS + "1.Recipient+.", first_level_only=True).supported_objs
    assert obj.supported_obj_path == CTRLS + "{i}."
    (obj,) = _one(_state(), SUBS + "1.Recipient+.EndpointID").supported_objs
    assert [p.param_name for p in obj.supported_params] == ["EndpointID"]
    assert _one(_state(), SUBS + "1.Recipient+.").err_code == 0
    state = _state()
    state.store.set(SUBS + "1.Recipient", "")
    assert _one(state, SUBS + "1.Recipient+.").err_code == 7016


def test_access_types():
    """ObjAccessType, ParamAccessType."""
    objs = _objs(_one(_state(), LA, params=True))
    assert objs[SUBS + "{i}."].access == G.OBJ_ADD_DELETE
    assert objs["Device.LocalAgent.Request.{i}."].access == G.OBJ_READ_ONLY
    assert objs[LA].access == G.OBJ_READ_ONLY
    params = {p.param_name: p for p in _objs(_one(_state(), SUBS, params=True))[SUBS + "{i}."]
              .supported_params}
    assert params["Enable"].access == G.PARAM_READ_WRITE
    assert params["CreationDate"].access == G.PARAM_READ_ONLY
    assert params["Enable"].value_type == G.PARAM_BOOLEAN
    assert params["ReferenceList"].value_type == G.PARAM_STRING  # a list travels as a string


def test_write_once_read_only_is_read_write():
    """TR-369 SupportedParamResult: writeOnceReadOnly is reported as PARAM_READ_WRITE."""
    param = ParamDef(name="Key", path="Device.Thing.{i}.Key", access="writeOnceReadOnly")
    dm = DataModel([ObjectDef("Device."),
                    ObjectDef("Device.Thing.{i}.", access="readWrite", min_entries=0,
                              max_entries=None, params=MappingProxyType({"Key": param}))])
    (obj,) = _one(_state(dm=dm), "Device.Thing.{i}.Key").supported_objs
    assert obj.supported_params[0].access == G.PARAM_READ_WRITE
    objs = _objs(_one(_state(dm=dm), "Device.", params=True))
    assert list(objs) == ["Device.", "Device.Thing.{i}."]


# --- permissions: R-GSP.0 ----------------------------------------------------------------------


def test_unreadable_requested_elements_are_invalid_paths():
    """R-GSP.0: treated as not present in the supported model, hence 7026."""
    assert _one(_state(), CTRLS, access=Deny(Obj=(CTRLS,))).err_code == 7026
    assert _one(_state(), LA + "EndpointID", access=Deny(Param=(LA + "EndpointID",))).err_code \
        == 7026
    assert _one(_state(), LA + "EndpointID", access=Deny(Obj=(LA,))).err_code == 7026
    assert _one(_state(), "Device.Reboot()", access=Deny(CommandEvent=("Device.Reboot",))) \
        .err_code == 7026


def test_unreadable_children_and_members_are_left_out():
    access = Deny(Obj=(CTRLS + "{i}.MTP.",), Param=(SUBS + "{i}.ID", LA + "EndpointID"),
                  CommandEvent=(LA + "Periodic!",))
    objs = _objs(_one(_state(), LA, access=access, **ALL))
    assert CTRLS + "{i}." in objs and not any(p.startswith(CTRLS + "{i}.MTP.") for p in objs)
    assert "EndpointID" not in [p.param_name for p in objs[LA].supported_params]
    assert "Periodic!" not in [e.event_name for e in objs[LA].supported_events]
    # the key set that needs the unreadable ID is left out
    assert [list(k.key_names) for k in objs[SUBS + "{i}."].unique_key_sets] == [["Alias"]]


# --- helpers ------------------------------------------------------------------------------------


def test_find_target_and_supported_objects():
    state = _state()
    target = find_target(state, FULL_ACCESS, "Device.Reboot()")
    assert target == Target(DM.object("Device."), DM.object("Device.").commands["Reboot()"])
    with pytest.raises(ResolveError) as err:
        find_target(state, FULL_ACCESS, "Device.Nope.")
    assert err.value.code == 7026
    objs = supported_objects(state, FULL_ACCESS, Target(DM.object(SUBS + "{i}.")), Flags())
    assert [o.supported_obj_path for o in objs] == [SUBS + "{i}."]
    assert Flags.everything(True) == Flags(True, True, True, True, True)


# --- faults -------------------------------------------------------------------------------------


def _check_async(state):
    objs = _objs(_one(state, "Device.", commands=True))
    return {c.command_type for o in objs.values() for c in o.supported_commands} == \
        {G.CMD_SYNC, G.CMD_ASYNC}


def _check_unique_key_sets(state):
    (obj,) = _one(state, SUBS, unique_key_sets=True).supported_objs
    return len(obj.unique_key_sets) == 2


def _check_access(state):
    (obj,) = _one(state, SUBS).supported_objs
    return obj.access == G.OBJ_ADD_DELETE


def _check_first_level_only(state):
    return len(_one(state, LA, first_level_only=True).supported_objs) == 1 + len(DM.children(LA))


def _check_child_details(state):
    objs = list(_objs(_one(state, LA, first_level_only=True, **ALL)).values())
    return _has_details(objs[0]) and not any(_has_details(o) for o in objs[1:])


def _check_return_flags(state):
    return not any(_has_details(o) or o.unique_key_sets
                   for o in _one(state, LA).supported_objs)


def _check_relative_args(state):
    objs = _objs(_one(state, "Device.", commands=True, events=True))
    names = [a for o in objs.values() for c in o.supported_commands
             for a in (*c.input_arg_names, *c.output_arg_names)]
    names += [a for o in objs.values() for e in o.supported_events for a in e.arg_names]
    return bool(names) and not any(a.startswith("Device.") for a in names)


def _check_placeholder(state):
    return all("{i}" in p for p in _objs(_one(state, CTRLS)))


def _check_error_in_resp(state):
    msg = messages.request("get_supported_dm", {"obj_paths": [LA + "UnsupportedObject."]},
                           msg_id="x")
    reply = handle_get_supported_dm(state, RequestContext(CTRL, msg))
    return reply.body.WhichOneof("msg_body") == "response"


def _check_leaf(state):
    objs = _one(state, "Device.Reboot()", **ALL).supported_objs
    return len(objs) == 1 and not objs[0].supported_params and \
        [c.command_name for c in objs[0].supported_commands] == ["Reboot()"]


def _check_param_types(state):
    """TP-469 1.72 metric 3: value_type and value_change carry real values."""
    (obj,) = _one(state, LA + "EndpointID").supported_objs
    param = obj.supported_params[0]
    return (param.value_type, param.value_change) == (G.PARAM_STRING, G.VALUE_CHANGE_ALLOWED)


def _check_event_args(state):
    """TP-469 1.98 metric 3: events list their arguments."""
    (obj,) = _one(state, "Device.Boot!").supported_objs
    return list(obj.supported_events[0].arg_names) == ["CommandKey", "Cause", "FirmwareUpdated",
                                                         "ParameterMap"]


def _check_key_sets_apart(state):
    """TP-469 1.99 metric 2: one SupportedUniqueKeySet per unique key."""
    (obj,) = _one(state, SUBS, unique_key_sets=True).supported_objs
    return [list(k.key_names) for k in obj.unique_key_sets] == [["Alias"], ["Recipient", "ID"]]


FAULT_CHECKS: dict[str, Callable[[AgentState], bool]] = {
    "gsdm.param_unknown_type": _check_param_types,
    "gsdm.event_no_args": _check_event_args,
    "gsdm.merged_unique_key_sets": _check_key_sets_apart,
    "gsdm.async_as_sync": _check_async,
    "gsdm.no_unique_key_sets": _check_unique_key_sets,
    "gsdm.wrong_access": _check_access,
    "gsdm.ignore_first_level_only": _check_first_level_only,
    "gsdm.child_details": _check_child_details,
    "gsdm.ignore_return_flags": _check_return_flags,
    "gsdm.absolute_arg_names": _check_relative_args,
    "gsdm.no_placeholder": _check_placeholder,
    "gsdm.error_message": _check_error_in_resp,
    "gsdm.leaf_returns_object": _check_leaf,
}


def test_every_gsdm_fault_has_a_check():
    assert {n for n in REGISTRY if n.startswith("gsdm.")} == set(FAULT_CHECKS)


@pytest.mark.parametrize("fault", sorted(FAULT_CHECKS))
def test_fault_changes_the_behaviour(fault):
    check = FAULT_CHECKS[fault]
    assert check(_state()) is True
    assert check(_state(fault)) is False
    assert REGISTRY[fault].requirement


def test_merged_unique_key_sets_keeps_single_key_tables_unchanged():
    """gsdm.merged_unique_key_sets only changes tables with several unique keys."""
    objs = _objs(_one(_state("gsdm.merged_unique_key_sets"), LA, first_level_only=True,
                      unique_key_sets=True))
    assert [list(k.key_names) for k in objs["Device.LocalAgent.MTP.{i}."].unique_key_sets] == \
        [["Alias"]]
    assert [list(k.key_names) for k in objs[SUBS + "{i}."].unique_key_sets] == \
        [["Alias", "Recipient", "ID"]]
    assert len(objs[LA].unique_key_sets) == 0


def test_fault_error_message_carries_the_code_and_path():
    msg = messages.request("get_supported_dm", {"obj_paths": [LA + "Nope."]}, msg_id="x")
    reply = handle_get_supported_dm(_state("gsdm.error_message"), RequestContext(CTRL, msg))
    assert reply.body.error.err_code == 7026
    assert reply.body.error.param_errs[0].param_path == LA + "Nope."


# --- end to end ---------------------------------------------------------------------------------


def _roundtrip(core: AgentCore, msg) -> msg_pb2.Msg:
    rec = records.no_session_record(msg, to_id=AGENT, from_id=CTRL, version="1.4")
    out = core.handle_record(records.serialize(rec), now=0.0)
    assert len(out) == 1
    return records.unwrap_msg(out[0])


def test_end_to_end_get_supported_dm_through_agent_core():
    core = AgentCore(_state())
    msg = messages.request("get_supported_dm", {
        "obj_paths": ["Device.", LA + "UnsupportedObject."], "return_params": True,
        "return_commands": True, "return_events": True, "return_unique_key_sets": True},
        msg_id="e2e-sd")
    reply = _roundtrip(core, msg)
    assert reply.header.msg_id == "e2e-sd"
    whole, bad = reply.body.response.get_supported_dm_resp.req_obj_results
    assert len(whole.supported_objs) == len(DM) and bad.err_code == 7026


def test_end_to_end_fault():
    core = AgentCore(_state("gsdm.async_as_sync"))
    msg = messages.request("get_supported_dm", {"obj_paths": ["Device.ScheduleTimer()"]},
                           msg_id="f")
    (obj,) = _roundtrip(core, msg).body.response.get_supported_dm_resp.req_obj_results[0] \
        .supported_objs
    assert obj.supported_commands[0].command_type == G.CMD_SYNC


# --- hostile input ------------------------------------------------------------------------------

_STATE = _state()
_PATHISH = st.lists(st.sampled_from(["Device", "LocalAgent", "Controller", "Subscription", "MTP",
                                     "1", "7", "*", "{i}", '[Alias=="one"]', "EndpointID",
                                     "Reboot()", "Boot!", "", "Recipient+", "Enable"]),
                    min_size=1, max_size=6).map(".".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), _PATHISH), max_size=3), st.booleans(),
       st.booleans())
def test_arbitrary_paths_never_crash(obj_paths, first_level_only, everything):
    flags = ALL if everything else {}
    resp = _gsdm(_STATE, *obj_paths, first_level_only=first_level_only, **flags)
    assert [r.req_obj_path for r in resp.req_obj_results] == obj_paths
    for r in resp.req_obj_results:
        assert r.err_code in (0, 7008, 7016, 7026)
        assert (r.err_code == 0) == bool(r.supported_objs)
        for obj in r.supported_objs:
            assert DM.object(obj.supported_obj_path).path == obj.supported_obj_path
