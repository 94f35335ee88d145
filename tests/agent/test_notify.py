"""Subscription and Notify engine of the reference Agent.

TR-369 R-NOT.0 .. R-NOT.10 (Notify, retries, OnBoardRequest), TR-181
``Device.LocalAgent.Subscription.{i}.`` / ``Controller.{i}.`` rules, and the
TP-469 cases 1.52-1.60, 1.64/1.65, 1.78, 1.84, 1.93/1.94, 1.101-1.103, 2.20
and 9.10: every notification type end to end through the store, with a fake
clock handed to ``poll``, and every ``notify.*`` fault on and off.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.agent.context import AgentState
from conformance.agent.core import AgentCore
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.defs import DataModel
from conformance.agent.datamodel.store import Store
from conformance.agent.faults import REGISTRY, FaultSet
from conformance.agent.notify import NotificationEngine, build, model, timing, trigger
from conformance.agent.notify.matching import Matcher, needs_snapshot, parse_entry
from conformance.usp import messages, records
from conformance.usp.messages import MsgIdAllocator
from conformance.usp.paths import PathKind
from conformance.usp.schema import Msg, MsgType

AGENT, C1, C2 = "os::012345-AGENT", "proto::controller-1", "proto::controller-2"
CTRL = "Device.LocalAgent.Controller."
SUBS = "Device.LocalAgent.Subscription."
WALL0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
T0 = 1000.0


class Env:
    """An attached engine over a fresh store, a fake clock and a list of sent Msgs."""

    def __init__(self, *faults: str, access_for: Callable[[str], object] | None = None,
                 dm: DataModel | None = None, controllers: int = 1, attach: bool = True,
                 store: Store | None = None) -> None:
        dm = dm or load_definitions()
        self.mono, self.wall = T0, WALL0
        self.state = AgentState(AGENT, dm, store or Store(dm), faults=FaultSet(faults),
                                clock=lambda: self.wall, monotonic=lambda: self.mono)
        self.store = self.state.store
        self.sent: list[tuple[str, Msg]] = []
        self.engine = NotificationEngine(self.state, send=lambda cid, m: self.sent.append((cid, m)),
                                         rng=random.Random(7), msg_ids=MsgIdAllocator("n"),
                                         access_for=access_for)  # type: ignore[arg-type]
        if attach:
            self.engine.attach()
        self.ctrls = [self.add_controller(cid) for cid in (C1, C2)[:controllers]]

    def add_controller(self, endpoint_id: str, **values: str) -> str:
        return self.store.add(CTRL, {"EndpointID": endpoint_id, "Enable": "true", **values})

    def add_sub(self, sub_id: str, notif_type: str, reference_list: str, *,
                recipient: str | None = None, **values: str) -> str:
        recipient = recipient or self.ctrls[0]
        return self.store.add(SUBS, {"Enable": "true", "ID": sub_id, "NotifType": notif_type,
                                     "ReferenceList": reference_list,
                                     "Recipient": recipient.rstrip("."), **values})

    def flush(self) -> list[tuple[str, Msg]]:
        """Flush and return (and forget) what was sent."""
        self.engine.flush(self.mono)
        return self.take()

    def take(self) -> list[tuple[str, Msg]]:
        out, self.sent = self.sent, []
        return out

    def advance(self, seconds: float, step: float = 0.25) -> list[tuple[float, str, Msg]]:
        """Move both clocks forward, polling every ``step``; (time, controller, msg) sent."""
        out = []
        end = self.mono + seconds
        while self.mono < end - 1e-9:
            delta = min(step, end - self.mono)
            self.mono += delta
            self.wall += delta
            self.engine.poll(self.mono)
            out += [(self.mono, cid, m) for cid, m in self.take()]
        return out


def notify_of(msg: Msg):
    assert msg.header.msg_type == MsgType.NOTIFY
    return msg.body.request.notify


def only(sent: list[tuple[str, Msg]], controller: str = C1):
    assert len(sent) == 1, sent
    assert sent[0][0] == controller
    return notify_of(sent[0][1])


class DenyNotify:
    """Access that withholds one permission letter on paths containing ``needle``."""

    def __init__(self, needle: str, letter: str = "n") -> None:
        self.needle, self.letter = needle, letter

    def allows(self, kind: str, path: str, op: str) -> bool:
        return not (op == self.letter and self.needle in path)


# --- ValueChange (TP-469 1.52, 1.53, 1.84; R-NOT.7) ---------------------------------------


def test_value_change_end_to_end():
    env = Env()
    ctrl = env.ctrls[0]
    env.add_sub("notify52", "ValueChange", ctrl + "ProvisioningCode", NotifRetry="true")
    env.store.set(ctrl + "ProvisioningCode", "TestValue52")
    assert env.sent == [] and env.engine.queued() == 1  # deferred until flush
    assert env.engine.next_deadline() == env.mono        # ... which is due at once
    sent = env.flush()
    n = only(sent)
    assert sent[0][1].header.msg_id == "n-1"
    assert n.subscription_id == "notify52"  # R-NOT.7
    assert n.send_resp is True             # NotifRetry true
    assert n.WhichOneof("notification") == "value_change"
    assert (n.value_change.param_path, n.value_change.param_value) == (
        ctrl + "ProvisioningCode", "TestValue52")
    env.store.set(ctrl + "ProvisioningCode", "TestValue52")  # no change: no Notify
    env.store.set(ctrl + "Alias", "x")                        # not subscribed
    assert env.flush() == []


def test_value_change_send_resp_false_without_notif_retry():
    env = Env()
    env.add_sub("vc", "ValueChange", env.ctrls[0] + "ProvisioningCode")
    env.store.set(env.ctrls[0] + "ProvisioningCode", "a")
    assert only(env.flush()).send_resp is False
    assert env.engine.outstanding() == []
    assert env.advance(60) == []  # NotifRetry false: never retransmitted


def test_wrong_subscription_id_and_old_value_faults():
    for faults, sid, value in (((), "vc-1", "new"),
                               (("notify.wrong_subscription_id",), SUBS + "1.", "new"),
                               (("notify.valuechange_old_value",), "vc-1", "")):
        env = Env(*faults)
        env.add_sub("vc-1", "ValueChange", env.ctrls[0] + "ProvisioningCode")
        env.store.set(env.ctrls[0] + "ProvisioningCode", "new")
        n = only(env.flush())
        assert (n.subscription_id, n.value_change.param_value) == (sid, value), faults


def test_only_the_recipient_is_notified():
    env = Env(controllers=2)
    env.add_sub("vc", "ValueChange", "Device.DeviceInfo.FriendlyName", recipient=env.ctrls[1])
    env.store.set("Device.DeviceInfo.FriendlyName", "box")
    only(env.flush(), C2)
    env = Env("notify.wrong_recipient", controllers=2)
    env.add_sub("vc", "ValueChange", "Device.DeviceInfo.FriendlyName", recipient=env.ctrls[1])
    env.store.set("Device.DeviceInfo.FriendlyName", "box")
    assert sorted(cid for cid, _ in env.flush()) == [C1, C2]


def test_disabled_or_unknown_recipient_gets_nothing():
    env = Env(controllers=2)
    env.add_sub("a", "ValueChange", "Device.DeviceInfo.FriendlyName")
    env.add_sub("b", "ValueChange", "Device.DeviceInfo.FriendlyName", recipient=CTRL + "9.")
    env.store.set(env.ctrls[0] + "Enable", "false")
    env.store.set("Device.DeviceInfo.FriendlyName", "box")
    assert env.flush() == []


def test_disabled_subscription_and_its_fault():
    for faults, expected in (((), 0), (("notify.valuechange_disabled_sub",), 1)):
        env = Env(*faults)
        env.add_sub("vc", "ValueChange", "Device.DeviceInfo.FriendlyName", Enable="false")
        env.store.set("Device.DeviceInfo.FriendlyName", "box")  # TR-181 Enable
        assert len(env.flush()) == expected


def test_deleted_subscription_stops_notifying():
    for faults in ((), ("notify.deleted_subscription_notifies",)):
        env = Env(*faults)
        ctrl = env.ctrls[0]
        sub = env.add_sub("notify53", "ValueChange", ctrl + "ProvisioningCode", NotifRetry="true")
        env.store.set(ctrl + "ProvisioningCode", "TestValue53")
        first = env.flush()
        assert env.engine.notify_resp(C1, first[0][1].header.msg_id)
        env.store.delete(sub)  # TP-469 1.53
        env.store.set(ctrl + "ProvisioningCode", "notify53-2")
        assert bool(env.flush() + env.advance(20)) == bool(faults)


def test_partial_and_table_paths_cover_parameters_below():
    env = Env(controllers=2)
    c1, c2 = env.ctrls
    env.add_sub("obj", "ValueChange", c1)
    env.add_sub("table", "ValueChange", CTRL)
    env.store.set(c1 + "ProvisioningCode", "p")
    assert sorted(notify_of(m).subscription_id for _, m in env.flush()) == ["obj", "table"]
    env.store.set(c2 + "ProvisioningCode", "p")
    assert [notify_of(m).subscription_id for _, m in env.flush()] == ["table"]
    env.store.set("Device.DeviceInfo.FriendlyName", "f")
    assert env.flush() == []


def test_search_path_reference_list():  # TP-469 1.84
    for faults, expected in (((), ["notify84", "expr"]), (("notify.no_search_path_match",), [])):
        env = Env(*faults)
        ctrl = env.ctrls[0]
        bp = [env.store.add(ctrl + "BootParameter.", {"Enable": "true", "ParameterName": n})
              for n in ("Device.DeviceInfo.SerialNumber", "Device.DeviceInfo.ModelName")]
        env.add_sub("notify84", "ValueChange", ctrl + "BootParameter.*.Enable")
        env.add_sub("expr", "ValueChange",
                    f'{CTRL}[EndpointID=="{C1}"].BootParameter.[Enable==true].ParameterName, '
                    f'{CTRL}[EndpointID=="nobody"].ProvisioningCode')
        env.store.set(bp[1] + "Enable", "false")
        env.store.set(bp[0] + "ParameterName", "Device.DeviceInfo.HardwareVersion")
        got = [(notify_of(m).subscription_id, notify_of(m).value_change.param_path)
               for _, m in env.flush()]
        want = {"notify84": (("notify84", bp[1] + "Enable"),),
                "expr": (("expr", bp[0] + "ParameterName"),)}
        assert got == [w for name in expected for w in want[name]]


def test_value_change_ignored_parameters_and_secured_values():
    env = Env()
    env.add_sub("info", "ValueChange", "Device.DeviceInfo.")
    env.store.set("Device.DeviceInfo.UpTime", "42")  # activeNotify canDeny: WILL_IGNORE
    env.store.set("Device.DeviceInfo.FriendlyName", "f")
    assert [notify_of(m).value_change.param_path for _, m in env.flush()] == [
        "Device.DeviceInfo.FriendlyName"]
    client = env.store.add("Device.MQTT.Client.")
    env.add_sub("mqtt", "ValueChange", client + "Password")
    env.store.set(client + "Password", "s3cret")
    assert only(env.flush()).value_change.param_value == ""  # secured: not disclosed


def test_value_change_permission_filter():  # TP-469 2.20
    deny = DenyNotify("PeriodicNotifInterval")
    for faults, expected in (((), ["other"]), (("notify.ignore_permissions",), ["pni", "other"])):
        env = Env(*faults, access_for=lambda _cid: deny)
        ctrl = env.ctrls[0]
        env.add_sub("pni", "ValueChange", ctrl + "PeriodicNotifInterval")
        env.add_sub("other", "ValueChange", ctrl + "ProvisioningCode")
        env.store.set(ctrl + "PeriodicNotifInterval", "30")
        env.store.set(ctrl + "ProvisioningCode", "x")
        assert [notify_of(m).subscription_id for _, m in env.flush()] == expected


def test_permission_lookup_failure_denies():
    def broken(_cid: str):
        raise RuntimeError("no roles")
    env = Env(access_for=broken)
    env.add_sub("vc", "ValueChange", "Device.DeviceInfo.FriendlyName")
    env.store.set("Device.DeviceInfo.FriendlyName", "f")
    assert env.flush() == []


# --- ObjectCreation / ObjectDeletion (TP-469 1.57, 1.58) ---------------------------------


def test_object_creation_with_unique_keys():
    env = Env()
    env.add_sub("notify57", "ObjectCreation", SUBS, NotifRetry="true")
    assert env.flush() == []  # a subscription does not report its own creation
    new = env.add_sub("notify57-2", "ValueChange", env.ctrls[0] + "ProvisioningCode",
                      NotifRetry="true")
    env.store.set(new + "Alias", "cpe-2")  # keys are read when the Notify goes out
    n = only(env.flush())
    assert n.subscription_id == "notify57" and n.send_resp
    assert n.obj_creation.obj_path == new == SUBS + "2."
    assert dict(n.obj_creation.unique_keys) == {
        "Alias": "cpe-2", "ID": "notify57-2", "Recipient": env.ctrls[0].rstrip(".")}


def test_object_creation_faults():
    for faults, path, keys in (
            (("notify.missing_unique_keys",), CTRL + "2.", {}),
            (("notify.obj_path_no_trailing_dot",), CTRL + "2", {"EndpointID": C2, "Alias": ""})):
        env = Env(*faults)
        env.add_sub("oc", "ObjectCreation", CTRL)
        env.add_controller(C2)
        n = only(env.flush())
        assert n.obj_creation.obj_path == path
        assert dict(n.obj_creation.unique_keys) == keys


def test_object_creation_reference_forms():
    env = Env(controllers=2)
    c1, c2 = env.ctrls
    env.add_sub("wild", "ObjectCreation", CTRL + "*.BootParameter.")
    env.add_sub("expr", "ObjectCreation", f'{CTRL}[EndpointID=="{C2}"].BootParameter.')
    env.add_sub("inst", "ObjectCreation", CTRL + "*.")
    env.add_sub("single", "ObjectCreation", "Device.LocalAgent.")  # not a table: nothing
    env.store.add(c1 + "BootParameter.")
    assert [notify_of(m).subscription_id for _, m in env.flush()] == ["wild"]
    env.store.add(c2 + "BootParameter.")
    assert [notify_of(m).subscription_id for _, m in env.flush()] == ["wild", "expr"]
    env.add_controller("proto::c3")
    assert [notify_of(m).subscription_id for _, m in env.flush()] == ["inst"]


def test_object_deletion():
    env = Env()
    old = env.add_sub("old", "ValueChange", "Device.DeviceInfo.FriendlyName")
    env.add_sub("notify58", "ObjectDeletion", SUBS, NotifRetry="true")
    env.store.delete(old)
    n = only(env.flush())
    assert n.subscription_id == "notify58" and n.obj_deletion.obj_path == old
    env = Env("notify.obj_path_no_trailing_dot")
    old = env.add_sub("old", "ValueChange", "Device.DeviceInfo.FriendlyName")
    env.add_sub("notify58", "ObjectDeletion", SUBS)
    env.store.delete(old)
    assert only(env.flush()).obj_deletion.obj_path == old.rstrip(".")


def test_object_deletion_search_paths_use_values_before_deletion():
    env = Env(controllers=2)
    c1, c2 = env.ctrls
    on = env.store.add(c1 + "BootParameter.", {"Enable": "true"})
    off = env.store.add(c1 + "BootParameter.", {"Enable": "false"})
    env.add_sub("enabled", "ObjectDeletion", c1 + "BootParameter.[Enable==true].")
    env.add_sub("wild", "ObjectDeletion", CTRL + "*.BootParameter.*.")
    env.add_sub("table", "ObjectDeletion", CTRL + "2.BootParameter.")
    env.store.delete(off)
    assert [notify_of(m).subscription_id for _, m in env.flush()] == ["wild"]
    env.store.delete(on)
    assert [notify_of(m).subscription_id for _, m in env.flush()] == ["enabled", "wild"]
    bp2 = env.store.add(c2 + "BootParameter.", {"Enable": "true"})
    env.flush()
    env.store.delete(c2)  # cascade: the BootParameter instance goes too
    got = sorted((notify_of(m).subscription_id, notify_of(m).obj_deletion.obj_path)
                 for _, m in env.flush())
    assert got == [("table", bp2), ("wild", bp2)]


# --- Event / OperationComplete (TP-469 1.64, 1.65) -----------------------------------------


def test_event_subscriptions_by_event_and_partial_path():
    env = Env()
    ctrl = env.ctrls[0]
    env.add_sub("timer", "Event", ctrl + "Timer!", NotifRetry="true")
    env.add_sub("all", "Event", "Device.")
    env.add_sub("boot", "Event", "Device.Boot!")
    env.add_sub("cmd", "OperationComplete", "Device.")  # not an Event subscription
    env.engine.event(ctrl, "Timer!", {"CommandKey": "k1"})
    got = [(notify_of(m).subscription_id, notify_of(m).event) for _, m in env.flush()]
    assert [sid for sid, _ in got] == ["timer", "all"]
    ev = got[0][1]
    assert (ev.obj_path, ev.event_name, dict(ev.params)) == (ctrl, "Timer!", {"CommandKey": "k1"})


def test_operation_complete():
    env = Env()
    env.add_sub("st", "OperationComplete", "Device.SelfTestDiagnostics()", NotifRetry="true")
    env.add_sub("any", "OperationComplete", "Device.LocalAgent.")
    env.engine.operation_complete("Device.", "SelfTestDiagnostics()", "test65",
                                  output_args={"Status": "Complete"})
    oc = only(env.flush()).oper_complete
    assert (oc.obj_path, oc.command_name, oc.command_key) == (
        "Device.", "SelfTestDiagnostics()", "test65")
    assert dict(oc.req_output_args.output_args) == {"Status": "Complete"}
    env.engine.operation_complete("Device.", "SelfTestDiagnostics()", "k2",
                                  failure=(7800, "boom"))
    oc = only(env.flush()).oper_complete
    assert oc.WhichOneof("operation_resp") == "cmd_failure"
    assert (oc.cmd_failure.err_code, oc.cmd_failure.err_msg) == (7800, "boom")
    env = Env("notify.opcomplete_wrong_command_key")
    env.add_sub("st", "OperationComplete", "Device.SelfTestDiagnostics()")
    env.engine.operation_complete("Device.", "SelfTestDiagnostics()", "test65")
    assert only(env.flush()).oper_complete.command_key == ""


def test_event_permission_uses_command_event_n():
    env = Env(access_for=lambda _cid: DenyNotify("Timer!"))
    env.add_sub("timer", "Event", env.ctrls[0] + "Timer!")
    env.engine.event(env.ctrls[0], "Timer!", {})
    assert env.flush() == []


# --- NotifRetry and NotifExpiration (TP-469 1.54, 1.56; R-NOT.1 .. R-NOT.4) ----------------


def _vc_with_retry(env: Env, **values: str) -> None:
    env.add_sub("notify54", "ValueChange", env.ctrls[0] + "ProvisioningCode", NotifRetry="true",
                **values)
    env.store.set(env.ctrls[0] + "ProvisioningCode", "TestValue54")


def test_notify_retry_backoff():
    env = Env()
    _vc_with_retry(env)
    first = env.flush()[0][1]
    retries = env.advance(200)
    times = [t - T0 for t, _, _ in retries]
    assert all(m == first for _, _, m in retries)  # the same Msg, same msg_id
    assert 5 <= times[0] <= 10.25                                      # R-NOT.1 #1
    assert 10 <= times[1] - times[0] <= 20.25                          # #2
    assert 20 <= times[2] - times[1] <= 40.25                          # #3
    assert env.engine.notify_resp(C2, first.header.msg_id) is False    # not its recipient
    assert env.engine.notify_resp(C1, first.header.msg_id, "ignored")  # R-NOT.9
    assert env.engine.outstanding() == [] and env.advance(500) == []
    assert env.engine.notify_resp(C1, first.header.msg_id) is False


def test_retry_uses_the_controllers_interval_parameters():
    env = Env()
    env.store.set(env.ctrls[0] + "USPNotifRetryMinimumWaitInterval", "2")
    env.store.set(env.ctrls[0] + "USPNotifRetryIntervalMultiplier", "3000")
    _vc_with_retry(env)
    env.flush()
    times = [t - T0 for t, _, _ in env.advance(60, step=0.05)]
    assert 2 <= times[0] <= 6.05 and 6 <= times[1] - times[0] <= 18.05


def test_retry_faults():
    env = Env("notify.no_retry")
    _vc_with_retry(env)
    assert only(env.flush()).send_resp is False
    assert env.advance(100) == []
    env = Env("notify.retry_wrong_interval")
    _vc_with_retry(env)
    env.flush()
    times = [t - T0 for t, _, _ in env.advance(16)]
    assert times == [5.0, 10.0, 15.0]  # no multiplier: TP-469 1.54 expects 10-20 s for #2


def test_notif_expiration():  # TP-469 1.56
    for faults in ((), ("notify.ignore_expiration",)):
        env = Env(*faults)
        _vc_with_retry(env, NotifExpiration="20")
        env.flush()
        times = [t - T0 for t, _, _ in env.advance(300)]
        assert times and times[0] <= 20
        if faults:
            assert max(times) > 20
        else:
            assert max(times) <= 20 and env.engine.outstanding() == []


def test_boot_resets_pending_retries():  # R-NOT.4
    env = Env()
    _vc_with_retry(env, Persistent="true")
    env.flush()
    assert len(env.engine.outstanding()) == 1
    env.engine.boot("LocalReboot")
    assert env.engine.outstanding() == [] and env.flush() == [] and env.advance(30) == []


def test_retry_stops_when_the_subscription_or_controller_goes():
    env = Env()
    _vc_with_retry(env)
    env.flush()
    env.store.delete(SUBS + "1.")
    assert env.engine.outstanding() == [] and env.advance(30) == []
    env = Env()
    _vc_with_retry(env)
    env.flush()
    env.store.set(env.ctrls[0] + "EndpointID", "proto::renamed")
    assert env.advance(30) == [] and env.engine.outstanding() == []


def test_send_failure_is_retried():
    env = Env()
    calls: list[str] = []

    def flaky(cid: str, msg: Msg) -> None:
        calls.append(msg.header.msg_id)
        if len(calls) == 1:
            raise ConnectionError("MTP down")
    env.engine._send = flaky  # the runtime's send may fail; NotifRetry covers it
    _vc_with_retry(env)
    env.engine.flush(env.mono)
    env.advance(11)
    assert calls == ["n-1", "n-1"]


def test_retry_policy_table():  # R-NOT.1 table, R-NOT.2 cap
    policy = timing.RetryPolicy()
    assert [policy.bounds(n) for n in (1, 2, 3, 10, 11, 50)] == [
        (5, 10), (10, 20), (20, 40), (2560, 5120), (2560, 5120), (2560, 5120)]
    assert timing.RetryPolicy(3, 1500).bounds(2) == (4.5, 6.75)
    rng = random.Random(0)
    assert all(5 <= policy.wait(1, rng) <= 10 for _ in range(200))


# --- TimeToLive (TP-469 1.55) ----------------------------------------------------------------


def test_time_to_live_deletes_the_subscription():
    env = Env()
    ctrl = env.ctrls[0]
    sub = env.add_sub("notify55", "ValueChange", ctrl + "ProvisioningCode", TimeToLive="20")
    assert env.engine.next_deadline() == T0 + 20
    env.store.set(ctrl + "ProvisioningCode", "TestValue55")
    assert len(env.flush()) == 1
    env.advance(19.5)
    assert env.store.exists(sub)
    env.advance(0.5)
    assert not env.store.exists(sub) and env.engine.next_deadline() is None
    env.store.set(ctrl + "ProvisioningCode", "TestValue55-2")
    assert env.flush() == []


def test_expired_subscription_is_silent_before_the_next_poll():
    env = Env()
    env.add_sub("ttl", "ValueChange", "Device.DeviceInfo.FriendlyName", TimeToLive="5")
    env.mono += 6  # no poll yet
    env.store.set("Device.DeviceInfo.FriendlyName", "x")
    assert env.engine.queued() == 0


def test_ignore_ttl_fault():
    env = Env("notify.ignore_ttl")
    sub = env.add_sub("ttl", "ValueChange", "Device.DeviceInfo.FriendlyName", TimeToLive="5")
    env.advance(10)
    assert env.store.exists(sub)
    env.store.set("Device.DeviceInfo.FriendlyName", "x")
    assert len(env.flush()) == 1


def test_time_to_live_counts_from_creation_date_across_restarts():
    dm = load_definitions()
    store = Store(dm)
    ctrl = store.add(CTRL, {"EndpointID": C1, "Enable": "true"})
    old = store.add(SUBS, {"ID": "old", "Recipient": ctrl, "TimeToLive": "50", "Persistent": "true",
                           "CreationDate": model.format_datetime(WALL0 - 100)})
    young = store.add(SUBS, {"ID": "young", "Recipient": ctrl, "TimeToLive": "50",
                             "Persistent": "true",
                             "CreationDate": model.format_datetime(WALL0 - 10)})
    env = Env(store=store, controllers=0)
    assert env.engine.next_deadline() == T0 - 50  # overdue since before the restart
    env.engine.poll(T0)
    assert not store.exists(old) and store.exists(young)
    assert env.engine.next_deadline() == T0 + 40


def test_creation_date_is_filled_when_missing():
    env = Env()
    sub = env.add_sub("s", "ValueChange", "Device.DeviceInfo.FriendlyName")
    assert env.store.get(sub + "CreationDate") == model.format_datetime(WALL0)


# --- Boot! and Persistent (TP-469 9.10; TR-181 BootParameter, Persistent) --------------------


def test_boot_event_parameter_map_per_recipient():
    env = Env(controllers=2)
    c1, c2 = env.ctrls
    env.store.set("Device.DeviceInfo.SerialNumber", "SN1")
    env.store.add(c1 + "BootParameter.", {"Enable": "true",
                                          "ParameterName": "Device.DeviceInfo.SerialNumber"})
    env.store.add(c1 + "BootParameter.", {"Enable": "true", "ParameterName": CTRL + "*.Enable"})
    env.store.add(c1 + "BootParameter.", {"Enable": "false",
                                          "ParameterName": "Device.DeviceInfo.ModelName"})
    env.store.add(c1 + "BootParameter.", {"Enable": "true", "ParameterName": "Device.Nope."})
    env.store.add(c2 + "BootParameter.", {"Enable": "true",
                                          "ParameterName": "Device.DeviceInfo.ModelName"})
    env.add_sub("boot-1", "Event", "Device.Boot!", Persistent="true", NotifRetry="true")
    env.add_sub("boot-2", "Event", "Device.", recipient=c2, Persistent="true")
    env.flush()
    env.engine.boot("RemoteReboot", "ck-1", firmware_updated=True)
    got = {cid: notify_of(m) for cid, m in env.flush()}
    ev1, ev2 = got[C1].event, got[C2].event
    assert (ev1.obj_path, ev1.event_name) == ("Device.", "Boot!")
    assert got[C1].subscription_id == "boot-1" and got[C1].send_resp
    params = dict(ev1.params)
    assert (params["Cause"], params["CommandKey"], params["FirmwareUpdated"]) == (
        "RemoteReboot", "ck-1", "true")
    assert json.loads(params["ParameterMap"]) == {
        "Device.DeviceInfo.SerialNumber": "SN1",
        CTRL + "1.Enable": "true", CTRL + "2.Enable": "true"}
    assert json.loads(ev2.params["ParameterMap"]) == {"Device.DeviceInfo.ModelName": ""}
    assert ev2.params["FirmwareUpdated"] == "true"


def test_boot_parameter_map_respects_read_permission_and_fault():
    env = Env(access_for=lambda _cid: DenyNotify("SerialNumber", "r"))
    env.store.add(env.ctrls[0] + "BootParameter.", {"Enable": "true",
                                                    "ParameterName": "Device.DeviceInfo."})
    env.add_sub("boot", "Event", "Device.Boot!", Persistent="true")
    env.engine.boot("LocalReboot")
    pmap = json.loads(only(env.flush()).event.params["ParameterMap"])
    assert "Device.DeviceInfo.ModelName" in pmap and "Device.DeviceInfo.SerialNumber" not in pmap
    env = Env("notify.boot_empty_parameter_map")
    env.store.add(env.ctrls[0] + "BootParameter.", {"Enable": "true",
                                                    "ParameterName": "Device.DeviceInfo."})
    env.add_sub("boot", "Event", "Device.Boot!")
    env.engine.boot("LocalReboot")
    assert only(env.flush()).event.params["ParameterMap"] == "{}"


def test_boot_deletes_non_persistent_subscriptions_after_boot_event():
    env = Env()
    keep = env.add_sub("keep", "ObjectDeletion", SUBS, Persistent="true")
    boot = env.add_sub("boot", "Event", "Device.Boot!")  # Persistent false (TP-469 9.10)
    env.engine.boot("LocalReboot", "", False)
    sent = [notify_of(m) for _, m in env.flush()]
    assert [n.WhichOneof("notification") for n in sent] == ["event", "obj_deletion"]
    assert sent[0].subscription_id == "boot" and sent[1].obj_deletion.obj_path == boot
    assert env.store.exists(keep) and not env.store.exists(boot)
    assert sent[0].event.params["FirmwareUpdated"] == "false"
    env = Env("notify.boot_keeps_nonpersistent")
    boot = env.add_sub("boot", "Event", "Device.Boot!")
    env.engine.boot("LocalReboot")
    assert env.store.exists(boot)


# --- Periodic! (TP-469 1.59) ----------------------------------------------------------------


def test_periodic_event_follows_interval_and_phase():
    env = Env(controllers=2)
    c1, c2 = env.ctrls
    env.store.set(c1 + "PeriodicNotifInterval", "60")
    env.store.set(c1 + "PeriodicNotifTime", "2019-01-01T00:00:00Z")
    env.add_sub("sub-103", "Event", "Device.LocalAgent.Periodic!")
    env.store.set(c2 + "PeriodicNotifInterval", "300")  # Unknown Time: first one at +300 s
    env.add_sub("c2", "Event", "Device.LocalAgent.Periodic!", recipient=c2)
    first_due = T0 + (60 - WALL0 % 60)
    assert env.engine.next_deadline() == first_due
    got = env.advance(200)
    times = [t for t, _, _ in got]
    assert times == [first_due, first_due + 60, first_due + 120]
    n = notify_of(got[0][2])
    assert {cid for _, cid, _ in got} == {C1}
    assert (n.subscription_id, n.event.obj_path, n.event.event_name) == (
        "sub-103", "Device.LocalAgent.", "Periodic!")
    assert dict(n.event.params) == {}
    env.store.set(c1 + "Enable", "false")
    assert [(t, cid) for t, cid, _ in env.advance(120)] == [(T0 + 300, C2)]


def test_periodic_unknown_time_and_fault():
    env = Env()
    env.store.set(env.ctrls[0] + "PeriodicNotifInterval", "10")
    env.add_sub("p", "Event", "Device.LocalAgent.Periodic!")
    assert [t - T0 for t, _, _ in env.advance(25)] == [10, 20]  # agent-chosen phase
    env = Env("notify.periodic_wrong_interval")
    env.store.set(env.ctrls[0] + "PeriodicNotifInterval", "10")
    env.add_sub("p", "Event", "Device.LocalAgent.Periodic!")
    assert [t - T0 for t, _, _ in env.advance(35)] == [10, 30]


def test_seconds_to_next_period():
    assert timing.seconds_to_next_period(125.0, 0.0, 60) == 55.0
    assert timing.seconds_to_next_period(120.0, 0.0, 60) == 0.0
    assert timing.seconds_to_next_period(100.0, 1010.0, 60) == 10.0  # phase in the future
    assert timing.seconds_to_next_period(5.0, None, 30) == 30.0
    with pytest.raises(ValueError):
        timing.seconds_to_next_period(0.0, 0.0, 0)


# --- OnBoardRequest (TP-469 1.60, 1.101-1.103; R-NOT.5 .. R-NOT.7) ---------------------------


def _identity(env: Env) -> None:
    for name, value in (("ManufacturerOUI", "00D09E"), ("ProductClass", "RefAgent"),
                        ("SerialNumber", "SN-42")):
        env.store.set("Device.DeviceInfo." + name, value)


def test_on_board_request_content_and_retry():
    env = Env()
    _identity(env)
    env.engine.on_board_request(env.ctrls[0])
    sent = env.flush()
    n = only(sent)
    assert n.subscription_id == "" and n.send_resp is True  # R-NOT.7, R-NOT.6
    ob = n.on_board_req
    assert (ob.oui, ob.product_class, ob.serial_number) == ("00D09E", "RefAgent", "SN-42")
    assert ob.agent_supported_protocol_versions == "1.0,1.1,1.2,1.3,1.4"
    assert env.engine.outstanding()[0].expires_at is None  # R-NOT.6a: never expires
    retries = env.advance(400)
    assert len(retries) >= 4
    assert env.engine.notify_resp(C1, sent[0][1].header.msg_id)
    assert env.advance(6000) == []


def test_on_board_request_needs_an_enabled_controller():
    env = Env()
    env.store.set(env.ctrls[0] + "Enable", "false")
    env.engine.on_board_request(env.ctrls[0])
    env.engine.on_board_request(CTRL + "7.")
    env.engine.on_board_request("not a path")
    assert env.flush() == []
    env = Env()
    env.engine.on_board_request(env.ctrls[0].rstrip("."))  # reference form is accepted
    assert len(env.flush()) == 1


def test_on_board_request_faults():
    env = Env("notify.onboard_no_send_resp")
    env.engine.on_board_request(env.ctrls[0])
    assert only(env.flush()).send_resp is False and env.advance(30) == []
    env = Env("notify.onboard_subscription_id")
    env.engine.on_board_request(env.ctrls[0])
    assert only(env.flush()).subscription_id != ""


def test_onboarding_complete_and_restart_time():
    env = Env()
    ctrl = env.ctrls[0]
    env.store.set(ctrl + "OnBoardingRestartTime", "60")
    env.engine.on_board_request(ctrl)
    assert env.store.get(ctrl + "OnBoardingComplete") == "false"  # TP-469 1.101
    msg = env.flush()[0][1]
    env.mono += 1
    env.engine.notify_resp(C1, msg.header.msg_id)
    assert env.engine.next_deadline() == T0 + 61
    again = env.advance(61)  # TP-469 1.102: again 60 s after the NotifyResp
    assert [t for t, _, _ in again] == [T0 + 61]
    assert notify_of(again[0][2]).WhichOneof("notification") == "on_board_req"
    env.engine.notify_resp(C1, again[0][2].header.msg_id)
    env.store.set(ctrl + "OnBoardingComplete", "true")
    assert env.advance(120) == []
    env = Env()  # TP-469 1.103: restart time 0
    env.engine.on_board_request(env.ctrls[0])
    env.engine.notify_resp(C1, env.flush()[0][1].header.msg_id)
    assert env.advance(120) == [] and env.engine.next_deadline() is None


def test_boot_sends_on_board_request_while_onboarding_incomplete():  # R-NOT.5 (3)
    env = Env(controllers=2)
    env.store.set(env.ctrls[1] + "OnBoardingComplete", "false")
    env.engine.boot("LocalReboot")
    n = only(env.flush(), C2)
    assert n.WhichOneof("notification") == "on_board_req"


# --- TriggerAction (TP-469 1.93, 1.94) -----------------------------------------------------


def test_trigger_action_config_and_notify_and_config():
    for action, notifies in (("Config", False), ("NotifyAndConfig", True)):
        env = Env()
        ctrl = env.ctrls[0]
        sub = env.add_sub("notify93", "ValueChange", ctrl + "ProvisioningCode",
                          TriggerAction=action, NotifRetry="true")
        env.store.set(sub + "TriggerConfigSettings",
                      f'{sub}Enable=false, Device.DeviceInfo.FriendlyName="a, b", '
                      "Device.DeviceInfo.ModelName=\"ro\", bogus, Device.LocalAgent.Controller."
                      "1.USPNotifRetryMinimumWaitInterval=0")
        env.store.set(ctrl + "ProvisioningCode", "TestValue93")
        sent = env.flush()
        assert len(sent) == (1 if notifies else 0)
        if notifies:
            assert only(sent).value_change.param_value == "TestValue93"
        assert env.store.get(sub + "Enable") == "false"
        assert env.store.get("Device.DeviceInfo.FriendlyName") == "a, b"
        assert env.store.get("Device.DeviceInfo.ModelName") == ""            # read-only
        assert env.store.get(ctrl + "USPNotifRetryMinimumWaitInterval") == "5"  # invalid value
    env = Env("notify.ignore_trigger_config")
    sub = env.add_sub("n", "ValueChange", env.ctrls[0] + "ProvisioningCode", TriggerAction="Config",
                      TriggerConfigSettings=f"{SUBS}1.Enable=false")
    env.store.set(env.ctrls[0] + "ProvisioningCode", "x")
    env.flush()
    assert env.store.get(sub + "Enable") == "true"


def test_trigger_config_needs_write_permission():
    env = Env(access_for=lambda _cid: DenyNotify("FriendlyName", "w"))
    env.add_sub("n", "ValueChange", env.ctrls[0] + "ProvisioningCode", TriggerAction="Config",
                TriggerConfigSettings='Device.DeviceInfo.FriendlyName="x",'
                                      'Device.DeviceInfo.HostName="h"')
    env.store.set(env.ctrls[0] + "ProvisioningCode", "x")
    env.flush()
    assert env.store.get("Device.DeviceInfo.FriendlyName") == ""
    assert env.store.get("Device.DeviceInfo.HostName") == "h"


def test_parse_and_apply_settings_directly():
    settings, problems = trigger.parse_settings(["A.B=1", 'A.C="q"', "=x", "novalue", 'A.D=""'])
    assert settings == [trigger.Setting("A.B", "1"), trigger.Setting("A.C", "q"),
                        trigger.Setting("A.D", "")]
    assert len(problems) == 2
    store = Store(load_definitions())
    assert trigger.apply_settings(store, ["Device.DeviceInfo.FriendlyName=x"]) == []
    assert len(trigger.apply_settings(store, ["Device.Nope=1", "Device.DeviceInfo.=1"])) == 2


# --- Recipient deletion (TP-469 1.78) -------------------------------------------------------


def test_subscriptions_of_a_deleted_controller_are_deleted():
    for faults, kept in (((), False), (("notify.keeps_orphan_subscriptions",), True)):
        env = Env(*faults, controllers=2)
        c2 = env.ctrls[1]
        mine = env.add_sub("mine", "ValueChange", "Device.DeviceInfo.FriendlyName")
        theirs = env.add_sub("theirs", "ValueChange", "Device.DeviceInfo.FriendlyName",
                             recipient=c2)
        env.store.delete(c2)
        assert env.store.exists(mine) and env.store.exists(theirs) is kept


# --- lifecycle and integration ---------------------------------------------------------------


def test_attach_detach():
    env = Env(attach=False)
    env.add_sub("vc", "ValueChange", "Device.DeviceInfo.FriendlyName")
    env.store.set("Device.DeviceInfo.FriendlyName", "a")
    assert env.flush() == [] and not env.engine.attached
    env.engine.attach()
    env.engine.attach()  # idempotent: one listener
    env.store.set("Device.DeviceInfo.FriendlyName", "b")
    assert len(env.flush()) == 1
    env.engine.detach()
    env.engine.detach()
    env.store.set("Device.DeviceInfo.FriendlyName", "c")
    assert env.flush() == [] and env.engine.next_deadline() is None


def test_notify_resp_through_agent_core():
    """A NotifyResp Record reaches the engine via AgentCore's 'response' event."""
    env = Env()
    _vc_with_retry(env)
    sent = env.flush()
    core = AgentCore(env.state, on_event=lambda ev: (
        env.engine.notify_resp(ev.controller_id, ev.msg.header.msg_id,
                               ev.msg.body.response.notify_resp.subscription_id)
        if ev.kind == "response" and ev.detail == "notify_resp" and ev.msg else None))
    resp = messages.response("notify_resp", {"subscription_id": "notify54"},
                             msg_id=sent[0][1].header.msg_id)
    rec = records.no_session_record(resp, to_id=AGENT, from_id=C1, version="1.4")
    assert core.handle_record(records.serialize(rec), now=env.mono) == []
    assert env.engine.outstanding() == [] and env.advance(60) == []


