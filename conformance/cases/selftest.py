"""Selftest: prove that every case can pass and can fail (the kill matrix).

Each case runs against the clean reference agent (it must PASS) and against
the agent with each fault its ``killed_by`` names (it must FAIL on the metric
given there: a fail on another metric, a pass, or an error is a selftest
failure). One agent is started per fault set (several for the clean run), a few
at a time; the rows are written as JSON and printed as a table by
``usp-conformance selftest``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from conformance.cases.environment import BuiltinSettings, RunEnvironment
from conformance.cases.runner import CaseRunner, SuiteError
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
        if self.verdict == "skip":  # not applicable over this MTP (e.g. one connection only)
            return True
        if self.fault is None:
            return self.verdict in ("pass", "warn")
        return self.verdict == "fail" and self.expected == f"fail@{self.failed_metric}"


async def run_matrix(cases: Sequence[Case], *, mtp: str = "mqtt",
                     response_timeout: float = 3.0, jobs: int = 4,
                     chunk: int = 8, faults: bool = True) -> list[Row]:
    """Run the clean pass and every (case, fault) pair; rows in case order.

    Each fault set gets its own agent (and the clean run one agent per ``chunk``
    cases); up to ``jobs`` agents run at once, since TP-469's timing cases spend
    most of their time waiting for the EUT.
    """
    # Cases that mostly wait (TP-469's timing procedures) get an agent each; the others
    # share one per ``chunk``. The longest groups start first, so the run ends sooner.
    # Cases that need something of their run (requires: [tls], ...) run on agents of such
    # a run.
    plan: list[tuple[str | None, frozenset[str], list[Case]]] = []
    for needs in sorted({frozenset(c.requires) for c in cases}, key=sorted):
        mine = [c for c in cases if frozenset(c.requires) == needs]
        slow = [c for c in mine if waits(c) >= SLOW]
        quick = [c for c in mine if waits(c) < SLOW]
        plan += [(None, needs, [c]) for c in slow]
        plan += [(None, needs, quick[i:i + chunk]) for i in range(0, len(quick), chunk)]
    by_fault: dict[tuple[str, frozenset[str]], list[Case]] = {}
    for case in cases if faults else ():  # faults=False: the clean runs only
        for fault in case.killed_by:
            by_fault.setdefault((fault, frozenset(case.requires)), []).append(case)
    plan += [(fault, needs, group) for (fault, needs), group in by_fault.items()]
    plan.sort(key=lambda group: -sum(waits(c) for c in group[2]))
    gate = asyncio.Semaphore(max(1, jobs))

    async def run_group(fault: str | None, needs: frozenset[str], group: list[Case]) -> list[Row]:
        settings = BuiltinSettings(mtp=mtp, faults=(fault,) if fault else (),
                                   response_timeout=response_timeout,
                                   notification_timeout=max(response_timeout, 5.0),
                                   tls="tls" in needs,
                                   absolute_time="no-absolute-time" not in needs,
                                   mtp_protects_integrity="no-mtp-integrity" not in needs)
        rows = []
        async with gate:
            try:
                async with RunEnvironment(settings) as run:
                    for case in group:
                        result = await CaseRunner(case, run.environment).run()
                        failed = result.failed_metrics
                        rows.append(Row(case.case_id, fault, _expected(case, fault),
                                        result.verdict, failed[0].number if failed else None,
                                        result.reason))
            except SuiteError as exc:  # the agent did not start: every case of it is an error
                done = {r.case_id for r in rows}
                rows += [Row(c.case_id, fault, _expected(c, fault), "error", None, str(exc))
                         for c in group if c.case_id not in done]
        return rows

    groups = await asyncio.gather(*(run_group(f, t, g) for f, t, g in plan))
    order = {c.case_id: i for i, c in enumerate(cases)}
    rows = [row for group in groups for row in group]
    rows.sort(key=lambda r: (order[r.case_id], r.fault or ""))
    return rows


#: A case expected to wait this long (seconds) runs on an agent of its own.
SLOW = 20.0


def waits(case: Case) -> float:
    """Roughly how long a case waits by its own procedure (``for``, timing windows,
    polls, TP-469 waits): used to plan the selftest, never to judge."""
    total = 0.0
    for step in (*case.setup, *case.steps):
        body = step.body if isinstance(step.body, Mapping) else {}
        total += float(body.get("for", 0) or 0) + float(body.get("seconds", 0) or 0)
        if step.action in ("expect_notification", "expect_mtp") and "timing" not in body:
            total += float(body.get("within", 0) or 0)
        timing = body.get("timing")
        if isinstance(timing, Mapping):
            total += float(timing.get("max", 0) or 0)
        poll = step.options.get("poll")
        if isinstance(poll, Mapping):
            total += float(poll.get("within", 0) or 0)
    return total


def _expected(case: Case, fault: str | None) -> str:
    return "pass" if fault is None else f"fail@{case.killed_by[fault]}"


def table(rows: Sequence[Row]) -> str:
    """The kill matrix as text."""
    lines = [f"{'case':8s} {'fault':34s} {'expected':10s} {'observed':12s} ok"]
    for r in rows:
        observed = r.verdict + (f"@{r.failed_metric}" if r.failed_metric is not None else "")
        lines.append(f"{r.case_id:8s} {r.fault or '(clean)':34s} {r.expected:10s} "
                     f"{observed:12s} {'yes' if r.ok else 'NO'}")
    bad = sum(not r.ok for r in rows)
    skipped = sum(r.verdict == "skip" for r in rows)
    lines.append(f"{len(rows)} runs, {bad} not as expected"
                 + (f", {skipped} not applicable over this MTP" if skipped else ""))
    return "\n".join(lines)


def write_json(rows: Sequence[Row], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{**asdict(r), "ok": r.ok} for r in rows], indent=1) + "\n")
    return path
