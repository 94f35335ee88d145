"""The reference Agent's subscription and Notify engine (TR-369 "Notifications and
Subscription Mechanism", TR-181 ``Device.LocalAgent.Subscription.{i}.``).

:class:`NotificationEngine` watches the store (ValueChange, ObjectCreation,
ObjectDeletion), takes events and completed commands from handlers (Event,
OperationComplete, OnBoardRequest), and hands Notify request Msgs to a
``send(controller_endpoint_id, msg)`` callback. It is sans-I/O for time:
the runtime calls :meth:`NotificationEngine.poll` with the monotonic time
(retries, TimeToLive, Periodic!, OnBoardingRestartTime) and asks
:meth:`NotificationEngine.next_deadline` when to call it next.

Delivery is deferred: a trigger only queues its Notify; :meth:`flush` (also
run by :meth:`poll`) sends the queue, so the runtime can send the response to
the request that caused a change first and the Notify right after
(R-NOT.0a asks for at most 10 seconds). ``next_deadline()`` is due at once
while something is queued.

Rules implemented (R-NOT.0: the TR-181 Subscription object's rules):

* a subscription notifies only when ``Enable`` is true, only its
  ``Recipient`` Controller (when that row is enabled and has an EndpointID),
  with ``subscription_id`` = ``ID`` (R-NOT.7) and ``send_resp`` = ``NotifRetry``;
  a Controller lacking the "n" permission on the target gets nothing
  (ControllerTrust ``Param``/``Obj``/``InstantiatedObj``/``CommandEvent``);
* ValueChange skips parameters whose ValueChangeType is
  VALUE_CHANGE_WILL_IGNORE (``activeNotify="canDeny"``, e.g. ``UpTime``);
  secured parameters are reported with an empty value;
* a subscription does not report its own creation;
* NotifRetry: retransmission of the same Msg with the R-NOT.1/R-NOT.2 back-off
  until a NotifyResp with that msg_id arrives (:meth:`notify_resp`; the
  subscription_id in it is ignored, R-NOT.9), until ``NotifExpiration``
  seconds after the first attempt, or until the subscription is deleted;
  a restart (:meth:`boot`) drops every retry (R-NOT.4);
* TimeToLive: the subscription is deleted ``TimeToLive`` seconds after its
  creation (``CreationDate`` for subscriptions that survived a restart);
* TriggerAction ``Config``/``NotifyAndConfig``: TriggerConfigSettings applied
  when the subscription triggers (:mod:`.trigger`);
* Boot! (:meth:`boot`) goes to Event subscribers of ``Device.Boot!`` with
  ``ParameterMap`` built from the recipient's own BootParameter entries;
  non-persistent subscriptions are deleted right *after* the Boot! has been
  queued (the order OB-USP-Agent uses; TP-469 9.10 subscribes to Boot!
  without setting Persistent and expects the Notify after Reboot());
* Periodic!: per Controller, at PeriodicNotifTime + n x PeriodicNotifInterval,
  only to that Controller's subscribers of ``Device.LocalAgent.Periodic!``;
* OnBoardRequest (R-NOT.5 .. R-NOT.6a): empty subscription_id, send_resp
  true, retried without expiry; with ``OnBoardingComplete`` /
  ``OnBoardingRestartTime`` in the data model, the parameter is set to false
  and the request repeated OnBoardingRestartTime seconds after each
  NotifyResp while it stays false;
* subscriptions whose Recipient Controller row is deleted are deleted too
  (TR-181 strong reference; TP-469 1.78).
"""

from __future__ import annotations

import logging
import random
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from conformance.agent.context import Access, AgentState, TargetKind
from conformance.agent.datamodel.defs import value_change_type
from conformance.agent.datamodel.store import (
    Change,
    ObjectAdded,
    ObjectDeleted,
    StoreError,
    ValueChanged,
)
from conformance.agent.faults import register
from conformance.agent.notify import build, model, trigger
from conformance.agent.notify.matching import Matcher
from conformance.agent.notify.model import ControllerInfo, Subscription
from conformance.agent.notify.timing import RetryPolicy, seconds_to_next_period
from conformance.usp.messages import MsgIdAllocator
from conformance.usp.paths import PathKind
from conformance.usp.schema import Msg, msg_pb2

_log = logging.getLogger(__name__)

