"""Awaiting a state change of an MTP server without polling.

Servers and brokers offer ``wait_for_agent(...)``-style calls: "return the
connection of agent X as soon as it exists". :class:`StateChanges` is the
one mechanism behind them: the owner calls :meth:`StateChanges.changed`
whenever its state moves (a client connected, subscribed, handshook...), and
each waiter re-runs its own lookup. No sleeps, a timeout on every wait, and
a closed owner fails every waiter at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class StateChanges:
    """Wakes every waiter on each :meth:`changed`; waiters re-check their lookup."""

    def __init__(self) -> None:
        self._futures: set[asyncio.Future[None]] = set()
        self._closed: BaseException | None = None

    def changed(self) -> None:
        """The owner's state moved: wake every waiter to look again."""
        for fut in self._futures:
            if not fut.done():
                fut.set_result(None)
        self._futures.clear()

    def close(self, exc: BaseException) -> None:
        """The owner is gone: current and later waits raise ``exc``."""
        self._closed = exc
        for fut in self._futures:
            if not fut.done():
                fut.set_exception(exc)
        self._futures.clear()

    async def wait_until(self, lookup: Callable[[], T | None], *, timeout: float, what: str) -> T:
        """The first non-None ``lookup()`` result; TimeoutError naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = lookup()
            if found is not None:
                return found
            if self._closed is not None:
                raise self._closed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what} within {timeout:g}s")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._futures.add(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                self._futures.discard(fut)
