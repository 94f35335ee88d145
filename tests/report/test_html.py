"""The HTML self-assessment report and write_reports (conformance.report.html).

Checks the TP-469 "Required EUT Information" (firmware version, firmware
banks, Feature IDs, alternate elements) is shown, the self-assessment notice
and wording rule (TP-469 NOTICE: only authorized Test Agencies certify), the
limited failures-only report, and that hostile EUT data cannot inject markup.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.report import html as report_html
from conformance.report.features import FEATURE_NAMES, feature_name
from conformance.report.html import clean_text, pretty_json, render_html, write_reports
from conformance.report.model import CaseResult, EUTInfo, MetricResult, RunResult
from conformance.report.summary import LIMITED_NOTICE, NOTICE, TITLE

S1 = "1 Messages and Path Names"
S2 = "2 Authentication and Access Control"
S11 = "11 MQTT"
FORBIDDEN = re.compile(r"certif|complian|conformant", re.IGNORECASE)
HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'


def sample_run() -> RunResult:
    """A run with one case of every verdict, across three sections."""
    return RunResult(
        eut=EUTInfo(name="Acme Gateway", endpoint_id="os::012345-ABC", manufacturer="Acme",
                    model="GW-1", firmware_version="fw-7.1.2", firmware_banks=2,
                    feature_ids=[1, 10, 26, 35], mtps=["mqtt", "websocket"],
                    alternates={"Device.Reboot()": "Device.X_ACME_Restart()"}),
        started="2025-01-02T03:04:05Z", finished="2025-01-02T03:14:05Z",
        suite_version="0.1.0", command="usp-conformance run --eut acme.yaml",
        cases=[
            CaseResult("1.10", "Get using a wildcard", S1, "mandatory", "pass",
                       requirements=["R-GET.0"], duration=0.4,
                       metrics=[MetricResult(1, "response lists all instances", "pass")]),
            CaseResult("1.2", "Add message with allow partial false", S1, "mandatory", "fail",
                       requirements=["R-ADD.4", "R-MSG.3"], duration=1.25,
                       reason="metric 2: wrong error code",
                       metrics=[MetricResult(1, "AddResp received", "pass"),
                                MetricResult(2, "error code is 7004", "fail",
                                             expected={"err_code": 7004},
                                             observed={"err_code": 7000, "err_msg": "nope"},
                                             message="err_code 7000 instead of 7004")],
                       messages=["header {\n  msg_id: \"m-1\"\n  msg_type: ADD\n}"],
                       timeline=[{"seq": 7, "t": 0.125, "wall": 1.0, "direction": "in",
                                  "mtp": "mqtt", "conn_id": "c1", "kind": "usp.record",
                                  "raw_hex": "0a0b", "decoded": {"msg_id": "m-1"},
                                  "note": "AddResp"},
                                 {"seq": 8, "t": 0.2, "direction": "in", "mtp": "mqtt",
                                  "kind": "mqtt.PUBLISH", "raw_hex": "30ff", "decoded": None,
                                  "note": ""}]),
            CaseResult("1.61", "Operate a synchronous command", S1, "conditional", "warn",
                       feature_ids=[1, 10], requirements=["R-OPR.1"],
                       warnings=["reply took longer than advised"],
                       alternates={"Device.Reboot()": "Device.X_ACME_Restart()"},
                       metrics=[MetricResult(1, "OperateResp received", "pass")]),
            CaseResult("2.9", "ControllerTrust roles", S2, "conditional", "skip",
                       feature_ids=[12], reason="Feature ID 12 not declared by the EUT"),
            CaseResult("11.3", "MQTT connect", S11, "mandatory", "error",
                       reason="broker port 1883 already in use",
                       timeline=[{"seq": 1, "t": 0.0, "kind": "conn.open", "decoded": None}]),
        ],
    )


class _Tags(HTMLParser):
    """Collects start tags and attributes, to check what markup a page holds."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "section", "h1", "h2", "h3",
    "h4", "h5", "p", "table", "thead", "tbody", "tr", "th", "td", "code", "pre", "span", "svg",
    "rect", "text", "g", "dl", "dt", "dd", "ul", "ol", "li", "details", "summary", "article",
    "div", "strong", "footer",
}


