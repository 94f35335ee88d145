"""Subscriptions and Controllers as the notification engine reads them from the store.

TR-181 ``Device.LocalAgent.Subscription.{i}.`` and ``Device.LocalAgent.Controller.{i}.``
hold strings a Controller wrote; this module turns them into typed snapshots
(:class:`Subscription`, :class:`ControllerInfo`) without ever raising on odd
values: a boolean that is not ``true``/``1`` is false, a number that does not
parse takes its TR-181 default, a malformed list item is kept as text for the
matcher to discard.

Also the small parsers the engine needs: comma-separated lists that may hold
search expressions (:func:`split_list`), TR-106 ``dateTime`` to POSIX seconds
(:func:`parse_datetime`) and the Controller row a ``Recipient`` reference
names (:func:`controller_row`).
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

from conformance.agent.datamodel.store import Store, StoreError

SUBSCRIPTION_TABLE = "Device.LocalAgent.Subscription."
CONTROLLER_TABLE = "Device.LocalAgent.Controller."
#: TR-106 "Unknown Time": no absolute time reference.
UNKNOWN_TIME = "0001-01-01T00:00:00Z"

#: Subscription NotifType values (TR-181 enumeration).
VALUE_CHANGE = "ValueChange"
OBJECT_CREATION = "ObjectCreation"
OBJECT_DELETION = "ObjectDeletion"
OPERATION_COMPLETE = "OperationComplete"
EVENT = "Event"

_DATETIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?")
_CONTROLLER_ROW_RE = re.compile(r"Device\.LocalAgent\.Controller\.([1-9][0-9]{0,9})\.?")


def parse_bool(text: str) -> bool:
    """TR-106 boolean: ``true`` or ``1`` (anything else is false)."""
    return text.strip() in ("true", "1")


def parse_uint(text: str, default: int = 0, *, lo: int = 0, hi: int = 2**32 - 1) -> int:
    """An unsignedInt within ``lo..hi``; ``default`` when it does not parse or is out of range."""
    text = text.strip()
    if not text.isascii() or not text.lstrip("+").isdigit() or len(text) > 12:
        return default
    value = int(text)
    return value if lo <= value <= hi else default


def split_list(text: str) -> tuple[str, ...]:
    """Items of a TR-106 comma-separated list, trimmed, empty items dropped.

    Commas inside ``[...]`` (search expressions) and inside double quotes
    (string constants, TriggerConfigSettings values) do not split.
    """
    items: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return tuple(item.strip() for item in items if item.strip())


def parse_datetime(text: str) -> float | None:
    """POSIX seconds of a TR-106 dateTime; None for Unknown Time or a malformed value.

    A value without a zone designator is taken as UTC.
    """
    m = _DATETIME_RE.fullmatch(text.strip())
    if m is None:
        return None
    try:
        when = _dt.datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]),
                            tzinfo=_dt.UTC)
    except ValueError:
        return None
    if when.year == 1:  # Unknown Time (and any other year-1 value)
        return None
    seconds = when.timestamp() + (float(m[7]) if m[7] else 0.0)
    zone = m[8]
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds


def format_datetime(seconds: float) -> str:
    """TR-106 dateTime (UTC, whole seconds) for POSIX ``seconds``."""
    try:
        when = _dt.datetime.fromtimestamp(int(seconds), tz=_dt.UTC)
    except (OverflowError, OSError, ValueError):
        return UNKNOWN_TIME
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def controller_row(reference: str) -> str | None:
    """``Device.LocalAgent.Controller.N.`` for a Recipient value (with or without the final dot)."""
    m = _CONTROLLER_ROW_RE.fullmatch(reference.strip())
    return f"{CONTROLLER_TABLE}{int(m[1])}." if m else None


def _get(store: Store, path: str, default: str = "") -> str:
    try:
        return store.get(path)
    except StoreError:
        return default


@dataclass(frozen=True)
class Subscription:
    """One ``Device.LocalAgent.Subscription.{i}.`` instance."""

    path: str                         # Device.LocalAgent.Subscription.3.
    id: str
    enable: bool
    recipient: str | None             # Device.LocalAgent.Controller.N. or None
    notif_type: str
    reference_list: tuple[str, ...]
    persistent: bool
    time_to_live: int                 # seconds, 0: forever
    notif_retry: bool
    notif_expiration: int             # seconds, 0: until delivered
    trigger_action: str               # Notify, Config, NotifyAndConfig
    trigger_config: tuple[str, ...]
    creation_date: str

    @property
    def notifies(self) -> bool:
        """Whether a trigger sends a Notify (TriggerAction Notify/NotifyAndConfig; unknown: Notify)."""
        return self.trigger_action != "Config"

    @property
    def configures(self) -> bool:
        """Whether a trigger applies TriggerConfigSettings (Config/NotifyAndConfig)."""
        return self.trigger_action in ("Config", "NotifyAndConfig")


def read_subscription(store: Store, path: str) -> Subscription | None:
    """The subscription at ``path``; None when it does not exist."""
    if not store.exists(path):
        return None
    return Subscription(
        path=path,
        id=_get(store, path + "ID"),
        enable=parse_bool(_get(store, path + "Enable")),
        recipient=controller_row(_get(store, path + "Recipient")),
        notif_type=_get(store, path + "NotifType").strip(),
        reference_list=split_list(_get(store, path + "ReferenceList")),
        persistent=parse_bool(_get(store, path + "Persistent")),
        time_to_live=parse_uint(_get(store, path + "TimeToLive")),
        notif_retry=parse_bool(_get(store, path + "NotifRetry")),
        notif_expiration=parse_uint(_get(store, path + "NotifExpiration")),
        trigger_action=_get(store, path + "TriggerAction", "Notify").strip() or "Notify",
        trigger_config=split_list(_get(store, path + "TriggerConfigSettings")),
        creation_date=_get(store, path + "CreationDate", UNKNOWN_TIME),
    )


def read_subscriptions(store: Store) -> list[Subscription]:
    """Every subscription instance, in instance-number order."""
    subs = (read_subscription(store, p) for p in store.instances(SUBSCRIPTION_TABLE))
    return [s for s in subs if s is not None]


@dataclass(frozen=True)
class ControllerInfo:
    """The parts of ``Device.LocalAgent.Controller.{i}.`` that notifications use."""

    path: str                         # Device.LocalAgent.Controller.N.
    endpoint_id: str
    enable: bool
    retry_min_wait: int               # USPNotifRetryMinimumWaitInterval (m), 1..65535
    retry_multiplier: int             # USPNotifRetryIntervalMultiplier (k), 1000..65535
    periodic_interval: int            # PeriodicNotifInterval, 0: none
    periodic_time: str                # PeriodicNotifTime
    onboarding_complete: bool | None  # None: parameter not supported
    onboarding_restart_time: int      # OnBoardingRestartTime, 0: no restart


def read_controller(store: Store, path: str) -> ControllerInfo | None:
    """The controller row at ``path``; None when it does not exist."""
    if not store.exists(path):
        return None
    has_onboarding = store.param_def(path + "OnBoardingComplete") is not None
    return ControllerInfo(
        path=path,
        endpoint_id=_get(store, path + "EndpointID").strip(),
        enable=parse_bool(_get(store, path + "Enable")),
        retry_min_wait=parse_uint(_get(store, path + "USPNotifRetryMinimumWaitInterval"), 5,
                                  lo=1, hi=65535),
        retry_multiplier=parse_uint(_get(store, path + "USPNotifRetryIntervalMultiplier"), 2000,
                                    lo=1000, hi=65535),
        periodic_interval=parse_uint(_get(store, path + "PeriodicNotifInterval")),
        periodic_time=_get(store, path + "PeriodicNotifTime", UNKNOWN_TIME),
        onboarding_complete=(parse_bool(_get(store, path + "OnBoardingComplete"))
                             if has_onboarding else None),
        onboarding_restart_time=parse_uint(_get(store, path + "OnBoardingRestartTime")),
    )


def read_controllers(store: Store) -> list[ControllerInfo]:
    """Every controller row, in instance-number order."""
    rows = (read_controller(store, p) for p in store.instances(CONTROLLER_TABLE))
    return [c for c in rows if c is not None]
