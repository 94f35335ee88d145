"""Tests for the reference Agent's TR-181 definitions: generator, shipped data file, loader.

* ``scripts/gen_datamodel.py`` on the hand-written DM Schema fixtures in
  ``tests/agent/data`` (data types, lists, enumerations, ranges, unique keys,
  commands with mandatory inputs, async commands, events, profiles, overlays);
* the shipped ``tr181.json`` against the BBF XML when it is present
  (staleness, and spot checks read from the XML itself);
* ``conformance.agent.datamodel.defs``: lookups in every path form, the
  GetSupportedDM enum mappings (TR-369 "The GetSupportedDM Message";
  writeOnceReadOnly -> PARAM_READ_WRITE), and ``validate_value`` which decides
  error 7012 for Set/Add (R-SET.2, R-ADD.4), including a hypothesis property.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.datamodel import defs
from conformance.agent.datamodel.defs import (
    ArgDef,
    CommandDef,
    DataModel,
    DefinitionsError,
    EventDef,
    ListFacet,
    ObjectDef,
    ParamDef,
    Range,
    Size,
    cmd_type,
    load_definitions,
    obj_access_type,
    param_access_type,
    param_value_type,
    validate_value,
    value_change_type,
)
from conformance.usp import schema

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
SHIPPED = ROOT / "conformance" / "agent" / "datamodel" / "tr181.json"
GSDM = schema.msg_pb2.GetSupportedDMResp


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_datamodel", ROOT / "scripts" / "gen_datamodel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_datamodel", module)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


# --- generator on the hand-written fixtures --------------------------------------------


def _fixture_doc(**kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "base_file": "dm-base.xml",
        "overlays": (gen.Overlay("dm-overlay.xml", "WidgetV2", "Device.Widget."),),
        "selection": (gen.Select("Device.", subtree=False), gen.Select("Device.Widget.")),
        "profiles": None,
    }
    options.update(kwargs)
    doc: dict[str, Any] = gen.generate(DATA, **options)
    return doc


@pytest.fixture(scope="module")
def fixture_doc() -> dict[str, Any]:
    return _fixture_doc()


@pytest.fixture(scope="module")
def fixture_model(fixture_doc: dict[str, Any]) -> DataModel:
    return defs.from_document(json.loads(gen.dumps(fixture_doc)))


def _objects(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["path"]: o for o in doc["objects"]}


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(i for i in items if i["name"] == name)


def test_fixture_header_and_order(fixture_doc: dict[str, Any]) -> None:
    assert fixture_doc["format"] == defs.FORMAT_VERSION == 1
    assert fixture_doc["model"] == "Test:1.0"
    assert fixture_doc["sources"] == {"dm-base.xml": "urn:example:test-base",
                                      "dm-overlay.xml": "urn:example:test-overlay"}
    # schema order, descendants right after their parent; the overlay's new
    # object follows its predecessor; deleted and unselected objects are gone
    assert [o["path"] for o in fixture_doc["objects"]] == [
        "Device.", "Device.Widget.", "Device.Widget.Thing.{i}.",
        "Device.Widget.Thing.{i}.Extra.", "Device.Widget.Thing.{i}.Part.{i}.",
    ]


def test_fixture_root_object_commands_events(fixture_doc: dict[str, Any]) -> None:
    root = _objects(fixture_doc)["Device."]
    # OtherNumberOfEntries counts a table that is not shipped: dropped
    assert [p["name"] for p in root["params"]] == ["Version", "WidgetCount"]
    assert _named(root["params"], "Version") == {
        "name": "Version", "access": "readOnly", "type": "string",
        "sizes": [[None, 8]], "patterns": [r"1\.\d+"]}
    assert _named(root["commands"], "Restart()") == {"name": "Restart()", "async": False}
    delay = _named(root["commands"], "Delay()")
    assert delay["async"] is True
    assert delay["input"]["args"] == [
        {"name": "Seconds", "type": "unsignedInt", "mandatory": True,
         "ranges": [[1, None, None]], "units": "seconds"},
        {"name": "Note", "type": "string", "default": {"type": "parameter", "value": "none"}},
        {"name": "Target", "type": "string",
         "reference": {"ref_type": "weak", "target_type": "row",
                       "target_parent": ["Device.Widget.Thing."]}},
    ]
    # the deleted enumeration value is dropped; argument objects are flattened
    assert delay["output"] == {
        "args": [{"name": "Status", "type": "string", "enumerations": ["Done", "Failed"]},
                 {"name": "Result.{i}.Code", "type": "int", "mandatory": True}],
        "objects": [{"name": "Result.{i}.", "min_entries": 0, "max_entries": None}],
    }
    assert root["events"] == [{"name": "Started!", "args": [
        {"name": "Reason", "type": "string", "enumerations": ["Power", "Remote"]},
        {"name": "When", "type": "dateTime"}]}]


def test_fixture_warnings_for_unknown_modifications() -> None:
    warnings: list[str] = []
    _fixture_doc(warnings=warnings)
    assert warnings == ["modification of unknown parameter Device.Widget.Thing.{i}.Missing"]


def test_fixture_items_filter() -> None:
    doc = _fixture_doc(selection=(gen.Select("Device.", subtree=False,
                                             items=("Version", "Delay()")),))
    (root,) = doc["objects"]
    assert [p["name"] for p in root["params"]] == ["Version"]
    assert [c["name"] for c in root["commands"]] == ["Delay()"]
    assert "events" not in root
    assert doc["profiles"] == []  # every fixture profile references something not shipped


def test_fixture_data_types_and_facets(fixture_doc: dict[str, Any]) -> None:
    thing = _objects(fixture_doc)["Device.Widget.Thing.{i}."]
    params = {p["name"]: p for p in thing["params"]}
    # Alias from the imported Alias component, resolved through Alias -> _Text
    assert params["Alias"] == {"name": "Alias", "access": "readWrite", "type": "string",
                               "data_type": "Alias", "sizes": [[None, 64]]}
    assert params["Enable"]["default"] == {"type": "object", "value": "false"}
    assert params["Slot"]["ranges"] == [[0, 8, 2], [100, 100, None]]
    assert params["Tags"]["list"] == {"max_items": 3, "max_length": 20}
    assert params["Tags"]["enumerations"] == ["red", "green", "blue"]
    assert params["Peer"]["reference"] == {"ref_type": "strong", "target_type": "row",
                                           "target_parent": ["Device.Widget.Thing."]}
    assert params["Secret"]["secured"] is True
    assert params["Ratio"] == {"name": "Ratio", "access": "readWrite", "type": "decimal",
                               "ranges": [["-1.5", "2.25", None]]}
    assert params["Blob"]["sizes"] == [[None, 3]]
    assert params["Raw"]["sizes"] == [[0, 0], [2, 4]] and params["Raw"]["data_type"] == "Octets"
    assert params["Key"]["access"] == "writeOnceReadOnly"
    assert params["Hits"] == {"name": "Hits", "access": "readOnly", "type": "unsignedLong",
                              "data_type": "Counter", "units": "packets",
                              "active_notify": "canDeny"}
    assert params["Span"]["list"] == {"min_items": 2, "max_items": 2}
    assert params["Span"]["ranges"] == [[-5, 5, None]] and params["Span"]["type"] == "int"
    # anonymous restriction <dataType base="Name">: patterns inherited, size narrowed
    assert params["Level"]["patterns"] == ["", "[a-z]+"] and params["Level"]["sizes"] == [[None, 4]]
    assert "Gone" not in params  # status="deleted" in the base document


def test_fixture_overlay_merge(fixture_doc: dict[str, Any]) -> None:
    objects = _objects(fixture_doc)
    widget = objects["Device.Widget."]
    # a parameter redefined with name= replaces the old one; new ones are added
    assert _named(widget["params"], "Mode") == {"name": "Mode", "access": "readWrite",
                                                "type": "string", "enumerations": ["Fast", "Eco"]}
    colour = _named(widget["params"], "Colour")
    assert colour["data_type"] == "Label" and colour["patterns"] == ["", "[a-z]+"]
    probe = _named(widget["commands"], "Probe()")
    assert probe["input"]["args"] == [{"name": "Verbose", "type": "boolean",
                                       "default": {"type": "parameter", "value": "false"}}]
    thing = objects["Device.Widget.Thing.{i}."]
    names = [p["name"] for p in thing["params"]]
    assert names[:4] == ["Alias", "Enable", "Name", "Weight"]  # new item follows its predecessor
    assert "Old" not in names  # deleted by the overlay
    slot = _named(thing["params"], "Slot")
    assert slot["access"] == "readOnly" and slot["ranges"] == [[0, 8, 2], [100, 100, None]]
    name = _named(thing["params"], "Name")
    assert name["sizes"] == [[None, 10]] and name["patterns"] == ["", "[a-z]+"]
    assert thing["commands"] == [{"name": "Reset()", "async": True}]
    assert thing["unique_keys"] == [{"functional": False, "params": ["Alias"]},
                                    {"functional": True, "params": ["Name", "Slot"]}]
    assert thing["num_entries_parameter"] == "ThingNumberOfEntries"
    assert thing["enable_parameter"] == "Enable"
    assert thing["min_entries"] == 0 and thing["max_entries"] is None
    assert objects["Device.Widget.Thing.{i}.Part.{i}."]["max_entries"] == 4


def test_fixture_profiles(fixture_doc: dict[str, Any]) -> None:
    profiles = {p["name"]: p for p in fixture_doc["profiles"]}
    # Other:1 names an unshipped object, OtherPlus:1 is based on it
    assert sorted(profiles) == ["Widget:1", "WidgetPlus:1"]
    # the overlay's Widget:1 wins
    assert profiles["Widget:1"]["objects"][0]["params"] == [["ThingNumberOfEntries", "readOnly"],
                                                            ["Mode", "readOnly"]]
    plus = profiles["WidgetPlus:1"]
    assert plus["extends"] == ["Widget:1"]
    assert plus["objects"][1] == {"path": "Device.", "requirement": "present",
                                  "commands": ["Delay()"], "events": ["Started!"]}


def test_fixture_dumps_is_canonical_and_gz_roundtrip(fixture_doc: dict[str, Any],
                                                     tmp_path: Path) -> None:
    data = gen.dumps(fixture_doc)
    assert data == gen.dumps(_fixture_doc())  # deterministic
    assert data.endswith(b"}\n") and json.loads(data) == json.loads(json.dumps(fixture_doc))
    plain, packed = tmp_path / "m.json", tmp_path / "m.json.gz"
    gen.write(fixture_doc, plain)
    gen.write(fixture_doc, packed)
    assert plain.read_bytes() == data == gzip.decompress(packed.read_bytes())
    assert gzip.compress(data, mtime=0) == packed.read_bytes()
    model = load_definitions(packed)
    assert model.find("Device.Widget.Thing.1.Slot") is not None
    assert load_definitions(packed) is model  # cached


def test_generator_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.xml").write_text("<not-xml")
    with pytest.raises(gen.GenerationError):
        gen.generate(tmp_path, base_file="bad.xml", overlays=())
    (tmp_path / "other.xml").write_text("<document/>")
    with pytest.raises(gen.GenerationError, match="not a BBF DM Schema"):
        gen.generate(tmp_path, base_file="other.xml", overlays=())
    with pytest.raises(gen.GenerationError, match="no component"):
        gen.generate(DATA, base_file="dm-base.xml",
                     overlays=(gen.Overlay("dm-overlay.xml", "Missing", "Device."),))
    assert gen.main(["--reference", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    (tmp_path / "numbers.xml").write_text(
        '<dm:document xmlns:dm="urn:broadband-forum-org:cwmp:datamodel-1-14"><model name="M">'
        '<object name="Device." access="readOnly" minEntries="one" maxEntries="1"/>'
        "</model></dm:document>")
    with pytest.raises(gen.GenerationError, match="unexpected"):
        gen.generate(tmp_path, base_file="numbers.xml", overlays=())


def test_resolve_ref() -> None:
    assert gen.resolve_ref(".IP.Interface.", "Device.X.{i}.") == "Device.IP.Interface."
    assert gen.resolve_ref("#.Controller.", "Device.LocalAgent.Subscription.{i}.") == \
        "Device.LocalAgent.Controller."
    assert gen.resolve_ref("Role.", "Device.LocalAgent.ControllerTrust.") == \
        "Device.LocalAgent.ControllerTrust.Role."
    assert gen.resolve_ref("#.ExecEnv.", "Device.SoftwareModules.InstallDU()") == \
        "Device.SoftwareModules.ExecEnv."
    assert gen.resolve_ref("Device.Security.Certificate.", "Device.X.") == \
        "Device.Security.Certificate."
    assert gen.resolve_ref("####.A.", "Device.B.") == "Device.A."  # never above Device
    # fall back to fewer climbs only when the regular target does not exist
    known = {"Device.SoftwareModules.ExecEnv."}
    assert gen.resolve_ref("##.ExecEnv.", "Device.SoftwareModules.InstallDU()",
                           known.__contains__) == "Device.SoftwareModules.ExecEnv."


# --- the shipped data file and the BBF XML ---------------------------------------------


@pytest.fixture(scope="module")
def tr181_dir(reference_dir: Path) -> Path:
    path = reference_dir / "tr-181"
    if not (path / gen.BASE_FILE).is_file():
        pytest.skip(f"BBF TR-181 XML not present at {path} (developer aid only)")
    return path


@pytest.fixture(scope="module")
def xml_model(tr181_dir: Path) -> ET.Element:
    root = ET.parse(tr181_dir / gen.BASE_FILE).getroot()
    model = root.find("model")
    assert model is not None
    return model


def _xml_object(model: ET.Element, path: str) -> ET.Element:
    found = model.find(f"object[@name='{path}']")
    assert found is not None, path
    return found


def test_shipped_file_is_fresh(tr181_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tr181.json"
    assert gen.main(["--reference", str(tr181_dir), "--out", str(out)]) == 0
    assert out.read_bytes() == SHIPPED.read_bytes(), \
        "stale conformance/agent/datamodel/tr181.json: run python scripts/gen_datamodel.py"


def test_shipped_file_is_small_and_has_no_prose() -> None:
    data = SHIPPED.read_bytes()
    assert len(data) < 600_000
    assert b"description" not in data and b"{{" not in data


def test_subscription_table_matches_xml(xml_model: ET.Element) -> None:
    dm = load_definitions()
    sub = dm.object("Device.LocalAgent.Subscription.{i}.")
    assert sub.multi_instance and sub.access == "readWrite"
    xml_obj = _xml_object(xml_model, "Device.LocalAgent.Subscription.{i}.")
    xml_keys = tuple(tuple(p.get("ref", "") for p in k.findall("parameter"))
                     for k in xml_obj.findall("uniqueKey"))
    assert sub.unique_keys == xml_keys == (("Alias",), ("Recipient", "ID"))
    assert [k.functional for k in sub.unique_key_defs] == [False, False]
    assert sub.num_entries_parameter == "SubscriptionNumberOfEntries"
    assert sub.enable_parameter == "Enable"
    notif = xml_obj.find("parameter[@name='NotifType']/syntax/string")
    assert notif is not None
    xml_enums = tuple(e.get("value") for e in notif.findall("enumeration"))
    assert sub.params["NotifType"].enumerations == xml_enums == (
        "ValueChange", "ObjectCreation", "ObjectDeletion", "OperationComplete", "Event")
    assert sub.params["Recipient"].target_parent == ("Device.LocalAgent.Controller.",)


def test_root_commands_and_boot_event_match_xml(xml_model: ET.Element) -> None:
    dm = load_definitions()
    root = _xml_object(xml_model, "Device.")
    reboot = dm.find("Device.Reboot()")
    assert isinstance(reboot, CommandDef) and not reboot.is_async
    assert root.find("command[@name='Reboot()']").get("async") == "false"  # type: ignore[union-attr]
    timer = dm.find("Device.ScheduleTimer()")
    assert isinstance(timer, CommandDef) and timer.is_async
    xml_delay = root.find("command[@name='ScheduleTimer()']/input/parameter[@name='DelaySeconds']")
    assert xml_delay is not None and xml_delay.get("mandatory") == "true"
    assert timer.mandatory_input_args == ("DelaySeconds",)
    assert timer.input_args["DelaySeconds"].ranges == (Range(min=Decimal(1)),)
    boot = dm.find("Device.Boot!")
    assert isinstance(boot, EventDef)
    xml_args = [p.get("name") for p in root.findall("event[@name='Boot!']/parameter")]
    assert list(boot.arg_names) == xml_args == ["CommandKey", "Cause", "FirmwareUpdated",
                                                "ParameterMap"]
    assert "RemoteReboot" in boot.args["Cause"].enumerations
    assert boot.args["ParameterMap"].data_type == "JSONObject"
    assert dm.find("Device.PacketCaptureDiagnostics()") is None  # not in SELECTION
    assert set(dm.object("Device.").commands) == {"Reboot()", "FactoryReset()", "ScheduleTimer()",
                                                  "SelfTestDiagnostics()"}


def test_firmware_and_localagent_spot_checks(xml_model: ET.Element) -> None:
    dm = load_definitions()
    download = dm.find("Device.DeviceInfo.FirmwareImage.2.Download()")
    assert isinstance(download, CommandDef) and download.is_async
    xml_dl = _xml_object(xml_model, "Device.DeviceInfo.FirmwareImage.{i}.").find(
        "command[@name='Download()']")
    assert xml_dl is not None and xml_dl.get("async") == "true"
    assert {"URL", "AutoActivate"} <= set(download.mandatory_input_args)
    activate = dm.find("Device.DeviceInfo.FirmwareImage.{i}.Activate()")
    assert isinstance(activate, CommandDef)
    assert activate.input_objects["TimeWindow.{i}."].max_entries == 5
    assert activate.input_args["TimeWindow.{i}.Mode"].mandatory
    mtp = dm.object("Device.LocalAgent.Controller.{i}.MTP.{i}.")
    assert mtp.multi_instance and dm.object("Device.LocalAgent.Controller.{i}.").multi_instance
    assert mtp in dm.children("Device.LocalAgent.Controller.{i}.")
    local = dm.object("Device.LocalAgent.")
    assert {"Periodic!", "TransferComplete!"} <= set(local.events)
    assert "AddCertificate()" in local.commands
    assert dm.find("Device.LocalAgent.Request.1.Cancel()") is not None
    perm = dm.object("Device.LocalAgent.ControllerTrust.Role.{i}.Permission.{i}.")
    assert perm.multi_instance
    for path in ("Device.DeviceInfo.SoftwareVersion", "Device.DeviceInfo.BootFirmwareImage",
                 "Device.DeviceInfo.VendorConfigFile.{i}.", "Device.MQTT.Client.{i}.",
                 "Device.STOMP.Connection.{i}.", "Device.UnixDomainSockets.UnixDomainSocket.{i}.",
                 "Device.SoftwareModules.InstallDU()", "Device.BulkData.Profile.{i}.",
                 "Device.USPServices.USPService.{i}.", "Device.Time.",
                 "Device.LocalAgent.Controller.{i}.BootParameter.{i}.",
                 "Device.LocalAgent.Controller.{i}.E2ESession.",
                 "Device.LocalAgent.Certificate.{i}.", "Device.LocalAgent.ControllerTrust.Credential.{i}."):
        assert dm.find(path) is not None, path


def test_overlays_win_over_2_16(tr181_dir: Path) -> None:
    dm = load_definitions()
    # CoAP was deleted in the 2.19 components; ALPN and USPServices.Trust are new there
    assert dm.find("Device.LocalAgent.MTP.{i}.CoAP.") is None
    assert dm.find("Device.LocalAgent.Controller.{i}.MTP.{i}.CoAP.") is None
    assert "CoAP" not in dm.find("Device.LocalAgent.SupportedProtocols").enumerations  # type: ignore[union-attr]
    assert dm.find("Device.MQTT.Client.{i}.ALPN") is not None
    assert dm.find("Device.USPServices.Trust.{i}.") is not None
    assert "ModifyAvailableAccessInterfaces()" in dm.object("Device.SoftwareModules.ExecEnv.{i}.").commands
    # the 2.19 modification made ExecEnv.{i}.Enable writable and added Restarting
    exec_env = dm.object("Device.SoftwareModules.ExecEnv.{i}.")
    assert exec_env.params["Enable"].access == "readWrite"
    assert "Restarting" in exec_env.params["Status"].enumerations
    # 2.16 items the components do not mention are kept
    assert dm.find("Device.LocalAgent.Subscription.{i}.") is not None
    assert dm.find("Device.LocalAgent.Controller.{i}.SendOnBoardRequest()") is not None


def test_shipped_profiles() -> None:
    dm = load_definitions()
    for name in ("LocalAgent:1", "Subscriptions:1", "Controllers:1", "ControllerTrust:1",
                 "MQTTClientCon:1", "Firmware:1", "Reboot:1", "STOMPConn:1"):
        assert name in dm.profiles, name
    firmware = dm.profile("Firmware:1")
    assert firmware.objects["Device.DeviceInfo.FirmwareImage.{i}."].commands == ("Download()",)
    assert firmware.objects["Device.LocalAgent."].events == ("TransferComplete!",)
    assert "CoAPAgent:1" not in dm.profiles  # refers to the deleted CoAP object
    with pytest.raises(KeyError):
        dm.profile("Nope:1")


def test_every_shipped_default_is_a_valid_value() -> None:
    checked = 0
    for obj in load_definitions():
        items: list[ParamDef] = list(obj.params.values())
        for cmd in obj.commands.values():
            items += [*cmd.input_args.values(), *cmd.output_args.values()]
        for event in obj.events.values():
            items += list(event.args.values())
        for item in items:
            if item.default is not None:
                checked += 1
                assert validate_value(item, item.default.value) is None, (obj.path, item.name)
    assert checked > 100


# --- loader ------------------------------------------------------------------------------


def test_load_definitions_cached_and_typed() -> None:
    dm = load_definitions()
    assert load_definitions() is dm
    assert dm.model.startswith("Device:2.")
    assert len(dm) == len(dm.objects) > 50
    assert dm.objects[0].path == "Device."
    assert all(isinstance(o, ObjectDef) for o in dm)
    # every object comes after its parent, and its subtree is contiguous
    order = [o.path for o in dm]
    for i, path in enumerate(order[1:], start=1):
        parent = next(p for p in reversed(order[:i]) if path.startswith(p))
        assert all(q.startswith(parent) for q in order[order.index(parent) + 1:i]), path


def test_load_definitions_errors(tmp_path: Path) -> None:
    with pytest.raises(DefinitionsError):
        load_definitions(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DefinitionsError):
        load_definitions(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": 99, "objects": []}))
    with pytest.raises(DefinitionsError, match="format"):
        load_definitions(wrong)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"format": 1, "objects": [{"no_path": True}]}))
    with pytest.raises(DefinitionsError, match="malformed"):
        load_definitions(broken)
    with pytest.raises(DefinitionsError):
        defs.from_document([])  # type: ignore[arg-type]


@pytest.mark.parametrize(("path", "kind", "supported"), [
    ("Device.", ObjectDef, "Device."),
    ("Device.Widget.Thing.{i}.", ObjectDef, "Device.Widget.Thing.{i}."),
    ("Device.Widget.Thing.", ObjectDef, "Device.Widget.Thing.{i}."),
    ("Device.Widget.Thing.7.", ObjectDef, "Device.Widget.Thing.{i}."),
    ("Device.Widget.Thing.*.", ObjectDef, "Device.Widget.Thing.{i}."),
    ('Device.Widget.Thing.[Name=="abc"].', ObjectDef, "Device.Widget.Thing.{i}."),
    ("Device.Widget.Thing.7.Part.2.", ObjectDef, "Device.Widget.Thing.{i}.Part.{i}."),
    ("Device.Widget.Thing.7.Part.", ObjectDef, "Device.Widget.Thing.{i}.Part.{i}."),
    ("Device.Widget.Thing.3.Slot", ParamDef, "Device.Widget.Thing.{i}.Slot"),
    ("Device.Widget.Thing.*.Slot", ParamDef, "Device.Widget.Thing.{i}.Slot"),
    ("Device.Widget.Thing.{i}.Slot", ParamDef, "Device.Widget.Thing.{i}.Slot"),
    ("Device.Widget.Mode", ParamDef, "Device.Widget.Mode"),
    ("Device.Delay()", CommandDef, "Device.Delay()"),
    ("Device.Widget.Thing.4.Reset()", CommandDef, "Device.Widget.Thing.{i}.Reset()"),
    ("Device.Started!", EventDef, "Device.Started!"),
])
def test_find_every_form(fixture_model: DataModel, path: str, kind: type, supported: str) -> None:
    found = fixture_model.find(path)
    assert isinstance(found, kind)
    assert found.path == supported  # type: ignore[union-attr]
    assert path in fixture_model


@pytest.mark.parametrize("path", [
    "", "Device", "Device.Nope.", "Device.Widget.Nope", "Device.Widget.Thing.1.Nope()",
    "Device.Widget.Thing.1.Nope!", "Device.Nope.Slot", "Device.Widget.Thing.1.Peer+.Slot",
    "Device..", "not a path", "Device.Widget.Thing.0.", "Device.Other.1.",
])
def test_find_unknown_or_malformed(fixture_model: DataModel, path: str) -> None:
    assert fixture_model.find(path) is None
    assert path not in fixture_model
    assert fixture_model.find_object(path) is None


def test_find_rejects_non_strings(fixture_model: DataModel) -> None:
    assert fixture_model.find(None) is None  # type: ignore[arg-type]
    assert 3 not in fixture_model


def test_object_and_find_object(fixture_model: DataModel) -> None:
    thing = fixture_model.object("Device.Widget.Thing.{i}.")
    assert fixture_model.find_object("Device.Widget.Thing.2.Slot") is thing
    assert fixture_model.find_object("Device.Widget.Thing.2.Reset()") is thing
    assert fixture_model.find_object("Device.Widget.Thing.2.") is thing
    assert fixture_model.find_object("Device.Started!") is fixture_model.object("Device.")
    with pytest.raises(KeyError):
        fixture_model.object("Device.Widget.Thing.")  # supported form only


def test_object_def_properties(fixture_model: DataModel) -> None:
    thing = fixture_model.object("Device.Widget.Thing.{i}.")
    assert thing.multi_instance and thing.name == "Thing"
    assert thing.table_path == "Device.Widget.Thing."
    assert thing.unique_keys == (("Alias",), ("Name", "Slot"))
    assert [k.functional for k in thing.unique_key_defs] == [False, True]
    assert thing.min_entries == 0 and thing.max_entries is None
    widget = fixture_model.object("Device.Widget.")
    assert not widget.multi_instance and widget.table_path == "Device.Widget." and widget.name == "Widget"
    assert fixture_model.object("Device.").name == "Device"


def test_children(fixture_model: DataModel) -> None:
    def paths(objs: tuple[ObjectDef, ...]) -> list[str]:
        return [o.path for o in objs]

    assert paths(fixture_model.children("Device.")) == ["Device.Widget."]
    assert paths(fixture_model.children("Device.", first_level_only=False)) == [
        "Device.Widget.", "Device.Widget.Thing.{i}.", "Device.Widget.Thing.{i}.Extra.",
        "Device.Widget.Thing.{i}.Part.{i}."]
    assert paths(fixture_model.children("Device.Widget.Thing.3.")) == [
        "Device.Widget.Thing.{i}.Extra.", "Device.Widget.Thing.{i}.Part.{i}."]
    assert fixture_model.children("Device.Widget.Thing.{i}.Part.{i}.") == ()
    assert fixture_model.children("Device.Nope.") == ()
    assert fixture_model.children("Device.Widget.Mode") == ()


def test_param_def_properties(fixture_model: DataModel) -> None:
    thing = fixture_model.object("Device.Widget.Thing.{i}.")
    p = thing.params
    assert p["Key"].write_once and p["Key"].is_writable
    assert not p["Slot"].is_writable and not p["Slot"].write_once
    assert p["Peer"].is_reference and p["Peer"].target_parent == ("Device.Widget.Thing.",)
    assert not p["Slot"].is_reference and p["Slot"].target_parent == ()
    assert p["Tags"].is_list and p["Tags"].list == ListFacet(max_items=3, max_length=20)
    assert p["Raw"].max_length == 4 and p["Raw"].min_length == 0
    assert p["Name"].max_length == 10
    assert p["Secret"].max_length is None and p["Secret"].secured
    assert p["Hits"].units == "packets" and p["Hits"].data_type == "Counter"
    assert p["Enable"].default == defs.Default("object", "false")
    assert thing.params["Alias"].path == "Device.Widget.Thing.{i}.Alias"


def test_command_and_event_defs(fixture_model: DataModel) -> None:
    delay = fixture_model.find("Device.Delay()")
    assert isinstance(delay, CommandDef)
    assert delay.input_arg_names == ("Seconds", "Note", "Target")
    assert delay.output_arg_names == ("Status", "Result.{i}.Code")
    assert delay.mandatory_input_args == ("Seconds",)
    seconds = delay.input_args["Seconds"]
    assert isinstance(seconds, ArgDef) and seconds.mandatory and seconds.units == "seconds"
    assert delay.input_args["Note"].default == defs.Default("parameter", "none")
    result = delay.output_objects["Result.{i}."]
    assert result.multi_instance and result.min_entries == 0 and result.max_entries is None
    restart = fixture_model.find("Device.Restart()")
    assert isinstance(restart, CommandDef) and restart.input_args == {}
    started = fixture_model.find("Device.Started!")
    assert isinstance(started, EventDef) and started.arg_names == ("Reason", "When")
    assert started.objects == {}


def test_profile_members(fixture_model: DataModel) -> None:
    plus = fixture_model.profile("WidgetPlus:1")
    assert plus.extends == ("Widget:1",) and plus.base is None
    members = fixture_model.profile_members("WidgetPlus:1")
    assert set(members) == {"Device.Widget.", "Device.Widget.Thing.{i}.", "Device."}
    thing = members["Device.Widget.Thing.{i}."]
    assert thing.requirement == "createDelete"  # the stronger requirement wins
    assert dict(thing.params) == {"Enable": "readWrite", "Slot": "readWrite"}
    assert members["Device."].commands == ("Delay()",)
    assert dict(members["Device.Widget."].params) == {"ThingNumberOfEntries": "readOnly",
                                                      "Mode": "readOnly"}
    assert set(fixture_model.profile_members("Widget:1")) == {"Device.Widget.",
                                                              "Device.Widget.Thing.{i}."}


# --- GetSupportedDM enum mappings ------------------------------------------------------


@pytest.mark.parametrize(("kind", "expected"), [
    ("base64", GSDM.PARAM_BASE_64), ("boolean", GSDM.PARAM_BOOLEAN),
    ("dateTime", GSDM.PARAM_DATE_TIME), ("decimal", GSDM.PARAM_DECIMAL),
    ("hexBinary", GSDM.PARAM_HEX_BINARY), ("int", GSDM.PARAM_INT), ("long", GSDM.PARAM_LONG),
    ("string", GSDM.PARAM_STRING), ("unsignedInt", GSDM.PARAM_UNSIGNED_INT),
    ("unsignedLong", GSDM.PARAM_UNSIGNED_LONG), ("mystery", GSDM.PARAM_UNKNOWN),
])
def test_param_value_type(kind: str, expected: int) -> None:
    assert param_value_type(ParamDef("X", "Device.X", type=kind)) == expected


def test_param_value_type_of_list_is_string() -> None:
    assert param_value_type(ParamDef("X", "Device.X", type="unsignedInt",
                                     list=ListFacet())) == GSDM.PARAM_STRING


@pytest.mark.parametrize(("access", "expected"), [
    ("readOnly", GSDM.PARAM_READ_ONLY), ("readWrite", GSDM.PARAM_READ_WRITE),
    ("writeOnceReadOnly", GSDM.PARAM_READ_WRITE),  # TR-369 GetSupportedDM ParamAccessType
    ("writeOnly", GSDM.PARAM_WRITE_ONLY),
])
def test_param_access_type(access: str, expected: int) -> None:
    assert param_access_type(ParamDef("X", "Device.X", access=access)) == expected


def test_obj_access_type_cmd_type_value_change(fixture_model: DataModel) -> None:
    assert obj_access_type(fixture_model.object("Device.Widget.Thing.{i}.")) == GSDM.OBJ_ADD_DELETE
    assert obj_access_type(fixture_model.object("Device.Widget.Thing.{i}.Part.{i}.")) == \
        GSDM.OBJ_READ_ONLY
    assert obj_access_type(fixture_model.object("Device.Widget.")) == GSDM.OBJ_READ_ONLY
    assert obj_access_type(ObjectDef("Device.X.", access="readWrite")) == GSDM.OBJ_READ_ONLY
    assert cmd_type(fixture_model.find("Device.Delay()")) == GSDM.CMD_ASYNC  # type: ignore[arg-type]
    assert cmd_type(fixture_model.find("Device.Restart()")) == GSDM.CMD_SYNC  # type: ignore[arg-type]
    thing = fixture_model.object("Device.Widget.Thing.{i}.")
    assert value_change_type(thing.params["Hits"]) == GSDM.VALUE_CHANGE_WILL_IGNORE
    assert value_change_type(thing.params["Slot"]) == GSDM.VALUE_CHANGE_ALLOWED


def test_shipped_enum_mappings() -> None:
    dm = load_definitions()
    sub = dm.object("Device.LocalAgent.Subscription.{i}.")
    assert obj_access_type(sub) == GSDM.OBJ_ADD_DELETE
    assert obj_access_type(dm.object("Device.LocalAgent.Request.{i}.")) == GSDM.OBJ_READ_ONLY
    assert param_value_type(sub.params["TimeToLive"]) == GSDM.PARAM_UNSIGNED_INT
    assert param_value_type(sub.params["CreationDate"]) == GSDM.PARAM_DATE_TIME
    assert param_access_type(sub.params["Recipient"]) == GSDM.PARAM_READ_ONLY
    assert cmd_type(dm.find("Device.Reboot()")) == GSDM.CMD_SYNC  # type: ignore[arg-type]


# --- validate_value (error 7012 decisions for Set/Add) ---------------------------------


def P(kind: str = "string", **kw: Any) -> ParamDef:
    return ParamDef("X", "Device.X", type=kind, **kw)


def R(lo: Any = None, hi: Any = None, step: Any = None) -> Range:
    def d(v: Any) -> Decimal | None:
        return None if v is None else Decimal(str(v))
    return Range(d(lo), d(hi), d(step))


VALID: list[tuple[ParamDef, str]] = [
    (P("boolean"), "true"), (P("boolean"), "false"), (P("boolean"), "1"), (P("boolean"), "0"),
    (P("int"), "-2147483648"), (P("int"), "2147483647"), (P("int"), "+5"), (P("int"), "007"),
    (P("unsignedInt"), "0"), (P("unsignedInt"), "4294967295"), (P("unsignedInt"), "+1"),
    (P("long"), "-9223372036854775808"), (P("long"), "9223372036854775807"),
    (P("unsignedLong"), "18446744073709551615"),
    (P("int", ranges=(R(-1, 10),)), "-1"), (P("int", ranges=(R(-1, 10),)), "10"),
    (P("unsignedInt", ranges=(R(1),)), "1"),
    (P("int", ranges=(R(0, 8, 2), R(100, 100))), "6"),
    (P("int", ranges=(R(0, 8, 2), R(100, 100))), "100"),
    (P("decimal"), "1.5"), (P("decimal"), "-0.25"), (P("decimal"), "3"), (P("decimal"), ".5"),
    (P("decimal"), "5."), (P("decimal", ranges=(R("-1.5", "2.25"),)), "2.25"),
    (P("dateTime"), "2024-02-29T23:59:59Z"), (P("dateTime"), "0001-01-01T00:00:00Z"),
    (P("dateTime"), "9999-12-31T23:59:59Z"), (P("dateTime"), "2024-01-01T00:00:00.123456Z"),
    (P("dateTime"), "2024-01-01T00:00:00+05:30"), (P("dateTime"), "2024-01-01T00:00:00"),
    (P("base64"), ""), (P("base64"), "AAEC"), (P("base64"), "AA=="),
    (P("base64", sizes=(Size(None, 3),)), "AAEC"),
    (P("hexBinary"), ""), (P("hexBinary"), "00ff"), (P("hexBinary"), "ABcd"),
    (P("hexBinary", sizes=(Size(0, 0), Size(2, 4))), ""),
    (P("hexBinary", sizes=(Size(0, 0), Size(2, 4))), "00112233"),
    (P(), ""), (P(), "anything at all"), (P(sizes=(Size(None, 3),)), "abc"),
    (P(sizes=(Size(1, 64),)), "x"), (P(patterns=("", "[a-z]+")), ""),
    (P(patterns=("", "[a-z]+")), "abc"), (P(patterns=("(",)), "broken pattern is not enforced"),
    (P(enumerations=("A", "B")), "B"), (P(enumerations=("", "A")), ""),
    (P(list=ListFacet()), ""), (P(list=ListFacet()), "a,b , c"),
    (P("unsignedInt", list=ListFacet(max_items=3)), "1,2,3"),
    (P(list=ListFacet(), enumerations=("red", "green")), "red,green"),
    (P("int", list=ListFacet(min_items=2, max_items=2), ranges=(R(-5, 5),)), "-5,5"),
    (P(list=ListFacet(max_length=5)), "a,b,c"),
    (P(list=ListFacet(nested_brackets=True)), "[1,2],[3],x"),
    (P(list=ListFacet(min_length=1)), "a"),
]

INVALID: list[tuple[ParamDef, str, str]] = [
    (P("boolean"), "True", "boolean"), (P("boolean"), "yes", "boolean"), (P("boolean"), "", "boolean"),
    (P("int"), "2147483648", "range"), (P("int"), "-2147483649", "range"), (P("int"), "1.0", "not"),
    (P("int"), "", "not"), (P("int"), "0x10", "not"), (P("int"), " 1", "not"),
    (P("unsignedInt"), "-1", "not"), (P("unsignedInt"), "4294967296", "range"),
    (P("unsignedInt"), "-0", "not"),
    (P("long"), "9223372036854775808", "range"), (P("unsignedLong"), "18446744073709551616", "range"),
    (P("unsignedLong"), "9" * 5000, "range"),
    (P("int", ranges=(R(-1, 10),)), "11", "range"), (P("int", ranges=(R(-1, 10),)), "-2", "range"),
    (P("unsignedInt", ranges=(R(1),)), "0", "range"),
    (P("int", ranges=(R(0, 8, 2), R(100, 100))), "5", "range"),
    (P("int", ranges=(R(0, 8, 2), R(100, 100))), "10", "range"),
    (P("decimal"), "1e5", "decimal"), (P("decimal"), "", "decimal"), (P("decimal"), ".", "decimal"),
    (P("decimal", ranges=(R("-1.5", "2.25"),)), "2.26", "range"),
    (P("decimal", ranges=(R(0, None, "0.5"),)), "1" * 60 + ".25", "range"),
    (P("dateTime"), "2023-02-29T00:00:00Z", "calendar"), (P("dateTime"), "2024-01-01", "dateTime"),
    (P("dateTime"), "2024-01-01 00:00:00Z", "dateTime"), (P("dateTime"), "2024-13-01T00:00:00Z", "calendar"),
    (P("dateTime"), "2024-01-01T24:00:00Z", "calendar"), (P("dateTime"), "2024-01-01T00:00:60Z", "calendar"),
    (P("dateTime"), "2024-01-01T00:00:00+15:00", "zone"), (P("dateTime"), "0000-01-01T00:00:00Z", "calendar"),
    (P("base64"), "AAE", "base64"), (P("base64"), "A===", "base64"), (P("base64"), "AA=A", "base64"),
    (P("base64"), "AA E", "base64"), (P("base64", sizes=(Size(None, 3),)), "AAECAw==", "length"),
    (P("hexBinary"), "0", "hexBinary"), (P("hexBinary"), "zz", "hexBinary"),
    (P("hexBinary", sizes=(Size(0, 0), Size(2, 4))), "00", "length"),
    (P("hexBinary", sizes=(Size(0, 0), Size(2, 4))), "0011223344", "length"),
    (P(sizes=(Size(None, 3),)), "abcd", "length"), (P(sizes=(Size(1, 64),)), "", "length"),
    (P(patterns=("", "[a-z]+")), "abc1", "pattern"), (P(patterns=("[a-z]+",)), "", "pattern"),
    (P(enumerations=("A", "B")), "C", "enumerated"), (P(enumerations=("A", "B")), "a", "enumerated"),
    (P(list=ListFacet(max_items=2)), "a,b,c", "items"), (P(list=ListFacet(min_items=1)), "", "items"),
    (P("unsignedInt", list=ListFacet()), "1,x", "item 2"),
    (P("unsignedInt", list=ListFacet()), "1,,2", "item 2"),
    (P(list=ListFacet(), enumerations=("red", "green")), "red,blue", "item 2"),
    (P("int", list=ListFacet(min_items=2, max_items=2), ranges=(R(-5, 5),)), "1,6", "range"),
    (P(list=ListFacet(max_length=4)), "a,b,c", "characters"),
    (P(list=ListFacet(min_length=2)), "a", "characters"),
    (P(list=ListFacet(nested_brackets=True)), "[1,2", "brackets"),
    (P(list=ListFacet(nested_brackets=True)), "1],2", "brackets"),
]


@pytest.mark.parametrize(("param", "text"), VALID)
def test_validate_value_accepts(param: ParamDef, text: str) -> None:
    assert validate_value(param, text) is None


@pytest.mark.parametrize(("param", "text", "reason"), INVALID)
def test_validate_value_rejects(param: ParamDef, text: str, reason: str) -> None:
    problem = validate_value(param, text)
    assert problem is not None and reason in problem
    assert len(problem) < 200  # short enough for an error message


def test_validate_value_non_string() -> None:
    assert validate_value(P("int"), 5) == "value is not a string"  # type: ignore[arg-type]


def test_validate_value_on_shipped_parameters() -> None:
    dm = load_definitions()
    sub = dm.object("Device.LocalAgent.Subscription.{i}.")
    assert validate_value(sub.params["NotifType"], "ValueChange") is None
    assert validate_value(sub.params["NotifType"], "Bogus") is not None
    assert validate_value(sub.params["ID"], "") is not None  # size 1..64
    assert validate_value(sub.params["ID"], "x" * 65) is not None
    assert validate_value(sub.params["Enable"], "true") is None
    assert validate_value(sub.params["TriggerConfigSettings"], ",".join(["a"] * 17)) is not None
    assert validate_value(sub.params["Alias"], "cpe-1") is None
    assert validate_value(dm.find("Device.RootDataModelVersion"), "2.16") is None  # type: ignore[arg-type]
    assert validate_value(dm.find("Device.RootDataModelVersion"), "3.0") is not None  # type: ignore[arg-type]
    protocols = dm.find("Device.LocalAgent.SupportedProtocols")
    assert validate_value(protocols, "MQTT,STOMP") is None  # type: ignore[arg-type]
    assert validate_value(protocols, "MQTT,CoAP") is not None  # type: ignore[arg-type]


def _all_shipped_params() -> Iterator[ParamDef]:
    for obj in load_definitions():
        yield from obj.params.values()


_PARAM_SAMPLE = list(_all_shipped_params())[::7] + [
    P(list=ListFacet(nested_brackets=True)), P("decimal", ranges=(R(0, 1, "0.1"),)),
    P("base64", sizes=(Size(1, 2),)), P("dateTime"), P("hexBinary"), P("long"),
    P(patterns=("[a-z]+",), enumerations=("abc",)), P("unsignedInt", list=ListFacet(max_items=2)),
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_PARAM_SAMPLE), st.text())
def test_validate_value_never_raises(param: ParamDef, text: str) -> None:
    result = validate_value(param, text)
    assert result is None or isinstance(result, str)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_PARAM_SAMPLE),
       st.text(alphabet="0123456789+-.:TZ,[]=/abcdefABCDEF ", max_size=40))
def test_validate_value_never_raises_near_miss(param: ParamDef, text: str) -> None:
    result = validate_value(param, text)
    assert result is None or isinstance(result, str)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_find_never_raises(text: str) -> None:
    found = load_definitions().find(text)
    assert found is None or isinstance(found, ObjectDef | ParamDef | CommandDef | EventDef)


def test_project_additions_are_shipped():
    """scripts/dm-additions.xml: newer-TR-181 items TP-469 1.101-1.103 use (Feature 42)."""
    ctrl = load_definitions().object("Device.LocalAgent.Controller.{i}.")
    assert ctrl.params["OnBoardingComplete"].type == "boolean"
    assert ctrl.params["OnBoardingComplete"].default.value == "true"
    assert ctrl.params["OnBoardingRestartTime"].type == "unsignedInt"
    assert ctrl.params["OnBoardingRestartTime"].is_writable
