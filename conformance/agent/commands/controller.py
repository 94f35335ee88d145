"""Commands of ``Device.LocalAgent.Controller.{i}.``: SendOnBoardRequest() and the
obsoleted ScheduleTimer() (TR-181 LocalAgent; TP-469 1.60, 1.101, 9.9, 9.1).

SendOnBoardRequest() is synchronous: the agent answers and asks the
notification engine to send an OnBoardRequest Notify to that Controller
(R-NOT.5). The engine also sets that Controller's ``OnBoardingComplete`` to
``false`` where the model defines it, until the Controller sets it back
(TP-469 1.101), and repeats the request per ``OnBoardingRestartTime``.

``Controller.{i}.ScheduleTimer()`` (obsoleted in Device:2.14 by
``Device.ScheduleTimer()``, still in the shipped model) answers at once and
raises the Controller's ``Timer!`` event ``DelaySeconds`` later.
"""

from __future__ import annotations

from conformance.agent.commands import base
from conformance.agent.commands.base import (
    CommandFailed,
    Implementation,
    Invocation,
    Outputs,
)
from conformance.agent.faults import register
from conformance.usp import errors

__all__ = ["CONTROLLER_SCHEDULE_TIMER", "SEND_ON_BOARD_REQUEST"]

register("onboard.not_sent", "TP-469 1.60",
         "answers SendOnBoardRequest() without sending the OnBoardRequest notification")


def send_on_board_request(inv: Invocation) -> Outputs:
    """Controller.{i}.SendOnBoardRequest(): OnBoardRequest Notify to that Controller."""
    notes = inv.notifications
    if notes is None:
        raise CommandFailed(errors.COMMAND_FAILURE, "this agent runs without notifications")
    if not inv.fault("onboard.not_sent"):
        notes.on_board_request(inv.obj_path)  # clears OnBoardingComplete too (R-NOT.5)
    return {}


def controller_schedule_timer(inv: Invocation) -> Outputs:
    """Controller.{i}.ScheduleTimer() (obsoleted): Timer! after DelaySeconds."""
    services = inv.services
    delay = inv.int_arg("DelaySeconds")
    obj_path, key, state = inv.obj_path, inv.command_key, inv.state

    async def timer() -> None:
        await base.sleep(delay)
        if state.notifications is not None and state.store.exists(obj_path):
            state.notifications.event(obj_path, "Timer!", {"CommandKey": key})

    services.run_async(timer, name=f"timer {obj_path}")
    return {}


SEND_ON_BOARD_REQUEST = Implementation(send_on_board_request,
                                       notes="OnBoardRequest through the notification engine")
CONTROLLER_SCHEDULE_TIMER = Implementation(controller_schedule_timer,
                                           notes="obsoleted command; raises Timer! when due")