Notify = msg_pb2.Notify
#: (subscription_id, send_resp, recipient) -> the Notify to send.
Builder = Callable[[str, bool, ControllerInfo], Notify]
Permission = tuple[TargetKind, str]

_WILL_IGNORE = int(msg_pb2.GetSupportedDMResp.VALUE_CHANGE_WILL_IGNORE)
_SUBSCRIPTION_ROW = re.compile(r"Device\.LocalAgent\.Subscription\.[1-9][0-9]*\.")
#: Queue items handled by one flush at most (TriggerAction loops cannot spin forever).
MAX_FLUSH_ITEMS = 1000
BOOT_EVENT = ("Device.", "Boot!")
#: The restart interval the ``notify.onboard_restart_when_zero`` fault uses for 0 (seconds).
ONBOARD_DEFAULT_RESTART = 30
PERIODIC_EVENT = ("Device.LocalAgent.", "Periodic!")

for _name, _req, _text in (
    ("notify.no_retry", "TP-469 1.54 (R-NOT.1, TR-181 NotifRetry)",
     "ignores NotifRetry: sends send_resp false and never retransmits an unanswered Notify"),
    ("notify.retry_wrong_interval", "TP-469 1.54 (R-NOT.1)",
     "retransmits every USPNotifRetryMinimumWaitInterval seconds, without the multiplier"),
    ("notify.ignore_expiration", "TP-469 1.56 (TR-181 NotifExpiration)",
     "keeps retrying a Notify after NotifExpiration seconds have passed"),
    ("notify.ignore_ttl", "TP-469 1.55 (TR-181 TimeToLive)",
     "never deletes a subscription whose TimeToLive has passed"),
    ("notify.wrong_subscription_id", "TP-469 1.52 (R-NOT.7)",
     "puts the subscription's instance path in subscription_id instead of its ID"),
    ("notify.valuechange_old_value", "TP-469 1.52",
     "reports the previous value in ValueChange param_value instead of the new one"),
    ("notify.deleted_subscription_notifies", "TP-469 1.53",
     "keeps notifying for subscriptions that were deleted"),
    ("notify.missing_unique_keys", "TP-469 1.57",
     "sends ObjectCreation without the unique_keys of the new instance"),
    ("notify.obj_path_no_trailing_dot", "TP-469 1.57, 1.58 (R-MSG.3)",
     "reports ObjectCreation/ObjectDeletion obj_path without its final '.'"),
    ("notify.periodic_wrong_interval", "TP-469 1.59 (TR-181 PeriodicNotifInterval)",
     "sends Periodic! every two PeriodicNotifInterval instead of every one"),
    ("notify.onboard_no_send_resp", "TP-469 1.60 (R-NOT.6)",
     "sends OnBoardRequest with send_resp false and never retries it"),
    ("notify.onboard_subscription_id", "TP-469 1.60 (R-NOT.7)",
     "sends OnBoardRequest with a non-empty subscription_id"),
    ("notify.onboard_complete_not_cleared", "TP-469 1.101 (R-NOT.5)",
     "leaves OnBoardingComplete unchanged when it sends an OnBoardRequest"),
    ("notify.onboard_no_restart", "TP-469 1.102 (R-NOT.5, TR-181 OnBoardingRestartTime)",
     "never repeats an OnBoardRequest while OnBoardingComplete stays false"),
    ("notify.onboard_restart_when_zero", "TP-469 1.103 (R-NOT.5, TR-181 OnBoardingRestartTime)",
     f"treats OnBoardingRestartTime 0 as {ONBOARD_DEFAULT_RESTART} s and repeats the request"),
    ("notify.opcomplete_wrong_command_key", "TP-469 1.64, 1.65",
     "sends OperationComplete with an empty command_key"),
    ("notify.keeps_orphan_subscriptions", "TP-469 1.78 (TR-181 Recipient)",
     "keeps subscriptions whose Recipient Controller was deleted"),
    ("notify.no_search_path_match", "TP-469 1.84",
     "ReferenceList entries that are search paths (wildcards, expressions) never match"),
    ("notify.ignore_trigger_config", "TP-469 1.93, 1.94 (TR-181 TriggerAction)",
     "never applies TriggerConfigSettings for TriggerAction Config/NotifyAndConfig"),
    ("notify.ignore_permissions", "TP-469 2.20 (TR-181 ControllerTrust Permission 'n')",
     "notifies Controllers that lack the Notify permission on the target"),
    ("notify.boot_empty_parameter_map", "TP-469 9.10 (TR-181 BootParameter)",
     "sends Boot! with an empty ParameterMap whatever BootParameter holds"),
    ("notify.valuechange_disabled_sub", "R-NOT.0 (TR-181 Subscription.Enable)",
     "sends ValueChange for subscriptions whose Enable is false"),
    ("notify.boot_keeps_nonpersistent", "R-NOT.0 (TR-181 Subscription.Persistent)",
     "keeps subscriptions with Persistent false across a restart"),
    ("notify.wrong_recipient", "R-NOT.0 (TR-181 Subscription.Recipient)",
     "sends each subscription's Notify to every enabled Controller, not only the Recipient"),
):
    register(_name, _req, _text)


