"""ControllerTrust roles and permissions of the reference Agent (R-SEC.1, R-SEC.6,
TR-181 ControllerTrust.Role.{i}.Permission.{i}, TP-469 2.9-2.27)."""

from __future__ import annotations

import sys
import types
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent import permissions as P
from conformance.agent.context import FULL_ACCESS, AgentState, RequestContext
from conformance.agent.core import AgentCore
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.store import Store
from conformance.agent.faults import REGISTRY, FaultSet
from conformance.usp import errors, messages, records
from conformance.usp.schema import Msg

AGENT = "os::012345-AGENT"
CT = P.TRUST
SUB = "Device.LocalAgent.Subscription."
CTRL = P.CONTROLLER_TABLE
KINDS = P.PERMISSION_KINDS
OPS = ("r", "w", "x", "n")


@lru_cache(maxsize=1)
def _dm():
    return load_definitions()


def _store() -> Store:
    return Store(_dm())


def _role(store: Store, name: str, *perms: dict[str, str], enable: bool = True) -> str:
    """A Role with Permissions given as {Targets, Order, Param, Obj, ...} (Enable true unless set)."""
    role = store.add(P.ROLE_TABLE, {"Name": name, "Enable": "true" if enable else "false"})
    for perm in perms:
        store.add(role + "Permission.", {"Enable": "true", **perm})
    return role


def _perm(targets: str, order: int = 0, param: str = "----", obj: str = "----",
          inst: str = "----", cmd: str = "----", enable: bool = True) -> dict[str, str]:
    return {"Targets": targets, "Order": str(order), "Param": param, "Obj": obj,
            "InstantiatedObj": inst, "CommandEvent": cmd, "Enable": "true" if enable else "false"}


def _controller(store: Store, endpoint: str, *roles: str, inherited: tuple[str, ...] = ()) -> str:
    return store.add(CTRL, {"EndpointID": endpoint, "Enable": "true",
                            "AssignedRole": ",".join(P.ref_value(r) for r in roles),
                            "InheritedRole": ",".join(P.ref_value(r) for r in inherited)})


def _access(store: Store, *roles: str, faults: tuple[str, ...] = ()) -> P.RoleAccess:
    return P.RoleAccess(store, roles, faults=FaultSet(faults))


# --- permission strings ------------------------------------------------------------------


def test_parse_and_format_bits():
    assert P.parse_bits("rwxn") == {"r", "w", "x", "n"}
    assert P.parse_bits("r-x-") == {"r", "x"}
    assert P.parse_bits("----") == set()
    assert P.parse_bits("") == set()
    assert P.parse_bits("wr--") == set()          # a letter counts only in its own position
    assert P.parse_bits("r") == {"r"}
    assert P.parse_bits("RWXN") == set()
    assert P.format_bits({"n", "r"}) == "r--n"
    assert P.format_bits(()) == "----"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=8))
def test_bits_never_crash_and_round_trip(text):
    bits = P.parse_bits(text)
    assert bits <= {"r", "w", "x", "n"}
    assert P.parse_bits(P.format_bits(bits)) == bits


# --- factory roles -----------------------------------------------------------------------


def test_install_default_roles():
    store = _store()
    roles = P.install_default_roles(store)
    assert store.get(CT + "UntrustedRole") == P.ref_value(roles.untrusted)
    assert store.get(CT + "SecuredRoles") == P.ref_value(roles.secured)
    assert [store.get(r + "Name") for r in roles] == ["Full Access", "Untrusted", "Secured"]
    assert all(store.get(r + "Enable") == "true" for r in roles)
    assert P.install_default_roles(store) == roles  # idempotent: no duplicate Role Names
    assert len(store.instances(P.ROLE_TABLE)) == 3


def test_full_access_role_grants_everything():
    store = _store()
    roles = P.install_default_roles(store)
    access = _access(store, roles.full_access)
    for kind in KINDS:
        for path in ("Device.", "Device.LocalAgent.Subscription.", "Device.Reboot()",
                     "Device.LocalAgent.ControllerTrust.Role.1.Permission.1.Order",
                     "Device.LocalAgent.Subscription.{i}.Enable"):
            assert all(access.allows(kind, path, op) for op in OPS), (kind, path)
    assert not access.reads_secured()  # full access is not the secured role


def test_untrusted_role_is_restricted():  # R-SEC.6, TP-469 2.9
    store = _store()
    roles = P.install_default_roles(store)
    access = _access(store, roles.untrusted)
    assert access.effective("Param", "Device.DeviceInfo.Manufacturer") == "r---"
    assert access.effective("Obj", "Device.DeviceInfo.") == "r---"
    assert access.effective("Param", "Device.LocalAgent.EndpointID") == "r---"
    assert access.effective("Param", "Device.LocalAgent.UpTime") == "----"
    assert access.effective("Param", "Device.LocalAgent.ControllerTrust.UntrustedRole") == "----"
    assert access.effective("Obj", "Device.LocalAgent.") == "r---"  # owner of EndpointID
    assert access.effective("Obj", SUB) == "r---"  # structure only: no instances, no values
    assert access.effective("InstantiatedObj", SUB + "1.") == "----"
    assert access.effective("Param", SUB + "1.Enable") == "----"
    assert access.effective("Param", "Device.LocalAgent.Controller.1.AssignedRole") == "----"
    assert access.effective("Param", "Device.LocalAgent.ControllerTrust.Challenge.2.Alias") == "r---"
    assert access.effective("Param", "Device.LocalAgent.ControllerTrust.Challenge.2.Value") == "----"
    assert access.effective("CommandEvent",
                            "Device.LocalAgent.ControllerTrust.RequestChallenge()") == "r-x-"
    assert access.effective("CommandEvent", "Device.Reboot()") == "----"
    for kind in KINDS:  # never write or notify anywhere
        for path in ("Device.", "Device.DeviceInfo.", "Device.DeviceInfo.Manufacturer",
                     "Device.LocalAgent.ControllerTrust.Challenge.1."):
            assert not access.allows(kind, path, "w") and not access.allows(kind, path, "n")


