"""The life of an asynchronous command: its ``Device.LocalAgent.Request.{i}.`` and its job.

TR-369 "Asynchronous Operations" and TR-181 ``Device.LocalAgent.Request.{i}.``:

* R-OPR.0 / R-OPR.2: every asynchronous command matched by an Operate gets
  its own Request instance (Originator, Command, CommandKey, Status
  ``Requested``); the instance is removed when the command completes, after
  Status has become ``Success`` or ``Error`` (``Canceled`` when canceled);
* the outcome goes to subscribers as an OperationComplete notification
  (``state.notifications.operation_complete``), whatever ``send_resp`` was;
* ``Request.{i}.Cancel()`` sets Status ``Canceling`` at once and stops the
  job; the OperationComplete then carries ``cmd_failure`` 7023 (R-OPR.3:
  nothing else ever cancels a running command);
* Originator + Command + CommandKey is a unique key of the table, so the
  same command with the same key from the same Controller is refused with
  7005 while the first one runs (R-OPR.3 option 1, "deny the new operation").

Jobs run on the agent's event loop through ``state.services.run_async``.
The registry of running jobs (:class:`Operations`) is kept per agent state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from conformance.agent.commands import base
from conformance.agent.commands.base import (
    CommandFailed,
    Implementation,
    Invocation,
    Outputs,
)
from conformance.agent.context import AgentState
from conformance.agent.datamodel.defs import CommandDef
from conformance.agent.datamodel.store import StoreError
from conformance.agent.faults import register
from conformance.usp import errors

__all__ = [
    "CANCEL",
    "REQUEST_TABLE",
    "Operations",
    "Running",
    "cancel",
    "cancel_command",
    "create_request",
    "operations",
    "resume_requests",
    "run_deferred",
    "start",
]

_log = logging.getLogger(__name__)

REQUEST_TABLE = "Device.LocalAgent.Request."

register("operate.request_not_deleted", "R-OPR.0",
         "leaves the Request object of a finished asynchronous command in the Request table")
register("operate.no_operation_complete", "TP-469 1.64",
         "never sends the OperationComplete notification of an asynchronous command")
register("operate.oper_complete_wrong_obj_path", "TP-469 1.79",
         "puts the full command path instead of the owning object in OperationComplete obj_path")
register("operate.oper_complete_no_command_key", "TP-469 1.64",
         "sends OperationComplete with an empty command_key instead of the Operate's")
register("operate.cancel_ignored", "TP-469 9.8",
         "answers Request.{i}.Cancel() with success but lets the command run on")


@dataclass
class Running:
    """An asynchronous command between Operate and OperationComplete."""

    invocation: Invocation
    implementation: Implementation
    task: asyncio.Task[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    cancel_requested: bool = False


@dataclass
class Operations:
    """The running asynchronous commands of one agent, by Request instance path."""

    running: dict[str, Running] = field(default_factory=dict)


_OPERATIONS: dict[int, Operations] = {}


def operations(state: AgentState) -> Operations:
    """The registry of running commands of ``state`` (created on first use)."""
    key = id(state)
    ops = _OPERATIONS.get(key)
    if ops is None:
        ops = _OPERATIONS[key] = Operations()
        weakref.finalize(state, _OPERATIONS.pop, key, None)
    return ops


# --- Request instances ----------------------------------------------------------------


def create_request(inv: Invocation, impl: Implementation) -> str:
    """Add the Request instance for ``inv`` (Status ``Requested``); return its path."""
    store = inv.store
    for inst in store.instances(REQUEST_TABLE):
        try:
            same = (store.get(inst + "Originator"), store.get(inst + "Command"),
                    store.get(inst + "CommandKey")) == (inv.originator, inv.executed_command,
                                                        inv.command_key)
        except StoreError:
            continue
        if same:
            raise CommandFailed(errors.RESOURCES_EXCEEDED,
                                f"{inv.executed_command} with command_key {inv.command_key!r} "
                                f"from this Controller is still running ({inst})")
    values = {"Alias": base.fresh_alias(store, REQUEST_TABLE), "Originator": inv.originator,
              "Command": inv.executed_command, "CommandKey": inv.command_key,
              "Status": "Requested"}
    if impl.resumable:  # what a restarted agent needs to carry on (never secrets: see firmware)
        values[base.PRIVATE_PREFIX + "Args"] = json.dumps(inv.args, sort_keys=True)
        values[base.PRIVATE_PREFIX + "Started"] = repr(inv.started_at)
    path = store.add(REQUEST_TABLE, values)
    inv.request_path = path
    return path


def _set_status(inv: Invocation, status: str) -> None:
    if inv.request_path is None:
        return
    try:
        inv.store.set(inv.request_path + "Status", status)
    except StoreError:
        pass  # the instance is gone (never created, or removed by a restore)


# --- jobs ---------------------------------------------------------------------------------


def start(inv: Invocation, impl: Implementation) -> None:
    """Schedule the job of an accepted asynchronous command on the agent's loop."""
    services = inv.services  # CommandFailed when the agent has no runtime
    running = Running(inv, impl)
    key = inv.request_path or f"#{id(running)}"
    operations(inv.state).running[key] = running
    services.run_async(lambda: _execute(key, running), name=f"operate {inv.executed_command}")