def _tags(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def _assert_inert(page: str) -> None:
    """No scripts, no event handlers, no fetched resources, only our tags."""
    for tag, attrs in _tags(page).tags:
        assert tag in ALLOWED_TAGS, tag
        for name, _value in attrs:
            assert not name.startswith("on"), (tag, name)
            assert name not in ("src", "href", "srcset", "action", "formaction"), (tag, name)
    assert "<script" not in page.lower()
    styles = re.findall(r"<style>(.*?)</style>", page, re.DOTALL)
    assert len(styles) == 1 and "@import" not in styles[0] and "url(" not in styles[0]


def _without_notice(page: str) -> str:
    return page.replace(NOTICE, "")


# --- full report ---------------------------------------------------------------------------


def test_title_notice_and_run_info():
    page = render_html(sample_run())
    assert page.startswith("<!DOCTYPE html>")
    assert f"<title>{TITLE}</title>" in page and f"<h1>{TITLE}</h1>" in page
    assert 'id="notice"' in page and NOTICE in page
    assert LIMITED_NOTICE not in page
    assert "2025-01-02T03:04:05Z" in page and "usp-conformance run --eut acme.yaml" in page


def test_self_contained_without_scripts():
    page = render_html(sample_run())
    _assert_inert(page)
    assert "<style>" in page
    # The only URL is the SVG namespace, which is never fetched.
    assert re.findall(r"https?://[^\s\"'<]+", page) == ["http://www.w3.org/2000/svg"]


def test_no_certification_wording_outside_the_notice():
    """TP-469 notice: a self-assessment never claims certification or compliance."""
    for failures_only in (False, True):
        page = render_html(sample_run(), failures_only=failures_only)
        assert NOTICE in page
        assert not FORBIDDEN.search(_without_notice(page)), FORBIDDEN.search(_without_notice(page))


def test_required_eut_information():
    """TP-469 Required EUT Information: firmware, banks, Feature IDs, alternates."""
    page = render_html(sample_run())
    eut = page[page.index('id="eut"'):page.index('id="features"')]
    for value in ("Acme Gateway", "os::012345-ABC", "Acme", "GW-1", "fw-7.1.2", "mqtt, websocket"):
        assert value in eut
    assert re.search(r"Firmware banks</th><td>2<", eut)
    features = page[page.index('id="features"'):page.index('id="alternates"')]
    for fid in (1, 10, 26, 35):
        assert f'<td class="num">{fid}</td><td>{FEATURE_NAMES[fid]}</td>' in features
    alternates = page[page.index('id="alternates"'):page.index('id="summary"')]
    assert "Device.Reboot()" in alternates and "Device.X_ACME_Restart()" in alternates
    assert "1.61" in alternates  # the case that used it


def test_missing_eut_information_is_said():
    page = render_html(RunResult())
    assert "not given" in page and "No Feature IDs declared" in page
    assert "None: the elements named by the test procedures were used." in page
    assert "No cases were run." in page
    _assert_inert(page)


def test_summary_per_section_and_chart():
    page = render_html(sample_run())
    summary = page[page.index('id="summary"'):page.index('id="cases"')]
    row = re.search(rf"<tr><td>{S1}</td>(.*?)</tr>", summary)
    assert row is not None
    assert re.findall(r'<td class="num">(\d+)</td>', row.group(1)) == ["1", "1", "1", "0", "0", "3"]
    total = re.search(r'<tr class="total"><td>All sections</td>(.*?)</tr>', summary)
    assert total is not None
    assert re.findall(r'<td class="num">(\d+)</td>', total.group(1)) == \
        ["1", "1", "1", "1", "1", "5"]
    # Sections in number order (11 after 2).
    assert summary.index(S1) < summary.index(S2) < summary.index(S11)
    svg = summary[summary.index("<svg"):summary.index("</svg>") + 6]
    root = ET.fromstring(svg)  # well-formed SVG
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    segs = [r for r in svg.split("<rect")[1:] if "seg seg-" in r]
    assert len(segs) == 5  # S1: pass, warn, fail; S2: skip; S11: error
    widths = {m.group(1): float(m.group(2)) for m in
              re.finditer(r'seg seg-(\w+)" x="[\d.]+" y="34" width="([\d.]+)"', svg)}
    assert widths == {"pass": 140.0, "warn": 140.0, "fail": 140.0}  # 420 px for 3 cases


def test_chart_geometry_scales_to_largest_section():
    chart = report_html._chart({"a": {"pass": 4, "fail": 0}, "b": {"fail": 2}})
    (a_seg,), (b_seg,) = (row["segments"] for row in chart["rows"])
    assert a_seg["width"] == 2 * b_seg["width"]
    assert chart["rows"][1]["y"] > chart["rows"][0]["y"]
    assert report_html._chart({})["rows"] == []


def test_verdict_per_case_with_badges():
    page = render_html(sample_run())
    for case_id, verdict in (("1.10", "pass"), ("1.2", "fail"), ("1.61", "warn"),
                             ("2.9", "skip"), ("11.3", "error")):
        block = re.search(rf'<article class="case case-{verdict}" id="case-{re.escape(case_id)}">'
                          r"(.*?)</article>", page, re.DOTALL)
        assert block is not None, case_id
        assert f'<span class="badge badge-{verdict}">{verdict.upper()}</span>' in block.group(1)
    assert page.index('id="case-1.2"') < page.index('id="case-1.10"') < page.index('id="case-1.61"')
    assert "Feature ID 12 not declared by the EUT" in page
    assert "reply took longer than advised" in page
    assert "R-ADD.4" in page and "R-MSG.3" in page and "conditional" in page


def _block(page: str, case_id: str) -> str:
    match = re.search(rf'id="case-{re.escape(case_id)}">(.*?)</article>', page, re.DOTALL)
    assert match is not None, case_id
    return match.group(1)


def test_failed_case_evidence():
    page = render_html(sample_run())
    block = _block(page, "1.2")
    assert "<strong>Metric 2</strong> error code is 7004" in block
    assert "err_code 7000 instead of 7004" in block
    expected, observed = re.findall(r'<pre class="json">(.*?)</pre>', block, re.DOTALL)
    assert json.loads(expected.replace("&#34;", '"')) == {"err_code": 7004}
    assert json.loads(observed.replace("&#34;", '"')) == {"err_code": 7000, "err_msg": "nope"}
    assert "<details class=\"messages\">" in block and "msg_type: ADD" in block
    assert "<details class=\"timeline\">" in block and "Timeline excerpt (2 entries)" in block
    assert "0.125" in block and "usp.record" in block and "AddResp" in block
    assert "raw 30ff" in block  # undecoded entry shows its bytes
    # The error case shows its evidence too; passed cases show none.
    assert "Timeline excerpt (1 entry)" in _block(page, "11.3")
    for case_id in ("1.10", "1.61", "2.9"):
        assert "<details class=\"timeline\">" not in _block(page, case_id)
        assert "<pre class=\"json\">" not in _block(page, case_id)


# --- limited report ---------------------------------------------------------------------------


def test_failures_only_lists_only_failed_cases():
    """TP-469 notice: shared reports may only detail where the product failed."""
    page = render_html(sample_run(), failures_only=True)
    _assert_inert(page)
    assert NOTICE in page and LIMITED_NOTICE in page
    assert 'id="case-1.2"' in page
    for case_id in ("1.10", "1.61", "2.9", "11.3"):
        assert f'id="case-{case_id}"' not in page
    for text in ("Get using a wildcard", "reply took longer", "Feature ID 12 not declared",
                 "broker port 1883", "AddResp received", "<svg", "Cases run",
                 "usp-conformance run --eut"):
        assert text not in page, text
    # EUT info stays.
    assert "fw-7.1.2" in page and "Firmware banks" in page and FEATURE_NAMES[26] in page
    # The failure's evidence stays.
    block = _block(page, "1.2")
    assert "err_code 7000 instead of 7004" in block and "msg_type: ADD" in block
    assert re.search(rf"<tr><td>{S1}</td><td class=\"num\">1</td></tr>", page)
    # Alternates used only by non-failed cases are not attributed to them.
    assert "1.61" not in page


def test_failures_only_without_failures():
    run = sample_run()
    run.cases = [c for c in run.cases if c.verdict != "fail"]
    page = render_html(run, failures_only=True)
    assert "The device failed no test case in this run." in page
    assert "No failed cases." in page
    assert not FORBIDDEN.search(_without_notice(page))


# --- hostile EUT data --------------------------------------------------------------------------


def hostile_run(value: str) -> RunResult:
    """Every string an EUT can influence set to ``value``."""
    eut = EUTInfo(name=value, endpoint_id=value, manufacturer=value, model=value,
                  firmware_version=value, firmware_banks=None, feature_ids=[1],
                  alternates={value: value}, mtps=[value])
    metric = MetricResult(1, value, "fail", expected={value: [value]}, observed=value,
                          message=value)
    cases = [
        CaseResult(value, value, value, value, verdict,  # type: ignore[arg-type]
                   feature_ids=[1], requirements=[value], reason=value, metrics=[metric],
                   warnings=[value], messages=[value], alternates={value: value}, mtp=value,
                   timeline=[{"seq": value, "t": value, "direction": value, "mtp": value,
                              "conn_id": value, "kind": value, "decoded": {value: value},
                              "note": value},
                             {"raw_hex": value, "decoded": None}, value])
        for verdict in ("pass", "fail", "error", "warn", "skip")
    ]
    return RunResult(eut=eut, cases=cases, started=value, finished=value, suite_version=value,
                     tp469_version=value, command=value)


def test_hostile_values_are_escaped():
    for failures_only in (False, True):
        page = render_html(hostile_run(HOSTILE), failures_only=failures_only)
        _assert_inert(page)
        assert "<img" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
        # The text survives, as text.
        assert HOSTILE in "".join(_tags(page).text)


def test_control_characters_and_surrogates_are_replaced():
    page = render_html(hostile_run("a\x00b\x1bc\ud800d\x7f"))
    assert "\x00" not in page and "\x1b" not in page and "\ud800" not in page
    assert "a\ufffdb\ufffdc\ufffdd\ufffd" in page
    page.encode("utf-8")  # writable as UTF-8
    assert clean_text("tab\tnl\ncr\r") == "tab\tnl\ncr\r"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=40))