def test_secured_role_reads_secured():  # TR-181 SecuredRoles
    store = _store()
    roles = P.install_default_roles(store)
    access = _access(store, roles.secured)
    assert access.reads_secured()
    assert access.reads_secured("Device.LocalAgent.ControllerTrust.Challenge.1.Value")
    assert access.effective("Param", "Device.MQTT.Client.1.Password") == "r---"
    assert not access.allows("Param", "Device.MQTT.Client.1.Password", "w")


# --- target forms --------------------------------------------------------------------------


@pytest.mark.parametrize("target, path, kind, expected", [
    # partial path: the object and everything below it
    ("Device.LocalAgent.", "Device.LocalAgent.", "Obj", True),
    ("Device.LocalAgent.", "Device.LocalAgent.EndpointID", "Param", True),
    ("Device.LocalAgent.", "Device.LocalAgent.Subscription.3.", "InstantiatedObj", True),
    ("Device.LocalAgent.", "Device.LocalAgent.Controller.1.SendOnBoardRequest()",
     "CommandEvent", True),
    ("Device.LocalAgent.", "Device.DeviceInfo.Manufacturer", "Param", False),
    ("Device.", "Device.Boot!", "CommandEvent", True),
    # written without the dot (security.md examples "Device", "Device.LocalAgent.ControllerTrust")
    ("Device", "Device.DeviceInfo.Manufacturer", "Param", True),
    ("Device.LocalAgent.ControllerTrust", "Device.LocalAgent.ControllerTrust.Role.1.Name",
     "Param", True),
    ("Device.LocalAgent.ControllerTrust", "Device.LocalAgent.Controller.1.Alias", "Param", False),
    # table (partial path) covers the table itself, its instances and their parameters
    (SUB, SUB, "Obj", True),
    (SUB, SUB + "{i}.", "Obj", True),
    (SUB, SUB + "4.", "InstantiatedObj", True),
    (SUB, SUB + "4.Enable", "Param", True),
    # object instance: that instance and what is below it, not its siblings nor the table
    (SUB + "2.", SUB + "2.Enable", "Param", True),
    (SUB + "2.", SUB + "2.", "InstantiatedObj", True),
    ("Device.LocalAgent.Controller.1.", "Device.LocalAgent.Controller.1.BootParameter.1.Enable",
     "Param", True),
    (SUB + "2.", SUB + "3.Enable", "Param", False),
    (SUB + "2.", SUB + "20.Enable", "Param", False),
    (SUB + "2.", SUB, "Obj", False),
    (SUB + "2.", SUB + "{i}.Enable", "Param", False),  # supported form means every instance
    ("Device.LocalAgent.Controller.1", "Device.LocalAgent.Controller.1.Alias", "Param", True),
    # parameter, command and event targets cover exactly that element
    (SUB + "2.Enable", SUB + "2.Enable", "Param", True),
    (SUB + "2.Enable", SUB + "2.ID", "Param", False),
    (SUB + "2.Enable", SUB + "2.", "InstantiatedObj", False),
    ("Device.Reboot()", "Device.Reboot()", "CommandEvent", True),
    ("Device.Reboot()", "Device.FactoryReset()", "CommandEvent", False),
    ("Device.Boot!", "Device.Boot!", "CommandEvent", True),
    ("Device.Boot!", "Device.Reboot()", "CommandEvent", False),
    # wildcards and the supported form {i} match every instance
    (SUB + "*.Enable", SUB + "7.Enable", "Param", True),
    (SUB + "*.Enable", SUB + "{i}.Enable", "Param", True),
    (SUB + "*.Enable", SUB + "7.ID", "Param", False),
    (SUB + "{i}.Enable", SUB + "7.Enable", "Param", True),
    (SUB + "{i}.", SUB, "Obj", True),
    (SUB + "{i}.", SUB + "{i}.", "Obj", True),
    ("Device.LocalAgent.Controller.*.BootParameter.", "Device.LocalAgent.Controller.2.BootParameter.",
     "Obj", True),
    # unparsable targets match nothing
    ("Device.LocalAgent.[", "Device.LocalAgent.EndpointID", "Param", False),
    ("[]", "Device.LocalAgent.EndpointID", "Param", False),
    ("NotDevice.", "Device.LocalAgent.EndpointID", "Param", False),
    ("", "Device.LocalAgent.EndpointID", "Param", False),
])
def test_target_forms(target, path, kind, expected):
    store = _store()
    role = _role(store, "T", _perm(target, param="rwxn", obj="rwxn", inst="rwxn", cmd="rwxn"))
    assert _access(store, role).allows(kind, path, "r") is expected


def test_several_targets_in_one_permission():
    store = _store()
    role = _role(store, "T", _perm(" Device.DeviceInfo.Manufacturer , Device.Reboot() ",
                                   param="r---", cmd="--x-"))
    access = _access(store, role)
    assert access.allows("Param", "Device.DeviceInfo.Manufacturer", "r")
    assert access.allows("CommandEvent", "Device.Reboot()", "x")
    assert not access.allows("Param", "Device.DeviceInfo.ModelName", "r")


def test_kinds_are_independent():  # each kind has its own rwxn string
    store = _store()
    role = _role(store, "T", _perm("Device.", param="r---", obj="-w--", inst="--x-", cmd="---n"))
    access = _access(store, role)
    assert [access.effective(k, "Device.LocalAgent.") for k in KINDS] == \
        ["r---", "-w--", "--x-", "---n"]
    assert not access.allows("Param", "Device.LocalAgent.EndpointID", "w")
    assert access.allows("Obj", SUB, "w")


def test_search_expression_target_follows_live_values():
    store = _store()
    s1 = store.add(SUB, {"Enable": "true", "ID": "a"})
    s2 = store.add(SUB, {"Enable": "false", "ID": "b"})
    role = _role(store, "T", _perm(SUB + "[Enable==true].", param="rw--", inst="r---"))
    access = _access(store, role)
    assert access.allows("Param", s1 + "ID", "w")
    assert not access.allows("Param", s2 + "ID", "w")
    assert not access.allows("Param", SUB + "{i}.ID", "r")  # a subset never covers every instance
    store.set(s2 + "Enable", "true")  # evaluated at check time
    assert access.allows("Param", s2 + "ID", "w")
    store.set(s1 + "Enable", "false")
    assert not access.allows("Param", s1 + "ID", "w")


