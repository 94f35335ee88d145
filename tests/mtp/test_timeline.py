"""Tests for conformance.mtp.timeline: recording, filtering, awaiting, JSONL and bounds.

The timeline backs the "EUT responds / does not respond" metrics of TP-469
(e.g. 2.3, 2.4, 2.7, 2.8 need proof of silence; 4.1 needs the TLS exchange
on record).  All waits are bounded; no fixed sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp.timeline import (
    DIRECTIONS,
    Entry,
    Timeline,
    TimelineFormatError,
    TimelineTimeout,
    UnexpectedEntry,
    parse_jsonl,
    read_jsonl,
)

T = TypeVar("T")
WALL = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)


class FakeClock:
    """Manually advanced monotonic clock."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt_s: float = 1.0) -> None:
        self.t += dt_s


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(fn(), timeout=5.0)

    return asyncio.run(bounded())


def _tl(**kw: Any) -> tuple[Timeline, FakeClock]:
    clock = FakeClock()
    return Timeline(clock=clock, wall_clock=lambda: WALL, **kw), clock


def _fill(tl: Timeline, clock: FakeClock) -> list[Entry]:
    """Five entries one fake second apart."""
    specs: list[tuple[str, dict[str, Any]]] = [
        ("conn.open", {"direction": "in", "mtp": "mqtt", "conn_id": "c1"}),
        ("mqtt.CONNECT", {"direction": "in", "mtp": "mqtt", "conn_id": "c1", "raw": b"\x10\x00"}),
        ("mqtt.CONNACK", {"direction": "out", "mtp": "mqtt", "conn_id": "c1"}),
        ("stomp.SEND", {"direction": "out", "mtp": "stomp", "conn_id": "s1", "decoded": {"dest": "/q"}}),
        ("usp.record", {"direction": "in", "mtp": "stomp", "conn_id": "s1", "note": "reply"}),
    ]
    out = []
    for kind, kw in specs:
        out.append(tl.record(kind, **kw))
        clock.advance()
    return out


# ----------------------------------------------------------------------------- recording


def test_record_fields() -> None:
    tl, clock = _tl()
    e = tl.record(
        "ws.frame",
        direction="out",
        mtp="websocket",
        conn_id="w1",
        raw=bytearray(b"\x82\x01x"),
        decoded={"opcode": 2},
        note="first",
    )
    assert (e.t, e.wall, e.direction, e.mtp, e.conn_id, e.kind) == (
        100.0, WALL.isoformat(timespec="microseconds"), "out", "websocket", "w1", "ws.frame"
    )
    assert e.raw == b"\x82\x01x" and type(e.raw) is bytes
    assert e.decoded == {"opcode": 2} and e.note == "first" and e.seq == 0
    clock.advance(0.5)
    e2 = tl.record("conn.close", direction="in", mtp="websocket")
    assert e2.seq == 1 and e2.t == 100.5 and e2.conn_id is None and e2.raw is None
    assert list(tl) == [e, e2] and tl.entries == (e, e2) and len(tl) == 2
    assert hash(e) != hash(e2)  # entries are hashable despite dict payloads
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.kind = "x"  # type: ignore[misc]


def test_record_validation() -> None:
    tl, _ = _tl()
    with pytest.raises(ValueError):
        tl.record("x", direction="sideways", mtp="mqtt")
    with pytest.raises(ValueError):
        tl.record("", direction="in", mtp="mqtt")
    assert DIRECTIONS == {"in", "out", "local"}
    tl.record("test.step", direction="local", mtp="suite")


def test_empty_timeline_is_truthy_and_defaults() -> None:
    tl = Timeline()
    assert tl and len(tl) == 0 and tl.dropped == 0 and tl.tail() == []
    e = tl.record("conn.open", direction="in", mtp="uds")
    assert e.wall.endswith("+00:00") and isinstance(e.t, float)
    assert tl.now() >= e.t
    assert "entries=1" in repr(tl)


def test_tail() -> None:
    tl, clock = _tl()
    entries = _fill(tl, clock)
    assert tl.tail(2) == entries[-2:]
    assert tl.tail(0) == []
    assert tl.tail(99) == entries


