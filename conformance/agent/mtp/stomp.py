"""The reference Agent's STOMP 1.2 client (TR-369 "STOMP Binding"), asyncio.

Built on the suite's sans-I/O codec (:mod:`conformance.mtp.stomp`) and
:func:`conformance.mtp.transport.open_connection` (TLS through an
``ssl.SSLContext``, R-STOMP.36; the server's certificate is judged as
:mod:`conformance.agent.mtp.tls` says). One :class:`STOMPMTP` is one
``Device.STOMP.Connection.{i}`` used by one ``Device.LocalAgent.MTP.{i}.STOMP``:

* connects with a ``STOMP`` frame (R-STOMP.2): ``accept-version:1.2``,
  ``host`` (VirtualHost, else the server name, R-STOMP.5), ``login`` /
  ``passcode`` unless TLS without a Username is used, i.e. a client
  certificate authenticates the Agent (R-STOMP.3), ``heart-beat``
  only when heart-beats are enabled (R-STOMP.8..R-STOMP.10) and
  ``endpoint-id`` (R-STOMP.4; its colons escaped as the R-STOMP.4 note asks,
  unless ``escape_endpoint_id`` is off);
* subscribes (``ack:auto``, R-STOMP.12, R-STOMP.13, R-STOMP.17) to the
  CONNECTED ``subscribe-dest`` when present (R-STOMP.6, R-STOMP.14), else
  the configured Destination (R-STOMP.15); with neither it sends DISCONNECT
  and retries (R-STOMP.16);
* keeps the negotiated heart-beats both ways (R-STOMP.11): an EOL when
  nothing else was written for the agreed interval, and the connection is
  dropped after ``heartbeat_tolerance`` intervals of silence from the server;
* sends the STOMPConnect Record to every configured Controller once
  subscribed (R-MTP.6), then USP Records in SEND frames with
  ``content-length``, ``content-type: application/vnd.bbf.usp.msg`` and
  ``reply-to-dest`` (R-STOMP.18..R-STOMP.22); answers go to the received
  ``reply-to-dest`` (R-STOMP.23);
* MESSAGE bodies that are not USP Records are dropped silently (STOMP
  "Handling Errors", R-MTP.5); an ERROR frame or a lost connection enters the
  retry state with the ``ServerRetry*`` back-off (R-STOMP.7, R-STOMP.25);
* follows a changed Destination while connected without ``subscribe-dest``:
  UNSUBSCRIBE, then SUBSCRIBE to the new one (R-STOMP.29;
  :meth:`STOMPMTP.change_destination`, or :meth:`STOMPMTP.follow_destination`
  to track the data-model parameter);
* never sends BEGIN/COMMIT/ABORT/ACK/NACK (R-STOMP.26, R-STOMP.27); on
  stop sends DISCONNECT with a receipt (R-STOMP.28).

Named faults (``stomp.*``, registered below) break one rule each at the one
place the rule is kept; TP-469 section 6 cases name them in ``killed_by``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from conformance.agent.faults import register
from conformance.agent.mtp import tls as agent_tls
from conformance.agent.mtp.backoff import Backoff, STOMPRetry
from conformance.agent.mtp.base import (
    AgentMTP,
    ControllerRoute,
    MTPNotConnected,
    NoRoute,
    Route,
)
from conformance.mtp.stomp.broker import frame_summary
from conformance.mtp.stomp.codec import StompDecoder, encode_frame
from conformance.mtp.stomp.frames import (
    USP_CONTENT_TYPE,
    Frame,
    HeartBeat,
    StompDecodeError,
    escape_header,
)
from conformance.mtp.stomp.heartbeat import (
    format_heartbeat,
    negotiate_heartbeat,
    parse_heartbeat,
)
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import Connection, open_connection
from conformance.usp import records

__all__ = ["STOMPMTP", "STOMPConnectionConfig"]

_log = logging.getLogger(__name__)
_READ_SIZE = 65536
_receipts = itertools.count(1)

# --- named faults (conformance/agent/faults.py) -------------------------------------------
register("stomp.connect_command", "R-STOMP.2, TP-469 6.2",
         "opens the session with a CONNECT frame instead of a STOMP frame")
register("stomp.no_host_header", "R-STOMP.2, TP-469 6.2",
         "leaves the host header (required by STOMP 1.2) out of the STOMP frame")
register("stomp.retry_late", "R-STOMP.7, TP-469 6.3",
         "waits the full ServerRetryInitialInterval * (k/1000)^n before retry n (one power "
         "of the multiplier too many) instead of a random value up to I * (k/1000)^(n-1)")
register("stomp.retry_max_interval", "R-STOMP.7, TP-469 6.3",
         "waits ServerRetryMaxInterval before every retry after the first instead of a "
         "random value up to I * (k/1000)^(n-1)")
register("stomp.no_content_length", "R-STOMP.19, TP-469 6.4",
         "sends SEND frames without a content-length header")
register("stomp.wrong_content_type", "R-STOMP.20, TP-469 6.4",
         "labels SEND frames application/octet-stream instead of application/vnd.bbf.usp.msg")
register("stomp.no_reply_to_dest", "R-STOMP.21, TP-469 6.4/6.6",
         "sends SEND frames without a reply-to-dest header")
register("stomp.ignore_subscribe_dest", "R-STOMP.14, TP-469 6.5",
         "subscribes to its configured Destination even when CONNECTED carries subscribe-dest")
register("stomp.reply_to_configured_destination", "R-STOMP.21, TP-469 6.5",
         "puts its configured Destination in reply-to-dest instead of the destination it "
         "subscribed to")
register("stomp.destination_from_endpoint_id", "R-STOMP.15, R-STOMP.16, TP-469 6.6/6.7",
         "without subscribe-dest, subscribes to /queue/<EndpointID> instead of the configured "
         "Destination, also when that is empty")
register("stomp.no_destination_idle", "R-STOMP.16, TP-469 6.7",
         "with no destination at all, stays connected without subscribing instead of ending "
         "the session")
register("stomp.heartbeat_header_swapped", "R-STOMP.10, TP-469 6.8",
         "writes the heart-beat header as IncomingHeartbeat,OutgoingHeartbeat")
register("stomp.heartbeat_slow", "R-STOMP.11, TP-469 6.8",
         "sends heart-beats at twice the negotiated interval")
register("stomp.drop_on_bad_record", "R-MTP.5, TP-469 6.9",
         "ends the STOMP session (DISCONNECT) when a MESSAGE body is not a USP Record "
         "instead of ignoring it")
register("stomp.destination_change_ignored", "R-STOMP.29, TP-469 6.10",
         "keeps its subscription when its Destination changes")
register("stomp.subscribe_before_unsubscribe", "R-STOMP.29, TP-469 6.10",
         "on a Destination change, subscribes to the new destination before unsubscribing "
         "from the old one")
register("stomp.plaintext_reconnect", "R-STOMP.36, TP-469 6.11",
         "reconnects without TLS after a lost connection although EnableEncryption is true")
register("stomp.connect_record_bad_version", "R-MTP.6, TP-469 6.12",
         "sends its STOMPConnectRecord with a STOMP version outside the enum (1)")
register("stomp.connect_record_no_destination", "R-MTP.6, TP-469 6.12",
         "leaves subscribed_destination empty in its STOMPConnectRecord")


class _Listenable(Protocol):
    """What :meth:`STOMPMTP.follow_destination` needs of the agent's data-model store."""

    def listen(self, callback: Callable[[Any], None]) -> Callable[[], None]: ...