def test_expression_targets_across_tables():
    store = _store()
    ctrl = _controller(store, "proto::c")
    on = store.add(ctrl + "BootParameter.", {"Enable": "true"})
    off = store.add(ctrl + "BootParameter.", {"Enable": "false"})
    role = _role(store, "T", _perm(CTRL + "*.BootParameter.[Enable==true].", param="r---"),
                 # the path grammar forbids {i} together with a search: matches nothing
                 _perm(CTRL + "{i}.BootParameter.[Enable==false].", 1, param="rw--"))
    access = _access(store, role)
    assert access.allows("Param", on + "ParameterName", "r")
    assert not access.allows("Param", off + "ParameterName", "r")


def test_unique_key_and_reference_following_targets():
    store = _store()
    s1 = store.add(SUB, {"ID": "mine"})
    store.add(SUB, {"ID": "other"})
    role = _role(store, "T", _perm(SUB + '[ID=="mine"].', param="r---"))
    access = _access(store, role)
    assert access.allows("Param", s1 + "Enable", "r")
    assert not access.allows("Param", SUB + "2.Enable", "r")
    # Controller.1.AssignedRole+ follows the reference to the Role it names
    ref_role = _role(store, "Ref", _perm("Device.LocalAgent.Controller.1.AssignedRole+.", param="r---"))
    _controller(store, "proto::c", role)
    access = _access(store, ref_role)
    assert access.allows("Param", role + "Name", "r")
    assert not access.allows("Param", ref_role + "Name", "r")
    assert not access.allows("Param", P.ROLE_TABLE + "{i}.Name", "r")  # only the one it names


@pytest.mark.parametrize("path", ["", "Device", "Device.LocalAgent.[", "Foo.", "Device..",
                                  "Device.LocalAgent.Controller.1.AssignedRole+.Name"])
def test_malformed_checked_paths_are_denied(path):
    store = _store()
    role = _role(store, "T", _perm("Device.", param="rwxn", obj="rwxn", inst="rwxn", cmd="rwxn"))
    assert not _access(store, role).allows("Param", path, "r")


def test_unknown_kind_or_op_is_denied():
    store = _store()
    role = _role(store, "T", _perm("Device.", param="rwxn"))
    access = _access(store, role)
    assert not access.allows("Parameter", "Device.LocalAgent.EndpointID", "r")  # type: ignore[arg-type]
    assert not access.allows("Param", "Device.LocalAgent.EndpointID", "")  # type: ignore[arg-type]
    assert not access.allows("Param", "Device.LocalAgent.EndpointID", "rw")  # type: ignore[arg-type]
    assert access.effective("Nope", "Device.") == "----"  # type: ignore[arg-type]


# --- Order and several roles ---------------------------------------------------------------


def test_larger_order_wins_within_a_role():  # security.md example, TR-181 Permission.{i}.Order
    store = _store()
    role = _role(store, "R",
                 _perm("Device", 1, "rwxn", "rwxn", "rwxn", "rwxn"),
                 _perm("Device.LocalAgent.ControllerTrust", 2, "----", "----", "----", "----"))
    access = _access(store, role)
    assert access.effective("Param", "Device.LocalAgent.EndpointID") == "rwxn"
    assert access.effective("Param", "Device.LocalAgent.ControllerTrust.UntrustedRole") == "----"
    assert access.effective("Obj", "Device.LocalAgent.ControllerTrust.Role.") == "----"
    # the winner's four letters replace the loser's, even where it grants nothing
    store.set(role + "Permission.2.Order", "0")
    access = _access(store, role)
    assert access.effective("Param", "Device.LocalAgent.ControllerTrust.UntrustedRole") == "rwxn"


def test_order_with_a_wildcard_parameter_target():  # security.md: hide every Permission Order
    store = _store()
    role = _role(store, "R",
                 _perm("Device", 1, "rwxn", "rwxn", "rwxn", "rwxn"),
                 _perm("Device.LocalAgent.ControllerTrust.Role.*.Permission.*.Order", 2,
                       "----", "rwxn", "rwxn", "rwxn"))
    access = _access(store, role)
    assert not access.allows("Param", role + "Permission.1.Order", "w")
    assert not access.allows("Param", "Device.LocalAgent.ControllerTrust.Role.{i}.Permission.{i}.Order",
                             "r")
    assert access.allows("Param", role + "Permission.1.Targets", "w")
    assert access.allows("Obj", role + "Permission.", "w")


def test_equal_orders_are_united():
    store = _store()
    role = _role(store, "R", _perm("Device.", 5, param="r---"))
    store.add(role + "Permission.", _perm("Device.LocalAgent.", 5, param="---n"))
    access = _access(store, role)
    assert access.effective("Param", "Device.LocalAgent.EndpointID") == "r--n"
    assert access.effective("Param", "Device.DeviceInfo.Manufacturer") == "r---"


def test_roles_are_united_after_order():  # security.md "A Controller's Role" example
    store = _store()
    a = _role(store, "A", _perm("Device.LocalAgent", 3, param="r---"),
              _perm("Device.LocalAgent.Controller", 55, param="r-xn"))
    b = _role(store, "B", _perm("Device.LocalAgent", 20, param="r---"),
              _perm("Device.LocalAgent.Controller", 78, param="----"))
    _controller(store, "proto::c", a, b)
    access = P.RoleAccess.for_controller(store, "proto::c")
    assert access.effective("Param", "Device.LocalAgent.Controller.1.Alias") == "r-xn"
    assert access.effective("Param", "Device.LocalAgent.EndpointID") == "r---"
    # same targets, r--- in one role and ---n in the other: r--n
    c = _role(store, "C", _perm("Device.DeviceInfo.", param="r---"))
    d = _role(store, "D", _perm("Device.DeviceInfo.", param="---n"))
    assert _access(store, c, d).effective("Param", "Device.DeviceInfo.Manufacturer") == "r--n"


