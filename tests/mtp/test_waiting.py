"""StateChanges: awaiting owner state without polling."""

from __future__ import annotations

import asyncio

import pytest

from conformance.mtp.waiting import StateChanges


def test_returns_at_once_when_already_true():
    async def main():
        changes = StateChanges()
        assert await changes.wait_until(lambda: "here", timeout=0.1, what="x") == "here"
    asyncio.run(main())


def test_wakes_on_change_and_rechecks():
    async def main():
        changes, state = StateChanges(), {}
        waiter = asyncio.create_task(changes.wait_until(lambda: state.get("a"), timeout=5, what="a"))
        await asyncio.sleep(0)
        changes.changed()  # not yet: the waiter looks again and keeps waiting
        await asyncio.sleep(0)
        assert not waiter.done()
        state["a"] = 1
        changes.changed()
        assert await asyncio.wait_for(waiter, 5) == 1
    asyncio.run(main())


def test_timeout_names_what_was_awaited():
    async def main():
        with pytest.raises(TimeoutError, match="agent X never came within 0.05s"):
            await StateChanges().wait_until(lambda: None, timeout=0.05, what="agent X never came")
    asyncio.run(main())


def test_close_fails_current_and_later_waits():
    async def main():
        changes = StateChanges()
        waiter = asyncio.create_task(changes.wait_until(lambda: None, timeout=5, what="w"))
        await asyncio.sleep(0)
        changes.close(ConnectionError("server closed"))
        with pytest.raises(ConnectionError, match="server closed"):
            await asyncio.wait_for(waiter, 5)
        with pytest.raises(ConnectionError):
            await changes.wait_until(lambda: None, timeout=5, what="w")
    asyncio.run(main())
