#!/usr/bin/env python3
"""Regenerate the reference Agent's TR-181 definitions (``tr181.json``).

The reference USP Agent (``conformance/agent``) must not need the BBF XML at
run time, so this script boils the BBF DM Schema documents down to a compact
JSON file of facts: object paths, access, entry counts, unique keys,
parameter types and facets (sizes, patterns, enumerations, ranges, units,
lists, references, defaults), commands (sync/async, input/output arguments,
mandatory flags), events (arguments) and profiles. Descriptions are dropped.

Inputs (``--reference DIR``, default ``../shared/reference/tr-181``):

* ``BASE_FILE``: the flattened Device:2 USP model (every object has its full
  path, every named data type is defined);
* ``OVERLAYS``: newer component files. A component is mounted at a path and
  merged into the base model: containers (objects, commands, events, argument
  lists, argument objects) merge item by item, leaves (parameters, argument
  parameters) defined with ``name=`` replace the older leaf, leaves given with
  ``base=`` modify it (attributes, and the syntax if one is given), and
  anything marked ``status="deleted"`` is removed. Items that an overlay does
  not mention keep their base definition, because the component files import
  parts of the model they do not spell out.

``SELECTION`` names the subtrees the Agent ships; ``PROFILES`` are kept when
every object, parameter, command and event they reference was shipped.

Output is deterministic (sorted keys, schema order for lists), so
``tests/agent/test_datamodel_defs.py`` can regenerate and compare.

Usage: ``python scripts/gen_datamodel.py [--reference DIR] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference" / "tr-181"
DEFAULT_OUT = ROOT / "conformance" / "agent" / "datamodel" / "tr181.json"

#: Version of the JSON layout read by ``conformance/agent/datamodel/defs.py``.
FORMAT_VERSION = 1

#: The flattened Device:2 model every overlay is merged into.
BASE_FILE = "tr-181-2-16-0-usp-full.xml"


@dataclass(frozen=True)
class Overlay:
    """A component of a newer DM document, mounted at ``mount``.

    ``mount`` is the object the component's own parameters, commands and
    events belong to, and the prefix of its relative object names; ``""``
    when the component spells out full object paths.
    """

    file: str
    component: str
    mount: str = ""
    #: The file ships with this script (our own additions), not with the BBF texts.
    local: bool = False


#: Newer component definitions; they win over BASE_FILE for what they cover.
OVERLAYS: tuple[Overlay, ...] = (
    Overlay("tr-181-2-19-localagent.xml", "USPLocalAgent", "Device.LocalAgent."),
    Overlay("tr-181-2-19-mqtt.xml", "MQTT"),
    Overlay("tr-181-2-19-stomp.xml", "STOMP"),
    Overlay("tr-181-2-19-unixdomainsocket.xml", "UnixDomainSockets"),
    Overlay("tr-181-2-19-softwaremodules-usp.xml", "SoftwareModulesUSP"),
    Overlay("tr-181-2-19-bulkdata.xml", "BulkData"),
    Overlay("tr-181-2-19-uspservices.xml", "USPServices"),
    # Items of newer TR-181 releases that TP-469 uses (see the file's header).
    Overlay("dm-additions.xml", "ControllerOnBoarding", "Device.LocalAgent.Controller.{i}.",
            local=True),
    Overlay("dm-additions.xml", "SubscriptionTriggerConfig", "Device.LocalAgent.Subscription.{i}.",
            local=True),
)


@dataclass(frozen=True)
class Select:
    """One shipped part of the model.

    ``path`` is a supported object path. With ``subtree`` every object below it
    is shipped too. ``items`` restricts the object's own parameters, commands
    and events to the names given (``None``: all of them).
    """

    path: str
    subtree: bool = True
    items: tuple[str, ...] | None = None


#: What the reference Agent implements; extend by adding entries.
SELECTION: tuple[Select, ...] = (
    Select("Device.", subtree=False, items=(
        "RootDataModelVersion", "Reboot()", "FactoryReset()", "ScheduleTimer()",
        "SelfTestDiagnostics()", "Boot!",
    )),
    Select("Device.DeviceInfo."),
    Select("Device.Time."),
    Select("Device.LocalAgent."),
    Select("Device.MQTT."),
    Select("Device.STOMP."),
    Select("Device.UnixDomainSockets."),
    Select("Device.SoftwareModules."),
    Select("Device.BulkData."),
    Select("Device.USPServices."),
)

#: Profiles named here are shipped when complete; ``None`` means every profile
#: whose references all fall inside the shipped model.
PROFILES: tuple[str, ...] | None = None

NS_PREFIX = "{urn:broadband-forum-org:cwmp:datamodel-"
BASE_TYPES = ("base64", "boolean", "dateTime", "decimal", "hexBinary", "int", "long",
              "string", "unsignedInt", "unsignedLong")
#: Components imported from documents we do not have but whose content is known.
BUILTIN_COMPONENTS = {"Alias": "Alias", "_AliasUSP": "_AliasUSP"}

Facts = dict[str, Any]


class GenerationError(Exception):
    """The XML does not have the structure this generator understands."""


# --- XML helpers -----------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _is_true(value: str | None) -> bool:
    return value == "true"


def _number(text: str) -> int | str:
    """Range bounds: ints where integral, the exact text otherwise (decimals)."""
    try:
        return int(text)
    except ValueError:
        return text.strip()


def _status_deleted(el: ET.Element) -> bool:
    return el.get("status") == "deleted"


def _status(facts: Facts, el: ET.Element) -> None:
    status = el.get("status")
    if status in ("deprecated", "obsoleted"):
        facts["status"] = status


# --- relative path resolution (TR-106 reference path rules) -----------------------------


def _levels(path: str) -> list[str]:
    """Split a supported path into levels; a table name and its ``{i}`` are one level."""
    levels: list[str] = []
    for part in [p for p in path.split(".") if p]:
        if part == "{i}" and levels:
            levels[-1] += ".{i}"
        else:
            levels.append(part)
    return levels


def resolve_ref(ref: str, context: str, exists: Callable[[str], bool] | None = None) -> str:
    """Make a reference path absolute.

    ``context`` is the object (for parameters) or ``Object.Command()`` /
    ``Object.Event!`` (for arguments) the reference is written in. ``.X.``
    is relative to ``Device.``, each leading ``#`` climbs one level, any other
    relative name is below the context. Absolute paths are returned unchanged.

    A few BBF definitions climb one ``#`` too many; when ``exists`` is given
    and the regular target is unknown, fewer climbs are tried before giving
    up and returning the regular resolution.
    """
    if ref.startswith("Device.") or ref == "Device":
        return ref
    if ref.startswith("."):
        return "Device" + ref
    levels = _levels(context)
    hashes = len(ref) - len(ref.lstrip("#"))
    rest = ref[hashes:].lstrip(".")
    candidates = [".".join(levels[:max(1, len(levels) - h)]) + "." + rest
                  for h in range(hashes, -1, -1)]
    if exists is not None:
        for candidate in candidates:
            if exists(candidate):
                return candidate
    return candidates[0]


# --- data types -------------------------------------------------------------------------


class DataTypes:
    """Named data types of every loaded document, resolved to base type + facets.

    Definitions are shared by all documents; the names a document imports
    under another name (``<dataType name="Alias" ref="_AliasUSP"/>``) apply
    only to the view returned by :meth:`scoped` for that document.
    """

    def __init__(self) -> None:
        self._elements: dict[str, ET.Element] = {}
        self._aliases: dict[str, str] = {}
        self._cache: dict[str, Facts] = {}

    def add_document(self, root: ET.Element) -> None:
        for el in root:
            if _local(el.tag) == "dataType" and el.get("name"):
                self._elements.setdefault(el.get("name", ""), el)

    def scoped(self, root: ET.Element) -> DataTypes:
        """A view sharing the definitions, with ``root``'s import renames."""
        view = DataTypes()
        view._elements, view._cache = self._elements, self._cache
        for el in root:
            if _local(el.tag) == "import":
                for imp in el:
                    if _local(imp.tag) == "dataType" and imp.get("ref"):
                        view._aliases[imp.get("name", "")] = imp.get("ref", "")
        return view

    def resolve(self, name: str) -> Facts:
        """Base type and facets of a named data type (``data_type`` is ``name`` as written)."""
        real = self._aliases.get(name, name)
        if real not in self._cache:
            el = self._elements.get(real)
            if el is None:
                raise GenerationError(f"unknown data type {name!r}")
            base = el.get("base")
            facts: Facts = copy.deepcopy(self.resolve(base)) if base else {}
            _apply_type_children(facts, el, self, context="")
            if "type" not in facts:
                raise GenerationError(f"data type {name!r} has no base type")
            self._cache[real] = facts
        facts = copy.deepcopy(self._cache[real])
        facts["data_type"] = name
        return facts


