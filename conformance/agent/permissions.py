"""ControllerTrust for the reference Agent: which Roles a Controller has and
what they let it do.

The data lives in the store (TR-181 ``Device.LocalAgent.ControllerTrust.``
and ``Device.LocalAgent.Controller.{i}.``); this module turns it into an
:class:`~conformance.agent.context.Access` the message handlers ask before
acting (R-SEC.1):

* **Roles of a Controller** (:func:`controller_roles`): the ``Controller.{i}``
  whose ``EndpointID`` is the sender contributes ``AssignedRole`` plus
  ``InheritedRole`` (references to ``ControllerTrust.Role.{i}``). A sender
  without a ``Controller.{i}`` entry, or whose entry names no existing Role,
  gets ``ControllerTrust.UntrustedRole``: security.md makes it the Role of
  every Controller not authorized for another one (R-SEC.6). A Controller
  holding ``BannedRole`` has that Role only (TR-181 ``BannedRole``). A
  Controller that *has* Roles, all disabled, gets nothing (not Untrusted).
* **Permissions of a Role**: every enabled ``Permission.{i}`` of an enabled
  Role. Within one Role the matching Permission with the largest ``Order``
  decides, with all four letters (TR-181 ``Permission.{i}.Order``); two
  matching entries with the same ``Order`` (impossible in valid data,
  ``Order`` being a unique key) are united. Across Roles the results are
  united (TR-181 ``Role.{i}``, security.md "A Controller's Role").
* **Targets** (comma-separated): a partial path (``Device.LocalAgent.``,
  also written without its dot, ``Device``) covers the object and everything
  below it; an object instance (``...Subscription.3.``) likewise covers the
  instance and everything below it; a parameter, command or event path
  covers that element; ``*`` and ``{i}`` match every instance (so
  ``...Subscription.{i}.`` also covers the table ``...Subscription.``);
  an expression (``[Enable==true]``, unique keys) matches the instances it
  selects in the store at the time of the check; reference following is
  resolved through the store. Unparsable targets match nothing.
* **Checked paths**: instantiated (``...Subscription.3.Enable``) or in
  supported form (``...Subscription.{i}.Enable``, GetSupportedDM): ``{i}``
  or ``*`` in the checked path stands for *every* instance, so only targets
  covering every instance (names, ``*``, ``{i}``) grant it. A table path
  (``...Subscription.``) is checked as ``...Subscription.{i}.``.
* **Secured parameters** (:meth:`RoleAccess.reads_secured`): only a
  Controller holding an enabled Role listed in ``SecuredRoles`` sees their
  values; everyone else gets an empty string (TR-181 ``SecuredRoles``,
  TP-469 2.27).

:func:`access_for` builds the ``AgentCore.access_for`` callable, caching one
:class:`RoleAccess` per Controller and dropping the cache on any store change
under ``Device.LocalAgent.ControllerTrust.`` or ``Device.LocalAgent.Controller.``
(changes made under ``store.quiet()`` or undone by a transaction rollback
raise no event: call :meth:`TrustResolver.invalidate` after those).
:func:`install_default_roles` creates the factory Roles and
:func:`assign_untrusted` records a newly seen Controller with the Untrusted
Role (TP-469 2.9).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from conformance.agent.context import AgentState, Operation, TargetKind
from conformance.agent.datamodel.resolve import ResolveError, resolve
from conformance.agent.datamodel.store import Change, Store, StoreError
from conformance.agent.faults import FaultSet, register
from conformance.usp import paths
from conformance.usp.paths import (
    Expression,
    InstanceNumber,
    Name,
    Path,
    PathError,
    PathKind,
    Placeholder,
    Wildcard,
)

__all__ = [
    "CONTROLLER_TABLE",
    "PERMISSION_KINDS",
    "ROLE_TABLE",
    "TRUST",
    "ControllerRoles",
    "DefaultRoles",
    "Permission",
    "Role",
    "RoleAccess",
    "Target",
    "TrustResolver",
    "access_for",
    "assign_untrusted",
    "can_read_secured",
    "controller_roles",
    "find_controller",
    "format_bits",
    "install_default_roles",
    "load_role",
    "parse_bits",
    "ref_value",
    "role_refs",
]

TRUST = "Device.LocalAgent.ControllerTrust."
ROLE_TABLE = TRUST + "Role."
CONTROLLER_TABLE = "Device.LocalAgent.Controller."
#: The four permission parameters of ``Permission.{i}``, i.e. the target kinds.
PERMISSION_KINDS: tuple[TargetKind, ...] = ("Param", "Obj", "InstantiatedObj", "CommandEvent")
_LETTERS = "rwxn"
_INSTANCE_SEGMENTS = (InstanceNumber, Wildcard, Expression, Placeholder)
_LEAF_KINDS = (PathKind.COMMAND, PathKind.EVENT)
_NO_BITS: frozenset[str] = frozenset()
_ALL_BITS: frozenset[str] = frozenset(_LETTERS)

register("trust.ignore_permissions", "R-SEC.1",
         "grants every Controller every permission, whatever its Roles (TP-469 2.12, 2.14, "
         "2.16, 2.18, 2.20, 2.22)")
register("trust.untrusted_full_access", "R-SEC.6",
         "gives Controllers that fall back to the UntrustedRole full access instead of its "
         "restricted permissions")
register("trust.order_ignored", "TP-469 2.21",
         "within a Role the first matching Permission (lowest instance number) wins instead of "
         "the one with the largest Order")
register("trust.roles_not_united", "R-SEC.1",
         "with several Roles only the first Role with a matching Permission counts instead of "
         "the union of all Roles (TR-181 ControllerTrust.Role.{i})")
register("trust.partial_path_not_recursive", "TP-469 2.13",
         "a partial-path or instance Target covers only that object itself, not its "
         "parameters, sub-objects and instances")
register("trust.secured_in_clear", "TP-469 2.27",
         "returns secured parameter values to Controllers without a Role in SecuredRoles")
register("trust.disabled_role_applies", "R-SEC.1",
         "applies the Permissions of Roles whose Enable is false")
register("trust.disabled_permission_applies", "R-SEC.1",
         "applies Permission entries whose Enable is false")
register("trust.admit_no_assigned_role", "TP-469 2.9 / R-SEC.6",
         "records a newly seen Controller with an empty AssignedRole instead of the "
         "UntrustedRole (the Untrusted permissions still apply, but the data model hides it)")
register("trust.roles_fixed", "TP-469 2.10",
         "never grants Obj write on ControllerTrust.Role., so no Role can be added whatever the "
         "Controller's Permissions say")
register("trust.obj_write_misread", "TP-469 2.11",
         "reads the Obj write letter from the x position of the Obj string ('rw--' grants no "
         "object creation)")
register("trust.instance_write_misread", "TP-469 2.13",
         "reads the InstantiatedObj write letter from the n position ('rw--' grants no "
         "deletion)")
register("trust.param_write_misread", "TP-469 2.15",
         "reads the Param write letter from the x position ('rw--' grants no parameter update)")
register("trust.command_execute_misread", "TP-469 2.17",
         "reads the CommandEvent execute letter from the w position ('r-x-' grants no "
         "execution)")
register("trust.param_notify_misread", "TP-469 2.19",
         "reads the Param notify letter from the x position ('rw-n' grants no value change "
         "notification)")
register("trust.param_target_covers_object", "TP-469 2.25",
         "a Target naming a parameter covers its whole object (every parameter of it), not "
         "just that parameter")
register("trust.secured_roles_ignored", "TP-469 2.27",
         "hides secured values from every Controller, also those holding a Role listed in "
         "SecuredRoles")

#: misread faults: fault -> (kind, letter, the position the letter is wrongly read from)
_MISREADS: dict[str, tuple[TargetKind, str, int]] = {
    "trust.obj_write_misread": ("Obj", "w", 2),
    "trust.instance_write_misread": ("InstantiatedObj", "w", 3),
    "trust.param_write_misread": ("Param", "w", 2),
    "trust.command_execute_misread": ("CommandEvent", "x", 1),
    "trust.param_notify_misread": ("Param", "n", 2),
}


# --- permission strings ------------------------------------------------------------------


def parse_bits(text: str) -> frozenset[str]:
    """The letters a ``rwxn`` string grants: ``"r-x-"`` -> {r, x}.

    A letter counts only in its own position (r first, w second, x third, n
    fourth); ``-``, other characters and a missing position grant nothing.
    """
    return frozenset(letter for letter, got in zip(_LETTERS, text, strict=False) if got == letter)


def format_bits(ops: Iterable[str]) -> str:
    """The ``rwxn`` string of a set of letters: {r, n} -> ``"r--n"``."""
    granted = set(ops)
    return "".join(letter if letter in granted else "-" for letter in _LETTERS)


# --- path parsing -------------------------------------------------------------------------


def _parse_target(text: str) -> Path | None:
    """A Target entry as a path, or None when it is not one (it then matches nothing)."""
    text = text.strip()
    if text == paths.ROOT_NAME:  # "Device" written without its dot
        text += "."
    try:
        return paths.parse_path(text, reference_value=True)
    except (PathError, ValueError, RecursionError):
        return None


@lru_cache(maxsize=8192)
def _parse_checked(text: str) -> Path | None:
    try:
        return paths.parse_path(text)
    except (PathError, ValueError, RecursionError):
        return None


def _is_role_table(checked: Path) -> bool:
    """Whether ``checked`` is the Role table (``...ControllerTrust.Role.`` / ``.Role.{i}.``)."""
    text = str(checked)
    return text in (ROLE_TABLE, ROLE_TABLE + "{i}.", ROLE_TABLE + "*.")


def _as_table_instance(store: Store, path: Path) -> Path:
    """``...Subscription.`` (a table) is checked as ``...Subscription.{i}.``."""
    if path.kind is not PathKind.OBJECT or not isinstance(path.segments[-1], Name):
        return path
    odef = store.object_def(str(path))
    if odef is None or not odef.multi_instance:
        return path
    if len(odef.path.split(".")) != len(path.segments) + 2:  # "A.B.{i}." vs segments (A, B)
        return path
    return Path(path.segments + (Placeholder(),), PathKind.OBJECT_INSTANCE)


# --- targets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One entry of ``Permission.{i}.Targets``."""

    text: str
    path: Path | None

    @classmethod
    def parse(cls, text: str) -> Target:
        return cls(text.strip(), _parse_target(text))

    def covers(self, store: Store, checked: Path, *, recursive: bool = True,
               param_as_object: bool = False) -> bool:
        """Whether this target grants its permissions for ``checked`` (see module doc).

        ``param_as_object`` (fault ``trust.param_target_covers_object``) widens a
        parameter target to the object that holds it."""
        if self.path is None:
            return False
        if self.path.has_reference_following:
            return self._covers_resolved(store, checked, recursive, param_as_object)
        return _covers(store, _widen(self.path, param_as_object), checked, recursive)

    def _covers_resolved(self, store: Store, checked: Path, recursive: bool,
                         param_as_object: bool) -> bool:
        text = str(self.path)
        try:
            res = resolve(store, text)
        except (ResolveError, PathError, StoreError, ValueError):
            return False
        found = res.leaves or res.objects
        for concrete in found:
            target = _parse_target(concrete)
            if target is not None and _covers(store, _widen(target, param_as_object), checked,
                                              recursive):
                return True
        return False


