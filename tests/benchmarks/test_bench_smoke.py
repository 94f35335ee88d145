"""The benchmark scripts still run (tiny sizes; nothing about speed is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_mtp_runs_and_writes_results(tmp_path):
    out = tmp_path / "mtp.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_mtp.py"),
                           "--iterations", "5", "--agents", "2", "--messages", "5",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data["get_round_trip"]) == {"mqtt", "stomp", "websocket", "uds"}
    assert data["mqtt_broker_throughput"][0]["messages"] == 10