def _apply_facets(facts: Facts, el: ET.Element, context: str) -> None:
    """Facet children of a type element (or of a derived dataType) onto ``facts``."""
    sizes: list[list[int | None]] = []
    patterns: list[str] = []
    enums: list[str] = []
    ranges: list[list[int | str | None]] = []
    for child in el:
        tag = _local(child.tag)
        if tag == "size":
            lo, hi = child.get("minLength"), child.get("maxLength")
            sizes.append([int(lo) if lo is not None else None, int(hi) if hi is not None else None])
        elif tag == "pattern":
            patterns.append(child.get("value", ""))
        elif tag == "enumeration":
            if not _status_deleted(child):
                enums.append(child.get("value", ""))
        elif tag == "range":
            lo, hi, step = child.get("minInclusive"), child.get("maxInclusive"), child.get("step")
            ranges.append([_number(lo) if lo is not None else None,
                           _number(hi) if hi is not None else None,
                           _number(step) if step is not None and step != "1" else None])
        elif tag == "units":
            facts["units"] = child.get("value", "")
        elif tag == "enumerationRef":
            ref: Facts = {"target_param": child.get("targetParam", "")}
            facts["_context"] = context
            if child.get("nullValue") is not None:
                ref["null_value"] = child.get("nullValue")
            facts["enumeration_ref"] = ref
        elif tag in ("pathRef", "instanceRef"):
            reference: Facts = {"ref_type": child.get("refType", "weak")}
            reference["target_type"] = child.get("targetType", "row" if tag == "instanceRef" else "any")
            parents = (child.get("targetParent") or "").split()
            if parents:
                reference["target_parent"] = parents
                facts["_context"] = context
            if child.get("targetParentScope"):
                reference["target_parent_scope"] = child.get("targetParentScope")
            facts["reference"] = reference
    if sizes:
        facts["sizes"] = sizes
    if patterns:
        facts["patterns"] = patterns
    if enums:
        facts["enumerations"] = enums
    if ranges:
        facts["ranges"] = ranges