def _widen(target: Path, param_as_object: bool) -> Path:
    """A parameter target as its owning object (only under ``trust.param_target_covers_object``)."""
    if not param_as_object or target.kind is not PathKind.PARAMETER:
        return target
    return paths.parent(target) or target


def _covers(store: Store, target: Path, checked: Path, recursive: bool) -> bool:
    t, c = target.segments, checked.segments
    if len(t) > len(c):
        return False
    if len(t) == len(c):
        if (target.kind in _LEAF_KINDS or checked.kind in _LEAF_KINDS) \
                and target.kind is not checked.kind:
            return False
        if target.kind in (PathKind.OBJECT, PathKind.OBJECT_INSTANCE) \
                and checked.kind is PathKind.PARAMETER:
            return False
    elif target.kind in _LEAF_KINDS:
        return False
    elif not recursive and not (len(c) == len(t) + 1 and isinstance(c[-1], Placeholder)):
        return False  # (a table "A." and its object "A.{i}." are the same object)
    for i, (want, got) in enumerate(zip(t, c, strict=False)):
        if isinstance(want, (Name, InstanceNumber)):
            if want != got:
                return False
        elif isinstance(want, (Wildcard, Placeholder)):
            if not isinstance(got, _INSTANCE_SEGMENTS):
                return False
        elif isinstance(want, Expression):
            if not isinstance(got, InstanceNumber) or not _selects(store, t[: i + 1], c[: i + 1]):
                return False
        else:  # reference following is resolved before we get here
            return False
    return True


