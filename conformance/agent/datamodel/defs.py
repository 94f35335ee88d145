"""TR-181 definitions of the reference Agent: typed, read-only, loaded from ``tr181.json``.

``scripts/gen_datamodel.py`` turns the BBF DM Schema XML into the shipped
JSON file; this module reads it (no XML at run time) into frozen dataclasses
and answers the questions the Agent asks while serving USP messages:

* what is defined at a path, in any path form (:meth:`DataModel.find`, used
  for GetSupportedDM, Get/Set/Add/Delete/Operate path checks, R-GSP.*);
* how a definition maps onto ``GetSupportedDMResp`` enums
  (:func:`param_value_type`, :func:`param_access_type`, :func:`obj_access_type`,
  :func:`cmd_type`, :func:`value_change_type`);
* whether a string is a valid value for a parameter (:func:`validate_value`,
  the basis of error 7012 "Invalid value" for Set/Add, R-SET.*, R-ADD.*).

Value checks follow the TR-106 string forms: ``boolean`` is ``true``,
``false``, ``1`` or ``0``; integers are decimal digits with an optional sign
(no sign other than ``+`` for unsigned types) within the 32/64-bit bounds;
``dateTime`` is ISO 8601 ``YYYY-MM-DDThh:mm:ss[.f][Z|+hh:mm|-hh:mm]``;
``base64`` and ``hexBinary`` size facets count decoded octets; string size
facets count characters; patterns must match the whole value (XSD style) and
several facets of one kind (sizes, patterns, ranges) are alternatives. List
values are comma separated, whitespace around an item is ignored, the empty
string is the empty list, and list size facets apply to the whole string.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import functools
import gzip
import importlib.resources
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, TypeAlias

from conformance.usp import paths, schema

__all__ = [
    "DEFINITIONS_FILE",
    "FORMAT_VERSION",
    "ArgDef",
    "ArgObjectDef",
    "CommandDef",
    "DataModel",
    "Default",
    "Definition",
    "DefinitionsError",
    "EventDef",
    "ListFacet",
    "ObjectDef",
    "ParamDef",
    "Profile",
    "ProfileObject",
    "Range",
    "Reference",
    "Size",
    "UniqueKey",
    "cmd_type",
    "load_definitions",
    "obj_access_type",
    "param_access_type",
    "param_value_type",
    "validate_value",
    "value_change_type",
]

#: The shipped data file inside this package.
DEFINITIONS_FILE = "tr181.json"
#: JSON layout version this loader understands (written by gen_datamodel.py).
FORMAT_VERSION = 1

_GSDM = schema.msg_pb2.GetSupportedDMResp

#: TR-106 base types.
BASE_TYPES = ("base64", "boolean", "dateTime", "decimal", "hexBinary", "int", "long",
              "string", "unsignedInt", "unsignedLong")
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "int": (-(2**31), 2**31 - 1),
    "unsignedInt": (0, 2**32 - 1),
    "long": (-(2**63), 2**63 - 1),
    "unsignedLong": (0, 2**64 - 1),
}


class DefinitionsError(ValueError):
    """The definitions file is missing, unreadable or not in the expected layout."""


# --- facets ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListFacet:
    """The value is a comma-separated list; lengths apply to the whole string."""

    min_items: int = 0
    max_items: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    nested_brackets: bool = False


@dataclass(frozen=True, slots=True)
class Size:
    """Length bounds (characters for strings, octets for base64/hexBinary)."""

    min_length: int | None = None
    max_length: int | None = None


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive numeric bounds with an optional step from ``min``."""

    min: Decimal | None = None
    max: Decimal | None = None
    step: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Default:
    """``type`` is ``object`` (on creation), ``factory``, ``parameter`` (argument) or ``implementation``."""

    type: str
    value: str


@dataclass(frozen=True, slots=True)
class Reference:
    """A path reference (TR-106 ``pathRef``/``instanceRef``); targets are absolute supported paths."""

    ref_type: str = "weak"
    target_type: str = "any"
    target_parent: tuple[str, ...] = ()
    target_parent_scope: str | None = None


