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


def test_every_section_1_case_is_killed_by_a_fault():
    cases = [load_case(p) for p in iter_case_files(SECTION_1)]
    assert all(c.killed_by for c in cases if c.functionality in ("mandatory", "conditional"))
    rows = asyncio.run(run_matrix(cases))
    assert all(r.ok for r in rows), table(rows)
    assert {r.case_id for r in rows if r.fault is None} == {c.case_id for c in cases}


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