def test_default_msg_ids_and_rng():
    dm = load_definitions()
    state = AgentState(AGENT, dm, Store(dm))
    sent: list[tuple[str, Msg]] = []
    engine = NotificationEngine(state, send=lambda c, m: sent.append((c, m)))
    engine.attach()
    ctrl = state.store.add(CTRL, {"EndpointID": C1, "Enable": "true"})
    engine.on_board_request(ctrl)
    engine.flush()
    assert sent[0][1].header.msg_id.startswith("notify-")  # per-run prefix, then a counter


def test_every_notify_fault_is_tested():
    names = {n for n in REGISTRY if n.startswith("notify.")}
    source = Path(__file__).read_text()
    assert len(names) >= 20
    assert {n for n in names if f'"{n}"' not in source} == set()


# --- parsers and matching --------------------------------------------------------------------


def test_model_parsers():
    assert model.split_list(' a, [x=="1,2"].b ,, "q,r"=1 ,') == ('a', '[x=="1,2"].b', '"q,r"=1')
    assert model.split_list("") == ()
    assert [model.parse_bool(v) for v in ("true", "1", "True", "0", "")] == [
        True, True, False, False, False]
    assert model.parse_uint("20") == 20 and model.parse_uint("-1", 7) == 7
    assert model.parse_uint("5", 9, lo=10) == 9 and model.parse_uint("٣") == 0
    assert model.parse_datetime("2019-01-01T00:00:00Z") == 1546300800
    assert model.parse_datetime("2019-01-01T01:00:00+01:00") == 1546300800
    assert model.parse_datetime("2019-01-01T00:00:00.5") == 1546300800.5
    assert model.parse_datetime(model.UNKNOWN_TIME) is None
    assert model.parse_datetime("2019-02-30T00:00:00Z") is None
    assert model.format_datetime(1546300800) == "2019-01-01T00:00:00Z"
    assert model.format_datetime(1e20) == model.UNKNOWN_TIME
    assert model.controller_row("Device.LocalAgent.Controller.3") == CTRL + "3."
    assert model.controller_row("Device.LocalAgent.Controller.03.") is None
    assert model.controller_row("Device.LocalAgent.Controller.1.MTP.1.") is None