@dataclass(frozen=True)
class _FaultyRetry:
    """The STOMP back-off with one of the deliberate timing faults (TP-469 6.3)."""

    policy: STOMPRetry
    late: bool = False              # stomp.retry_late
    max_after_first: bool = False   # stomp.retry_max_interval

    def bounds(self, retry: int) -> tuple[float, float]:
        return self.policy.bounds(retry)

    def delay(self, retry: int, rng: random.Random) -> float:
        if self.late:
            return self.policy.bounds(retry + 1)[1]
        if self.max_after_first and retry > 1 and self.policy.max_interval is not None:
            return self.policy.max_interval
        return self.policy.delay(retry, rng)


@dataclass(frozen=True)
class STOMPConnectionConfig:
    """The ``Device.STOMP.Connection.{i}`` parameters the client uses.

    Heart-beat values are milliseconds; ``retry`` carries
    ServerRetryInitialInterval / ServerRetryIntervalMultiplier /
    ServerRetryMaxInterval. TLS is on when the MTP gets an ``ssl_context``
    (EnableEncryption).
    """

    host: str = "127.0.0.1"
    port: int = 61613
    username: str | None = None
    password: str | None = None
    virtual_host: str = ""
    enable_heartbeats: bool = False
    outgoing_heartbeat: int = 0
    incoming_heartbeat: int = 0
    retry: STOMPRetry = field(default_factory=STOMPRetry)
    #: Escape the Endpoint ID's colons in the STOMP frame (note under R-STOMP.4).
    escape_endpoint_id: bool = True
    #: TLS server name (SNI / hostname check); the host when None.
    server_hostname: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, not {self.port!r}")
        if self.outgoing_heartbeat < 0 or self.incoming_heartbeat < 0:
            raise ValueError("heart-beat intervals cannot be negative")