def test_no_matching_permission_denies():
    store = _store()
    role = _role(store, "R", _perm("Device.DeviceInfo.", param="rwxn"))
    access = _access(store, role)
    assert access.effective("Param", "Device.LocalAgent.EndpointID") == "----"
    assert _access(store).effective("Param", "Device.DeviceInfo.Manufacturer") == "----"


# --- enable flags ------------------------------------------------------------------------------


def test_disabled_roles_and_permissions_are_ignored():
    store = _store()
    off_role = _role(store, "Off", _perm("Device.", param="rwxn"), enable=False)
    on_role = _role(store, "On", _perm("Device.", 1, param="r---"),
                    _perm("Device.LocalAgent.", 2, param="----", enable=False))
    assert _access(store, off_role).effective("Param", "Device.LocalAgent.EndpointID") == "----"
    access = _access(store, on_role, off_role)
    assert access.effective("Param", "Device.LocalAgent.EndpointID") == "r---"  # Permission.2 off
    assert [r.path for r in access.roles] == [on_role]


def test_role_enable_default_is_false():  # TR-181 Role.{i}.Enable default false
    store = _store()
    role = store.add(P.ROLE_TABLE, {"Name": "Fresh"})
    store.add(role + "Permission.", {"Enable": "true", "Targets": "Device.", "Param": "rwxn"})
    assert not _access(store, role).allows("Param", "Device.LocalAgent.EndpointID", "r")
    store.set(role + "Enable", "1")
    assert _access(store, role).allows("Param", "Device.LocalAgent.EndpointID", "r")


def test_permission_defaults_grant_nothing():  # Param/Obj/... default "----", Targets "[]"
    store = _store()
    role = store.add(P.ROLE_TABLE, {"Name": "Defaults", "Enable": "true"})
    perm = store.add(role + "Permission.", {"Enable": "true"})
    access = _access(store, role)
    assert all(access.effective(k, "Device.") == "----" for k in KINDS)
    store.set(perm + "Targets", "Device.")
    store.set(perm + "Order", "not a number")  # read as 0, no crash
    assert _access(store, role).effective("Param", "Device.X") == "----"


# --- which roles a controller has ------------------------------------------------------------


def test_assigned_and_inherited_roles_are_united():  # R-SEC.1a
    store = _store()
    a = _role(store, "A", _perm("Device.DeviceInfo.", param="r---"))
    b = _role(store, "B", _perm("Device.LocalAgent.", param="r---"))
    ctrl = _controller(store, "proto::c", a, inherited=(b, a))
    who = P.controller_roles(store, "proto::c")
    assert who == P.ControllerRoles("proto::c", ctrl, (a, b))
    access = P.RoleAccess.for_controller(store, "proto::c")
    assert access.allows("Param", "Device.DeviceInfo.Manufacturer", "r")
    assert access.allows("Param", "Device.LocalAgent.EndpointID", "r")
    assert not access.untrusted and not access.banned


def test_unknown_controller_gets_the_untrusted_role():  # R-SEC.6, TP-469 2.9
    store = _store()
    roles = P.install_default_roles(store)
    who = P.controller_roles(store, "proto::stranger")
    assert who.controller is None and who.untrusted and who.roles == (roles.untrusted,)
    access = P.RoleAccess.for_controller(store, "proto::stranger")
    assert access.untrusted
    assert access.allows("Param", "Device.DeviceInfo.Manufacturer", "r")
    assert not access.allows("Obj", SUB, "w")


def test_known_controller_without_a_role_gets_the_untrusted_role():  # security.md
    store = _store()
    roles = P.install_default_roles(store)
    ctrl = _controller(store, "proto::c")
    assert P.controller_roles(store, "proto::c") == \
        P.ControllerRoles("proto::c", ctrl, (roles.untrusted,), untrusted=True)
    # references to Roles that do not exist are no Roles either
    store.set(ctrl + "AssignedRole", "Device.LocalAgent.ControllerTrust.Role.99,Device.DeviceInfo")
    assert P.controller_roles(store, "proto::c").untrusted


def test_controller_with_only_disabled_roles_gets_nothing():
    store = _store()
    P.install_default_roles(store)
    off = _role(store, "Off", _perm("Device.", param="rwxn"), enable=False)
    _controller(store, "proto::c", off)
    access = P.RoleAccess.for_controller(store, "proto::c")
    assert not access.untrusted
    assert not access.allows("Param", "Device.DeviceInfo.Manufacturer", "r")


def test_without_untrusted_role_unknown_controllers_get_nothing():
    store = _store()
    _role(store, "Full", _perm("Device.", param="rwxn"))
    access = P.RoleAccess.for_controller(store, "proto::stranger")
    assert access.untrusted and access.roles == ()
    assert not access.allows("Param", "Device.DeviceInfo.Manufacturer", "r")


def test_banned_role_is_the_only_role():  # TR-181 ControllerTrust.BannedRole
    store = _store()
    roles = P.install_default_roles(store)
    banned = _role(store, "Banned")
    store.set(CT + "BannedRole", P.ref_value(banned))
    _controller(store, "proto::c", roles.full_access, banned)
    access = P.RoleAccess.for_controller(store, "proto::c")
    assert access.banned and [r.path for r in access.roles] == [banned]
    assert not access.allows("Param", "Device.DeviceInfo.Manufacturer", "r")


def test_role_references_forms():  # R-ARC.11 key-based references
    store = _store()
    a = _role(store, "A")
    b = _role(store, "B")
    assert P.role_refs(store, f"{a}, {P.ref_value(b)}") == [a, b]
    assert P.role_refs(store, 'Device.LocalAgent.ControllerTrust.Role.[Name=="B"]') == [b]
    assert P.role_refs(store, "Device.LocalAgent.ControllerTrust.Role.*") == []  # not one row
    assert P.role_refs(store, "Device.LocalAgent.ControllerTrust.Role.[Enable==true]") == []
    assert P.role_refs(store, "Device.LocalAgent.Controller.1,Device.LocalAgent.,junk,,") == []
    assert P.role_refs(store, f"{P.ref_value(a)},{a}") == [a]


# --- TP-469 section 2 scenarios --------------------------------------------------------------


