"""The commands the reference Agent executes, by supported command path.

:data:`COMMANDS` maps a command's supported path (``Device.Reboot()``,
``Device.DeviceInfo.FirmwareImage.{i}.Download()``) to its
:class:`~conformance.agent.commands.base.Implementation`; the Operate
handler (:mod:`conformance.agent.messages.operate`) looks commands up with
:func:`implementation`. A command the shipped TR-181 model defines but that
is not listed here is answered with ``cmd_failure`` 7022 (see
:func:`unsupported`).

Modules per area: :mod:`.device` (Reboot, FactoryReset, ScheduleTimer,
SelfTestDiagnostics), :mod:`.firmware` (Download, Activate; boot-time image
switch), :mod:`.certificates` (AddCertificate, AddMyCertificate,
Certificate Delete/GetFingerprint), :mod:`.controller` (SendOnBoardRequest,
the obsoleted Controller ScheduleTimer), :mod:`.requests` (the Request
table, async jobs, Cancel). Shared types are in :mod:`.base`, the input
argument rules (R-OPR.5/6/7) in :mod:`.args`, file transfers in
:mod:`.transfer`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType

from conformance.agent.commands import (
    certificates,
    controller,
    device,
    firmware,
    requests,
)
from conformance.agent.commands.base import CommandFailed, Implementation, Invocation
from conformance.agent.context import AgentState
from conformance.agent.datamodel.defs import CommandDef, DataModel

__all__ = [
    "COMMANDS",
    "CommandFailed",
    "Implementation",
    "Invocation",
    "check_registry",
    "implementation",
    "resume_requests",
    "unsupported",
]

COMMANDS: Mapping[str, Implementation] = MappingProxyType({
    "Device.Reboot()": device.REBOOT,
    "Device.FactoryReset()": device.FACTORY_RESET,
    "Device.ScheduleTimer()": device.SCHEDULE_TIMER,
    "Device.SelfTestDiagnostics()": device.SELF_TEST,
    "Device.DeviceInfo.FirmwareImage.{i}.Download()": firmware.DOWNLOAD,
    "Device.DeviceInfo.FirmwareImage.{i}.Activate()": firmware.ACTIVATE,
    "Device.LocalAgent.AddCertificate()": certificates.ADD_CERTIFICATE,
    "Device.LocalAgent.Certificate.{i}.Delete()": certificates.DELETE_CERTIFICATE,
    "Device.LocalAgent.Certificate.{i}.GetFingerprint()": certificates.GET_FINGERPRINT,
    "Device.LocalAgent.Controller.{i}.AddMyCertificate()": certificates.ADD_MY_CERTIFICATE,
    "Device.LocalAgent.Controller.{i}.SendOnBoardRequest()": controller.SEND_ON_BOARD_REQUEST,
    "Device.LocalAgent.Controller.{i}.ScheduleTimer()": controller.CONTROLLER_SCHEDULE_TIMER,
    "Device.LocalAgent.Request.{i}.Cancel()": requests.CANCEL,
})


def implementation(command: CommandDef) -> Implementation | None:
    """How to execute ``command``; None when the agent does not implement it."""
    return COMMANDS.get(command.path)


def unsupported(dm: DataModel) -> list[str]:
    """Commands ``dm`` defines that the agent cannot execute (answered with 7022)."""
    return [cmd.path for obj in dm for cmd in obj.commands.values() if cmd.path not in COMMANDS]


def check_registry(dm: DataModel) -> list[str]:
    """Mismatches between the registry and ``dm``: unknown paths, sync/async disagreements."""
    problems: list[str] = []
    for path, impl in COMMANDS.items():
        cmd = dm.find(path)
        if not isinstance(cmd, CommandDef):
            problems.append(f"{path}: not a command of the data model")
            continue
        if inspect.iscoroutinefunction(impl.run) != cmd.is_async:
            problems.append(f"{path}: the model says {'async' if cmd.is_async else 'sync'}")
        if impl.precheck is not None and not cmd.is_async:
            problems.append(f"{path}: a precheck only applies to asynchronous commands")
    return problems


def resume_requests(state: AgentState) -> list[str]:
    """At agent start: resume persisted ScheduleTimer() requests, fail the other leftovers."""
    return requests.resume_requests(state, implementation)
