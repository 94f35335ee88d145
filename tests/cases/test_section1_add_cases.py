"""TP-469 cases 1.2 to 1.10 (the Add message) against the built-in reference Agent.

Each case file must pass against the clean Agent and fail, with a ``fail``
verdict (never ``error``) and on the metric the fault breaks, against the
Agent with a named fault switched on. The cases run in-process through the
engine (loader, RunEnvironment, CaseRunner), one Agent per fault set. After
every run the Agent must hold nothing the cases created: their cleanup uses
search paths, so it also removes what a faulty Agent created by mistake.
Requirements exercised: R-ADD.0, R-ADD.1, R-ADD.3, R-ADD.5, R-MSG.0, R-MSG.3.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from conformance.cases.environment import BuiltinSettings, RunEnvironment
from conformance.cases.loader import load_case
from conformance.cases.runner import CaseRunner
from conformance.cases.schema import Case
from conformance.report.model import CaseResult
from conformance.usp import messages

SECTION = Path(__file__).resolve().parents[2] / "testcases" / "01-messages-and-path-names"
ADD_IDS = tuple(f"1.{n}" for n in range(1, 11))          # TP-469 1.1-1.10: the Add cases
MINE = ADD_IDS[1:]                                          # 1.2-1.10: this file's cases
#: Subscription IDs the cases send; none may survive a run.
SUBSCRIPTION_IDS = {"add2", "add3", "add4", "add51", "add52", "add61", "add62",
                    "add71", "add72", "add8", "add91"}

#: (case id, fault or None, expected verdict, expected first failed metric): the clean
#: runs, every ``killed_by`` entry of the case files, and one unrelated fault that must
#: not change 1.5's verdict.
MATRIX: list[tuple[str, str | None, str, int | None]] = [
    *((case_id, None, "pass", None) for case_id in MINE),
    *((path.name.split("-", 1)[0], fault, "fail", metric)
      for path in sorted(SECTION.glob("1.*.yaml"))
      if path.name.split("-", 1)[0] in MINE
      for fault, metric in load_case(path).killed_by.items()),
    ("1.5", "add.partial_commit", "pass", None),
]
#: Faults that silence the Agent: short response timeouts, no state check afterwards.
SILENT = {"msg.no_response"}


def _case_files() -> dict[str, Path]:
    """Case id -> file for the Add cases in the section directory."""
    out: dict[str, Path] = {}
    for path in SECTION.glob("1.*.yaml"):
        case_id = path.name.split("-", 1)[0]
        if case_id in ADD_IDS:
            out[case_id] = path
    return out


# --- running ----------------------------------------------------------------------------


async def _leftovers(env: RunEnvironment) -> list[str]:
    """Subscriptions and BootParameter entries the cases may have left behind."""
    primary = env.controllers["primary"]
    reply = await primary.request(messages.request("get", {"param_paths": [
        "Device.LocalAgent.Subscription.", "Device.LocalAgent.Controller.*.BootParameter."]}),
        timeout=5.0)
    body = messages.to_mapping(reply)["body"]["response"]["get_resp"]
    found = []
    for req in body["req_path_results"]:
        for res in req["resolved_path_results"]:
            # relative keys, or absolute ones from a faulty Get (get.absolute_param_keys)
            ids = {v for k, v in res["result_params"].items() if k.split(".")[-1] == "ID"}
            if "BootParameter" in res["resolved_path"] or ids & SUBSCRIPTION_IDS:
                found.append(res["resolved_path"])
    return found


async def _run_fault(fault: str | None, case_ids: Iterable[str]) -> tuple[dict[str, CaseResult], list[str]]:
    files = _case_files()
    timeout = 1.0 if fault in SILENT else 5.0
    settings = BuiltinSettings(mtp="mqtt", faults=[fault] if fault else [], response_timeout=timeout)
    results: dict[str, CaseResult] = {}
    async with RunEnvironment(settings) as env:
        for case_id in sorted(set(case_ids), key=lambda c: int(c.split(".")[1])):
            results[case_id] = await CaseRunner(load_case(files[case_id]), env.environment).run()
        left = [] if fault in SILENT else await _leftovers(env)
    return results, left


class _Runs:
    """Runs each fault set once (all its cases in one Agent) and remembers the results."""

    def __init__(self) -> None:
        self._done: dict[str | None, tuple[dict[str, CaseResult], list[str]]] = {}

    def get(self, fault: str | None) -> tuple[dict[str, CaseResult], list[str]]:
        if fault not in self._done:
            wanted = [c for c, f, _, _ in MATRIX if f == fault]
            self._done[fault] = asyncio.run(_run_fault(fault, wanted))
        return self._done[fault]


@pytest.fixture(scope="module")
def runs() -> _Runs:
    return _Runs()


def _explain(result: CaseResult) -> str:
    return json.dumps({"verdict": result.verdict, "reason": result.reason,
                       "failed": [m.number for m in result.failed_metrics],
                       "warnings": result.warnings}, indent=1)


# --- the case files -----------------------------------------------------------------------


def test_add_cases_1_1_to_1_10_exist_and_load() -> None:
    files = _case_files()
    assert sorted(files, key=lambda c: int(c.split(".")[1])) == list(ADD_IDS)
    for case_id, path in files.items():
        case = load_case(path)
        assert case.case_id == case_id
        assert path.name.startswith(f"{case_id}-") and path.suffix == ".yaml"
        assert case.section == "1 Messages and Path Names"
        assert any(r.startswith("R-ADD.") for r in case.requirements), case_id
        assert sorted(case.metrics) == list(range(1, len(case.metrics) + 1)), case_id
        assert case.cleanup, f"{case_id} has no cleanup"


@pytest.mark.parametrize("case_id", MINE)
def test_functionality_tags(case_id: str) -> None:
    # TP-469: 1.2-1.9 are Mandatory, 1.10 needs Feature 31 (nested multi-instance objects).
    case = load_case(_case_files()[case_id])
    if case_id == "1.10":
        assert (case.functionality, case.feature_ids) == ("conditional", (31,))
    else:
        assert (case.functionality, case.feature_ids) == ("mandatory", ())


@pytest.mark.parametrize("case_id", MINE)
def test_cleanup_uses_no_captured_variables(case_id: str) -> None:
    # A cleanup Delete with an unresolved {variable} would be a suite error after a
    # failed step; search paths work whatever the procedure managed to do.
    case: Case = load_case(_case_files()[case_id])
    for step in case.cleanup:
        assert step.action == "send" and "delete" in step.body
        for path in step.body["delete"]["obj_paths"]:
            assert "{" not in path and "[" in path, path


def test_metric_texts_are_not_tp469_prose(reference_dir: Path) -> None:
    # Our own words: no metric or purpose sentence is copied from the test plan.
    plan = " ".join((reference_dir / "tp-469" / "01-messages-and-path-names.md")
                    .read_text(encoding="utf-8").split())
    for case_id in MINE:
        case = load_case(_case_files()[case_id])
        for text in [case.purpose, *case.metrics.values()]:
            words = text.split()
            for i in range(max(0, len(words) - 11)):
                assert " ".join(words[i:i + 12]) not in plan, (case_id, text)


# --- verdicts -----------------------------------------------------------------------------


def _label(row: tuple[str, str | None, str, int | None]) -> str:
    case_id, fault, verdict, metric = row
    return f"{case_id}-{fault or 'clean'}-{verdict}" + (f"-m{metric}" if metric else "")


@pytest.mark.parametrize("row", MATRIX, ids=[_label(r) for r in MATRIX])
def test_case_verdict(runs: _Runs, row: tuple[str, str | None, str, int | None]) -> None:
    case_id, fault, verdict, metric = row
    results, _ = runs.get(fault)
    result = results[case_id]
    assert result.verdict == verdict, _explain(result)
    failed = [m.number for m in result.failed_metrics]
    if metric is None:
        assert failed == [] and result.warnings == [], _explain(result)
        assert all(m.verdict == "pass" for m in result.metrics), _explain(result)
    else:
        assert failed and failed[0] == metric, _explain(result)
        first = result.failed_metrics[0]
        assert first.message and first.observed is not None
        assert result.reason.startswith(f"metric {metric}:")


@pytest.mark.parametrize("fault", sorted({f for _, f, _, _ in MATRIX if f not in SILENT},
                                         key=lambda f: f or ""))
def test_cleanup_leaves_nothing_behind(runs: _Runs, fault: str | None) -> None:
    # Also with faults that create objects they should not (add.partial_commit,
    # add.ignore_required): the cases' cleanup removes them.
    _, left = runs.get(fault)
    assert left == []


def test_cases_record_their_messages(runs: _Runs) -> None:
    results, _ = runs.get(None)
    for case_id in MINE:
        sent = [m for m in results[case_id].messages if m.startswith("-> primary")]
        answered = [m for m in results[case_id].messages if m.startswith("<- primary")]
        assert sent and len(answered) >= 2, case_id  # the Add and the Get were answered
        assert any("ADD" in m for m in sent), case_id
