"""Resolve USP paths against the reference Agent's instantiated data model.

Turns any requested path (instance numbers, unique keys, wildcards, search
expressions, reference following; TR-369 "Path Names", "Searching",
"Reference Following") into the instantiated objects it matches, or a USP
error code when it cannot:

* 7008 Invalid path syntax: unparsable, relative, an operator not valid for
  the parameter's type (R-ARC: only ``==``/``!=`` for strings and booleans,
  ``~=`` only for lists), a constant that is not of the parameter's type;
* 7026 Invalid path: names something the supported data model lacks;
* 7016 Object does not exist: an *address* (instance number or a complete
  unique key) that matches no instance. A *search* that matches nothing is
  not an error: the result is empty (R-MSG.4a).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from conformance.agent.datamodel.defs import ObjectDef, ParamDef
from conformance.agent.datamodel.store import Store, StoreError
from conformance.usp import errors, paths
from conformance.usp.paths import (
    Expression,
    ExpressionComponent,
    InstanceNumber,
    Name,
    Operator,
    PathKind,
    ReferenceFollow,
    Wildcard,
)

_NUMERIC = frozenset({"int", "unsignedInt", "long", "unsignedLong", "decimal"})
_UNKNOWN_TIME = "0001-01-01T00:00:00Z"


class ResolveError(Exception):
    """A path that cannot be resolved; ``code`` is the USP error code to report."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Resolution:
    """What a path matched.

    ``objects``: instantiated object paths; for a table path without an
    instance (``Device.LocalAgent.Subscription.``) the table path itself with
    ``table`` set; for a parameter, command or event path, the objects that
    own ``leaf``.
    """

    requested: str
    kind: PathKind
    objects: list[str] = field(default_factory=list)
    leaf: str | None = None          # "Enable", "Reboot()", "Boot!"
    table: bool = False
    is_search: bool = False
    object_def: ObjectDef | None = None

    @property
    def leaves(self) -> list[str]:
        """Full paths of the matched parameters/commands/events."""
        return [obj + self.leaf for obj in self.objects] if self.leaf else []


def resolve(store: Store, text: str, *, allow_search: bool = True) -> Resolution:
    """Resolve ``text``; raise :class:`ResolveError` with the USP error code."""
    try:
        path = paths.parse_path(text)
    except paths.PathError as exc:
        raise ResolveError(errors.INVALID_PATH_SYNTAX, f"{text!r}: {exc.reason}") from None
    if not path.is_absolute:
        raise ResolveError(errors.INVALID_PATH_SYNTAX, f"{text!r} is not an absolute path")
    if path.is_search and not allow_search:
        raise ResolveError(errors.INVALID_PATH_SYNTAX, f"{text!r}: search paths are not allowed here")
    segs = path.segments
    leaf_kind = path.kind in (PathKind.PARAMETER, PathKind.COMMAND, PathKind.EVENT)
    obj_segs = segs[:-1] if leaf_kind else segs
    res = Resolution(text, path.kind, is_search=path.is_search)
    current: list[str] = ["Device."]
    odef: ObjectDef | None = store.object_def("Device.")
    i = 1
    while i < len(obj_segs):
        seg = obj_segs[i]
        if isinstance(seg, Name):
            child = store.object_def(f"{_sup(odef)}{seg.name}.") if odef else None
            if child is None:
                raise ResolveError(errors.INVALID_PATH,
                                   f"{text!r}: {seg.name} is not an object of {_sup(odef)}")
            nxt = obj_segs[i + 1] if i + 1 < len(obj_segs) else None
            current = [f"{c}{seg.name}." for c in current]
            odef = child
            if child.multi_instance:
                if nxt is None:  # a table path: Device.LocalAgent.Subscription.
                    res.table = True
                    if leaf_kind:
                        raise ResolveError(errors.INVALID_PATH,
                                           f"{text!r}: a table needs an instance identifier")
                    break
                current = _select(store, child, current, nxt, text)
                i += 2
                continue
            if isinstance(nxt, (InstanceNumber, Wildcard, Expression)):
                raise ResolveError(errors.INVALID_PATH,
                                   f"{text!r}: {seg.name} is not a multi-instance object")
            current = [c for c in current if store.exists(c)]
            i += 1
        elif isinstance(seg, ReferenceFollow):
            if odef is None or seg.name not in odef.params:
                raise ResolveError(errors.INVALID_PATH, f"{text!r}: no parameter {seg.name}")
            targets: list[str] = []
            for obj in current:
                targets += _follow(store, obj, odef.params[seg.name], seg)
            current = targets
            odef = store.object_def(current[0]) if current else None
            if odef is None:
                current = []
                break
            i += 1
        else:
            raise ResolveError(errors.INVALID_PATH_SYNTAX,
                               f"{text!r}: instance identifier without a table")
    res.objects = current
    res.object_def = odef
    if leaf_kind:
        last = segs[-1]
        assert isinstance(last, Name)
        name = last.name + {"PARAMETER": "", "COMMAND": "()", "EVENT": "!"}[path.kind.name]
        if odef is not None and not _has_member(odef, path.kind, name):
            raise ResolveError(errors.INVALID_PATH, f"{text!r}: {_sup(odef)} has no {name}")
        res.leaf = name
    if not res.objects and not res.is_search and not res.table:
        raise ResolveError(errors.OBJECT_DOES_NOT_EXIST, f"{text!r}: object does not exist")
    return res