def test_any_eut_text_renders_inert(value):
    for failures_only in (False, True):
        page = render_html(hostile_run(value), failures_only=failures_only)
        _assert_inert(page)
        page.encode("utf-8")


@settings(max_examples=50, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text()
                    | st.binary(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10))
def test_pretty_json_never_raises(value):
    assert isinstance(pretty_json(value), str)


def test_pretty_json_odd_values():
    assert pretty_json(b"\x01\xff") == '"01ff"'
    assert pretty_json({"k": {1, 2}}).startswith("{")
    loop: list[object] = []
    loop.append(loop)
    assert pretty_json(loop) == "[[...]]"


def test_unknown_verdict_and_odd_timeline_entries_render():
    run = sample_run()
    run.cases[1].timeline.append(["not", "a", "dict"])  # type: ignore[arg-type]
    run.cases[1].timeline.append({"seq": 9, "t": True, "decoded": None})
    page = render_html(run)
    assert "&#34;not&#34;" in _block(page, "1.2")


# --- features table ---------------------------------------------------------------------------


def test_feature_names_cover_tp469_ids():
    assert set(FEATURE_NAMES) == set(range(1, 43))
    assert feature_name(26) == "Firmware:1 profile"
    assert feature_name(0) == feature_name(43) == feature_name("26") == "unknown Feature ID"
    assert feature_name(True) == "unknown Feature ID"


