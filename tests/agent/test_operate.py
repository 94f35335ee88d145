"""Operate handler of the reference Agent (R-OPR.0-7, R-OPR.1, R-SEC.1; TP-469 1.61-1.65,
1.79, 1.91, 1.100, 2.17, 2.18, 9.8, 9.11)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conformance.agent import commands
from conformance.agent.commands import base, requests
from conformance.agent.context import AgentState, RequestContext
from conformance.agent.core import AgentCore
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.store import Store, ValueChanged
from conformance.agent.faults import REGISTRY, FaultSet
from conformance.agent.messages.operate import handle_operate
from conformance.usp import messages, records
from conformance.usp.schema import Msg

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"


# --- test doubles ---------------------------------------------------------------------------


class FakeServices:
    """Records reboot/factory_reset; keeps async jobs until the test runs them."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], Awaitable[None]]] = []
        self.names: list[str] = []
        self.reboots: list[tuple[str, str]] = []
        self.resets: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    def run_async(self, job: Callable[[], Awaitable[None]], *, name: str) -> None:
        self.pending.append(job)
        self.names.append(name)

    def reboot(self, cause: str, command_key: str) -> None:
        self.reboots.append((cause, command_key))

    def factory_reset(self, command_key: str) -> None:
        self.resets.append(command_key)

    def start(self) -> None:
        """Start every pending job as a task (inside a running loop)."""
        while self.pending:
            job = self.pending.pop(0)
            self.tasks.append(asyncio.ensure_future(job()))  # type: ignore[arg-type]

    async def drain(self) -> None:
        """Run jobs (and the jobs they schedule) until nothing is left."""
        while True:
            self.start()
            busy = [t for t in self.tasks if not t.done()]
            if not busy and not self.pending:
                return
            await asyncio.wait(busy or [asyncio.ensure_future(asyncio.sleep(0))])


class FakeNotifications:
    def __init__(self) -> None:
        self.completed: list[tuple[str, str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, dict[str, str]]] = []
        self.onboard: list[str] = []

    def event(self, obj_path: str, event_name: str, params: dict[str, str]) -> None:
        self.events.append((obj_path, event_name, dict(params)))

    def operation_complete(self, obj_path: str, command_name: str, command_key: str, *,
                           output_args: dict[str, str] | None = None,
                           failure: tuple[int, str] | None = None) -> None:
        self.completed.append((obj_path, command_name, command_key,
                               {"output_args": output_args, "failure": failure}))

    def on_board_request(self, controller_path: str) -> None:
        self.onboard.append(controller_path)


class FakeSleep:
    """Replaces commands.base.sleep: records durations; long ones block until canceled."""

    def __init__(self, block_over: float | None = None) -> None:
        self.calls: list[float] = []
        self.block_over = block_over

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.block_over is not None and seconds > self.block_over:
            await asyncio.Event().wait()
        await asyncio.sleep(0)


class Deny:
    """Access without 'x' on the given command paths."""

    def __init__(self, *paths: str) -> None:
        self.paths = paths

    def allows(self, kind: str, path: str, op: str) -> bool:
        return not (kind == "CommandEvent" and op == "x" and path in self.paths)


@pytest.fixture
def sleep(monkeypatch: pytest.MonkeyPatch) -> FakeSleep:
    fake = FakeSleep(block_over=1000)
    monkeypatch.setattr(base, "sleep", fake)
    return fake


def make_state(*faults: str, services: bool = True, notifications: bool = True) -> AgentState:
    dm = load_definitions()
    return AgentState(AGENT, dm, Store(dm), faults=FaultSet(faults),
                      services=FakeServices() if services else None,
                      notifications=FakeNotifications() if notifications else None)


def svc(state: AgentState) -> FakeServices:
    assert isinstance(state.services, FakeServices)
    return state.services


def notes(state: AgentState) -> FakeNotifications:
    assert isinstance(state.notifications, FakeNotifications)
    return state.notifications


def operate_msg(command: str, *, key: str = "key", send_resp: bool = True,
                args: dict[str, str] | None = None, msg_id: str = "op-1") -> Msg:
    return messages.request("operate", {"command": command, "command_key": key,
                                        "send_resp": send_resp, "input_args": args or {}},
                            msg_id=msg_id)


def operate(state: AgentState, command: str, *, controller: str = CTRL, access: Any = None,
            **kw: Any) -> Msg | None:
    ctx = RequestContext(controller, operate_msg(command, **kw))
    if access is not None:
        ctx.access = access
    return handle_operate(state, ctx)


