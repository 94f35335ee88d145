"""Does a Subscription's ReferenceList cover this change, event or command?

TR-181 ``Subscription.{i}.ReferenceList`` holds Path Names or Search Paths
whose meaning depends on ``NotifType``:

* ValueChange: a Parameter Path, or an Object Path that covers every
  parameter below it (``Device.LocalAgent.Controller.1.`` or a table path);
* ObjectCreation: a Multi-Instance Object (table path, possibly with
  wildcards or search expressions before it); an instance pattern such as
  ``Table.*.`` is accepted too;
* ObjectDeletion: instances of a Multi-Instance Object (a table path covers
  all of its instances, ``Table.*.`` too, an expression those it selects);
* OperationComplete / Event: a Command or Event path, or an Object Path that
  covers every command/event below it (``Device.`` covers all of them).

Paths are resolved against the instantiated data model when the change
happens (TR-369: "Searching"; a search expression selects the instances
whose values match at that moment). Deleted instances cannot be resolved any
more, so ObjectDeletion uses a structural match for plain paths and wildcards
and a snapshot (:meth:`Matcher.deletion_watch`) taken before the deletion
for search expressions and reference following.

Entries that are not valid paths are ignored (never an exception).
"""

from __future__ import annotations

from functools import lru_cache

from conformance.agent.datamodel.resolve import ResolveError, resolve
from conformance.agent.datamodel.store import Store
from conformance.usp import paths
from conformance.usp.paths import InstanceNumber, Name, Path, PathKind, Wildcard

_OBJECT_KINDS = (PathKind.OBJECT, PathKind.OBJECT_INSTANCE)


@lru_cache(maxsize=2048)
def parse_entry(text: str) -> Path | None:
    """A ReferenceList entry as an absolute path, or None when it is not one."""
    try:
        path = paths.parse_path(text)
    except (paths.PathError, RecursionError):
        return None
    if not path.is_absolute or path.is_supported_path:
        return None
    return path


@lru_cache(maxsize=4096)
def _supported(text: str) -> str | None:
    try:
        return str(paths.to_supported_path(text))
    except (paths.PathError, ValueError, RecursionError):
        return None


def needs_snapshot(entry: Path) -> bool:
    """Whether matching a deleted instance against ``entry`` needs pre-deletion values."""
    return any(not isinstance(s, (Name, InstanceNumber, Wildcard)) for s in entry.segments)