def _tester(store: Store) -> tuple[str, str]:
    """A writable test Role that lets the tester manage ControllerTrust (TP-469 2.11 setup)."""
    role = _role(store, "Tester", _perm(CT, 100, "rwxn", "rwxn", "rwxn", "rwxn"))
    return role, _controller(store, "proto::tester", role)


def test_tp469_2_11_and_2_12_object_creation():
    store = _store()
    role, _ = _tester(store)
    perm = store.add(role + "Permission.", _perm(SUB, 0, "rwxn", "rw--", "rwxn", "rwxn"))
    assert P.RoleAccess.for_controller(store, "proto::tester").allows("Obj", SUB, "w")
    store.set(perm + "Obj", "r---")
    assert not P.RoleAccess.for_controller(store, "proto::tester").allows("Obj", SUB, "w")


def test_tp469_2_13_and_2_14_object_deletion():
    store = _store()
    role, _ = _tester(store)
    inst = store.add(SUB)
    perm = store.add(role + "Permission.", _perm(SUB, 0, "rwxn", "rwxn", "rw--", "rwxn"))
    assert P.RoleAccess.for_controller(store, "proto::tester").allows("InstantiatedObj", inst, "w")
    store.set(perm + "InstantiatedObj", "r---")
    assert not P.RoleAccess.for_controller(store, "proto::tester").allows("InstantiatedObj", inst, "w")


def test_tp469_2_15_and_2_16_parameter_update():
    store = _store()
    role, _ = _tester(store)
    inst = store.add(SUB)
    perm = store.add(role + "Permission.", _perm(inst, 0, "rw--", "rwxn", "rwxn", "rwxn"))
    assert P.RoleAccess.for_controller(store, "proto::tester").allows("Param", inst + "Enable", "w")
    store.set(perm + "Param", "r---")
    access = P.RoleAccess.for_controller(store, "proto::tester")
    assert not access.allows("Param", inst + "Enable", "w")
    assert access.allows("Param", inst + "Enable", "r")


def test_tp469_2_17_and_2_18_operation():
    store = _store()
    role, _ = _tester(store)
    perm = store.add(role + "Permission.", _perm("Device.Reboot()", 0, "rwxn", "rwxn", "rwxn", "r-x-"))
    assert P.RoleAccess.for_controller(store, "proto::tester").allows("CommandEvent", "Device.Reboot()", "x")
    store.set(perm + "CommandEvent", "r---")
    assert not P.RoleAccess.for_controller(store, "proto::tester").allows(
        "CommandEvent", "Device.Reboot()", "x")


def test_tp469_2_19_and_2_20_value_change_notification():
    store = _store()
    role, ctrl = _tester(store)
    target = ctrl + "PeriodicNotifInterval"
    perm = store.add(role + "Permission.", _perm(target, 0, "rw-n", "rwxn", "rwxn", "rwxn"))
    assert P.RoleAccess.for_controller(store, "proto::tester").allows("Param", target, "n")
    store.set(perm + "Param", "rw--")
    access = P.RoleAccess.for_controller(store, "proto::tester")
    assert not access.allows("Param", target, "n") and access.allows("Param", target, "w")


def test_tp469_2_21_overlapping_permissions():
    store = _store()
    role, ctrl = _tester(store)
    boot = store.add(ctrl + "BootParameter.", {"ParameterName": "Device.LocalAgent.EndpointID"})
    store.add(role + "Permission.", _perm(boot, 1, "----", "rwxn", "rwxn", "rwxn"))
    store.add(role + "Permission.", _perm(boot, 2, "rw--", "rwxn", "rwxn", "rwxn"))
    assert P.RoleAccess.for_controller(store, "proto::tester").allows("Param", boot + "Enable", "r")
    store.add(role + "Permission.", _perm(boot, 3, "----", "rwxn", "rwxn", "rwxn"))
    assert not P.RoleAccess.for_controller(store, "proto::tester").allows("Param", boot + "Enable", "r")


def test_tp469_2_22_unreadable_parameter_in_instance():
    store = _store()
    role, ctrl = _tester(store)
    boot = store.add(ctrl + "BootParameter.", {"ParameterName": "Device.LocalAgent.EndpointID"})
    store.add(role + "Permission.", _perm(boot, 1, "rw--", "rwxn", "rwxn", "rwxn"))
    store.add(role + "Permission.", _perm(boot + "ParameterName", 2, "----", "rwxn", "rwxn", "rwxn"))
    access = P.RoleAccess.for_controller(store, "proto::tester")
    assert access.allows("Param", boot + "Enable", "r")
    assert access.allows("Param", boot + "Alias", "r")
    assert not access.allows("Param", boot + "ParameterName", "r")


def test_tp469_2_23_per_controller_targets():
    store = _store()
    role, ctrl = _tester(store)
    other = _controller(store, "proto::second")
    store.add(role + "Permission.", _perm(ctrl + "BootParameter.", 1, "rw--", "rwxn", "rwxn", "rwxn"))
    store.add(role + "Permission.", _perm(other + "BootParameter.", 2, "r---", "rwxn", "rwxn", "rwxn"))
    access = P.RoleAccess.for_controller(store, "proto::tester")
    assert access.allows("Obj", ctrl + "BootParameter.", "w")
    assert access.allows("Param", ctrl + "BootParameter.{i}.Enable", "w")
    assert access.allows("Param", ctrl + "BootParameter.5.Enable", "w")
    assert not access.allows("Param", other + "BootParameter.5.Enable", "w")


def test_tp469_2_25_wildcard_parameter_target():
    store = _store()
    role, _ = _tester(store)
    store.add(role + "Permission.", _perm(SUB, 0, "rwxn", "rwxn", "rwxn", "rwxn"))
    store.add(role + "Permission.", _perm(SUB + "*.Enable", 1, "r---", "rwxn", "rwxn", "rwxn"))
    access = P.RoleAccess.for_controller(store, "proto::tester")
    assert access.allows("Obj", SUB, "w")
    assert access.allows("Param", SUB + "{i}.ReferenceList", "w")
    assert not access.allows("Param", SUB + "{i}.Enable", "w")  # before the instance exists
    inst = store.add(SUB)
    assert not access.allows("Param", inst + "Enable", "w")
    assert access.allows("Param", inst + "Enable", "r")