def _apply_list(facts: Facts, el: ET.Element) -> None:
    lst: Facts = {}
    if el.get("minItems") is not None:
        lst["min_items"] = int(el.get("minItems", "0"))
    if el.get("maxItems") is not None and el.get("maxItems") != "unbounded":
        lst["max_items"] = int(el.get("maxItems", "0"))
    if _is_true(el.get("nestedBrackets")) or el.get("nestedBrackets") == "required":
        lst["nested_brackets"] = True
    for child in el:
        if _local(child.tag) == "size":
            if child.get("maxLength") is not None:
                lst["max_length"] = int(child.get("maxLength", "0"))
            if child.get("minLength") is not None:
                lst["min_length"] = int(child.get("minLength", "0"))
    facts["list"] = lst


def _apply_type_children(facts: Facts, el: ET.Element, types: DataTypes, context: str) -> None:
    """Children of ``<syntax>`` or ``<dataType>``: list, base type / ref, facets."""
    for child in el:
        tag = _local(child.tag)
        if tag == "list":
            _apply_list(facts, child)
        elif tag in BASE_TYPES:
            for key in ("sizes", "patterns", "enumerations", "ranges", "units",
                        "enumeration_ref", "reference", "data_type"):
                facts.pop(key, None)
            facts["type"] = tag
            _apply_facets(facts, child, context)
        elif tag == "dataType" and (child.get("ref") or child.get("base")):
            # a named type (ref=) or an anonymous restriction of one (base=)
            keep_list = facts.get("list")
            facts.clear()
            facts.update(types.resolve(child.get("ref") or child.get("base") or ""))
            if keep_list is not None and "list" not in facts:
                facts["list"] = keep_list
            _apply_facets(facts, child, context)
    # facets written directly under a derived <dataType base=...>
    if _local(el.tag) == "dataType":
        _apply_facets(facts, el, context)


