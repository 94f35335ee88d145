"""Engine steps for TP-469's timing procedures, run against the built-in agent.

``capture_time`` + ``timing`` windows (1.54, 1.59), ``respond``, the
``controller`` step holding NotifyResp (1.54, 1.56), ``expect_no_notification``
(1.53, 1.55, 1.56), ``poll`` (1.55) and ``reboot: {triggered: true}`` (1.61,
1.62). Each feature is shown to pass on a conforming agent and to fail, on the
metric it proves, when the agent misbehaves or the window is not met. The agent's
USPNotifRetryMinimumWaitInterval is lowered to 1 s so retries come quickly
(R-NOT.1: retry n waits m*k^(n-1) to m*k^n seconds, m the minimum interval and
k the multiplier, 2 by default).
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from conformance.cases.environment import BuiltinSettings, RunEnvironment
from conformance.cases.loader import load_case
from conformance.cases.runner import CaseRunner
from conformance.cases.schema import CaseSchemaError
from conformance.report.model import CaseResult

#: Watch ProvisioningCode of the primary controller with NotifRetry, retries every 1-2 s.
_SETUP = """
setup:
  - send: {set: {allow_partial: false, update_objs: [{obj_path: 'Device.LocalAgent.Controller.1.',
           param_settings: [{param: USPNotifRetryMinimumWaitInterval, value: "1"},
                            {param: ProvisioningCode, value: before}]}]}}
    expect: {response: {set_resp: {}}}
  - send: {add: {allow_partial: false, create_objs: [{obj_path: Device.LocalAgent.Subscription.,
           param_settings: [{param: ID, value: timing}, {param: Enable, value: "true"},
                            {param: NotifType, value: ValueChange}, {param: NotifRetry, value: "true"},
                            {param: ReferenceList, value: Device.LocalAgent.Controller.1.ProvisioningCode}]}]}}
    expect: {response: {add_resp: {}}}
cleanup:
  - send: {delete: {allow_partial: false, obj_paths: ['Device.LocalAgent.Subscription.[ID=="timing"].']}}
    expect: {response: {delete_resp: {}}}
  - send: {set: {allow_partial: false, update_objs: [{obj_path: 'Device.LocalAgent.Controller.1.',
           param_settings: [{param: USPNotifRetryMinimumWaitInterval, value: "5"},
                            {param: ProvisioningCode, value: ""}]}]}}
    expect: {response: {set_resp: {}}}
"""
_CHANGE = """
  - send: {set: {allow_partial: false, update_objs: [{obj_path: 'Device.LocalAgent.Controller.1.',
           param_settings: [{param: ProvisioningCode, value: after}]}]}}
    expect: {response: {set_resp: {}}}
"""
_VC = "{subscription_id: timing, value_change: {param_path: Device.LocalAgent.Controller.1.ProvisioningCode}}"


def _case(tmp_path: Path, body: str, *, name: str = "X-T-1-timing.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(f"""\
        id: {name.split('-timing')[0]}
        title: timing steps
        purpose: engine test
        functionality: mandatory
        """) + body)
    return path


def _run(path: Path, faults: tuple[str, ...] = ()) -> tuple[CaseResult, bool]:
    """Run the case; also report whether the primary controller answers Notify afterwards."""
    case = load_case(path)

    async def main() -> tuple[CaseResult, bool]:
        async with RunEnvironment(BuiltinSettings(faults=faults, response_timeout=5.0,
                                                  notification_timeout=5.0)) as run:
            result = await CaseRunner(case, run.environment).run()
            return result, run.controllers["primary"].auto_notify_resp
    return asyncio.run(main())


def _first_failed(result: CaseResult) -> int | None:
    failed = result.failed_metrics
    return failed[0].number if failed else None


RETRY_STEPS = """
metrics: {1: notified, 2: first retry in its window, 3: second retry in its window}
steps:
  - controller: {auto_notify_resp: false}
