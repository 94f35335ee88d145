"""Operate (TR-369 "Defined Operations Mechanism" and "The Operate Message";
TP-469 1.61-1.65, 1.79, 1.91, 1.92, 1.100, 2.17, 2.18, 9.x).

The ``command`` (a Command Path or a search path) is resolved against the
instantiated data model; a path that cannot be resolved fails the whole
message with an Error (7008, 7016, 7026). Every matched command gets its own
``OperationResult`` and is handled on its own (R-OPR.1: a failing command is
a ``cmd_failure``, never an Error):

* ``x`` permission on the command (``CommandEvent``) or 7006 (R-SEC.1,
  TP-469 2.18);
* a command the agent does not implement: 7022;
* input arguments per R-OPR.5 (missing mandatory: 7027), R-OPR.6 (unknown:
  ignored) and R-OPR.7 (omitted optional: default);
* synchronous commands run now and answer ``req_output_args``;
* asynchronous commands get a ``Device.LocalAgent.Request.{i}`` (R-OPR.0,
  R-OPR.2), answer ``req_obj_path`` and run on the agent's loop; their
  outcome is an OperationComplete notification
  (:mod:`conformance.agent.commands.requests`).

With ``send_resp`` false no OperateResp is sent (R-OPR.4), except one
carrying the ``cmd_failure`` results when commands failed (R-OPR.4 allows it
and TP-469 2.18 expects it); OperationComplete is sent either way.
"""

from __future__ import annotations

import logging

from conformance.agent import commands
from conformance.agent.commands import requests
from conformance.agent.commands.args import ArgumentError, check_args
from conformance.agent.commands.base import CommandFailed, Invocation
from conformance.agent.context import AgentState, RequestContext
from conformance.agent.datamodel.defs import CommandDef
from conformance.agent.datamodel.resolve import ResolveError, resolve
from conformance.agent.faults import register
from conformance.usp import errors, messages, paths
from conformance.usp.schema import Msg, msg_pb2

__all__ = ["handle_operate"]

_log = logging.getLogger(__name__)
_Result = msg_pb2.OperateResp.OperationResult

register("operate.error_on_failed_command", "R-OPR.1",
         "answers a command that fails (denied, bad arguments, ...) with an Error message "
         "instead of a cmd_failure in the OperateResp")
register("operate.ignore_permissions", "TP-469 2.18",
         "executes commands the Controller has no 'x' permission for")
register("operate.ignore_missing_mandatory_arg", "R-OPR.5",
         "runs a command although a mandatory input argument is missing (no 7027)")
register("operate.reject_unknown_arg", "R-OPR.6",
         "fails a command with 7027 when an unknown input argument is present")
register("operate.optional_arg_required", "R-OPR.7",
         "fails a command with 7027 when an optional input argument is omitted")
register("operate.respond_when_send_resp_false", "R-OPR.4",
         "sends an OperateResp for successful commands although send_resp is false")
register("operate.sync_reports_request_path", "TP-469 1.61",
         "answers a synchronous command with req_obj_path instead of req_output_args")
register("operate.async_no_request_object", "R-OPR.0",
         "runs asynchronous commands without creating a Device.LocalAgent.Request instance")
register("operate.search_path_first_only", "R-OPR.2",
         "executes the command on the first object a search path matches only")
register("operate.deferred_needs_send_resp", "TP-469 1.62 / R-OPR.4",
         "drops a synchronous command's follow-up work (the restart after Reboot()) when "
         "send_resp is false")
register("operate.oper_complete_after_rejection", "TP-469 1.100 / R-OPR.5",
         "sends an OperationComplete (with the 7027 failure) for an asynchronous command "
         "refused for its input arguments, as if it had been started")


def handle_operate(state: AgentState, ctx: RequestContext) -> Msg | None:
    """Answer an Operate request (None when no OperateResp is due, R-OPR.4)."""
    op = ctx.msg.body.request.operate
    try:
        targets = _targets(state, op.command)
    except ResolveError as exc:
        return messages.error(exc.code, exc.message, msg_id=ctx.msg_id)
    results: list[_Result] = []
    for obj_path, command in targets:
        result = _operate_one(state, ctx, obj_path, command, op.command_key, dict(op.input_args),
                              send_resp=op.send_resp)
        if result.HasField("cmd_failure") and state.faults.on("operate.error_on_failed_command"):
            return messages.error(result.cmd_failure.err_code, result.cmd_failure.err_msg,
                                  msg_id=ctx.msg_id)
        results.append(result)
    if not op.send_resp and not state.faults.on("operate.respond_when_send_resp_false"):
        failures = [r for r in results if r.HasField("cmd_failure")]
        if not failures:
            return None  # R-OPR.4
        results = failures
    resp = msg_pb2.OperateResp()
    resp.operation_results.extend(results)
    return messages.response("operate_resp", resp, msg_id=ctx.msg_id)


