"""External EUTs over every profile MTP (``--usp-eut`` with a device the suite does not start).

The reference agent, run as its own process (``usp-conformance agent``), stands in for
a device: its run configuration points its data model at the suite as a real device's
configuration would, the profile describes it, and TP-469 1.1 must pass over STOMP
(TLS, login, virtual host), WebSocket with the agent dialing the suite, WebSocket with
the suite dialing the agent's server (wss), UDS, and MQTT on an operator's broker
(Debian's mosquitto). A small case reboots the EUT (``reboot: {}``, method ``usp``)
and Gets afterwards: the suite waits for the new life's connect Record (R-MTP.8) or,
where the EUT listens, dials it again.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

# Imported before any in-process pytester run: cryptography's Rust bindings cannot be
# imported twice, and pytester drops the modules a run imported.
from conformance.cases.environment import CONNECT_RECORDS, ExternalEnvironment
from conformance.cases.runner import SuiteError
from conformance.eut import load_profile
from conformance.mtp.binding import NOT_APPLICABLE_EXTERNAL
from conformance.mtp.pki import TestPKI
from conformance.usp import messages
from tests.support.tools import free_port, mosquitto_broker

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
REAL_1_1 = next((ROOT / "testcases" / "01-messages-and-path-names").glob("1.1-*.yaml"))
AGENT_ID = "os::012345-0001"
REBOOT_CASE = """\
id: X-RB-1
title: Reboot, then answer a Get
purpose: The EUT reboots through the profile's method and answers once it is back.
functionality: mandatory
metrics:
  1: The EUT reboots and comes back.
  2: It answers a Get afterwards.
steps:
  - reboot: {metrics: [1]}
  - send: {get: {param_paths: [Device.LocalAgent.EndpointID]}}
    expect:
      response: {get_resp: {req_path_results: [{err_code: 0}]}}
      metrics: [2]
"""
#: Data model values every stand-in agent gets: no MQTT unless asked for.
NO_MQTT = {"Device.LocalAgent.Controller.1.MTP.1.Enable": "false"}


def _cases(pytester: pytest.Pytester, *, reboot: bool = False) -> None:
    target = pytester.path / "testcases" / "x" / REAL_1_1.name
    target.parent.mkdir(parents=True)
    shutil.copyfile(REAL_1_1, target)
    if reboot:
        (target.parent / "X-RB-1-reboot.yaml").write_text(REBOOT_CASE)


@contextmanager
def _agent(tmp: Path, values: Mapping[str, str], tls: str = "") -> Iterator[None]:
    """The reference agent as its own process; stopped by PID (it re-executes itself on
    reboot, keeping the PID). Its stderr is shown when a run fails."""
    config = tmp / "agent.yaml"
    config.write_text(f"state_dir: {tmp / 'state'}\n{tls}values:\n"
                      + "".join(f"  {k}: {json.dumps(str(v))}\n" for k, v in values.items()))
    log = tmp / "agent.log"
    with log.open("wb") as err:
        agent = subprocess.Popen([sys.executable, "-m", "conformance.cli", "agent", "--config",
                                  str(config)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        yield
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=30)


def _profile(pytester: pytest.Pytester, mtp: str, *, features: str = "[]") -> Path:
    profile = pytester.path / "cpe.yaml"
    profile.write_text(
        "eut: {name: Stand-in CPE, endpoint_id: 'os::012345-0001', firmware_version: '1.0.0'}\n"
        f"features: {features}\n"
        f"mtps:\n  - {mtp}\n"
        "controllers: {primary: {endpoint_id: 'proto::controller-1'}}\n"
        "reboot: {method: usp}\n"
        "timeouts: {reconnect: 30}\n")
    return profile


def _passes(pytester: pytest.Pytester, tmp: Path, profile: Path, cases: int) -> dict:
    """Run the copied cases against the profile: every case passes."""
    result = pytester.runpytest("-p", "no:cacheprovider", "--usp-eut", str(profile))
    log = (tmp / "agent.log").read_text(errors="replace")[-3000:]
    assert result.ret == 0, result.stdout.str() + "\nagent log:\n" + log
    data = json.loads((pytester.path / "reports" / "results.json").read_text())
    assert [c["verdict"] for c in data["cases"]] == ["pass"] * cases
    return data


def _close_connection(profile: Path) -> None:
    """The close_connection action on the profile's MTP: the EUT's connection drops, a
    new channel starts with a connect Record (R-MTP.8) and the EUT answers again."""
    async def main() -> None:
        async with ExternalEnvironment(load_profile(profile)) as run:
            env = run.environment
            primary = env.controllers["primary"]
            mark = primary.mark
            await env.actions["close_connection"](None)
            await primary.connect_record(CONNECT_RECORDS[run.kind], since=mark, timeout=30)
            resp = await primary.request(messages.request(
                "get", {"param_paths": ["Device.LocalAgent.EndpointID"]}), timeout=10)
            assert resp.body.WhichOneof("msg_body") == "response"
    asyncio.run(main())


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, str]:
    """A test CA with the suite's (controller) and the agent's certificates (both name
    127.0.0.1), and the agent's run-configuration ``tls:`` line."""
    certs = tmp_path / "certs"
    TestPKI.create(certs, controller_id="proto::controller-1", agent_id=AGENT_ID)
    return certs, (f"tls: {{certificate: {certs / 'agent.crt'}, private_key: "
                   f"{certs / 'agent.key'}, trust: {certs / 'ca.crt'}}}\n")


