"""TriggerAction ``Config`` / ``NotifyAndConfig``: apply TriggerConfigSettings.

TR-181 ``Subscription.{i}.TriggerConfigSettings`` is a list of
``<Parameter Name>=<Parameter Value>`` entries; string values are written in
double quotes, other types bare (``Device.LocalAgent.Subscription.3.Enable=false``).
When the subscription triggers, the agent writes each value (TP-469 1.93,
1.94).

Each setting is checked like a Set would check it: the name resolves to
writable parameters (wildcards and search expressions allowed), the value is
valid for the parameter's type (``validate_value``), and the recipient
Controller may write it (``may_write``). A setting that fails is skipped and
reported; the others are still applied. Nothing here raises on hostile text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from conformance.agent.datamodel.defs import validate_value
from conformance.agent.datamodel.resolve import ResolveError, resolve
from conformance.agent.datamodel.store import Store, StoreError
from conformance.usp.paths import PathKind


@dataclass(frozen=True)
class Setting:
    """One ``name=value`` entry (quotes removed from the value)."""

    name: str
    value: str


def parse_settings(entries: Iterable[str]) -> tuple[list[Setting], list[str]]:
    """(settings, problems) from the list items of TriggerConfigSettings."""
    settings: list[Setting] = []
    problems: list[str] = []
    for entry in entries:
        name, sep, raw = entry.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name:
            problems.append(f"{entry[:80]!r} is not <Parameter Name>=<Parameter Value>")
            continue
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        settings.append(Setting(name, raw))
    return settings, problems


def apply_settings(store: Store, entries: Iterable[str],
                   may_write: Callable[[str], bool] = lambda _path: True) -> list[str]:
    """Write every valid setting to the store; return the problems (empty when all applied)."""
    settings, problems = parse_settings(entries)
    for setting in settings:
        try:
            res = resolve(store, setting.name)
        except (ResolveError, RecursionError) as exc:
            problems.append(f"{setting.name[:80]!r}: {exc}")
            continue
        if res.kind is not PathKind.PARAMETER:
            problems.append(f"{setting.name[:80]!r} is not a parameter path")
            continue
        for path in res.leaves:
            pdef = store.param_def(path)
            if pdef is None or pdef.access != "readWrite":
                problems.append(f"{path} is not writable")
                continue
            reason = validate_value(pdef, setting.value)
            if reason is not None:
                problems.append(f"{path}: {reason}")
                continue
            if not may_write(path):
                problems.append(f"{path}: the recipient Controller may not write it")
                continue
            try:
                store.set(path, setting.value)
            except StoreError as exc:
                problems.append(f"{path}: {exc}")
    return problems
