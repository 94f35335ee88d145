"""The reference Agent's instantiated data model: instances and values, on disk.

:class:`Store` holds every instantiated object (single-instance objects and
table instances) with its parameter values as TR-106 strings, the next
instance number of every table, and persists them as one JSON document
written atomically (so a Reboot() or a crash keeps a consistent state).

What the store does not decide: who may change what (ControllerTrust), how
a search path resolves (:mod:`conformance.agent.datamodel.resolve`), or the
USP message semantics (the agent core). It offers:

* reads that fall back to TR-181 defaults and to *providers* (computed
  values such as ``UpTime`` or ``...NumberOfEntries``);
* writes, instance creation (defaults applied, single-instance children
  created) and deletion (descendants included);
* change events (:class:`ValueChanged`, :class:`ObjectAdded`,
  :class:`ObjectDeleted`) for subscriptions;
* transactions: ``with store.transaction():`` restores the previous state
  (without events) if the block raises, for ``allow_partial: false``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from conformance.agent.datamodel.defs import DataModel, ObjectDef, ParamDef
from conformance.usp import paths

FORMAT_VERSION = 1

#: Value of a parameter that has no TR-181 default, by base type.
TYPE_DEFAULTS = {
    "boolean": "false",
    "int": "0",
    "unsignedInt": "0",
    "long": "0",
    "unsignedLong": "0",
    "decimal": "0",
    "dateTime": "0001-01-01T00:00:00Z",
}


class StoreError(LookupError):
    """An object or parameter the store was asked about does not exist."""


@dataclass(frozen=True)
class ValueChanged:
    path: str
    old: str
    new: str


@dataclass(frozen=True)
class ObjectAdded:
    path: str


@dataclass(frozen=True)
class ObjectDeleted:
    path: str


Change = ValueChanged | ObjectAdded | ObjectDeleted
Provider = Callable[[str], str]  # instance path of the owning object -> value


class Store:
    """Instances and values of the reference Agent, optionally persisted at ``path``."""

    def __init__(self, dm: DataModel, *, path: Path | None = None) -> None:
        self.dm = dm
        self.path = path
        self._objects: dict[str, dict[str, str]] = {}
        self._next: dict[str, int] = {}
        self._providers: dict[str, Provider] = {}
        self._listeners: list[Callable[[Change], None]] = []
        self._muted = 0
        # (parent supported path, parameter name) -> child table supported path
        self._counters: dict[tuple[str, str], str] = {}
        for obj in dm:
            if obj.multi_instance and obj.num_entries_parameter:
                parent = obj.path.removesuffix("{i}.").rsplit(".", 2)[0] + "."
                self._counters[(parent, obj.num_entries_parameter)] = obj.path
        self._ensure_object("Device.")

    # --- definitions -------------------------------------------------------------

    def object_def(self, path: str) -> ObjectDef | None:
        """The definition of the object ``path`` (any form) is, or is in."""
        return _find_object(self.dm, path)

    def param_def(self, param_path: str) -> ParamDef | None:
        obj = self.object_def(param_path)
        return obj.params.get(param_path.rpartition(".")[2]) if obj is not None else None

    # --- instances --------------------------------------------------------------

    def exists(self, obj_path: str) -> bool:
        """Whether an instantiated object path (``...Subscription.3.``) exists."""
        if obj_path in self._objects:
            return True
        obj = self.object_def(obj_path)
        if obj is None or obj.multi_instance or not obj_path.endswith("."):
            return False
        parent = _parent_object(obj_path)
        return parent is None or self.exists(parent)

    def instance_numbers(self, table_path: str) -> list[int]:
        """Instance numbers of a table (``...Subscription.``) in ascending order."""
        prefix = table_path
        found = []
        for path in self._objects:
            if path.startswith(prefix):
                rest = path[len(prefix):]
                head, dot, tail = rest.partition(".")
                if dot and not tail and head.isdigit():
                    found.append(int(head))
        return sorted(found)

    def instances(self, table_path: str) -> list[str]:
        """Instance paths of a table, in instance-number order."""
        return [f"{table_path}{n}." for n in self.instance_numbers(table_path)]

    def child_objects(self, obj_path: str) -> list[str]:
        """Instantiated objects directly below ``obj_path``: single-instance objects and
        every instance of each child table, in schema order."""
        out: list[str] = []
        for child in self.dm.children(obj_path, first_level_only=True):
            name = child.path.removesuffix("{i}.").rstrip(".").rpartition(".")[2]
            if child.multi_instance:
                out += self.instances(f"{obj_path}{name}.")
            else:
                out.append(f"{obj_path}{name}.")
        return out

    def add(self, table_path: str, values: dict[str, str] | None = None, *,
            number: int | None = None) -> str:
        """Create an instance with TR-181 defaults, then ``values``; return its path."""
        obj = self.object_def(table_path)
        if obj is None or not obj.multi_instance:
            raise StoreError(f"{table_path} is not a multi-instance object")
        parent = _parent_object(table_path)
        if parent is not None and not self.exists(parent):
            raise StoreError(f"{parent} does not exist")
        if number is None:
            number = max(self._next.get(table_path, 1), 1)
            while f"{table_path}{number}." in self._objects:
                number += 1
        inst = f"{table_path}{number}."
        if inst in self._objects:
            raise StoreError(f"{inst} already exists")
        self._next[table_path] = max(self._next.get(table_path, 1), number + 1)
        self._ensure_object(inst)
        for name, value in (values or {}).items():
            self._objects[inst][name] = value
        self._emit(ObjectAdded(inst))
        return inst

    def delete(self, inst_path: str) -> list[str]:
        """Delete an instance and everything below it; return the deleted object paths."""
        if inst_path not in self._objects or not _ends_with_instance(inst_path):
            raise StoreError(f"{inst_path} is not an existing instance")
        doomed = sorted((p for p in self._objects if p.startswith(inst_path)),
                        key=lambda p: (-p.count("."), p))
        for path in doomed:
            del self._objects[path]
            for table in [t for t in self._next if t.startswith(path)]:
                del self._next[table]
        for path in doomed:
            if _ends_with_instance(path):
                self._emit(ObjectDeleted(path))
        return [p for p in doomed if _ends_with_instance(p)]

    def _ensure_object(self, obj_path: str) -> dict[str, str]:
        """The value dict of an object, created with defaults (and its single-instance
        descendants) the first time it is needed."""
        values = self._objects.get(obj_path)
        if values is not None:
            return values
        obj = self.object_def(obj_path)
        values = {}
        if obj is not None:
            for name, pdef in obj.params.items():
                values[name] = default_value(pdef)
        self._objects[obj_path] = values
        for child in self.dm.children(obj_path, first_level_only=True):
            if not child.multi_instance:
                name = child.path.rstrip(".").rpartition(".")[2]
                self._ensure_object(f"{obj_path}{name}.")
        return values

    # --- values -------------------------------------------------------------------

    def provide(self, supported_param_path: str, provider: Provider) -> None:
        """Compute a parameter on every read (``Device.LocalAgent.UpTime``)."""
        self._providers[supported_param_path] = provider

    def get(self, param_path: str) -> str:
        """The value of an instantiated parameter; StoreError when it does not exist."""
        owner, _, name = param_path.rpartition(".")
        owner += "."
        pdef = self.param_def(param_path)
        if pdef is None or not self.exists(owner):
            raise StoreError(f"{param_path} does not exist")
        provider = self._providers.get(pdef.path)
        if provider is not None:
            return provider(owner)
        table = self._counters.get((_supported(owner), name))
        if table is not None:
            child = table.removesuffix("{i}.").rstrip(".").rpartition(".")[2]
            return str(len(self.instance_numbers(f"{owner}{child}.")))
        return self._ensure_object(owner).get(name, default_value(pdef))

    def params(self, obj_path: str) -> dict[str, str]:
        """Every parameter of an instantiated object with its value, in schema order."""
        obj = self.object_def(obj_path)
        if obj is None or not self.exists(obj_path):
            raise StoreError(f"{obj_path} does not exist")
        return {name: self.get(obj_path + name) for name in obj.params}

    def private(self, obj_path: str) -> dict[str, str]:
        """Agent-internal values kept with an instance (keys start with ``#``): persisted
        and deleted with it, never visible through USP (reads go through definitions)."""
        values = self._objects.get(obj_path, {})
        return {k: v for k, v in values.items() if k.startswith("#")}

    def set(self, param_path: str, value: str) -> str:
        """Store a value (no access or type check: the caller decides); return the old one."""
        old = self.get(param_path)
        owner, _, name = param_path.rpartition(".")
        self._ensure_object(owner + ".")[name] = value
        if old != value:
            self._emit(ValueChanged(param_path, old, value))
        return old

    # --- events ---------------------------------------------------------------------

    def listen(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback`` on every change; returns a function that stops it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def emit(self, change: Change) -> None:
        """Send a change event to the listeners (also used to replay the events of a
        committed batch that ran quietly, see ``messages.write.Batch``)."""
        self._emit(change)

    def _emit(self, change: Change) -> None:
        if self._muted:
            return
        for listener in tuple(self._listeners):
            listener(change)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Undo every change of the block if it raises (events already sent stay sent,
        so callers that must not notify on failure collect events until commit)."""
        saved = copy.deepcopy(self._objects), dict(self._next)
        try:
            yield
        except BaseException:
            self._objects, self._next = saved
            raise

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Changes in the block raise no events (factory defaults, restores)."""
        self._muted += 1
        try:
            yield
        finally:
            self._muted -= 1

    # --- persistence -----------------------------------------------------------------

    def to_json(self) -> dict[str, object]:
        return {"format": FORMAT_VERSION, "objects": self._objects, "next_instance": self._next}

    def load_json(self, data: dict[str, object]) -> None:
        """Replace the whole state (no events) from :meth:`to_json` output."""
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported data model file format {data.get('format')!r}")
        objects = data.get("objects")
        nxt = data.get("next_instance")
        if not isinstance(objects, dict) or not isinstance(nxt, dict):
            raise ValueError("data model file lacks 'objects' or 'next_instance'")
        self._objects = {str(k): {str(n): str(v) for n, v in vals.items()}
                         for k, vals in objects.items()}
        self._next = {str(k): int(v) for k, v in nxt.items()}
        self._ensure_object("Device.")

    def save(self) -> None:
        """Write the state atomically to :attr:`path` (no-op without a path)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), sort_keys=True, indent=1))
        os.replace(tmp, self.path)

    def load(self) -> bool:
        """Read the state from :attr:`path`; False when there is no file yet."""
        if self.path is None or not self.path.exists():
            return False
        self.load_json(json.loads(self.path.read_text()))
        return True

    def object_paths(self) -> list[str]:
        """Every stored object path (for tests and diagnostics)."""
        return sorted(self._objects)


