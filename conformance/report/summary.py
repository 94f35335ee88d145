"""The JSON summary of a run (``summary.json``) and what all reporters share.

The summary is the small machine-readable answer to "how did it go":
counts overall and per TP-469 section, the exit status, the cases that
failed or errored with a one-line reason each, and which EUT/firmware was
run. The module also holds the pieces every reporter needs: the
self-assessment :data:`NOTICE`, report ordering of sections and cases,
one-line reasons, JSON dumping that never fails on odd values, and atomic
file writes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from conformance.report.model import CaseResult, RunResult

#: Title of every report.
TITLE = "USP Agent self-assessment against TP-469"

#: Said in every report: the suite does not certify anything (TP-469 notice).
NOTICE = (
    "This report is a self-assessment of a USP Agent, produced by usp-conformance "
    "by running test procedures modeled on Broadband Forum TP-469. It is not a "
    "certification and does not state that the device is certified or compliant: "
    "only Test Agencies authorized by the Broadband Forum can certify products "
    "against TP-469."
)

#: Added to reports that list only the failures (TP-469 allows only those to be shared).
LIMITED_NOTICE = (
    "This is a limited report: it only details the test cases in which the device "
    "failed a test metric. Cases with other verdicts are not described."
)

#: Verdicts in display order.
VERDICT_ORDER: tuple[str, ...] = ("pass", "warn", "fail", "error", "skip")

SUMMARY_FORMAT = 1
REASON_MAX = 240

_CHUNKS = re.compile(r"([0-9]+)")
_LEADING_NUMBER = re.compile(r"^\s*([0-9]+)")
_SPACES = re.compile(r"\s+")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key comparing digit runs as numbers ("1.2" < "1.10")."""
    return tuple((0, int(part)) if "0" <= part[0] <= "9" else (1, part)
                 for part in _CHUNKS.split(str(text)) if part)


def section_key(section: str) -> tuple[int, int, tuple[tuple[int, int | str], ...]]:
    """TP-469 sections in number order first, then project sections by name."""
    match = _LEADING_NUMBER.match(str(section))
    if match:
        return (0, int(match.group(1)), natural_key(section))
    return (1, 0, natural_key(section))


def ordered_sections(run: RunResult) -> dict[str, dict[str, int]]:
    """``run.by_section()`` in report order."""
    per = run.by_section()
    return {name: per[name] for name in sorted(per, key=section_key)}


def ordered_cases(cases: list[CaseResult]) -> list[CaseResult]:
    """Cases by section, then by case id (natural order)."""
    return sorted(cases, key=lambda c: (section_key(c.section), natural_key(c.case_id)))


def one_line(text: object, limit: int = REASON_MAX) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``limit`` characters."""
    flat = _SPACES.sub(" ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def case_reason(case: CaseResult) -> str:
    """One line saying why a case did not pass: its reason, else its first failed metric."""
    if str(case.reason or "").strip():
        return one_line(case.reason)
    for metric in case.failed_metrics:
        return one_line(f"metric {metric.number}: {metric.message or metric.text}")
    return ""


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def dumps_json(data: Any, *, indent: int | None = 2) -> str:
    """JSON text of ``data``; non-JSON values become hex (bytes) or ``repr``.

    Strings that cannot be encoded as UTF-8 (lone surrogates, possible in
    EUT-derived text) force ``\\u`` escapes so that the text stays writable
    and still round-trips through ``json.loads``.
    """
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=_json_default)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, indent=indent, ensure_ascii=True, default=_json_default)
    return text


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename.

    Readers never see a half-written file; parents are created. Characters
    UTF-8 cannot encode are written as backslash escapes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8", errors="backslashreplace")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def summary(run: RunResult) -> dict[str, Any]:
    """The summary of ``run`` as a JSON-able dict (see the module docstring)."""
    counts = run.counts()
    eut = run.eut
    return {
        "format": SUMMARY_FORMAT,
        "title": TITLE,
        "notice": NOTICE,
        "tp469_version": run.tp469_version,
        "suite_version": run.suite_version,
        "started": run.started,
        "finished": run.finished,
        "eut": {
            "name": eut.name,
            "endpoint_id": eut.endpoint_id,
            "manufacturer": eut.manufacturer,
            "model": eut.model,
            "firmware_version": eut.firmware_version,
            "firmware_banks": eut.firmware_banks,
            "feature_ids": list(eut.feature_ids),
        },
        "exit_status": run.exit_status,
        "counts": {**{v: counts[v] for v in VERDICT_ORDER}, "total": len(run.cases)},
        "sections": {
            name: {**{v: per[v] for v in VERDICT_ORDER}, "total": sum(per.values())}
            for name, per in ordered_sections(run).items()
        },
        "failed": [
            {"case_id": c.case_id, "title": c.title, "section": c.section,
             "verdict": c.verdict, "reason": case_reason(c)}
            for c in ordered_cases(run.cases) if c.verdict in ("fail", "error")
        ],
    }


def write_summary(run: RunResult, path: Path) -> Path:
    """Write :func:`summary` of ``run`` to ``path`` atomically; returns the path."""
    return write_text_atomic(Path(path), dumps_json(summary(run)) + "\n")