def _creation_builder(obj_path: str, keys: dict[str, str]) -> Builder:
    return lambda sid, resp, _c: build.object_creation(sid, resp, obj_path, keys)


@dataclass
class PendingNotify:
    """A Notify sent with send_resp true and not answered yet."""

    msg_id: str
    endpoint_id: str
    controller_path: str
    msg: Msg
    first_sent: float
    next_at: float               # monotonic time of the next retransmission
    expires_at: float | None     # None: retried until answered
    subscription: str | None     # None: OnBoardRequest
    retries: int = 0             # retransmissions so far

    @property
    def onboard(self) -> bool:
        return self.subscription is None


@dataclass
class _Outgoing:
    controller_path: str
    endpoint_id: str
    notify: Notify
    retry: bool
    expiration: int
    subscription: str | None
    queued_at: float
    creation_of: str | None = None  # ObjectCreation: refresh unique keys when sending


@dataclass
class _ConfigAction:
    subscription: str
    settings: tuple[str, ...]
    endpoint_id: str | None
    queued_at: float


@dataclass
class _Periodic:
    key: tuple[int, str]
    next_due: float


class NotificationEngine:
    """Subscriptions and Notify delivery of the reference Agent (implements ``Notifications``)."""

    def __init__(self, state: AgentState, *, send: Callable[[str, Msg], None],
                 rng: random.Random | None = None, msg_ids: MsgIdAllocator | None = None,
                 access_for: Callable[[str], Access] | None = None) -> None:
        self.state = state
        self.store = state.store
        self._send = send
        self.rng = rng if rng is not None else random.Random()
        self.msg_ids = msg_ids if msg_ids is not None else MsgIdAllocator(
            f"notify-{self.rng.getrandbits(32):08x}")
        self.access_for = access_for
        self._outbox: deque[_Outgoing | _ConfigAction] = deque()
        self._pending: dict[str, PendingNotify] = {}
        self._created: dict[str, float] = {}
        self._known: dict[str, Subscription] = {}
        self._ghosts: dict[str, Subscription] = {}
        self._watch: dict[str, frozenset[str]] = {}
        self._periodic: dict[str, _Periodic] = {}
        self._onboard_due: dict[str, float] = {}
        self._unlisten: Callable[[], None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def attach(self) -> None:
        """Start watching the store's change events (idempotent)."""
        if self._unlisten is None:
            self._unlisten = self.store.listen(self.on_change)
            self.refresh()

    def detach(self) -> None:
        """Stop watching the store (queued and pending notifications stay)."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    @property
    def attached(self) -> bool:
        return self._unlisten is not None

    def refresh(self) -> None:
        """Re-read the subscriptions after changes made without events (``store.quiet()``,
        ``store.load()``): creation times for TimeToLive and ObjectDeletion snapshots."""
        now, wall = self.state.monotonic(), self.state.clock()
        subs = self._subscriptions()
        present = {s.path for s in subs}
        for path in list(self._created):
            if path not in present:
                del self._created[path]
        for sub in subs:
            if sub.path not in self._created:
                when = model.parse_datetime(sub.creation_date)
                self._created[sub.path] = now if when is None else now - max(0.0, wall - when)
        self._refresh_watch(subs)

    def boot(self, cause: str, command_key: str = "", firmware_updated: bool = False) -> None:
        """The agent (re)started: Boot! to its subscribers, then drop non-persistent
        subscriptions; retries of the previous run are forgotten (R-NOT.4).

        Call after :meth:`attach` so that deletions are seen.
        """
        self._pending.clear()
        self._periodic.clear()
        self._onboard_due.clear()
        self.refresh()
        now = self.state.monotonic()
        try:
            self._boot_event(cause, command_key, firmware_updated, now)
        except Exception:  # noqa: BLE001 - a bad data model value must not stop the boot
            _log.exception("Boot! notification failed")
        if not self.state.faults.on("notify.boot_keeps_nonpersistent"):
            for sub in self._subscriptions():
                if not sub.persistent:
                    self._delete(sub.path)
        for ctrl in model.read_controllers(self.store):
            if ctrl.enable and ctrl.onboarding_complete is False:  # R-NOT.5 (3)
                self.on_board_request(ctrl.path)

    # --- store changes --------------------------------------------------------------------

    def on_change(self, change: Change) -> None:
        """Store listener (public so that a handler can replay changes it made quietly)."""
        try:
            now = self.state.monotonic()
            if isinstance(change, ValueChanged):
                self._value_changed(change, now)
                self._refresh_watch()
            elif isinstance(change, ObjectAdded):
                if _SUBSCRIPTION_ROW.fullmatch(change.path):
                    self._subscription_added(change.path, now)
                self._object_added(change.path, now)
                self._refresh_watch()
            elif isinstance(change, ObjectDeleted):
                self._object_deleted(change.path, now)
            if change.path.startswith((model.CONTROLLER_TABLE, model.SUBSCRIPTION_TABLE)):
                self._sync_periodic(now)  # a Periodic! plan starts when it is configured
        except Exception:  # noqa: BLE001 - a listener must never break the store operation
            _log.exception("notification processing failed for %r", change)

    def _value_changed(self, change: ValueChanged, now: float) -> None:
        pdef = self.store.param_def(change.path)
        if pdef is None or value_change_type(pdef) == _WILL_IGNORE:
            return
        value = change.old if self.state.faults.on("notify.valuechange_old_value") else change.new
        if pdef.secured:
            value = ""
        matcher = self._matcher()
        for sub in self._candidates(model.VALUE_CHANGE, now):
            if matcher.value_change(sub.reference_list, change.path):
                self._trigger(sub, lambda sid, resp, _c: build.value_change(
                    sid, resp, change.path, value), ("Param", change.path), now)

    def _subscription_added(self, path: str, now: float) -> None:
        self._created[path] = now
        try:
            if model.parse_datetime(self.store.get(path + "CreationDate")) is None:
                with self.store.quiet():  # populated upon creation (TR-181 CreationDate)
                    self.store.set(path + "CreationDate",
                                   model.format_datetime(self.state.clock()))
        except StoreError:
            pass

    def _object_added(self, path: str, now: float) -> None:
        matcher = self._matcher()
        for sub in self._candidates(model.OBJECT_CREATION, now):
            if sub.path == path:  # a subscription does not see its own creation
                continue
            if matcher.object_creation(sub.reference_list, path):
                keys = ({} if self.state.faults.on("notify.missing_unique_keys")
                        else build.unique_keys(self.store, path))
                shown = self._obj_path(path)
                self._trigger(sub, _creation_builder(shown, keys), ("Obj", path), now,
                              creation_of=path)

    def _object_deleted(self, path: str, now: float) -> None:
        matcher = self._matcher()
        shown = self._obj_path(path)
        for sub in self._candidates(model.OBJECT_DELETION, now):
            if matcher.object_deletion(sub.reference_list, path,
                                       self._watch.get(sub.path, frozenset())):
                self._trigger(sub, lambda sid, resp, _c: build.object_deletion(sid, resp, shown),
                              ("InstantiatedObj", path), now)
        for sub_path, watched in list(self._watch.items()):
            if path in watched:
                self._watch[sub_path] = watched - {path}
        if _SUBSCRIPTION_ROW.fullmatch(path):
            self._subscription_gone(path)
        if model.controller_row(path) == path:
            self._controller_gone(path)

    def _subscription_gone(self, path: str) -> None:
        self._created.pop(path, None)
        self._watch.pop(path, None)
        last = self._known.pop(path, None)
        if last is not None and self.state.faults.on("notify.deleted_subscription_notifies"):
            self._ghosts[path] = last
        for msg_id, pending in list(self._pending.items()):
            if pending.subscription == path:
                del self._pending[msg_id]

    def _controller_gone(self, path: str) -> None:
        self._periodic.pop(path, None)
        self._onboard_due.pop(path, None)
        for msg_id, pending in list(self._pending.items()):
            if pending.controller_path == path:
                del self._pending[msg_id]
        if self.state.faults.on("notify.keeps_orphan_subscriptions"):
            return
        for sub in self._subscriptions():
            if sub.recipient == path:
                self._delete(sub.path)

    # --- handler-reported events (Notifications protocol) -----------------------------------

    def event(self, obj_path: str, event_name: str, params: dict[str, str]) -> None:
        """An event happened on ``obj_path`` (``Device.``, ``Boot!``): notify its subscribers."""
        try:
            self._event(obj_path, event_name, dict(params), self.state.monotonic())
        except Exception:  # noqa: BLE001 - a handler's event must not fail its request
            _log.exception("Event notification for %s%s failed", obj_path, event_name)

    def _event(self, obj_path: str, event_name: str, params: dict[str, str], now: float,
               only_recipient: str | None = None,
               builder: Builder | None = None) -> None:
        full = obj_path + event_name
        matcher = self._matcher()
        make: Builder = builder or (lambda sid, resp, _c: build.event(
            sid, resp, obj_path, event_name, params))
        for sub in self._candidates(model.EVENT, now):
            if only_recipient is not None and sub.recipient != only_recipient:
                continue
            if matcher.command_or_event(sub.reference_list, full, PathKind.EVENT):
                self._trigger(sub, make, ("CommandEvent", full), now)

    def operation_complete(self, obj_path: str, command_name: str, command_key: str, *,
                           output_args: dict[str, str] | None = None,
                           failure: tuple[int, str] | None = None) -> None:
        """An asynchronous command finished: OperationComplete to its subscribers."""
        try:
            now = self.state.monotonic()
            full = obj_path + command_name
            key = "" if self.state.faults.on("notify.opcomplete_wrong_command_key") else command_key
            args = dict(output_args or {})
            matcher = self._matcher()
            for sub in self._candidates(model.OPERATION_COMPLETE, now):
                if matcher.command_or_event(sub.reference_list, full, PathKind.COMMAND):
                    self._trigger(sub, lambda sid, resp, _c: build.operation_complete(
                        sid, resp, obj_path, command_name, key, output_args=args,
                        failure=failure), ("CommandEvent", full), now)
        except Exception:  # noqa: BLE001 - a handler's event must not fail its request
            _log.exception("OperationComplete notification for %s%s failed", obj_path, command_name)

    def on_board_request(self, controller_path: str) -> None:
        """Queue an OnBoardRequest for the Controller row ``controller_path`` (R-NOT.5)."""
        try:
            self._on_board_request(controller_path, self.state.monotonic())
        except Exception:  # noqa: BLE001 - a handler's event must not fail its request
            _log.exception("OnBoardRequest to %s failed", controller_path)

    def _on_board_request(self, controller_path: str, now: float) -> None:
        row = model.controller_row(controller_path)
        ctrl = model.read_controller(self.store, row) if row else None
        if ctrl is None or not ctrl.enable or not ctrl.endpoint_id:
            _log.info("no OnBoardRequest: %s is not an enabled Controller", controller_path)
            return
        faults = self.state.faults
        if ctrl.onboarding_complete is not None \
                and not faults.on("notify.onboard_complete_not_cleared"):  # R-NOT.5 (1)
            self.store.set(ctrl.path + "OnBoardingComplete", "false")
        self._onboard_due.pop(ctrl.path, None)
        send_resp = not faults.on("notify.onboard_no_send_resp")  # R-NOT.6
        oui, product_class, serial = build.device_identity(self.store)
        notify = build.on_board_request(
            "onboard" if faults.on("notify.onboard_subscription_id") else "",  # R-NOT.7
            send_resp, oui=oui, product_class=product_class, serial_number=serial,
            versions=self.state.supported_versions)
        self._outbox.append(_Outgoing(ctrl.path, ctrl.endpoint_id, notify, send_resp, 0, None,
                                      now))  # R-NOT.6a: no expiry

    # --- responses -----------------------------------------------------------------------

    def notify_resp(self, controller_id: str, msg_id: str, subscription_id: str = "", *,
                    now: float | None = None) -> bool:
        """A NotifyResp arrived: stop retrying ``msg_id`` (R-NOT.3). The subscription_id is
        ignored (R-NOT.9). True when it answered a pending Notify from ``controller_id``."""
        pending = self._pending.get(msg_id)
        if pending is None or pending.endpoint_id != controller_id:
            return False
        del self._pending[msg_id]
        if pending.onboard:
            self._plan_onboard_restart(pending.controller_path, now)
        return True

    def _plan_onboard_restart(self, controller_path: str, now: float | None) -> None:
        """OnBoardingRestartTime: the next OnBoardRequest while OnBoardingComplete stays
        false, counted from the NotifyResp (R-NOT.5); 0 means no restart."""
        faults = self.state.faults
        ctrl = model.read_controller(self.store, controller_path)
        if ctrl is None or ctrl.onboarding_complete is not False \
                or faults.on("notify.onboard_no_restart"):
            return
        delay = ctrl.onboarding_restart_time
        if delay == 0 and faults.on("notify.onboard_restart_when_zero"):
            delay = ONBOARD_DEFAULT_RESTART
        if delay > 0:
            at = self.state.monotonic() if now is None else now
            self._onboard_due[ctrl.path] = at + delay

    # --- time -----------------------------------------------------------------------------

    def flush(self, now: float | None = None) -> int:
        """Send everything queued (and apply queued TriggerConfigSettings); return the number
        of Msgs sent."""
        now = self.state.monotonic() if now is None else now
        sent = 0
        for _ in range(MAX_FLUSH_ITEMS):
            if not self._outbox:
                break
            item = self._outbox.popleft()
            try:
                if isinstance(item, _ConfigAction):
                    self._apply_config(item)
                else:
                    sent += self._deliver(item, now)
            except Exception:  # noqa: BLE001 - one bad item must not block the queue
                _log.exception("delivering %r failed", item)
        return sent

    def poll(self, now: float) -> None:
        """Do what is due at monotonic time ``now``: queued Notifys, retries, TimeToLive
        expiry, Periodic! events and OnBoardRequest restarts."""
        self.flush(now)
        for step in (self._expire_subscriptions, self._retry_due, self._periodic_due,
                     self._onboard_restarts):
            try:
                step(now)
            except Exception:  # noqa: BLE001 - one timer must not stop the others
                _log.exception("notification timer step %s failed", step.__name__)
        self.flush(now)

    def next_deadline(self) -> float | None:
        """Monotonic time at which :meth:`poll` has work to do; None when nothing is scheduled."""
        now = self.state.monotonic()
        times = [item.queued_at for item in self._outbox]
        times += [p.next_at for p in self._pending.values()]
        if not self.state.faults.on("notify.ignore_ttl"):
            times += [self._created_at(s, now) + s.time_to_live
                      for s in self._subscriptions() if s.time_to_live > 0]
        self._sync_periodic(now)
        times += [p.next_due for p in self._periodic.values()]
        times += list(self._onboard_due.values())
        return min(times) if times else None

    # --- introspection --------------------------------------------------------------------

    def outstanding(self) -> list[PendingNotify]:
        """Notifys waiting for a NotifyResp (copies)."""
        return [replace(p) for p in self._pending.values()]

    def queued(self) -> int:
        """Number of queued Notifys and configuration actions not flushed yet."""
        return len(self._outbox)

    # --- internals: triggering --------------------------------------------------------------

    def _matcher(self) -> Matcher:
        return Matcher(self.store,
                       allow_search=not self.state.faults.on("notify.no_search_path_match"))

    def _subscriptions(self) -> list[Subscription]:
        subs = model.read_subscriptions(self.store)
        for sub in subs:
            self._known[sub.path] = sub
        return subs

    def _created_at(self, sub: Subscription, now: float) -> float:
        return self._created.setdefault(sub.path, now)

    def _candidates(self, notif_type: str, now: float) -> list[Subscription]:
        """Subscriptions of ``notif_type`` that may trigger now."""
        faults = self.state.faults
        subs = self._subscriptions()
        if faults.on("notify.deleted_subscription_notifies"):
            subs += [g for p, g in self._ghosts.items() if not self.store.exists(p)]
        ignore_ttl = faults.on("notify.ignore_ttl")
        out = []
        for sub in subs:
            if sub.notif_type != notif_type:
                continue
            if not sub.enable and not (notif_type == model.VALUE_CHANGE
                                       and faults.on("notify.valuechange_disabled_sub")):
                continue  # TR-181 Enable: a disabled entry is not processed
            if (sub.time_to_live and not ignore_ttl
                    and now >= self._created_at(sub, now) + sub.time_to_live):
                continue  # expired, deleted at the next poll
            out.append(sub)
        return out

    def _trigger(self, sub: Subscription, builder: Builder, target: Permission, now: float,
                 *, creation_of: str | None = None) -> None:
        """The subscription's condition happened: queue its Notify and/or config action."""
        faults = self.state.faults
        recipients = self._recipients(sub)
        if sub.notifies:
            sid = sub.path if faults.on("notify.wrong_subscription_id") else sub.id
            retry = sub.notif_retry and not faults.on("notify.no_retry")
            for ctrl in recipients:
                if not self._may(ctrl.endpoint_id, target, "n"):
                    continue
                self._outbox.append(_Outgoing(ctrl.path, ctrl.endpoint_id,
                                              builder(sid, retry, ctrl), retry,
                                              sub.notif_expiration, sub.path, now, creation_of))
        if sub.configures and not faults.on("notify.ignore_trigger_config"):
            owner = recipients[0].endpoint_id if recipients else None
            self._outbox.append(_ConfigAction(sub.path, sub.trigger_config, owner, now))

    def _recipients(self, sub: Subscription) -> list[ControllerInfo]:
        if self.state.faults.on("notify.wrong_recipient"):
            return [c for c in model.read_controllers(self.store) if c.enable and c.endpoint_id]
        ctrl = model.read_controller(self.store, sub.recipient) if sub.recipient else None
        if ctrl is None or not ctrl.enable or not ctrl.endpoint_id:
            return []
        return [ctrl]

    def _may(self, endpoint_id: str | None, target: Permission, op: str) -> bool:
        if self.access_for is None or self.state.faults.on("notify.ignore_permissions"):
            return True
        if endpoint_id is None:
            return False
        try:
            return bool(self.access_for(endpoint_id).allows(target[0], target[1], op))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - an unknown permission is a denied one
            _log.exception("permission lookup for %s failed", endpoint_id)
            return False

    def _obj_path(self, path: str) -> str:
        if self.state.faults.on("notify.obj_path_no_trailing_dot"):
            return path.rstrip(".")
        return path

    def _refresh_watch(self, subs: list[Subscription] | None = None) -> None:
        """Snapshot what search-path ObjectDeletion subscriptions cover, before any deletion."""
        subs = self._subscriptions() if subs is None else subs
        matcher = self._matcher()
        self._watch = {s.path: matcher.deletion_watch(s.reference_list)
                       for s in subs if s.notif_type == model.OBJECT_DELETION}

    def _delete(self, path: str) -> None:
        try:
            if self.store.exists(path):
                self.store.delete(path)
        except StoreError:
            pass

    # --- internals: delivery ---------------------------------------------------------------

    def _deliver(self, item: _Outgoing, now: float) -> int:
        if item.creation_of is not None and item.notify.HasField("obj_creation") \
                and not self.state.faults.on("notify.missing_unique_keys") \
                and self.store.exists(item.creation_of):
            keys = item.notify.obj_creation.unique_keys
            keys.clear()
            keys.update(build.unique_keys(self.store, item.creation_of))
        msg = build.to_msg(item.notify, self.msg_ids.next())
        self._transmit(item.endpoint_id, msg)
        if item.retry:
            ctrl = model.read_controller(self.store, item.controller_path)
            if ctrl is not None:
                expires = now + item.expiration if item.expiration > 0 else None
                pending = PendingNotify(msg.header.msg_id, item.endpoint_id, ctrl.path, msg,
                                        first_sent=now, next_at=now, expires_at=expires,
                                        subscription=item.subscription)
                self._schedule_retry(pending, ctrl, now)
        return 1

    def _transmit(self, endpoint_id: str, msg: Msg) -> None:
        try:
            self._send(endpoint_id, msg)
        except Exception:  # noqa: BLE001 - the retry logic covers transient MTP failures
            _log.exception("sending Notify %s to %s failed", msg.header.msg_id, endpoint_id)

    def _schedule_retry(self, pending: PendingNotify, ctrl: ControllerInfo, now: float) -> None:
        """Plan the next retransmission, or forget the Notify when NotifExpiration ends first."""
        faults = self.state.faults
        policy = RetryPolicy(ctrl.retry_min_wait, ctrl.retry_multiplier)
        if faults.on("notify.retry_wrong_interval"):
            wait = policy.min_wait
        else:
            wait = policy.wait(pending.retries + 1, self.rng)  # R-NOT.1, R-NOT.2
        pending.next_at = now + wait
        if (pending.expires_at is not None and pending.next_at > pending.expires_at
                and not faults.on("notify.ignore_expiration")):
            self._pending.pop(pending.msg_id, None)
            return
        self._pending[pending.msg_id] = pending

    def _retry_due(self, now: float) -> None:
        for pending in sorted(self._pending.values(), key=lambda p: p.next_at):
            if pending.next_at > now or pending.msg_id not in self._pending:
                continue
            ctrl = model.read_controller(self.store, pending.controller_path)
            if ctrl is None or ctrl.endpoint_id != pending.endpoint_id:
                del self._pending[pending.msg_id]
                continue
            if (pending.expires_at is not None and now > pending.expires_at
                    and not self.state.faults.on("notify.ignore_expiration")):
                del self._pending[pending.msg_id]
                continue
            self._transmit(pending.endpoint_id, pending.msg)
            pending.retries += 1
            self._schedule_retry(pending, ctrl, now)

    def _apply_config(self, action: _ConfigAction) -> None:
        owner = action.endpoint_id
        problems = trigger.apply_settings(
            self.store, action.settings,
            may_write=lambda path: self._may(owner, ("Param", path), "w"))
        for problem in problems:
            _log.warning("TriggerConfigSettings of %s: %s", action.subscription, problem)

    # --- internals: timers -----------------------------------------------------------------

    def _expire_subscriptions(self, now: float) -> None:
        if self.state.faults.on("notify.ignore_ttl"):
            return
        for sub in self._subscriptions():
            if sub.time_to_live and now >= self._created_at(sub, now) + sub.time_to_live:
                self._delete(sub.path)

    def _sync_periodic(self, now: float) -> None:
        """(Re)plan Periodic! for every enabled Controller that has a PeriodicNotifInterval
        and an enabled subscription to ``Device.LocalAgent.Periodic!``."""
        matcher = self._matcher()
        subscribed = {s.recipient for s in self._subscriptions()
                      if s.enable and s.notif_type == model.EVENT and s.recipient
                      and matcher.command_or_event(s.reference_list, "".join(PERIODIC_EVENT),
                                                   PathKind.EVENT)}
        wanted = {}
        for path in sorted(p for p in subscribed if p):
            ctrl = model.read_controller(self.store, path)
            if ctrl is not None and ctrl.enable and ctrl.periodic_interval > 0:
                wanted[path] = ctrl
        for path in list(self._periodic):
            if path not in wanted:
                del self._periodic[path]
        for path, ctrl in wanted.items():
            key = (ctrl.periodic_interval, ctrl.periodic_time)
            plan = self._periodic.get(path)
            if plan is None or plan.key != key:
                delay = seconds_to_next_period(self.state.clock(),
                                               model.parse_datetime(ctrl.periodic_time),
                                               ctrl.periodic_interval)
                self._periodic[path] = _Periodic(key, now + delay)

    def _periodic_due(self, now: float) -> None:
        self._sync_periodic(now)
        for path, plan in self._periodic.items():
            if plan.next_due > now:
                continue
            self._event(*PERIODIC_EVENT, {}, now, only_recipient=path)
            step = plan.key[0] * (2 if self.state.faults.on("notify.periodic_wrong_interval") else 1)
            while plan.next_due <= now:
                plan.next_due += step

    def _onboard_restarts(self, now: float) -> None:
        for path, due in list(self._onboard_due.items()):
            if due > now:
                continue
            del self._onboard_due[path]
            ctrl = model.read_controller(self.store, path)
            if ctrl is not None and ctrl.onboarding_complete is False:
                self._on_board_request(path, now)

    def _boot_event(self, cause: str, command_key: str, firmware_updated: bool,
                    now: float) -> None:
        empty_map = self.state.faults.on("notify.boot_empty_parameter_map")

        def boot_notify(sid: str, resp: bool, ctrl: ControllerInfo) -> Notify:
            if empty_map:
                param_map = "{}"
            else:  # only the recipient's own BootParameter entries
                param_map = build.parameter_map(
                    self.store, build.boot_parameter_names(self.store, ctrl.path),
                    can_read=lambda path: self._may(ctrl.endpoint_id, ("Param", path), "r"))
            return build.event(sid, resp, *BOOT_EVENT, {
                "CommandKey": command_key,
                "Cause": cause,
                "FirmwareUpdated": "true" if firmware_updated else "false",
                "ParameterMap": param_map,
            })

        self._event(*BOOT_EVENT, {}, now, builder=boot_notify)
