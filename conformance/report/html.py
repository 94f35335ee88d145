"""The HTML self-assessment report, and writing every report of a run.

:func:`render_html` gives one self-contained page (inline CSS and SVG, no
scripts, nothing fetched) from ``templates/report.html.j2``: the
self-assessment notice, TP-469's Required EUT Information (firmware version,
firmware banks, Feature IDs, alternate elements), counts and a bar chart per
section, then every case with its verdict and, for fail/error, the failed
metrics (expected vs observed), decoded messages and timeline excerpt.
``failures_only=True`` gives the limited report TP-469 allows to share: EUT
information and the failed cases only.

Everything shown may come from the EUT, so autoescaping is on and every
printed value is also stripped of characters HTML cannot carry.

:func:`write_reports` writes ``results.json``, ``summary.json``,
``report.html``, ``report-failures.html`` and ``junit.xml`` atomically.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jinja2

from conformance.report.features import feature_name
from conformance.report.junit import to_junit_xml
from conformance.report.model import VERDICTS, CaseResult, RunResult
from conformance.report.summary import (
    LIMITED_NOTICE,
    NOTICE,
    TITLE,
    VERDICT_ORDER,
    dumps_json,
    ordered_cases,
    ordered_sections,
    summary,
    write_text_atomic,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html.j2"

#: Verdict -> (badge text, bar colour).
VERDICT_STYLE: dict[str, tuple[str, str]] = {
    "pass": ("PASS", "#2e7d32"),
    "warn": ("WARN", "#b58900"),
    "fail": ("FAIL", "#c62828"),
    "error": ("ERROR", "#6a1b9a"),
    "skip": ("SKIP", "#8a8a8a"),
}
VERDICT_MEANING: dict[str, str] = {
    "pass": "every test metric met",
    "warn": "every test metric met, with SHOULD-level observations",
    "fail": "the device did not meet a test metric",
    "error": "the suite or the test setup broke before a verdict; not a device failure",
    "skip": "not applicable to this device (see the reason: usually an undeclared Feature ID)",
}

RAW_HEX_MAX = 1024          # hex digits of raw bytes shown when nothing was decoded
DECODED_MAX = 8000          # characters of a decoded timeline entry

# C0 controls (except tab, LF, CR), DEL and lone surrogates: not allowed in HTML text.
_BAD_HTML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_NOT_ANCHOR = re.compile(r"[^A-Za-z0-9_.-]+")

# Bar chart geometry (pixels).
_LABEL_W, _BAR_W, _ROW_H, _TOP, _BAR_H = 300, 420, 26, 34, 16
_LABEL_CHARS = 42


def clean_text(value: str) -> str:
    """``value`` without characters HTML text cannot carry (each becomes U+FFFD)."""
    return _BAD_HTML_CHARS.sub("\ufffd", value)


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if type(value) is str:  # Markup (already-rendered macros) is left alone
        return clean_text(value)
    return value


def pretty_json(value: Any) -> str:
    """Indented JSON of ``value`` for a ``<pre>`` block (never raises)."""
    try:
        return dumps_json(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n\u2026 ({len(text) - limit} more characters)"


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = pretty_json
    env.globals.update(feature_name=feature_name, VERDICT_STYLE=VERDICT_STYLE,
                       VERDICT_ORDER=VERDICT_ORDER, VERDICT_MEANING=VERDICT_MEANING)
    return env


def _unique(items: list[Any]) -> list[Any]:
    """``items`` without repeats, in order (works for unhashable JSON values too)."""
    out: list[Any] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _verdict(case: CaseResult) -> str:
    return case.verdict if case.verdict in VERDICTS else "error"


def _anchor(case_id: str) -> str:
    return "case-" + (_NOT_ANCHOR.sub("_", str(case_id)) or "_")


def _timeline_rows(entries: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for entry in entries:
        if not isinstance(entry, dict):
            rows.append({"seq": "", "t": "", "direction": "", "mtp": "", "conn_id": "",
                         "kind": "", "note": "", "body": _cut(pretty_json(entry), DECODED_MAX)})
            continue
        t = entry.get("t")
        numeric_t = isinstance(t, (int, float)) and not isinstance(t, bool)
        decoded = entry.get("decoded")
        if decoded is not None:
            body = _cut(pretty_json(decoded), DECODED_MAX)
        elif entry.get("raw_hex"):
            body = "raw " + _cut(str(entry["raw_hex"]), RAW_HEX_MAX)
        else:
            body = ""
        rows.append({
            "seq": str(entry.get("seq", "")),
            "t": f"{t:.3f}" if numeric_t else str(t or ""),
            "direction": str(entry.get("direction") or ""),
            "mtp": str(entry.get("mtp") or ""),
            "conn_id": str(entry.get("conn_id") or ""),
            "kind": str(entry.get("kind") or ""),
            "note": str(entry.get("note") or ""),
            "body": body,
        })
    return rows


def _case_view(case: CaseResult, failures_only: bool) -> dict[str, Any]:
    verdict = _verdict(case)
    evidence = verdict in ("fail", "error")
    return {
        "case": case,
        "verdict": verdict,
        "anchor": _anchor(case.case_id),
        "reason": str(case.reason or "").strip(),
        "warnings": [] if failures_only else list(case.warnings),
        "failed_metrics": case.failed_metrics,
        "all_metrics": [] if failures_only else list(case.metrics),
        "messages": list(case.messages) if evidence else [],
        "timeline": _timeline_rows(list(case.timeline)) if evidence else [],
        "alternates": sorted((str(k), str(v)) for k, v in case.alternates.items()),
    }


def _alternates(run: RunResult, cases: list[CaseResult]) -> list[dict[str, Any]]:
    """Alternate elements: declared for the EUT, or used by the shown cases."""
    rows: dict[tuple[str, str], list[str]] = {}
    for element, alternate in run.eut.alternates.items():
        rows.setdefault((str(element), str(alternate)), [])
    for case in cases:
        for element, alternate in case.alternates.items():
            rows.setdefault((str(element), str(alternate)), []).append(str(case.case_id))
    return [{"element": e, "alternate": a, "cases": ids} for (e, a), ids in rows.items()]


def _chart(sections: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Geometry of the stacked bar chart: one bar per section, scaled to the largest."""
    largest = max((sum(per.values()) for per in sections.values()), default=0) or 1
    rows = []
    for index, (name, per) in enumerate(sections.items()):
        x = float(_LABEL_W)
        segments = []
        for verdict in VERDICT_ORDER:
            count = per.get(verdict, 0)
            if not count:
                continue
            width = _BAR_W * count / largest
            segments.append({"verdict": verdict, "x": round(x, 2), "width": round(width, 2),
                             "count": count, "color": VERDICT_STYLE[verdict][1]})
            x += width
        label = name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "\u2026"
        rows.append({"name": name, "label": label, "y": _TOP + index * _ROW_H,
                     "segments": segments, "total": sum(per.values()), "end": round(x, 2)})
    legend = [{"verdict": v, "x": _LABEL_W + i * 84, "text": VERDICT_STYLE[v][0],
               "color": VERDICT_STYLE[v][1]} for i, v in enumerate(VERDICT_ORDER)]
    return {"rows": rows, "legend": legend, "width": _LABEL_W + _BAR_W + 60,
            "height": _TOP + len(rows) * _ROW_H + 8, "bar_h": _BAR_H, "label_w": _LABEL_W}