def test_reference_entries():
    assert parse_entry("Device.X.{i}.") is None and parse_entry("X.Y") is None
    assert parse_entry("Device.LocalAgent.Controller.*.") is not None
    assert needs_snapshot(parse_entry('Device.A.[B==1].'))
    assert not needs_snapshot(parse_entry("Device.A.*.B.1."))


def test_matcher_directly():
    env = Env()
    m = Matcher(env.store)
    ctrl = env.ctrls[0]
    assert m.value_change((ctrl + "Alias",), ctrl + "Alias")
    assert not m.value_change((ctrl + "Alias", "garbage", ctrl + "Reboot()"), ctrl + "Enable")
    assert m.value_change(("Device.LocalAgent.Controller.1.Credential#1+.", "Device."),
                          ctrl + "Enable")
    assert m.command_or_event(("Device.LocalAgent.Controller.*.SendOnBoardRequest()",),
                              ctrl + "SendOnBoardRequest()", PathKind.COMMAND)
    assert not m.command_or_event(("Device.LocalAgent.Controller.*.Timer!",),
                                  ctrl + "SendOnBoardRequest()", PathKind.COMMAND)
    assert not m.object_deletion((CTRL,), "not a path")
    assert Matcher(env.store, allow_search=False).deletion_watch((CTRL + "[Enable==true].",)) \
        == frozenset()
    assert m.deletion_watch((CTRL + "[Enable==true].",)) == frozenset({ctrl})