def test_filter() -> None:
    tl, clock = _tl()
    e = _fill(tl, clock)
    assert tl.filter() == e
    assert tl.filter("mqtt.CONNECT") == [e[1]]
    assert tl.filter("mqtt.*") == [e[1], e[2]]
    assert tl.filter(direction="out") == [e[2], e[3]]
    assert tl.filter(conn_id="s1") == [e[3], e[4]]
    assert tl.filter(mtp="mqtt", direction="in") == [e[0], e[1]]
    assert tl.filter(predicate=lambda x: x.raw is not None) == [e[1]]
    assert tl.filter(since=e[2]) == [e[3], e[4]]
    assert tl.filter(since=e[3].t) == [e[3], e[4]]  # timestamps are inclusive
    assert tl.filter("nothing") == []


def test_entry_brief() -> None:
    tl, _ = _tl()
    e = tl.record("mqtt.PUBLISH", direction="in", mtp="mqtt", conn_id="c", raw=b"\x30" * 100, note="n")
    b = e.brief()
    assert "#0" in b and "in" in b and "mqtt/c" in b and "mqtt.PUBLISH" in b and "(n)" in b
    assert "raw[100]=3030" in b
    d = tl.record("usp.msg", direction="out", mtp="mqtt", decoded={"k": "v" * 500})
    assert len(d.brief()) == 160 and d.brief().endswith("...")


def test_listeners(caplog: pytest.LogCaptureFixture) -> None:
    tl, _ = _tl()
    seen: list[Entry] = []

    def boom(_: Entry) -> None:
        raise RuntimeError("listener bug")

    remove = tl.add_listener(seen.append)
    tl.add_listener(boom)
    with caplog.at_level(logging.ERROR):
        e = tl.record("conn.open", direction="in", mtp="tls")
    assert seen == [e] and "listener failed" in caplog.text
    remove()
    remove()  # idempotent
    tl.record("conn.close", direction="in", mtp="tls")
    assert seen == [e]


# ----------------------------------------------------------------------------- expect


def test_expect_returns_past_entry() -> None:
    tl, clock = _tl()
    e = _fill(tl, clock)

    async def go() -> tuple[Entry, Entry, Entry]:
        first = await tl.expect("mqtt.*", within=0)
        after = await tl.expect("mqtt.*", within=0, since=first)
        reply = await tl.expect(None, within=0, direction="in", conn_id="s1")
        return first, after, reply

    assert _run(go) == (e[1], e[2], e[4])


def test_expect_waits_for_future_entry() -> None:
    tl, clock = _tl()
    _fill(tl, clock)

    async def go() -> tuple[Entry, Entry]:
        mark = tl.filter()[-1]
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: tl.record("usp.record", direction="out", mtp="mqtt", conn_id="c1"))
        loop.call_soon(lambda: tl.record("usp.record", direction="in", mtp="mqtt", conn_id="c1"))
        got = await tl.expect("usp.record", within=2, since=mark, direction="in", mtp="mqtt")
        return mark, got

    mark, got = _run(go)
    assert got.seq > mark.seq and got.direction == "in" and got.mtp == "mqtt"


def test_expect_since_timestamp_skips_old() -> None:
    tl, clock = _tl()
    old = tl.record("usp.record", direction="in", mtp="mqtt")
    clock.advance()
    since = tl.now()

    async def go() -> Entry:
        asyncio.get_running_loop().call_soon(
            lambda: tl.record("usp.record", direction="in", mtp="mqtt", note="new")
        )
        return await tl.expect("usp.record", within=2, since=since)

    got = _run(go)
    assert got is not old and got.note == "new"


def test_expect_where_predicate() -> None:
    tl, _ = _tl()
    tl.record("usp.msg", direction="in", mtp="mqtt", decoded={"msg_id": "a"})

    async def go() -> Entry:
        asyncio.get_running_loop().call_soon(
            lambda: tl.record("usp.msg", direction="in", mtp="mqtt", decoded={"msg_id": "b"})
        )
        return await tl.expect(
            "usp.msg", within=2, where=lambda e: isinstance(e.decoded, dict) and e.decoded["msg_id"] == "b"
        )

    assert _run(go).decoded == {"msg_id": "b"}


