"""Record addressing of the reference Agent: Records claiming the agent's own Endpoint ID
as their sender are ignored (TP-469 2.1), Records for another ``to_id`` too (R-E2E.1,
TP-469 2.2), and neither makes the runtime record a new Controller (TP-469 2.9)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent import permissions as P
from conformance.agent.config import AgentConfig
from conformance.agent.context import AgentState
from conformance.agent.core import AgentCore, CoreEvent
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.store import Store
from conformance.agent.faults import REGISTRY, FaultSet
from conformance.agent.runtime import AgentRuntime
from conformance.usp import messages, records, session
from conformance.usp.schema import Msg

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"


@lru_cache(maxsize=1)
def _dm():
    return load_definitions()


def _state(*faults: str) -> AgentState:
    return AgentState(AGENT, _dm(), Store(_dm()), faults=FaultSet(faults))


def _core(*faults: str, events: list[CoreEvent] | None = None) -> AgentCore:
    return AgentCore(_state(*faults),
                     on_event=events.append if events is not None else lambda _e: None)


def _get(msg_id: str = "a1") -> Msg:
    return messages.request("get", {"param_paths": ["Device.LocalAgent.EndpointID"]},
                            msg_id=msg_id)


def _record(*, to: str = AGENT, frm: str = CTRL, msg: Msg | None = None) -> bytes:
    rec = records.no_session_record(msg if msg is not None else _get(), to_id=to, from_id=frm)
    return records.serialize(rec)


def test_fault_is_registered():
    assert REGISTRY["record.accept_own_endpoint_id"].requirement == "TP-469 2.1"


def test_record_from_own_endpoint_id_is_ignored():  # TP-469 2.1
    events: list[CoreEvent] = []
    assert _core(events=events).handle_record(_record(frm=AGENT), now=0.0) == []
    assert [e.kind for e in events] == ["ignored"]
    assert "own Endpoint ID" in events[0].detail


def test_own_endpoint_id_answered_with_the_fault():  # TP-469 2.1, fault
    out = _core("record.accept_own_endpoint_id").handle_record(_record(frm=AGENT), now=0.0)
    assert len(out) == 1
    assert records.unwrap_msg(out[0]).header.msg_id == "a1"
    assert out[0].to_id == AGENT


def test_session_context_record_from_own_endpoint_id_is_ignored():  # TP-469 2.1
    core = _core()
    own = session.SessionContext(AGENT, AGENT, session.SessionConfig())
    for rec in own.send(_get("s1").SerializeToString(), now=0.0):
        assert core.handle_record(records.serialize(rec), now=0.0) == []
    assert AGENT not in core._sessions  # no session context was started for it

    faulty = _core("record.accept_own_endpoint_id")
    own = session.SessionContext(AGENT, AGENT, session.SessionConfig())
    out = []
    for rec in own.send(_get("s2").SerializeToString(), now=0.0):
        out += faulty.handle_record(records.serialize(rec), now=0.0)
    assert out and all(records.record_kind(r) == "session_context" for r in out)


def test_other_to_id_still_ignored_and_controllers_still_answered():  # R-E2E.1, TP-469 2.2
    core = _core()
    assert core.handle_record(_record(to="os::012345-OTHER"), now=0.0) == []
    # the fault of 2.1 does not open the to_id check
    assert _core("record.accept_own_endpoint_id").handle_record(
        _record(to="os::012345-OTHER", frm=AGENT), now=0.0) == []
    out = core.handle_record(_record(), now=0.0)
    assert len(out) == 1 and out[0].to_id == CTRL


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_sender_id_is_handled_without_crashing(sender):
    out = _core().handle_record(_record(frm=sender), now=0.0)
    if sender == AGENT:
        assert out == []
    else:
        assert len(out) == 1


# --- admission by the runtime (TP-469 2.9) ------------------------------------------------


def _runtime(tmp_path: Path, *faults: str) -> AgentRuntime:
    runtime = AgentRuntime(AgentConfig(state_dir=tmp_path / "state"))
    state = _state(*faults)
    P.install_default_roles(state.store)
    runtime.state = state
    return runtime


def test_runtime_admits_new_controllers_but_not_its_own_id(tmp_path):
    runtime = _runtime(tmp_path)
    store = runtime.state.store
    runtime._admit(_record(frm=AGENT))  # TP-469 2.1: not a controller
    runtime._admit(_record(to="os::012345-OTHER", frm="proto::stranger"))  # R-E2E.1
    assert store.instances(P.CONTROLLER_TABLE) == []
    runtime._admit(_record(frm="proto::newcomer"))  # R-SEC.6, TP-469 2.9
    inst = P.find_controller(store, "proto::newcomer")
    assert inst is not None
    assert store.get(inst + "AssignedRole") == store.get(P.TRUST + "UntrustedRole") != ""
    runtime._admit(b"\xff\x00")  # undecodable: nothing to admit, no crash


def test_runtime_admission_fault_leaves_assigned_role_empty(tmp_path):  # TP-469 2.9, fault
    runtime = _runtime(tmp_path, "trust.admit_no_assigned_role")
    store = runtime.state.store
    runtime._admit(_record(frm="proto::newcomer"))
    inst = P.find_controller(store, "proto::newcomer")
    assert inst is not None and store.get(inst + "AssignedRole") == ""
    # the Untrusted permissions still apply to it
    assert P.controller_roles(store, "proto::newcomer").untrusted