async def _execute(key: str, running: Running) -> None:
    inv, impl = running.invocation, running.implementation
    running.task = asyncio.current_task()
    running.loop = asyncio.get_running_loop()
    outputs: Outputs | None = None
    failure: tuple[int, str] | None = None
    try:
        if running.cancel_requested:
            raise asyncio.CancelledError
        _set_status(inv, "Active")
        result = impl.run(inv)
        if not asyncio.iscoroutine(result):
            raise TypeError(f"{inv.command.path} is asynchronous but its run() is not")
        outputs = _outputs(await result)
        _set_status(inv, "Success")
    except CommandFailed as exc:
        failure = (exc.code, exc.message)
        _set_status(inv, "Error")
    except asyncio.CancelledError:
        if not running.cancel_requested:  # the agent is stopping: keep the Request
            operations(inv.state).running.pop(key, None)
            raise
        if running.task is not None:
            running.task.uncancel()
        failure = (errors.COMMAND_CANCELED, "Command canceled")
        _set_status(inv, "Canceled")
    except Exception as exc:  # noqa: BLE001 - a bug in an implementation: report it
        _log.exception("command %s failed", inv.executed_command)
        failure = (errors.COMMAND_FAILURE, f"internal error: {type(exc).__name__}")
        _set_status(inv, "Error")
    operations(inv.state).running.pop(key, None)
    _finish(inv, outputs, failure)
    if failure is None and inv.deferred:
        await base.sleep(base.RESPONSE_GRACE_SECONDS)
        _run_actions(inv.deferred, inv.executed_command)


def _outputs(value: object) -> Outputs:
    if not isinstance(value, dict):
        raise TypeError("a command must return its output arguments as a dict")
    return {str(k): str(v) for k, v in value.items()}


def _finish(inv: Invocation, outputs: Outputs | None, failure: tuple[int, str] | None) -> None:
    """Remove the Request (R-OPR.0) and send OperationComplete."""
    if inv.request_path is not None and not inv.fault("operate.request_not_deleted"):
        try:
            inv.store.delete(inv.request_path)
        except StoreError:
            pass
    notes = inv.notifications
    if notes is None or inv.fault("operate.no_operation_complete"):
        return
    obj_path = inv.executed_command if inv.fault("operate.oper_complete_wrong_obj_path") \
        else inv.obj_path
    key = "" if inv.fault("operate.oper_complete_no_command_key") else inv.command_key
    if failure is None:
        notes.operation_complete(obj_path, inv.command.name, key, output_args=outputs or {})
    else:
        notes.operation_complete(obj_path, inv.command.name, key, failure=failure)


def run_deferred(inv: Invocation) -> None:
    """Run a synchronous command's deferred work after its OperateResp has gone out."""
    if not inv.deferred:
        return
    actions = list(inv.deferred)

    async def job() -> None:
        await base.sleep(base.RESPONSE_GRACE_SECONDS)
        _run_actions(actions, inv.executed_command)

    inv.services.run_async(job, name=f"after {inv.executed_command}")


def _run_actions(actions: list[Callable[[], None]], what: str) -> None:
    for action in actions:
        try:
            action()
        except Exception:  # noqa: BLE001 - one failing action must not stop the others
            _log.exception("deferred work of %s failed", what)


# --- Cancel() -----------------------------------------------------------------------------


def cancel(state: AgentState, request_path: str) -> None:
    """Cancel the command of ``request_path`` (TR-181 Request.{i}.Cancel())."""
    running = operations(state).running.get(request_path)
    if running is None:
        raise CommandFailed(errors.COMMAND_FAILURE, f"{request_path} has no running command")
    if state.faults.on("operate.cancel_ignored"):
        return
    if running.cancel_requested:
        return
    running.cancel_requested = True
    _set_status(running.invocation, "Canceling")
    task, loop = running.task, running.loop
    if task is not None and loop is not None and not task.done():
        try:
            loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:  # the loop is closed: nothing is running any more
            pass


# --- restart ----------------------------------------------------------------------------


def resume_requests(state: AgentState,
                    lookup: Callable[[CommandDef], Implementation | None]) -> list[str]:
    """After an agent restart: resume resumable commands, fail the others.

    TR-369 "Persistence of Asynchronous Operations": a command that was
    running when the agent restarted has failed, unless its definition says
    it persists (ScheduleTimer()). Returns the Request paths resumed.
    """
    store = state.store
    ops = operations(state)
    resumed: list[str] = []
    for inst in store.instances(REQUEST_TABLE):
        if inst in ops.running:
            continue
        values = store.params(inst)
        hidden = base.private_values(store, inst)
        command_path = values.get("Command", "")
        cmd = state.dm.find(command_path)
        impl = lookup(cmd) if isinstance(cmd, CommandDef) else None
        obj_path = command_path.rpartition(".")[0] + "."
        inv = Invocation(state, values.get("Originator", ""), obj_path,
                         cmd if isinstance(cmd, CommandDef) else CommandDef(
                             command_path.rpartition(".")[2] or "?", command_path),
                         values.get("CommandKey", ""), {}, state.clock(), request_path=inst)
        if impl is not None and impl.resumable and state.services is not None:
            try:
                inv.args = json.loads(hidden.get(base.PRIVATE_PREFIX + "Args", "{}"))
                inv.started_at = float(hidden.get(base.PRIVATE_PREFIX + "Started", "nan"))
            except (ValueError, TypeError):
                pass
            else:
                if isinstance(inv.args, dict) and inv.started_at == inv.started_at:
                    start(inv, impl)
                    resumed.append(inst)
                    continue
        _set_status(inv, "Error")
        _finish(inv, None, (errors.COMMAND_FAILURE, "interrupted by a restart of the agent"))
    return resumed


def cancel_command(inv: Invocation) -> Outputs:
    """Device.LocalAgent.Request.{i}.Cancel() (synchronous)."""
    cancel(inv.state, inv.obj_path)
    return {}


CANCEL = Implementation(cancel_command, notes="cancels the Request's running command (7023)")