def test_build_helpers():
    store = Store(load_definitions())
    assert build.unique_keys(store, "Device.Nope.1.") == {}
    assert build.parameter_map(store, ["Device.Reboot()", "Device.LocalAgent.Controller.",
                                       "Device.DeviceInfo.SerialNumber", "!!"]) == \
        '{"Device.DeviceInfo.SerialNumber":""}'
    msg = build.to_msg(build.object_deletion("s", False, "Device.X.1."), "m1")
    assert msg.header.msg_type == MsgType.NOTIFY and msg.header.msg_id == "m1"


# --- hostile values (never an exception, never a crash of the store operation) --------------

_text = st.text(alphabet=st.sampled_from('Device.LocalAgent.Controller*[]="!(),1+#\\ aZ9-{}'),
                max_size=60)


@settings(max_examples=150, deadline=None)
@given(_text)
def test_split_list_never_raises(text: str):
    items = model.split_list(text)
    assert all(item == item.strip() and item for item in items)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_scalar_parsers_never_raise(text: str):
    model.parse_bool(text)
    assert 0 <= model.parse_uint(text) <= 2**32 - 1
    model.parse_datetime(text)
    row = model.controller_row(text)
    assert row is None or row.startswith(CTRL)


_SHARED = Env(controllers=2)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_text, max_size=4), _text)
def test_matcher_never_raises(entries: list[str], target: str):
    m = Matcher(_SHARED.store)
    refs = tuple(entries)
    m.value_change(refs, target)
    m.object_creation(refs, target if target.endswith(".") else target + ".")
    m.object_deletion(refs, target, frozenset({target}))
    m.deletion_watch(refs)
    m.command_or_event(refs, target, PathKind.EVENT)
    build.parameter_map(_SHARED.store, refs)
    trigger.parse_settings(refs)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=_text, ttl=st.text(max_size=8), settings_=_text, recipient=_text,
       notif_type=st.sampled_from(["ValueChange", "ObjectCreation", "ObjectDeletion", "Event",
                                   "OperationComplete", "", "Bogus"]),
       action=st.sampled_from(["Notify", "Config", "NotifyAndConfig", "", "x"]),
       expiration=st.text(max_size=6), interval=st.text(max_size=6), ptime=_text)