def test_expect_timeout_message() -> None:
    tl, clock = _tl()
    _fill(tl, clock)

    def is_get_resp(e: Entry) -> bool:
        return False

    async def go() -> TimelineTimeout:
        with pytest.raises(TimelineTimeout) as info:
            await tl.expect("usp.msg", within=0.01, direction="in", conn_id="s1", where=is_get_resp)
        return info.value

    err = _run(go)
    assert isinstance(err, TimeoutError)
    text = str(err)
    assert "timed out after 0.01s" in text
    assert "kind='usp.msg'" in text and "direction='in'" in text and "conn_id='s1'" in text
    assert "is_get_resp" in text
    assert "usp.record" in text and "stomp.SEND" in text  # recent entries listed
    assert err.within == 0.01 and len(err.recent) == 5 and err.awaited.startswith("kind=")
    assert tl._waiters == []  # the waiter was removed


def test_expect_timeout_on_empty_and_with_since() -> None:
    tl, _ = _tl()

    async def go() -> str:
        with pytest.raises(TimelineTimeout) as info:
            await tl.expect(None, within=0, since=12.5)
        return str(info.value)

    text = _run(go)
    assert "any kind" in text and "since t=12.500" in text and "(none)" in text


def test_expect_negative_within() -> None:
    tl, _ = _tl()
    with pytest.raises(ValueError):
        _run(lambda: tl.expect("x", within=-1))


def test_expect_where_exception_fails_only_that_waiter() -> None:
    tl, _ = _tl()

    def broken(e: Entry) -> bool:
        raise KeyError("bad predicate")

    async def go() -> tuple[BaseException, Entry]:
        bad = asyncio.ensure_future(tl.expect("usp.msg", within=2, where=broken))
        good = asyncio.ensure_future(tl.expect("usp.msg", within=2))
        await asyncio.sleep(0)  # let both register (a yield, not a timed wait)
        e = tl.record("usp.msg", direction="in", mtp="mqtt")  # record itself must not raise
        results = await asyncio.gather(bad, good, return_exceptions=True)
        assert results[1] is e
        assert isinstance(results[0], BaseException)
        return results[0], e

    exc, _ = _run(go)
    assert isinstance(exc, KeyError)


def test_concurrent_waiters() -> None:
    tl, _ = _tl()

    async def go() -> None:
        a1 = asyncio.ensure_future(tl.expect("mqtt.SUBSCRIBE", within=2))
        a2 = asyncio.ensure_future(tl.expect("mqtt.SUBSCRIBE", within=2))
        b = asyncio.ensure_future(tl.expect("mqtt.PUBLISH", within=2, conn_id="c2"))
        c = asyncio.ensure_future(tl.expect("usp.*", within=2, direction="out"))
        never = asyncio.ensure_future(tl.expect("mqtt.DISCONNECT", within=0.05))
        await asyncio.sleep(0)
        assert len(tl._waiters) == 5
        tl.record("mqtt.PUBLISH", direction="in", mtp="mqtt", conn_id="c1")
        pub2 = tl.record("mqtt.PUBLISH", direction="in", mtp="mqtt", conn_id="c2")
        sub = tl.record("mqtt.SUBSCRIBE", direction="in", mtp="mqtt", conn_id="c1")
        tl.record("usp.record", direction="in", mtp="mqtt")
        out = tl.record("usp.record", direction="out", mtp="mqtt")
        assert await a1 is sub and await a2 is sub  # both waiters get the same entry
        assert await b is pub2 and await c is out
        with pytest.raises(TimelineTimeout):
            await never
        assert tl._waiters == []

    _run(go)


def test_cancelled_expect_removes_waiter() -> None:
    tl, _ = _tl()

    async def go() -> None:
        task = asyncio.ensure_future(tl.expect("x", within=10))
        await asyncio.sleep(0)
        assert len(tl._waiters) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert tl._waiters == []
        tl.record("x", direction="in", mtp="mqtt")  # no stale future to trip over

    _run(go)


# ----------------------------------------------------------------------------- expect_none


def test_expect_none_passes_on_silence_and_ignores_past() -> None:
    tl, _ = _tl()
    tl.record("usp.record", direction="in", mtp="mqtt")  # before the call: ignored

    async def go() -> None:
        tl.record("usp.record", direction="out", mtp="mqtt")  # other direction during the window
        await tl.expect_none("usp.record", during=0.05, direction="in")

    _run(go)