# --- definitions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamDef:
    """A parameter (or, as :class:`ArgDef`, a command/event argument)."""

    name: str
    path: str
    type: str = "string"
    access: str = "readOnly"
    data_type: str | None = None
    list: ListFacet | None = None
    default: Default | None = None
    enumerations: tuple[str, ...] = ()
    enumeration_ref: str | None = None
    ranges: tuple[Range, ...] = ()
    sizes: tuple[Size, ...] = ()
    patterns: tuple[str, ...] = ()
    units: str | None = None
    reference: Reference | None = None
    secured: bool = False
    hidden: bool = False
    command: bool = False
    active_notify: str | None = None
    status: str = "current"

    @property
    def is_list(self) -> bool:
        return self.list is not None

    @property
    def is_reference(self) -> bool:
        return self.reference is not None

    @property
    def target_parent(self) -> tuple[str, ...]:
        return self.reference.target_parent if self.reference else ()

    @property
    def write_once(self) -> bool:
        """``writeOnceReadOnly``: settable when the instance is created, read-only afterwards."""
        return self.access == "writeOnceReadOnly"

    @property
    def is_writable(self) -> bool:
        return self.access in ("readWrite", "writeOnceReadOnly")

    @property
    def max_length(self) -> int | None:
        """Largest length any size facet allows (``None``: unbounded)."""
        if not self.sizes or any(s.max_length is None for s in self.sizes):
            return None
        return max(s.max_length for s in self.sizes if s.max_length is not None)

    @property
    def min_length(self) -> int:
        return min((s.min_length or 0 for s in self.sizes), default=0)


@dataclass(frozen=True, slots=True)
class ArgDef(ParamDef):
    """A command input/output or event argument; ``name`` is relative (``TimeWindow.{i}.Start``).

    ``path`` repeats the relative name; ``access`` is ``readWrite`` for inputs
    and ``readOnly`` for outputs and event arguments.
    """

    mandatory: bool = False


@dataclass(frozen=True, slots=True)
class ArgObjectDef:
    """An object inside a command's input/output or an event (``TimeWindow.{i}.``)."""

    name: str
    min_entries: int = 1
    max_entries: int | None = 1

    @property
    def multi_instance(self) -> bool:
        return self.name.endswith(".{i}.")


@dataclass(frozen=True, slots=True)
class CommandDef:
    """A command such as ``Reboot()``; ``path`` is its supported path."""

    name: str
    path: str
    is_async: bool = False
    input_args: Mapping[str, ArgDef] = field(default_factory=lambda: MappingProxyType({}))
    output_args: Mapping[str, ArgDef] = field(default_factory=lambda: MappingProxyType({}))
    input_objects: Mapping[str, ArgObjectDef] = field(default_factory=lambda: MappingProxyType({}))
    output_objects: Mapping[str, ArgObjectDef] = field(default_factory=lambda: MappingProxyType({}))
    status: str = "current"

    @property
    def input_arg_names(self) -> tuple[str, ...]:
        return tuple(self.input_args)

    @property
    def output_arg_names(self) -> tuple[str, ...]:
        return tuple(self.output_args)

    @property
    def mandatory_input_args(self) -> tuple[str, ...]:
        return tuple(n for n, a in self.input_args.items() if a.mandatory)


@dataclass(frozen=True, slots=True)
class EventDef:
    """An event such as ``Boot!``; ``path`` is its supported path."""

    name: str
    path: str
    args: Mapping[str, ArgDef] = field(default_factory=lambda: MappingProxyType({}))
    objects: Mapping[str, ArgObjectDef] = field(default_factory=lambda: MappingProxyType({}))
    status: str = "current"

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(self.args)


@dataclass(frozen=True, slots=True)
class UniqueKey:
    """One unique key: parameter names, and whether it is functional (not Alias-like)."""

    params: tuple[str, ...]
    functional: bool = True


