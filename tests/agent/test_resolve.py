"""Path resolution against the Agent's instantiated data model (TR-369 Path Names)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.resolve import ResolveError, resolve
from conformance.agent.datamodel.store import Store
from conformance.usp.paths import PathKind

SUBS = "Device.LocalAgent.Subscription."
CTRLS = "Device.LocalAgent.Controller."


@pytest.fixture(scope="module")
def store():
    s = Store(load_definitions())
    s.add(SUBS, {"ID": "a", "Enable": "true", "NotifType": "ValueChange",
                 "ReferenceList": "Device.DeviceInfo.SoftwareVersion,Device.LocalAgent.UpTime",
                 "TimeToLive": "30", "Recipient": "Device.LocalAgent.Controller.1"})
    s.add(SUBS, {"ID": "b", "Enable": "false", "NotifType": "Event", "TimeToLive": "5",
                 "Recipient": "Device.LocalAgent.Controller.2"})
    c1 = s.add(CTRLS, {"EndpointID": "proto::c1", "Alias": "one"})
    s.add(f"{c1}MTP.", {"Protocol": "MQTT"})
    s.add(f"{c1}MTP.", {"Protocol": "WebSocket"})
    c2 = s.add(CTRLS, {"EndpointID": "proto::c2", "Alias": "two"})
    s.add(f"{c2}MTP.", {"Protocol": "STOMP"})
    return s


def _objs(store, path):
    return resolve(store, path).objects


def test_static_and_instance_paths(store):
    res = resolve(store, "Device.DeviceInfo.")
    assert res.kind is PathKind.OBJECT and res.objects == ["Device.DeviceInfo."] and not res.table
    assert _objs(store, f"{SUBS}2.") == [f"{SUBS}2."]
    res = resolve(store, f"{SUBS}1.Enable")
    assert res.leaves == [f"{SUBS}1.Enable"] and res.leaf == "Enable"


def test_table_path(store):
    res = resolve(store, SUBS)
    assert res.table and res.objects == [SUBS]


def test_wildcards_nested(store):
    assert _objs(store, f"{SUBS}*.") == [f"{SUBS}1.", f"{SUBS}2."]
    assert _objs(store, f"{CTRLS}*.MTP.*.") == [f"{CTRLS}1.MTP.1.", f"{CTRLS}1.MTP.2.",
                                                f"{CTRLS}2.MTP.1."]
    assert resolve(store, f"{CTRLS}*.MTP.*.Protocol").leaves[-1] == f"{CTRLS}2.MTP.1.Protocol"


def test_search_expressions(store):
    assert _objs(store, f'{SUBS}[ID=="b"].') == [f"{SUBS}2."]
    assert _objs(store, f"{SUBS}[Enable==true].") == [f"{SUBS}1."]
    assert _objs(store, f"{SUBS}[Enable==0].") == [f"{SUBS}2."]
    assert _objs(store, f"{SUBS}[TimeToLive>10].") == [f"{SUBS}1."]
    assert _objs(store, f"{SUBS}[TimeToLive<=5&&Enable==false].") == [f"{SUBS}2."]
    assert _objs(store, f'{SUBS}[ReferenceList~="Device.LocalAgent.UpTime"].') == [f"{SUBS}1."]
    assert _objs(store, f'{CTRLS}[Alias=="two"].MTP.[Protocol=="STOMP"].') == [f"{CTRLS}2.MTP.1."]


def test_search_matching_nothing_is_empty_not_error(store):
    """R-MSG.4a."""
    res = resolve(store, f'{SUBS}[NotifType=="ObjectCreation"].')
    assert res.objects == [] and res.is_search


def test_addressing_errors(store):
    with pytest.raises(ResolveError) as err:
        resolve(store, f"{SUBS}9.")
    assert err.value.code == 7016
    with pytest.raises(ResolveError) as err:  # a complete unique key is an address
        resolve(store, f'{CTRLS}[EndpointID=="proto::none"].')
    assert err.value.code == 7016


@pytest.mark.parametrize("path, code", [
    ("Device.NoSuchObject.", 7026),
    ("Device.DeviceInfo.NoSuchParam", 7026),
    ("Device.DeviceInfo.3.", 7026),
    ("Device.LocalAgent.Subscription.1.Nope()", 7026),
    ("Device..Bad", 7008),
    ("LocalAgent.", 7008),
    ('Device.LocalAgent.Subscription.[Enable=="true"].', 7008),   # boolean constant quoted
    ("Device.LocalAgent.Subscription.[ID>3].", 7008),            # ordering on a string
    ('Device.LocalAgent.Subscription.[NotifType~="Event"].', 7008),  # ~= on a non-list
    ("Device.LocalAgent.Subscription.[TimeToLive==abc].", 7008),
    ('Device.LocalAgent.Subscription.[Nope=="x"].', 7026),
    ("Device.LocalAgent.Subscription.Enable", 7026),             # table without instance
])
def test_errors_carry_usp_codes(store, path, code):
    with pytest.raises(ResolveError) as err:
        resolve(store, path)
    assert err.value.code == code, err.value.message


def test_search_not_allowed(store):
    with pytest.raises(ResolveError) as err:
        resolve(store, f"{SUBS}*.", allow_search=False)
    assert err.value.code == 7008


def test_reference_following(store):
    res = resolve(store, f"{SUBS}1.Recipient+.EndpointID")
    assert res.leaves == [f"{CTRLS}1.EndpointID"]
    assert _objs(store, f"{SUBS}*.Recipient+.") == [f"{CTRLS}1.", f"{CTRLS}2."]
    assert _objs(store, f'{SUBS}[Recipient+.Alias=="two"].') == [f"{SUBS}2."]


def test_commands_and_events(store):
    assert resolve(store, "Device.Reboot()").leaves == ["Device.Reboot()"]
    assert resolve(store, "Device.Boot!").leaves == ["Device.Boot!"]
    assert resolve(store, f"{SUBS}*.").is_search


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_never_raises_anything_but_resolve_error(store, text):
    try:
        resolve(store, text)
    except ResolveError as err:
        assert err.code in (7008, 7016, 7026)