""" + _CHANGE + f"""
  - expect_notification: {{match: {_VC}, capture_time: first, metrics: [1]}}
  - expect_notification:
      match: {_VC}
      capture_time: second
      timing: {{since: first, min: 1, max: 2, tolerance: 0.5, metrics: [2]}}
  - expect_notification:
      match: {_VC}
      respond: true
      timing: {{since: second, min: {{min2}}, max: {{max2}}, tolerance: 0.5, metrics: [3]}}
"""


def _retry_case(tmp_path: Path, lo: float, hi: float) -> Path:
    return _case(tmp_path, RETRY_STEPS.replace("{min2}", str(lo)).replace("{max2}", str(hi))
                 + _SETUP)


def test_retry_windows_pass_and_the_notify_resp_setting_is_restored(tmp_path):
    # R-NOT.1: the second retry waits 2-4 s after the first.
    result, auto = _run(_retry_case(tmp_path, 2, 4))
    assert result.verdict == "pass", result.reason
    assert auto is True  # the controller step is undone when the case ends
    assert any(m.startswith("-> notify_resp") for m in result.messages)


def test_a_retry_outside_its_window_fails_the_timing_metric(tmp_path):
    # notify.retry_wrong_interval retries every minimum interval: the second retry is early.
    result, _ = _run(_retry_case(tmp_path, 2, 4), faults=("notify.retry_wrong_interval",))
    assert (result.verdict, _first_failed(result)) == ("fail", 3)
    assert "outside 2-4s after 'second'" in result.reason


def test_a_window_that_closes_stops_the_wait(tmp_path):
    # Nothing can arrive 0-0.1 s after the first retry: the step gives up when the window
    # closes (not after the notification timeout) and fails the timing metric.
    result, _ = _run(_retry_case(tmp_path, 0, 0.1))
    assert (result.verdict, _first_failed(result)) == ("fail", 3)
    assert "timing window closed" in result.metrics[2].message
    assert result.duration < 5.0 + 4.0


def test_no_retry_fails_the_window(tmp_path):
    result, _ = _run(_retry_case(tmp_path, 2, 4), faults=("notify.no_retry",))
    assert (result.verdict, _first_failed(result)) == ("fail", 2)


NO_NOTIFY = """
metrics: {1: no Notify while nothing changes, 2: a Notify once the value changes}
steps:
  - expect_no_notification: {match: """ + _VC + """, for: 0.5, metrics: [1]}
""" + _CHANGE + """
  - expect_no_notification: {match: """ + _VC + """, for: 2, metrics: [2]}
"""


def test_expect_no_notification_passes_quietly_and_fails_on_a_notify(tmp_path):
    result, _ = _run(_case(tmp_path, NO_NOTIFY + _SETUP))
    assert result.metrics[0].verdict == "pass"
    assert (result.verdict, _first_failed(result)) == ("fail", 2)
    assert result.metrics[1].message == "the EUT sent a Notify although none is due"


IGNORED = """
metrics: {1: notified, 2: no retry after the allowed period}
steps:
  - controller: {auto_notify_resp: false}
""" + _CHANGE + f"""
  - expect_notification: {{match: {_VC}, capture_time: first, metrics: [1]}}
  - expect_no_notification:
      match: {_VC}
      for: 2.5
      ignore_before: {{since: first, seconds: 30}}
      metrics: [2]
"""


def test_ignore_before_lets_allowed_retries_pass(tmp_path):
    result, _ = _run(_case(tmp_path, IGNORED + _SETUP))
    assert result.verdict == "pass", result.reason


POLL = """
metrics: {1: the subscription goes away when its TimeToLive has passed}
steps:
  - send: {add: {allow_partial: false, create_objs: [{obj_path: Device.LocalAgent.Subscription.,
           param_settings: [{param: ID, value: ttl}, {param: NotifType, value: ValueChange},
                            {param: ReferenceList, value: Device.LocalAgent.EndpointID},
                            {param: TimeToLive, value: "1"}]}]}}
    capture_time: added
    expect: {response: {add_resp: {}}}
  - send: {get_instances: {obj_paths: ['Device.LocalAgent.Subscription.[ID=="ttl"].']}}
    poll: {since: added, within: WITHIN, interval: 0.2}
    expect:
      response: {get_instances_resp: {req_path_results: [{curr_insts: {$absent: true}}]}}
      metrics: [1]
