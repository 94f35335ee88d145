"""Commands of the ``Device.`` object: Reboot(), FactoryReset(), ScheduleTimer(),
SelfTestDiagnostics() (TR-181 Device:2; TP-469 1.61, 1.62, 1.79, 1.91, 1.100, 9.10, 9.11).

Reboot() and FactoryReset() are synchronous: the OperateResp (empty
``output_args``, TP-469 1.61) goes out first and the restart is deferred to
the runtime (``services.reboot(cause="RemoteReboot", ...)`` and
``services.factory_reset(...)``); the Boot! event after the restart carries
the ``command_key`` (TR-181 ``Boot!.CommandKey``).

ScheduleTimer() is asynchronous and is its own timer: it completes
``DelaySeconds`` after it was invoked, measured from the Operate's arrival
so that a timer resumed after a restart keeps its deadline (TR-181: a
scheduled timer persists across reboots).

SelfTestDiagnostics() checks what the reference agent can check about
itself: its definitions, its instantiated data model and that the store can
be serialized; it reports ``Status`` and a short ``Results`` text.
"""

from __future__ import annotations

import json
import time

from conformance.agent.commands import base
from conformance.agent.commands.base import (
    CommandFailed,
    Implementation,
    Invocation,
    Outputs,
)
from conformance.agent.datamodel.store import StoreError
from conformance.agent.faults import register
from conformance.usp import errors

__all__ = ["FACTORY_RESET", "REBOOT", "SCHEDULE_TIMER", "SELF_TEST"]

register("reboot.ignored", "TP-469 1.61",
         "answers Device.Reboot() but never reboots")
register("schedule_timer.ignores_delay", "TP-469 1.79",
         "completes Device.ScheduleTimer() at once instead of after DelaySeconds")

_RESULTS_MAX = 1024  # TR-181 SelfTestDiagnostics() Results size


def reboot(inv: Invocation) -> Outputs:
    """Device.Reboot(): reboot after the response, Boot! cause RemoteReboot."""
    services = inv.services
    if not inv.fault("reboot.ignored"):
        inv.defer(lambda: services.reboot(cause="RemoteReboot", command_key=inv.command_key))
    return {}


def factory_reset(inv: Invocation) -> Outputs:
    """Device.FactoryReset(): restore factory defaults and restart after the response."""
    services = inv.services
    inv.defer(lambda: services.factory_reset(command_key=inv.command_key))
    return {}


async def schedule_timer(inv: Invocation) -> Outputs:
    """Device.ScheduleTimer(): complete DelaySeconds after the Operate."""
    delay = inv.int_arg("DelaySeconds")
    if delay < 1:  # the argument check enforces the range; guard a resumed Request
        raise CommandFailed(errors.INVALID_COMMAND_ARGUMENTS, "DelaySeconds must be at least 1")
    if not inv.fault("schedule_timer.ignores_delay"):
        await base.sleep(inv.started_at + delay - inv.state.clock())
    return {}


async def self_test(inv: Invocation) -> Outputs:
    """Device.SelfTestDiagnostics(): check definitions, instances and persistence."""
    began = time.perf_counter()
    state = inv.state
    problems: list[str] = []
    objects = len(state.dm)
    commands = sum(len(o.commands) for o in state.dm)
    instances = 0
    for path in state.store.object_paths():
        if state.store.object_def(path) is None:
            problems.append(f"undefined object {path}")
        instances += 1
    try:
        size = len(json.dumps(state.store.to_json()))
    except (TypeError, ValueError) as exc:
        problems.append(f"store not serializable: {exc}")
        size = 0
    for param in ("Device.DeviceInfo.SoftwareVersion", "Device.LocalAgent.EndpointID"):
        try:
            state.store.get(param)
        except StoreError:
            problems.append(f"{param} unreadable")
    await base.sleep(0)
    took = (time.perf_counter() - began) * 1000
    status = "Error_Internal" if problems else "Complete"
    summary = (f"definitions={objects} objects/{commands} commands; instances={instances}; "
               f"store={size} bytes; {took:.1f} ms; "
               + ("problems: " + "; ".join(problems) if problems else "no problems found"))
    return {"Status": status, "Results": summary[:_RESULTS_MAX]}


REBOOT = Implementation(reboot, notes="restart through services.reboot after the OperateResp")
FACTORY_RESET = Implementation(factory_reset,
                               notes="restore through services.factory_reset after the OperateResp")
SCHEDULE_TIMER = Implementation(schedule_timer, resumable=True,
                                notes="timer; persists across agent restarts")
SELF_TEST = Implementation(self_test, notes="checks the agent's own data model and store")