def parse_syntax(syntax: ET.Element, types: DataTypes, context: str) -> Facts:
    facts: Facts = {}
    _apply_type_children(facts, syntax, types, context)
    if "type" not in facts:
        raise GenerationError(f"syntax without a type in {context!r}")
    for flag in ("secured", "hidden", "command"):
        if _is_true(syntax.get(flag)):
            facts[flag] = True
    for child in syntax:
        if _local(child.tag) == "default":
            value = child.get("value", "")
            lst = facts.get("list")
            if lst is not None and not lst.get("nested_brackets") and value.startswith("[") \
                    and value.endswith("]"):
                # list defaults may be written as "[a, b]"; store the value form "a,b"
                value = ",".join(i.strip() for i in value[1:-1].split(",") if i.strip())
            facts["default"] = {"type": child.get("type", "object"), "value": value}
    return facts


def _merge_syntax(old: Facts, new: Facts) -> Facts:
    """A ``base=`` modification's syntax is incremental.

    Facets it states replace the old ones, facets it does not state are kept,
    and enumeration values accumulate (a modification may only add values).
    """
    merged = dict(old)
    merged.update(new)
    old_enums = old.get("enumerations", [])
    if old_enums and "enumerations" in new:
        merged["enumerations"] = old_enums + [e for e in new["enumerations"] if e not in old_enums]
    return merged


# --- model building ---------------------------------------------------------------------


def _expand(children: Iterable[ET.Element], components: dict[str, ET.Element]) -> Iterator[ET.Element]:
    """Children with ``<component ref=...>`` replaced by the component's content."""
    for child in children:
        tag = _local(child.tag)
        if tag == "description":
            continue
        if tag == "component" and child.get("ref"):
            ref = child.get("ref", "")
            if ref in components:
                yield from _expand(components[ref], components)
            elif ref in BUILTIN_COMPONENTS:
                param = ET.Element("parameter", name="Alias", access="readWrite")
                syntax = ET.SubElement(param, "syntax")
                ET.SubElement(syntax, "dataType", ref=BUILTIN_COMPONENTS[ref])
                yield param
            # other imported components: their items keep the base definition
            continue
        yield child


def _insert(items: list[Facts], new: Facts, after: str | None) -> None:
    """Insert ``new`` after the item named ``after`` (at the end when absent)."""
    names = [i["name"] for i in items]
    if after is not None and after in names:
        items.insert(names.index(after) + 1, new)
    else:
        items.append(new)


