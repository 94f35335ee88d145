"""JUnit XML of a run (conformance.report.junit)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.report.junit import classname, to_junit_xml, xml_text
from conformance.report.model import CaseResult, EUTInfo, MetricResult, RunResult
from conformance.report.summary import NOTICE

S1, S2 = "1 Messages and Path Names", "2 Authentication and Access Control"


def sample_run() -> RunResult:
    return RunResult(
        eut=EUTInfo(endpoint_id="os::012345-ABC", firmware_version="fw-1"),
        started="2025-01-01T00:00:00Z", suite_version="0.1",
        cases=[
            CaseResult("1.10", "Get & <wildcard>", S1, "mandatory", "pass", duration=0.5,
                       requirements=["R-GET.0"], feature_ids=[31]),
            CaseResult("1.2", "Add \"quoted\"", S1, "mandatory", "fail", duration=1.5,
                       metrics=[MetricResult(2, "err 7004", "fail", expected={"err_code": 7004},
                                             observed={"err_code": 7000}, message="wrong code")]),
            CaseResult("1.61", "Operate", S1, "conditional", "warn", warnings=["slow reply"],
                       alternates={"Device.Reboot()": "Device.X_Y()"}),
            CaseResult("2.9", "Roles", S2, "conditional", "skip",
                       reason="Feature ID 12 not declared"),
            CaseResult("2.1", "Trust", S2, "mandatory", "error", reason="setup broke\nbadly",
                       duration=float("nan")),
        ],
    )


def _parse(run: RunResult) -> ET.Element:
    text = to_junit_xml(run)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(text.encode("utf-8"))


def test_structure_and_counts():
    root = _parse(sample_run())
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == \
        ("5", "1", "1", "1")
    assert root.get("time") == "2.000"  # NaN duration counts as 0
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [S1, S2]
    assert [(s.get("tests"), s.get("failures"), s.get("errors"), s.get("skipped"))
            for s in suites] == [("3", "1", "0", "0"), ("2", "0", "1", "1")]
    assert suites[0].get("timestamp") == "2025-01-01T00:00:00Z"
    names = [tc.get("name") for tc in suites[0].findall("testcase")]
    assert names == ["1.2 Add \"quoted\"", "1.10 Get & <wildcard>", "1.61 Operate"]
    assert {tc.get("classname") for tc in root.iter("testcase")} == \
        {"tp469.1_Messages_and_Path_Names", "tp469.2_Authentication_and_Access_Control"}


def test_verdict_elements():
    cases = {tc.get("name", "").split()[0]: tc for tc in _parse(sample_run()).iter("testcase")}
    failure = cases["1.2"].find("failure")
    assert failure is not None and failure.get("type") == "fail"
    assert failure.get("message") == "metric 2: wrong code"
    assert '"err_code": 7004' in (failure.text or "") and '"err_code": 7000' in (failure.text or "")
    error = cases["2.1"].find("error")
    assert error is not None and error.get("message") == "setup broke badly"
    skipped = cases["2.9"].find("skipped")
    assert skipped is not None and skipped.get("message") == "Feature ID 12 not declared"
    for case_id in ("1.10", "1.61"):
        assert not [e for e in cases[case_id] if e.tag in ("failure", "error", "skipped")]
    out = cases["1.61"].findtext("system-out") or ""
    assert "warning: slow reply" in out and "Device.Reboot() -> Device.X_Y()" in out
    assert "requirements: R-GET.0" in (cases["1.10"].findtext("system-out") or "")
    assert cases["1.2"].get("time") == "1.500"


def test_notice_and_properties():
    text = to_junit_xml(sample_run())
    assert f"<!-- {NOTICE} -->" in text
    root = ET.fromstring(text)
    for suite in root.findall("testsuite"):
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["notice"] == NOTICE
        assert props["eut.endpoint_id"] == "os::012345-ABC"
        assert props["eut.firmware_version"] == "fw-1" and props["tp469_version"] == "1.4.0"


def test_empty_run():
    root = _parse(RunResult())
    assert root.get("tests") == "0" and root.findall("testsuite") == []


def test_classname():
    assert classname("3 USP Records") == "tp469.3_USP_Records"
    assert classname("SMM (project cases)") == "tp469.SMM_project_cases"
    assert classname("a.b") == "tp469.a_b"
    assert classname("") == classname("...") == "tp469.unsectioned"


def test_xml_text_escapes_forbidden_characters():
    assert xml_text("ok\t\n\r") == "ok\t\n\r"
    assert xml_text("\x00\x1b\ud800\ufffe") == "\\x00\\x1b\\ud800\\ufffe"
    assert xml_text(7) == "7"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30), st.text(max_size=30))
def test_any_text_gives_well_formed_xml(section, title, reason):
    run = RunResult(
        eut=EUTInfo(endpoint_id=reason, firmware_version=title), started=section,
        cases=[CaseResult(title, title, section, reason, verdict,  # type: ignore[arg-type]
                          reason=reason, warnings=[reason], requirements=[title],
                          metrics=[MetricResult(1, title, "fail", expected=reason,
                                                observed={title: reason}, message=reason)])
               for verdict in ("pass", "fail", "error", "skip", "warn")])
    root = _parse(run)
    assert root.get("tests") == "5"
    (suite,) = root.findall("testsuite")
    assert len(suite.findall("testcase")) == 5
    assert suite.find("testcase/skipped") is not None
