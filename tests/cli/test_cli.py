"""The usp-conformance command line (run as a real process where it matters)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conformance import cli
from conformance.usp import records
from conformance.usp.messages import request

C, A = "proto::controller-1", "os::012345-ABC"
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _record_bytes(**kw):
    msg = request("get", {"param_paths": ["Device.DeviceInfo."]}, msg_id="m1")
    return records.serialize(records.no_session_record(msg, to_id=kw.get("to", C),
                                                       from_id=kw.get("frm", A)))


def test_decode_binary_and_hex(tmp_path, capsys):
    path = tmp_path / "rec.bin"
    path.write_bytes(_record_bytes())
    assert cli.main(["decode", str(path)]) == 0
    assert "msg_type: GET" in capsys.readouterr().out
    hexfile = tmp_path / "rec.hex"
    hexfile.write_text(_record_bytes().hex(" ") + "\n")
    assert cli.main(["decode", str(hexfile)]) == 0
    assert 'from_id: "os::012345-ABC"' in capsys.readouterr().out


def test_check_ok_and_failing(tmp_path, capsys):
    good = tmp_path / "good.bin"
    good.write_bytes(_record_bytes())
    assert cli.main(["check", str(good), "--eut-endpoint-id", A]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.bin"
    bad.write_bytes(_record_bytes(frm="not an endpoint id"))
    assert cli.main(["check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "record.from_id" in out


def test_user_errors_are_one_line(tmp_path):
    missing = tmp_path / "nope.bin"
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "decode", str(missing)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"usp-conformance: error: no such file: {missing} (give a file holding one USP Record, or -)"]
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xff\xff\xff")
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "decode", str(junk)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a USP Record" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_odd_hex_and_no_command(tmp_path, capsys):
    odd = tmp_path / "odd.hex"
    odd.write_text("abc")
    assert cli.main(["decode", str(odd)]) == 2
    assert "odd number of hex digits" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_console_script_installed():
    proc = subprocess.run([sys.executable, "-c",
                           "import importlib.metadata as m;"
                           "print([e.value for e in m.entry_points(group='console_scripts')"
                           " if e.name=='usp-conformance'])"],
                          capture_output=True, text=True, timeout=60)
    assert "conformance.cli:main" in proc.stdout


def test_run_list_report_certs_end_to_end(tmp_path):
    """The product commands as a user types them: run (built-in agent), list, report, certs."""
    reports = tmp_path / "reports"
    cases = tmp_path / "cases" / "01"
    cases.mkdir(parents=True)
    for src in (ROOT / "testcases" / "01-messages-and-path-names").glob("1.1-*.yaml"):
        shutil.copy(src, cases / src.name)
    proc = subprocess.run([sys.executable, "-m", "conformance.cli", "run", "--cases",
                           str(cases.parent), "--reports", str(reports)],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("report.html", "report-failures.html", "summary.json", "junit.xml",
                 "results.json"):
        assert (reports / name).is_file()
    import json

    allure_results = [json.loads(p.read_text())
                      for p in (reports / "allure-results").glob("*-result.json")]
    case_1_1 = [r for r in allure_results
                if {"name": "story", "value": "1.1"} in r["labels"]]
    assert len(case_1_1) == 1, "no allure result for case 1.1"
    labels = {(label["name"], label["value"]) for label in case_1_1[0]["labels"]}
    assert {("epic", "1 Messages and Path Names"), ("severity", "critical")} <= labels
    assert {"type": "requirement", "url": "R-ADD.1", "name": "R-ADD.1"} in case_1_1[0]["links"]
    failing = subprocess.run([sys.executable, "-m", "conformance.cli", "run", "--cases",
                              str(cases.parent), "--fault", "add.no_unique_keys",
                              "--reports", str(tmp_path / "f")],
                             capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert failing.returncode == 1, failing.stdout + failing.stderr
    listing = subprocess.run([sys.executable, "-m", "conformance.cli", "list"],
                             capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert listing.returncode == 0 and "1.1 " in listing.stdout
    again = subprocess.run([sys.executable, "-m", "conformance.cli", "report",
                            str(reports / "results.json"), "--out", str(tmp_path / "again")],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and (tmp_path / "again" / "report.html").is_file()
    certs = subprocess.run([sys.executable, "-m", "conformance.cli", "certs",
                            str(tmp_path / "pki")], capture_output=True, text=True, timeout=120)
    assert certs.returncode == 0 and (tmp_path / "pki" / "ca.crt").is_file()


def test_run_and_report_user_errors(tmp_path):
    for argv, message in ((["run", "--cases", str(tmp_path / "none")], "no case directory"),
                          (["run", "--eut", str(tmp_path / "x.yaml")], "no such EUT profile"),
                          (["report", str(tmp_path / "nope.json")], "cannot read"),
                          (["certs", str(tmp_path / "c"), "--agent-id", "bad"],
                           "not a valid Endpoint ID")):
        proc = subprocess.run([sys.executable, "-m", "conformance.cli", *argv],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, argv
        assert message in proc.stderr and "Traceback" not in proc.stderr