@dataclass(frozen=True, slots=True)
class ObjectDef:
    """An object in supported-path form (``Device.LocalAgent.Subscription.{i}.``)."""

    path: str
    access: str = "readOnly"
    min_entries: int = 1
    max_entries: int | None = 1
    num_entries_parameter: str | None = None
    enable_parameter: str | None = None
    unique_key_defs: tuple[UniqueKey, ...] = ()
    params: Mapping[str, ParamDef] = field(default_factory=lambda: MappingProxyType({}))
    commands: Mapping[str, CommandDef] = field(default_factory=lambda: MappingProxyType({}))
    events: Mapping[str, EventDef] = field(default_factory=lambda: MappingProxyType({}))
    status: str = "current"

    @property
    def multi_instance(self) -> bool:
        return self.path.endswith(".{i}.")

    @property
    def unique_keys(self) -> tuple[tuple[str, ...], ...]:
        return tuple(k.params for k in self.unique_key_defs)

    @property
    def name(self) -> str:
        """Last name segment (``Subscription`` for ``Device.LocalAgent.Subscription.{i}.``)."""
        return [p for p in self.path.split(".") if p and p != "{i}"][-1]

    @property
    def table_path(self) -> str:
        """The path without the trailing ``{i}.`` (``Device.LocalAgent.Subscription.``)."""
        return self.path[: -len("{i}.")] if self.multi_instance else self.path


@dataclass(frozen=True, slots=True)
class ProfileObject:
    """What a profile requires of one object."""

    path: str
    requirement: str = "present"
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    commands: tuple[str, ...] = ()
    events: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    """A TR-181 profile (``LocalAgent:1``); ``base``/``extends`` name the profiles it builds on."""

    name: str
    objects: Mapping[str, ProfileObject]
    base: str | None = None
    extends: tuple[str, ...] = ()
    status: str = "current"


Definition: TypeAlias = ObjectDef | ParamDef | CommandDef | EventDef


# --- the model -------------------------------------------------------------------------


_REQUIREMENT_RANK = {"notSpecified": 0, "present": 1, "readOnly": 1, "create": 2, "delete": 2,
                     "writeOnceReadOnly": 2, "readWrite": 3, "createDelete": 3}


