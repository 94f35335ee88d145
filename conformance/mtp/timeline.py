"""Wire timeline: every MTP packet/frame and USP Record seen during a test, both ways.

MTP servers, peers and codecs call :meth:`Timeline.record` for each thing they
send or receive (``direction="out"`` is suite -> EUT, ``"in"`` is EUT ->
suite); test cases then wait for traffic with :meth:`Timeline.expect`, prove
silence with :meth:`Timeline.expect_none` (e.g. the "EUT does not respond"
metrics of TP-469 2.3, 2.4, 2.7, 2.8) and attach :meth:`Timeline.excerpt` /
JSONL dumps to failure reports.

Threading contract: a :class:`Timeline` belongs to one asyncio event loop.
:meth:`Timeline.record` must be called from that loop's thread (or with no
loop at all while nobody waits); foreign threads, such as paho-mqtt callback
threads, use :meth:`Timeline.record_threadsafe`.  Waiting is done with
asyncio futures resolved by ``record`` -- no polling.  Timestamps come from an
injectable monotonic clock (default ``time.monotonic``) taken when the entry
is appended, so entries are always in timestamp order.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import concurrent.futures
import datetime as _dt
import fnmatch
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

__all__ = [
    "DIRECTIONS",
    "Entry",
    "Timeline",
    "TimelineFormatError",
    "TimelineTimeout",
    "UnexpectedEntry",
    "parse_jsonl",
    "read_jsonl",
]

_log = logging.getLogger(__name__)

#: ``in``: EUT -> suite; ``out``: suite -> EUT; ``local``: an event of the suite
#: itself (test step marker, timer) that crossed no wire.
DIRECTIONS: Final = frozenset({"in", "out", "local"})
#: Entries shown in timeout / unexpected-entry messages.
RECENT_IN_ERRORS: Final = 8

Decoded: TypeAlias = "Mapping[str, Any] | str | None"
Since: TypeAlias = "float | Entry | None"
Predicate: TypeAlias = "Callable[[Entry], bool]"


class TimelineTimeout(TimeoutError):
    """Nothing matching was recorded in time.  Carries what was awaited and recent entries."""

    def __init__(self, awaited: str, within: float, recent: tuple[Entry, ...]) -> None:
        self.awaited = awaited
        self.within = within
        self.recent = recent
        lines = "\n".join("  " + e.brief() for e in recent) or "  (none)"
        super().__init__(
            f"timed out after {within:g}s waiting for {awaited}; last {len(recent)} entries:\n{lines}"
        )


class UnexpectedEntry(AssertionError):
    """:meth:`Timeline.expect_none` saw an entry it was told must not appear."""

    def __init__(self, awaited: str, entry: Entry) -> None:
        self.awaited = awaited
        self.entry = entry
        super().__init__(f"expected no {awaited}, but got: {entry.brief()}")


class TimelineFormatError(ValueError):
    """A JSONL timeline line is not a valid entry (raised by :func:`parse_jsonl`)."""


@dataclass(frozen=True)
class Entry:
    """One recorded event.

    ``t`` is the monotonic timestamp in seconds, ``wall`` the wall-clock ISO
    8601 time, ``kind`` a dotted name such as ``mqtt.CONNECT``, ``stomp.SEND``,
    ``ws.frame``, ``usp.record``, ``usp.msg``, ``tls.handshake_failed``,
    ``conn.open`` or ``conn.close``.  ``raw`` holds the bytes on the wire (if
    any) and ``decoded`` a JSON-able summary.  ``seq`` numbers entries of one
    timeline from 0; gaps at the start mean older entries were dropped.
    """

    t: float
    wall: str
    direction: str
    mtp: str
    conn_id: str | None
    kind: str
    raw: bytes | None = field(default=None, hash=False)
    decoded: Decoded = field(default=None, hash=False)
    note: str | None = None
    seq: int = 0

    def brief(self, width: int = 160) -> str:
        """A one-line human summary (used in error messages)."""
        where = self.mtp + (f"/{self.conn_id}" if self.conn_id else "")
        parts = [f"#{self.seq}", f"t={self.t:.3f}", self.direction, where, self.kind]
        if self.note:
            parts.append(f"({self.note})")
        if self.decoded is not None:
            parts.append(_json_dumps(self.decoded))
        elif self.raw is not None:
            parts.append(f"raw[{len(self.raw)}]={self.raw[:24].hex()}")
        text = " ".join(parts)
        return text if len(text) <= width else text[: width - 3] + "..."

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict; ``raw`` becomes ``raw_hex``."""
        return {
            "seq": self.seq,
            "t": self.t,
            "wall": self.wall,
            "direction": self.direction,
            "mtp": self.mtp,
            "conn_id": self.conn_id,
            "kind": self.kind,
            "raw_hex": None if self.raw is None else self.raw.hex(),
            "decoded": _jsonable(self.decoded),
            "note": self.note,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Entry:
        """Inverse of :meth:`to_json`; :class:`TimelineFormatError` on bad input.

        ``raw_b64`` is accepted in place of ``raw_hex``.
        """
        if not isinstance(obj, dict):
            raise TimelineFormatError("entry must be a JSON object")

        def get(key: str, types: tuple[type, ...], required: bool = True) -> Any:
            if key not in obj:
                if required:
                    raise TimelineFormatError(f"missing field {key!r}")
                return None
            value = obj[key]
            if value is None and not required:
                return None
            if not isinstance(value, types) or isinstance(value, bool):
                raise TimelineFormatError(f"field {key!r} has wrong type {type(value).__name__}")
            return value

        direction = get("direction", (str,))
        if direction not in DIRECTIONS:
            raise TimelineFormatError(f"bad direction {direction!r}")
        raw: bytes | None = None
        raw_hex = get("raw_hex", (str,), required=False)
        raw_b64 = get("raw_b64", (str,), required=False)
        try:
            if raw_hex is not None:
                raw = bytes.fromhex(raw_hex)
            elif raw_b64 is not None:
                raw = base64.b64decode(raw_b64, validate=True)
        except ValueError as exc:
            raise TimelineFormatError(f"bad raw bytes: {exc}") from exc
        decoded = obj.get("decoded")
        if decoded is not None and not isinstance(decoded, (dict, str)):
            raise TimelineFormatError("field 'decoded' must be an object, a string or null")
        seq = get("seq", (int,), required=False)
        try:
            t = float(get("t", (int, float)))
        except OverflowError as exc:
            raise TimelineFormatError("field 't' out of range") from exc
        return cls(
            t=t,
            wall=get("wall", (str,)),
            direction=direction,
            mtp=get("mtp", (str,)),
            conn_id=get("conn_id", (str,), required=False),
            kind=get("kind", (str,)),
            raw=raw,
            decoded=decoded,
            note=get("note", (str,), required=False),
            seq=seq or 0,
        )


def _jsonable(value: Any) -> Any:
    """Round ``value`` through JSON: bytes become hex, unknown objects their repr."""
    if value is None or isinstance(value, str):
        return value
    return json.loads(_json_dumps(value))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


def _json_dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, sort_keys=False, separators=(",", ":"))


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


