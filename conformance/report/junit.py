"""JUnit XML of a run (``junit.xml``), for CI dashboards.

One ``<testsuite>`` per TP-469 section (report order) and one ``<testcase>``
per case, named ``"<case id> <title>"`` with classname ``tp469.<section>``
(the section name with characters other than letters, digits, ``_`` and
``-`` turned into ``_``, so that tools do not split it at dots or spaces).
``fail`` becomes ``<failure>`` (failed metrics with expected and observed
values in the body), ``error`` becomes ``<error>``, ``skip`` becomes
``<skipped>``; ``warn`` passes with its warnings in ``<system-out>``.

EUT-derived text may hold characters XML 1.0 cannot carry at all (NUL and
most C0 controls, lone surrogates); they are written as ``\\xNN`` /
``\\uNNNN`` escapes, and ElementTree escapes the rest, so the output always
parses.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

from conformance.report.model import CaseResult, RunResult
from conformance.report.summary import (
    NOTICE,
    TITLE,
    case_reason,
    dumps_json,
    ordered_cases,
    ordered_sections,
)

# Everything outside XML 1.0's Char production.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NOT_CLASSNAME = re.compile(r"[^A-Za-z0-9_-]+")


def xml_text(value: object) -> str:
    """``value`` as text that XML 1.0 can carry (forbidden characters escaped)."""
    def esc(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return _NOT_XML_CHAR.sub(esc, str(value))


def classname(section: str) -> str:
    """``tp469.<section>`` with the section made safe for JUnit tools."""
    slug = _NOT_CLASSNAME.sub("_", str(section)).strip("_")
    return f"tp469.{slug or 'unsectioned'}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: Any) -> ET.Element:
    elem = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attrib.items()})
    if text:
        elem.text = xml_text(text)
    return elem


def _failure_body(case: CaseResult) -> str:
    lines: list[str] = []
    for metric in case.failed_metrics:
        lines.append(f"Metric {metric.number}: {metric.text}")
        if metric.message:
            lines.append(f"  why: {metric.message}")
        lines.append("  expected: " + dumps_json(metric.expected).replace("\n", "\n  "))
        lines.append("  observed: " + dumps_json(metric.observed).replace("\n", "\n  "))
    if case.reason:
        lines.append(f"Reason: {case.reason}")
    return "\n".join(lines)


def _system_out(case: CaseResult) -> str:
    lines = [f"functionality: {case.functionality}"]
    if case.feature_ids:
        lines.append("feature ids: " + ", ".join(str(f) for f in case.feature_ids))
    if case.requirements:
        lines.append("requirements: " + ", ".join(str(r) for r in case.requirements))
    if case.mtp:
        lines.append(f"mtp: {case.mtp}")
    for key, value in case.alternates.items():
        lines.append(f"alternate element: {key} -> {value}")
    lines.extend(f"warning: {w}" for w in case.warnings)
    return "\n".join(lines)


def _float(value: object) -> float:
    """A duration in seconds; anything not a finite non-negative number is 0."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _seconds(value: object) -> str:
    return f"{_float(value):.3f}"


def _testcase(parent: ET.Element, case: CaseResult) -> None:
    elem = _sub(parent, "testcase", classname=classname(case.section),
                name=f"{case.case_id} {case.title}", time=_seconds(case.duration))
    reason = case_reason(case)
    if case.verdict == "fail":
        _sub(elem, "failure", _failure_body(case), message=reason or "failed", type="fail")
    elif case.verdict == "error":
        _sub(elem, "error", case.reason, message=reason or "error", type="error")
    elif case.verdict == "skip":
        _sub(elem, "skipped", message=reason or "not applicable")
    _sub(elem, "system-out", _system_out(case))


def to_junit_xml(run: RunResult) -> str:
    """The JUnit XML document of ``run`` (with an XML declaration)."""
    counts = run.counts()
    root = ET.Element("testsuites", {
        "name": xml_text(TITLE),
        "tests": str(len(run.cases)),
        "failures": str(counts["fail"]),
        "errors": str(counts["error"]),
        "skipped": str(counts["skip"]),
        "time": _seconds(sum(_float(c.duration) for c in run.cases)),
    })
    cases = ordered_cases(run.cases)
    for section, per in ordered_sections(run).items():
        members = [c for c in cases if c.section == section]
        suite = _sub(root, "testsuite", name=section, tests=len(members),
                     failures=per["fail"], errors=per["error"], skipped=per["skip"],
                     time=_seconds(sum(_float(c.duration) for c in members)),
                     **({"timestamp": run.started} if run.started else {}))
        props = _sub(suite, "properties")
        for name, value in (("notice", NOTICE), ("tp469_version", run.tp469_version),
                            ("suite_version", run.suite_version),
                            ("eut.endpoint_id", run.eut.endpoint_id),
                            ("eut.firmware_version", run.eut.firmware_version)):
            _sub(props, "property", name=name, value=value)
        for case in members:
            _testcase(suite, case)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<!-- {NOTICE} -->\n{body}\n'