class DataModel:
    """The supported data model: objects in schema order, lookups, profiles."""

    def __init__(self, objects: Sequence[ObjectDef], profiles: Sequence[Profile] = (), *,
                 model: str = "", sources: Mapping[str, str] | None = None) -> None:
        self._objects: dict[str, ObjectDef] = {o.path: o for o in objects}
        self._profiles: dict[str, Profile] = {p.name: p for p in profiles}
        self.model = model
        self.sources: Mapping[str, str] = MappingProxyType(dict(sources or {}))

    # objects -----------------------------------------------------------------

    @property
    def objects(self) -> tuple[ObjectDef, ...]:
        """Every object, in schema order (each object's descendants follow it)."""
        return tuple(self._objects.values())

    def __iter__(self) -> Iterator[ObjectDef]:
        return iter(self._objects.values())

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.find(path) is not None

    def object(self, supported_path: str) -> ObjectDef:
        """The object at a supported path; ``KeyError`` when not defined."""
        return self._objects[supported_path]

    def find(self, path: str) -> Definition | None:
        """The definition a path of any form addresses, or ``None``.

        Accepts supported paths (``...Subscription.{i}.Enable``), instance
        paths (``...Subscription.3.Enable``), wildcards and search expressions
        (``...Subscription.*.``, ``...Subscription.[ID=="x"].``), table paths
        without an instance (``...Subscription.``), commands (``Reboot()``) and
        events (``Boot!``). Malformed paths and reference following give ``None``.
        """
        if not isinstance(path, str):
            return None
        try:
            supported = str(paths.to_supported_path(path))
        except (paths.PathError, ValueError, TypeError):
            return None
        if supported.endswith("."):
            return self._objects.get(supported) or self._objects.get(supported + "{i}.")
        owner, _, name = supported.rpartition(".")
        obj = self._objects.get(owner + ".")
        if obj is None:
            return None
        if name.endswith("()"):
            return obj.commands.get(name)
        if name.endswith("!"):
            return obj.events.get(name)
        return obj.params.get(name)

    def find_object(self, path: str) -> ObjectDef | None:
        """The object a path is in: itself for an object path, the owner otherwise."""
        found = self.find(path)
        if isinstance(found, ObjectDef) or found is None:
            return found
        return self._objects.get(found.path.rpartition(".")[0] + ".")

    def children(self, obj_path: str, first_level_only: bool = True) -> tuple[ObjectDef, ...]:
        """Objects below ``obj_path`` (any form), direct children only by default."""
        parent = self.find(obj_path)
        if not isinstance(parent, ObjectDef):
            return ()
        found: list[ObjectDef] = []
        for obj in self._objects.values():
            if obj.path == parent.path or not obj.path.startswith(parent.path):
                continue
            rest = obj.path[len(parent.path):].removesuffix("{i}.").rstrip(".")
            if not first_level_only or "." not in rest:
                found.append(obj)
        return tuple(found)

    # profiles ----------------------------------------------------------------

    @property
    def profiles(self) -> Mapping[str, Profile]:
        return MappingProxyType(self._profiles)

    def profile(self, name: str) -> Profile:
        """A profile by name (``LocalAgent:1``); ``KeyError`` when not shipped."""
        return self._profiles[name]

    def profile_members(self, name: str) -> dict[str, ProfileObject]:
        """Everything a profile requires, including what its base/extended profiles require.

        Where two profiles name the same item the stronger requirement wins.
        """
        merged: dict[str, dict[str, Any]] = {}

        def visit(pname: str, seen: frozenset[str]) -> None:
            if pname in seen:
                return
            prof = self.profile(pname)
            for dep in ((prof.base,) if prof.base else ()) + prof.extends:
                visit(dep, seen | {pname})
            for path, entry in prof.objects.items():
                slot = merged.setdefault(path, {"requirement": entry.requirement, "params": {},
                                                "commands": [], "events": []})
                if _REQUIREMENT_RANK.get(entry.requirement, 0) > _REQUIREMENT_RANK.get(
                        slot["requirement"], 0):
                    slot["requirement"] = entry.requirement
                for pn, req in entry.params.items():
                    old = slot["params"].get(pn)
                    if old is None or _REQUIREMENT_RANK.get(req, 0) > _REQUIREMENT_RANK.get(old, 0):
                        slot["params"][pn] = req
                slot["commands"] += [c for c in entry.commands if c not in slot["commands"]]
                slot["events"] += [e for e in entry.events if e not in slot["events"]]

        visit(name, frozenset())
        return {path: ProfileObject(path, s["requirement"], MappingProxyType(s["params"]),
                                    tuple(s["commands"]), tuple(s["events"]))
                for path, s in merged.items()}


# --- USP enum mappings (GetSupportedDMResp) --------------------------------------------

_VALUE_TYPES: dict[str, int] = {  # TR-106 base type -> ParamValueType
    "base64": _GSDM.PARAM_BASE_64,
    "boolean": _GSDM.PARAM_BOOLEAN,
    "dateTime": _GSDM.PARAM_DATE_TIME,
    "decimal": _GSDM.PARAM_DECIMAL,
    "hexBinary": _GSDM.PARAM_HEX_BINARY,
    "int": _GSDM.PARAM_INT,
    "long": _GSDM.PARAM_LONG,
    "string": _GSDM.PARAM_STRING,
    "unsignedInt": _GSDM.PARAM_UNSIGNED_INT,
    "unsignedLong": _GSDM.PARAM_UNSIGNED_LONG,
}


def param_value_type(param: ParamDef) -> int:
    """``ParamValueType`` of a parameter. A list travels as one string, hence ``PARAM_STRING``."""
    if param.list is not None:
        return int(_GSDM.PARAM_STRING)
    return int(_VALUE_TYPES.get(param.type, _GSDM.PARAM_UNKNOWN))


def param_access_type(param: ParamDef) -> int:
    """``ParamAccessType``: writeOnceReadOnly is writable (when the instance is created)."""
    if param.access in ("readWrite", "writeOnceReadOnly"):
        return int(_GSDM.PARAM_READ_WRITE)
    if param.access == "writeOnly":
        return int(_GSDM.PARAM_WRITE_ONLY)
    return int(_GSDM.PARAM_READ_ONLY)


def obj_access_type(obj: ObjectDef) -> int:
    """``ObjAccessType``: a readWrite table is add/delete; anything else is read-only."""
    if obj.multi_instance and obj.access == "readWrite":
        return int(_GSDM.OBJ_ADD_DELETE)
    return int(_GSDM.OBJ_READ_ONLY)