def _selects(store: Store, pattern: tuple[object, ...], concrete: tuple[object, ...]) -> bool:
    """Whether the expression ending ``pattern`` selects the instance ``concrete`` names."""
    if not all(isinstance(s, (Name, InstanceNumber)) for s in concrete):
        return False
    instance = ".".join(str(s) for s in concrete) + "."
    search = ".".join(str(s) for s in pattern) + "."
    try:
        return instance in resolve(store, search).objects
    except (ResolveError, PathError, StoreError, ValueError):
        return False


# --- roles ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Permission:
    """One ``Role.{i}.Permission.{i}`` entry, compiled."""

    path: str
    enabled: bool
    order: int
    targets: tuple[Target, ...]
    bits: Mapping[str, frozenset[str]]
    #: the raw ``rwxn`` strings by kind (what the misread faults look at)
    texts: Mapping[str, str] = field(default_factory=dict)

    def covers(self, store: Store, checked: Path, *, recursive: bool = True,
               param_as_object: bool = False) -> bool:
        return any(t.covers(store, checked, recursive=recursive, param_as_object=param_as_object)
                   for t in self.targets)


@dataclass(frozen=True)
class Role:
    """One ``ControllerTrust.Role.{i}`` entry with its Permissions (instance-number order)."""

    path: str
    name: str
    enabled: bool
    permissions: tuple[Permission, ...] = ()


