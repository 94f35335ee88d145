"""What every message handler of the reference Agent gets: the agent's state
and the request being handled.

* :class:`AgentState`: the data model (definitions + store), the active
  faults, the clock, the endpoint id, and the services handlers call into
  (the notification engine, the command runner, reboot/reset hooks);
* :class:`RequestContext`: who sent the request, with which permissions
  (:class:`Access`), and the Msg itself.

Handlers are plain functions ``handle(state, ctx) -> Msg`` (the response or
Error Msg). They never touch sockets; the core sends what they return.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from conformance.agent.datamodel.defs import DataModel
from conformance.agent.datamodel.store import Store
from conformance.agent.faults import FaultSet
from conformance.usp.schema import Msg

#: ControllerTrust Permission parameters a target can be checked against.
TargetKind = Literal["Param", "Obj", "InstantiatedObj", "CommandEvent"]
#: The four permission letters, in TR-181 order (rwxn).
Operation = Literal["r", "w", "x", "n"]


class Access(Protocol):
    """A controller's effective permissions (TR-181 ControllerTrust Role.{i}.Permission.{i})."""

    def allows(self, kind: TargetKind, path: str, op: Operation) -> bool:
        """Whether ``op`` on ``path`` (instantiated or supported form) is permitted."""
        ...


class FullAccess:
    """Every permission: the default when no ControllerTrust roles restrict a controller."""

    def allows(self, kind: TargetKind, path: str, op: Operation) -> bool:
        return True


FULL_ACCESS = FullAccess()


class Notifications(Protocol):
    """The subscription engine (``conformance.agent.notify``) as handlers see it.

    ValueChange, ObjectCreation and ObjectDeletion come from store change
    events on their own; handlers report what the store cannot see.
    """

    def event(self, obj_path: str, event_name: str, params: dict[str, str]) -> None:
        """An event happened (``Device.``, ``Boot!``, {...}): notify subscribers."""
        ...

    def operation_complete(self, obj_path: str, command_name: str, command_key: str, *,
                           output_args: dict[str, str] | None = None,
                           failure: tuple[int, str] | None = None) -> None:
        """An (async) command finished: OperationComplete to subscribers."""
        ...

    def on_board_request(self, controller_path: str) -> None:
        """Send an OnBoardRequest Notify to the controller at ``controller_path``."""
        ...


class Services(Protocol):
    """What handlers may ask the running agent to do (implemented by the agent runtime)."""

    def run_async(self, job: Callable[[], Awaitable[None]], *, name: str) -> None:
        """Run ``job`` on the agent's event loop (async commands, timers)."""
        ...

    def reboot(self, cause: str, command_key: str) -> None:
        """Persist, close MTPs and restart the agent process (Device.Reboot())."""
        ...

    def factory_reset(self, command_key: str) -> None:
        """Restore the factory-default data model and restart (Device.FactoryReset())."""
        ...


@dataclass
class AgentState:
    """The agent as handlers see it."""

    endpoint_id: str
    dm: DataModel
    store: Store
    faults: FaultSet = field(default_factory=FaultSet)
    clock: Callable[[], float] = time.time          # wall clock (dateTime values)
    monotonic: Callable[[], float] = time.monotonic  # durations and timers
    supported_versions: tuple[str, ...] = ("1.0", "1.1", "1.2", "1.3", "1.4")
    services: Services | None = None
    notifications: Notifications | None = None


@dataclass
class RequestContext:
    """One request being handled."""

    controller_id: str
    msg: Msg
    access: Access = FULL_ACCESS

    @property
    def msg_id(self) -> str:
        return self.msg.header.msg_id


Handler = Callable[[AgentState, RequestContext], Msg]
