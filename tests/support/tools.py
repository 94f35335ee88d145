"""External programs the interop tests use: found, started and stopped by PID.

Locally a missing tool skips the test with the install command; under CI
(``CI=true``) it fails instead, because ``.ci/run`` must have installed it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"
APT_HINT = "apt-get install mosquitto mosquitto-clients"


def require_tool(path_or_name: str, install_hint: str) -> str:
    """The tool's path; skip (locally) or fail (CI) when it is missing."""
    found = path_or_name if os.path.isabs(path_or_name) and os.access(path_or_name, os.X_OK) \
        else shutil.which(path_or_name)
    if found:
        return found
    message = f"{path_or_name} not installed (install with: {install_hint})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; .ci/run must install it")
    pytest.skip(message)


def free_port() -> int:
    """A currently free loopback TCP port, for programs that cannot take port 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mosquitto_broker(tmp_path: Path, *, timeout: float = 10.0) -> Iterator[int]:
    """Run Debian's mosquitto on a loopback port; yield the port; stop it by PID."""
    binary = require_tool(MOSQUITTO, APT_HINT)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
                    "log_type information\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    ready = threading.Event()
    lines: list[str] = []

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if " running" in line:
                ready.set()
        ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(timeout) or proc.poll() is not None:
            raise RuntimeError(f"mosquitto did not start: {''.join(lines)[-500:]}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