def _true(value: str) -> bool:
    return value.strip().lower() in ("true", "1")


def _get(store: Store, path: str, default: str = "") -> str:
    try:
        return store.get(path)
    except StoreError:
        return default


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def load_role(store: Store, role_path: str) -> Role:
    """Read a Role instance (``...ControllerTrust.Role.2.``) and its Permissions from the store."""
    perms = []
    for perm in store.instances(role_path + "Permission."):
        try:
            order = int(_get(store, perm + "Order", "0").strip())
        except ValueError:
            order = 0
        texts: dict[str, str] = {kind: _get(store, perm + kind) for kind in PERMISSION_KINDS}
        perms.append(Permission(
            path=perm,
            enabled=_true(_get(store, perm + "Enable")),
            order=order,
            targets=tuple(Target.parse(t) for t in _split_list(_get(store, perm + "Targets"))),
            bits={kind: parse_bits(text) for kind, text in texts.items()},
            texts=texts,
        ))
    return Role(role_path, _get(store, role_path + "Name"), _true(_get(store, role_path + "Enable")),
                tuple(perms))


def role_refs(store: Store, value: str) -> list[str]:
    """Existing Role instance paths (with their dot) a list of references names, in order.

    References use instance numbers or unique keys (R-ARC.11), with or without
    the trailing dot. Anything that does not name exactly one existing Role is
    dropped: wildcards, reference following, expressions matching several rows.
    """
    out: list[str] = []
    for ref in _split_list(value):
        parsed = _parse_target(ref)
        if parsed is None or parsed.has_wildcard or parsed.has_reference_following:
            continue
        try:
            objects = resolve(store, str(parsed)).objects
        except (ResolveError, PathError, StoreError):
            continue
        if len(objects) != 1:
            continue
        obj = objects[0]
        rest = obj[len(ROLE_TABLE):] if obj.startswith(ROLE_TABLE) else ""
        if rest.endswith(".") and rest[:-1].isdigit() and obj not in out:
            out.append(obj)
    return out


def ref_value(role_path: str) -> str:
    """The reference value of a Role instance: its path without the trailing dot."""
    return role_path.removesuffix(".")


@dataclass(frozen=True)
class ControllerRoles:
    """The Roles that apply to one Controller endpoint id."""

    endpoint_id: str
    controller: str | None         # the Controller.{i} instance path, None if unknown
    roles: tuple[str, ...]         # Role instance paths, assigned first, then inherited
    untrusted: bool = False        # fell back to ControllerTrust.UntrustedRole
    banned: bool = False           # holds ControllerTrust.BannedRole


def find_controller(store: Store, endpoint_id: str) -> str | None:
    """The ``Controller.{i}`` instance whose EndpointID is ``endpoint_id``."""
    for inst in store.instances(CONTROLLER_TABLE):
        if _get(store, inst + "EndpointID") == endpoint_id:
            return inst
    return None