def test_feature_ids_match_the_tp469_table(reference_dir):
    """The IDs we name are the rows of TP-469's Feature ID table (00-introduction.md)."""
    intro = (reference_dir / "tp-469" / "00-introduction.md").read_text(encoding="utf-8")
    ids = {int(m) for m in re.findall(r"^\| (\d+) \|", intro, re.MULTILINE)}
    assert ids == set(FEATURE_NAMES)
    removed = {int(m) for m in
               re.findall(r"^\| (\d+) \| \(removed\)", intro, re.MULTILINE | re.IGNORECASE)}
    assert removed and all(FEATURE_NAMES[i] == "(withdrawn)" for i in removed)


# --- write_reports ----------------------------------------------------------------------------


def test_write_reports_writes_everything(tmp_path: Path):
    out = tmp_path / "deep" / "reports"
    paths = write_reports(sample_run(), out)
    assert set(paths) == {"results", "summary", "html", "failures_html", "junit"}
    assert {p.name for p in paths.values()} == {"results.json", "summary.json", "report.html",
                                                "report-failures.html", "junit.xml"}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())
    assert RunResult.from_json(json.loads(paths["results"].read_text("utf-8"))) == sample_run()
    assert json.loads(paths["summary"].read_text("utf-8"))["exit_status"] == 2
    assert paths["html"].read_text("utf-8") == render_html(sample_run())
    assert 'id="case-1.10"' not in paths["failures_html"].read_text("utf-8")
    ET.parse(paths["junit"])


def test_write_reports_overwrites_and_leaves_no_temp_files(tmp_path: Path):
    write_reports(RunResult(), tmp_path)
    paths = write_reports(sample_run(), tmp_path)
    assert "Acme Gateway" in paths["html"].read_text("utf-8")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_write_reports_hostile_text_round_trips(tmp_path: Path):
    run = hostile_run(HOSTILE + "\ud800\x00")
    paths = write_reports(run, tmp_path)
    assert RunResult.from_json(json.loads(paths["results"].read_text("utf-8"))) == run
    _assert_inert(paths["html"].read_text("utf-8"))
    ET.parse(paths["junit"])


def test_write_reports_renders_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A rendering failure leaves no partial set of reports behind."""
    def broken(run: RunResult) -> str:
        raise RuntimeError("boom")
    monkeypatch.setattr(report_html, "to_junit_xml", broken)
    with pytest.raises(RuntimeError):
        write_reports(sample_run(), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
