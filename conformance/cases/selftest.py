"""Selftest: prove that every case can pass and can fail (the kill matrix).

Each case runs against the clean reference agent (it must PASS) and against
the agent with each fault its ``killed_by`` names (it must FAIL on the metric
given there: a fail on another metric, a pass, or an error is a selftest
failure). One agent is started per fault set; the rows are written as JSON
and printed as a table by ``usp-conformance selftest``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from conformance.cases.environment import BuiltinSettings, RunEnvironment
from conformance.cases.runner import CaseRunner
from conformance.cases.schema import Case


@dataclass(frozen=True)
class Row:
    """One run of the matrix."""

    case_id: str
    fault: str | None           # None: the clean agent
    expected: str               # "pass", or "fail@<metric>"
    verdict: str
    failed_metric: int | None
    reason: str

    @property
    def ok(self) -> bool:
        if self.fault is None:
            return self.verdict in ("pass", "warn")
        return self.verdict == "fail" and self.expected == f"fail@{self.failed_metric}"


async def run_matrix(cases: Sequence[Case], *, mtp: str = "mqtt",
                     response_timeout: float = 3.0) -> list[Row]:
    """Run the clean pass and every (case, fault) pair; rows in case order."""
    plan: dict[str | None, list[Case]] = {None: list(cases)}
    for case in cases:
        for fault in case.killed_by:
            plan.setdefault(fault, []).append(case)
    rows: list[Row] = []
    for fault, group in plan.items():
        settings = BuiltinSettings(mtp=mtp, faults=(fault,) if fault else (),
                                   response_timeout=response_timeout,
                                   notification_timeout=max(response_timeout, 5.0))
        async with RunEnvironment(settings) as run:
            for case in group:
                result = await CaseRunner(case, run.environment).run()
                failed = result.failed_metrics
                rows.append(Row(
                    case.case_id, fault,
                    "pass" if fault is None else f"fail@{case.killed_by[fault]}",
                    result.verdict, failed[0].number if failed else None, result.reason))
    order = {c.case_id: i for i, c in enumerate(cases)}
    rows.sort(key=lambda r: (order[r.case_id], r.fault or ""))
    return rows


def table(rows: Sequence[Row]) -> str:
    """The kill matrix as text."""
    lines = [f"{'case':8s} {'fault':34s} {'expected':10s} {'observed':12s} ok"]
    for r in rows:
        observed = r.verdict + (f"@{r.failed_metric}" if r.failed_metric is not None else "")
        lines.append(f"{r.case_id:8s} {r.fault or '(clean)':34s} {r.expected:10s} "
                     f"{observed:12s} {'yes' if r.ok else 'NO'}")
    bad = sum(not r.ok for r in rows)
    lines.append(f"{len(rows)} runs, {bad} not as expected")
    return "\n".join(lines)


def write_json(rows: Sequence[Row], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{**asdict(r), "ok": r.ok} for r in rows], indent=1) + "\n")
    return path