def test_engine_survives_hostile_subscription_values(ref, ttl, settings_, recipient, notif_type,
                                                     action, expiration, interval, ptime):
    errors = _Errors()
    log = logging.getLogger("conformance.agent.notify.engine")
    log.addHandler(errors)
    try:
        env = Env()
        ctrl = env.ctrls[0]
        env.store.set(ctrl + "PeriodicNotifInterval", interval)
        env.store.set(ctrl + "PeriodicNotifTime", ptime)
        env.store.set(ctrl + "USPNotifRetryMinimumWaitInterval", expiration)
        sub = env.store.add(SUBS, {"Enable": "true", "ID": "h", "NotifType": notif_type,
                                   "ReferenceList": ref, "TimeToLive": ttl,
                                   "NotifExpiration": expiration, "NotifRetry": "true",
                                   "TriggerAction": action, "TriggerConfigSettings": settings_,
                                   "Recipient": recipient})
        env.store.set(ctrl + "ProvisioningCode", "v")
        env.store.add(ctrl + "BootParameter.", {"Enable": "true", "ParameterName": ref})
        env.engine.event("Device.", "Boot!", {})
        env.engine.operation_complete("Device.", "Reboot()", "k")
        env.engine.on_board_request(recipient)
        env.engine.boot("LocalReboot")
        env.advance(30, step=5)
        env.engine.next_deadline()
        if env.store.exists(sub):
            env.store.delete(sub)
        env.engine.notify_resp(recipient, ref, settings_)
    finally:
        log.removeHandler(errors)
    assert errors.records == []


