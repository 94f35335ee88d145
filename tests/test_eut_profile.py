"""EUT profiles (conformance/eut.py): the shipped profiles, one-line errors with
file, line and fix, defaults, lookups, the built-in agent's values, and a
property test that hostile input only ever raises ProfileError.

TP-469 references: Introduction, "Required EUT Information", the Feature ID
table and "Elements Specified in the Test Procedure"; Endpoint IDs per
R-ARC.2a, R-ARC.5, R-ARC.6.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance import eut
from conformance.eut import (
    ALTERNATES,
    FEATURES,
    REMOVED_FEATURES,
    EUTProfile,
    MQTTConfig,
    ProfileError,
    STOMPConfig,
    UDSConfig,
    WebSocketConfig,
    builtin_agent_values,
    default_profile,
    load_profile,
    parse_profile,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "eut"
REFERENCE = FIXTURES / "reference-agent.yaml"
EXAMPLE = FIXTURES / "example-cpe-mqtt.yaml"
PACKAGED = ROOT / "conformance" / "eut_reference.yaml"

# Line numbers matter: the error tests below name them.
MINIMAL = """\
eut:
  name: Test EUT
  endpoint_id: os::00D09E-0001
  firmware_version: 1.0
features: [1, 5]
mtps:
  - mtp: mqtt
controllers:
  primary: {endpoint_id: proto::controller-1}