@dataclass
class _Waiter:
    match: Predicate
    future: asyncio.Future[Entry]


class Timeline:
    """A bounded, awaitable log of :class:`Entry` objects.

    ``max_entries`` bounds memory: when full, the oldest entry is dropped and
    :attr:`dropped` counts it.  ``clock`` (monotonic seconds) and
    ``wall_clock`` (aware datetime) are injectable for tests.
    """

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], _dt.datetime] = _utcnow,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: deque[Entry] = deque(maxlen=max_entries)
        self._next_seq = 0
        self._dropped = 0
        self._waiters: list[_Waiter] = []
        self._listeners: list[Callable[[Entry], None]] = []

    # ------------------------------------------------------------------ basics

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:  # an empty timeline is still a timeline
        return True

    def __iter__(self) -> Iterator[Entry]:
        return iter(tuple(self._entries))

    def __repr__(self) -> str:
        return f"<Timeline entries={len(self)} dropped={self._dropped} max={self.max_entries}>"

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Snapshot of the retained entries, oldest first."""
        return tuple(self._entries)

    @property
    def dropped(self) -> int:
        """How many old entries were discarded because of ``max_entries``."""
        return self._dropped

    def now(self) -> float:
        """Current reading of the timeline's clock, usable as ``since``."""
        return self._clock()

    def tail(self, n: int = RECENT_IN_ERRORS) -> list[Entry]:
        """The last ``n`` entries."""
        if n <= 0:
            return []
        return list(self._entries)[-n:]

    def add_listener(self, callback: Callable[[Entry], None]) -> Callable[[], None]:
        """Call ``callback(entry)`` for each new entry (e.g. live logging); returns an unsubscribe function.

        Exceptions raised by a listener are logged and otherwise ignored.
        """
        self._listeners.append(callback)

        def remove() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return remove

    # ------------------------------------------------------------------ recording

    def record(
        self,
        kind: str,
        *,
        direction: str,
        mtp: str,
        conn_id: str | None = None,
        raw: bytes | bytearray | memoryview | None = None,
        decoded: Decoded = None,
        note: str | None = None,
    ) -> Entry:
        """Append an entry stamped with the clocks now, wake matching waiters, return it.

        Call from the event loop thread (see module docstring).
        """
        if not isinstance(kind, str) or not kind:
            raise ValueError("kind must be a non-empty string")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {sorted(DIRECTIONS)}, not {direction!r}")
        if raw is not None:
            raw = bytes(raw)
        entry = Entry(
            t=self._clock(),
            wall=self._wall_clock().isoformat(timespec="microseconds"),
            direction=direction,
            mtp=mtp,
            conn_id=conn_id,
            kind=kind,
            raw=raw,
            decoded=decoded,
            note=note,
            seq=self._next_seq,
        )
        self._next_seq += 1
        if len(self._entries) == self.max_entries:
            self._dropped += 1
        self._entries.append(entry)
        self._wake(entry)
        for listener in tuple(self._listeners):
            try:
                listener(entry)
            except Exception:  # a broken listener must not stop recording
                _log.exception("timeline listener failed")
        return entry

    def record_threadsafe(
        self,
        loop: asyncio.AbstractEventLoop,
        kind: str,
        *,
        direction: str,
        mtp: str,
        conn_id: str | None = None,
        raw: bytes | bytearray | memoryview | None = None,
        decoded: Decoded = None,
        note: str | None = None,
    ) -> concurrent.futures.Future[Entry]:
        """Record from any thread by scheduling :meth:`record` on ``loop``.

        Returns a ``concurrent.futures.Future`` resolved with the entry once the
        loop has run it (do not block on it from the loop thread itself).  The
        timestamp is taken when the loop runs the call.  Raises ``RuntimeError``
        if ``loop`` is closed.
        """
        done: concurrent.futures.Future[Entry] = concurrent.futures.Future()
        if raw is not None:
            raw = bytes(raw)  # the caller's buffer may be reused before the loop runs

        def run() -> None:
            if not done.set_running_or_notify_cancel():
                return
            try:
                done.set_result(
                    self.record(
                        kind,
                        direction=direction,
                        mtp=mtp,
                        conn_id=conn_id,
                        raw=raw,
                        decoded=decoded,
                        note=note,
                    )
                )
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done

    def _wake(self, entry: Entry) -> None:
        for waiter in tuple(self._waiters):
            fut = waiter.future
            if fut.done():
                continue
            try:
                matched = waiter.match(entry)
            except Exception as exc:  # a faulty `where` fails its own expect(), not record()
                self._resolve(fut, exc=exc)
                continue
            if matched:
                self._resolve(fut, entry=entry)

    @staticmethod
    def _resolve(
        fut: asyncio.Future[Entry], *, entry: Entry | None = None, exc: BaseException | None = None
    ) -> None:
        def apply() -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                assert entry is not None
                fut.set_result(entry)

        loop = fut.get_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            apply()
        else:  # contract broken (record from a foreign thread): still wake safely
            loop.call_soon_threadsafe(apply)

    # ------------------------------------------------------------------ querying

    @staticmethod
    def _matcher(
        kind: str | None,
        *,
        direction: str | None = None,
        mtp: str | None = None,
        conn_id: str | None = None,
        where: Predicate | None = None,
        since: Since = None,
    ) -> Predicate:
        def match(e: Entry) -> bool:
            if isinstance(since, Entry):
                if e.seq <= since.seq:
                    return False
            elif since is not None and e.t < since:
                return False
            if kind is not None and not fnmatch.fnmatchcase(e.kind, kind):
                return False
            if direction is not None and e.direction != direction:
                return False
            if mtp is not None and e.mtp != mtp:
                return False
            if conn_id is not None and e.conn_id != conn_id:
                return False
            return where is None or bool(where(e))

        return match

    def filter(
        self,
        kind: str | None = None,
        *,
        direction: str | None = None,
        mtp: str | None = None,
        conn_id: str | None = None,
        predicate: Predicate | None = None,
        since: Since = None,
    ) -> list[Entry]:
        """Retained entries matching every given criterion, oldest first.

        ``kind`` is an exact name or a shell-style pattern (``"mqtt.*"``);
        ``since`` keeps entries after an :class:`Entry` or at/after a
        timestamp.
        """
        match = self._matcher(
            kind, direction=direction, mtp=mtp, conn_id=conn_id, where=predicate, since=since
        )
        return [e for e in tuple(self._entries) if match(e)]

    async def expect(
        self,
        kind: str | None,
        *,
        within: float,
        where: Predicate | None = None,
        since: Since = None,
        direction: str | None = None,
        mtp: str | None = None,
        conn_id: str | None = None,
    ) -> Entry:
        """The first matching entry after ``since``, waiting up to ``within`` seconds for it.

        Already-recorded entries are searched first (``since=None``: all
        retained entries), so a reply that raced ahead of the call is not
        missed.  Criteria are those of :meth:`filter` (``where`` is the
        predicate).  Raises :class:`TimelineTimeout` naming what was awaited
        and showing the latest entries.
        """
        if within < 0:
            raise ValueError("within must be >= 0")
        match = self._matcher(
            kind, direction=direction, mtp=mtp, conn_id=conn_id, where=where, since=since
        )
        for entry in tuple(self._entries):
            if match(entry):
                return entry
        fut: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(match, fut)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(fut, timeout=within)
        except TimeoutError:
            awaited = _describe(kind, direction, mtp, conn_id, where, since)
            raise TimelineTimeout(awaited, within, tuple(self.tail())) from None
        finally:
            self._waiters.remove(waiter)

    async def expect_none(
        self,
        kind: str | None,
        *,
        during: float,
        where: Predicate | None = None,
        since: Since = None,
        direction: str | None = None,
        mtp: str | None = None,
        conn_id: str | None = None,
    ) -> None:
        """Wait ``during`` seconds and fail with :class:`UnexpectedEntry` if a match appears.

        Use only where absence is the metric (e.g. "the EUT does not respond").
        Unlike :meth:`expect`, ``since=None`` means "from this call on"; give
        ``since`` to also reject matches recorded earlier (e.g. since the
        request was sent).
        """
        base = where
        if since is None:
            start_seq = self._next_seq

            def recorded_after_call(e: Entry) -> bool:
                return e.seq >= start_seq and (base is None or bool(base(e)))

            where = recorded_after_call
        try:
            entry = await self.expect(
                kind,
                within=during,
                where=where,
                since=since,
                direction=direction,
                mtp=mtp,
                conn_id=conn_id,
            )
        except TimelineTimeout:
            return
        raise UnexpectedEntry(_describe(kind, direction, mtp, conn_id, base, since), entry)

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next recorded entry will get (a cursor: "from now on")."""
        return self._next_seq

    def excerpt(self, around: Entry | float, before: int = 5, after: int = 5) -> list[Entry]:
        """Entries around an entry (it, ``before`` earlier and ``after`` later ones) or
        around a timestamp (``before`` entries earlier than it, ``after`` at/after it)."""
        if before < 0 or after < 0:
            raise ValueError("before and after must be >= 0")
        entries = list(self._entries)
        if not entries:
            return []
        if isinstance(around, Entry):
            i = around.seq - entries[0].seq
            if 0 <= i < len(entries) and entries[i].seq == around.seq:
                return entries[max(0, i - before) : i + 1 + after]
            around = around.t
        i = bisect.bisect_left(entries, around, key=lambda e: e.t)
        return entries[max(0, i - before) : i + after]

    # ------------------------------------------------------------------ persistence

    def to_jsonl(self) -> str:
        """One JSON object per line (see :meth:`Entry.to_json`), oldest first."""
        return "".join(_json_dumps(e.to_json()) + "\n" for e in tuple(self._entries))

    def write_jsonl(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_jsonl` to ``path`` (parents created); returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.to_jsonl(), encoding="utf-8")
        return out

    @classmethod
    def from_entries(cls, entries: Iterable[Entry], **kwargs: Any) -> Timeline:
        """A timeline pre-filled with ``entries`` (e.g. from :func:`read_jsonl`), kept as is."""
        tl = cls(**kwargs)
        for e in entries:
            if len(tl._entries) == tl.max_entries:
                tl._dropped += 1
            tl._entries.append(e)
            tl._next_seq = max(tl._next_seq, e.seq + 1)
        return tl


def _describe(
    kind: str | None,
    direction: str | None,
    mtp: str | None,
    conn_id: str | None,
    where: Predicate | None,
    since: Since,
) -> str:
    parts = [f"kind={kind!r}" if kind is not None else "any kind"]
    for name, value in (("direction", direction), ("mtp", mtp), ("conn_id", conn_id)):
        if value is not None:
            parts.append(f"{name}={value!r}")
    if where is not None:
        parts.append(f"where={getattr(where, '__qualname__', repr(where))}")
    if isinstance(since, Entry):
        parts.append(f"after #{since.seq}")
    elif since is not None:
        parts.append(f"since t={since:.3f}")
    return " ".join(parts)


def parse_jsonl(text: str) -> list[Entry]:
    """Entries from JSONL text, blank lines skipped.

    Raises :class:`TimelineFormatError` naming the first bad line.
    """
    entries: list[Entry] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            entries.append(Entry.from_json(obj))
        except TimelineFormatError as exc:
            raise TimelineFormatError(f"line {lineno}: {exc}") from exc
        except (ValueError, RecursionError, OverflowError) as exc:
            raise TimelineFormatError(f"line {lineno}: invalid JSON: {exc}") from exc
    return entries


def read_jsonl(path: str | os.PathLike[str]) -> list[Entry]:
    """Entries from a file written by :meth:`Timeline.write_jsonl`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TimelineFormatError(f"{path}: not UTF-8: {exc}") from exc
    return parse_jsonl(text)