def controller_roles(store: Store, endpoint_id: str) -> ControllerRoles:
    """Which Roles apply to ``endpoint_id`` (see the module doc for the rules)."""
    controller = find_controller(store, endpoint_id)
    roles: list[str] = []
    if controller is not None:
        for name in ("AssignedRole", "InheritedRole"):
            for role in role_refs(store, _get(store, controller + name)):
                if role not in roles:
                    roles.append(role)
    banned = role_refs(store, _get(store, TRUST + "BannedRole"))
    if banned and banned[0] in roles:
        return ControllerRoles(endpoint_id, controller, (banned[0],), banned=True)
    if roles:
        return ControllerRoles(endpoint_id, controller, tuple(roles))
    untrusted = role_refs(store, _get(store, TRUST + "UntrustedRole"))
    return ControllerRoles(endpoint_id, controller, tuple(untrusted), untrusted=True)


# --- access -------------------------------------------------------------------------------------


class RoleAccess:
    """A Controller's effective permissions, computed from its Roles (implements ``Access``)."""

    def __init__(self, store: Store, roles: Sequence[str] | ControllerRoles, *,
                 faults: FaultSet | None = None) -> None:
        self.store = store
        self.faults = faults if faults is not None else FaultSet()
        self.who = roles if isinstance(roles, ControllerRoles) else \
            ControllerRoles("", None, tuple(roles))
        loaded = [load_role(store, path) for path in self.who.roles if store.exists(path)]
        keep_disabled = self.faults.on("trust.disabled_role_applies")
        self.roles: tuple[Role, ...] = tuple(r for r in loaded if r.enabled or keep_disabled)
        self.secured_roles = frozenset(role_refs(store, _get(store, TRUST + "SecuredRoles")))
        self._full = self.faults.on("trust.ignore_permissions") or (
            self.who.untrusted and self.faults.on("trust.untrusted_full_access"))
        # expression and reference targets depend on live values: those results are not memoized
        self._live = any(t.path is not None and (t.path.has_expression
                                                 or t.path.has_reference_following)
                         for r in self.roles for p in r.permissions for t in p.targets)
        self._memo: dict[tuple[str, str], frozenset[str]] = {}

    @classmethod
    def for_controller(cls, store: Store, endpoint_id: str, *,
                       faults: FaultSet | None = None) -> RoleAccess:
        return cls(store, controller_roles(store, endpoint_id), faults=faults)

    @property
    def untrusted(self) -> bool:
        return self.who.untrusted

    @property
    def banned(self) -> bool:
        return self.who.banned

    # --- Access ----------------------------------------------------------------------------

    def allows(self, kind: TargetKind, path: str, op: Operation) -> bool:
        """Whether ``op`` (r/w/x/n) on ``path`` is permitted for this ``kind`` of target."""
        if kind not in PERMISSION_KINDS or op not in ("r", "w", "x", "n"):
            return False
        return op in self.granted(kind, path)

    def effective(self, kind: TargetKind, path: str) -> str:
        """The effective ``rwxn`` string for ``path`` (``"----"`` when nothing matches)."""
        return format_bits(self.granted(kind, path))

    def granted(self, kind: TargetKind, path: str) -> frozenset[str]:
        """The letters granted for ``path`` as a ``kind`` target (union over the Roles)."""
        if kind not in PERMISSION_KINDS:
            return _NO_BITS
        if self._full:
            return _ALL_BITS
        checked = self._checked(path)
        if checked is None:
            return _NO_BITS
        if kind == "Obj" and self.faults.on("trust.roles_fixed") and _is_role_table(checked):
            return self._union(kind, checked) - {"w"}
        if self._live:
            return self._union(kind, checked)
        key = (kind, path)
        if key not in self._memo:
            self._memo[key] = self._union(kind, checked)
        return self._memo[key]

    def reads_secured(self, path: str | None = None) -> bool:
        """Whether secured values (TR-181 ``secured``) are returned to this Controller.

        True when one of its enabled Roles is in ``SecuredRoles``; with
        ``path``, that Role must also grant Param read on it ("and the
        appropriate permissions set", TR-181 ``SecuredRoles``).
        """
        if self.faults.on("trust.secured_in_clear"):
            return True
        if self.faults.on("trust.secured_roles_ignored"):
            return False
        checked = self._checked(path) if path is not None else None
        if path is not None and checked is None:
            return False
        for role in self.roles:
            if role.path not in self.secured_roles:
                continue
            if checked is None or "r" in (self._role_bits(role, "Param", checked) or _NO_BITS):
                return True
        return False

    # --- internals ---------------------------------------------------------------------------

    def _checked(self, path: str) -> Path | None:
        parsed = _parse_checked(path) if isinstance(path, str) else None
        if parsed is None or parsed.has_reference_following:
            return None
        return _as_table_instance(self.store, parsed)

    def _union(self, kind: TargetKind, checked: Path) -> frozenset[str]:
        granted: set[str] = set()
        for role in self.roles:
            bits = self._role_bits(role, kind, checked)
            if bits is None:
                continue
            if self.faults.on("trust.roles_not_united"):
                return frozenset(bits)
            granted |= bits
        return frozenset(granted)

    def _role_bits(self, role: Role, kind: TargetKind, checked: Path) -> frozenset[str] | None:
        """The letters one Role grants (None: no Permission of the Role matches)."""
        keep_disabled = self.faults.on("trust.disabled_permission_applies")
        recursive = not self.faults.on("trust.partial_path_not_recursive")
        widen = self.faults.on("trust.param_target_covers_object")
        matching = [p for p in role.permissions
                    if (p.enabled or keep_disabled)
                    and p.covers(self.store, checked, recursive=recursive, param_as_object=widen)]
        if not matching:
            return None
        if self.faults.on("trust.order_ignored"):
            return self._bits(matching[0], kind)
        top = max(p.order for p in matching)
        return frozenset().union(*(self._bits(p, kind) for p in matching if p.order == top))

    def _bits(self, perm: Permission, kind: TargetKind) -> frozenset[str]:
        """The letters ``perm`` grants for ``kind`` (as misread under the misread faults)."""
        bits = perm.bits[kind]
        for fault, (fault_kind, letter, position) in _MISREADS.items():
            if fault_kind != kind or not self.faults.on(fault):
                continue
            text = perm.texts.get(kind, "")
            misread = len(text) > position and text[position] != "-"
            bits = bits | {letter} if misread else bits - {letter}
        return frozenset(bits)


