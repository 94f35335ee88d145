"""Agent run configuration and factory defaults: loading, applying, clear errors."""

from __future__ import annotations

import pytest

from conformance.agent.config import (
    ConfigError,
    apply_factory_defaults,
    load_config,
    load_factory_defaults,
    to_text,
)
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.store import Store


def _store() -> Store:
    return Store(load_definitions())


def test_packaged_factory_defaults_build_a_usable_model():
    store = _store()
    doc, where = load_factory_defaults(None)
    events = []
    store.listen(events.append)
    apply_factory_defaults(store, doc, where=where)
    assert events == []  # built quietly: no notifications for the factory state
    assert store.get("Device.LocalAgent.EndpointID") == "os::012345-0001"
    assert store.get("Device.LocalAgent.ControllerNumberOfEntries") == "1"
    assert store.get("Device.LocalAgent.Controller.1.MTP.1.MQTT.Topic") == "usp/controller"
    assert store.get("Device.DeviceInfo.FirmwareImageNumberOfEntries") == "2"
    for path in store.object_paths():  # every stored value is valid for its definition
        from conformance.agent.datamodel import validate_value
        obj = store.object_def(path)
        for name, value in store.params(path).items():
            problem = validate_value(obj.params[name], value)
            assert problem is None or value == "", f"{path}{name}={value!r}: {problem}"


def test_run_config(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("state_dir: state\nfaults: [msg.no_response]\n"
                   "values:\n  Device.MQTT.Client.1.BrokerPort: 18830\n  Device.MQTT.Client.1.Enable: true\n")
    conf = load_config(cfg)
    assert conf.state_dir == tmp_path / "state" and conf.faults == ("msg.no_response",)
    assert conf.extra_values == {"Device.MQTT.Client.1.BrokerPort": "18830",
                                 "Device.MQTT.Client.1.Enable": "true"}
    assert conf.state_file == tmp_path / "state" / "datamodel.json"


@pytest.mark.parametrize("text, message", [
    ("faults: []\n", "'state_dir' is missing"),
    ("state_dir: s\nbogus: 1\n", "unknown key(s) bogus"),
    ("state_dir: s\nfaults: [no.such]\n", "unknown fault(s) no.such"),
    ("state_dir: s\nfaults: notalist\n", "'faults' must be a list"),
    ("state_dir: [unclosed\n", "not valid YAML"),
    ("- a list\n", "expected a mapping"),
])
def test_run_config_errors_are_one_line_and_name_the_file(tmp_path, text, message):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert message in str(err.value) and str(cfg) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("doc, message", [
    ({"values": {"Device.Nope.X": 1}}, "Device.Nope.X is not a parameter"),
    ({"objects": [{"values": {}}]}, "needs 'table'"),
    ({"objects": [{"table": "Device.DeviceInfo."}]}, "not a multi-instance"),
    ({"objects": [{"table": "Device.LocalAgent.Controller"}]}, "must end with '.'"),
    ({"objects": [{"table": "Device.LocalAgent.Controller.",
                   "children": [{"table": "MTP.", "values": {"Nope": 1}}]}]},
     "objects[1].children[1]"),
])
def test_factory_default_errors(doc, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        apply_factory_defaults(_store(), doc, where="fd.yaml")


def test_to_text():
    assert [to_text(v) for v in (True, False, None, 5, [1, 2], "x")] == \
        ["true", "false", "", "5", "1,2", "x"]