def _targets(state: AgentState, text: str) -> list[tuple[str, CommandDef]]:
    """(object path, command definition) for every command ``text`` matches."""
    res = resolve(state.store, text)
    if res.kind is not paths.PathKind.COMMAND or res.leaf is None:
        raise ResolveError(errors.INVALID_PATH, f"{text!r} is not a Command Path")
    out: list[tuple[str, CommandDef]] = []
    for obj in res.objects:
        odef = state.store.object_def(obj)
        command = odef.commands.get(res.leaf) if odef is not None else None
        if command is None:
            raise ResolveError(errors.INVALID_PATH, f"{obj}{res.leaf} is not a command")
        out.append((obj, command))
    if res.is_search and out and state.faults.on("operate.search_path_first_only"):
        out = out[:1]
    return out


def _failure(executed: str, code: int, message: str) -> _Result:
    result = _Result(executed_command=executed)
    result.cmd_failure.err_code = code
    result.cmd_failure.err_msg = message
    return result


def _operate_one(state: AgentState, ctx: RequestContext, obj_path: str, command: CommandDef,
                 command_key: str, given: dict[str, str], *, send_resp: bool = True) -> _Result:
    executed = obj_path + command.name
    if not ctx.access.allows("CommandEvent", executed, "x") and \
            not state.faults.on("operate.ignore_permissions"):
        return _failure(executed, errors.PERMISSION_DENIED,
                        f"no permission to execute {executed}")  # R-SEC.1, TP-469 2.18
    impl = commands.implementation(command)
    if impl is None:
        return _failure(executed, errors.COMMAND_FAILURE,
                        f"{command.path} is not supported by this agent")
    try:
        checked = check_args(
            command, given,
            enforce_mandatory=not state.faults.on("operate.ignore_missing_mandatory_arg"),
            ignore_unknown=not state.faults.on("operate.reject_unknown_arg"),
            apply_defaults=not state.faults.on("operate.optional_arg_required"))
    except ArgumentError as exc:
        # R-OPR.5: the command stops here; it never ran, so no OperationComplete follows.
        if command.is_async and state.notifications is not None and \
                state.faults.on("operate.oper_complete_after_rejection"):
            state.notifications.operation_complete(
                obj_path, command.name, command_key,
                failure=(errors.INVALID_COMMAND_ARGUMENTS, str(exc)))
        return _failure(executed, errors.INVALID_COMMAND_ARGUMENTS, str(exc))
    inv = Invocation(state, ctx.controller_id, obj_path, command, command_key, checked.args,
                     started_at=state.clock())
    try:
        if command.is_async:
            return _start_async(state, inv, impl)
        return _run_sync(state, inv, impl, send_resp=send_resp)
    except CommandFailed as exc:
        return _failure(executed, exc.code, exc.message)
    except Exception as exc:  # noqa: BLE001 - a bug fails this command only (R-OPR.1)
        _log.exception("command %s failed", executed)
        return _failure(executed, errors.COMMAND_FAILURE, f"internal error: {type(exc).__name__}")


def _run_sync(state: AgentState, inv: Invocation, impl: commands.Implementation, *,
              send_resp: bool = True) -> _Result:
    outputs = impl.run(inv)
    if not isinstance(outputs, dict):
        raise TypeError(f"{inv.command.path} is synchronous but its run() is not")
    result = _Result(executed_command=inv.executed_command)
    if state.faults.on("operate.sync_reports_request_path"):
        result.req_obj_path = f"{requests.REQUEST_TABLE}1."
    else:
        result.req_output_args.SetInParent()
        for name, value in outputs.items():
            result.req_output_args.output_args[name] = str(value)
    # The follow-up work runs whether or not an OperateResp is due (R-OPR.4 only spares
    # the response).
    if send_resp or not state.faults.on("operate.deferred_needs_send_resp"):
        requests.run_deferred(inv)
    return result


def _start_async(state: AgentState, inv: Invocation, impl: commands.Implementation) -> _Result:
    if impl.precheck is not None:
        impl.precheck(inv)
    inv.services  # noqa: B018 - no runtime, no async command (CommandFailed)
    result = _Result(executed_command=inv.executed_command)
    if state.faults.on("operate.async_no_request_object"):
        result.req_obj_path = ""
        requests.start(inv, impl)
        return result
    path = requests.create_request(inv, impl)
    try:
        requests.start(inv, impl)
    except BaseException:
        state.store.delete(path)
        raise
    result.req_obj_path = path
    return result
