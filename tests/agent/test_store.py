"""The reference Agent's instantiated data model store."""

from __future__ import annotations

import json

import pytest

from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.store import (
    ObjectAdded,
    ObjectDeleted,
    Store,
    StoreError,
    ValueChanged,
    default_value,
)

SUBS = "Device.LocalAgent.Subscription."
CTRLS = "Device.LocalAgent.Controller."


@pytest.fixture()
def store():
    return Store(load_definitions())


def test_static_objects_exist_with_defaults(store):
    assert store.exists("Device.") and store.exists("Device.DeviceInfo.")
    assert store.exists("Device.LocalAgent.")
    assert not store.exists("Device.Nope.") and not store.exists(f"{SUBS}1.")
    assert store.get("Device.LocalAgent.SubscriptionNumberOfEntries") == "0"
    with pytest.raises(StoreError):
        store.get("Device.LocalAgent.NoSuchParam")
    with pytest.raises(StoreError):
        store.get(f"{SUBS}1.Enable")


def test_add_applies_defaults_and_values(store):
    path = store.add(SUBS, {"ID": "s1", "NotifType": "ValueChange"})
    assert path == f"{SUBS}1."
    params = store.params(path)
    assert params["ID"] == "s1" and params["Enable"] == "false"
    assert params["TimeToLive"] == "0" and params["TriggerAction"] == "Notify"
    assert store.get("Device.LocalAgent.SubscriptionNumberOfEntries") == "1"
    assert store.instances(SUBS) == [path]


def test_instance_numbers_never_reused(store):
    a = store.add(SUBS)
    b = store.add(SUBS)
    store.delete(b)
    c = store.add(SUBS)
    assert (a, c) == (f"{SUBS}1.", f"{SUBS}3.")  # R-ADD.? numbers are not reused
    assert store.add(SUBS, number=7) == f"{SUBS}7." and store.add(SUBS) == f"{SUBS}8."
    with pytest.raises(StoreError, match="already exists"):
        store.add(SUBS, number=7)


def test_nested_tables_and_deletion_of_descendants(store):
    ctrl = store.add(CTRLS)
    mtp = store.add(f"{ctrl}MTP.")
    assert mtp == f"{ctrl}MTP.1." and store.exists(f"{ctrl}MTP.1.")
    assert f"{ctrl}MTP.1." in store.child_objects(ctrl)
    assert store.exists(f"{ctrl}E2ESession.")  # single-instance child exists with its parent
    deleted = store.delete(ctrl)
    assert deleted == [mtp, ctrl]
    assert not store.exists(mtp) and not store.exists(f"{ctrl}E2ESession.")
    with pytest.raises(StoreError):
        store.add(f"{ctrl}MTP.")  # the parent is gone


def test_add_rejects_non_tables_and_delete_rejects_non_instances(store):
    with pytest.raises(StoreError, match="not a multi-instance"):
        store.add("Device.DeviceInfo.")
    with pytest.raises(StoreError, match="not an existing instance"):
        store.delete("Device.DeviceInfo.")


def test_change_events_and_quiet(store):
    events = []
    stop = store.listen(events.append)
    path = store.add(SUBS)
    store.set(f"{path}Enable", "true")
    store.set(f"{path}Enable", "true")  # no change, no event
    store.delete(path)
    assert events == [ObjectAdded(path), ValueChanged(f"{path}Enable", "false", "true"),
                      ObjectDeleted(path)]
    with store.quiet():
        store.add(SUBS)
    stop()
    store.add(SUBS)
    assert len(events) == 3


def test_transaction_rolls_back(store):
    keep = store.add(SUBS, {"ID": "keep"})
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.set(f"{keep}ID", "changed")
            store.add(SUBS)
            raise RuntimeError("allow_partial false: undo")
    assert store.get(f"{keep}ID") == "keep" and store.instances(SUBS) == [keep]
    assert store.add(SUBS) == f"{SUBS}2."  # the counter was restored too


def test_providers(store):
    store.provide("Device.LocalAgent.UpTime", lambda owner: "42")
    assert store.get("Device.LocalAgent.UpTime") == "42"
    assert store.params("Device.LocalAgent.")["UpTime"] == "42"


def test_persistence_round_trip(tmp_path):
    dm = load_definitions()
    path = tmp_path / "dm.json"
    first = Store(dm, path=path)
    assert first.load() is False
    sub = first.add(SUBS, {"ID": "persist"})
    first.set(f"{sub}Enable", "true")
    first.save()
    second = Store(dm, path=path)
    assert second.load() is True
    assert second.get(f"{sub}ID") == "persist" and second.get(f"{sub}Enable") == "true"
    assert second.add(SUBS) == f"{SUBS}2."
    assert json.loads(path.read_text())["format"] == 1
    with pytest.raises(ValueError, match="format"):
        second.load_json({"format": 99})


def test_default_value_by_type():
    dm = load_definitions()
    obj = dm.object(f"{SUBS}{{i}}.")
    assert default_value(obj.params["Enable"]) == "false"
    assert default_value(obj.params["CreationDate"]) == "0001-01-01T00:00:00Z"
    assert default_value(obj.params["ReferenceList"]) == ""