def default_value(pdef: ParamDef) -> str:
    """A parameter's value on creation: its TR-181 object default, else the type's zero."""
    if pdef.default is not None and pdef.default.type in ("object", "factory"):
        return pdef.default.value
    if pdef.is_list:
        return ""
    zero = TYPE_DEFAULTS.get(pdef.type, "")
    if pdef.ranges and pdef.type in ("int", "unsignedInt", "long", "unsignedLong", "decimal"):
        low = pdef.ranges[0].min
        inside = any((r.min is None or r.min <= 0) and (r.max is None or r.max >= 0)
                     for r in pdef.ranges)
        if not inside and low is not None:
            return str(low)  # the type's zero is out of range: the smallest allowed value
    return zero


def _ends_with_instance(path: str) -> bool:
    return path.endswith(".") and path[:-1].rpartition(".")[2].isdigit()


def _parent_object(obj_path: str) -> str | None:
    """The instantiated object containing ``obj_path`` (an object, table or instance path)."""
    trimmed = obj_path.rstrip(".")
    head, _, last = trimmed.rpartition(".")
    if not head:
        return None
    if last.isdigit():  # an instance: its parent is the table's owner
        head = head.rpartition(".")[0]
        return head + "." if head else None
    return head + "."


@lru_cache(maxsize=4096)
def _supported(path: str) -> str:
    try:
        return str(paths.to_supported_path(path))
    except (paths.PathError, ValueError):
        return path


def _find_object(dm: DataModel, path: str) -> ObjectDef | None:
    return _find_object_cached(id(dm), dm, path)


@lru_cache(maxsize=8192)
def _find_object_cached(_key: int, dm: DataModel, path: str) -> ObjectDef | None:
    return dm.find_object(path)
