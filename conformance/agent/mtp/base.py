"""What every MTP of the reference Agent offers the Agent runtime.

An :class:`AgentMTP` owns the connections of one MTP instance (an MQTT
client, a STOMP connection, the WebSocket client sessions and server, a UDS
client). It keeps them up (reconnecting with the back-off of
:mod:`conformance.agent.mtp.backoff`), sends the MTP's connect Record to
each Controller it serves once a channel is up (R-MTP.6, R-MTP.8), hands
every decodable Record it receives to :attr:`AgentMTP.on_record` together
with a :class:`Route` saying where the answer goes, and sends Records on
:meth:`AgentMTP.send`. :meth:`AgentMTP.stop` can send a DisconnectRecord
first (R-MTP.7).

Timeline entries written by agent MTPs use the MTP's usual kind names
(``mqtt.PUBLISH``, ``stomp.SEND``, ``ws.frame``, ``uds.frame``...) seen from
the Agent: ``direction="out"`` is what the Agent sent, ``"in"`` what it
received. Give an agent MTP its own :class:`Timeline`, not the suite's.
Extra kinds: ``<mtp>.retry`` (a back-off wait, decoded ``{retry, delay,
bounds}``), ``<mtp>.connect_record``, ``<mtp>.disconnect_record``,
``<mtp>.dropped`` (an inbound payload that is not a USP Record),
``<mtp>.state`` and ``<mtp>.sink_error``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from conformance.agent.faults import FaultSet
from conformance.mtp.timeline import Timeline
from conformance.mtp.waiting import StateChanges
from conformance.usp import records

__all__ = [
    "AgentMTP",
    "ConnectedHandler",
    "ControllerRoute",
    "MTPNotConnected",
    "NoRoute",
    "RecordHandler",
    "Route",
]

_log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ControllerRoute:
    """A Controller this MTP serves and its address on the MTP.

    ``address`` is the Controller's MQTT Topic, STOMP Destination or
    WebSocket URL (``Device.LocalAgent.Controller.{i}.MTP.{i}.*``); UDS
    needs none.
    """

    endpoint_id: str
    address: str = ""


@dataclass(frozen=True)
class Route:
    """Where a received Record came from, i.e. where its answer goes.

    ``reply_to`` is the MQTT Response Topic / ``reply-to=`` topic or the
    STOMP ``reply-to-dest``; ``controller_hint`` the Endpoint ID the MTP
    associates with the connection (WebSocket ``?eid=``, UDS Handshake, a
    configured route whose address is ``reply_to``), if any.
    """

    mtp: str
    conn_id: str
    reply_to: str | None = None
    controller_hint: str | None = None


RecordHandler = Callable[[bytes, Route], None]
ConnectedHandler = Callable[["AgentMTP"], None]


class MTPNotConnected(ConnectionError):
    """The MTP has no usable connection right now."""


class NoRoute(ConnectionError):
    """The MTP does not know how to reach that Endpoint ID."""


class AgentMTP(abc.ABC):
    """One MTP instance of the Agent (subclasses: MQTT, STOMP, WebSocket, UDS)."""

    #: "mqtt", "stomp", "websocket" or "uds".
    name: ClassVar[str] = ""
    #: Prefix of the timeline kinds this MTP writes ("ws" for WebSocket).
    kind_prefix: ClassVar[str] = ""

    def __init__(self, endpoint_id: str, *, controllers: Sequence[ControllerRoute] = (),
                 timeline: Timeline | None = None, rng: random.Random | None = None) -> None:
        if not endpoint_id:
            raise ValueError("the Agent needs an Endpoint ID")
        self.endpoint_id = endpoint_id
        #: Controllers served, by Endpoint ID (R-MTP.6 needs them for connect Records).
        self.controllers: dict[str, ControllerRoute] = {c.endpoint_id: c for c in controllers}
        self.timeline = timeline
        self.rng = rng if rng is not None else random.Random()
        #: Called for every decodable Record received (on the event loop thread).
        self.on_record: RecordHandler | None = None
        #: Called after a channel is up and its connect Records were sent.
        self.on_connected: ConnectedHandler | None = None
        #: Called when a channel went down.
        self.on_disconnected: ConnectedHandler | None = None
        #: Channels established so far (reconnections included).
        self.connection_count = 0
        #: The agent's named faults (set by the runtime; an MTP asks ``self.faults.on(name)``
        #: at the one place it deliberately breaks a rule, see conformance/agent/faults.py).
        self.faults: FaultSet = FaultSet()
        self._changes = StateChanges()
        self._stopping = asyncio.Event()
        self._started = False

    # ------------------------------------------------------------------ interface

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether Records can be sent now."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start connecting/listening in the background; returns at once."""

    @abc.abstractmethod
    async def stop(self, disconnect_record: bytes | Sequence[bytes] | None = None) -> None:
        """Send ``disconnect_record`` (one or several DisconnectRecords, each routed
        by its ``to_id``) if connected (R-MTP.7), then close everything (idempotent)."""

    @abc.abstractmethod
    async def send(self, data: bytes, *, to_id: str, reply_to: str | None = None) -> None:
        """Send Record bytes to ``to_id`` (at ``reply_to`` when the MTP uses addresses).

        Raises :class:`MTPNotConnected` without a usable connection and
        :class:`NoRoute` when no address for ``to_id`` is known.
        """

    # ------------------------------------------------------------------ waiting

    async def wait_for(self, predicate: Callable[[], T | None], *, timeout: float,
                       what: str = "MTP state") -> T:
        """The first non-None ``predicate()``, re-checked on every state change;
        TimeoutError after ``timeout`` seconds."""
        return await self._changes.wait_until(predicate, timeout=timeout, what=what)

    async def wait_connected(self, timeout: float, *, count: int = 1) -> None:
        """Wait until connected with at least ``count`` connections made so far."""
        await self.wait_for(lambda: True if self.connected and self.connection_count >= count
                            else None, timeout=timeout,
                            what=f"{self.name}: connection #{count} not established")

    def _changed(self) -> None:
        self._changes.changed()

    # ------------------------------------------------------------------ helpers for subclasses

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _record(self, kind: str, *, direction: str, conn_id: str | None = None,
                raw: bytes | None = None, decoded: Any = None, note: str | None = None) -> None:
        if self.timeline is not None:
            self.timeline.record(kind, direction=direction, mtp=self.name, conn_id=conn_id,
                                 raw=raw, decoded=decoded, note=note)

    def _kind(self, what: str) -> str:
        return f"{self.kind_prefix or self.name}.{what}"

    async def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; True when the full time passed."""
        if self._stopping.is_set():
            return False
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _retry_wait(self, backoff: Any, conn_id: str | None = None, **details: Any) -> bool:
        """Count a retry, record it and wait for it; False if stopped meanwhile."""
        delay = backoff.next_delay()
        low, high = backoff.bounds()
        self._record(self._kind("retry"), direction="local", conn_id=conn_id,
                     decoded={"retry": backoff.retry, "delay": round(delay, 6),
                              "bounds": [round(low, 6), round(high, 6)], **details},
                     note=f"retry #{backoff.retry} in {delay:.3f} s")
        return await self._sleep(delay)

    @staticmethod
    def decodable(data: bytes) -> bool:
        """Whether ``data`` can be extracted as a USP Record (else the MTP's error path)."""
        try:
            records.parse_record(data)
        except records.RecordDecodeError:
            return False
        return True

    def _deliver(self, data: bytes, route: Route) -> None:
        """Pass a Record to :attr:`on_record`; a broken handler is logged, not raised."""
        handler = self.on_record
        if handler is None:
            return
        try:
            handler(data, route)
        except Exception as exc:  # noqa: BLE001 - the runtime's bug must not kill the MTP
            _log.exception("%s: on_record handler failed", self.name)
            self._record(self._kind("sink_error"), direction="local", conn_id=route.conn_id,
                         decoded={"error": repr(exc)[:300]})

    def _connect_record(self, to_id: str, **fields: Any) -> bytes:
        return records.serialize(records.connect_record(
            self.name, to_id=to_id, from_id=self.endpoint_id, **fields))

    def _notify_connected(self) -> None:
        self.connection_count += 1
        self._changed()
        if self.on_connected is not None:
            try:
                self.on_connected(self)
            except Exception:  # noqa: BLE001
                _log.exception("%s: on_connected handler failed", self.name)

    def _notify_disconnected(self) -> None:
        self._changed()
        if self.on_disconnected is not None:
            try:
                self.on_disconnected(self)
            except Exception:  # noqa: BLE001
                _log.exception("%s: on_disconnected handler failed", self.name)

    @staticmethod
    def disconnect_targets(disconnect_record: bytes | bytearray | Sequence[bytes] | None
                           ) -> list[tuple[str, bytes]]:
        """``(to_id, bytes)`` for each DisconnectRecord given to :meth:`stop`.

        Raises ValueError for bytes that are not a Record with a ``to_id``.
        """
        if disconnect_record is None:
            return []
        items: Iterable[bytes] = ([bytes(disconnect_record)]
                                  if isinstance(disconnect_record, (bytes, bytearray, memoryview))
                                  else disconnect_record)
        out: list[tuple[str, bytes]] = []
        for item in items:
            data = bytes(item)
            try:
                to_id = records.parse_record(data).to_id
            except records.RecordDecodeError as exc:
                raise ValueError(f"not a DisconnectRecord: {exc}") from None
            if not to_id:
                raise ValueError("DisconnectRecord without to_id")
            out.append((to_id, data))
        return out

    async def _send_disconnects(self, disconnect_record: bytes | Sequence[bytes] | None) -> None:
        """Best effort: send each DisconnectRecord while still connected (R-MTP.7)."""
        for to_id, data in self.disconnect_targets(disconnect_record):
            try:
                await self.send(data, to_id=to_id)
            except ConnectionError as exc:
                self._record(self._kind("disconnect_record"), direction="local",
                             decoded={"to_id": to_id, "sent": False, "error": str(exc)[:200]})
                continue
            self._record(self._kind("disconnect_record"), direction="out",
                         decoded={"to_id": to_id, "sent": True})

    def _begin_stop(self) -> bool:
        """Mark the MTP as stopping; False if it already was."""
        if self._stopping.is_set():
            return False
        self._stopping.set()
        return True

    @staticmethod
    async def _cancel(task: asyncio.Task[Any] | None, timeout: float = 5.0) -> None:
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, timeout)