"""


def _write(tmp_path: Path, text: str, name: str = "eut.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str, **kw: Any) -> EUTProfile:
    return load_profile(_write(tmp_path, text), **kw)


def _error(tmp_path: Path, text: str) -> tuple[Path, ProfileError]:
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    return path, info.value


def _check_one_line(path: Path, err: ProfileError, line: int, *needles: str) -> None:
    """The message is ``FILE:LINE: problem; fix: remedy`` on one line."""
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg
    assert msg.startswith(f"{path}:{line}: "), msg
    assert "; fix: " in msg and err.fix and err.problem, msg
    assert err.file == str(path) and err.line == line
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


# --- the shipped profiles ------------------------------------------------------------------


def test_reference_profile_loads_and_describes_the_builtin_agent():
    p = load_profile(REFERENCE)
    assert p.is_builtin_agent and p.agent.faults == ()
    assert p.eut.endpoint_id == "os::012345-0001" and p.eut.firmware_banks == 2
    assert p.features == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 15, 17, 18, 19, 23, 24, 25,
                          26, 27, 28, 30, 31, 35, 36, 37, 38, 39, 40, 42)
    assert not set(p.features) & REMOVED_FEATURES
    mqtt = p.mtp()
    assert isinstance(mqtt, MQTTConfig) and mqtt.name == "mqtt"
    assert (mqtt.version, mqtt.broker, mqtt.port) == ("5.0", "suite", 0)
    assert [m.kind for m in p.mtps] == ["mqtt", "stomp", "websocket", "uds"]
    assert p.reboot.method == "usp" and p.warnings == ()
    assert p.changed_alternates() == {}
    assert p.source == REFERENCE.resolve()


def test_packaged_reference_is_identical_to_the_fixture():
    assert PACKAGED.read_bytes() == REFERENCE.read_bytes()


def test_default_profile_is_the_reference_profile():
    assert default_profile() == load_profile(REFERENCE)


def test_default_profile_without_package_data_is_built_in_code(monkeypatch):
    monkeypatch.setattr(eut, "REFERENCE_RESOURCE", "no-such-file.yaml")
    built = default_profile()
    assert built == load_profile(REFERENCE)
    assert built.source is None


def test_reference_profile_matches_the_agent_factory_defaults():
    fd = yaml.safe_load((ROOT / "conformance" / "agent" / "factory-default.yaml").read_text())
    p = load_profile(REFERENCE)
    assert fd["values"]["Device.LocalAgent.EndpointID"] == p.eut.endpoint_id
    assert fd["values"]["Device.DeviceInfo.SoftwareVersion"] == p.eut.firmware_version
    images = [o for o in fd["objects"] if o["table"] == "Device.DeviceInfo.FirmwareImage."]
    assert len(images) == p.eut.firmware_banks
    ctrl = next(o for o in fd["objects"] if o["table"] == "Device.LocalAgent.Controller.")
    assert ctrl["values"]["EndpointID"] == p.controllers.primary.endpoint_id
    ctrl_mqtt = next(c for c in ctrl["children"] if c["values"]["Protocol"] == "MQTT")
    mqtt = p.mtp("mqtt")
    assert isinstance(mqtt, MQTTConfig)
    assert ctrl_mqtt["values"]["MQTT.Topic"] == mqtt.controller_topic
    agent_mqtt = next(o for o in fd["objects"] if o["table"] == "Device.LocalAgent.MTP."
                      and o["values"]["Protocol"] == "MQTT")
    assert agent_mqtt["values"]["MQTT.ResponseTopicConfigured"] == mqtt.agent_topic


@pytest.mark.parametrize("feature, command", [
    (1, "Device.Reboot()"), (8, "Device.LocalAgent.Controller.{i}.SendOnBoardRequest()"),
    (9, "Device.ScheduleTimer()"), (10, "Device.Reboot()"),
    (25, "Device.LocalAgent.AddCertificate()"),
    (26, "Device.DeviceInfo.FirmwareImage.{i}.Download()"),
    (27, "Device.DeviceInfo.FirmwareImage.{i}.Activate()"),
    (28, "Device.LocalAgent.Request.{i}.Cancel()"),
])
def test_reference_features_have_their_commands_implemented(feature, command):
    from conformance.agent.commands import COMMANDS

    assert default_profile().supports(feature)
    assert command in COMMANDS


def test_reference_alternate_defaults_exist_in_the_agent_data_model():
    from conformance.agent.commands import COMMANDS
    from conformance.agent.datamodel import load_definitions
    from conformance.agent.datamodel.store import Store

    store = Store(load_definitions())
    p = default_profile()
    for name, alt in ALTERNATES.items():
        if alt.kind == "command":
            assert p.alternate(name) in COMMANDS, name
        elif alt.kind == "parameter":
            path = p.alternate(name).replace("{i}", "1")
            assert store.param_def(path) is not None, name
        elif alt.kind == "relative-parameter":
            owner = "secured_object" if name == "secured_parameter" else "multi_instance_object"
            table = p.alternate(owner) + "1." + p.alternate(name)
            assert store.param_def(table) is not None, name


def test_example_profile_loads_without_file_checks():
    p = load_profile(EXAMPLE, check_files=False)
    assert not p.is_builtin_agent and p.warnings == ()
    assert p.reboot.method == "command" and p.reboot.reconnect_timeout == 240
    assert p.reboot.command is not None and "reboot" in p.reboot.command
    mqtt = p.mtp()
    assert isinstance(mqtt, MQTTConfig) and mqtt.port == 8883 and not mqtt.external
    assert mqtt.tls.enabled and mqtt.tls.require_client_cert
    assert mqtt.tls.ca == FIXTURES.resolve() / "certs" / "cpe-ca.pem"
    assert p.controllers.primary.certificate is not None
    assert p.eut.usp_version == "1.3" and p.eut.firmware_version == "3.2.1"
    assert p.changed_alternates() == {
        "async_command": "Device.IP.Diagnostics.TraceRoute()",
        "async_command_args": "Host=192.0.2.1,NumberOfTries=1",
        "command_with_input_args": "Device.IP.Diagnostics.IPPing()",
        "command_input_args": "Host=192.0.2.1,NumberOfRepetitions=1",
    }
    assert p.firmware.image is not None and p.firmware.version == "3.3.0"


def test_example_profile_names_placeholder_files_with_file_checks():
    with pytest.raises(ProfileError) as info:
        load_profile(EXAMPLE)
    text = EXAMPLE.read_text()
    line = next(n for n, text_line in enumerate(text.splitlines(), 1)
                if text_line.strip().startswith("ca: certs/cpe-ca.pem"))
    _check_one_line(EXAMPLE, info.value, line, "cpe-ca.pem", "relative")


def _with_placeholder_files(tmp_path: Path, text: str) -> Path:
    for rel in set(re.findall(r"(?:certs|images)/[\w.-]+", text)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("placeholder\n")
    return _write(tmp_path, text)


def test_example_profile_loads_when_its_files_exist(tmp_path):
    path = _with_placeholder_files(tmp_path, EXAMPLE.read_text())
    p = load_profile(path)
    assert p.mtp().tls.key == tmp_path.resolve() / "certs" / "broker.key"


def test_example_external_broker_variant_loads(tmp_path):
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("  - mtp: mqtt")
    alt = lines.index("  # - mtp: mqtt")
    end = next(i for i in range(alt, len(lines)) if not lines[i].startswith("  #"))
    variant = [line.replace("  # ", "  ", 1) for line in lines[alt:end]]
    text = "\n".join(lines[:start] + variant + lines[end:]) + "\n"
    p = load_profile(_with_placeholder_files(tmp_path, text))
    mqtt = p.mtp()
    assert isinstance(mqtt, MQTTConfig) and mqtt.external and not mqtt.suite_is_server
    assert (mqtt.host, mqtt.port, mqtt.client_id) == ("mqtt.example.net", 8883,
                                                      "usp-conformance-1")
    assert mqtt.tls.certificate is not None and not mqtt.tls.require_client_cert


# --- errors: file, line and fix in one line --------------------------------------------------

ERRORS = [
    # unknown keys, with a suggestion
    ("unknown top-level key", MINIMAL + "timeout: {response: 5}\n", 10, "'timeout'", "'timeouts'"),
    ("unknown eut key", MINIMAL.replace("  name:", "  endpointid: x\n  name:"), 2,
     "'endpointid' in eut", "did you mean 'endpoint_id'"),
    ("unknown mqtt key", MINIMAL.replace("  - mtp: mqtt", "  - mtp: mqtt\n    brokr: suite"), 8,
     "'brokr' in mtps[1]", "'broker'"),
    ("stomp key on mqtt", MINIMAL.replace("  - mtp: mqtt", "  - mtp: mqtt\n    virtual_host: v"),
     8, "'virtual_host' in mtps[1]"),
    ("unknown alternate", MINIMAL + "alternates: {sync_comand: Device.X()}\n", 10,
     "'sync_comand'", "'sync_command'"),
    ("duplicate key", MINIMAL + "features: [1]\n", 10, "'features' given twice", "line 5"),
    # wrong types
    ("banks not a number", MINIMAL.replace("  firmware_version: 1.0",
                                           "  firmware_version: 1.0\n  firmware_banks: two"),
     5, "firmware_banks", "whole number"),
    ("features not a list", MINIMAL.replace("features: [1, 5]", "features: 5"), 5,
     "features must be a list"),
    ("feature not a number", MINIMAL.replace("[1, 5]", "[1, five]"), 5, "'five'"),
    ("quoted port", MINIMAL.replace("  - mtp: mqtt", "  - mtp: mqtt\n    port: '1883'"), 8,
     "port", "'1883'"),
    ("port out of range", MINIMAL.replace("  - mtp: mqtt", "  - mtp: mqtt\n    port: 70000"), 8,
     "0 to 65535"),
    ("timeout not a number", MINIMAL + "timeouts:\n  response: fast\n", 11, "timeouts.response"),
    ("negative timeout", MINIMAL + "timeouts: {reconnect: -1}\n", 10, "timeouts.reconnect"),
    ("infinite timeout", MINIMAL + "timeouts: {notification: .inf}\n", 10,
     "timeouts.notification"),
    ("boolean as text", MINIMAL + "agent: {builtin: 'true'}\n", 10, "agent.builtin",
     "true or false"),
    ("eut not a mapping", "eut: [a]\n" + MINIMAL[MINIMAL.index("features"):], 1,
     "eut must be a mapping"),
    ("name is a list", MINIMAL.replace("name: Test EUT", "name: [a, b]"), 2,
     "eut.name must be text"),
    ("mqtt version", MINIMAL.replace("  - mtp: mqtt", "  - mtp: mqtt\n    version: 4"), 8,
     "5.0 or 3.1.1"),
    ("usp version", MINIMAL.replace("  firmware_version: 1.0",
                                    "  firmware_version: 1.0\n  usp_version: one"), 5,
     "usp_version", "major.minor"),
    ("broker mode", MINIMAL.replace("  - mtp: mqtt", "  - mtp: mqtt\n    broker: extrenal"), 8,
     "suite, external", "did you mean 'external'"),
    ("empty mtps", MINIMAL.replace("  - mtp: mqtt\n", "").replace("mtps:\n", "mtps: []\n"), 6,
     "mtps is empty"),
    # missing required fields
    ("missing endpoint id", MINIMAL.replace("  endpoint_id: os::00D09E-0001\n", ""), 1,
     "eut.endpoint_id is missing"),
    ("missing firmware version", MINIMAL.replace("  firmware_version: 1.0\n", ""), 1,
     "eut.firmware_version is missing", "Required EUT Information"),
    ("missing eut", MINIMAL[MINIMAL.index("features"):], 1, "eut is missing"),
    ("missing controllers", MINIMAL[:MINIMAL.index("controllers")], 1, "controllers is missing"),
    ("missing primary", MINIMAL.replace("  primary:", "  secondary:"), 8,
     "controllers.primary is missing"),
    ("empty value", MINIMAL.replace("name: Test EUT", "name:"), 2, "eut.name has no value"),
    ("missing mtp kind", MINIMAL.replace("  - mtp: mqtt", "  - name: x"), 7,
     "mtps[1].mtp is missing"),
    ("reboot command missing", MINIMAL + "reboot: {method: command}\n", 10,
     "reboot.command is missing"),
    # invalid endpoint ids
    ("bad eut endpoint id", MINIMAL.replace("os::00D09E-0001", "os:00D09E"), 3,
     "not a valid Endpoint ID", "R-ARC.2a"),
    ("bad instance id", MINIMAL.replace("os::00D09E-0001", "proto::a b"), 3, "R-ARC.5"),
    ("bad controller id", MINIMAL.replace("proto::controller-1", "nosuch:x:y"), 9,
     "controllers.primary.endpoint_id", "R-ARC.2a"),
    ("controller is the eut", MINIMAL.replace("proto::controller-1", "os::00D09E-0001"), 9,
     "EUT's own Endpoint ID"),
    ("two identities share an id", MINIMAL + "  secondary: {endpoint_id: proto::controller-1}\n",
     10, "also the primary controller's"),
    # feature ids
    ("removed feature", MINIMAL.replace("[1, 5]", "[1, 11]"), 5, "feature 11 was removed",
     "delete 11"),
    ("removed feature 29", MINIMAL.replace("[1, 5]", "[5,\n  29]"), 6, "feature 29 was removed"),
    ("unknown feature", MINIMAL.replace("[1, 5]", "[1, 43]"), 5,
     "not in the TP-469 Feature ID table"),
    ("feature zero", MINIMAL.replace("[1, 5]", "[0]"), 5, "feature 0"),
    ("duplicate feature", MINIMAL.replace("[1, 5]", "[1, 5, 1]"), 5, "listed twice"),
    ("extension without base", MINIMAL.replace("[1, 5]", "[1, 13]"), 5, "extends feature 12",
     "add 12"),
    ("firmware without banks", MINIMAL.replace("[1, 5]", "[5, 26]"), 5, "firmware banks",
     "eut.firmware_banks"),
    # MTP names
    ("unknown mtp", MINIMAL.replace("mtp: mqtt", "mtp: mqqt"), 7, "unknown MTP 'mqqt'",
     "did you mean 'mqtt'"),
    ("coap", MINIMAL.replace("mtp: mqtt", "mtp: coap"), 7, "CoAP is deprecated"),
    ("duplicate mtp name", MINIMAL.replace("  - mtp: mqtt", "  - mtp: mqtt\n  - mtp: mqtt"), 8,
     "'mqtt' is already used"),
    ("bad mtp name", MINIMAL.replace("  - mtp: mqtt", "  - mtp: mqtt\n    name: My MQTT"), 8,
     "short lower-case name"),
    ("unknown default mtp", MINIMAL + "default_mtp: mqt\n", 10, "default_mtp 'mqt'",
     "did you mean 'mqtt'"),
    ("uds with tls", MINIMAL.replace("mtp: mqtt", "mtp: uds\n    tls: {enabled: true}"), 8,
     "UDS connections do not use TLS"),
    ("external stomp", MINIMAL.replace("mtp: mqtt", "mtp: stomp\n    broker: external"), 8,
     "must be one of suite"),
    ("websocket url on server role",
     MINIMAL.replace("mtp: mqtt", "mtp: websocket\n    url: ws://h:1/usp"), 8,
     "applies to role controller-connects"),
    ("websocket client without url",
     MINIMAL.replace("mtp: mqtt", "mtp: websocket\n    role: controller-connects"), 7,
     "mtps[1].url is missing"),
    ("websocket host on client role",
     MINIMAL.replace("mtp: mqtt", "mtp: websocket\n    role: controller-connects\n    host: h"), 9,
     "does not apply to role controller-connects"),
    ("websocket wss without tls",
     MINIMAL.replace("mtp: mqtt", "mtp: websocket\n    role: controller-connects\n"
                                  "    url: wss://192.0.2.1/usp"), 9, "tls.enabled is false"),
    ("websocket bad url",
     MINIMAL.replace("mtp: mqtt", "mtp: websocket\n    role: controller-connects\n"
                                  "    url: http://192.0.2.1/usp"), 9, "not a ws:// or wss:// URL"),
    ("websocket path", MINIMAL.replace("mtp: mqtt", "mtp: websocket\n    path: usp"), 8,
     "does not start with '/'"),
    ("external broker without host",
     MINIMAL.replace("mtp: mqtt", "mtp: mqtt\n    broker: external"), 7, "mtps[1].host is missing"),
    ("external 3.1.1 without topic",
     MINIMAL.replace("mtp: mqtt", "mtp: mqtt\n    broker: external\n    host: h\n"
                                  "    version: 3.1.1"), 7, "needs agent_topic"),
    ("topic wildcard", MINIMAL.replace("mtp: mqtt", "mtp: mqtt\n    agent_topic: a/#"), 8,
     "has a wildcard"),
    ("client id on suite broker", MINIMAL.replace("mtp: mqtt", "mtp: mqtt\n    client_id: c"), 8,
     "applies to external brokers"),
    # files relative to the profile
    ("missing tls file",
     MINIMAL.replace("mtp: mqtt", "mtp: mqtt\n    tls:\n      enabled: true\n      ca: ca.pem"),
     10, "ca.pem", "relative"),
    ("missing controller certificate",
     MINIMAL.replace("{endpoint_id: proto::controller-1}",
                     "\n    endpoint_id: proto::controller-1\n"
                     "    certificate: c.pem\n    key: c.key"),
     11, "controllers.primary.certificate", "c.pem"),
    ("missing firmware image", MINIMAL + "firmware: {image: fw.bin}\n", 10, "firmware.image"),
    ("missing factory defaults", MINIMAL + "agent: {builtin: true, factory_defaults: fd.yaml}\n",
     10, "agent.factory_defaults"),
    # other cross-field rules
    ("tls files without enabled",
     MINIMAL.replace("mtp: mqtt", "mtp: mqtt\n    tls: {require_client_cert: true}"), 8,
     "enabled is not true"),
    ("client cert on client role",
     MINIMAL.replace("mtp: mqtt", "mtp: mqtt\n    broker: external\n    host: h\n"
                                  "    tls: {enabled: true, require_client_cert: true}"), 10,
     "only where the suite is the server"),
    ("command for usp reboot", MINIMAL + "reboot: {method: usp, command: reboot}\n", 10,
     "only used with method: command"),
    ("unbalanced quotes", MINIMAL + "reboot: {method: command, command: \"ssh 'x\"}\n", 10,
     "cannot be split"),
    ("bad reboot method", MINIMAL + "reboot: {method: power-cycle}\n", 10,
     "usp, command, operator"),
    ("builtin reboot by command", MINIMAL + "agent: {builtin: true}\n"
                                            "reboot: {method: command, command: x}\n", 11,
     "built-in agent reboots"),
    ("faults without builtin", MINIMAL + "agent:\n  faults: [msg.no_response]\n", 11,
     "only to the built-in agent"),
    ("unknown fault", MINIMAL + "agent:\n  builtin: true\n  faults: [msg.no_respons]\n", 12,
     "unknown fault 'msg.no_respons'", "did you mean 'msg.no_response'"),
    ("builtin with two mqtt",
     MINIMAL.replace("  - mtp: mqtt", "  - mtp: mqtt\n  - {mtp: mqtt, name: b}")
     + "agent: {builtin: true}\n", 8, "one mqtt MTP"),
    ("agent value not a parameter", MINIMAL + "agent:\n  builtin: true\n  values: {Device.X.: 1}\n",
     12, "not a parameter path"),
    ("agent value not in the model", MINIMAL + "agent:\n  builtin: true\n"
                                               "  values: {Device.X.Y: 1}\n",
     12, "not a parameter of the reference Agent's data model"),
    ("agent value of the wrong type", MINIMAL + "agent:\n  builtin: true\n  values:\n"
                                                "    Device.MQTT.Client.1.KeepAliveTime: soon\n",
     13, "'soon' is not valid"),
    ("alternate of the wrong kind", MINIMAL + "alternates: {sync_command: Device.Boot!}\n", 10,
     "not an absolute command path"),
    ("alternate not a path", MINIMAL + "alternates: {multi_instance_object: 'Device..X.'}\n", 10,
     "not a path"),
    ("absolute where relative", MINIMAL + "alternates: {writable_parameter: Device.A.B}\n", 10,
     "not a parameter name"),
    ("arguments not a mapping", MINIMAL + "alternates: {async_command_args: [1]}\n", 10,
     "must be a mapping"),
    ("firmware image and url", MINIMAL + "firmware:\n  url: http://h/fw.bin\n  image: x\n", 12,
     "firmware.image"),
    ("firmware url scheme", MINIMAL + "firmware: {url: 'gopher://h/fw'}\n", 10,
     "not a download URL"),
    # YAML level
    ("yaml syntax", MINIMAL + "timeouts: {response: 10\n", 11, "not valid YAML"),
    ("root is a list", "- eut\n", 1, "the profile must be a mapping"),
    ("root is a scalar", "hello\n", 1, "the profile must be a mapping"),
    ("empty file", "", 1, "the profile is empty"),
    ("comments only", "# nothing\n", 1, "the profile is empty"),
    ("control character", MINIMAL + "x: \x07\n", 10, "not valid YAML text"),
    ("non-scalar key", MINIMAL + "? [a]\n: b\n", 10, "key that is a list"),
    ("custom tag", MINIMAL.replace("[1, 5]", "[1, !bogus 5]"), 5, "not a Feature ID"),
]


@pytest.mark.parametrize("text, line, needles",
                         [pytest.param(e[1], e[2], e[3:], id=str(e[0])) for e in ERRORS])
def test_errors_name_file_line_and_fix(tmp_path, text, line, needles):
    path, err = _error(tmp_path, text)
    _check_one_line(path, err, line, *needles)


def test_firmware_image_and_url_together(tmp_path):
    (tmp_path / "x").write_text("fw")
    path, err = _error(tmp_path, MINIMAL + "firmware:\n  url: http://h/fw.bin\n  image: x\n")
    _check_one_line(path, err, 10, "both image and url")


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path)  # a directory
    assert str(info.value).startswith(f"{tmp_path}: cannot read") and "; fix: " in str(info.value)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("eut: {name: Caf\xe9}\n".encode("latin-1"))
    with pytest.raises(ProfileError, match=r"not UTF-8.*; fix: save the profile as UTF-8"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "absent.yaml")


def test_profile_error_is_a_value_error():
    err = ProfileError("f.yaml", 3, "bad\nthing", "do\nthis")
    assert isinstance(err, ValueError)
    assert str(err) == "f.yaml:3: bad thing; fix: do this"
    assert str(ProfileError("f.yaml", 0, "p", "f")) == "f.yaml: p; fix: f"


def test_deep_nesting_is_a_profile_error(tmp_path):
    path, err = _error(tmp_path, "eut: " + "[" * 2000 + "]" * 2000 + "\n")
    assert str(err).startswith(str(path)) and "; fix: " in str(err)


# --- defaults and values -------------------------------------------------------------------


def test_defaults_of_a_minimal_profile(tmp_path):
    p = _load(tmp_path, MINIMAL)
    assert p.eut.firmware_version == "1.0" and p.eut.usp_version == "1.4"
    assert (p.eut.manufacturer, p.eut.model, p.eut.firmware_banks) == ("", "", None)
    assert p.features == (1, 5) and p.default_mtp == "mqtt"
    assert p.timeouts == eut.Timeouts(10.0, 30.0, 120.0, 2.0)
    assert p.reboot == eut.RebootMethod("usp", None, 120.0)
    assert p.controllers.secondary.endpoint_id == eut.DEFAULT_SECONDARY
    assert p.controllers.unknown.endpoint_id == eut.DEFAULT_UNKNOWN
    assert [c.role for c in p.controllers] == ["primary", "secondary", "unknown"]
    mqtt = p.mtp()
    assert mqtt == MQTTConfig(name="mqtt")
    assert (mqtt.version, mqtt.broker, mqtt.host, mqtt.port) == ("5.0", "suite", "127.0.0.1", 0)
    assert mqtt.controller_topic == "usp/controller" and mqtt.agent_topic is None
    assert mqtt.suite_is_server and not mqtt.tls.enabled
    assert p.agent == eut.AgentSettings() and not p.is_builtin_agent
    assert p.firmware == eut.FirmwareSettings()
    assert p.alternates == {} and p.alternate_args == {}
    assert p.warnings == ()


def test_reboot_timeout_follows_the_reconnect_timeout(tmp_path):
    p = _load(tmp_path, MINIMAL + "timeouts: {reconnect: 300, tolerance: 0}\n"
                                  "reboot: {method: operator}\n")
    assert p.reboot == eut.RebootMethod("operator", None, 300.0)
    assert p.timeouts.tolerance == 0.0


def test_text_values_keep_what_was_written(tmp_path):
    p = _load(tmp_path, MINIMAL.replace("1.0", "1.10").replace("Test EUT", "yes")
              .replace("  - mtp: mqtt", "  - mtp: mqtt\n    version: 5"))
    assert p.eut.firmware_version == "1.10" and p.eut.name == "yes"
    assert p.mtp().version == "5.0"  # type: ignore[attr-defined]


def test_external_broker_default_ports(tmp_path):
    mtps = ("  - {mtp: mqtt, broker: external, host: b}\n"
            "  - {mtp: mqtt, name: s, broker: external, host: b, tls: {enabled: true}}")
    p = _load(tmp_path, MINIMAL.replace("  - mtp: mqtt", mtps))
    assert [m.port for m in p.mtps] == [1883, 8883]  # type: ignore[attr-defined]


def test_every_mtp_kind(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    text = MINIMAL.replace("  - mtp: mqtt\n", """\
  - mtp: mqtt
    version: 3.1.1
  - mtp: stomp
    name: stomp-1
    port: 61613
    virtual_host: usp
    username: u
    password: p
    agent_destination: /queue/agent
    heart_beat: {outgoing: 5000, incoming: 10000}
    tls: {enabled: true, ca: ca.pem, require_client_cert: true}
  - mtp: websocket
    role: controller-connects
    url: wss://192.0.2.1:8443/usp
    tls: {enabled: true, ca: ca.pem}
  - mtp: websocket
    name: ws-server
    port: 8080
    path: /usp/v1
  - mtp: uds
    socket: sock/agent.sock