def _sup(odef: ObjectDef | None) -> str:
    return odef.path if odef is not None else "?"


def _has_member(odef: ObjectDef, kind: PathKind, name: str) -> bool:
    if kind is PathKind.PARAMETER:
        return name in odef.params
    if kind is PathKind.COMMAND:
        return name in odef.commands
    return name in odef.events


def _select(store: Store, table: ObjectDef, tables: list[str], ident: object,
            text: str) -> list[str]:
    """Apply an instance identifier to each table path."""
    out: list[str] = []
    if isinstance(ident, InstanceNumber):
        out = [f"{t}{ident.number}." for t in tables if store.exists(f"{t}{ident.number}.")]
        if not out and len(tables) == 1:
            raise ResolveError(errors.OBJECT_DOES_NOT_EXIST,
                               f"{text!r}: {tables[0]}{ident.number}. does not exist")
        return out
    if isinstance(ident, Wildcard):
        for t in tables:
            out += store.instances(t)
        return out
    if isinstance(ident, Expression):
        for t in tables:
            out += [inst for inst in store.instances(t)
                    if all(_component_matches(store, table, inst, c, text)
                           for c in ident.components)]
        if not out and len(tables) == 1 and _is_unique_key_address(table, ident):
            raise ResolveError(errors.OBJECT_DOES_NOT_EXIST,
                               f"{text!r}: no instance with that unique key")
        return out
    raise ResolveError(errors.INVALID_PATH_SYNTAX, f"{text!r}: a table needs an instance identifier")


def _is_unique_key_address(table: ObjectDef, expr: Expression) -> bool:
    """A complete unique key with == only is an address, not a search (TR-369)."""
    if not expr.is_equality_only:
        return False
    names = {c.parameter_path for c in expr.components}
    return any(set(key) == names for key in table.unique_keys)


def _component_matches(store: Store, table: ObjectDef, inst: str,
                       comp: ExpressionComponent, text: str) -> bool:
    obj, odef = inst, table
    *walk, last = comp.parameter
    for part in walk:
        if isinstance(part, ReferenceFollow):
            if odef is None or part.name not in odef.params:
                raise ResolveError(errors.INVALID_PATH, f"{text!r}: no parameter {part.name}")
            targets = _follow(store, obj, odef.params[part.name], part)
            if not targets:
                return False
            obj = targets[0]
            odef = store.object_def(obj)
        else:
            child = store.object_def(f"{_sup(odef)}{part.name}.") if odef else None
            if child is None or child.multi_instance:
                raise ResolveError(errors.INVALID_PATH,
                                   f"{text!r}: {part.name} is not a single-instance child")
            obj, odef = f"{obj}{part.name}.", child
    if odef is None or not isinstance(last, Name) or last.name not in odef.params:
        raise ResolveError(errors.INVALID_PATH,
                           f"{text!r}: {comp.parameter_path} is not a parameter of {_sup(table)}")
    pdef = odef.params[last.name]
    try:
        value = store.get(obj + last.name)
    except StoreError:
        return False
    return compare(pdef, value, comp.operator, comp.value, text)