def results(reply: Msg | None) -> list[Any]:
    assert reply is not None
    assert reply.body.response.HasField("operate_resp"), reply
    return list(reply.body.response.operate_resp.operation_results)


def one(reply: Msg | None) -> Any:
    res = results(reply)
    assert len(res) == 1
    return res[0]


def drain(state: AgentState) -> None:
    asyncio.run(svc(state).drain())


def add_controller(state: AgentState, endpoint: str = CTRL) -> str:
    return state.store.add("Device.LocalAgent.Controller.", {"EndpointID": endpoint,
                                                             "Alias": f"c-{endpoint[-1]}"})


# --- synchronous commands -------------------------------------------------------------------


def test_reboot_send_resp_true_answers_empty_output_args_then_reboots(sleep):  # TP-469 1.61
    state = make_state()
    reply = operate(state, "Device.Reboot()", key="test61")
    res = one(reply)
    assert reply.header.msg_id == "op-1"
    assert res.executed_command == "Device.Reboot()"
    assert res.WhichOneof("operation_resp") == "req_output_args"
    assert dict(res.req_output_args.output_args) == {}
    assert svc(state).reboots == []  # not before the OperateResp has gone out
    drain(state)
    assert svc(state).reboots == [("RemoteReboot", "test61")]
    assert base.RESPONSE_GRACE_SECONDS in sleep.calls
    assert state.store.instances(requests.REQUEST_TABLE) == []  # sync: no Request (R-OPR.0)


def test_reboot_send_resp_false_sends_nothing_but_reboots(sleep):  # TP-469 1.62, R-OPR.4
    state = make_state()
    assert operate(state, "Device.Reboot()", key="test62", send_resp=False) is None
    drain(state)
    assert svc(state).reboots == [("RemoteReboot", "test62")]


def test_fault_respond_when_send_resp_false(sleep):
    state = make_state("operate.respond_when_send_resp_false")
    assert one(operate(state, "Device.Reboot()", send_resp=False)).executed_command == \
        "Device.Reboot()"


def test_fault_deferred_needs_send_resp(sleep):  # TP-469 1.62, R-OPR.4
    state = make_state("operate.deferred_needs_send_resp")
    assert operate(state, "Device.Reboot()", key="test62", send_resp=False) is None
    drain(state)
    assert svc(state).reboots == []  # the fault: no restart without a response
    assert one(operate(state, "Device.Reboot()", key="test61")).HasField("req_output_args")
    drain(state)
    assert svc(state).reboots == [("RemoteReboot", "test61")]  # send_resp true is unaffected


def test_fault_sync_reports_request_path(sleep):  # TP-469 1.61
    state = make_state("operate.sync_reports_request_path")
    assert one(operate(state, "Device.Reboot()")).WhichOneof("operation_resp") == "req_obj_path"


def test_factory_reset_is_deferred(sleep):
    state = make_state()
    assert one(operate(state, "Device.FactoryReset()", key="fr")).HasField("req_output_args")
    assert svc(state).resets == []
    drain(state)
    assert svc(state).resets == ["fr"]


def test_sync_command_without_services_fails_7022():
    state = make_state(services=False)
    res = one(operate(state, "Device.Reboot()"))
    assert res.cmd_failure.err_code == 7022


# --- asynchronous commands and the Request object -------------------------------------------


def test_async_send_resp_true_creates_request_and_completes(sleep):  # TP-469 1.64, 1.79
    state = make_state()
    statuses: list[str] = []
    state.store.listen(lambda ch: statuses.append(ch.new) if isinstance(ch, ValueChanged)
                       and ch.path.endswith("Status") else None)
    res = one(operate(state, "Device.ScheduleTimer()", key="test79",
                      args={"DelaySeconds": "30"}))
    assert res.executed_command == "Device.ScheduleTimer()"
    req = res.req_obj_path
    assert req == "Device.LocalAgent.Request.1."  # R-OPR.0
    assert state.store.params(req) | {"Alias": ""} == {
        "Alias": "", "Originator": CTRL, "Command": "Device.ScheduleTimer()",
        "CommandKey": "test79", "Status": "Requested"}
    assert state.store.get(req + "Alias").startswith("cpe-")
    drain(state)
    assert sleep.calls[0] == pytest.approx(30, abs=1)  # the timer itself
    assert statuses == ["Active", "Success"]
    assert not state.store.exists(req)  # removed when complete (R-OPR.0)
    assert notes(state).completed == [("Device.", "ScheduleTimer()", "test79",
                                       {"output_args": {}, "failure": None})]