def test_tp469_2_27_secured_roles():
    store = _store()
    roles = P.install_default_roles(store)
    reader = _role(store, "Reader", _perm("Device.LocalAgent.ControllerTrust.Challenge.", param="r---"))
    _controller(store, "proto::second", reader)
    value = "Device.LocalAgent.ControllerTrust.Challenge.1.Value"
    access = P.RoleAccess.for_controller(store, "proto::second")
    assert access.allows("Param", value, "r") and not access.reads_secured(value)
    store.set(CT + "SecuredRoles", f"{P.ref_value(roles.secured)},{P.ref_value(reader)}")
    access = P.RoleAccess.for_controller(store, "proto::second")
    assert access.reads_secured() and access.reads_secured(value)
    # a secured Role without read permission on that parameter does not reveal it
    assert not access.reads_secured("Device.MQTT.Client.1.Password")
    assert not access.reads_secured("Device.[")
    # a disabled secured Role does not count
    store.set(reader + "Enable", "false")
    assert not P.RoleAccess.for_controller(store, "proto::second").reads_secured()


def test_can_read_secured_helper():
    store = _store()
    roles = P.install_default_roles(store)
    assert P.can_read_secured(_access(store, roles.secured))
    assert not P.can_read_secured(_access(store, roles.full_access))
    assert not P.can_read_secured(FULL_ACCESS)  # no SecuredRoles notion: secured stays hidden


def test_assign_untrusted_records_the_controller():  # TP-469 2.9 metric
    store = _store()
    P.install_default_roles(store)
    ctrl = P.assign_untrusted(store, "proto::new")
    assert store.get(ctrl + "EndpointID") == "proto::new"
    assert store.get(ctrl + "AssignedRole") == store.get(CT + "UntrustedRole")
    assert P.assign_untrusted(store, "proto::new") == ctrl
    assert len(store.instances(CTRL)) == 1
    known = _controller(store, "proto::known")  # known, no role: UntrustedRole written
    assert P.assign_untrusted(store, "proto::known") == known
    assert store.get(known + "AssignedRole") == store.get(CT + "UntrustedRole")
    full = _role(store, "Mine", _perm("Device.", param="rwxn"))
    trusted = _controller(store, "proto::trusted", full)
    P.assign_untrusted(store, "proto::trusted")
    assert store.get(trusted + "AssignedRole") == P.ref_value(full)


# --- the agent hook: caching and invalidation -----------------------------------------------------


def _state(*faults: str, store: Store | None = None) -> AgentState:
    return AgentState(AGENT, _dm(), store or _store(), faults=FaultSet(faults))


def test_access_for_caches_and_invalidates():
    state = _state()
    roles = P.install_default_roles(state.store)
    ctrl = _controller(state.store, "proto::c", roles.untrusted)
    lookup = P.access_for(state)
    first = lookup("proto::c")
    assert lookup("proto::c") is first
    assert not first.allows("Obj", SUB, "w")
    state.store.add(SUB)  # unrelated change: cache kept
    assert lookup("proto::c") is first
    state.store.set(ctrl + "AssignedRole", P.ref_value(roles.full_access))  # Controller change
    second = lookup("proto::c")
    assert second is not first and second.allows("Obj", SUB, "w")
    state.store.add(roles.full_access + "Permission.",
                    _perm(SUB, 9, "----", "r---", "----", "----"))  # ControllerTrust change
    third = lookup("proto::c")
    assert third is not second and not third.allows("Obj", SUB, "w")
    state.store.set(CT + "BannedRole", "")  # same value: no event, cache kept
    assert lookup("proto::c") is third
    state.store.delete(roles.full_access + "Permission.2.")
    assert lookup("proto::c").allows("Obj", SUB, "w")


def test_access_for_invalidate_and_close():
    state = _state()
    roles = P.install_default_roles(state.store)
    lookup = P.access_for(state)
    assert isinstance(lookup, P.TrustResolver)
    first = lookup("proto::c")
    with state.store.quiet():
        _controller(state.store, "proto::c", roles.full_access)
    assert lookup("proto::c") is first  # quiet changes raise no event
    lookup.invalidate()
    assert lookup("proto::c").allows("Obj", SUB, "w")
    lookup.close()
    lookup.close()  # idempotent
    cached = lookup("proto::c")
    state.store.set(CT + "UntrustedRole", "")
    assert lookup("proto::c") is cached  # no longer listening


def _probe_get(state: AgentState, ctx: RequestContext) -> Msg:
    """A stand-in Get handler: answers only readable parameters, 7006 otherwise."""
    path = ctx.msg.body.request.get.param_paths[0]
    if not ctx.access.allows("Param", path, "r"):
        return messages.error(errors.PERMISSION_DENIED, "no read", msg_id=ctx.msg_id)
    obj, _, name = path.rpartition(".")
    return messages.response("get_resp", {"req_path_results": [{
        "requested_path": path,
        "resolved_path_results": [{"resolved_path": obj + ".",
                                   "result_params": {name: state.store.get(path)}}]}]},
        msg_id=ctx.msg_id)


def test_core_end_to_end(monkeypatch):  # R-SEC.1 through AgentCore.access_for
    module = types.ModuleType("_permissions_probe")
    module.handle_get = _probe_get  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "_permissions_probe", module)
    state = _state()
    roles = P.install_default_roles(state.store)
    _controller(state.store, "proto::full", roles.full_access)
    core = AgentCore(state, access_for=P.access_for(state),
                     handlers={"get": "_permissions_probe:handle_get"})

    def get(frm: str, path: str) -> Msg:
        msg = messages.request("get", {"param_paths": [path]}, msg_id="m1")
        rec = records.no_session_record(msg, to_id=AGENT, from_id=frm, version="1.4")
        (out,) = core.handle_record(records.serialize(rec), now=0.0)
        return records.unwrap_msg(out)

    assert get("proto::full", "Device.LocalAgent.UpTime").body.WhichOneof("msg_body") == "response"
    denied = get("proto::stranger", "Device.LocalAgent.UpTime")  # untrusted: not readable
    assert denied.body.error.err_code == errors.PERMISSION_DENIED
    ok = get("proto::stranger", "Device.DeviceInfo.Manufacturer")
    assert ok.body.WhichOneof("msg_body") == "response"