""") + "default_mtp: stomp-1\n"
    p = _load(tmp_path, text.replace("[1, 5]", "[1, 5, 17, 19, 35, 36]"))
    stomp = p.mtp()
    assert isinstance(stomp, STOMPConfig) and stomp.heart_beat == (5000, 10000)
    assert stomp.tls.ca == (tmp_path / "ca.pem").resolve() and stomp.tls.require_client_cert
    assert stomp.controller_destination == "/queue/controller"
    ws = p.mtp("websocket")
    assert isinstance(ws, WebSocketConfig) and not ws.suite_is_server
    assert ws.url == "wss://192.0.2.1:8443/usp"
    server = p.mtp("ws-server")
    assert isinstance(server, WebSocketConfig) and server.suite_is_server and server.port == 8080
    uds = p.mtp("uds")
    assert isinstance(uds, UDSConfig) and uds.socket == tmp_path.resolve() / "sock" / "agent.sock"
    assert p.mtp("mqtt").version == "3.1.1"  # type: ignore[attr-defined]
    # Feature 36 (MQTT 5.0) has no MTP: a warning with file and line, not an error.
    assert len(p.warnings) == 1 and "feature 36" in p.warnings[0]
    assert p.warnings[0].startswith(f"{tmp_path / 'eut.yaml'}:5:")
    assert all(isinstance(m.describe(), str) for m in p.mtps)


def test_deprecated_feature_and_endpoint_warnings(tmp_path):
    p = _load(tmp_path, MINIMAL.replace("[1, 5]", "[1, 5, 16]")
              .replace("os::00D09E-0001", "os::00256D-0001"))  # BBF OUI: R-ARC.3 warning
    assert any("feature 16" in w for w in p.warnings)
    assert any("R-ARC.3" in w for w in p.warnings)


def test_alternates_and_arguments(tmp_path):
    p = _load(tmp_path, MINIMAL + """\