class STOMPMTP(AgentMTP):
    """A STOMP 1.2 connection of the Agent and its subscription."""

    name = "stomp"

    def __init__(self, endpoint_id: str, config: STOMPConnectionConfig, *,
                 destination: str = "", controllers: Sequence[ControllerRoute] = (),
                 ssl_context: ssl.SSLContext | None = None, timeline: Timeline | None = None,
                 rng: random.Random | None = None, connect_timeout: float = 10.0,
                 heartbeat_tolerance: float = 2.0) -> None:
        super().__init__(endpoint_id, controllers=controllers, timeline=timeline, rng=rng)
        if connect_timeout <= 0 or heartbeat_tolerance <= 0:
            raise ValueError("connect_timeout and heartbeat_tolerance must be > 0")
        self.config = config
        #: ``Device.LocalAgent.MTP.{i}.STOMP.Destination``.
        self.destination = destination
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.heartbeat_tolerance = heartbeat_tolerance
        #: ``DestinationFromServer``: the last CONNECTED ``subscribe-dest`` ("" if none).
        self.destination_from_server = ""
        #: The destination subscribed to on the current connection.
        self.subscribed_destination: str | None = None
        #: Negotiated ``(client_to_server_ms, server_to_client_ms)`` heart-beats.
        self.heart_beat: tuple[int, int] = (0, 0)
        self.conn_id: str | None = None
        self._conn: Connection | None = None
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._last_tx = 0.0
        self._receipts: dict[str, asyncio.Future[None]] = {}
        #: ``id`` of the current subscription (one per connection, renewed on R-STOMP.29).
        self._subscription_id = 0
        self._unlisten: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ properties

    @property
    def connected(self) -> bool:
        return self._connected and self._conn is not None and not self._conn.closing

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS (EnableEncryption)."""
        return self.ssl_context is not None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is not None:
            return
        if self.ssl_context is not None:  # how the broker's certificate is judged
            agent_tls.apply_faults(self.ssl_context, self.faults, server_side=False)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, disconnect_record: bytes | Sequence[bytes] | None = None) -> None:
        if not self._begin_stop():
            return
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        for task in list(self._tasks):
            await self._cancel(task)
        if self.connected:
            await self._send_disconnects(disconnect_record)
            await self._disconnect_frame()
        await self._cancel(self._task)
        await self._close_conn()

    async def _disconnect_frame(self) -> None:
        """DISCONNECT with a receipt, waiting briefly for the RECEIPT (R-STOMP.28)."""
        receipt = f"disconnect-{next(_receipts)}"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._receipts[receipt] = fut
        try:
            await self._write_frame(Frame("DISCONNECT", [("receipt", receipt)]))
            await asyncio.wait_for(fut, 2.0)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._receipts.pop(receipt, None)

    async def _close_conn(self) -> None:
        conn = self._conn
        if conn is not None:
            await conn.close()

    # ------------------------------------------------------------------ connection loop

    async def _run(self) -> None:
        late = self.faults.on("stomp.retry_late")
        at_max = self.faults.on("stomp.retry_max_interval")
        policy = (_FaultyRetry(self.config.retry, late, at_max) if late or at_max
                  else self.config.retry)
        backoff = Backoff(policy, self.rng)
        first = True
        while not self.stopping:
            if not first and not await self._retry_wait(backoff, self.conn_id):
                break
            first = False
            try:
                await self._session(backoff)
            except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                self._record("stomp.state", direction="local", conn_id=self.conn_id,
                             decoded={"state": "lost", "error": str(exc)[:300]})
            except Exception as exc:  # noqa: BLE001 - keep retrying whatever went wrong
                _log.exception("stomp: connection failed")
                self._record("stomp.state", direction="local", conn_id=self.conn_id,
                             decoded={"state": "error", "error": repr(exc)[:300]})

    async def _session(self, backoff: Backoff) -> None:
        cfg = self.config
        ssl_context = self.ssl_context
        if self.connection_count > 0 and self.faults.on("stomp.plaintext_reconnect"):
            ssl_context = None
        try:
            conn = await open_connection(self.name, cfg.host, cfg.port,
                                         ssl_context=ssl_context,
                                         server_hostname=cfg.server_hostname,
                                         timeline=self.timeline, timeout=self.connect_timeout)
        except ConnectionError as exc:
            self._record("stomp.state", direction="local",
                         decoded={"state": "connect_failed", "error": str(exc)[:300]})
            return
        self._conn, self.conn_id = conn, conn.conn_id
        decoder = StompDecoder()
        was_connected = False
        try:
            await self._write_frame(self._stomp_frame())
            pending = await self._await_connected(conn, decoder)
            if pending is None:
                return
            connected, rest = pending
            dest = self._choose_destination(connected)
            if dest is None:  # R-STOMP.16: no destination at all
                self._record("stomp.state", direction="local", conn_id=conn.conn_id,
                             decoded={"state": "no_destination", "rule": "R-STOMP.16"},
                             note="no subscribe-dest and no configured Destination")
                if self.faults.on("stomp.no_destination_idle"):
                    await self._read_loop(conn, decoder)
                    return
                with contextlib.suppress(ConnectionError):
                    await self._write_frame(Frame("DISCONNECT", []))
                return
            self._subscription_id = 0
            await self._subscribe(dest)
            self._connected = was_connected = True
            backoff.reset()
            self._start_heartbeats()
            await self._send_connect_records(dest)
            self._notify_connected()
            for event in rest:
                await self._on_event(event)
            await self._read_loop(conn, decoder)
        finally:
            self._connected = False
            if self._heartbeat_task is not None:
                await self._cancel(self._heartbeat_task)
                self._heartbeat_task = None
            await conn.close()
            conn.record("conn.close", direction="out")
            if was_connected:
                self._notify_disconnected()

    def _stomp_frame(self) -> Frame:
        cfg = self.config
        eid = escape_header(self.endpoint_id) if cfg.escape_endpoint_id else self.endpoint_id
        headers = [("accept-version", "1.2")]
        if not self.faults.on("stomp.no_host_header"):
            headers.append(("host", cfg.virtual_host or cfg.host))
        if cfg.username is not None or self.ssl_context is None:
            # R-STOMP.3: login/passcode unless a TLS client certificate authenticates us.
            headers += [("login", cfg.username or ""), ("passcode", cfg.password or "")]
        if cfg.enable_heartbeats:  # R-STOMP.8 / R-STOMP.9 (header absent when disabled)
            pair = (cfg.outgoing_heartbeat, cfg.incoming_heartbeat)
            if self.faults.on("stomp.heartbeat_header_swapped"):
                pair = pair[::-1]
            headers.append(("heart-beat", format_heartbeat(pair)))
        headers.append(("endpoint-id", eid))
        command = "CONNECT" if self.faults.on("stomp.connect_command") else "STOMP"  # R-STOMP.2
        return Frame(command, headers)

    async def _await_connected(self, conn: Connection, decoder: StompDecoder
                               ) -> tuple[Frame, list[Frame | HeartBeat]] | None:
        """Read until CONNECTED (returned with any events after it) or ERROR/EOF (None)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._record("stomp.state", direction="local", conn_id=conn.conn_id,
                             decoded={"state": "no_connected"}, note="no CONNECTED in time")
                return None
            try:
                data = await asyncio.wait_for(conn.reader.read(_READ_SIZE), remaining)
            except TimeoutError:
                continue
            if not data:
                return None
            events = self._feed(conn, decoder, data)
            if events is None:
                return None
            for i, event in enumerate(events):
                if isinstance(event, HeartBeat):
                    self._record_in(conn, event)
                    continue
                self._record_in(conn, event)
                if event.command == "CONNECTED":
                    return event, events[i + 1:]
                if event.command == "ERROR":  # R-STOMP.25
                    return None

    def _choose_destination(self, connected: Frame) -> str | None:
        server_dest = connected.header("subscribe-dest")
        self.destination_from_server = server_dest or ""
        client_hb = ((self.config.outgoing_heartbeat, self.config.incoming_heartbeat)
                     if self.config.enable_heartbeats else (0, 0))
        server_hb, _ = parse_heartbeat(connected.header("heart-beat"))
        self.heart_beat = negotiate_heartbeat(client_hb, server_hb)
        if server_dest and not (self.faults.on("stomp.ignore_subscribe_dest")
                                and self.destination):
            return server_dest  # R-STOMP.6 / R-STOMP.14
        if self.faults.on("stomp.destination_from_endpoint_id"):
            return f"/queue/{self.endpoint_id}"
        return self.destination or None  # R-STOMP.15 / R-STOMP.16

    async def _subscribe(self, dest: str) -> None:
        """SUBSCRIBE with a fresh id, ``ack:auto`` (R-STOMP.12, R-STOMP.13, R-STOMP.17)."""
        self._subscription_id += 1
        await self._write_frame(Frame("SUBSCRIBE", [
            ("id", str(self._subscription_id - 1)), ("destination", dest), ("ack", "auto")]))
        self.subscribed_destination = dest

    # ------------------------------------------------------------------ destination changes

    def follow_destination(self, store: _Listenable, param_path: str) -> None:
        """Track ``param_path`` (this MTP's ``Device.LocalAgent.MTP.{i}.STOMP.Destination``)
        in the agent's data model: each new value goes to :meth:`change_destination`.
        The listener is removed on :meth:`stop`."""
        def on_change(change: Any) -> None:
            if getattr(change, "path", None) != param_path or not hasattr(change, "new"):
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a change made outside the event loop: applies at next connect
                self.destination = str(change.new)
                return
            task = loop.create_task(self.change_destination(str(change.new)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        if self._unlisten is not None:
            self._unlisten()
        self._unlisten = store.listen(on_change)

    async def change_destination(self, destination: str) -> None:
        """A new configured Destination (R-STOMP.29).

        Used from the next connection on. On a live connection that got no
        ``subscribe-dest`` (R-STOMP.14 keeps the server's choice otherwise) the
        subscription is renewed at once: UNSUBSCRIBE from the old destination, then
        SUBSCRIBE to the new one. An empty Destination cannot be subscribed to: the
        current subscription stays until the next connection, where R-STOMP.16 applies
        (dropping the session at once would also lose the answer to the Set).
        """
        self.destination = destination
        old = self.subscribed_destination
        if (not destination or not self.connected or self.destination_from_server
                or old == destination or self.faults.on("stomp.destination_change_ignored")):
            return
        self._record("stomp.state", direction="local", conn_id=self.conn_id,
                     decoded={"state": "destination_changed", "old": old, "new": destination,
                              "rule": "R-STOMP.29"})
        unsubscribe = Frame("UNSUBSCRIBE", [("id", str(self._subscription_id - 1))])
        with contextlib.suppress(ConnectionError):  # a lost connection resubscribes anyway
            if self.faults.on("stomp.subscribe_before_unsubscribe"):
                await self._subscribe(destination)
                await self._write_frame(unsubscribe)
                return
            await self._write_frame(unsubscribe)
            await self._subscribe(destination)

    async def _send_connect_records(self, dest: str) -> None:
        for route in self.controllers.values():
            if not route.address:
                continue
            data = self._stomp_connect_record(route.endpoint_id, dest)
            try:
                await self.send(data, to_id=route.endpoint_id)
            except ConnectionError:
                return
            self._record("stomp.connect_record", direction="out", conn_id=self.conn_id,
                         decoded={"to_id": route.endpoint_id, "destination": route.address,
                                  "subscribed_destination": dest})

    def _stomp_connect_record(self, to_id: str, dest: str) -> bytes:
        """The STOMPConnectRecord (R-MTP.6): version V1_2 and the subscribed destination."""
        if self.faults.on("stomp.connect_record_no_destination"):
            dest = ""
        data = self._connect_record(to_id, subscribed_destination=dest)
        if self.faults.on("stomp.connect_record_bad_version"):
            rec = records.parse_record(data)
            rec.stomp_connect.version = 1  # type: ignore[assignment]  # outside STOMPVersion
            data = records.serialize(rec)
        return data

    async def _read_loop(self, conn: Connection, decoder: StompDecoder) -> None:
        incoming = self.heart_beat[1]
        timeout = incoming / 1000 * self.heartbeat_tolerance if incoming > 0 else None
        while not conn.closing:
            try:
                data = await asyncio.wait_for(conn.reader.read(_READ_SIZE), timeout)
            except TimeoutError:  # R-STOMP.11: the server's heart-beats stopped
                self._record("stomp.heartbeat_missed", direction="local", conn_id=conn.conn_id,
                             decoded={"expected_ms": incoming,
                                      "tolerance": self.heartbeat_tolerance})
                return
            if not data:
                return
            events = self._feed(conn, decoder, data)
            if events is None:
                return
            for event in events:
                if not await self._on_event(event):
                    return

    def _feed(self, conn: Connection, decoder: StompDecoder,
              data: bytes) -> list[Frame | HeartBeat] | None:
        try:
            return decoder.feed(data)
        except StompDecodeError as exc:
            for event in exc.events:
                self._record_in(conn, event)
            self._record("stomp.violation", direction="in", conn_id=conn.conn_id, raw=data,
                         decoded=[{"rule": "STOMP-1.2", "message": exc.reason}],
                         note="malformed frame from the server")
            return None

    def _record_in(self, conn: Connection, event: Frame | HeartBeat) -> None:
        if isinstance(event, HeartBeat):
            self._record("stomp.heartbeat", direction="in", conn_id=conn.conn_id, raw=event.raw)
        else:
            self._record(f"stomp.{event.command}", direction="in", conn_id=conn.conn_id,
                         raw=event.raw, decoded=frame_summary(event))

    async def _on_event(self, event: Frame | HeartBeat) -> bool:
        """Handle one event after CONNECTED; False ends the connection."""
        conn = self._conn
        assert conn is not None
        self._record_in(conn, event)
        if isinstance(event, HeartBeat):
            return True
        if event.command == "MESSAGE":
            if not self._on_message(conn, event):
                with contextlib.suppress(ConnectionError):
                    await self._write_frame(Frame("DISCONNECT", []))
                return False
        elif event.command == "RECEIPT":  # R-STOMP.30
            fut = self._receipts.get(event.header("receipt-id") or "")
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif event.command == "ERROR":  # R-STOMP.25: the server closes; retry
            return False
        return True

    def _on_message(self, conn: Connection, frame: Frame) -> bool:
        """Deliver a USP Record; others are dropped (True) or, under the
        ``stomp.drop_on_bad_record`` fault, end the session (False)."""
        ctype = frame.header("content-type")
        if ctype is not None and ctype.split(";")[0].strip() != USP_CONTENT_TYPE:
            self._record("stomp.dropped", direction="local", conn_id=conn.conn_id,
                         decoded={"reason": f"content-type {ctype[:80]!r}"})
            return True
        if not self.decodable(frame.body):  # R-MTP.5: nothing to answer; ignore it
            self._record("stomp.dropped", direction="local", conn_id=conn.conn_id,
                         decoded={"reason": "body is not a USP Record"})
            return not self.faults.on("stomp.drop_on_bad_record")
        reply_to = frame.header("reply-to-dest")
        hint = next((c.endpoint_id for c in self.controllers.values()
                     if reply_to and c.address == reply_to), None)
        self._deliver(frame.body, Route(self.name, conn.conn_id, reply_to, hint))
        return True

    # ------------------------------------------------------------------ heart-beats

    def _start_heartbeats(self) -> None:
        interval = self.heart_beat[0]
        if self.faults.on("stomp.heartbeat_slow"):
            interval *= 2
        if interval > 0:
            self._heartbeat_task = asyncio.get_running_loop().create_task(
                self._heartbeats(interval / 1000))

    async def _heartbeats(self, interval: float) -> None:
        """An EOL whenever nothing was written for ``interval`` seconds (R-STOMP.11)."""
        try:
            while self.connected:
                delay = self._last_tx + interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                await self._write(b"\n", "stomp.heartbeat", None)
        except ConnectionError:
            pass

    # ------------------------------------------------------------------ sending

    async def _write_frame(self, frame: Frame) -> None:
        await self._write(encode_frame(frame), f"stomp.{frame.command}", frame_summary(frame))

    async def _write(self, raw: bytes, kind: str, decoded: object) -> None:
        conn = self._conn
        if conn is None or conn.closing:
            raise MTPNotConnected("stomp: no connection")
        async with self._write_lock:
            self._record(kind, direction="out", conn_id=conn.conn_id, raw=raw, decoded=decoded)
            try:
                await conn.write(raw)
            except OSError as exc:  # TLS errors are OSErrors too
                raise MTPNotConnected(f"stomp: write failed: {exc}") from exc
            self._last_tx = time.monotonic()

    async def send(self, data: bytes, *, to_id: str, reply_to: str | None = None) -> None:
        if not self.connected or self.subscribed_destination is None:
            raise MTPNotConnected("stomp: not connected")
        dest = reply_to
        if not dest:
            route = self.controllers.get(to_id)
            if route is None or not route.address:
                raise NoRoute(f"stomp: no destination known for {to_id!r}")
            dest = route.address
        body = bytes(data)
        reply_to_dest = self.subscribed_destination
        if self.faults.on("stomp.reply_to_configured_destination") and self.destination:
            reply_to_dest = self.destination
        ctype = ("application/octet-stream" if self.faults.on("stomp.wrong_content_type")
                 else USP_CONTENT_TYPE)  # R-STOMP.20
        headers = [("destination", dest), ("content-type", ctype)]  # R-STOMP.18
        if not self.faults.on("stomp.no_reply_to_dest"):  # R-STOMP.21
            headers.append(("reply-to-dest", reply_to_dest))
        if self.faults.on("stomp.no_content_length"):
            # Written anyway, although a NUL in the body then ends the frame early.
            frame = Frame("SEND", headers, body)
            await self._write(encode_frame(frame, check=False), "stomp.SEND",
                              frame_summary(frame))
            return
        headers.append(("content-length", str(len(body))))  # R-STOMP.19
        await self._write_frame(Frame("SEND", headers, body))
