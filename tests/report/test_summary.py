"""The JSON summary and the helpers all reporters share (conformance.report.summary)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.report import summary as summary_mod
from conformance.report.model import (
    VERDICTS,
    CaseResult,
    EUTInfo,
    MetricResult,
    RunResult,
)
from conformance.report.summary import (
    NOTICE,
    TITLE,
    VERDICT_ORDER,
    case_reason,
    dumps_json,
    natural_key,
    one_line,
    ordered_cases,
    ordered_sections,
    section_key,
    summary,
    write_summary,
    write_text_atomic,
)

S1, S3, S10 = "1 Messages and Path Names", "3 USP Records", "10 Bulk Data Collection"
PROJECT = "SMM (project cases)"


def _case(case_id: str, section: str, verdict: str, **kw) -> CaseResult:
    return CaseResult(case_id, f"title {case_id}", section, "mandatory", verdict, **kw)  # type: ignore[arg-type]


def sample_run() -> RunResult:
    return RunResult(
        eut=EUTInfo(name="gw", endpoint_id="os::012345-ABC", manufacturer="Acme", model="M",
                    firmware_version="1.2.3", firmware_banks=2, feature_ids=[24, 26]),
        started="2025-01-01T00:00:00Z", finished="2025-01-01T00:01:00Z", suite_version="0.1",
        cases=[
            _case("10.1", S10, "skip", reason="Feature ID 32 not declared"),
            _case("1.10", S1, "pass"),
            _case("1.2", S1, "fail", metrics=[MetricResult(3, "error 7004", "fail",
                                                           message="got\n7000\tinstead")]),
            _case("X-SMM-3", PROJECT, "warn", warnings=["slow"]),
            _case("3.4", S3, "error", reason="TLS setup\nfailed"),
        ],
    )


def test_summary_counts_sections_and_failures():
    data = summary(sample_run())
    assert data["title"] == TITLE and data["notice"] == NOTICE
    assert data["counts"] == {"pass": 1, "warn": 1, "fail": 1, "error": 1, "skip": 1, "total": 5}
    assert list(data["sections"]) == [S1, S3, S10, PROJECT]  # number order, then projects
    assert data["sections"][S1] == {"pass": 1, "warn": 0, "fail": 1, "error": 0, "skip": 0,
                                    "total": 2}
    assert data["exit_status"] == 2
    assert data["failed"] == [
        {"case_id": "1.2", "title": "title 1.2", "section": S1, "verdict": "fail",
         "reason": "metric 3: got 7000 instead"},
        {"case_id": "3.4", "title": "title 3.4", "section": S3, "verdict": "error",
         "reason": "TLS setup failed"},
    ]
    assert data["eut"]["endpoint_id"] == "os::012345-ABC"
    assert data["eut"]["firmware_version"] == "1.2.3" and data["eut"]["firmware_banks"] == 2
    assert data["eut"]["feature_ids"] == [24, 26]
    json.dumps(data)  # JSON-able


@pytest.mark.parametrize(("verdicts", "status"), [
    ((), 0), (("pass", "skip", "warn"), 0), (("pass", "fail"), 1), (("fail", "error"), 2),
])
def test_summary_exit_status(verdicts, status):
    run = RunResult(cases=[_case(f"1.{i}", S1, v) for i, v in enumerate(verdicts)])
    assert summary(run)["exit_status"] == status


def test_summary_of_an_empty_run():
    data = summary(RunResult())
    assert data["counts"]["total"] == 0 and data["sections"] == {} and data["failed"] == []
    assert data["eut"]["firmware_banks"] is None


def test_no_certification_wording_outside_the_notice():
    text = dumps_json({k: v for k, v in summary(sample_run()).items() if k != "notice"})
    for word in ("certif", "complian", "conformant"):
        assert word not in text.lower()
    assert "not a certification" in NOTICE and "Test Agencies" in NOTICE


def test_write_summary(tmp_path: Path):
    path = write_summary(sample_run(), tmp_path / "sub" / "summary.json")
    assert path == tmp_path / "sub" / "summary.json"
    assert json.loads(path.read_text("utf-8")) == summary(sample_run())
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_write_text_atomic_replaces_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "f.txt"
    write_text_atomic(target, "old")
    write_text_atomic(target, "new \ud800")
    assert target.read_bytes() == b"new \\ud800"

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")
    monkeypatch.setattr(summary_mod.os, "replace", fail)
    with pytest.raises(OSError):
        write_text_atomic(target, "newest")
    assert target.read_text() == "new \\ud800"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_ordering_helpers():
    assert natural_key("1.2") < natural_key("1.10") < natural_key("2.1")
    assert section_key(S1) < section_key(S3) < section_key(S10) < section_key(PROJECT)
    assert section_key("") > section_key(S10)
    assert [c.case_id for c in ordered_cases(sample_run().cases)] == \
        ["1.2", "1.10", "3.4", "10.1", "X-SMM-3"]
    assert list(ordered_sections(sample_run())) == [S1, S3, S10, PROJECT]
    assert set(VERDICT_ORDER) == set(VERDICTS)


def test_one_line_and_case_reason():
    assert one_line("  a\n b\t\tc  ") == "a b c"
    assert one_line("x" * 300, limit=10) == "x" * 9 + "\u2026"
    assert case_reason(_case("1.1", S1, "fail", reason=" given ")) == "given"
    no_message = _case("1.1", S1, "fail", metrics=[MetricResult(2, "the text", "fail")])
    assert case_reason(no_message) == "metric 2: the text"
    assert case_reason(_case("1.1", S1, "fail")) == ""


def test_dumps_json_odd_values():
    assert json.loads(dumps_json({"b": b"\x00\x01", "s": {1}, "o": object})) == \
        {"b": "0001", "s": [1], "o": repr(object)}
    assert dumps_json("é") == '"é"'
    assert dumps_json("\ud800") == '"\\ud800"'  # forced escapes keep it writable
    assert json.loads(dumps_json("\ud800")) == "\ud800"


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.sampled_from(VERDICTS))
def test_summary_with_any_text(title, reason, verdict):
    run = RunResult(cases=[CaseResult("1.1", title, reason, reason, verdict, reason=reason)])
    data = summary(run)
    text = dumps_json(data)
    text.encode("utf-8")
    assert json.loads(text) == data
    for failed in data["failed"]:
        assert "\n" not in failed["reason"]


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_ordering_keys_never_raise(a, b):
    """Case ids and sections may be any text (e.g. superscript digits)."""
    assert (natural_key(a) < natural_key(b)) or (natural_key(a) >= natural_key(b))
    assert (section_key(a) < section_key(b)) or (section_key(a) >= section_key(b))
    assert natural_key("1\u00b9") == ((0, 1), (1, "\u00b9"))