alternates:
  sync_command: Device.X_EXAMPLE_Restart()
  multi_instance_object: Device.LocalAgent.Subscription.
  writable_parameter: Enable
  async_command_args: {Host: 192.0.2.1, Flag: true, Count: 010, Empty: ~}
""")
    assert p.alternate("sync_command") == "Device.X_EXAMPLE_Restart()"
    assert p.alternate("event_with_args") == "Device.Boot!"
    assert p.arguments("async_command_args") == {"Host": "192.0.2.1", "Flag": "true",
                                                  "Count": "010", "Empty": ""}
    assert p.arguments("command_input_args") == {"DelaySeconds": "1"}
    # The same value as the default is not a substitution.
    assert p.changed_alternates() == {
        "writable_parameter": "Enable",
        "sync_command": "Device.X_EXAMPLE_Restart()",
        "async_command_args": "Host=192.0.2.1,Flag=true,Count=010,Empty=",
    }
    with pytest.raises(LookupError, match="did you mean 'sync_command'"):
        p.alternate("sync_comand")
    with pytest.raises(LookupError, match="use arguments"):
        p.alternate("async_command_args")
    with pytest.raises(LookupError, match="use alternate"):
        p.arguments("async_command")


def test_every_alternate_default_passes_validation(tmp_path):
    lines = ["alternates:"]
    for name, alt in ALTERNATES.items():
        if alt.kind == "arguments":
            assert isinstance(alt.default, dict | type(eut.MappingProxyType({})))
            lines.append(f"  {name}: {dict(alt.default)}")
        else:
            lines.append(f"  {name}: '{alt.default}'")
    p = _load(tmp_path, MINIMAL + "\n".join(lines) + "\n")
    assert p.changed_alternates() == {}
    assert set(p.alternates) | set(p.alternate_args) == set(ALTERNATES)


def test_supports():
    p = default_profile()
    assert p.supports(5) and p.supports(42)
    assert not p.supports(21) and not p.supports(11) and not p.supports(16)
    for bad in (0, 43, -1, True):
        with pytest.raises(ValueError, match="not a TP-469 Feature ID"):
            p.supports(bad)
    assert set(FEATURES) == set(range(1, 43))


def test_mtp_lookup(tmp_path):
    p = _load(tmp_path, MINIMAL.replace("  - mtp: mqtt", "  - {mtp: mqtt, name: a}\n"
                                                          "  - {mtp: mqtt, name: b}\n"
                                                          "  - {mtp: uds}") + "default_mtp: b\n")
    assert p.mtp().name == "b" and p.mtp("a").name == "a"
    assert p.mtp("uds").kind == "uds"
    with pytest.raises(LookupError, match="2 MTPs of kind 'mqtt'"):
        p.mtp("mqtt")
    with pytest.raises(LookupError, match="no MTP 'stomp'"):
        p.mtp("stomp")


def test_report_info():
    info = load_profile(EXAMPLE, check_files=False).report_info()
    assert info.endpoint_id == "os::00D09E-GW1000-0042" and info.firmware_banks == 2
    assert info.feature_ids[:3] == [1, 2, 3]
    assert info.alternates["async_command"] == "Device.IP.Diagnostics.TraceRoute()"
    assert info.mtps == ["mqtt: MQTT 5.0 via suite broker 0.0.0.0:8883"]


def test_profiles_are_frozen():
    p = default_profile()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.default_mtp = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.alternates["x"] = "y"  # type: ignore[index]


# --- the built-in agent's values -------------------------------------------------------------


def _factory_store():
    from conformance.agent.config import apply_factory_defaults, load_factory_defaults
    from conformance.agent.datamodel import load_definitions
    from conformance.agent.datamodel.store import Store

    store = Store(load_definitions())
    doc, where = load_factory_defaults(None)
    apply_factory_defaults(store, doc, where=where)
    return store


def test_builtin_agent_values_fit_the_agent_data_model():
    from conformance.agent.config import set_value
    from conformance.agent.datamodel import validate_value
    from conformance.agent.mtp.from_model import build_mtps

    p = default_profile()
    values = builtin_agent_values(p, ports={"mqtt": 18830, "stomp": 61614, "websocket": 18080},
                                  sockets={"uds": "/tmp/usp-conformance-test.sock"})
    store = _factory_store()
    for param, value in values.items():
        set_value(store, param, value, where="test")
        definition = store.param_def(param)
        assert definition is not None
        assert validate_value(definition, value) is None, (param, value)
    assert store.get("Device.MQTT.Client.1.BrokerPort") == "18830"
    assert store.get("Device.LocalAgent.Controller.1.MTP.3.WebSocket.Port") == "18080"
    kinds = sorted(type(m).__name__ for m in build_mtps(store, p.eut.endpoint_id))
    assert kinds == ["MQTTMTP", "STOMPMTP", "UDSMTP", "WebSocketMTP"]


def test_builtin_agent_values_other_settings(tmp_path):
    p = _load(tmp_path, MINIMAL.replace("  - mtp: mqtt", """\
  - mtp: mqtt
    port: 1884
    username: u
    password: p
  - mtp: websocket
    role: controller-connects
    url: ws://127.0.0.1/usp
  - mtp: stomp
    port: 61613
    virtual_host: vh
  - mtp: uds
    socket: /tmp/a.sock""") + """\
