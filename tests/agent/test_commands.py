"""Command implementations of the reference Agent: arguments (R-OPR.5-7), registry,
Reboot/ScheduleTimer, firmware Download()/Activate() and boot (TP-469 9.3-9.8),
certificates (TP-469 9.2), SendOnBoardRequest (TP-469 1.60, 9.9), transfers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent import commands
from conformance.agent.commands import base, certificates, firmware, requests, transfer
from conformance.agent.commands.args import (
    ArgumentError,
    check_args,
    supported_arg_name,
)
from conformance.agent.context import AgentState, RequestContext
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.defs import CommandDef
from conformance.agent.datamodel.store import Store, ValueChanged
from conformance.agent.faults import REGISTRY, FaultSet
from conformance.agent.messages.operate import handle_operate
from conformance.mtp import pki
from conformance.usp import messages

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"
DM = load_definitions()
IMG = "Device.DeviceInfo.FirmwareImage."


# --- doubles (see test_operate for the same shapes) --------------------------------------------


class FakeServices:
    def __init__(self) -> None:
        self.pending: list[Callable[[], Awaitable[None]]] = []
        self.reboots: list[tuple[str, str]] = []
        self.resets: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    def run_async(self, job: Callable[[], Awaitable[None]], *, name: str) -> None:
        assert name
        self.pending.append(job)

    def reboot(self, cause: str, command_key: str) -> None:
        self.reboots.append((cause, command_key))

    def factory_reset(self, command_key: str) -> None:
        self.resets.append(command_key)

    def start(self) -> None:
        while self.pending:
            self.tasks.append(asyncio.ensure_future(self.pending.pop(0)()))  # type: ignore[arg-type]

    async def drain(self) -> None:
        while True:
            self.start()
            busy = [t for t in self.tasks if not t.done()]
            if not busy and not self.pending:
                return
            await asyncio.wait(busy)


class FakeNotifications:
    def __init__(self) -> None:
        self.completed: list[tuple[str, str, str, Any, Any]] = []
        self.events: list[tuple[str, str, dict[str, str]]] = []
        self.onboard: list[str] = []

    def event(self, obj_path: str, event_name: str, params: dict[str, str]) -> None:
        self.events.append((obj_path, event_name, dict(params)))

    def operation_complete(self, obj_path: str, command_name: str, command_key: str, *,
                           output_args: dict[str, str] | None = None,
                           failure: tuple[int, str] | None = None) -> None:
        self.completed.append((obj_path, command_name, command_key, output_args, failure))

    def on_board_request(self, controller_path: str) -> None:
        self.onboard.append(controller_path)


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []
        self.block_over: float | None = 1000

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.block_over is not None and seconds > self.block_over:
            await asyncio.Event().wait()
        await asyncio.sleep(0)


@pytest.fixture
def sleep(monkeypatch: pytest.MonkeyPatch) -> FakeSleep:
    fake = FakeSleep()
    monkeypatch.setattr(base, "sleep", fake)
    return fake


def make_state(*faults: str, images: int = 0) -> AgentState:
    state = AgentState(AGENT, DM, Store(DM), faults=FaultSet(faults), services=FakeServices(),
                       notifications=FakeNotifications())
    if images:
        firmware.install_factory_images(state.store, version="1.0.0", banks=images)
    return state


def svc(state: AgentState) -> FakeServices:
    assert isinstance(state.services, FakeServices)
    return state.services


def notes(state: AgentState) -> FakeNotifications:
    assert isinstance(state.notifications, FakeNotifications)
    return state.notifications


def operate(state: AgentState, command: str, args: dict[str, str] | None = None, *,
            key: str = "key", controller: str = CTRL) -> Any:
    msg = messages.request("operate", {"command": command, "command_key": key, "send_resp": True,
                                       "input_args": args or {}}, msg_id="m")
    reply = handle_operate(state, RequestContext(controller, msg))
    assert reply is not None
    (res,) = reply.body.response.operate_resp.operation_results
    return res


def drain(state: AgentState) -> None:
    asyncio.run(svc(state).drain())


def command(path: str) -> CommandDef:
    found = DM.find(path)
    assert isinstance(found, CommandDef)
    return found


# --- registry -----------------------------------------------------------------------------


def test_registry_matches_the_data_model():
    assert commands.check_registry(DM) == []
    assert commands.implementation(command("Device.Reboot()")) is not None
    assert commands.implementation(command("Device.MQTT.Client.{i}.ForceReconnect()")) is None
    missing = commands.unsupported(DM)
    assert "Device.Reboot()" not in missing and "Device.MQTT.Client.{i}.ForceReconnect()" in missing


def test_check_registry_reports_mismatches(monkeypatch):
    fake = dict(commands.COMMANDS)
    fake["Device.NoSuch()"] = commands.device.REBOOT
    fake["Device.ScheduleTimer()"] = commands.device.REBOOT  # sync run for an async command
    fake["Device.Reboot()"] = base.Implementation(commands.device.reboot, precheck=lambda i: None)
    monkeypatch.setattr(commands, "COMMANDS", fake)
    problems = commands.check_registry(DM)
    assert any("NoSuch" in p for p in problems)
    assert any("ScheduleTimer" in p and "async" in p for p in problems)
    assert any("precheck" in p for p in problems)


def test_every_command_fault_is_registered():
    for name in ("reboot.ignored", "schedule_timer.ignores_delay", "onboard.not_sent",
                 "certificate.alias_ignored", "firmware.checksum_ignored",
                 "firmware.no_transfer_complete", "firmware.auto_activate_ignored",
                 "firmware.activate_no_reboot", "firmware.boot_ignores_boot_image",
                 "operate.cancel_ignored", "operate.request_not_deleted"):
        assert REGISTRY[name].requirement.startswith(("R-", "TP-469"))


# --- arguments (R-OPR.5, R-OPR.6, R-OPR.7) --------------------------------------------------


def test_supported_arg_name():
    assert supported_arg_name("TimeWindow.2.Start") == "TimeWindow.{i}.Start"
    assert supported_arg_name("DelaySeconds") == "DelaySeconds"
    assert supported_arg_name("A.01.B") == "A.01.B"


def test_check_args_mandatory_unknown_and_defaults():
    timer = command("Device.ScheduleTimer()")
    with pytest.raises(ArgumentError, match="DelaySeconds"):  # R-OPR.5
        check_args(timer, {})
    out = check_args(timer, {"DelaySeconds": "3", "Bogus": "1"})  # R-OPR.6
    assert out.args == {"DelaySeconds": "3"} and out.ignored == ["Bogus"]
    with pytest.raises(ArgumentError):
        check_args(timer, {"DelaySeconds": "3", "Bogus": "1"}, ignore_unknown=False)
    assert check_args(timer, {}, enforce_mandatory=False).args == {}
    install = command("Device.SoftwareModules.InstallDU()")
    given = {"URL": "u", "AutoRestart.Enable": "true", "AutoRestart.RetryMinimumWaitInterval": "1",
             "AutoRestart.RetryMaximumWaitInterval": "2",
             "AutoRestart.RetryIntervalMultiplier": "2000"}
    out = check_args(install, given)  # R-OPR.7
    assert out.args["Privileged"] == "false" and out.args["ShutdownDelay"] == "10"
    assert "Privileged" in out.defaulted and "UUID" not in out.args
    with pytest.raises(ArgumentError):
        check_args(install, given, apply_defaults=False)


def test_check_args_argument_tables():
    act = command("Device.DeviceInfo.FirmwareImage.{i}.Activate()")
    with pytest.raises(ArgumentError, match="at least 1"):
        check_args(act, {})
    ok = {"TimeWindow.1.Start": "0", "TimeWindow.1.End": "5", "TimeWindow.1.Mode": "AnyTime"}
    assert check_args(act, ok).args == ok
    with pytest.raises(ArgumentError, match="TimeWindow.2.Mode"):
        check_args(act, ok | {"TimeWindow.2.Start": "6", "TimeWindow.2.End": "9"})
    with pytest.raises(ArgumentError, match="at most 5"):
        check_args(act, {f"TimeWindow.{n}.{leaf}": v for n in range(1, 7)
                         for leaf, v in (("Start", "0"), ("End", "1"), ("Mode", "AnyTime"))})
    with pytest.raises(ArgumentError, match="invalid value"):
        check_args(act, ok | {"TimeWindow.1.Mode": "Sometimes"})
    assert check_args(act, ok | {"TimeWindow.{i}.Start": "1"}).ignored == ["TimeWindow.{i}.Start"]


@settings(max_examples=200, deadline=None)
@given(path=st.sampled_from([c.path for o in DM for c in o.commands.values()]),
       args=st.dictionaries(st.one_of(st.text(max_size=30),
                                      st.sampled_from(["DelaySeconds", "TimeWindow.1.Start",
                                                       "TimeWindow.9999999999.End", "URL"])),
                            st.text(max_size=30), max_size=6))
def test_check_args_never_crashes(path, args):
    try:
        out = check_args(command(path), args)
    except ArgumentError:
        return
    assert set(out.ignored) <= set(args)


# --- device commands ----------------------------------------------------------------------


def test_reboot_fault_ignored(sleep):  # TP-469 1.61 metric 2
    state = make_state("reboot.ignored")
    assert operate(state, "Device.Reboot()").HasField("req_output_args")
    drain(state)
    assert svc(state).reboots == []


def test_schedule_timer_waits_delay_seconds(sleep):  # TP-469 1.79
    state = make_state()
    operate(state, "Device.ScheduleTimer()", {"DelaySeconds": "30"})
    drain(state)
    assert sleep.calls and sleep.calls[0] == pytest.approx(30, abs=1)
    bad = make_state("schedule_timer.ignores_delay")
    sleep.calls.clear()
    operate(bad, "Device.ScheduleTimer()", {"DelaySeconds": "30"})
    drain(bad)
    assert sleep.calls == [] and notes(bad).completed


def test_schedule_timer_guards_resumed_bad_delay():
    state = make_state()
    inv = base.Invocation(state, CTRL, "Device.", command("Device.ScheduleTimer()"), "k",
                          {"DelaySeconds": "0"}, 0.0)
    with pytest.raises(base.CommandFailed):
        asyncio.run(commands.device.schedule_timer(inv))


def test_invocation_helpers():
    state = make_state()
    inv = base.Invocation(state, CTRL, "Device.", command("Device.Reboot()"), "k",
                          {"B": "1", "N": "x", "I": "7"}, 0.0)
    assert inv.executed_command == "Device.Reboot()"
    assert inv.bool_arg("B") and not inv.bool_arg("missing") and inv.bool_arg("missing", True)
    assert inv.int_arg("I") == 7 and inv.int_arg("N", 3) == 3 and inv.arg("zz", "d") == "d"
    state.services = None
    with pytest.raises(base.CommandFailed):
        inv.services  # noqa: B018


def test_fresh_alias_and_private_values():
    store = Store(DM)
    first = store.add(requests.REQUEST_TABLE, {"Alias": "cpe-1", "#Secret": "s"})
    assert base.fresh_alias(store, requests.REQUEST_TABLE) == "cpe-2"
    assert base.private_values(store, first) == {"#Secret": "s"}
    assert "#Secret" not in store.params(first)  # invisible to USP reads
    assert base.private_values(store, "Device.LocalAgent.Request.9.") == {}


# --- controller commands ------------------------------------------------------------------


def test_send_on_board_request(sleep):  # TP-469 1.60, 9.9
    state = make_state()
    ctrl = state.store.add("Device.LocalAgent.Controller.", {"EndpointID": CTRL})
    res = operate(state, 'Device.LocalAgent.Controller.[EndpointID=="proto::controller-1"].'
                  "SendOnBoardRequest()")
    assert res.executed_command == ctrl + "SendOnBoardRequest()"
    assert notes(state).onboard == [ctrl]
    bad = make_state("onboard.not_sent")
    bad.store.add("Device.LocalAgent.Controller.", {"EndpointID": CTRL})
    assert operate(bad, "Device.LocalAgent.Controller.1.SendOnBoardRequest()") \
        .HasField("req_output_args")
    assert notes(bad).onboard == []
    bad.notifications = None
    assert operate(bad, "Device.LocalAgent.Controller.1.SendOnBoardRequest()") \
        .cmd_failure.err_code == 7022


def test_obsolete_controller_schedule_timer_raises_timer_event(sleep):  # TP-469 9.1
    state = make_state()
    state.store.add("Device.LocalAgent.Controller.", {"EndpointID": CTRL})
    res = operate(state, "Device.LocalAgent.Controller.1.ScheduleTimer()", {"DelaySeconds": "60"},
                  key="t1")
    assert res.HasField("req_output_args")
    drain(state)
    assert sleep.calls == [60]
    assert notes(state).events == [("Device.LocalAgent.Controller.1.", "Timer!",
                                    {"CommandKey": "t1"})]


# --- certificates (TP-469 9.2) ------------------------------------------------------------


@pytest.fixture(scope="module")
def creds() -> tuple[pki.Credential, pki.Credential]:
    ca = pki.make_ca("cmd-test-ca")
    return pki.issue(ca, endpoint_id="proto::one"), pki.issue(ca, endpoint_id="proto::two")


def test_add_certificate(creds):
    cred = creds[0]
    pem = cred.cert_pem().decode()
    state = make_state()
    res = operate(state, "Device.LocalAgent.AddCertificate()",
                  {"Alias": "addedCert", "Certificate": pem})
    assert res.HasField("req_output_args")
    (inst,) = state.store.instances(certificates.CERTIFICATE_TABLE)
    values = state.store.params(inst)
    assert values["Alias"] == "addedCert" and values["Enable"] == "true"
    assert values["SerialNumber"] == certificates.serial_text(cred.cert.serial_number)
    assert values["Issuer"] == cred.cert.issuer.rfc4514_string()
    assert certificates.certificate_pem(state.store, inst) == pem
    assert certificates.trusted_certificates(state.store) == {inst: pem}
    again = operate(state, "Device.LocalAgent.AddCertificate()", {"Certificate": pem})
    assert again.cmd_failure.err_code == 7022 and "serial number" in again.cmd_failure.err_msg
    dup_alias = operate(state, "Device.LocalAgent.AddCertificate()",
                        {"Alias": "addedCert", "Certificate": creds[1].cert_pem().decode()})
    assert dup_alias.cmd_failure.err_code == 7022
    assert operate(state, "Device.LocalAgent.AddCertificate()",
                   {"Certificate": creds[1].cert_pem().decode()}).HasField("req_output_args")
    assert state.store.get(certificates.CERTIFICATE_TABLE + "2.Alias").startswith("cpe-")


def test_add_certificate_rejects_garbage():
    res = operate(make_state(), "Device.LocalAgent.AddCertificate()",
                  {"Certificate": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----"})
    assert res.cmd_failure.err_code == 7027


def test_fault_certificate_alias_ignored(creds):
    state = make_state("certificate.alias_ignored")
    operate(state, "Device.LocalAgent.AddCertificate()",
            {"Alias": "addedCert", "Certificate": creds[0].cert_pem().decode()})
    assert state.store.get(certificates.CERTIFICATE_TABLE + "1.Alias") != "addedCert"


def test_serial_text():
    assert certificates.serial_text(0x1A2B) == "1A:2B"
    assert certificates.serial_text(0) == "00"


def test_get_fingerprint_and_delete(creds):
    state = make_state()
    pem = creds[0].cert_pem().decode()
    operate(state, "Device.LocalAgent.AddCertificate()", {"Certificate": pem})
    cert = certificates.CERTIFICATE_TABLE + "1."
    der = creds[0].cert.public_bytes(serialization.Encoding.DER)
    res = operate(state, cert + "GetFingerprint()", {"FingerprintAlgorithm": "SHA-256"})
    assert res.req_output_args.output_args["Fingerprint"] == hashlib.sha256(der).hexdigest().upper()
    assert operate(state, cert + "GetFingerprint()", {"FingerprintAlgorithm": "MD5"}) \
        .cmd_failure.err_code == 7027
    state.store.set("Device.LocalAgent.SupportedFingerprintAlgorithms", "SHA-1")
    assert operate(state, cert + "GetFingerprint()", {"FingerprintAlgorithm": "SHA-256"}) \
        .cmd_failure.err_code == 7027
    ctrl = state.store.add("Device.LocalAgent.Controller.",
                           {"EndpointID": "proto::x", "Credential": cert.rstrip(".")})
    assert operate(state, cert + "Delete()").HasField("req_output_args")
    assert not state.store.exists(cert)
    assert state.store.get(ctrl + "Credential") == ""  # reference removed (TR-181 Delete())
    assert certificates.certificate_pem(state.store, cert) is None


def test_get_fingerprint_without_data():
    state = make_state()
    inst = state.store.add(certificates.CERTIFICATE_TABLE, {"Alias": "x"})
    assert operate(state, inst + "GetFingerprint()", {"FingerprintAlgorithm": "SHA-1"}) \
        .cmd_failure.err_code == 7022


def test_add_my_certificate_only_for_the_controller_itself(creds):
    state = make_state()
    ctrl = state.store.add("Device.LocalAgent.Controller.", {"EndpointID": CTRL})
    args = {"Certificate": creds[0].cert_pem().decode()}
    denied = operate(state, ctrl + "AddMyCertificate()", args, controller="proto::other")
    assert denied.cmd_failure.err_code == 7006
    assert operate(state, ctrl + "AddMyCertificate()", args).HasField("req_output_args")
    assert state.store.get(ctrl + "Credential") == "Device.LocalAgent.Certificate.1"


# --- transfers ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/fw.bin", "https://localhost/fw",
                                 "http://[::1]/x", "file:///tmp/fw.bin", "file://localhost/tmp/f"])
def test_parse_source_url_accepts(url):
    src = transfer.parse_source_url(url)
    assert src.url == url and src.scheme in ("http", "https", "file")


@pytest.mark.parametrize("url, unsupported", [
    ("", True), ("ftp://127.0.0.1/x", True), ("http://user:pw@127.0.0.1/x", True),
    ("http://127.0.0.1:99999/x", True), ("file://server/share/x", True), ("file:relative", True),
    ("http:///nohost", True), ("http://127.0.0.1/a b", True),
    ("http://192.0.2.1/fw.bin", False), ("http://example.com/fw.bin", False)])
def test_parse_source_url_refuses(url, unsupported):
    with pytest.raises(transfer.TransferError) as info:
        transfer.parse_source_url(url)
    assert info.value.unsupported is unsupported


def test_remote_hosts_only_when_allowed():
    assert transfer.parse_source_url("http://192.0.2.1/x", allow_remote=True).host == "192.0.2.1"
    assert transfer.is_loopback_host("127.1.2.3") and not transfer.is_loopback_host("10.0.0.1")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=80), st.binary(max_size=10), st.none(),
                 st.from_regex(r"(https?|file)://[^\s]{0,40}", fullmatch=True)))
def test_parse_source_url_never_crashes(text):
    try:
        transfer.parse_source_url(text)
    except transfer.TransferError:
        pass


def test_fetch_file_and_limits(tmp_path):
    f = tmp_path / "fw.bin"
    f.write_bytes(b"x" * 10)
    src = transfer.parse_source_url(f.as_uri())
    assert asyncio.run(transfer.fetch(src)) == b"x" * 10
    with pytest.raises(transfer.TransferError, match="larger"):
        asyncio.run(transfer.fetch(src, max_size=5))
    with pytest.raises(transfer.TransferError, match="cannot read"):
        asyncio.run(transfer.fetch(transfer.parse_source_url((tmp_path / "no").as_uri())))


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    auth: ClassVar[str | None] = None

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://example.com/evil.bin")
            self.end_headers()
            return
        if self.path == "/slow":
            threading.Event().wait(0.6)
        if self.auth is not None and self.headers.get("Authorization") != self.auth:
            self.send_response(401)
            self.end_headers()
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"files": {}, "auth": None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_fetch_http(http_server):
    url, handler = http_server
    handler.files["/fw.bin"] = b"version=9.9.9\n"
    assert asyncio.run(transfer.fetch(transfer.parse_source_url(url + "/fw.bin"))) == \
        b"version=9.9.9\n"
    handler.auth = "Basic " + base64.b64encode(b"u:p").decode()
    src = transfer.parse_source_url(url + "/fw.bin")
    with pytest.raises(transfer.TransferError, match="401"):
        asyncio.run(transfer.fetch(src))
    assert asyncio.run(transfer.fetch(src, username="u", password="p")) == b"version=9.9.9\n"
    with pytest.raises(transfer.TransferError, match="404"):
        asyncio.run(transfer.fetch(transfer.parse_source_url(url + "/missing"), username="u",
                                   password="p"))
    with pytest.raises(transfer.TransferError, match="redirect"):
        asyncio.run(transfer.fetch(transfer.parse_source_url(url + "/redirect")))
    with pytest.raises(transfer.TransferError, match="longer than"):
        asyncio.run(transfer.fetch(transfer.parse_source_url(url + "/slow"), timeout=0.2))


# --- firmware helpers -------------------------------------------------------------------


def test_image_identity():
    assert firmware.image_identity(b"version=2.0.1\nname=ref\n\x00\x01") == ("ref", "2.0.1")
    assert firmware.image_identity(b"\x00binary", "fw-3.4.5.bin") == ("fw-3.4.5.bin", "3.4.5")
    assert firmware.image_identity(b"VERSION = 1.0\n") == ("firmware", "1.0")
    with pytest.raises(ValueError):
        firmware.image_identity(b"\x00\x01", "firmware.bin")
    with pytest.raises(ValueError):
        firmware.image_identity(b"version=bad version!\n")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.text(max_size=40))
def test_image_identity_never_crashes(data, name):
    try:
        img_name, version = firmware.image_identity(data, name)
    except ValueError:
        return
    assert 0 < len(img_name) <= 64 and 0 < len(version) <= 64


def test_verify_checksum():
    data = b"abc"
    sha1 = hashlib.sha1(data).hexdigest()
    assert firmware.verify_checksum(data, "SHA-1", sha1) is None
    assert firmware.verify_checksum(data, "", hashlib.sha512(data).hexdigest()) is None
    assert firmware.verify_checksum(data, "SHA-1", "", ) is None
    assert "mismatch" in (firmware.verify_checksum(data, "SHA-256", sha1 + "00" * 12) or "")
    assert "unsupported" in (firmware.verify_checksum(data, "MD5", sha1) or "")


def test_time_windows():
    args = {"TimeWindow.2.Start": "10", "TimeWindow.2.End": "20", "TimeWindow.2.Mode": "AnyTime",
            "TimeWindow.1.Start": "0", "TimeWindow.1.End": "5", "TimeWindow.1.Mode": "Immediately",
            "TimeWindow.1.MaxRetries": "2"}
    windows = firmware.time_windows(args)
    assert [(w.start, w.end, w.mode) for w in windows] == [(0, 5, "Immediately"),
                                                           (10, 20, "AnyTime")]
    assert windows[0].max_retries == 2
    for bad in ({}, args | {"TimeWindow.2.Start": "3"}, args | {"TimeWindow.1.End": "x"},
                {"TimeWindow.1.Start": "5", "TimeWindow.1.End": "1", "TimeWindow.1.Mode": "AnyTime"}):
        with pytest.raises(base.CommandFailed):
            firmware.time_windows(bad)
    with pytest.raises(base.CommandFailed, match="at most 1"):
        firmware.time_windows(args, max_windows=1)


def test_install_factory_images_and_boot():
    state = make_state()
    created = firmware.install_factory_images(state.store, version="1.0.0", banks=2)
    assert created == [IMG + "1.", IMG + "2."]
    assert firmware.install_factory_images(state.store, version="x") == created
    store = state.store
    assert store.get("Device.DeviceInfo.ActiveFirmwareImage") == IMG + "1"
    assert store.get("Device.DeviceInfo.SoftwareVersion") == "1.0.0"
    assert store.get(IMG + "2.Status") == "NoImage"
    assert firmware.boot_firmware(state) is False  # BootFirmwareImage is the active one
    store.set("Device.DeviceInfo.BootFirmwareImage", IMG + "2")
    assert firmware.boot_firmware(state) is False  # nothing installed there
    assert "not bootable" in store.get(IMG + "2.BootFailureLog")
    assert store.get("Device.DeviceInfo.ActiveFirmwareImage") == IMG + "1"
    firmware._update(store, IMG + "2.", Status="Available", Available="true", Version="2.0.0")
    bad = AgentState(AGENT, DM, store, faults=FaultSet(["firmware.boot_ignores_boot_image"]))
    assert firmware.boot_firmware(bad) is False
    assert firmware.boot_firmware(state) is True  # FirmwareUpdated
    assert store.get("Device.DeviceInfo.ActiveFirmwareImage") == IMG + "2"
    assert store.get("Device.DeviceInfo.SoftwareVersion") == "2.0.0"
    assert (store.get(IMG + "1.Status"), store.get(IMG + "2.Status")) == ("Available", "Active")
    assert firmware.boot_firmware(state) is False


# --- firmware Download() / Activate() through Operate -----------------------------------------


def _image(tmp_path, data: bytes = b"version=2.0.0\nname=ref-fw\n\x00payload",
           name: str = "fw-2.0.0.bin") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return path.as_uri()


def _statuses(state: AgentState, image: str) -> list[str]:
    seen: list[str] = []
    state.store.listen(lambda ch: seen.append(ch.new) if isinstance(ch, ValueChanged)
                       and ch.path == image + "Status" else None)
    return seen


def test_download_from_file(sleep, tmp_path):  # TP-469 9.3 (without AutoActivate)
    state = make_state(images=2)
    seen = _statuses(state, IMG + "2.")
    url = _image(tmp_path)
    res = operate(state, IMG + "2.Download()", {"URL": url, "AutoActivate": "false",
                                                "FileSize": "1"}, key="dl")
    assert res.req_obj_path == "Device.LocalAgent.Request.1."
    drain(state)
    store = state.store
    assert seen == ["Downloading", "Validating", "Available"]
    assert (store.get(IMG + "2.Name"), store.get(IMG + "2.Version"),
            store.get(IMG + "2.Available")) == ("ref-fw", "2.0.0", "true")
    assert notes(state).completed == [(IMG + "2.", "Download()", "dl", {}, None)]
    ((obj, name, params),) = notes(state).events
    assert (obj, name) == ("Device.LocalAgent.", "TransferComplete!")
    assert params["FaultCode"] == "0" and params["Affected"] == IMG + "2."
    assert params["Command"] == IMG + "2.Download()" and params["Requestor"] == CTRL
    assert params["CommandKey"] == "dl" and params["TransferURL"] == url
    assert params["CompleteTime"] != "0001-01-01T00:00:00Z"
    assert svc(state).reboots == []  # FileSize was wrong: only a hint
    assert store.instances(requests.REQUEST_TABLE) == []


def test_download_over_http_with_auto_activate(sleep, http_server):  # TP-469 9.3
    url, handler = http_server
    handler.files["/fw-3.1.4.bin"] = b"\x7fELF..."
    handler.auth = "Basic " + base64.b64encode(b"user:secret").decode()
    state = make_state(images=2)
    operate(state, IMG + "2.Download()", {"URL": url + "/fw-3.1.4.bin", "AutoActivate": "true",
                                          "Username": "user", "Password": "secret"}, key="auto")
    drain(state)
    assert state.store.get(IMG + "2.Version") == "3.1.4"
    assert notes(state).completed[0][4] is None
    assert state.store.get("Device.DeviceInfo.BootFirmwareImage") == IMG + "2"
    assert svc(state).reboots == [("RemoteReboot", "auto")]  # after the OperationComplete
    assert firmware.boot_firmware(state) is True
    assert state.store.get("Device.DeviceInfo.SoftwareVersion") == "3.1.4"


@pytest.mark.parametrize("fault", ["firmware.auto_activate_ignored",
                                   "firmware.activate_no_reboot"])
def test_auto_activate_faults(sleep, tmp_path, fault):
    state = make_state(fault, images=2)
    operate(state, IMG + "2.Download()", {"URL": _image(tmp_path), "AutoActivate": "true"})
    drain(state)
    assert svc(state).reboots == []


def test_download_checksum(sleep, tmp_path):  # TP-469 9.6
    data = b"version=2.0.0\n"
    good = hashlib.sha1(data).hexdigest()
    for fault, checksum, status in ((None, "00" * 20, "ValidationFailed"),
                                    ("firmware.checksum_ignored", "00" * 20, "Available"),
                                    (None, good, "Available")):
        state = make_state(*([fault] if fault else []), images=2)
        operate(state, IMG + "2.Download()", {"URL": _image(tmp_path, data),
                                              "AutoActivate": "false",
                                              "CheckSumAlgorithm": "SHA-1", "CheckSum": checksum})
        drain(state)
        assert state.store.get(IMG + "2.Status") == status
        failure = notes(state).completed[0][4]
        params = notes(state).events[0][2]
        if status == "ValidationFailed":
            assert failure[0] == 7022 and "checksum" in failure[1]
            assert params["FaultCode"] == "7022"
        else:
            assert failure is None and params["FaultCode"] == "0"


def test_download_failures(sleep, tmp_path, http_server):
    url, _ = http_server
    state = make_state(images=2)
    for source in ((tmp_path / "missing.bin").as_uri(), url + "/missing",
                   "http://192.0.2.1/fw-2.0.0.bin"):
        notes(state).events.clear()
        operate(state, IMG + "2.Download()", {"URL": source, "AutoActivate": "false"})
        drain(state)
        assert state.store.get(IMG + "2.Status") == "DownloadFailed"
        assert notes(state).events[0][2]["FaultCode"] == "7022"
        assert notes(state).events[0][2]["CompleteTime"] == "0001-01-01T00:00:00Z"
    assert [c[4][0] for c in notes(state).completed] == [7022, 7022, 7022]
    operate(state, IMG + "2.Download()", {"URL": _image(tmp_path, b"\x00no version", "image.bin"),
                                          "AutoActivate": "false"})
    drain(state)
    assert state.store.get(IMG + "2.Status") == "ValidationFailed"


def test_fault_no_transfer_complete(sleep, tmp_path):
    state = make_state("firmware.no_transfer_complete", images=2)
    operate(state, IMG + "2.Download()", {"URL": _image(tmp_path), "AutoActivate": "false"})
    drain(state)
    assert notes(state).events == [] and notes(state).completed


def test_download_prechecks(sleep, tmp_path):  # TP-469 9.7
    state = make_state(images=2)
    url = _image(tmp_path)
    res = operate(state, IMG + "1.Download()", {"URL": url, "AutoActivate": "false"})
    assert res.cmd_failure.err_code == 7022 and "active" in res.cmd_failure.err_msg
    assert operate(state, IMG + "2.Download()", {"URL": "ftp://x/y", "AutoActivate": "false"}) \
        .cmd_failure.err_code == 7027
    assert operate(state, IMG + "2.Download()", {"URL": url, "AutoActivate": "false",
                                                 "FileSize": str(2**31)}).cmd_failure.err_code \
        == 7005
    state.store.set(IMG + "2.Status", "Downloading")
    assert operate(state, IMG + "2.Download()", {"URL": url, "AutoActivate": "false"}) \
        .cmd_failure.err_code == 7005
    assert state.store.instances(requests.REQUEST_TABLE) == []
    single = make_state(images=1)  # one bank: downloading into the active image is the way
    assert operate(single, IMG + "1.Download()", {"URL": url, "AutoActivate": "true"}).req_obj_path


def _installed(state: AgentState) -> None:
    firmware._update(state.store, IMG + "2.", Status="Available", Available="true",
                     Version="2.0.0", Name="fw")


def _window(start: int, end: int, mode: str, n: int = 1) -> dict[str, str]:
    return {f"TimeWindow.{n}.Start": str(start), f"TimeWindow.{n}.End": str(end),
            f"TimeWindow.{n}.Mode": mode}


def test_activate_immediately(sleep):  # TP-469 9.4
    state = make_state(images=2)
    _installed(state)
    res = operate(state, IMG + "2.Activate()", _window(1, 100, "Immediately"), key="act")
    assert res.req_obj_path
    drain(state)
    assert sleep.calls[0] == pytest.approx(1, abs=1)
    assert notes(state).completed == [(IMG + "2.", "Activate()", "act", {}, None)]
    assert state.store.get("Device.DeviceInfo.BootFirmwareImage") == IMG + "2"
    assert svc(state).reboots == [("RemoteReboot", "act")]
    bad = make_state("firmware.activate_no_reboot", images=2)
    _installed(bad)
    operate(bad, IMG + "2.Activate()", _window(0, 100, "AnyTime"))
    drain(bad)
    assert notes(bad).completed and svc(bad).reboots == []


def test_activate_skips_confirmation_windows(sleep):
    state = make_state(images=2)
    _installed(state)
    operate(state, IMG + "2.Activate()", _window(0, 5, "ConfirmationNeeded")
            | _window(10, 20, "WhenIdle", 2))
    drain(state)
    assert sleep.calls[0] == pytest.approx(10, abs=1) and svc(state).reboots
    only = make_state(images=2)
    _installed(only)
    operate(only, IMG + "2.Activate()", _window(0, 5, "ConfirmationNeeded"))
    drain(only)
    assert notes(only).completed[0][4][0] == 7022 and svc(only).reboots == []


def test_activate_prechecks(sleep):
    state = make_state(images=2)
    assert operate(state, IMG + "2.Activate()", _window(0, 5, "AnyTime")).cmd_failure.err_code \
        == 7022  # NoImage
    _installed(state)
    assert operate(state, IMG + "2.Activate()", {}).cmd_failure.err_code == 7027
    assert operate(state, IMG + "2.Activate()", _window(0, 5, "AnyTime")
                   | _window(3, 9, "AnyTime", 2)).cmd_failure.err_code == 7027  # overlap
    state.store.set("Device.DeviceInfo.MaxNumberOfActivateTimeWindows", "1")
    assert operate(state, IMG + "2.Activate()", _window(0, 5, "AnyTime")
                   | _window(6, 9, "AnyTime", 2)).cmd_failure.err_code == 7027


def test_activation_fails_when_image_went_away(sleep):
    state = make_state(images=2)
    _installed(state)
    sleep.block_over = None
    operate(state, IMG + "2.Activate()", _window(5, 50, "AnyTime"))

    async def scenario() -> None:
        svc(state).start()
        state.store.set(IMG + "2.Status", "Downloading")
        await svc(state).drain()

    asyncio.run(scenario())
    assert notes(state).completed[0][4][0] == 7022
    assert "refused" in state.store.get(IMG + "2.BootFailureLog")
    assert svc(state).reboots == []


@pytest.mark.parametrize("fault", [None, "operate.cancel_ignored"])
def test_cancel_activate_prevents_reboot(sleep, fault):  # TP-469 9.8
    state = make_state(*([fault] if fault else []), images=2)
    _installed(state)
    sleep.block_over = 60 if fault is None else None
    req = operate(state, IMG + "2.Activate()", _window(120, 500, "AnyTime")).req_obj_path

    async def scenario() -> None:
        svc(state).start()
        await asyncio.sleep(0)
        assert operate(state, req + "Cancel()").HasField("req_output_args")
        await svc(state).drain()

    asyncio.run(scenario())
    if fault is None:
        assert notes(state).completed[0][4] == (7023, "Command canceled")
        assert svc(state).reboots == [] and not state.store.exists(req)
    else:
        assert svc(state).reboots  # the Boot! the case says must never come


def test_cancel_download_restores_the_image(sleep, http_server):
    url, handler = http_server
    handler.files["/slow"] = b"version=5.0.0\n"
    state = make_state(images=2)
    req = operate(state, IMG + "2.Download()", {"URL": url + "/slow",
                                                "AutoActivate": "false"}).req_obj_path

    async def scenario() -> None:
        svc(state).start()
        for _ in range(50):
            await asyncio.sleep(0.01)
            if state.store.get(IMG + "2.Status") == "Downloading":
                break
        operate(state, req + "Cancel()")
        await svc(state).drain()

    asyncio.run(scenario())
    assert state.store.get(IMG + "2.Status") == "NoImage"
    assert notes(state).events[0][2]["FaultCode"] == "7023"
    assert notes(state).completed[0][4][0] == 7023