def test_async_send_resp_false_no_response_but_operation_complete(sleep):  # TP-469 1.65
    state = make_state()
    assert operate(state, "Device.ScheduleTimer()", key="test65", send_resp=False,
                   args={"DelaySeconds": "5"}) is None
    assert len(state.store.instances(requests.REQUEST_TABLE)) == 1
    drain(state)
    assert [c[:3] for c in notes(state).completed] == [("Device.", "ScheduleTimer()", "test65")]


def test_self_test_diagnostics_reports_results(sleep):
    state = make_state()
    assert one(operate(state, "Device.SelfTestDiagnostics()")).req_obj_path
    drain(state)
    (obj, name, key, outcome), = notes(state).completed
    assert (obj, name, key) == ("Device.", "SelfTestDiagnostics()", "key")
    assert outcome["output_args"]["Status"] == "Complete"
    assert "no problems" in outcome["output_args"]["Results"]
    assert len(outcome["output_args"]["Results"]) <= 1024


def test_async_failure_sets_error_and_reports_cmd_failure(sleep, monkeypatch):
    state = make_state()
    statuses: list[str] = []
    state.store.listen(lambda ch: statuses.append(ch.new) if isinstance(ch, ValueChanged)
                       else None)

    async def boom(inv):
        raise commands.CommandFailed(7022, "nope")

    monkeypatch.setattr(commands, "implementation",
                        lambda cmd: commands.Implementation(boom))
    req = one(operate(state, "Device.SelfTestDiagnostics()")).req_obj_path
    drain(state)
    assert statuses == ["Active", "Error"]
    assert not state.store.exists(req)
    assert notes(state).completed[0][3] == {"output_args": None, "failure": (7022, "nope")}


def test_async_bug_is_reported_as_failure(sleep, monkeypatch):
    state = make_state()

    async def bug(inv):
        raise ZeroDivisionError

    monkeypatch.setattr(commands, "implementation", lambda cmd: commands.Implementation(bug))
    operate(state, "Device.SelfTestDiagnostics()")
    drain(state)
    assert notes(state).completed[0][3]["failure"][0] == 7022


def test_sync_bug_fails_only_that_command(monkeypatch):  # R-OPR.1
    state = make_state()
    monkeypatch.setattr(commands, "implementation",
                        lambda cmd: commands.Implementation(lambda inv: 1 / 0))
    assert one(operate(state, "Device.Reboot()")).cmd_failure.err_code == 7022


def test_async_without_services_fails():
    state = make_state(services=False)
    res = one(operate(state, "Device.ScheduleTimer()", args={"DelaySeconds": "1"}))
    assert res.cmd_failure.err_code == 7022
    assert state.store.instances(requests.REQUEST_TABLE) == []


def test_duplicate_running_command_is_denied_7005(sleep):  # R-OPR.3 option 1, unique key
    state = make_state()
    operate(state, "Device.ScheduleTimer()", key="same", args={"DelaySeconds": "9"})
    res = one(operate(state, "Device.ScheduleTimer()", key="same", args={"DelaySeconds": "9"}))
    assert res.cmd_failure.err_code == 7005
    other = one(operate(state, "Device.ScheduleTimer()", key="other", args={"DelaySeconds": "9"}))
    assert other.req_obj_path == "Device.LocalAgent.Request.2."
    drain(state)
    assert len(notes(state).completed) == 2


@pytest.mark.parametrize("fault", ["operate.async_no_request_object",
                                   "operate.request_not_deleted", "operate.no_operation_complete",
                                   "operate.oper_complete_wrong_obj_path",
                                   "operate.oper_complete_no_command_key"])
def test_async_lifecycle_faults(sleep, fault):  # R-OPR.0, TP-469 1.64, 1.79
    good, bad = make_state(), make_state(fault)
    for state in (good, bad):
        operate(state, "Device.ScheduleTimer()", key="k79", args={"DelaySeconds": "1"})
        created = state.store.instances(requests.REQUEST_TABLE)
        drain(state)
        state.created = created  # type: ignore[attr-defined]
    assert good.created == ["Device.LocalAgent.Request.1."]
    assert good.store.instances(requests.REQUEST_TABLE) == []
    assert notes(good).completed[0][:3] == ("Device.", "ScheduleTimer()", "k79")
    if fault == "operate.async_no_request_object":
        assert bad.created == [] and notes(bad).completed
    elif fault == "operate.request_not_deleted":
        assert bad.store.instances(requests.REQUEST_TABLE) == ["Device.LocalAgent.Request.1."]
    elif fault == "operate.no_operation_complete":
        assert notes(bad).completed == []
    elif fault == "operate.oper_complete_wrong_obj_path":
        assert notes(bad).completed[0][0] == "Device.ScheduleTimer()"
    else:
        assert notes(bad).completed[0][2] == ""


