"""What Add, Set and Delete share: parameter checks, unique keys, all-or-nothing units.

* :func:`check_settings` turns a request's ``param_settings`` into the values
  to write and the :class:`ParamFailure` list, applying every check a write
  goes through (7010 unsupported parameter, 7006 permission denied, 7013
  non-writeable, 7011 invalid type, 7012 invalid value, 7014 conflicting
  duplicates) and the ``required`` flag of the allow_partial/required table
  (TR-369 "Using Allow Partial and Required Parameters", R-ADD.3, R-SET.2);
* :func:`key_conflicts` and :func:`fresh_key_value` implement unique keys
  (7025 duplicates, R-KEY.2; agent-assigned keys, R-ADD.5);
* :func:`atomic` runs a unit of work that is undone as a whole when it raises
  :class:`Rollback` (``allow_partial: false``, R-ADD.1/R-ADD.2a, R-SET.1/
  R-SET.2a, R-DEL.1).

Change events policy: a unit runs inside ``store.transaction()`` *and*
``store.quiet()``, and :class:`Batch` records the events of the changes it
makes. A unit that fails is rolled back and its events are dropped; a unit
that succeeds hands its events to the enclosing unit, and the outermost one
replays them to the store's listeners (the subscription engine) only once
the whole message has committed. So a failed message never produces a
ValueChange, ObjectCreation or ObjectDeletion notification.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from conformance.agent.context import RequestContext
from conformance.agent.datamodel.defs import (
    ListFacet,
    ObjectDef,
    ParamDef,
    UniqueKey,
    validate_value,
)
from conformance.agent.datamodel.resolve import ResolveError, resolve
from conformance.agent.datamodel.store import (
    Change,
    ObjectAdded,
    ObjectDeleted,
    Store,
    StoreError,
    ValueChanged,
    default_value,
)
from conformance.usp import errors, messages, paths
from conformance.usp.schema import Msg

_INTEGER_TYPES = frozenset({"int", "unsignedInt", "long", "unsignedLong"})
#: How many candidate values :func:`fresh_key_value` tries before giving up.
_MAX_KEY_ATTEMPTS = 1000


class _Setting(Protocol):
    """``CreateParamSetting`` / ``UpdateParamSetting``: both have these fields."""

    param: str
    value: str
    required: bool


@dataclass(frozen=True)
class ParamFailure:
    """One parameter that could not be written (``param`` relative to its object)."""

    param: str
    code: int
    message: str
    required: bool

    def text(self) -> str:
        return f"{self.param}: {self.message}"


@dataclass
class Failure:
    """Why a requested path (or one object of it) failed.

    ``param_errs`` are (full path, code, message) triples for an Error Msg
    (the Error's ``param_errs`` when ``allow_partial`` is false).
    """

    code: int
    message: str
    param_errs: list[tuple[str, int, str]] = field(default_factory=list)

    @classmethod
    def for_path(cls, path: str, code: int, message: str) -> Failure:
        """A failure of the requested path itself (TP-469 1.4/1.26: param_path is the path)."""
        return cls(code, message, [(path, code, message)])


class Rollback(Exception):
    """Raised inside :func:`atomic` to undo the unit; carries what to report instead."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def error_msg(failure: Failure, msg_id: str) -> Msg:
    """The Error Msg for a message that failed as a whole."""
    return messages.error(failure.code, failure.message, msg_id=msg_id,
                          param_errs=list(failure.param_errs))


# --- all-or-nothing units ------------------------------------------------------------------


class Batch:
    """The changes of one unit, made through the store with their events held back."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events: list[Change] = []
        #: Objects whose unique keys were written (created instances, key updates).
        self.touched: dict[str, ObjectDef] = {}

    def add(self, table_path: str, *, number: int | None = None) -> str:
        """Create an instance (defaults only); ObjectCreation is due on commit."""
        inst = self.store.add(table_path, number=number)
        self.events.append(ObjectAdded(inst))
        return inst

    def set(self, param_path: str, value: str, *, notify: bool = True) -> str:
        """Write a value; ``notify=False`` for the initial values of a new instance."""
        old = self.store.set(param_path, value)
        if notify and old != value:
            self.events.append(ValueChanged(param_path, old, value))
        return old

    def delete(self, inst_path: str) -> list[str]:
        """Delete an instance and its descendants; ObjectDeletion for each on commit."""
        deleted = self.store.delete(inst_path)
        self.events += [ObjectDeleted(path) for path in deleted]
        return deleted

    def publish(self) -> None:
        """Hand the recorded events to the store's listeners (after commit)."""
        for change in self.events:
            self.store.emit(change)  # the store's own fan-out; it stays muted inside quiet()
        self.events.clear()


@contextmanager
def atomic(store: Store, parent: Batch | None = None) -> Iterator[Batch]:
    """A unit that is undone, events included, when its block raises.

    On success the unit's events go to ``parent`` (an enclosing unit) or, for
    the outermost unit, to the listeners.
    """
    batch = Batch(store)
    with store.transaction(), store.quiet():
        yield batch
    if parent is not None:
        parent.events += batch.events
        parent.touched.update(batch.touched)
    else:
        batch.publish()


# --- parameters ---------------------------------------------------------------------------


def locate_param(store: Store, obj_path: str, relative: str) -> tuple[str, ParamDef] | None:
    """The full path and definition of ``relative`` (``Enable``, ``Sub.Param``) in ``obj_path``.

    Only parameters of the object or of its single-instance sub-objects
    qualify (TR-369 CreateParamSetting/UpdateParamSetting ``param``).
    """
    odef = store.object_def(obj_path)
    if odef is None or not isinstance(relative, str) or not relative:
        return None
    *walk, name = relative.split(".")
    for part in walk:
        if not part or not part.isidentifier():
            return None
        child = store.object_def(f"{odef.path}{part}.")
        if child is None or child.multi_instance or child.path != f"{odef.path}{part}.":
            return None
        odef = child
    pdef = odef.params.get(name)
    if pdef is None:
        return None
    return obj_path + relative, pdef


def _type_only(pdef: ParamDef) -> ParamDef:
    """``pdef`` without its value facets: what is left decides 7011 versus 7012."""
    lst = ListFacet(nested_brackets=pdef.list.nested_brackets) if pdef.list is not None else None
    return dataclasses.replace(pdef, list=lst, ranges=(), sizes=(), patterns=(), enumerations=())


def check_value(store: Store, pdef: ParamDef, value: str) -> tuple[int, str] | None:
    """``None`` when ``value`` may be written to ``pdef``, else (USP code, reason).

    7011 when the string is not of the parameter's type at all, 7012 when it
    is but breaks a facet (range, size, pattern, enumeration), the TR-181
    Alias rules (not empty, starts with a letter: TP-469 1.88) or points a
    strong reference at an object that does not exist.
    """
    problem = validate_value(_type_only(pdef), value)
    if problem is not None:
        return errors.INVALID_TYPE, problem
    problem = validate_value(pdef, value)
    if problem is not None:
        return errors.INVALID_VALUE, problem
    if pdef.data_type == "Alias" and not (value[:1].isascii() and value[:1].isalpha()):
        return errors.INVALID_VALUE, "an Alias is not empty and starts with a letter"
    problem = _check_reference(store, pdef, value)
    if problem is not None:
        return errors.INVALID_VALUE, problem
    return None


def _check_reference(store: Store, pdef: ParamDef, value: str) -> str | None:
    """A strong reference to a row must name an existing row of a target table."""
    ref = pdef.reference
    if ref is None or ref.ref_type != "strong" or ref.target_type != "row":
        return None
    items = [v.strip() for v in value.split(",")] if pdef.is_list else [value.strip()]
    for item in items:
        if not item:
            continue
        target = item if item.endswith(".") else item + "."
        try:
            found = resolve(store, target)
        except ResolveError:
            return f"{item!r} is not an existing object"
        if len(found.objects) != 1 or found.table or not _is_instance(found.objects[0]):
            return f"{item!r} does not name one table row"
        try:
            supported = str(paths.to_supported_path(found.objects[0]))
        except (paths.PathError, ValueError):
            return f"{item!r} cannot be referenced"
        if ref.target_parent and not any(supported.startswith(p) for p in ref.target_parent):
            return f"{item!r} is not a row of {', '.join(ref.target_parent)}"
    return None


def _is_instance(obj_path: str) -> bool:
    return obj_path.endswith(".") and obj_path[:-1].rpartition(".")[2].isdigit()


def nonfunctional_key_params(odef: ObjectDef) -> frozenset[str]:
    """Parameters in a non-functional unique key (immutable after creation, R-KEY.1)."""
    return frozenset(p for key in odef.unique_key_defs if not key.functional for p in key.params)


def key_params(odef: ObjectDef) -> list[str]:
    """Every unique key parameter of an object, each once, in definition order."""
    out: list[str] = []
    for key in odef.unique_keys:
        out += [p for p in key if p not in out]
    return out


def check_settings(store: Store, ctx: RequestContext, obj_path: str,
                   settings: Sequence[_Setting], *, creating: bool,
                   forced_required: Iterable[str] = (),
                   immutable_keys: bool = True,
                   mutable_params: Collection[str] = frozenset(),
                   ) -> tuple[dict[str, str], list[ParamFailure]]:
    """Check a request's settings for the object ``obj_path``.

    Returns the values to write (full path -> value) and the failures.
    ``creating`` is true for Add (writeOnceReadOnly and non-functional keys
    may be given once); ``forced_required`` names settings that count as
    required whatever their flag says (unique keys in an Add). With
    ``immutable_keys`` false the R-KEY.1 check is skipped, and names in
    ``mutable_params`` escape it (both only for faults).
    """
    forced = set(forced_required)
    odef = store.object_def(obj_path)
    frozen_keys = nonfunctional_key_params(odef) if odef is not None and not creating else frozenset()
    accepted: dict[str, str] = {}
    failures: list[ParamFailure] = []
    merged: dict[str, tuple[str, bool, bool]] = {}  # param -> (value, required, conflicting)
    for setting in settings:
        name, value = setting.param, setting.value
        required = bool(setting.required) or name in forced
        if name in merged:
            old_value, old_required, conflict = merged[name]
            merged[name] = (old_value, old_required or required, conflict or old_value != value)
        else:
            merged[name] = (value, required, False)
    for name, (value, required, conflicting) in merged.items():
        def fail(code: int, message: str, name: str = name, required: bool = required) -> None:
            failures.append(ParamFailure(name, code, message, required))

        if conflicting:  # the same parameter twice with different values
            fail(errors.VALUE_CONFLICT, "given more than once with different values")
            continue
        located = locate_param(store, obj_path, name)
        if located is None:
            fail(errors.UNSUPPORTED_PARAMETER, f"no parameter {name!r} in {obj_path}")
            continue
        path, pdef = located
        if not ctx.access.allows("Param", path, "w"):
            fail(errors.PERMISSION_DENIED, "no write permission")
            continue
        problem = _check_writable(store, path, pdef, value, creating=creating,
                                  frozen=(immutable_keys and name in frozen_keys
                                          and name not in mutable_params))
        if problem is not None:
            fail(errors.ATTEMPT_TO_UPDATE_NON_WRITEABLE_PARAMETER, problem)
            continue
        bad = check_value(store, pdef, value)
        if bad is not None:
            fail(*bad)
            continue
        accepted[path] = value
    return accepted, failures


def _check_writable(store: Store, path: str, pdef: ParamDef, value: str, *,
                    creating: bool, frozen: bool) -> str | None:
    if not pdef.is_writable:
        return "the parameter is read-only"
    if creating:
        return None
    try:
        current = store.get(path)
    except StoreError:
        return None
    # TR-369 "writeOnceReadOnly Parameter Access": "already set" is read as "no longer
    # holds its creation default" (the store keeps no history of who wrote what)
    if pdef.write_once and current != default_value(pdef):
        return "writeOnceReadOnly: already set"
    if frozen and current != value:
        return "a non-functional unique key cannot change after creation (R-KEY.1)"
    return None


def required_failed(failures: Iterable[ParamFailure]) -> list[ParamFailure]:
    """The failures that fail their object (``required`` ones, R-ADD.3, R-SET.2)."""
    return [f for f in failures if f.required]


def describe(failures: Iterable[ParamFailure]) -> str:
    return "; ".join(f"{f.text()} ({f.code})" for f in failures)


# --- unique keys ----------------------------------------------------------------------------


def table_of(inst_path: str) -> str:
    """``Device.X.Table.3.`` -> ``Device.X.Table.``."""
    return inst_path[:-1].rpartition(".")[0] + "."


def key_values(store: Store, obj_path: str, key: Sequence[str]) -> tuple[str, ...] | None:
    try:
        return tuple(store.get(obj_path + p) for p in key)
    except StoreError:
        return None


def key_conflicts(store: Store, inst_path: str, odef: ObjectDef) -> list[UniqueKey]:
    """The unique keys of ``inst_path`` whose values another instance of its table holds."""
    if not odef.multi_instance or not store.exists(inst_path):
        return []
    siblings = [s for s in store.instances(table_of(inst_path)) if s != inst_path]
    clashes = []
    for key in odef.unique_key_defs:
        mine = key_values(store, inst_path, key.params)
        if mine is not None and any(key_values(store, s, key.params) == mine for s in siblings):
            clashes.append(key)
    return clashes


def conflict_failure(store: Store, touched: dict[str, ObjectDef]) -> Failure | None:
    """7025 for the first touched instance that duplicates another's unique key, else None."""
    for inst, odef in touched.items():
        clashes = key_conflicts(store, inst, odef)
        if clashes:
            names = ", ".join("+".join(k.params) for k in clashes)
            message = f"{inst}: another instance has the same unique key ({names})"
            errs = [(inst + p, errors.OBJECT_EXISTS_WITH_DUPLICATE_KEY, message)
                    for k in clashes for p in k.params]
            return Failure(errors.OBJECT_EXISTS_WITH_DUPLICATE_KEY, message, errs)
    return None


def fresh_key_value(pdef: ParamDef, number: int, attempt: int) -> str | None:
    """Candidate value for an agent-assigned key: ``cpe-<n>`` (TR-181 Alias), or a number."""
    if pdef.type in _INTEGER_TYPES:
        return str(number + attempt)
    if pdef.type == "string" and not pdef.enumerations:
        return f"cpe-{number}" if attempt == 0 else f"cpe-{number}-{attempt + 1}"
    return None


def assign_missing_keys(batch: Batch, inst_path: str, odef: ObjectDef, given: set[str]) -> None:
    """R-ADD.5: give every unique key parameter the controller left out a value.

    Parameters of non-functional keys (Alias, Subscription ID) always get a
    generated value; a functional key keeps its default unless that clashes
    with another instance. A candidate is kept only if it is a valid value
    and makes the whole key unique in the table.
    """
    store = batch.store
    number = int(inst_path[:-1].rpartition(".")[2])
    for key in odef.unique_key_defs:
        missing = [p for p in key.params if p not in given and p in odef.params]
        if not missing:
            continue
        if key.functional and key not in key_conflicts(store, inst_path, odef):
            continue
        siblings = [s for s in store.instances(table_of(inst_path)) if s != inst_path]
        taken = {key_values(store, s, key.params) for s in siblings}
        for attempt in range(_MAX_KEY_ATTEMPTS):
            candidates = {p: fresh_key_value(odef.params[p], number, attempt) for p in missing}
            if any(v is None or validate_value(odef.params[p], v) is not None
                   for p, v in candidates.items()):
                break
            mine = tuple(candidates.get(p) or store.get(inst_path + p) for p in key.params)
            if mine not in taken:
                for p, v in candidates.items():
                    batch.set(inst_path + p, v or "", notify=False)
                break