# --- OnBoardingComplete / OnBoardingRestartTime faults (TP-469 1.101-1.103; R-NOT.5) -------


def _answered_on_board_request(env: Env, restart_time: str) -> str:
    """Send an OnBoardRequest to the first controller and answer it (NotifyResp at T0)."""
    ctrl = env.ctrls[0]
    env.store.set(ctrl + "OnBoardingRestartTime", restart_time)
    env.engine.on_board_request(ctrl)
    assert env.engine.notify_resp(C1, env.flush()[0][1].header.msg_id)
    return ctrl


def test_on_board_request_clears_onboarding_complete_unless_faulty():  # TP-469 1.101
    for faults, expected in (((), "false"), (("notify.onboard_complete_not_cleared",), "true")):
        env = Env(*faults)
        env.engine.on_board_request(env.ctrls[0])
        assert env.store.get(env.ctrls[0] + "OnBoardingComplete") == expected
        assert only(env.flush()).WhichOneof("notification") == "on_board_req"  # still sent


def test_onboard_no_restart_fault():  # TP-469 1.102 metric 2
    env = Env()
    _answered_on_board_request(env, "60")
    assert env.engine.next_deadline() == T0 + 60
    env = Env("notify.onboard_no_restart")
    _answered_on_board_request(env, "60")
    assert env.engine.next_deadline() is None and env.advance(200) == []