# --- Cancel() -------------------------------------------------------------------------------


def test_cancel_stops_command_with_7023(sleep):  # TP-469 9.8, R-OPR.3
    state = make_state()

    async def scenario() -> None:
        req = one(operate(state, "Device.ScheduleTimer()", key="c",
                          args={"DelaySeconds": "5000"})).req_obj_path
        svc(state).start()
        await asyncio.sleep(0)
        assert state.store.get(req + "Status") == "Active"
        res = one(operate(state, req + "Cancel()", key="cancel"))
        assert res.HasField("req_output_args")
        assert state.store.get(req + "Status") == "Canceling"  # at once (TR-181 Cancel())
        await svc(state).drain()
        assert not state.store.exists(req)

    asyncio.run(scenario())
    assert notes(state).completed == [("Device.", "ScheduleTimer()", "c",
                                       {"output_args": None, "failure": (7023, "Command canceled")})]


def test_cancel_before_the_job_starts(sleep):
    state = make_state()
    req = one(operate(state, "Device.ScheduleTimer()", args={"DelaySeconds": "5"})).req_obj_path
    assert one(operate(state, req + "Cancel()")).HasField("req_output_args")
    drain(state)
    assert notes(state).completed[0][3]["failure"][0] == 7023
    assert sleep.calls == []


def test_fault_cancel_ignored(sleep):  # TP-469 9.8
    state = make_state("operate.cancel_ignored")
    req = one(operate(state, "Device.ScheduleTimer()", args={"DelaySeconds": "5"})).req_obj_path
    assert one(operate(state, req + "Cancel()")).HasField("req_output_args")
    drain(state)
    assert notes(state).completed[0][3]["failure"] is None


def test_cancel_of_request_without_running_command_fails():
    state = make_state()
    req = state.store.add(requests.REQUEST_TABLE, {"Status": "Active"})
    assert one(operate(state, req + "Cancel()")).cmd_failure.err_code == 7022


def test_agent_shutdown_keeps_the_request(sleep):
    state = make_state()
    req = one(operate(state, "Device.ScheduleTimer()", args={"DelaySeconds": "5000"})).req_obj_path

    async def scenario() -> None:
        svc(state).start()
        await asyncio.sleep(0)
        task = svc(state).tasks[0]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert state.store.exists(req) and notes(state).completed == []
    assert requests.operations(state).running == {}


# --- arguments (R-OPR.5, R-OPR.6, R-OPR.7) -----------------------------------------------------


def test_missing_mandatory_argument_is_7027_and_nothing_runs(sleep):  # TP-469 1.100
    state = make_state()
    res = one(operate(state, "Device.ScheduleTimer()", key="test100"))
    assert res.cmd_failure.err_code == 7027
    assert "DelaySeconds" in res.cmd_failure.err_msg
    assert state.store.instances(requests.REQUEST_TABLE) == []
    drain(state)
    assert notes(state).completed == []


def test_fault_ignore_missing_mandatory_arg(sleep):
    state = make_state("operate.ignore_missing_mandatory_arg")
    assert one(operate(state, "Device.ScheduleTimer()")).req_obj_path
    drain(state)
    assert notes(state).completed  # a Notify the case says must not come


def test_fault_oper_complete_after_rejection(sleep):  # TP-469 1.100, R-OPR.5
    state = make_state("operate.oper_complete_after_rejection")
    res = one(operate(state, "Device.ScheduleTimer()", key="test100"))
    assert res.cmd_failure.err_code == 7027  # the response itself stays right
    assert state.store.instances(requests.REQUEST_TABLE) == []
    (obj, name, key, outcome), = notes(state).completed  # the Notify 1.100 forbids
    assert (obj, name, key) == ("Device.", "ScheduleTimer()", "test100")
    assert outcome["failure"][0] == 7027
    # a rejected synchronous command has nothing to complete
    sync = make_state("operate.oper_complete_after_rejection")
    assert one(operate(sync, "Device.LocalAgent.AddCertificate()")).cmd_failure.err_code == 7027
    assert notes(sync).completed == []