def test_stomp_with_login_and_reboot(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """R-STOMP.3/5 login and virtual host, the agent's own destination from the profile,
    the broker's heart-beat offer; reboot by Device.Reboot() waits for STOMPConnect."""
    _cases(pytester, reboot=True)
    port = free_port()
    profile = _profile(pytester, (
        f"{{mtp: stomp, port: {port}, virtual_host: usp, username: eut, password: s3cret, "
        "agent_destination: '/queue/agent-os::012345-0001', "
        "controller_destination: /queue/controller, "
        "heart_beat: {outgoing: 1000, incoming: 0}}"), features="[17]")
    conn = "Device.STOMP.Connection.1."
    with _agent(tmp_path, {**NO_MQTT, conn + "Port": str(port), conn + "Enable": "true",
                           conn + "ServerRetryInitialInterval": "1", conn + "VirtualHost": "usp",
                           conn + "Username": "eut", conn + "Password": "s3cret",
                           "Device.LocalAgent.MTP.2.Enable": "true",
                           "Device.LocalAgent.Controller.1.MTP.2.Enable": "true"}):
        data = _passes(pytester, tmp_path, profile, cases=2)
        _close_connection(profile)
    assert data["cases"][0]["mtp"] == "stomp"


def test_websocket_agent_connects_over_mutual_tls(pytester: pytest.Pytester, tmp_path: Path,
                                                  pki: tuple[Path, str]) -> None:
    """The agent dials the suite's wss:// server on the profile's port and path; the server
    presents the profile's certificate and asks for the agent's (R-WS.22, Feature 15)."""
    certs, agent_tls = pki
    _cases(pytester)
    port = free_port()
    profile = _profile(pytester, (
        f"{{mtp: websocket, role: agent-connects, port: {port}, path: /usp/conformance, "
        f"tls: {{enabled: true, certificate: {certs / 'controller.crt'}, "
        f"key: {certs / 'controller.key'}, ca: {certs / 'ca.crt'}, "
        "require_client_cert: true}}"), features="[15, 19]")
    ctrl = "Device.LocalAgent.Controller.1.MTP.3."
    with _agent(tmp_path, {**NO_MQTT, "Device.LocalAgent.MTP.3.Enable": "true",
                           "Device.LocalAgent.MTP.3.WebSocket.Port": "0",
                           ctrl + "Enable": "true", ctrl + "WebSocket.Port": str(port),
                           ctrl + "WebSocket.Path": "/usp/conformance",
                           ctrl + "WebSocket.EnableEncryption": "true",
                           ctrl + "WebSocket.SessionRetryMinimumWaitInterval": "1"},
                tls=agent_tls):
        data = _passes(pytester, tmp_path, profile, cases=1)
        _close_connection(profile)
    assert data["cases"][0]["mtp"] == "websocket"


def test_websocket_controller_connects_over_wss_and_reboot(
        pytester: pytest.Pytester, tmp_path: Path, pki: tuple[Path, str]) -> None:
    """The suite dials the agent's wss:// server (R-WS.3, R-WS.22), verifying it with the
    profile's CA and presenting the controller's certificate (mutual TLS), at start and
    again after the agent's reboot."""
    certs, agent_tls = pki
    _cases(pytester, reboot=True)
    port = free_port()
    profile = _profile(pytester, (
        f"{{mtp: websocket, role: controller-connects, url: 'wss://127.0.0.1:{port}/usp', "
        f"tls: {{enabled: true, ca: {certs / 'ca.crt'}, certificate: "
        f"{certs / 'controller.crt'}, key: {certs / 'controller.key'}}}}}"),
        features="[15, 19]")
    with _agent(tmp_path, {**NO_MQTT, "Device.LocalAgent.MTP.3.Enable": "true",
                           "Device.LocalAgent.MTP.3.WebSocket.Port": str(port),
                           "Device.LocalAgent.MTP.3.WebSocket.EnableEncryption": "true"},
                tls=agent_tls):
        data = _passes(pytester, tmp_path, profile, cases=2)
        _close_connection(profile)   # the suite dials the agent again
    assert data["cases"][0]["mtp"] == "websocket-server"


def test_uds(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The agent connects to the suite's Unix domain socket at the profile's path."""
    _cases(pytester)
    with tempfile.TemporaryDirectory(prefix="usp-") as short:  # socket paths are short
        sock = Path(short) / "eut.sock"
        profile = _profile(pytester, f"{{mtp: uds, socket: {sock}}}")
        with _agent(tmp_path, {**NO_MQTT,
                               "Device.UnixDomainSockets.UnixDomainSocket.1.Path": str(sock),
                               "Device.LocalAgent.MTP.4.Enable": "true",
                               "Device.LocalAgent.Controller.1.MTP.4.Enable": "true"}):
            data = _passes(pytester, tmp_path, profile, cases=1)
    assert data["cases"][0]["mtp"] == "uds"


def test_mqtt_on_an_operators_broker(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Both the agent and the suite's controllers are clients of mosquitto: the suite
    finds the EUT with a Get probe on agent_topic, 1.1 runs as usual, and after a reboot
    the suite waits for the new life; the broker's packets are not the suite's to script
    or drop (not applicable in external-broker mode)."""
    _cases(pytester, reboot=True)
    with mosquitto_broker(tmp_path) as port:
        profile = _profile(pytester, (
            f"{{mtp: mqtt, broker: external, host: 127.0.0.1, port: {port}, "
            f"agent_topic: 'usp/agent/{AGENT_ID}', controller_topic: usp/controller, "
            "client_id: usp-conformance}"), features="[36]")
        client = "Device.MQTT.Client.1."
        with _agent(tmp_path, {client + "BrokerPort": str(port), client + "Enable": "true",
                               client + "ConnectRetryTime": "1",
                               "Device.LocalAgent.MTP.1.Enable": "true"}):
            data = _passes(pytester, tmp_path, profile, cases=2)

            async def main() -> None:
                async with ExternalEnvironment(load_profile(profile)) as run:
                    env = run.environment
                    assert env.mtp == "mqtt" and set(env.controllers) == {
                        "primary", "secondary", "unknown"}
                    for action in (env.actions["close_connection"](None),
                                   env.scenario("mqtt", {"refuse_connections": True})):
                        with pytest.raises(SuiteError, match=NOT_APPLICABLE_EXTERNAL):
                            await action
            asyncio.run(main())
    assert data["cases"][0]["mtp"] == "mqtt"