class Matcher:
    """ReferenceList matching against one store.

    ``allow_search=False`` makes entries that are search paths match nothing
    (the ``notify.no_search_path_match`` fault).
    """

    def __init__(self, store: Store, *, allow_search: bool = True) -> None:
        self.store = store
        self.allow_search = allow_search

    # --- helpers -------------------------------------------------------------------

    def _entries(self, reference_list: tuple[str, ...]) -> list[tuple[str, Path]]:
        out = []
        for text in reference_list:
            entry = parse_entry(text)
            if entry is None or (entry.is_search and not self.allow_search):
                continue
            out.append((text, entry))
        return out

    def _resolve(self, text: str) -> tuple[list[str], list[str], bool] | None:
        """(objects, leaves, table) of ``text``, or None when it does not resolve."""
        try:
            res = resolve(self.store, text)
        except (ResolveError, RecursionError):
            return None
        return res.objects, res.leaves, res.table

    @staticmethod
    def _may_cover(entry_text: str, target_sup: str | None, *, exact: bool) -> bool:
        """Cheap supported-path test before resolving (False: cannot match)."""
        entry_sup = _supported(entry_text)
        if entry_sup is None or target_sup is None:
            return True  # reference following: only resolution can tell
        if exact:
            return entry_sup == target_sup
        return target_sup.startswith(entry_sup)

    # --- per notification type ---------------------------------------------------------

    def value_change(self, reference_list: tuple[str, ...], param_path: str) -> bool:
        """A ValueChange subscription covers the parameter ``param_path``."""
        target = _supported(param_path)
        for text, entry in self._entries(reference_list):
            if entry.kind is PathKind.PARAMETER:
                if self._may_cover(text, target, exact=True):
                    found = self._resolve(text)
                    if found and param_path in found[1]:
                        return True
            elif entry.kind in _OBJECT_KINDS and self._may_cover(text, target, exact=False):
                found = self._resolve(text)
                if found and any(param_path.startswith(o) for o in found[0]):
                    return True
        return False

    def object_creation(self, reference_list: tuple[str, ...], inst_path: str) -> bool:
        """An ObjectCreation subscription covers the new instance ``inst_path``."""
        table = _table_of(inst_path)
        target = _supported(inst_path)
        for text, entry in self._entries(reference_list):
            if entry.kind not in _OBJECT_KINDS:
                continue
            sup = _supported(text)
            if sup is not None and target is not None and sup not in (target, target[:-4]):
                continue  # target[:-4]: the table form, without "{i}."
            found = self._resolve(text)
            if found is None:
                continue
            objects, _, is_table = found
            if entry.kind is PathKind.OBJECT and is_table and table in objects:
                return True
            if entry.kind is PathKind.OBJECT_INSTANCE and inst_path in objects:
                return True
        return False

    def object_deletion(self, reference_list: tuple[str, ...], inst_path: str,
                        snapshot: frozenset[str] = frozenset()) -> bool:
        """An ObjectDeletion subscription covers the deleted instance ``inst_path``.

        ``snapshot`` is the :meth:`deletion_watch` of the subscription taken
        before the deletion (needed for search expressions only).
        """
        try:
            deleted = paths.parse_path(inst_path)
        except paths.PathError:
            return False
        for _, entry in self._entries(reference_list):
            if entry.kind not in _OBJECT_KINDS:
                continue
            if needs_snapshot(entry):
                if inst_path in snapshot:
                    return True
            elif _structural_match(entry, deleted):
                return True
        return False

    def deletion_watch(self, reference_list: tuple[str, ...]) -> frozenset[str]:
        """Instances the search entries of an ObjectDeletion subscription cover right now."""
        watched: set[str] = set()
        for text, entry in self._entries(reference_list):
            if entry.kind not in _OBJECT_KINDS or not needs_snapshot(entry):
                continue
            found = self._resolve(text)
            if found is None:
                continue
            objects, _, is_table = found
            if is_table:
                for table in objects:
                    watched.update(self.store.instances(table))
            else:
                watched.update(objects)
        return frozenset(watched)

    def command_or_event(self, reference_list: tuple[str, ...], full_path: str,
                         kind: PathKind) -> bool:
        """An OperationComplete (``kind`` COMMAND) or Event (EVENT) subscription covers
        ``full_path`` (``Device.Reboot()``, ``Device.LocalAgent.Controller.1.Timer!``)."""
        target = _supported(full_path)
        for text, entry in self._entries(reference_list):
            if entry.kind is kind:
                if self._may_cover(text, target, exact=True):
                    found = self._resolve(text)
                    if found and full_path in found[1]:
                        return True
            elif entry.kind in _OBJECT_KINDS and self._may_cover(text, target, exact=False):
                found = self._resolve(text)
                if found and any(full_path.startswith(o) for o in found[0]):
                    return True
        return False


def _table_of(inst_path: str) -> str:
    """``Device.X.3.`` -> ``Device.X.``."""
    return inst_path[:-1].rpartition(".")[0] + "."


def _structural_match(entry: Path, deleted: Path) -> bool:
    """Plain/wildcard entry vs a deleted instance path (instance numbers and names only)."""
    segs = entry.segments
    if entry.kind is PathKind.OBJECT:  # a table path: its instances
        if len(segs) + 1 != len(deleted.segments):
            return False
    elif len(segs) != len(deleted.segments):
        return False
    for want, got in zip(segs, deleted.segments, strict=False):
        if isinstance(want, Wildcard):
            if not isinstance(got, InstanceNumber):
                return False
        elif want != got:
            return False
    return isinstance(deleted.segments[-1], InstanceNumber)