def test_unknown_argument_is_ignored(sleep):  # TP-469 1.91, R-OPR.6
    state = make_state()
    args = {"DelaySeconds": "10", "InvalidArgument": "2"}
    assert one(operate(state, "Device.ScheduleTimer()", args=args)).req_obj_path
    bad = make_state("operate.reject_unknown_arg")
    assert one(operate(bad, "Device.ScheduleTimer()", args=args)).cmd_failure.err_code == 7027


def test_omitted_optional_argument_is_fine(sleep):  # R-OPR.7
    state = make_state()
    pem = _pem()
    assert one(operate(state, "Device.LocalAgent.AddCertificate()",
                       args={"Certificate": pem})).HasField("req_output_args")
    bad = make_state("operate.optional_arg_required")
    assert one(operate(bad, "Device.LocalAgent.AddCertificate()",
                       args={"Certificate": pem})).cmd_failure.err_code == 7027


@pytest.mark.parametrize("value", ["0", "abc", "-1", "99999999999"])
def test_invalid_argument_value_is_7027(value):
    state = make_state()
    res = one(operate(state, "Device.ScheduleTimer()", args={"DelaySeconds": value}))
    assert res.cmd_failure.err_code == 7027


# --- permissions --------------------------------------------------------------------------------


def test_permission_denied_is_cmd_failure_even_without_send_resp(sleep):  # TP-469 2.18
    state = make_state()
    reply = operate(state, "Device.Reboot()", send_resp=False, access=Deny("Device.Reboot()"))
    res = one(reply)  # R-OPR.4 lets the failure be reported; 2.18 expects it
    assert res.cmd_failure.err_code == 7006
    drain(state)
    assert svc(state).reboots == []


def test_permission_allowed(sleep):  # TP-469 2.17
    state = make_state()
    res = one(operate(state, "Device.Reboot()", access=Deny("Device.FactoryReset()")))
    assert res.HasField("req_output_args")


def test_fault_ignore_permissions(sleep):
    state = make_state("operate.ignore_permissions")
    assert one(operate(state, "Device.Reboot()", access=Deny("Device.Reboot()"))) \
        .HasField("req_output_args")
    drain(state)
    assert svc(state).reboots


def test_fault_error_on_failed_command():  # R-OPR.1
    state = make_state("operate.error_on_failed_command")
    reply = operate(state, "Device.Reboot()", access=Deny("Device.Reboot()"))
    assert reply is not None and reply.body.error.err_code == 7006


# --- paths ----------------------------------------------------------------------------------


def test_search_path_runs_each_match_separately():  # R-OPR.1, R-OPR.2
    state = make_state()
    add_controller(state, "proto::a")
    add_controller(state, "proto::b")
    res = results(operate(state, "Device.LocalAgent.Controller.*.SendOnBoardRequest()"))
    assert [r.executed_command for r in res] == [
        "Device.LocalAgent.Controller.1.SendOnBoardRequest()",
        "Device.LocalAgent.Controller.2.SendOnBoardRequest()"]
    assert notes(state).onboard == ["Device.LocalAgent.Controller.1.",
                                    "Device.LocalAgent.Controller.2."]
    bad = make_state("operate.search_path_first_only")
    add_controller(bad, "proto::a")
    add_controller(bad, "proto::b")
    assert len(results(operate(bad, "Device.LocalAgent.Controller.*.SendOnBoardRequest()"))) == 1


def test_search_path_with_mixed_outcomes_never_errors():  # R-OPR.1
    state = make_state()
    add_controller(state, "proto::a")
    add_controller(state, "proto::b")
    deny = Deny("Device.LocalAgent.Controller.2.SendOnBoardRequest()")
    res = results(operate(state, "Device.LocalAgent.Controller.*.SendOnBoardRequest()",
                          access=deny))
    assert res[0].HasField("req_output_args") and res[1].cmd_failure.err_code == 7006


def test_async_search_path_gets_one_request_per_object(sleep, tmp_path):  # R-OPR.2
    from conformance.agent.commands import firmware
    state = make_state()
    firmware.install_factory_images(state.store, version="1.0.0", banks=3)
    image = tmp_path / "fw.bin"
    image.write_bytes(b"version=2.0.0\n")
    res = results(operate(state, 'Device.DeviceInfo.FirmwareImage.[Status=="NoImage"].Download()',
                          args={"URL": image.as_uri(), "AutoActivate": "false"}))
    assert [r.req_obj_path for r in res] == ["Device.LocalAgent.Request.1.",
                                             "Device.LocalAgent.Request.2."]
    drain(state)
    # both complete; their order depends on the downloads' timing
    assert sorted(c[0] for c in notes(state).completed) == ["Device.DeviceInfo.FirmwareImage.2.",
                                                            "Device.DeviceInfo.FirmwareImage.3."]


