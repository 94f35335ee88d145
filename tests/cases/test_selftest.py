"""The selftest kill matrix: every case passes clean and fails on its faults' metrics."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.cases.loader import iter_case_files, load_case
from conformance.cases.schema import CaseSchemaError
from conformance.cases.selftest import Row, run_matrix, table

ROOT = Path(__file__).resolve().parents[2]
SECTION_1 = ROOT / "testcases" / "01-messages-and-path-names"


def _section_1() -> list:
    """The section-1 cases that run by default (deprecated and future ones do not)."""
    cases = [load_case(p) for p in iter_case_files(SECTION_1)]
    return [c for c in cases if c.functionality in ("mandatory", "conditional")]


def test_section_1_is_complete():
    """TP-469 1.1-1.107 less 1.69 (deleted): 106 files; 1.63 deprecated, 1.85 future."""
    cases = {c.case_id: c for c in (load_case(p) for p in iter_case_files(SECTION_1))}
    assert set(cases) == {f"1.{n}" for n in range(1, 108) if n != 69}
    assert cases["1.63"].functionality == "deprecated"
    assert cases["1.85"].functionality == "future"


@pytest.mark.timeout(1800)
def test_section_1_kill_matrix_over_mqtt_and_clean_runs_over_websocket():
    """Issue 6's selftest in CI: the kill matrix over MQTT 5.0 and the clean runs over
    WebSocket (the agent dials the suite), run side by side (they mostly wait)."""
    cases = _section_1()
    assert all(c.killed_by for c in cases)

    async def both() -> tuple[list[Row], list[Row]]:
        return await asyncio.gather(run_matrix(cases, jobs=4),
                                    run_matrix(cases, mtp="websocket", faults=False, jobs=3))
    mqtt, websocket = asyncio.run(both())
    assert all(r.ok for r in mqtt), table(mqtt)
    assert {r.case_id for r in mqtt if r.fault is None} == {c.case_id for c in cases}
    assert not [r for r in mqtt if r.verdict == "skip"]  # MQTT carries every identity
    assert all(r.ok for r in websocket), table(websocket)
    assert all(r.fault is None for r in websocket)


def test_row_judgement():
    assert Row("1.1", None, "pass", "pass", None, "").ok
    assert not Row("1.1", None, "pass", "fail", 2, "").ok
    assert Row("1.1", "f", "fail@2", "fail", 2, "").ok
    assert not Row("1.1", "f", "fail@2", "fail", 3, "").ok      # killed on the wrong metric
    assert not Row("1.1", "f", "fail@2", "error", None, "").ok  # a suite error proves nothing
    assert not Row("1.1", "f", "fail@2", "pass", None, "").ok   # a fault that does not kill


def test_selftest_command_reports_a_fault_that_does_not_kill(tmp_path):
    cases = tmp_path / "cases" / "01"
    cases.mkdir(parents=True)
    src = next(SECTION_1.glob("1.1-*.yaml"))
    text = src.read_text().split("killed_by:")[0] + "killed_by:\n  add.partial_commit: 2\n"
    (cases / src.name).write_text(text)
    out = tmp_path / "st.json"
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "selftest", "--cases",
                           str(tmp_path / "cases"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    assert [(r["fault"], r["verdict"], r["ok"]) for r in rows] == [
        (None, "pass", True), ("add.partial_commit", "pass", False)]
    assert "1 not as expected" in proc.stdout


@pytest.mark.parametrize("killed_by, message", [
    ("  add.no_such_fault: 2\n", "unknown fault 'add.no_such_fault'"),
    ("  add.no_unique_keys: 99\n", "99 is not a metric of this case"),
])
def test_killed_by_is_validated(tmp_path, killed_by, message):
    src = next(SECTION_1.glob("1.1-*.yaml"))
    target = tmp_path / src.name
    target.write_text(src.read_text().split("killed_by:")[0] + "killed_by:\n" + killed_by)
    with pytest.raises(CaseSchemaError, match=message):
        load_case(target)
    shutil.rmtree(tmp_path, ignore_errors=True)


#: MTP sections and the runs of the reference agent they are proven over (issue 7).
MTP_SECTIONS = [("06-stomp", "stomp"), ("07-websocket", "websocket"),
                ("07-websocket", "websocket-server"), ("11-mqtt", "mqtt"),
                ("11-mqtt", "mqtt311"), ("uds", "uds")]


@pytest.mark.timeout(1800)
def test_mtp_sections_kill_matrices():
    """Issue 7's selftest in CI: each MTP section's cases pass clean and fail on every fault
    of their killed_by, over each run they are about (all runs side by side)."""
    plans = []
    for folder, mtp in MTP_SECTIONS:
        root = ROOT / "testcases" / folder
        cases = [c for c in (load_case(p) for p in iter_case_files(root))
                 if c.functionality in ("mandatory", "conditional")] if root.is_dir() else []
        assert all(c.killed_by for c in cases), folder
        if cases:
            plans.append((folder, mtp, cases))

    async def every() -> list[list[Row]]:
        return await asyncio.gather(*(run_matrix(cases, mtp=mtp, jobs=2)
                                      for _, mtp, cases in plans))
    for (folder, mtp, cases), rows in zip(plans, asyncio.run(every())):
        assert all(r.ok for r in rows), f"{folder} over {mtp}:\n" + table(rows)
        ran = {r.case_id for r in rows if r.verdict != "skip"}
        # every case about this MTP really ran (the TLS ones in a TLS run of the agent)
        assert {c.case_id for c in cases if c.applies_to(mtp)} <= ran, table(rows)


#: TP-469 sections 2-4 (issue 8): authentication and access control, USP Records, MTP TLS.
SECURITY_SECTIONS = ("02-authentication-and-access-control", "03-usp-records", "04-general-mtp")


def _security_cases() -> list:
    cases = [load_case(p) for folder in SECURITY_SECTIONS
             for p in iter_case_files(ROOT / "testcases" / folder)]
    return cases


def test_sections_2_to_4_are_complete():
    """2.1-2.27 (2.3-2.5 deprecated), 3.1-3.15 and 4.1; every other one runs by default."""
    cases = {c.case_id: c for c in _security_cases()}
    assert set(cases) == ({f"2.{n}" for n in range(1, 28)} | {f"3.{n}" for n in range(1, 16)}
                          | {"4.1"})
    assert {i for i, c in cases.items() if c.functionality == "deprecated"} == {
        "2.3", "2.4", "2.5"}
    assert all(c.killed_by for c in cases.values() if c.functionality != "deprecated")


@pytest.mark.timeout(1800)
def test_sections_2_to_4_kill_matrix_over_mqtt_and_clean_runs_over_websocket():
    """Issue 8's selftest in CI: the kill matrix over MQTT 5.0 (every identity; TLS and
    no-absolute-time cases on agents of such runs) and clean runs over WebSocket with the
    agent dialing the suite and with the suite dialing the agent."""
    cases = [c for c in _security_cases() if c.functionality != "deprecated"]

    async def every() -> tuple[list[Row], list[Row], list[Row]]:
        return await asyncio.gather(
            run_matrix(cases, jobs=3),
            run_matrix(cases, mtp="websocket", faults=False, jobs=2),
            run_matrix(cases, mtp="websocket-server", faults=False, jobs=1))
    mqtt, websocket, server = asyncio.run(every())
    assert all(r.ok for r in mqtt), table(mqtt)
    assert not [r for r in mqtt if r.verdict == "skip"]  # MQTT carries every identity
    for rows in (websocket, server):
        assert all(r.ok for r in rows), table(rows)
        # what skips over a single WebSocket connection is a case acting as another identity
        assert all("controller" in r.reason for r in rows if r.verdict == "skip"), table(rows)