def render_html(run: RunResult, *, failures_only: bool = False) -> str:
    """The self-contained HTML report of ``run`` (the limited failures-only one on request)."""
    cases = ordered_cases(run.cases)
    if failures_only:
        cases = [c for c in cases if c.verdict == "fail"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for case in cases:
        groups.setdefault(str(case.section), []).append(_case_view(case, failures_only))
    sections = ordered_sections(run)
    failures_per_section = {name: per["fail"] for name, per in sections.items() if per["fail"]}
    totals = run.counts()
    eut = run.eut
    return _environment().get_template(TEMPLATE).render(
        title=TITLE,
        notice=NOTICE,
        limited_notice=LIMITED_NOTICE,
        failures_only=failures_only,
        run=run,
        eut=eut,
        feature_ids=[(f, feature_name(f)) for f in _unique(eut.feature_ids)],
        alternates=_alternates(run, cases),
        sections=sections,
        totals=totals,
        total=len(run.cases),
        failures_per_section=failures_per_section,
        chart=_chart(sections),
        groups=groups,
    )


def write_reports(run: RunResult, out_dir: Path) -> dict[str, Path]:
    """Write every report of ``run`` into ``out_dir`` (created), each atomically.

    Returns the paths by kind: ``results`` (``results.json``, the
    :meth:`RunResult.to_json` form), ``summary`` (``summary.json``), ``html``
    (``report.html``), ``failures_html`` (``report-failures.html``) and
    ``junit`` (``junit.xml``).
    """
    out = Path(out_dir)
    contents = {  # all rendered before anything is written
        "results": ("results.json", dumps_json(run.to_json()) + "\n"),
        "summary": ("summary.json", dumps_json(summary(run)) + "\n"),
        "html": ("report.html", render_html(run)),
        "failures_html": ("report-failures.html", render_html(run, failures_only=True)),
        "junit": ("junit.xml", to_junit_xml(run)),
    }
    out.mkdir(parents=True, exist_ok=True)
    return {kind: write_text_atomic(out / name, text) for kind, (name, text) in contents.items()}