def cmd_type(command: CommandDef) -> int:
    """``CmdType`` of a command."""
    return int(_GSDM.CMD_ASYNC if command.is_async else _GSDM.CMD_SYNC)


def value_change_type(param: ParamDef) -> int:
    """``ValueChangeType``: parameters marked ``activeNotify="canDeny"`` may be ignored."""
    if param.active_notify == "canDeny":
        return int(_GSDM.VALUE_CHANGE_WILL_IGNORE)
    return int(_GSDM.VALUE_CHANGE_ALLOWED)


# --- loading ---------------------------------------------------------------------------


def _dec(value: Any) -> Decimal | None:
    if value is None:
        return None
    return Decimal(str(value))


def _syntax_kwargs(raw: Mapping[str, Any]) -> dict[str, Any]:
    lst = raw.get("list")
    ref = raw.get("reference")
    default = raw.get("default")
    enum_ref = raw.get("enumeration_ref")
    return {
        "type": raw.get("type", "string"),
        "data_type": raw.get("data_type"),
        "list": ListFacet(**lst) if lst is not None else None,
        "default": Default(default["type"], default["value"]) if default else None,
        "enumerations": tuple(raw.get("enumerations", ())),
        "enumeration_ref": enum_ref["target_param"] if enum_ref else None,
        "ranges": tuple(Range(_dec(lo), _dec(hi), _dec(step))
                        for lo, hi, step in raw.get("ranges", ())),
        "sizes": tuple(Size(lo, hi) for lo, hi in raw.get("sizes", ())),
        "patterns": tuple(raw.get("patterns", ())),
        "units": raw.get("units"),
        "reference": Reference(ref.get("ref_type", "weak"), ref.get("target_type", "any"),
                               tuple(ref.get("target_parent", ())),
                               ref.get("target_parent_scope")) if ref else None,
        "secured": bool(raw.get("secured", False)),
        "hidden": bool(raw.get("hidden", False)),
        "command": bool(raw.get("command", False)),
        "active_notify": raw.get("active_notify"),
        "status": raw.get("status", "current"),
    }


def _args(raw: Sequence[Mapping[str, Any]], access: str) -> Mapping[str, ArgDef]:
    return MappingProxyType({a["name"]: ArgDef(name=a["name"], path=a["name"], access=access,
                                                mandatory=bool(a.get("mandatory", False)),
                                                **_syntax_kwargs(a))
                             for a in raw})


def _arg_objects(raw: Sequence[Mapping[str, Any]]) -> Mapping[str, ArgObjectDef]:
    return MappingProxyType({o["name"]: ArgObjectDef(o["name"], o.get("min_entries", 1),
                                                     o.get("max_entries", 1))
                             for o in raw})


def _object(raw: Mapping[str, Any]) -> ObjectDef:
    path = raw["path"]
    params = {p["name"]: ParamDef(name=p["name"], path=path + p["name"],
                                  access=p.get("access", "readOnly"), **_syntax_kwargs(p))
              for p in raw.get("params", ())}
    commands = {}
    for c in raw.get("commands", ()):
        inp, out = c.get("input", {}), c.get("output", {})
        commands[c["name"]] = CommandDef(
            name=c["name"], path=path + c["name"], is_async=bool(c.get("async", False)),
            input_args=_args(inp.get("args", ()), "readWrite"),
            output_args=_args(out.get("args", ()), "readOnly"),
            input_objects=_arg_objects(inp.get("objects", ())),
            output_objects=_arg_objects(out.get("objects", ())),
            status=c.get("status", "current"))
    events = {e["name"]: EventDef(name=e["name"], path=path + e["name"],
                                  args=_args(e.get("args", ()), "readOnly"),
                                  objects=_arg_objects(e.get("objects", ())),
                                  status=e.get("status", "current"))
              for e in raw.get("events", ())}
    return ObjectDef(
        path=path, access=raw.get("access", "readOnly"),
        min_entries=raw.get("min_entries", 1), max_entries=raw.get("max_entries", 1),
        num_entries_parameter=raw.get("num_entries_parameter"),
        enable_parameter=raw.get("enable_parameter"),
        unique_key_defs=tuple(UniqueKey(tuple(k["params"]), bool(k.get("functional", True)))
                              for k in raw.get("unique_keys", ())),
        params=MappingProxyType(params), commands=MappingProxyType(commands),
        events=MappingProxyType(events), status=raw.get("status", "current"))