# --- faults ------------------------------------------------------------------------------------------


def test_faults_are_registered():
    for name in ("trust.ignore_permissions", "trust.untrusted_full_access", "trust.order_ignored",
                 "trust.roles_not_united", "trust.partial_path_not_recursive",
                 "trust.secured_in_clear", "trust.disabled_role_applies",
                 "trust.disabled_permission_applies"):
        assert REGISTRY[name].requirement


def test_fault_ignore_permissions():
    store = _store()
    role = _role(store, "R", _perm("Device.DeviceInfo.", param="r---"))
    assert not _access(store, role).allows("Param", "Device.LocalAgent.EndpointID", "w")
    faulty = _access(store, role, faults=("trust.ignore_permissions",))
    assert faulty.allows("Param", "Device.LocalAgent.EndpointID", "w")
    assert faulty.effective("Obj", SUB) == "rwxn"
    assert not faulty.reads_secured()


def test_fault_untrusted_full_access():
    store = _store()
    roles = P.install_default_roles(store)
    _controller(store, "proto::c", roles.untrusted)  # explicitly assigned: not a fallback
    for faults in ((), ("trust.untrusted_full_access",)):
        access = P.RoleAccess.for_controller(store, "proto::c", faults=FaultSet(faults))
        assert not access.allows("Obj", SUB, "w")
    assert not P.RoleAccess.for_controller(store, "proto::stranger").allows("Obj", SUB, "w")
    faulty = P.RoleAccess.for_controller(store, "proto::stranger",
                                         faults=FaultSet(["trust.untrusted_full_access"]))
    assert faulty.allows("Obj", SUB, "w")


def test_fault_order_ignored():  # TP-469 2.21
    store = _store()
    role = _role(store, "R", _perm("Device.", 1, param="rwxn"),
                 _perm("Device.LocalAgent.", 2, param="----"))
    path = "Device.LocalAgent.EndpointID"
    assert not _access(store, role).allows("Param", path, "r")
    assert _access(store, role, faults=("trust.order_ignored",)).allows("Param", path, "r")


def test_fault_roles_not_united():
    store = _store()
    a = _role(store, "A", _perm("Device.", param="r---"))
    b = _role(store, "B", _perm("Device.", param="-w--"))
    path = "Device.LocalAgent.EndpointID"
    assert _access(store, a, b).effective("Param", path) == "rw--"
    assert _access(store, a, b, faults=("trust.roles_not_united",)).effective("Param", path) == "r---"


def test_fault_partial_path_not_recursive():  # TP-469 2.13
    store = _store()
    role = _role(store, "R", _perm(SUB, inst="rw--", obj="rw--"))
    inst = store.add(SUB)
    assert _access(store, role).allows("InstantiatedObj", inst, "w")
    faulty = _access(store, role, faults=("trust.partial_path_not_recursive",))
    assert not faulty.allows("InstantiatedObj", inst, "w")
    assert faulty.allows("Obj", SUB, "w")  # the object itself is still covered


def test_fault_secured_in_clear():  # TP-469 2.27
    store = _store()
    roles = P.install_default_roles(store)
    value = "Device.LocalAgent.ControllerTrust.Challenge.1.Value"
    assert not _access(store, roles.full_access).reads_secured(value)
    assert _access(store, roles.full_access, faults=("trust.secured_in_clear",)).reads_secured(value)


def test_fault_disabled_role_applies():
    store = _store()
    off = _role(store, "Off", _perm("Device.", param="rwxn"), enable=False)
    path = "Device.LocalAgent.EndpointID"
    assert not _access(store, off).allows("Param", path, "r")
    assert _access(store, off, faults=("trust.disabled_role_applies",)).allows("Param", path, "r")


def test_fault_disabled_permission_applies():
    store = _store()
    role = _role(store, "R", _perm("Device.", param="rwxn", enable=False))
    path = "Device.LocalAgent.EndpointID"
    assert not _access(store, role).allows("Param", path, "r")
    assert _access(store, role, faults=("trust.disabled_permission_applies",)).allows("Param", path, "r")


def test_new_faults_are_registered():  # TP-469 2.9-2.27 kill faults
    for name in ("trust.admit_no_assigned_role", "trust.roles_fixed",
                 "trust.obj_write_misread", "trust.instance_write_misread",
                 "trust.param_write_misread", "trust.command_execute_misread",
                 "trust.param_notify_misread", "trust.param_target_covers_object",
                 "trust.secured_roles_ignored"):
        assert REGISTRY[name].requirement.startswith("TP-469 2.")


def test_fault_admit_no_assigned_role():  # TP-469 2.9
    store = _store()
    P.install_default_roles(store)
    faults = FaultSet(["trust.admit_no_assigned_role"])
    ctrl = P.assign_untrusted(store, "proto::new", faults=faults)
    assert store.get(ctrl + "AssignedRole") == ""
    assert P.controller_roles(store, "proto::new").untrusted  # still treated as untrusted
    clean = P.assign_untrusted(store, "proto::other", faults=FaultSet())
    assert store.get(clean + "AssignedRole") == store.get(CT + "UntrustedRole")


def test_fault_roles_fixed():  # TP-469 2.10
    store = _store()
    roles = P.install_default_roles(store)
    for path in (P.ROLE_TABLE, P.ROLE_TABLE + "{i}."):
        assert _access(store, roles.full_access).allows("Obj", path, "w")
        faulty = _access(store, roles.full_access, faults=("trust.roles_fixed",))
        assert not faulty.allows("Obj", path, "w")
        assert faulty.allows("Obj", path, "r")
    faulty = _access(store, roles.full_access, faults=("trust.roles_fixed",))
    assert faulty.allows("Obj", roles.full_access + "Permission.", "w")  # Permissions still
    assert faulty.allows("InstantiatedObj", roles.untrusted, "w")  # Roles can still go
    assert faulty.allows("Obj", SUB, "w")


