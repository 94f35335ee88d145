"""The results of a conformance run: what every reporter consumes.

The case engine fills a :class:`RunResult` as cases finish (through pytest
hooks); reporters (HTML self-assessment, JSON summary, JUnit, Allure) only
read it. It round-trips through JSON (``results.json``) so that
``usp-conformance report`` can re-render reports later.

Verdicts follow TP-469: ``pass``, ``fail`` (the EUT broke a metric),
``skip`` (not applicable: the Feature ID is named in ``reason``), ``error``
(the suite or the setup broke, never an EUT failure), plus ``warn`` (passed,
with SHOULD-level observations).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["pass", "fail", "skip", "error", "warn"]
VERDICTS: tuple[str, ...] = ("pass", "fail", "skip", "error", "warn")
FORMAT_VERSION = 1


@dataclass
class MetricResult:
    """One numbered TP-469 test metric of a case."""

    number: int
    text: str
    verdict: Literal["pass", "fail", "not_checked"] = "not_checked"
    expected: Any = None        # JSON-able: what the case expected
    observed: Any = None        # JSON-able: what the EUT did
    message: str = ""           # one line: why it failed


@dataclass
class CaseResult:
    """The verdict of one case with its evidence."""

    case_id: str                # "1.1" or "X-SMM-3"
    title: str
    section: str                # "1 Messages and Path Names", or a project section name
    functionality: str          # "mandatory" | "conditional" | "deprecated"
    verdict: Verdict
    feature_ids: list[int] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    reason: str = ""            # skip/error reason, or the failed metric in one line
    metrics: list[MetricResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)         # rendered Msgs, in order
    timeline: list[dict[str, Any]] = field(default_factory=list)  # excerpt, Entry.to_json()
    alternates: dict[str, str] = field(default_factory=dict)   # alternate elements used
    mtp: str = ""
    duration: float = 0.0       # seconds

    @property
    def failed_metrics(self) -> list[MetricResult]:
        return [m for m in self.metrics if m.verdict == "fail"]


@dataclass
class EUTInfo:
    """TP-469 "Required EUT Information" plus what identifies the run."""

    name: str = ""
    endpoint_id: str = ""
    manufacturer: str = ""
    model: str = ""
    firmware_version: str = ""
    firmware_banks: int | None = None
    feature_ids: list[int] = field(default_factory=list)
    alternates: dict[str, str] = field(default_factory=dict)
    mtps: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    """Everything a report shows."""

    eut: EUTInfo = field(default_factory=EUTInfo)
    cases: list[CaseResult] = field(default_factory=list)
    started: str = ""           # ISO 8601 UTC
    finished: str = ""
    suite_version: str = ""
    tp469_version: str = "1.4.0"
    command: str = ""

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICTS}
        for case in self.cases:
            out[case.verdict] += 1
        return out

    def by_section(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for case in self.cases:
            out.setdefault(case.section, {v: 0 for v in VERDICTS})[case.verdict] += 1
        return out

    @property
    def exit_status(self) -> int:
        """0 all applicable cases passed, 1 an EUT failure, 2 a suite/setup error."""
        counts = self.counts()
        if counts["error"]:
            return 2
        return 1 if counts["fail"] else 0

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported results format {data.get('format')!r}")
        cases = []
        for c in data.get("cases", []):
            c = dict(c)
            if c.get("verdict") not in VERDICTS:
                raise ValueError(f"case {c.get('case_id')!r}: unknown verdict {c.get('verdict')!r}")
            c["metrics"] = [MetricResult(**m) for m in c.get("metrics", [])]
            cases.append(CaseResult(**c))
        return cls(eut=EUTInfo(**data.get("eut", {})), cases=cases,
                   **{k: data[k] for k in ("started", "finished", "suite_version",
                                           "tp469_version", "command") if k in data})
