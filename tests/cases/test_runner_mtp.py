"""MTP-level steps (TP-469 sections 6, 7, 11): expect_mtp / expect_no_mtp on the timeline,
``mtps:`` tokens and ``requires: [tls]`` applicability, against the built-in agent."""

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


def _case(tmp_path: Path, body: str, head: str = "") -> Path:
    path = tmp_path / "X-M-1-mtp.yaml"
    path.write_text(textwrap.dedent("""\
        id: X-M-1
        title: mtp steps
        purpose: engine test
        functionality: mandatory
        """) + head + textwrap.dedent(body))
    return path


def _run(path: Path, mtp: str = "mqtt") -> CaseResult:
    case = load_case(path)

    async def main() -> CaseResult:
        async with RunEnvironment(BuiltinSettings(mtp=mtp, response_timeout=5.0)) as run:
            return await CaseRunner(case, run.environment).run()
    return asyncio.run(main())


RECONNECT = """
metrics: {1: CONNECT, 2: SUBSCRIBE after it, 3: quiet}
steps:
  - expect_mtp: {event: mqtt.CONNECT, from: run, match: {protocol_level: 5}}
  - python: {action: close_connection}
  - expect_mtp:
      event: mqtt.CONNECT
      match: {protocol_level: PROTOCOL, properties: {user_properties: {$contains: [[usp-endpoint-id, "{agent.endpoint_id}"]]}}}
      capture_time: connected
      metrics: [1]
  - expect_mtp:
      event: mqtt.SUBSCRIBE
      match: {subscriptions: {$contains: [{topic_filter: {$startswith: usp/agent/}}]}}
      timing: {since: connected, max: 5, metrics: [2]}
  - expect_mtp: {event: mqtt.PUBLISH, match: {topic: usp/controller/primary}}  # connect Record
  - expect_no_mtp: {event: mqtt.PUBLISH, for: 0.3, metrics: [3]}
"""



@pytest.mark.parametrize("level, verdict", [(5, "pass"), (4, "fail")])
def test_expect_mtp_matches_the_decoded_packet(tmp_path, level, verdict):
    result = _run(_case(tmp_path, RECONNECT.replace("PROTOCOL", str(level))))
    assert result.verdict == verdict, result.reason
    if verdict == "fail":
        failed = result.failed_metrics[0]
        assert failed.number == 1 and "no mqtt.CONNECT (in) matching" in failed.message
        assert failed.observed[0]["protocol_level"] == 5  # what was seen instead


def test_expect_no_mtp_fails_on_a_matching_event(tmp_path):
    body = """
    metrics: {1: no PUBLISH}
    steps:
      - send: {get: {param_paths: [Device.LocalAgent.EndpointID]}}
      - expect_no_mtp: {event: mqtt.PUBLISH, from: case, for: 2, metrics: [1]}
    """
    result = _run(_case(tmp_path, body))
    assert (result.verdict, result.failed_metrics[0].number) == ("fail", 1)
    assert result.failed_metrics[0].observed["topic"] == "usp/controller/primary"


@pytest.mark.parametrize("head, mtp, applies", [
    ("mtps: [mqtt]\n", "mqtt311", True),
    ("mtps: [mqtt5]\n", "mqtt311", False),
    ("mtps: [mqtt311]\n", "mqtt", False),
    ("mtps: [websocket]\n", "websocket-server", False),
    ("requires: [tls]\n", "mqtt", False),
])
def test_mtp_tokens_and_requirements(tmp_path, head, mtp, applies):
    body = """
    metrics: {1: answered}
    steps:
      - send: {get: {param_paths: [Device.LocalAgent.EndpointID]}}
        expect: {response: {get_resp: {}}, metrics: [1]}
    """
    result = _run(_case(tmp_path, body, head), mtp=mtp)
    assert result.verdict == ("pass" if applies else "skip"), result.reason
    if not applies:
        assert result.reason.startswith("not applicable")


@pytest.mark.parametrize("body, message", [
    ("metrics: {1: m}\nsteps:\n  - expect_mtp: {match: {}}\n", "needs 'event'"),
    ("metrics: {1: m}\nsteps:\n  - expect_mtp: {event: x, direction: up}\n", "direction is in"),
    ("metrics: {1: m}\nsteps:\n  - expect_no_mtp: {event: x}\n", "needs 'for'"),
    ("metrics: {1: m}\nsteps:\n  - expect_mtp: {event: x, from: later}\n",
     "refers to the time 'later'"),
    ("mtps: [carrier-pigeon]\nmetrics: {1: m}\nsteps: []\n", "mtps is a list of"),
    ("requires: [ipv6]\nmetrics: {1: m}\nsteps: []\n", "requires is a list of"),
])
def test_mtp_steps_are_validated(tmp_path, body, message):
    with pytest.raises(CaseSchemaError, match=message):
        load_case(_case(tmp_path, body))
