"""How a case result appears in Allure: labels, links and attachments.

Pure mapping, no allure import: the pytest plugin feeds these tuples to
``allure.dynamic.label`` / ``allure.dynamic.link`` / ``allure.attach``.

- labels: ``epic`` = TP-469 section, ``story`` = case id, ``severity`` from
  the functionality tag (mandatory -> critical, conditional -> normal,
  deprecated -> trivial), one ``tag`` ``feature-<n>`` per Feature ID;
- links: one ``requirement`` link per TR-369 requirement id (``R-...``);
- attachments: the timeline excerpt (JSON lines), the decoded messages
  (text) and, for failed metrics, expected vs observed (JSON).
"""

from __future__ import annotations

from conformance.report.model import CaseResult
from conformance.report.summary import dumps_json

#: Functionality tag -> Allure severity.
SEVERITY: dict[str, str] = {
    "mandatory": "critical",
    "conditional": "normal",
    "deprecated": "trivial",
}
DEFAULT_SEVERITY = "normal"

REQUIREMENT_LINK = "requirement"
MIME_JSONL = "application/x-ndjson"
MIME_TEXT = "text/plain"
MIME_JSON = "application/json"


def severity_for(functionality: str) -> str:
    """Allure severity of a functionality tag ("conditional mandatory" counts as conditional)."""
    tag = " ".join(str(functionality).lower().split())
    if tag.startswith("conditional"):
        tag = "conditional"
    return SEVERITY.get(tag, DEFAULT_SEVERITY)


def labels_for(case: CaseResult) -> list[tuple[str, str]]:
    """Allure ``(label, value)`` pairs of ``case``."""
    labels = [
        ("epic", str(case.section)),
        ("story", str(case.case_id)),
        ("severity", severity_for(case.functionality)),
    ]
    seen: set[str] = set()
    for feature in case.feature_ids:
        tag = f"feature-{feature}"
        if tag not in seen:
            seen.add(tag)
            labels.append(("tag", tag))
    return labels


def links_for(case: CaseResult, *, url_template: str | None = None) -> list[tuple[str, str]]:
    """One ``(url_or_name, "requirement")`` per requirement id of ``case``, in order.

    Without ``url_template`` the requirement id itself is given (Allure shows
    it as the link name); with one, ``{id}`` in it is replaced by the id.
    """
    out: list[tuple[str, str]] = []
    for req in dict.fromkeys(str(r) for r in case.requirements):
        target = url_template.replace("{id}", req) if url_template else req
        out.append((target, REQUIREMENT_LINK))
    return out


def expected_vs_observed(case: CaseResult) -> list[dict[str, object]]:
    """The failed metrics of ``case`` as JSON-able records."""
    return [
        {"metric": m.number, "text": m.text, "message": m.message,
         "expected": m.expected, "observed": m.observed}
        for m in case.failed_metrics
    ]


def attachments_for(case: CaseResult) -> list[tuple[str, str, str]]:
    """``(name, body, mime)`` attachments of ``case``; empty evidence is left out."""
    out: list[tuple[str, str, str]] = []
    if case.timeline:
        body = "".join(dumps_json(entry, indent=None) + "\n" for entry in case.timeline)
        out.append(("timeline.jsonl", body, MIME_JSONL))
    if case.messages:
        body = "".join(f"----- message {i} -----\n{str(m).rstrip()}\n"
                       for i, m in enumerate(case.messages, 1))
        out.append(("messages.txt", body, MIME_TEXT))
    failed = expected_vs_observed(case)
    if failed:
        out.append(("expected-vs-observed.json", dumps_json(failed) + "\n", MIME_JSON))
    return out