def test_expect_none_fails_on_new_match() -> None:
    tl, _ = _tl()

    async def go() -> UnexpectedEntry:
        asyncio.get_running_loop().call_soon(
            lambda: tl.record("usp.record", direction="in", mtp="stomp", note="GetResp")
        )
        with pytest.raises(UnexpectedEntry) as info:
            await tl.expect_none("usp.record", during=2, direction="in")
        return info.value

    err = _run(go)
    assert isinstance(err, AssertionError)
    assert err.entry.note == "GetResp"
    assert "expected no kind='usp.record' direction='in'" in str(err) and "GetResp" in str(err)
    assert "recorded_after_call" not in str(err)


def test_expect_none_with_since_checks_past() -> None:
    tl, _ = _tl()
    sent = tl.record("usp.record", direction="out", mtp="mqtt")
    tl.record("usp.record", direction="in", mtp="mqtt")

    async def go() -> None:
        with pytest.raises(UnexpectedEntry):
            await tl.expect_none("usp.record", during=1, since=sent, direction="in")
        await tl.expect_none("usp.record", during=0.01, since=sent, direction="in",
                             where=lambda e: e.note == "x")

    _run(go)


# ----------------------------------------------------------------------------- excerpt


def test_excerpt() -> None:
    tl, clock = _tl()
    e: list[Entry] = []
    for i in range(10):
        clock.advance()
        e.append(tl.record(f"k{i}", direction="in", mtp="mqtt"))
    assert tl.excerpt(e[5], before=2, after=1) == e[3:7]
    assert tl.excerpt(e[0], before=3, after=0) == [e[0]]
    assert tl.excerpt(e[9], before=0, after=5) == [e[9]]
    # around a timestamp: `before` entries earlier, `after` entries at/after it
    assert tl.excerpt(e[5].t, before=2, after=2) == e[3:7]
    assert tl.excerpt(e[5].t - 0.5, before=1, after=1) == e[4:6]
    assert tl.excerpt(1e9, before=2, after=2) == e[8:]
    with pytest.raises(ValueError):
        tl.excerpt(e[1], before=-1)
    assert Timeline().excerpt(1.0) == []


def test_excerpt_of_dropped_entry_uses_its_time() -> None:
    tl, clock = _tl(max_entries=4)
    e = []
    for i in range(8):
        clock.advance()
        e.append(tl.record(f"k{i}", direction="in", mtp="mqtt"))
    assert tl.excerpt(e[1], before=1, after=2) == e[4:6]


# ----------------------------------------------------------------------------- bound


def test_bounded_size() -> None:
    tl, _ = _tl(max_entries=3)
    e = [tl.record("k", direction="in", mtp="mqtt", note=str(i)) for i in range(5)]
    assert len(tl) == 3 and tl.dropped == 2 and list(tl) == e[2:]
    assert tl.entries[0].seq == 2

    async def go() -> Entry:
        return await tl.expect("k", within=0)

    assert _run(go) is e[2]  # dropped entries are gone for good
    with pytest.raises(ValueError):
        Timeline(max_entries=0)


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_round_trip(tmp_path: Path) -> None:
    tl, clock = _tl()
    entries = _fill(tl, clock)
    tl.record("tls.handshake_failed", direction="in", mtp="tls", conn_id="t1",
              raw=bytes(range(256)), decoded="certificate expired")
    path = tl.write_jsonl(tmp_path / "deep" / "timeline.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == 6
    first = json.loads(lines[1])
    assert first["raw_hex"] == "1000" and first["kind"] == "mqtt.CONNECT"
    back = read_jsonl(path)
    assert back == list(tl)
    assert back[:5] == entries
    assert parse_jsonl(tl.to_jsonl()) == back
    restored = Timeline.from_entries(back, max_entries=3)
    assert len(restored) == 3 and restored.dropped == 3
    nxt = restored.record("x", direction="in", mtp="mqtt")
    assert nxt.seq == 6  # numbering continues


def test_jsonl_non_json_decoded_is_summarised() -> None:
    tl, _ = _tl()
    tl.record("usp.msg", direction="in", mtp="mqtt",
              decoded={"payload": b"\x01\x02", "ids": ("a", "b"), "obj": object(), "n": {1, 2}})
    (e,) = parse_jsonl(tl.to_jsonl())
    assert isinstance(e.decoded, dict)
    assert e.decoded["payload"] == "0102" and e.decoded["ids"] == ["a", "b"]
    assert e.decoded["obj"].startswith("<object")


def test_from_json_accepts_b64_and_minimal() -> None:
    e = Entry.from_json({"t": 1, "wall": "w", "direction": "out", "mtp": "uds", "kind": "k",
                         "raw_b64": "AAE="})
    assert e.raw == b"\x00\x01" and e.seq == 0 and e.conn_id is None and e.t == 1.0


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1, 2]",
        '{"t": 1}',
        '{"t": true, "wall": "w", "direction": "in", "mtp": "m", "kind": "k"}',
        '{"t": 1, "wall": "w", "direction": "up", "mtp": "m", "kind": "k"}',
        '{"t": 1, "wall": "w", "direction": "in", "mtp": "m", "kind": "k", "raw_hex": "zz"}',
        '{"t": 1, "wall": "w", "direction": "in", "mtp": "m", "kind": "k", "raw_b64": "!!"}',
        '{"t": 1, "wall": "w", "direction": "in", "mtp": "m", "kind": "k", "decoded": 5}',
        '{"t": 1, "wall": 3, "direction": "in", "mtp": "m", "kind": "k"}',
        '{"t": 1' + "0" * 400 + ', "wall": "w", "direction": "in", "mtp": "m", "kind": "k"}',
    ],
)
def test_parse_jsonl_errors_name_line(line: str) -> None:
    good = '{"t": 1, "wall": "w", "direction": "in", "mtp": "m", "kind": "k"}'
    with pytest.raises(TimelineFormatError, match="line 3"):
        parse_jsonl(good + "\n\n" + line + "\n")