def test_onboard_restart_stops_once_onboarding_completes():  # TP-469 1.102 metric 3
    env = Env()
    ctrl = _answered_on_board_request(env, "60")
    env.advance(10)
    env.store.set(ctrl + "OnBoardingComplete", "true")
    assert env.advance(200) == []


def test_onboard_restart_when_zero_fault():  # TP-469 1.103 metric 2
    from conformance.agent.notify.engine import ONBOARD_DEFAULT_RESTART

    env = Env()
    _answered_on_board_request(env, "0")
    assert env.advance(ONBOARD_DEFAULT_RESTART + 30) == []
    env = Env("notify.onboard_restart_when_zero")
    _answered_on_board_request(env, "0")
    again = env.advance(ONBOARD_DEFAULT_RESTART + 1)
    assert [t for t, _, _ in again] == [T0 + ONBOARD_DEFAULT_RESTART]
    assert notify_of(again[0][2]).WhichOneof("notification") == "on_board_req"
    env = Env("notify.onboard_restart_when_zero")  # a set restart time is still honoured
    _answered_on_board_request(env, "45")
    assert [t for t, _, _ in env.advance(46)] == [T0 + 45]


def test_send_on_board_request_command_through_agent_core():  # TP-469 1.60, 1.101
    env = Env()
    env.state.notifications = env.engine
    core = AgentCore(env.state)
    ctrl = env.ctrls[0]
    op = messages.request("operate", {"command": ctrl + "SendOnBoardRequest()",
                                      "command_key": "k", "send_resp": False}, msg_id="op-1")
    rec = records.no_session_record(op, to_id=AGENT, from_id=C1, version="1.4")
    assert core.handle_record(records.serialize(rec), now=env.mono) == []  # send_resp false
    assert env.store.get(ctrl + "OnBoardingComplete") == "false"  # R-NOT.5 (1)
    n = only(env.flush())
    assert n.subscription_id == "" and n.send_resp is True  # R-NOT.7, R-NOT.6