def _profile(raw: Mapping[str, Any]) -> Profile:
    objects = {o["path"]: ProfileObject(o["path"], o.get("requirement", "present"),
                                        MappingProxyType({n: r for n, r in o.get("params", ())}),
                                        tuple(o.get("commands", ())), tuple(o.get("events", ())))
               for o in raw.get("objects", ())}
    return Profile(raw["name"], MappingProxyType(objects), raw.get("base"),
                   tuple(raw.get("extends", ())), raw.get("status", "current"))


def from_document(doc: Mapping[str, Any]) -> DataModel:
    """Build a :class:`DataModel` from the decoded JSON document."""
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT_VERSION:
        raise DefinitionsError(f"definitions are not in format {FORMAT_VERSION}")
    try:
        return DataModel([_object(o) for o in doc["objects"]],
                         [_profile(p) for p in doc.get("profiles", ())],
                         model=doc.get("model", ""), sources=doc.get("sources", {}))
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise DefinitionsError(f"malformed definitions: {exc!r}") from exc


def _read(path: str | None) -> bytes:
    if path is None:
        return importlib.resources.files(__package__).joinpath(DEFINITIONS_FILE).read_bytes()
    with open(path, "rb") as fh:
        data = fh.read()
    return gzip.decompress(data) if path.endswith(".gz") else data


@functools.lru_cache(maxsize=8)
def _load(path: str | None) -> DataModel:
    try:
        doc = json.loads(_read(path))
    except (OSError, ValueError) as exc:
        raise DefinitionsError(f"cannot read definitions {path or DEFINITIONS_FILE}: {exc}") from exc
    return from_document(doc)


def load_definitions(path: str | os.PathLike[str] | None = None) -> DataModel:
    """The shipped definitions (or those in ``path``, ``.json`` or ``.json.gz``); cached.

    Raises :class:`DefinitionsError` when the file cannot be read or parsed.
    """
    return _load(os.fspath(path) if path is not None else None)


# --- value validation ------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?[0-9]+")
_UINT_RE = re.compile(r"\+?[0-9]+")
_DECIMAL_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_DATETIME_RE = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})T(?P<h>[0-9]{2}):(?P<mi>[0-9]{2}):"
    r"(?P<s>[0-9]{2})(?:\.[0-9]+)?(?P<tz>Z|[+-](?P<tzh>[0-9]{2}):(?P<tzm>[0-9]{2}))?")
_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_BOOLEANS = frozenset({"true", "false", "1", "0"})


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return None  # a pattern Python cannot express is not enforced


def _check_ranges(ranges: tuple[Range, ...], number: Decimal) -> str | None:
    if not ranges:
        return None
    for r in ranges:
        if r.min is not None and number < r.min:
            continue
        if r.max is not None and number > r.max:
            continue
        if r.step is not None and r.step != 0:
            try:
                if (number - (r.min or 0)) % r.step != 0:
                    continue
            except ArithmeticError:  # beyond decimal precision: cannot be on the step grid
                continue
        return None
    shown = ", ".join(f"[{'' if r.min is None else r.min}..{'' if r.max is None else r.max}"
                      f"{'' if r.step is None else f' step {r.step}'}]" for r in ranges)
    return f"{str(number)[:24]} is outside the allowed range {shown}"


def _check_sizes(sizes: tuple[Size, ...], length: int, unit: str) -> str | None:
    if not sizes:
        return None
    for s in sizes:
        if (s.min_length is None or length >= s.min_length) and (
                s.max_length is None or length <= s.max_length):
            return None
    shown = ", ".join(f"{s.min_length or 0}..{'' if s.max_length is None else s.max_length}"
                      for s in sizes)
    return f"length {length} {unit} is not within {shown}"