def can_read_secured(access: object, path: str | None = None) -> bool:
    """Whether an ``Access`` may see secured values: :meth:`RoleAccess.reads_secured`, and
    False for any Access without that notion (secured is hidden unless a SecuredRole says
    otherwise, TR-181 ``SecuredRoles``)."""
    check = getattr(access, "reads_secured", None)
    return bool(check(path)) if callable(check) else False


# --- the agent hook ------------------------------------------------------------------------------


@dataclass
class TrustResolver:
    """``AgentCore.access_for``: one cached :class:`RoleAccess` per Controller endpoint id."""

    store: Store
    faults: FaultSet = field(default_factory=FaultSet)
    _cache: dict[str, RoleAccess] = field(default_factory=dict)
    _stop: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self._stop = self.store.listen(self._on_change)

    def __call__(self, controller_id: str) -> RoleAccess:
        access = self._cache.get(controller_id)
        if access is None:
            access = RoleAccess.for_controller(self.store, controller_id, faults=self.faults)
            self._cache[controller_id] = access
        return access

    def invalidate(self) -> None:
        """Forget every cached RoleAccess (after quiet changes, rollbacks or a load)."""
        self._cache.clear()

    def close(self) -> None:
        """Stop listening to the store."""
        if self._stop is not None:
            self._stop()
            self._stop = None

    def _on_change(self, change: Change) -> None:
        if change.path.startswith((TRUST, CONTROLLER_TABLE)):
            self._cache.clear()


def access_for(state: AgentState) -> Callable[[str], RoleAccess]:
    """The per-Controller permission lookup for ``AgentCore(access_for=...)``."""
    return TrustResolver(state.store, state.faults)


# --- factory defaults and admission ---------------------------------------------------------------


class DefaultRoles(NamedTuple):
    """Role instance paths created by :func:`install_default_roles`."""

    full_access: str
    untrusted: str
    secured: str