class ModelBuilder:
    """Holds the merged model as ordered plain data while documents are applied."""

    def __init__(self, types: DataTypes) -> None:
        self.types = types
        self.objects: dict[str, Facts] = {}
        self.order: list[str] = []
        self.profiles: dict[str, Facts] = {}
        self.warnings: list[str] = []

    # objects ---------------------------------------------------------------

    def _object(self, path: str, el: ET.Element, after: str | None) -> Facts:
        obj = self.objects.get(path)
        if obj is None:
            obj = {"path": path, "params": [], "commands": [], "events": []}
            self.objects[path] = obj
            if after is not None and after in self.order:
                self.order.insert(self.order.index(after) + 1, path)
            else:
                self.order.append(path)
        for attr, key in (("access", "access"), ("numEntriesParameter", "num_entries_parameter"),
                          ("enableParameter", "enable_parameter")):
            if el.get(attr) is not None:
                obj[key] = el.get(attr)
        if el.get("minEntries") is not None:
            obj["min_entries"] = int(el.get("minEntries", "0"))
        if el.get("maxEntries") is not None:
            hi = el.get("maxEntries", "1")
            obj["max_entries"] = None if hi == "unbounded" else int(hi)
        _status(obj, el)
        return obj

    def _drop_object(self, path: str) -> None:
        for p in [p for p in self.order if p.startswith(path)]:
            self.order.remove(p)
            del self.objects[p]

    def apply_object(self, el: ET.Element, path: str, components: dict[str, ET.Element],
                     after: str | None = None) -> None:
        if _status_deleted(el):
            self._drop_object(path)
            return
        obj = self._object(path, el, after)
        keys: list[Facts] = []
        prev: dict[str, str | None] = {"params": None, "commands": None, "events": None}
        for child in _expand(el, components):
            tag = _local(child.tag)
            if tag == "uniqueKey":
                keys.append({"functional": child.get("functional", "true") != "false",
                             "params": [p.get("ref", "") for p in child if _local(p.tag) == "parameter"]})
            elif tag == "parameter":
                prev["params"] = self._leaf(obj["params"], child, path, prev["params"], is_arg=False)
            elif tag == "command":
                prev["commands"] = self._container(obj["commands"], child, path, prev["commands"],
                                                   components, kind="command")
            elif tag == "event":
                prev["events"] = self._container(obj["events"], child, path, prev["events"],
                                                 components, kind="event")
        if keys:
            obj["unique_keys"] = keys

    # parameters and arguments ------------------------------------------------

    def _leaf(self, items: list[Facts], el: ET.Element, context: str, after: str | None,
              *, is_arg: bool, prefix: str = "") -> str | None:
        """Add, replace, modify or delete one parameter; return its name (for ordering)."""
        name = prefix + (el.get("name") or el.get("base") or "")
        existing = next((i for i in items if i["name"] == name), None)
        if _status_deleted(el):
            if existing is not None:
                items.remove(existing)
            return after
        syntax = next((c for c in el if _local(c.tag) == "syntax"), None)
        if el.get("base") is not None:
            if existing is None:
                self.warnings.append(f"modification of unknown parameter {context}{name}")
                return after
            facts = existing
            if syntax is not None:
                new = parse_syntax(syntax, self.types, context)
                merged = _merge_syntax(facts, new)
                facts.clear()
                facts.update(merged)
        else:
            if syntax is None:
                raise GenerationError(f"parameter {context}{name} has no syntax")
            facts = {"name": name}
            facts.update(parse_syntax(syntax, self.types, context))
        if not is_arg:
            access = el.get("access")
            if access is not None:
                facts["access"] = access
            elif el.get("base") is None:
                facts["access"] = "readOnly"
            notify = el.get("activeNotify")
            if notify is not None and notify != "normal":
                facts["active_notify"] = notify
        if el.get("mandatory") is not None:
            if _is_true(el.get("mandatory")):
                facts["mandatory"] = True
            else:
                facts.pop("mandatory", None)
        _status(facts, el)
        if existing is None:
            _insert(items, facts, after)
        elif existing is not facts:
            items[items.index(existing)] = facts
        return name

    def _container(self, items: list[Facts], el: ET.Element, obj_path: str, after: str | None,
                   components: dict[str, ET.Element], *, kind: str) -> str | None:
        """Add, merge or delete a command or an event."""
        name = el.get("name") or el.get("base") or ""
        existing = next((i for i in items if i["name"] == name), None)
        if _status_deleted(el):
            if existing is not None:
                items.remove(existing)
            return after
        if existing is None:
            existing = {"name": name}
            if kind == "command":
                existing["input"] = {"args": [], "objects": []}
                existing["output"] = {"args": [], "objects": []}
            else:
                existing["args"] = []
                existing["objects"] = []
            _insert(items, existing, after)
        if kind == "command" and el.get("async") is not None:
            existing["async"] = _is_true(el.get("async"))
        _status(existing, el)
        context = obj_path + name
        if kind == "command":
            for child in _expand(el, components):
                tag = _local(child.tag)
                if tag in ("input", "output"):
                    self._arguments(existing[tag], child, context, components)
        else:
            self._arguments(existing, el, context, components)
        return name

    def _arguments(self, block: Facts, el: ET.Element, context: str,
                   components: dict[str, ET.Element], prefix: str = "") -> None:
        """Merge argument parameters and argument objects (``X.{i}.Y`` names are flattened)."""
        prev_arg: str | None = None
        for child in _expand(el, components):
            tag = _local(child.tag)
            if tag == "parameter":
                prev_arg = self._leaf(block["args"], child, context + "." + prefix, prev_arg,
                                      is_arg=True, prefix=prefix) or prev_arg
            elif tag == "object":
                own = child.get("name") or child.get("base") or ""
                name = own if own.startswith(prefix) else prefix + own
                objs = block["objects"]
                existing = next((o for o in objs if o["name"] == name), None)
                if _status_deleted(child):
                    if existing is not None:
                        objs.remove(existing)
                    block["args"][:] = [a for a in block["args"] if not a["name"].startswith(name)]
                    continue
                if existing is None:
                    existing = {"name": name}
                    objs.append(existing)
                if child.get("minEntries") is not None:
                    existing["min_entries"] = int(child.get("minEntries", "0"))
                if child.get("maxEntries") is not None:
                    hi = child.get("maxEntries", "1")
                    existing["max_entries"] = None if hi == "unbounded" else int(hi)
                self._arguments(block, child, context, components, prefix=name)

    # profiles ----------------------------------------------------------------

    def apply_profile(self, el: ET.Element, mount: str) -> None:
        name = el.get("name", "")
        if _status_deleted(el):
            self.profiles.pop(name, None)
            return
        prof: Facts = {"name": name}
        if el.get("base"):
            prof["base"] = el.get("base")
        if el.get("extends"):
            prof["extends"] = el.get("extends", "").split()
        _status(prof, el)
        objects: list[Facts] = []
        for obj_el in el:
            if _local(obj_el.tag) != "object":
                continue
            ref = obj_el.get("ref", "")
            path = ref if ref.startswith("Device.") else mount + ref
            entry: Facts = {"path": path, "requirement": obj_el.get("requirement", "present"),
                            "params": [], "commands": [], "events": []}
            for item in obj_el:
                tag = _local(item.tag)
                if tag == "parameter":
                    entry["params"].append([item.get("ref", ""), item.get("requirement", "readOnly")])
                elif tag == "command":
                    entry["commands"].append(item.get("ref", ""))
                elif tag == "event":
                    entry["events"].append(item.get("ref", ""))
            objects.append(entry)
        prof["objects"] = objects
        self.profiles[name] = prof

    # references --------------------------------------------------------------

    def _all_facts(self) -> Iterator[Facts]:
        for obj in self.objects.values():
            yield from obj["params"]
            for cmd in obj["commands"]:
                yield from cmd["input"]["args"]
                yield from cmd["output"]["args"]
            for event in obj["events"]:
                yield from event["args"]

    def resolve_references(self) -> None:
        """Make every reference target absolute, once all documents are merged."""
        def exists(path: str) -> bool:
            return path in self.objects or path + "{i}." in self.objects

        for facts in self._all_facts():
            context = facts.pop("_context", None)
            if not context:
                continue
            reference = facts.get("reference")
            if reference and "target_parent" in reference:
                reference["target_parent"] = [resolve_ref(p, context, exists)
                                              for p in reference["target_parent"]]
            enum_ref = facts.get("enumeration_ref")
            if enum_ref:
                enum_ref["target_param"] = resolve_ref(enum_ref["target_param"], context)

    # documents ---------------------------------------------------------------

    def apply_body(self, body: ET.Element, mount: str, components: dict[str, ET.Element]) -> None:
        """Apply a ``<model>`` or a mounted ``<component>``."""
        own = [c for c in _expand(body, components)
               if _local(c.tag) in ("parameter", "command", "event", "uniqueKey")]
        if own:
            if not mount:
                raise GenerationError("component with parameters needs a mount path")
            holder = ET.Element("object", base=mount)
            holder.extend(own)
            self.apply_object(holder, mount, components)
        prev: str | None = None
        for child in _expand(body, components):
            tag = _local(child.tag)
            if tag == "object":
                rel = child.get("name") or child.get("base") or ""
                path = rel if rel.startswith("Device.") else mount + rel
                self.apply_object(child, path, components, after=prev)
                if path in self.objects:
                    prev = path
            elif tag == "profile":
                self.apply_profile(child, mount)