def compare(pdef: ParamDef, value: str, op: Operator, const: paths.ExpressionValue,
            text: str = "") -> bool:
    """Evaluate ``value <op> const`` with the parameter's TR-106 type."""
    where = f"{text!r}: " if text else ""
    if op is Operator.CONTAINS:
        if not pdef.is_list:
            raise ResolveError(errors.INVALID_PATH_SYNTAX, f"{where}~= needs a list parameter")
        item = _literal(pdef, const, where)
        return any(_normal(pdef, v.strip()) == item for v in value.split(",") if v.strip())
    if pdef.is_list:
        if op not in (Operator.EQ, Operator.NE):
            raise ResolveError(errors.INVALID_PATH_SYNTAX, f"{where}{op.value} is not valid for lists")
        return (value == const.decoded) == (op is Operator.EQ)
    left = _normal(pdef, value)
    right = _literal(pdef, const, where)
    if op is Operator.EQ:
        return left == right
    if op is Operator.NE:
        return left != right
    ordered = pdef.type in _NUMERIC or (pdef.type == "dateTime" and const.decoded != _UNKNOWN_TIME)
    if not ordered:
        raise ResolveError(errors.INVALID_PATH_SYNTAX,
                           f"{where}{op.value} is not valid for {pdef.type} parameter {pdef.name}")
    if left is None or right is None:
        return False
    try:
        return {Operator.LT: left < right, Operator.GT: left > right,  # type: ignore[operator]
                Operator.LE: left <= right, Operator.GE: left >= right}[op]  # type: ignore[operator]
    except TypeError:
        return False


def _literal(pdef: ParamDef, const: paths.ExpressionValue, where: str) -> object:
    """The constant converted to the parameter's type; 7008 when it is not of that type."""
    base = pdef.type
    if base in ("string", "base64", "hexBinary") or pdef.enumerations:
        if not const.quoted and base == "string":
            raise ResolveError(errors.INVALID_PATH_SYNTAX,
                               f"{where}string constants are quoted ({pdef.name})")
        return const.decoded
    if const.quoted:
        raise ResolveError(errors.INVALID_PATH_SYNTAX,
                           f"{where}{pdef.name} is {base}: its constant is not quoted")
    parsed = _normal(pdef, const.text)
    if parsed is None:
        raise ResolveError(errors.INVALID_PATH_SYNTAX,
                           f"{where}{const.text!r} is not a {base} value ({pdef.name})")
    return parsed


def _normal(pdef: ParamDef, text: str) -> object:
    """Internal representation of a TR-106 literal (None if it is not of the type)."""
    base = pdef.type
    if base == "boolean":
        return {"true": True, "1": True, "false": False, "0": False}.get(text.strip())
    if base in _NUMERIC:
        try:
            return Decimal(text.strip())
        except InvalidOperation:
            return None
    return text


def _follow(store: Store, obj: str, pdef: ParamDef, seg: ReferenceFollow) -> list[str]:
    """Objects a reference parameter points at (``Ref+``, ``Ref#2+``, ``Ref#*+``)."""
    try:
        value = store.get(obj + pdef.name)
    except StoreError:
        return []
    items = [v.strip() for v in value.split(",") if v.strip()] if pdef.is_list else (
        [value.strip()] if value.strip() else [])
    if seg.index == "*":
        chosen = items
    else:
        n = 1 if seg.index is None else seg.index
        chosen = items[n - 1:n]
    out = []
    for ref in chosen:
        target = ref if ref.endswith(".") else ref + "."
        try:
            resolved = resolve(store, target)  # references may use unique keys (R-ARC.11)
        except ResolveError:
            continue
        out += resolved.objects
    return out
