"""Configuration of a reference Agent run and its factory-default data model.

Two files:

Run configuration (YAML)::

    state_dir: state                 # where the data model persists (required)
    factory_defaults: fd.yaml        # optional; default: the packaged one
    faults: [msg.no_response]        # deliberate violations (usp-conformance agent --list-faults)
    timeline: agent-timeline.jsonl   # optional: what the agent saw and sent
    tls: {certificate: a.pem, private_key: a.key, trust: ca.pem}
    absolute_time: true              # false: no absolute time, peers' certificate dates
                                     # are ignored (R-MTP.2, TP-469 2.6)
    values:                          # set on every boot, after the factory defaults
      Device.MQTT.Client.1.BrokerPort: 1883

The two kinds of file:

* the **run configuration** (``usp-conformance agent --config FILE``): where
  the agent keeps its state, which factory-default file to use, which faults
  to commit, where to write its timeline;
* the **factory defaults**: the data model the agent starts from on its first
  boot and after ``Device.FactoryReset()``. Everything else (MTPs, brokers,
  controllers, roles) lives in the data model itself, as on a real device
  (Device.LocalAgent.MTP, Device.MQTT.Client, Device.LocalAgent.Controller...).

Factory-default format (YAML)::

    values:                        # absolute parameter paths of static objects
      Device.LocalAgent.EndpointID: os::012345-0001
    objects:                       # table instances, created in order
      - table: Device.LocalAgent.Controller.
        values: {EndpointID: proto::controller-1, Enable: true}
        children:
          - table: MTP.            # relative to the new instance
            values: {Protocol: MQTT, Enable: true, MQTT.Topic: usp/controller}

Values may be YAML scalars; they are stored as TR-106 strings. Errors name
the file, the entry and the fix, and never show a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from conformance.agent.datamodel.store import Store, StoreError
from conformance.agent.faults import catalogue

DEFAULT_FACTORY = "factory-default.yaml"


class ConfigError(ValueError):
    """A configuration mistake; the message names the file, the place and the fix."""


@dataclass(frozen=True)
class AgentConfig:
    """One agent run."""

    state_dir: Path
    factory_defaults: Path | None = None   # None: the packaged default
    faults: tuple[str, ...] = ()
    timeline: Path | None = None
    extra_values: Mapping[str, str] = field(default_factory=dict)  # applied after factory defaults
    certificate: Path | None = None   # the agent's own certificate (PEM), for TLS MTPs
    private_key: Path | None = None
    trust: Path | None = None         # CA certificates the agent trusts (PEM)
    #: False: the agent cannot learn the absolute time (R-MTP.2, R-SEC.19, TP-469 2.6)
    absolute_time: bool = True

    @property
    def state_file(self) -> Path:
        return self.state_dir / "datamodel.json"


def load_config(path: Path) -> AgentConfig:
    """Read and check a run configuration file."""
    data = _read_yaml(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping with at least 'state_dir'")
    known = {"state_dir", "factory_defaults", "faults", "timeline", "values", "tls",
             "absolute_time"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(known))}")
    if "state_dir" not in data:
        raise ConfigError(f"{path}: 'state_dir' is missing (where the agent keeps its data model)")
    base = path.parent
    faults = data.get("faults") or []
    if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
        raise ConfigError(f"{path}: 'faults' must be a list of fault names")
    values = data.get("values") or {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path}: 'values' must map parameter paths to values")
    tls = data.get("tls") or {}
    if not isinstance(tls, Mapping) or set(tls) - {"certificate", "private_key", "trust"}:
        raise ConfigError(f"{path}: 'tls' takes certificate, private_key and trust (PEM files)")
    if bool(tls.get("certificate")) != bool(tls.get("private_key")):
        raise ConfigError(f"{path}: 'tls' needs both certificate and private_key")
    absolute_time = data.get("absolute_time", True)
    if not isinstance(absolute_time, bool):
        raise ConfigError(f"{path}: 'absolute_time' must be true or false")

    def file(key: str) -> Path | None:
        return (base / str(tls[key])).resolve() if tls.get(key) else None

    return AgentConfig(
        certificate=file("certificate"), private_key=file("private_key"), trust=file("trust"),
        state_dir=(base / str(data["state_dir"])).resolve(),
        factory_defaults=(base / str(data["factory_defaults"])).resolve()
        if data.get("factory_defaults") else None,
        faults=tuple(check_faults(faults, where=str(path))),
        timeline=(base / str(data["timeline"])).resolve() if data.get("timeline") else None,
        extra_values={str(k): to_text(v) for k, v in values.items()},
        absolute_time=absolute_time,
    )


def check_faults(names: Sequence[str], *, where: str) -> list[str]:
    """Fault names, each known; otherwise a ConfigError listing the known ones."""
    known = catalogue()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown fault(s) {', '.join(unknown)}; "
                          f"list them with: usp-conformance agent --list-faults")
    return list(names)


def to_text(value: Any) -> str:
    """A YAML scalar as a TR-106 string (booleans lower-case, None empty)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(to_text(v) for v in value)
    return str(value)


def load_factory_defaults(path: Path | None) -> tuple[dict[str, Any], str]:
    """The factory-default document and a name for error messages."""
    if path is None:
        text = resources.files("conformance.agent").joinpath(DEFAULT_FACTORY).read_text()
        return _parse_yaml(text, DEFAULT_FACTORY), DEFAULT_FACTORY
    return _read_yaml(path), str(path)


def apply_factory_defaults(store: Store, doc: Mapping[str, Any], *, where: str) -> None:
    """Build the factory-default data model in ``store`` (quietly: no notifications)."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where}: expected a mapping with 'values' and/or 'objects'")
    with store.quiet():
        for entry_no, entry in enumerate(doc.get("objects") or [], 1):
            _create(store, entry, "", where=f"{where}: objects[{entry_no}]")
        for param, value in (doc.get("values") or {}).items():
            set_value(store, str(param), to_text(value), where=f"{where}: values")


def set_value(store: Store, param: str, value: str, *, where: str) -> None:
    """Set one absolute parameter, with a clear error when it does not exist."""
    if store.param_def(param) is None:
        raise ConfigError(f"{where}: {param} is not a parameter of the shipped data model")
    try:
        store.set(param, value)
    except StoreError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _create(store: Store, entry: Any, parent: str, *, where: str) -> None:
    if not isinstance(entry, Mapping) or "table" not in entry:
        raise ConfigError(f"{where}: each object needs 'table' (e.g. Device.LocalAgent.Controller.)")
    table = parent + str(entry["table"])
    if not table.endswith("."):
        raise ConfigError(f"{where}: table {table!r} must end with '.'")
    try:
        inst = store.add(table, number=entry.get("number"))
    except StoreError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for name, value in (entry.get("values") or {}).items():
        set_value(store, inst + str(name), to_text(value), where=where)
    for child_no, child in enumerate(entry.get("children") or [], 1):
        _create(store, child, inst, where=f"{where}.children[{child_no}]")


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return _parse_yaml(text, str(path))


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}:{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