def _components(root: ET.Element) -> dict[str, ET.Element]:
    return {c.get("name", ""): c for c in root if _local(c.tag) == "component" and c.get("name")}


def _parse(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise GenerationError(f"cannot read {path}: {exc}") from exc
    if not root.tag.startswith(NS_PREFIX) or _local(root.tag) != "document":
        raise GenerationError(f"{path} is not a BBF DM Schema document")
    return root


# --- selection and output ----------------------------------------------------------------


def _selected(path: str, selection: Sequence[Select]) -> Select | None:
    for sel in selection:
        if path == sel.path or (sel.subtree and path.startswith(sel.path)):
            return sel
    return None


def _parent_object(path: str, known: Iterable[str]) -> str | None:
    """The nearest object path above ``path`` among ``known``."""
    levels = _levels(path)
    for cut in range(len(levels) - 1, 0, -1):
        candidate = ".".join(levels[:cut]) + "."
        if candidate in known:
            return candidate
    return None


def _tree_order(paths: list[str]) -> list[str]:
    """Schema order, except that every object's descendants directly follow it."""
    index = {p: i for i, p in enumerate(paths)}

    def key(path: str) -> tuple[int, ...]:
        levels = _levels(path)
        chain = []
        for cut in range(1, len(levels) + 1):
            ancestor = ".".join(levels[:cut]) + "."
            if ancestor in index:
                chain.append(index[ancestor])
        return tuple(chain)

    return sorted(paths, key=key)


def _compact(value: Any) -> Any:
    """Drop empty containers and ``None`` members (readers supply defaults)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _compact(v)
            if k in ("max_entries", "list") or (v is not None and v != [] and v != {}):
                out[k] = v
        return out
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _profile_complete(prof: Facts, objects: dict[str, Facts]) -> bool:
    for entry in prof["objects"]:
        obj = objects.get(entry["path"])
        if obj is None:
            return False
        params = {p["name"] for p in obj["params"]}
        commands = {c["name"] for c in obj["commands"]}
        events = {e["name"] for e in obj["events"]}
        if any(p not in params for p, _ in entry["params"]):
            return False
        if any(c not in commands for c in entry["commands"]):
            return False
        if any(e not in events for e in entry["events"]):
            return False
    return True


def select(builder: ModelBuilder, selection: Sequence[Select],
           profiles: Sequence[str] | None) -> Facts:
    """The shipped subset of the merged model as the JSON document."""
    shipped: dict[str, Facts] = {}
    for path in builder.order:
        sel = _selected(path, selection)
        if sel is None:
            continue
        obj = copy.deepcopy(builder.objects[path])
        if sel.items is not None and path == sel.path:
            for kind in ("params", "commands", "events"):
                obj[kind] = [i for i in obj[kind] if i["name"] in sel.items]
        shipped[path] = obj
    shipped = {p: shipped[p] for p in _tree_order(list(shipped))}
    # NumberOfEntries parameters of tables that are not shipped would dangle.
    for path in builder.order:
        if path in shipped:
            continue
        table = builder.objects[path]
        counter = table.get("num_entries_parameter")
        parent = _parent_object(path, builder.objects)
        if counter and parent in shipped:
            shipped[parent]["params"] = [p for p in shipped[parent]["params"] if p["name"] != counter]
    chosen: list[Facts] = []
    complete = {n: p for n, p in builder.profiles.items() if _profile_complete(p, shipped)}

    def ok(name: str, seen: frozenset[str] = frozenset()) -> bool:
        prof = complete.get(name)
        if prof is None or name in seen:
            return False
        deps = ([prof["base"]] if "base" in prof else []) + prof.get("extends", [])
        return all(ok(d, seen | {name}) for d in deps)

    for name, prof in builder.profiles.items():
        if (profiles is None or name in profiles) and ok(name):
            chosen.append(prof)
    return {
        "format": FORMAT_VERSION,
        "objects": [_compact(o) for o in shipped.values()],
        "profiles": [_compact(p) for p in chosen],
    }


def generate(reference: Path, *, base_file: str = BASE_FILE,
             overlays: Sequence[Overlay] = OVERLAYS,
             selection: Sequence[Select] = SELECTION,
             profiles: Sequence[str] | None = PROFILES,
             warnings: list[str] | None = None) -> Facts:
    """Read the DM documents under ``reference`` and return the JSON document.

    Modifications of items that exist nowhere are skipped and reported in
    ``warnings``; malformed documents raise :class:`GenerationError`.
    """
    try:
        return _generate(reference, base_file, overlays, selection, profiles, warnings)
    except (ValueError, KeyError, TypeError) as exc:
        raise GenerationError(f"unexpected DM document content: {exc!r}") from exc


def _generate(reference: Path, base_file: str, overlays: Sequence[Overlay],
              selection: Sequence[Select], profiles: Sequence[str] | None,
              warnings: list[str] | None) -> Facts:
    base_root = _parse(reference / base_file)
    overlay_roots = [(ov, _parse((Path(__file__).resolve().parent if ov.local else reference)
                                 / ov.file)) for ov in overlays]
    types = DataTypes()
    types.add_document(base_root)
    for _, root in overlay_roots:
        types.add_document(root)
    builder = ModelBuilder(types)
    models = [m for m in base_root if _local(m.tag) == "model"]
    if len(models) != 1:
        raise GenerationError(f"{base_file} must hold exactly one model")
    builder.types = types.scoped(base_root)
    builder.apply_body(models[0], "", _components(base_root))
    sources = {base_file: base_root.get("spec", "")}
    for ov, root in overlay_roots:
        components = _components(root)
        if ov.component not in components:
            raise GenerationError(f"{ov.file} has no component {ov.component!r}")
        builder.types = types.scoped(root)
        builder.apply_body(components[ov.component], ov.mount, components)
        sources[ov.file] = root.get("spec", "")
    builder.resolve_references()
    if warnings is not None:
        warnings.extend(builder.warnings)
    doc = select(builder, selection, profiles)
    doc["model"] = models[0].get("name", "")
    doc["sources"] = sources
    return doc


def dumps(doc: Facts) -> bytes:
    """Canonical serialisation: sorted keys, one object per line, trailing newline."""
    head = {k: v for k, v in doc.items() if k not in ("objects", "profiles")}
    lines = ["{"]
    for key in sorted(head):
        lines.append(f"{json.dumps(key)}:{json.dumps(head[key], sort_keys=True, separators=(',', ':'))},")
    for section in ("objects", "profiles"):
        lines.append(f"{json.dumps(section)}:[")
        entries = [json.dumps(e, sort_keys=True, separators=(",", ":")) for e in doc[section]]
        lines.extend(e + "," for e in entries[:-1])
        if entries:
            lines.append(entries[-1])
        lines.append("]," if section == "objects" else "]")
    lines.append("}")
    return ("\n".join(lines) + "\n").encode("ascii")


def write(doc: Facts, out: Path) -> None:
    data = dumps(doc)
    if out.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    out.write_bytes(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                        help="directory holding the BBF TR-181 XML files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output file (.json or .json.gz)")
    args = parser.parse_args(argv)
    warnings: list[str] = []
    try:
        doc = generate(args.reference, warnings=warnings)
    except GenerationError as exc:
        print(f"gen_datamodel: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"gen_datamodel: warning: {warning}", file=sys.stderr)
    write(doc, args.out)
    print(f"gen_datamodel: wrote {args.out} ({len(doc['objects'])} objects, "
          f"{len(doc['profiles'])} profiles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
