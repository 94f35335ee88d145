"""Allure labels, links and attachments of a case (conformance.report.allure_labels)."""

from __future__ import annotations

import json

import pytest

from conformance.report.allure_labels import (
    attachments_for,
    expected_vs_observed,
    labels_for,
    links_for,
    severity_for,
)
from conformance.report.model import CaseResult, MetricResult

S1 = "1 Messages and Path Names"


def failed_case() -> CaseResult:
    return CaseResult(
        "1.61", "Operate a synchronous command", S1, "conditional", "fail",
        feature_ids=[1, 10, 1], requirements=["R-OPR.1", "R-MSG.3", "R-OPR.1"],
        metrics=[MetricResult(1, "OperateResp", "pass"),
                 MetricResult(2, "output args", "fail", expected={"a": 1}, observed=None,
                              message="missing output")],
        messages=["header {\n  msg_id: \"1\"\n}\n", "body {}"],
        timeline=[{"seq": 1, "kind": "usp.record", "decoded": {"x": "é"}}, {"seq": 2}],
    )


def test_labels():
    assert labels_for(failed_case()) == [
        ("epic", S1), ("story", "1.61"), ("severity", "normal"),
        ("tag", "feature-1"), ("tag", "feature-10"),
    ]
    bare = CaseResult("X-SMM-3", "t", "SMM (project cases)", "mandatory", "pass")
    assert labels_for(bare) == [("epic", "SMM (project cases)"), ("story", "X-SMM-3"),
                                ("severity", "critical")]


@pytest.mark.parametrize(("tag", "severity"), [
    ("mandatory", "critical"), ("conditional", "normal"), ("deprecated", "trivial"),
    ("Conditional Mandatory", "normal"), ("  Mandatory ", "critical"), ("", "normal"),
    ("bogus", "normal"),
])
def test_severity_from_functionality_tag(tag, severity):
    assert severity_for(tag) == severity


def test_links_one_per_requirement():
    assert links_for(failed_case()) == [("R-OPR.1", "requirement"), ("R-MSG.3", "requirement")]
    assert links_for(failed_case(), url_template="https://example.invalid/req#{id}") == [
        ("https://example.invalid/req#R-OPR.1", "requirement"),
        ("https://example.invalid/req#R-MSG.3", "requirement")]
    assert links_for(CaseResult("1.1", "t", S1, "mandatory", "pass")) == []


def test_attachments():
    attachments = {name: (body, mime) for name, body, mime in attachments_for(failed_case())}
    assert set(attachments) == {"timeline.jsonl", "messages.txt", "expected-vs-observed.json"}
    body, mime = attachments["timeline.jsonl"]
    assert mime == "application/x-ndjson"
    assert [json.loads(line) for line in body.splitlines()] == failed_case().timeline
    body, mime = attachments["messages.txt"]
    assert mime == "text/plain"
    assert "----- message 1 -----\nheader {" in body and "----- message 2 -----\nbody {}" in body
    body, mime = attachments["expected-vs-observed.json"]
    assert mime == "application/json"
    assert json.loads(body) == [{"metric": 2, "text": "output args", "message": "missing output",
                                 "expected": {"a": 1}, "observed": None}]


def test_no_evidence_no_attachments():
    assert attachments_for(CaseResult("1.1", "t", S1, "mandatory", "pass")) == []
    passed = CaseResult("1.1", "t", S1, "mandatory", "pass",
                        metrics=[MetricResult(1, "m", "pass", expected=1, observed=1)])
    assert expected_vs_observed(passed) == []
    assert attachments_for(passed) == []


def test_attachment_bodies_are_encodable_with_odd_values():
    case = failed_case()
    case.timeline = [{"raw": b"\x00", "s": "\ud800"}]  # not JSON-able / not UTF-8 encodable
    case.metrics[1].observed = {"bytes": b"\xff"}
    for _, body, _ in attachments_for(case):
        body.encode("utf-8")
