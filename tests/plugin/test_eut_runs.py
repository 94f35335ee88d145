"""Runs driven by an EUT profile (--usp-eut): applicability, faults, report EUT info."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
REAL_1_1 = next((ROOT / "testcases" / "01-messages-and-path-names").glob("1.1-*.yaml"))
REFERENCE = ROOT / "fixtures" / "eut" / "reference-agent.yaml"


def _setup(pytester: pytest.Pytester) -> None:
    target = pytester.path / "testcases" / "01" / REAL_1_1.name
    target.parent.mkdir(parents=True)
    shutil.copyfile(REAL_1_1, target)


def _results(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


def test_builtin_profile_runs_and_fills_the_report(pytester: pytest.Pytester) -> None:
    _setup(pytester)
    profile = pytester.path / "eut.yaml"
    text = REFERENCE.read_text()
    profile.write_text(text.replace("name: usp-conformance reference Agent",
                                    "name: Lab unit 7"))
    result = pytester.runpytest("-p", "no:cacheprovider", "--usp-eut", str(profile))
    assert result.ret == 0, result.stdout.str()
    data = _results(pytester.path / "reports")
    assert data["eut"]["name"] == "Lab unit 7"
    assert data["eut"]["endpoint_id"] == "os::012345-0001"
    assert 36 in data["eut"]["feature_ids"]
    # Faults named in the profile's agent section reach the built-in agent.
    faulty = pytester.path / "faulty.yaml"
    faulty.write_text(text.replace("  faults: []", "  faults: [add.no_unique_keys]"))
    result = pytester.runpytest("-p", "no:cacheprovider", "--usp-eut", str(faulty),
                                "--usp-reports", "r2")
    assert result.ret == 1, result.stdout.str()
    assert _results(pytester.path / "r2")["cases"][0]["verdict"] == "fail"


def test_external_eut_over_the_suite_broker(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The reference agent run as its own process stands in for a real device: the
    profile describes it, the suite is its MQTT broker on the profile's port."""
    import signal
    import subprocess
    import sys

    from tests.support.tools import free_port

    _setup(pytester)
    port = free_port()
    profile = pytester.path / "cpe.yaml"
    profile.write_text(
        "eut: {name: Stand-in CPE, endpoint_id: 'os::012345-0001', firmware_version: '1.0.0'}\n"
        "features: [36]\n"
        f"mtps:\n  - {{mtp: mqtt, version: '5.0', broker: suite, host: 127.0.0.1, port: {port},"
        " controller_topic: usp/controller}\n"
        "controllers: {primary: {endpoint_id: 'proto::controller-1'}}\n"
        "reboot: {method: usp}\n"
        "timeouts: {reconnect: 30}\n")
    config = tmp_path / "agent.yaml"
    config.write_text("state_dir: state\nvalues:\n"
                      f"  Device.MQTT.Client.1.BrokerPort: {port}\n"
                      "  Device.MQTT.Client.1.ConnectRetryTime: 1\n"
                      "  Device.MQTT.Client.1.Enable: true\n"
                      "  Device.LocalAgent.MTP.1.Enable: true\n")
    agent = subprocess.Popen([sys.executable, "-m", "conformance.cli", "agent", "--config",
                              str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        result = pytester.runpytest("-p", "no:cacheprovider", "--usp-eut", str(profile))
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=30)
    assert result.ret == 0, result.stdout.str()
    data = _results(pytester.path / "reports")
    assert data["eut"]["name"] == "Stand-in CPE"
    assert data["cases"][0]["verdict"] == "pass"


@pytest.mark.parametrize(("mtp", "message"), [
    ("{mtp: stomp, tls: {enabled: true}}",
     "TLS needs the server certificate and key the suite presents; fix: add tls.certificate"),
    ("{mtp: mqtt, broker: external, host: 127.0.0.1, port: 1883}",
     "has no agent_topic, which an external broker needs"),
    ("{mtp: stomp, port: PORT}", "the suite's stomp server cannot listen on 127.0.0.1:PORT"),
    ("{mtp: websocket, role: controller-connects, url: 'ws://127.0.0.1:PORT/usp'}",
     "cannot reach the EUT's WebSocket server ws://127.0.0.1:PORT/usp"),
])
def test_external_setup_mistakes_are_one_line_suite_errors(pytester: pytest.Pytester,
                                                           mtp: str, message: str) -> None:
    """Missing TLS files, no agent_topic on an external broker, a port in use, an
    unreachable url: exit status 2 and one line naming the problem and the fix."""
    import socket

    _setup(pytester)
    with socket.socket() as busy:  # a port in use (for the url: nothing listens on it)
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        if "url" not in mtp:
            busy.listen()
        else:
            busy.close()
        profile = pytester.path / "cpe.yaml"
        profile.write_text(
            "eut: {name: CPE, endpoint_id: 'os::00D09E-CPE-1', firmware_version: '1'}\n"
            f"features: []\nmtps:\n  - {mtp.replace('PORT', str(port))}\n"
            "controllers: {primary: {endpoint_id: 'proto::controller-1'}}\n"
            "timeouts: {reconnect: 1}\n")
        result = pytester.runpytest("-p", "no:cacheprovider", "--usp-eut", str(profile))
    out = result.stdout.str()
    assert result.ret == 2, out
    assert "Traceback" not in out
    reason = _results(pytester.path / "reports")["cases"][0]["reason"]
    assert message.replace("PORT", str(port)) in reason and "; fix: " in reason
    assert "\n" not in reason and reason.startswith("could not start the test environment: ")