@pytest.mark.parametrize("fault, kind, letter, partial", [
    ("trust.obj_write_misread", "Obj", "w", "rw--"),              # TP-469 2.11
    ("trust.instance_write_misread", "InstantiatedObj", "w", "rw--"),  # TP-469 2.13
    ("trust.param_write_misread", "Param", "w", "rw--"),          # TP-469 2.15
    ("trust.command_execute_misread", "CommandEvent", "x", "r-x-"),  # TP-469 2.17
    ("trust.param_notify_misread", "Param", "n", "rw-n"),         # TP-469 2.19
])
def test_misread_faults(fault, kind, letter, partial):
    store = _store()
    perm = {"Param": "----", "Obj": "----", "InstantiatedObj": "----", "CommandEvent": "----",
            kind: partial}
    role = _role(store, "R", _perm("Device.", 1, param="rwxn", obj="rwxn", inst="rwxn",
                                   cmd="rwxn"),
                 _perm("Device.", 2, param=perm["Param"], obj=perm["Obj"],
                       inst=perm["InstantiatedObj"], cmd=perm["CommandEvent"]))
    path = {"Obj": SUB, "InstantiatedObj": SUB + "1.", "Param": SUB + "1.Enable",
            "CommandEvent": "Device.Reboot()"}[kind]
    assert _access(store, role).allows(kind, path, letter)
    faulty = _access(store, role, faults=(fault,))
    assert not faulty.allows(kind, path, letter)
    assert faulty.allows(kind, path, "r")  # the other letters are read as usual
    full = _role(store, "Full", _perm("Device.", 1, param="rwxn", obj="rwxn", inst="rwxn",
                                      cmd="rwxn"))
    assert _access(store, full, faults=(fault,)).allows(kind, path, letter)  # rwxn unaffected


def test_misread_fault_can_grant_a_letter_that_is_absent():
    store = _store()
    role = _role(store, "R", _perm("Device.", 1, obj="r-x-"))  # Obj w read from the x position
    assert not _access(store, role).allows("Obj", SUB, "w")
    assert _access(store, role, faults=("trust.obj_write_misread",)).allows("Obj", SUB, "w")


def test_fault_param_target_covers_object():  # TP-469 2.25
    store = _store()
    role = _role(store, "R", _perm("Device.", 1, param="rwxn", obj="rwxn", inst="rwxn"),
                 _perm(SUB + "*.Enable", 2, param="r---"))
    access = _access(store, role)
    assert not access.allows("Param", SUB + "1.Enable", "w")
    assert access.allows("Param", SUB + "1.ID", "w")
    faulty = _access(store, role, faults=("trust.param_target_covers_object",))
    assert not faulty.allows("Param", SUB + "1.ID", "w")
    assert faulty.allows("Param", SUB + "1.ID", "r")
    assert faulty.allows("Param", "Device.LocalAgent.EndpointID", "w")  # other objects as usual


def test_fault_param_target_covers_object_with_reference_target():
    store = _store()
    roles = P.install_default_roles(store)
    _controller(store, "proto::c", roles.full_access)  # its AssignedRole is followed below
    role = _role(store, "R", _perm("Device.", 1, param="rwxn"),
                 _perm('Device.LocalAgent.Controller.[EndpointID=="proto::c"].AssignedRole#1+.Name',
                       2, param="r---"))
    name = roles.full_access + "Name"
    assert not _access(store, role).allows("Param", name, "w")
    assert _access(store, role).allows("Param", roles.full_access + "Enable", "w")
    faulty = _access(store, role, faults=("trust.param_target_covers_object",))
    assert not faulty.allows("Param", roles.full_access + "Enable", "w")


def test_fault_secured_roles_ignored():  # TP-469 2.27
    store = _store()
    roles = P.install_default_roles(store)
    value = "Device.MQTT.Client.1.Password"
    assert _access(store, roles.secured).reads_secured(value)
    faulty = _access(store, roles.secured, faults=("trust.secured_roles_ignored",))
    assert not faulty.reads_secured(value)
    assert not faulty.reads_secured()


def test_faults_flow_from_agent_state():
    state = _state("trust.ignore_permissions")
    assert P.access_for(state)("proto::stranger").allows("Obj", SUB, "w")


# --- hostile input -----------------------------------------------------------------------------------

_PATHISH = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="Device.LocalAgnt*{i}[]=!~<>&\"+#()0123456789 ,", max_size=60),
    st.sampled_from(["Device.", "Device", SUB, SUB + "1.Enable", SUB + "{i}.", "Device.Reboot()",
                     SUB + "[Enable==true].", "Device.LocalAgent.Controller.1.AssignedRole+."]),
)

_HOSTILE_STORE = _store()
_HOSTILE_STORE.add(SUB, {"Enable": "true"})
_HOSTILE_ROLE = _role(_HOSTILE_STORE, "Hostile", _perm("Device."))
_HOSTILE_PERM = _HOSTILE_ROLE + "Permission.1."


@settings(max_examples=200, deadline=None)
@given(targets=st.lists(_PATHISH, max_size=3), bits=st.text(max_size=6), order=st.text(max_size=4),
       path=_PATHISH, kind=st.sampled_from([*KINDS, "Bogus"]), op=st.text(max_size=2))
def test_hostile_targets_and_paths_never_crash(targets, bits, order, path, kind, op):
    store = _HOSTILE_STORE
    store.set(_HOSTILE_PERM + "Targets", ",".join(targets))
    store.set(_HOSTILE_PERM + "Param", bits)
    store.set(_HOSTILE_PERM + "Order", order)
    access = _access(store, _HOSTILE_ROLE)
    assert access.allows(kind, path, op) in (True, False)
    assert len(access.effective(kind, path)) == 4
    assert access.reads_secured(path) is False


@settings(max_examples=200, deadline=None)
@given(value=_PATHISH, endpoint=st.text(max_size=20))
def test_hostile_role_references_never_crash(value, endpoint):
    store = _HOSTILE_STORE
    assert all(r.startswith(P.ROLE_TABLE) for r in P.role_refs(store, value))
    store.set(CT + "UntrustedRole", value)
    who = P.controller_roles(store, endpoint)
    assert who.untrusted and set(who.roles) <= {_HOSTILE_ROLE}