def test_read_jsonl_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TimelineFormatError):
        read_jsonl(p)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parse_jsonl_hostile_text(text: str) -> None:
    try:
        parse_jsonl(text)
    except TimelineFormatError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        k: _json | st.sampled_from(["in", "out", "local", "00ff"])
        for k in ("t", "wall", "direction", "mtp", "conn_id", "kind", "raw_hex", "raw_b64",
                  "decoded", "note", "seq")
    },
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_json, _fields))
def test_from_json_hostile_objects(obj: Any) -> None:
    try:
        e = Entry.from_json(obj)
    except TimelineFormatError:
        return
    assert e.direction in DIRECTIONS and isinstance(e.kind, str)


# ----------------------------------------------------------------------------- threads


def test_record_threadsafe_from_thread() -> None:
    tl, _ = _tl()
    n = 50

    async def go() -> list[Entry]:
        loop = asyncio.get_running_loop()
        futures: list[Any] = []

        def worker() -> None:  # e.g. a paho-mqtt network thread
            for i in range(n):
                futures.append(
                    tl.record_threadsafe(loop, "mqtt.PUBLISH", direction="in", mtp="mqtt",
                                         conn_id="paho", raw=bytearray([i]))
                )

        thread = threading.Thread(target=worker)
        thread.start()
        last = await tl.expect("mqtt.PUBLISH", within=2, where=lambda e: e.raw == bytes([n - 1]))
        await asyncio.wait_for(asyncio.to_thread(thread.join), 2)
        assert [f.result(timeout=2) for f in futures] == tl.filter()
        assert last is tl.filter()[-1]
        return tl.filter()

    got = _run(go)
    assert [e.raw for e in got] == [bytes([i]) for i in range(n)]
    assert [e.seq for e in got] == list(range(n))


def test_record_threadsafe_errors_and_closed_loop() -> None:
    tl, _ = _tl()

    async def go() -> None:
        fut = tl.record_threadsafe(asyncio.get_running_loop(), "", direction="in", mtp="mqtt")
        with pytest.raises(ValueError):
            await asyncio.wait_for(asyncio.wrap_future(fut), 2)

    _run(go)
    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(RuntimeError):
        tl.record_threadsafe(loop, "k", direction="in", mtp="mqtt")


def test_plain_record_from_foreign_thread_still_wakes_waiter() -> None:
    """Contract breach safety net: record() off-loop defers the wake-up to the loop."""
    tl, _ = _tl()

    async def go() -> Entry:
        task = asyncio.ensure_future(tl.expect("k", within=2))
        await asyncio.sleep(0)
        thread = threading.Thread(target=lambda: tl.record("k", direction="in", mtp="mqtt"))
        thread.start()
        got = await task
        await asyncio.wait_for(asyncio.to_thread(thread.join), 2)
        return got

    assert _run(go).kind == "k"