def _check_datetime(text: str) -> str | None:
    m = _DATETIME_RE.fullmatch(text)
    if m is None:
        return "not a dateTime (YYYY-MM-DDThh:mm:ss[.f][Z|+hh:mm])"
    try:
        _dt.datetime(int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"]), int(m["mi"]), int(m["s"]))
    except ValueError:
        return "not a valid calendar date and time"
    if m["tzh"] is not None and (int(m["tzh"]) > 14 or int(m["tzm"]) > 59):
        return "invalid time zone offset"
    return None


def _check_scalar(param: ParamDef, text: str) -> str | None:
    kind = param.type
    if kind == "boolean":
        if text not in _BOOLEANS:
            return "not a boolean (true, false, 1 or 0)"
    elif kind in _INT_BOUNDS:
        unsigned = kind.startswith("unsigned")
        if (_UINT_RE if unsigned else _INT_RE).fullmatch(text) is None:
            return f"not an {kind}" if kind[0] in "aeiou" else f"not a {kind}"
        lo, hi = _INT_BOUNDS[kind]
        if len(text.lstrip("+-").lstrip("0")) > 20:  # beyond 64 bits; spares int() huge input
            return f"{text[:24]}... is outside the {kind} range {lo}..{hi}"
        number = int(text)
        if not lo <= number <= hi:
            return f"{number} is outside the {kind} range {lo}..{hi}"
        problem = _check_ranges(param.ranges, Decimal(number))
        if problem:
            return problem
    elif kind == "decimal":
        if _DECIMAL_RE.fullmatch(text) is None:
            return "not a decimal"
        problem = _check_ranges(param.ranges, Decimal(text))
        if problem:
            return problem
    elif kind == "dateTime":
        problem = _check_datetime(text)
        if problem:
            return problem
    elif kind == "hexBinary":
        if _HEX_RE.fullmatch(text) is None:
            return "not hexBinary (an even number of hex digits)"
        problem = _check_sizes(param.sizes, len(text) // 2, "octets")
        if problem:
            return problem
    elif kind == "base64":
        if len(text) % 4 or _BASE64_RE.fullmatch(text) is None:
            return "not base64"
        try:
            decoded = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return "not base64"
        problem = _check_sizes(param.sizes, len(decoded), "octets")
        if problem:
            return problem
    else:  # string and anything unknown
        problem = _check_sizes(param.sizes, len(text), "characters")
        if problem:
            return problem
        if param.patterns:
            compiled = [c for c in map(_compiled, param.patterns) if c is not None]
            if compiled and not any(c.fullmatch(text) for c in compiled):
                return "does not match the required pattern"
    if param.enumerations and text not in param.enumerations:
        return f"{text!r} is not one of the enumerated values"
    return None


def _split_list(text: str, nested: bool) -> list[str] | None:
    """Items of a list value, or ``None`` when brackets do not balance."""
    if text.strip() == "":
        return []
    if not nested:
        return [item.strip() for item in text.split(",")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                return None
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    if depth != 0:
        return None
    items.append(text[start:].strip())
    return items


def validate_value(param: ParamDef, text: str) -> str | None:
    """``None`` when ``text`` is a valid value of ``param``, else a short reason.

    Never raises for any ``str`` (see the module docstring for the rules).
    """
    if not isinstance(text, str):
        return "value is not a string"
    lst = param.list
    if lst is None:
        return _check_scalar(param, text)
    length = len(text)
    if lst.max_length is not None and length > lst.max_length:
        return f"list is {length} characters long, more than {lst.max_length}"
    if lst.min_length is not None and length < lst.min_length:
        return f"list is {length} characters long, fewer than {lst.min_length}"
    items = _split_list(text, lst.nested_brackets)
    if items is None:
        return "unbalanced brackets in list"
    if len(items) < lst.min_items:
        return f"list has {len(items)} items, fewer than {lst.min_items}"
    if lst.max_items is not None and len(items) > lst.max_items:
        return f"list has {len(items)} items, more than {lst.max_items}"
    for index, item in enumerate(items):
        if lst.nested_brackets and item.startswith("["):
            continue  # inner lists carry no facets of their own here
        problem = _check_scalar(param, item)
        if problem:
            return f"item {index + 1}: {problem}"
    return None
