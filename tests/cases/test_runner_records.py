"""Record-level steps (TP-469 sections 2 and 3): send_record, resend, expect_record,
expect_no_record and the ``session_context`` controller setting, against the built-in agent
over real sockets (one agent for the whole module)."""

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


def _case(tmp_path: Path, body: str, name: str = "X-R-1") -> Path:
    path = tmp_path / f"{name}-records.yaml"
    path.write_text(textwrap.dedent(f"""\
        id: {name}
        title: record steps
        purpose: engine test
        functionality: mandatory
        """) + textwrap.dedent(body))
    return path


def _run_all(paths: list[Path], mtp: str = "mqtt") -> list[CaseResult]:
    cases = [load_case(p) for p in paths]

    async def main() -> list[CaseResult]:
        async with RunEnvironment(BuiltinSettings(mtp=mtp, response_timeout=3.0)) as run:
            return [await CaseRunner(c, run.environment).run() for c in cases]
    return asyncio.run(main())


GET = "{get: {param_paths: [Device.DeviceInfo.ModelName]}}"

ADDRESSING = f"""
metrics: {{1: wrong to_id ignored, 2: answered}}
steps:
  - send_record: {{to_id: "proto::somebody-else", payload: {GET}}}
    expect: {{none: {{probe: {GET}}}, metrics: [1]}}
  - send_record: {{payload: {GET}}}
    expect: {{response: {{get_resp: {{}}}}, metrics: [2]}}
"""

# The agent's answer in a session the case wrote: same session id, sequence_id 1 (R-E2E.14)
SESSION = f"""
metrics: {{1: answered in session, 2: duplicates ignored, 3: record view}}
steps:
  - send_record:
      session_context: {{sequence_id: 1, expected_id: 1}}
      payload: {GET}
    msg_id_as: first
    expect: {{response: {{get_resp: {{}}}}, metrics: [1]}}
  - expect_record:
      match:
        type: session_context
        from_id: "{{agent.endpoint_id}}"
        session_context: {{session_id: "{{session.id}}", sequence_id: 1, payload_count: 1}}
        msg: {{header: {{msg_id: "{{first}}"}}}}
      metrics: [3]
      capture: {{answer: session_context.payload_hex}}
  - resend: {{times: 2}}
    expect: {{none: {{probe: {GET}}}, metrics: [2]}}
"""

CONTROLLER_SESSION = f"""
metrics: {{1: session answer}}
steps:
  - controller: {{session_context: true}}
  - send: {GET}
    expect: {{response: {{get_resp: {{}}}}}}
  - expect_record:
      from: case
      match:
        type: session_context
        session_context: {{session_id: "{{sent.record.session_context.session_id}}"}}
        msg: {{body: {{response: {{get_resp: {{}}}}}}}}
      metrics: [1]
"""

# A malformed Record is ignored; then no Record at all arrives; the EUT still answers.
MALFORMED = f"""
metrics: {{1: nothing back, 2: still answers}}
steps:
  - send_record: {{raw: "ff ff ff 01"}}
  - send_record: {{payload_hex: "ff ff ff 01"}}
  - expect_no_record: {{match: {{}}, for: 0.5, metrics: [1]}}
  - send: {GET}
    expect: {{response: {{get_resp: {{}}}}, metrics: [2]}}
"""

# A check that cannot hold must fail (the steps can fail).
FAILING = f"""
metrics: {{1: wrong sequence id}}
steps:
  - send_record:
      session_context: {{session_id: "{{session.other_id}}"}}
      payload: {GET}
  - expect_record:
      match: {{session_context: {{sequence_id: 7}}}}
      within: 1
      metrics: [1]
"""

NO_RECORD_FAILS = f"""
metrics: {{1: nothing comes}}
steps:
  - send: {GET}
  - expect_no_record: {{match: {{msg: {{body: {{response: {{}}}}}}}}, for: 2, metrics: [1]}}
"""


def test_record_steps_against_the_reference_agent(tmp_path):
    paths = [_case(tmp_path, body, f"X-R-{n}") for n, body in enumerate(
        (ADDRESSING, SESSION, CONTROLLER_SESSION, MALFORMED, FAILING, NO_RECORD_FAILS), 1)]
    addressing, sess, ctrl_sess, malformed, failing, no_record = _run_all(paths)
    assert addressing.verdict == "pass", addressing.reason
    assert sess.verdict == "pass", sess.reason
    assert ctrl_sess.verdict == "pass", ctrl_sess.reason
    assert malformed.verdict == "pass", malformed.reason
    assert failing.verdict == "fail" and failing.failed_metrics[0].number == 1
    assert "no matching Record" in failing.reason
    assert no_record.verdict == "fail" and no_record.failed_metrics[0].number == 1


@pytest.mark.parametrize("body, problem", [
    ('send_record: {raw: "zz"}', "hexadecimal"),
    ('send_record: {raw: "00", to_id: x}', "whole Record"),
    ('send_record: {payload_hex: "0g"}', "hexadecimal"),
    ("send_record: {payload_hex: '00', payload: {get: {param_paths: [Device.]}}}", "either"),
    ("send_record: {session_context: {sequence: 1}}", "session_context field"),
    ("send_record: {payload_security: TLS13}", "PLAINTEXT or TLS12"),
    ("send_record: {payload: none}\n    expect: {none: {}}", "needs a payload"),
    ("expect_record: {match: {}, from: later}", "'from' is send"),
    ("expect_no_record: {match: {}}", "'for'"),
    ("resend: {times: two}", "times"),
])
def test_record_steps_are_validated(tmp_path, body, problem):
    path = _case(tmp_path, f"metrics: {{1: x}}\nsteps:\n  - {body}\n")
    with pytest.raises(CaseSchemaError, match=problem):
        load_case(path)


def test_e2e_cases_are_not_applicable_without_e2e_credentials(tmp_path):
    """A run that has no E2E PKI (an external EUT) skips Feature 23 cases, never errors."""
    from conformance.cases.runner import Environment
    from conformance.controller.controller import Controller
    from conformance.mtp.timeline import Timeline

    path = _case(tmp_path, """
        metrics: {1: x}
        steps:
          - controller: {e2e_security: {payload_security: TLS12}}
          - send: {get: {param_paths: [Device.]}}
            expect: {response: {get_resp: {}}, metrics: [1]}
        """)
    env = Environment(controllers={"primary": Controller("proto::c")}, agent_id="proto::a",
                      timeline=Timeline())
    result = asyncio.run(CaseRunner(load_case(path), env).run())
    assert result.verdict == "skip" and "E2E credentials" in result.reason
