"""Reconnect back-off of the reference Agent, one policy per MTP (pure, no clocks).

Each policy turns a retry number ``n`` (1 = the first retry after a failed
or lost connection) into the interval the wait is drawn from, and draws it
with an injected :class:`random.Random`:

* MQTT (R-MQTT.10, R-MQTT.33; ``Device.MQTT.Client.{i}.ConnectRetryTime``,
  ``ConnectRetryIntervalMultiplier``, ``ConnectRetryMaxInterval``):
  ``[T*(k/1000)^(n-1), T*(k/1000)^n]`` with ``n`` frozen at 10 from the
  11th retry on; a drawn value above the maximum interval becomes the
  maximum.  TP-469 11.16 expects the first retry in ``[T, T*k/1000]``.
* STOMP (R-STOMP.7, R-STOMP.25; ``Device.STOMP.Connection.{i}.ServerRetry*``):
  ``[0, I*(k/1000)^(n-1)]``, ``n`` frozen at 10, capped by the maximum.
* WebSocket (R-WS.19..R-WS.21; ``Device.LocalAgent.Controller.{i}.MTP.{i}.
  WebSocket.SessionRetryMinimumWaitInterval`` / ``SessionRetryIntervalMultiplier``):
  ``[m*(k/1000)^(n-1), m*(k/1000)^n]``, ``n`` frozen at 10, no maximum.
* UDS (R-UDS.5): a random wait between 1 and 5 seconds every time.

Multipliers are in thousandths (TR-181 range 1000..65535); intervals are
seconds and may be fractions so tests can run the real algorithms fast.
:class:`Backoff` keeps the retry count of one connection: ``next_delay`` after
each failure, ``reset`` once a connection is established (R-WS.20).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "MAX_RETRY_EXPONENT",
    "Backoff",
    "MQTTRetry",
    "RetryPolicy",
    "STOMPRetry",
    "UDSRetry",
    "WebSocketRetry",
]

#: Retries after the 10th reuse the 10th interval (TR-181 ConnectRetryTime,
#: ServerRetryIntervalMultiplier; R-WS.19 "#10 and subsequent").
MAX_RETRY_EXPONENT = 10
_MIN_MULTIPLIER, _MAX_MULTIPLIER = 1000, 65535


class RetryPolicy(Protocol):
    """What :class:`Backoff` needs from a policy."""

    def bounds(self, retry: int) -> tuple[float, float]:
        """The interval (seconds) the wait of retry number ``retry`` is drawn from."""
        ...

    def delay(self, retry: int, rng: random.Random) -> float:
        """The wait (seconds) before retry number ``retry``."""
        ...


def _check_retry(retry: int) -> int:
    if isinstance(retry, bool) or not isinstance(retry, int) or retry < 1:
        raise ValueError(f"retry number must be an int >= 1, not {retry!r}")
    return min(retry, MAX_RETRY_EXPONENT)


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, not {value!r}")


def _check_multiplier(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not (
            _MIN_MULTIPLIER <= value <= _MAX_MULTIPLIER):
        raise ValueError(f"interval multiplier must be an int in {_MIN_MULTIPLIER}.."
                         f"{_MAX_MULTIPLIER} (thousandths), not {value!r}")


def _capped(bounds: tuple[float, float], maximum: float | None) -> tuple[float, float]:
    if maximum is None:
        return bounds
    return min(bounds[0], maximum), min(bounds[1], maximum)


def _draw(bounds: tuple[float, float], rng: random.Random) -> float:
    low, high = bounds
    return low if high <= low else rng.uniform(low, high)


@dataclass(frozen=True)
class MQTTRetry:
    """``Device.MQTT.Client.{i}`` connect retry (R-MQTT.10, R-MQTT.33)."""

    connect_retry_time: float = 5.0
    interval_multiplier: int = 2000
    max_interval: float | None = 30720.0

    def __post_init__(self) -> None:
        _check_positive("ConnectRetryTime", self.connect_retry_time)
        _check_multiplier(self.interval_multiplier)
        if self.max_interval is not None:
            _check_positive("ConnectRetryMaxInterval", self.max_interval)

    def bounds(self, retry: int) -> tuple[float, float]:
        n = _check_retry(retry)
        k = self.interval_multiplier / 1000
        t = self.connect_retry_time
        return _capped((t * k ** (n - 1), t * k ** n), self.max_interval)

    def delay(self, retry: int, rng: random.Random) -> float:
        n = _check_retry(retry)
        k = self.interval_multiplier / 1000
        t = self.connect_retry_time
        value = _draw((t * k ** (n - 1), t * k ** n), rng)
        # The random value is drawn first; only a value above the maximum is replaced.
        return value if self.max_interval is None else min(value, self.max_interval)


@dataclass(frozen=True)
class STOMPRetry:
    """``Device.STOMP.Connection.{i}`` server retry (R-STOMP.7, R-STOMP.25)."""

    initial_interval: float = 60.0
    interval_multiplier: int = 2000
    max_interval: float | None = 30720.0

    def __post_init__(self) -> None:
        _check_positive("ServerRetryInitialInterval", self.initial_interval)
        _check_multiplier(self.interval_multiplier)
        if self.max_interval is not None:
            _check_positive("ServerRetryMaxInterval", self.max_interval)

    def bounds(self, retry: int) -> tuple[float, float]:
        n = _check_retry(retry)
        upper = self.initial_interval * (self.interval_multiplier / 1000) ** (n - 1)
        return _capped((0.0, upper), self.max_interval)

    def delay(self, retry: int, rng: random.Random) -> float:
        n = _check_retry(retry)
        upper = self.initial_interval * (self.interval_multiplier / 1000) ** (n - 1)
        value = _draw((0.0, upper), rng)
        return value if self.max_interval is None else min(value, self.max_interval)


@dataclass(frozen=True)
class WebSocketRetry:
    """``...Controller.{i}.MTP.{i}.WebSocket`` session retry (R-WS.19); defaults are the
    factory values R-WS.19 mandates (5 s, 2000)."""

    minimum_wait_interval: float = 5.0
    interval_multiplier: int = 2000

    def __post_init__(self) -> None:
        _check_positive("SessionRetryMinimumWaitInterval", self.minimum_wait_interval)
        _check_multiplier(self.interval_multiplier)

    def bounds(self, retry: int) -> tuple[float, float]:
        n = _check_retry(retry)
        k = self.interval_multiplier / 1000
        m = self.minimum_wait_interval
        return m * k ** (n - 1), m * k ** n

    def delay(self, retry: int, rng: random.Random) -> float:
        return _draw(self.bounds(retry), rng)


@dataclass(frozen=True)
class UDSRetry:
    """UDS client reconnect (R-UDS.5): uniform in ``[low, high]``, 1..5 s by default."""

    low: float = 1.0
    high: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError(f"need 0 <= low <= high, got {self.low!r}, {self.high!r}")

    def bounds(self, retry: int) -> tuple[float, float]:
        _check_retry(retry)
        return self.low, self.high

    def delay(self, retry: int, rng: random.Random) -> float:
        return _draw(self.bounds(retry), rng)


class Backoff:
    """The retry count of one connection and the waits its policy gives."""

    def __init__(self, policy: RetryPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng if rng is not None else random.Random()
        #: Retries since the last established connection (0: none yet).
        self.retry = 0

    def next_delay(self) -> float:
        """Count one more retry and return its wait in seconds."""
        self.retry += 1
        return self.policy.delay(self.retry, self.rng)

    def bounds(self) -> tuple[float, float]:
        """Bounds of the current retry's wait (call after :meth:`next_delay`)."""
        return self.policy.bounds(max(self.retry, 1))

    def reset(self) -> None:
        """A connection was established: the next failure is retry 1 again (R-WS.20)."""
        self.retry = 0