def test_search_matching_nothing_gives_empty_response():  # R-MSG.4a
    state = make_state()
    reply = operate(state, "Device.LocalAgent.Controller.*.SendOnBoardRequest()")
    assert results(reply) == []
    assert operate(state, "Device.LocalAgent.Controller.*.SendOnBoardRequest()",
                   send_resp=False) is None


@pytest.mark.parametrize("command, code", [
    ("Device.Reboot(", 7008),
    ("Reboot()", 7008),
    ("Device.NoSuch()", 7026),
    ("Device.DeviceInfo.", 7026),
    ("Device.DeviceInfo.SoftwareVersion", 7026),
    ("Device.LocalAgent.Controller.7.SendOnBoardRequest()", 7016),
])
def test_unresolvable_command_is_an_error(command, code):
    reply = operate(make_state(), command, send_resp=False)
    assert reply is not None and reply.body.error.err_code == code
    assert reply.header.msg_id == "op-1"


def test_unsupported_command_is_7022():
    state = make_state()
    res = one(operate(state, "Device.LocalAgent.ControllerTrust.RequestChallenge()",
                      args={"ChallengeRef": "x"}))
    assert res.cmd_failure.err_code == 7022
    assert "not supported" in res.cmd_failure.err_msg


# --- through the core -------------------------------------------------------------------


def _via_core(state: AgentState, msg: Msg) -> list[Msg]:
    core = AgentCore(state)
    rec = records.no_session_record(msg, to_id=AGENT, from_id=CTRL, version="1.4")
    return [records.unwrap_msg(r) for r in core.handle_record(records.serialize(rec), now=0.0)]


def test_end_to_end_reboot_and_send_resp_false(sleep):
    state = make_state()
    out = _via_core(state, operate_msg("Device.Reboot()", key="e2e"))
    assert [m.body.response.operate_resp.operation_results[0].executed_command for m in out] == \
        ["Device.Reboot()"]
    assert _via_core(state, operate_msg("Device.Reboot()", send_resp=False)) == []
    drain(state)
    assert svc(state).reboots == [("RemoteReboot", "e2e"), ("RemoteReboot", "key")]


def test_end_to_end_async(sleep):
    state = make_state()
    out = _via_core(state, operate_msg("Device.ScheduleTimer()", args={"DelaySeconds": "3"}))
    assert out[0].body.response.operate_resp.operation_results[0].req_obj_path == \
        "Device.LocalAgent.Request.1."
    drain(state)
    assert notes(state).completed


# --- resume after restart -------------------------------------------------------------


def test_restart_resumes_timer_and_fails_other_requests(sleep):
    state = make_state()
    operate(state, "Device.ScheduleTimer()", key="t", args={"DelaySeconds": "100"})
    operate(state, "Device.SelfTestDiagnostics()", key="s")
    # the agent restarts: same store, new runtime
    restarted = AgentState(AGENT, state.dm, state.store, services=FakeServices(),
                           notifications=FakeNotifications(), clock=lambda: state.clock() + 40)
    resumed = commands.resume_requests(restarted)
    assert resumed == ["Device.LocalAgent.Request.1."]
    assert notes(restarted).completed == [("Device.", "SelfTestDiagnostics()", "s", {
        "output_args": None, "failure": (7022, "interrupted by a restart of the agent")})]
    assert restarted.store.instances(requests.REQUEST_TABLE) == ["Device.LocalAgent.Request.1."]
    drain(restarted)
    assert sleep.calls[-1] == pytest.approx(60, abs=1)  # what was left of the 100 s
    assert notes(restarted).completed[-1][:3] == ("Device.", "ScheduleTimer()", "t")
    assert restarted.store.instances(requests.REQUEST_TABLE) == []


def test_all_operate_faults_are_registered_with_a_requirement():
    import conformance.agent.messages.operate  # noqa: F401
    names = [n for n in REGISTRY if n.startswith("operate.")]
    assert len(names) >= 10
    assert all(REGISTRY[n].requirement.startswith(("R-", "TP-469")) for n in names)


def _pem() -> str:
    from conformance.mtp import pki
    ca = pki.make_ca("op-test-ca")
    return pki.issue(ca, endpoint_id="proto::new-controller").cert_pem().decode()
