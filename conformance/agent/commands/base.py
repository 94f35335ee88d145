"""What a command implementation of the reference Agent is and what it gets.

A command implementation (registered in :mod:`conformance.agent.commands`)
is an :class:`Implementation` whose ``run`` receives an :class:`Invocation`:
the agent state, the object the command runs on, the validated input
arguments (defaults filled in, unknown ones dropped; see
:mod:`conformance.agent.commands.args`), the ``command_key`` and, for an
asynchronous command, the path of its ``Device.LocalAgent.Request.{i}.``.

* a synchronous command's ``run`` is a plain function returning the output
  arguments;
* an asynchronous command's ``run`` is a coroutine function; the Operate
  handler runs it through ``state.services.run_async`` and reports the
  outcome in an OperationComplete notification.

Either kind fails by raising :class:`CommandFailed` with a USP error code
(reported in ``cmd_failure``). Work that must wait until the OperateResp (or
the OperationComplete) has gone out, such as a reboot, is handed to
:meth:`Invocation.defer`.

Also here: :func:`sleep` (the one place commands wait, so tests can replace
it), :func:`fresh_alias` (``cpe-`` aliases, TR-181 ``Alias`` data type) and
:func:`private_values` (agent-internal values kept next to an instance in the
store, persisted with it but invisible to USP).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from conformance.agent.context import AgentState, Notifications, Services
from conformance.agent.datamodel.defs import CommandDef
from conformance.agent.datamodel.store import Store
from conformance.usp import errors

__all__ = [
    "PRIVATE_PREFIX",
    "RESPONSE_GRACE_SECONDS",
    "CommandFailed",
    "Implementation",
    "Invocation",
    "Outputs",
    "fresh_alias",
    "private_values",
    "sleep",
]

#: Output arguments of a command (names relative to the command, values as strings).
Outputs = dict[str, str]

#: How long deferred work (a reboot after Reboot(), Activate()...) waits so that the
#: OperateResp or OperationComplete Notify can leave the agent first.
RESPONSE_GRACE_SECONDS = 0.5

#: Store keys starting with this character are agent-internal (TR-181 names start
#: with a letter, so they can never collide with a parameter).
PRIVATE_PREFIX = "#"


class CommandFailed(Exception):
    """A command did not succeed; ``code`` is the USP error code for ``cmd_failure``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def sleep(seconds: float) -> None:
    """Wait ``seconds`` on the event loop (timers, time windows, grace periods).

    Commands call it as ``base.sleep`` so that tests can swap in a fake clock.
    """
    await asyncio.sleep(max(0.0, seconds))


@dataclass
class Invocation:
    """One execution of a command on one object."""

    state: AgentState
    originator: str                 # Endpoint ID of the requesting Controller
    obj_path: str                   # "Device." or "Device.DeviceInfo.FirmwareImage.2."
    command: CommandDef
    command_key: str
    args: dict[str, str]
    started_at: float               # wall clock (state.clock()) when the Operate arrived
    request_path: str | None = None  # "Device.LocalAgent.Request.3." for async commands
    deferred: list[Callable[[], None]] = field(default_factory=list)

    @property
    def executed_command(self) -> str:
        """The command path this invocation answers for (``executed_command``)."""
        return self.obj_path + self.command.name

    @property
    def store(self) -> Store:
        return self.state.store

    @property
    def services(self) -> Services:
        """The runtime services; fails the command when the agent runs without them."""
        if self.state.services is None:
            raise CommandFailed(errors.COMMAND_FAILURE, "this agent runs without platform services")
        return self.state.services

    @property
    def notifications(self) -> Notifications | None:
        return self.state.notifications

    def fault(self, name: str) -> bool:
        return self.state.faults.on(name)

    def arg(self, name: str, default: str = "") -> str:
        return self.args.get(name, default)

    def bool_arg(self, name: str, default: bool = False) -> bool:
        value = self.args.get(name)
        if value is None:
            return default
        return value.strip() in ("true", "1")

    def int_arg(self, name: str, default: int = 0) -> int:
        try:
            return int(self.args[name])
        except (KeyError, ValueError):
            return default

    def defer(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the response (sync) or OperationComplete (async) is out."""
        self.deferred.append(action)


SyncRun = Callable[[Invocation], Outputs]
AsyncRun = Callable[[Invocation], Awaitable[Outputs]]


@dataclass(frozen=True)
class Implementation:
    """How the agent executes one supported command.

    ``precheck`` (async commands only) runs before the Request object is
    created; a :class:`CommandFailed` from it becomes the ``cmd_failure`` of
    the OperateResp. ``resumable`` commands continue after an agent restart
    (TR-181: a scheduled ScheduleTimer() survives reboots).
    """

    run: SyncRun | AsyncRun
    precheck: Callable[[Invocation], None] | None = None
    resumable: bool = False
    notes: str = ""


def fresh_alias(store: Store, table_path: str) -> str:
    """An unused ``cpe-<n>`` Alias for a new instance the agent creates itself."""
    used = set()
    for inst in store.instances(table_path):
        try:
            used.add(store.get(inst + "Alias"))
        except LookupError:
            continue
    n = len(store.instance_numbers(table_path)) + 1
    while f"cpe-{n}" in used:
        n += 1
    return f"cpe-{n}"


def private_values(store: Store, obj_path: str) -> Mapping[str, Any]:
    """Agent-internal values stored with an instance (keys start with ``#``).

    They are written through ``store.add(table, {"#Key": value})``, persisted
    with the instance and deleted with it; USP never sees them because every
    USP read goes through the definitions.
    """
    return store.private(obj_path)