cleanup:
  - send: {delete: {allow_partial: true, obj_paths: ['Device.LocalAgent.Subscription.[ID=="ttl"].']}}
"""


@pytest.mark.parametrize("within, faults, verdict", [
    (4, (), "pass"),                       # TimeToLive 1 s: gone well within 4 s
    (0.3, (), "fail"),                     # asks too early: the last attempt still sees it
    (2, ("notify.ignore_ttl",), "fail"),   # never removed
])
def test_poll_until_the_expectation_holds(tmp_path, within, faults, verdict):
    result, _ = _run(_case(tmp_path, POLL.replace("WITHIN", str(within))), faults)
    assert result.verdict == verdict, result.reason
    if verdict == "fail":
        assert _first_failed(result) == 1
        assert "curr_insts" in result.metrics[0].message
    else:
        sends = [m for m in result.messages if m.startswith("-> primary") and "get_instances" in m]
        assert len(sends) >= 2  # it polled, rather than waiting the worst case once


REBOOT = """
metrics: {1: the EUT reboots and comes back, 2: it answers again}
steps:
  - send: {operate: {command: Device.Reboot(), command_key: triggered, send_resp: false}}
  - reboot: {triggered: true, within: 5, metrics: [1], capture_time: back}
  - send: {get: {param_paths: [Device.LocalAgent.EndpointID]}}
    expect: {response: {get_resp: {}}, metrics: [2]}
"""


@pytest.mark.parametrize("faults, verdict", [((), "pass"), (("reboot.ignored",), "fail")])
def test_triggered_reboot_waits_for_the_reconnect(tmp_path, faults, verdict):
    result, _ = _run(_case(tmp_path, REBOOT), faults)
    assert result.verdict == verdict, result.reason
    if verdict == "fail":
        assert _first_failed(result) == 1
        assert "did not reboot within 5s" in result.reason


@pytest.mark.parametrize("steps, message", [
    ("  - expect_notification: {match: {}, timing: {since: nowhere, max: 1}}\n",
     "refers to the time 'nowhere', which no earlier step captures"),
    ("  - expect_notification: {match: {}, timing: {since: x}}\n", "timing needs 'since'"),
    ("  - send: {get: {param_paths: [Device.]}}\n    poll: {within: 3}\n",
     "poll repeats until a response or error matches"),
    ("  - expect_no_notification: {match: {}}\n", "needs 'match' (a matcher on the Notify body) and 'for'"),
    ("  - controller: {auto_notify: false}\n", "auto_notify"),
    ("  - reboot: {triggerd: true}\n", "triggerd"),
])
def test_timing_steps_are_validated(tmp_path, steps, message):
    path = _case(tmp_path, "metrics: {1: m}\nsteps:\n" + steps)
    with pytest.raises(CaseSchemaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_case(path)


CAPTURE = """
metrics: {1: notified, 2: the captured subscription id names the subscription}
steps:
""" + _CHANGE + """
  - expect_notification:
      match: {subscription_id: {$capture: sid}, value_change: {param_value: after}}
      metrics: [1]
  - send: {get: {param_paths: ['Device.LocalAgent.Subscription.[ID=="{sid}"].ID']}}
    expect:
      response: {get_resp: {req_path_results: [{resolved_path_results: [{result_params: {ID: timing}}]}]}}
      metrics: [2]
"""


def test_capture_inside_a_notification_match(tmp_path):
    result, _ = _run(_case(tmp_path, CAPTURE + _SETUP))
    assert result.verdict == "pass", result.reason