_NONE = "----"
# (Targets, Param, Obj, InstantiatedObj, CommandEvent) by Order, per factory Role.
_FULL_ACCESS = {1: ("Device.", "rwxn", "rwxn", "rwxn", "rwxn")}
_CHALLENGE = TRUST + "Challenge."
_UNTRUSTED = {
    # identification only: read the device description ...
    1: ("Device.DeviceInfo.", "r---", "r---", "r---", _NONE),
    # ... the agent's own identity (Get needs Obj read on the owning object too) ...
    2: ("Device.LocalAgent.", _NONE, "r---", _NONE, _NONE),
    3: (",".join(f"Device.LocalAgent.{name}" for name in
                 ("EndpointID", "SoftwareVersion", "SupportedProtocols")),
        "r---", _NONE, _NONE, _NONE),
    # ... and the Challenge table, but only its Alias and Description (security.md
    # "Assigning Controller Roles": an untrusted Controller may request a challenge)
    4: (_CHALLENGE, _NONE, "r---", "r---", _NONE),
    5: (",".join((_CHALLENGE + "*.Alias", _CHALLENGE + "*.Description")),
        "r---", _NONE, _NONE, _NONE),
    6: (",".join((TRUST + "RequestChallenge()", TRUST + "ChallengeResponse()")),
        _NONE, _NONE, _NONE, "r-x-"),
}
_SECURED = {1: ("Device.", "r---", "r---", "r---", "r---")}


def _find_role(store: Store, name: str) -> str | None:
    for inst in store.instances(ROLE_TABLE):
        if _get(store, inst + "Name") == name:
            return inst
    return None


def _install_role(store: Store, name: str, alias: str,
                  perms: Mapping[int, tuple[str, str, str, str, str]]) -> str:
    existing = _find_role(store, name)
    if existing is not None:
        return existing
    role = store.add(ROLE_TABLE, {"Alias": alias, "Enable": "true", "Name": name})
    for n, (order, (targets, param, obj, inst, cmd)) in enumerate(sorted(perms.items()), 1):
        store.add(role + "Permission.", {
            "Alias": f"cpe-{n}", "Enable": "true", "Order": str(order), "Targets": targets,
            "Param": param, "Obj": obj, "InstantiatedObj": inst, "CommandEvent": cmd})
    return role


def install_default_roles(store: Store) -> DefaultRoles:
    """Create the factory Roles (idempotent by Role ``Name``) and point ``UntrustedRole`` and
    ``SecuredRoles`` at them.

    * "Full Access": ``Device.`` with ``rwxn`` for all four kinds (the security.md example);
    * "Untrusted": read DeviceInfo, the agent's EndpointID/SoftwareVersion/SupportedProtocols
      (with Obj read on ``Device.LocalAgent.`` so Get can reach them) and Challenge
      Alias/Description; execute RequestChallenge()/ChallengeResponse(); nothing else:
      no write, no notify, no other values or instances (R-SEC.6, TP-469 2.9);
    * "Secured": read-only on ``Device.``, listed in ``SecuredRoles`` so its holders see
      secured values (TP-469 2.27).
    """
    roles = DefaultRoles(
        full_access=_install_role(store, "Full Access", "cpe-full-access", _FULL_ACCESS),
        untrusted=_install_role(store, "Untrusted", "cpe-untrusted", _UNTRUSTED),
        secured=_install_role(store, "Secured", "cpe-secured", _SECURED),
    )
    store.set(TRUST + "UntrustedRole", ref_value(roles.untrusted))
    store.set(TRUST + "SecuredRoles", ref_value(roles.secured))
    return roles


def assign_untrusted(store: Store, endpoint_id: str, *, faults: FaultSet | None = None) -> str:
    """Record a Controller seen for the first time: a ``Controller.{i}`` entry whose
    ``AssignedRole`` is the ``UntrustedRole`` (security.md "Assigning Controller Roles",
    TP-469 2.9). A known Controller without any Role gets the UntrustedRole written into
    its ``AssignedRole``; one with Roles is left alone. Returns the instance path."""
    untrusted = _get(store, TRUST + "UntrustedRole")
    if faults is not None and faults.on("trust.admit_no_assigned_role"):
        untrusted = ""
    controller = find_controller(store, endpoint_id)
    if controller is None:
        return store.add(CONTROLLER_TABLE, {"EndpointID": endpoint_id, "Enable": "true",
                                            "AssignedRole": untrusted})
    has_role = any(role_refs(store, _get(store, controller + name))
                   for name in ("AssignedRole", "InheritedRole"))
    if not has_role:
        store.set(controller + "AssignedRole", untrusted)
    return controller
