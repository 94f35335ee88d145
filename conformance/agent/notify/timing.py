"""When notifications are due: the Notify retry back-off and the Periodic! phase.

Pure arithmetic, no clock: callers pass the times in.

* R-NOT.1 / R-NOT.2: retry ``n`` waits a random time in
  ``[m*(k/1000)^(n-1), m*(k/1000)^n]`` seconds, where ``m`` is
  ``USPNotifRetryMinimumWaitInterval`` and ``k``
  ``USPNotifRetryIntervalMultiplier`` of the recipient Controller; from the
  tenth retry on the range stays that of the tenth.
* TR-181 ``Controller.{i}.PeriodicNotifTime``: Periodic! events fall on
  ``PeriodicNotifTime + j * PeriodicNotifInterval`` (any integer ``j``);
  Unknown Time lets the agent pick the phase.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: R-NOT.2: the retry count whose range is used for every later retry.
MAX_RETRY_STEP = 10


@dataclass(frozen=True)
class RetryPolicy:
    """Back-off of one Controller (R-NOT.1 defaults: m = 5 s, k = 2000)."""

    min_wait: float = 5.0
    multiplier: int = 2000

    def bounds(self, retry: int) -> tuple[float, float]:
        """Wait interval range (seconds) before retry number ``retry`` (1-based)."""
        n = min(max(retry, 1), MAX_RETRY_STEP)
        factor = self.multiplier / 1000
        return self.min_wait * factor ** (n - 1), self.min_wait * factor ** n

    def wait(self, retry: int, rng: random.Random) -> float:
        """A random wait within :meth:`bounds` for retry ``retry``."""
        lo, hi = self.bounds(retry)
        return rng.uniform(lo, hi)


def seconds_to_next_period(wall_now: float, phase: float | None, interval: int) -> float:
    """Seconds from ``wall_now`` until the next Periodic! time (0 when one is due now).

    ``phase`` is PeriodicNotifTime in POSIX seconds, or None for Unknown Time,
    in which case the agent chooses "now" as the reference and the first
    event comes one interval later.
    """
    if interval <= 0:
        raise ValueError("the periodic interval must be positive")
    if phase is None:
        return float(interval)
    return (phase - wall_now) % interval