agent:
  builtin: true
  values:
    Device.MQTT.Client.1.KeepAliveTime: 30
    Device.MQTT.Client.1.BrokerPort: 1999
    Device.STOMP.Connection.1.EnableHeartbeats: true
""")
    values = builtin_agent_values(p)
    assert values["Device.MQTT.Client.1.Username"] == "u"
    assert values["Device.MQTT.Client.1.BrokerPort"] == "1999"  # agent.values win
    assert values["Device.MQTT.Client.1.KeepAliveTime"] == "30"
    assert values["Device.STOMP.Connection.1.EnableHeartbeats"] == "true"
    assert values["Device.STOMP.Connection.1.VirtualHost"] == "vh"
    assert values["Device.LocalAgent.MTP.3.WebSocket.Port"] == "80"
    assert values["Device.LocalAgent.MTP.3.WebSocket.EnableEncryption"] == "false"
    assert values["Device.UnixDomainSockets.UnixDomainSocket.1.Path"] == "/tmp/a.sock"
    assert values["Device.MQTT.Client.1.Subscription.1.Topic"] == "usp/agent/os::00D09E-0001/#"
    assert values["Device.LocalAgent.Controller.1.EndpointID"] == "proto::controller-1"


def test_builtin_agent_values_connect_to_loopback_for_wildcard_hosts(tmp_path):
    p = _load(tmp_path, MINIMAL.replace("  - mtp: mqtt", "  - {mtp: mqtt, host: 0.0.0.0, port: 1}\n"
                                                          "  - {mtp: stomp, host: '::', port: 2}")
              + "agent: {builtin: true}\n")
    values = builtin_agent_values(p)
    assert values["Device.MQTT.Client.1.BrokerAddress"] == "127.0.0.1"
    assert values["Device.STOMP.Connection.1.Host"] == "::1"


def test_builtin_agent_values_need_bound_ports_and_sockets(tmp_path):
    with pytest.raises(ValueError, match="built-in agent"):
        builtin_agent_values(_load(tmp_path, MINIMAL))
    p = default_profile()
    with pytest.raises(ValueError, match="port 0"):
        builtin_agent_values(p)
    with pytest.raises(ValueError, match="socket path"):
        builtin_agent_values(p, ports={"mqtt": 1, "stomp": 2, "websocket": 3})


# --- hostile input ---------------------------------------------------------------------------

_NOWHERE = Path("/nonexistent-usp-conformance-dir/eut.yaml")
_KEYS = sorted({"eut", "features", "alternates", "mtps", "default_mtp", "controllers", "reboot",
                "timeouts", "agent", "firmware", "name", "endpoint_id", "firmware_version",
                "firmware_banks", "mtp", "broker", "host", "port", "tls", "enabled", "ca",
                "primary", "secondary", "method", "command", "builtin", "faults", "values",
                "url", "role", "socket", "image", "version", "heart_beat"} | set(ALTERNATES))
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["mqtt", "stomp", "websocket", "uds", "coap", "suite", "external",
                     "os::00D09E-1", "proto::c", "usp", "command", "Device.Reboot()",
                     "ws://h:1/x", "wss://h/x", "agent-connects", "controller-connects", "5.0",
                     "msg.no_response", "a.pem"]))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=8)),
                                            inner, max_size=5)),
    max_leaves=25)


def _only_profile_errors(text: str) -> None:
    try:
        profile = parse_profile(text, path=_NOWHERE)
    except ProfileError as exc:
        assert "\n" not in str(exc) and "; fix: " in str(exc)
    else:
        assert isinstance(profile, EUTProfile)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS), _values, max_size=8))
def test_random_mappings_only_raise_profile_error(data):
    _only_profile_errors(yaml.safe_dump(data, allow_unicode=True))


_REFERENCE_DATA = yaml.safe_load(REFERENCE.read_text())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


_REFERENCE_PATHS = _paths(_REFERENCE_DATA)[1:]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_REFERENCE_PATHS), _values, st.booleans())
def test_mutated_reference_profile_only_raises_profile_error(path, value, delete):
    import copy

    data = copy.deepcopy(_REFERENCE_DATA)
    node = data
    for step in path[:-1]:
        node = node[step]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    _only_profile_errors(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_only_raises_profile_error(text):
    _only_profile_errors(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(MINIMAL.splitlines() + ["  - ", ": ", "- [", "  x: {", "&a", "*a",
                                                        "<<: *a", "!!binary x", "? ", "%YAML 1.1",
                                                        "---", "..."]),
                max_size=14))
def test_shuffled_profile_lines_only_raise_profile_error(lines):
    _only_profile_errors("\n".join(lines) + "\n")
