"""The suite's STOMP 1.2 broker (asyncio) that USP Agents under test connect to.

It plays the STOMP server of the TR-369 STOMP binding (R-STOMP.33: STOMP 1.2
server behaviour) and gives test cases what TP-469 section 6 needs to see
and to provoke:

* CONNECT/STOMP -> CONNECTED (version 1.2, negotiated ``heart-beat``, the USP
  ``subscribe-dest`` header on demand: R-STOMP.6, R-STOMP.14, TP-469 6.5-6.7),
  login/passcode checked when credentials are configured (R-STOMP.3,
  R-STOMP.34; a TLS client certificate is accepted instead of a login),
  SUBSCRIBE/UNSUBSCRIBE, SEND routed as MESSAGE frames, RECEIPT, DISCONNECT,
  ERROR (R-STOMP.25), ACK/NACK and transactions accepted;
* heart-beats sent at the negotiated interval and missed client heart-beats
  detected (R-STOMP.8..R-STOMP.11, TP-469 6.8);
* every frame and heart-beat, both ways, in the timeline with raw bytes and a
  summary; every client frame checked with :func:`validate` (role "agent")
  and its violations recorded as ``stomp.violation``;
* in-process controller endpoints (:meth:`STOMPBroker.attach_controller`,
  :class:`~conformance.mtp.stomp.binding.STOMPBinding`);
* :class:`STOMPScenario` hooks: ``subscribe-dest`` (also left out of the
  first N CONNECTED frames, TP-469 6.7), server heart-beat offer, extra
  CONNECTED headers, ERROR instead of CONNECTED, close after N frames,
  withheld RECEIPTs, refused connections (all, or only the next N; counted
  and timestamped for the R-STOMP.7 retry checks of TP-469 6.3), silenced
  heart-beats, USP MESSAGE bodies cut short so that the agent gets a Record
  it cannot parse (TP-469 6.9).

Frame summaries (the decoded form of ``stomp.<COMMAND>`` entries) add the
unescaped ``endpoint_id`` of CONNECT/STOMP frames and, for SEND and MESSAGE
bodies, a ``record`` view of the USP Record carried (:func:`record_summary`),
so that cases can match what a frame transports.

Timeline kinds (mtp ``stomp``): ``stomp.<COMMAND>`` (``stomp.unknown`` for a
command outside STOMP 1.2), ``stomp.heartbeat``, ``stomp.heartbeat_missed``,
``stomp.violation`` (decoded: list of ``{rule, message}``),
``stomp.scenario`` (decoded: ``{action, ...}``), ``stomp.unrouted`` (a SEND
nobody subscribed to), ``stomp.controller_attached``, ``stomp.sink_error``
and ``stomp.read_error`` (the socket or TLS layer failed while reading).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import itertools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from conformance import __version__
from conformance.mtp.binding import BindingClosed, InboundRecord
from conformance.mtp.scenario import ConnectionView, ScenarioHost, ServerHost
from conformance.mtp.stomp.binding import STOMPBinding
from conformance.mtp.stomp.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    StompDecoder,
    encode_frame,
)
from conformance.mtp.stomp.frames import (
    COMMANDS,
    USP_CONTENT_TYPE,
    Frame,
    HeartBeat,
    StompDecodeError,
    unescape_header,
)
from conformance.mtp.stomp.heartbeat import (
    HeartBeatPair,
    format_heartbeat,
    negotiate_heartbeat,
    parse_heartbeat,
)
from conformance.mtp.stomp.validate import usp_endpoint_id, validate
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import Connection, Server
from conformance.mtp.waiting import StateChanges
from conformance.usp import records
from conformance.usp.schema import msg_type_name

__all__ = ["MTP", "SERVER_NAME", "STOMPBroker", "STOMPScenario", "STOMPSession", "Subscription",
           "frame_summary", "record_summary"]

_log = logging.getLogger(__name__)

MTP = "stomp"
#: Value of the ``server`` header in CONNECTED.
SERVER_NAME = f"usp-conformance-stomp/{__version__}"
ACK_MODES: frozenset[str] = frozenset({"auto", "client", "client-individual"})
_READ_SIZE = 65536
#: Headers the broker sets itself on a MESSAGE instead of copying them from the SEND.
_MESSAGE_OWN = frozenset({"destination", "message-id", "subscription", "ack", "receipt",
                          "transaction", "content-length"})


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class STOMPScenario:
    """How the broker behaves for the next connections and frames.

    Set it with ``broker.scenario = STOMPScenario(...)`` or
    ``broker.set_scenario(field=value)``; it is read at each decision point,
    so a change applies to frames already in flight on open connections.
    """

    #: ``subscribe-dest`` header value for CONNECTED (None: header absent).
    subscribe_dest: str | None = None
    #: The server's ``heart-beat`` offer ``(sx, sy)`` in ms: sx = how often it
    #: can send, sy = how often it wants the client to send (0 = never).
    heart_beat: HeartBeatPair = (0, 0)
    #: Extra CONNECTED headers, appended in order.
    connected_headers: tuple[tuple[str, str], ...] = ()
    #: Send ERROR with this ``message`` instead of CONNECTED, then close.
    error_on_connect: str | None = None
    #: Close the connection after this many client frames (all commands).
    close_after_frames: int | None = None
    #: Do not answer ``receipt`` headers.
    withhold_receipts: bool = False
    #: Close every new connection right after it is accepted (after TLS).
    refuse_connections: bool = False
    #: False stops the server heart-beats on every connection.
    send_heartbeats: bool = True
    #: A client heart-beat is missed after ``interval * heartbeat_tolerance`` of silence.
    heartbeat_tolerance: float = 1.5
    #: Close the connection when a client heart-beat is missed.
    close_on_missed_heartbeat: bool = False
    #: The configured virtual host, checked on STOMP/CONNECT (R-STOMP.5).
    expected_host: str | None = None
    #: Refuse only the next N connections, then accept again (TP-469 6.3: the server
    #: comes back after the EUT failed to connect twice).
    refuse_next_connections: int = 0
    #: Leave ``subscribe_dest`` out of the first N CONNECTED frames, then send it
    #: (TP-469 6.7: a session with no destination at all, then one the EUT can use).
    subscribe_dest_skip: int = 0
    #: Cut the last body byte of the next N USP MESSAGE frames sent to agents, so
    #: that each carries a Record that cannot be parsed (TP-469 6.9).
    corrupt_messages: int = 0

    #: The fields that count down: each counts from the moment the scenario is set.
    COUNTED: ClassVar[tuple[str, ...]] = ("refuse_next_connections", "subscribe_dest_skip",
                                          "corrupt_messages")

    def __post_init__(self) -> None:
        # Values from YAML case files arrive as lists; keep the documented tuple forms.
        try:
            object.__setattr__(self, "heart_beat", tuple(self.heart_beat))
            object.__setattr__(self, "connected_headers",
                               tuple(tuple(h) for h in self.connected_headers))
        except TypeError:
            raise ValueError("heart_beat is a pair of ints and connected_headers a list of "
                             "(name, value) pairs") from None
        if len(self.heart_beat) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for v in self.heart_beat):
            raise ValueError(f"heart_beat must be two non-negative ints, got {self.heart_beat!r}")
        if any(len(h) != 2 or not all(isinstance(v, str) for v in h)
               for h in self.connected_headers):
            raise ValueError("connected_headers must be (name, value) string pairs")
        if not self.heartbeat_tolerance > 0:
            raise ValueError("heartbeat_tolerance must be > 0")
        if self.close_after_frames is not None and self.close_after_frames < 1:
            raise ValueError("close_after_frames must be >= 1")
        for name in self.COUNTED:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        out = dataclasses.asdict(self)
        out["heart_beat"] = list(self.heart_beat)
        out["connected_headers"] = [list(h) for h in self.connected_headers]
        return out


@dataclass(frozen=True)
class Subscription:
    """One SUBSCRIBE of a connection."""

    id: str
    destination: str
    ack: str = "auto"


class _Close(Exception):
    """Internal: stop serving this connection (the transport then closes it)."""


@dataclass(eq=False)
class STOMPSession(ConnectionView):
    """One client connection: what it said at connect and what it subscribed to.

    ``heart_beat`` is the negotiated ``(client_to_server_ms,
    server_to_client_ms)``; ``client_heart_beat`` / ``server_heart_beat``
    are the two offers it came from.
    """

    conn: Connection = field(repr=False)
    opened_at: float
    endpoint_id: str | None = None          # unescaped (R-STOMP.4 note)
    endpoint_id_raw: str | None = None      # as on the wire
    login: str | None = None
    host: str | None = None
    connected: bool = False
    closed: bool = False
    subscribe_dest: str | None = None       # what CONNECTED told the client
    client_heart_beat: HeartBeatPair = (0, 0)
    server_heart_beat: HeartBeatPair = (0, 0)
    heart_beat: HeartBeatPair = (0, 0)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    transactions: dict[str, list[Frame]] = field(default_factory=dict, repr=False)
    frames_in: int = 0
    frames_out: int = 0
    last_rx: float = 0.0
    last_tx: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def destinations(self) -> list[str]:
        """Subscribed destinations, oldest subscription first."""
        return [s.destination for s in self.subscriptions.values()]

    def matches(self, endpoint_id: str) -> bool:
        """Whether this client is ``endpoint_id`` (plain or ``\\c``-escaped form)."""
        wanted = {endpoint_id, _unescaped(endpoint_id)}
        if self.endpoint_id is not None or self.endpoint_id_raw is not None:
            return bool(wanted & {self.endpoint_id, self.endpoint_id_raw})
        return bool(wanted & set(self.conn.peer_endpoint_ids))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary for reports."""
        return {
            "conn_id": self.conn_id, "peer": self.peer, "tls": self.tls,
            "peer_endpoint_ids": self.peer_endpoint_ids, "endpoint_id": self.endpoint_id,
            "login": self.login, "host": self.host, "connected": self.connected,
            "subscribe_dest": self.subscribe_dest,
            "subscriptions": [dataclasses.asdict(s) for s in self.subscriptions.values()],
            "heart_beat": {"client": list(self.client_heart_beat),
                           "server": list(self.server_heart_beat),
                           "client_to_server_ms": self.heart_beat[0],
                           "server_to_client_ms": self.heart_beat[1]},
            "frames_in": self.frames_in, "frames_out": self.frames_out,
        }

    async def send_frame(self, frame: Frame, *, note: str | None = None) -> None:
        """Encode, record (``stomp.<COMMAND>`` out) and write one frame."""
        raw = encode_frame(frame)
        await self._write(raw, _frame_kind(frame.command), frame_summary(frame), note)
        self.frames_out += 1

    async def send_heartbeat(self) -> None:
        """Write one EOL heart-beat (``stomp.heartbeat`` out)."""
        await self._write(b"\n", "stomp.heartbeat", None, None)

    async def _write(self, raw: bytes, kind: str, decoded: Any, note: str | None) -> None:
        async with self._lock:
            if self.closed or self.conn.closing:
                raise ConnectionError(f"{self.conn_id} is closed")
            self.conn.record(kind, direction="out", raw=raw, decoded=decoded, note=note)
            try:
                await self.conn.write(raw)
            except OSError as exc:  # TLS errors are OSErrors but not ConnectionErrors
                self.closed = True
                raise ConnectionError(f"{self.conn_id}: {exc}") from exc
            self.last_tx = time.monotonic()


def frame_summary(frame: Frame) -> dict[str, Any]:
    """The decoded form of a frame for the timeline.

    ``headers`` maps each name to its first value (the one STOMP 1.2 honours);
    repeats are listed under ``duplicate_headers``.  ERROR bodies are shown
    as text; other bodies only by length (the raw bytes are in the entry).
    """
    first: dict[str, str] = {}
    dups: list[list[str]] = []
    for name, value in frame.headers:
        if name in first:
            dups.append([name, value])
        else:
            first[name] = value
    out: dict[str, Any] = {"command": frame.command, "headers": first,
                           "body_length": len(frame.body)}
    if dups:
        out["duplicate_headers"] = dups
    if frame.command in ("CONNECT", "STOMP"):
        out["endpoint_id"] = usp_endpoint_id(frame)  # unescaped (R-STOMP.4 note)
    if frame.command == "ERROR" and frame.body:
        out["body_text"] = frame.body[:1000].decode("utf-8", "replace")
    if frame.command in ("SEND", "MESSAGE") and frame.body:
        out["record"] = record_summary(frame.body)
    return out


def record_summary(body: bytes) -> dict[str, Any]:
    """What a USP Record body carries, as a mapping cases can match; never raises.

    ``record_type`` (the ``record_type`` oneof, None when unset), ``version``,
    ``to_id`` and ``from_id``; a connect or disconnect Record's own fields under
    its type name (enums by name, ``"UNKNOWN(n)"`` outside the enum); the
    ``msg_id`` and ``msg_type`` of a NoSessionContext payload (``msg_error`` when
    it is not a Msg). A body that is not a Record gives ``{"error": reason}``.
    """
    try:
        rec = records.parse_record(body)
    except records.RecordDecodeError as exc:
        return {"error": str(exc)[:200]}
    kind = records.record_kind(rec)
    out: dict[str, Any] = {"record_type": kind, "version": rec.version, "to_id": rec.to_id,
                           "from_id": rec.from_id}
    if kind in records.CONNECT_KINDS or kind == "disconnect":
        out[kind] = _fields(getattr(rec, kind))
    elif kind == "no_session_context":
        try:
            msg = records.parse_msg(rec.no_session_context.payload)
        except records.MsgDecodeError as exc:
            out["msg_error"] = str(exc)[:200]
        else:
            out["msg_id"] = msg.header.msg_id
            out["msg_type"] = msg_type_name(msg.header.msg_type)
    return out


def _fields(message: Any) -> dict[str, Any]:
    """Every scalar field of a (flat) protobuf message, defaults included."""
    out: dict[str, Any] = {}
    for fd in message.DESCRIPTOR.fields:
        value = getattr(message, fd.name)
        if fd.enum_type is not None:
            known = fd.enum_type.values_by_number.get(value)
            value = known.name if known is not None else f"UNKNOWN({value})"
        elif isinstance(value, bytes):
            value = value.hex()
        out[fd.name] = value
    return out


def _frame_kind(command: str) -> str:
    return f"stomp.{command}" if command in COMMANDS else "stomp.unknown"


def _unescaped(value: str) -> str:
    try:
        return unescape_header(value)
    except StompDecodeError:
        return value


# --------------------------------------------------------------------------- broker


class STOMPBroker(ServerHost, ScenarioHost[STOMPScenario]):
    """A STOMP 1.2 server on :class:`~conformance.mtp.transport.Server`.

    ``credentials`` maps login -> passcode; when given, clients must present
    a matching pair unless they authenticated with a TLS client certificate
    and sent no login.  ``ssl_context`` makes it a STOMP-over-TLS server
    (R-STOMP.36; TP-469 6.11).
    """

    MTP_NAME = MTP

    def __init__(self, timeline: Timeline | None = None, ssl_context: ssl.SSLContext | None = None,
                 credentials: Mapping[str, str] | None = None, *,
                 scenario: STOMPScenario | None = None, server_name: str = SERVER_NAME,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.timeline = timeline
        self.credentials = dict(credentials) if credentials is not None else None
        self.server_name = server_name
        self.max_frame_size = max_frame_size
        self._scenario = scenario or STOMPScenario()
        self._server = Server(MTP, self._handle, ssl_context=ssl_context, timeline=timeline,
                              accept_filter=self._accept)
        self._sessions: dict[str, STOMPSession] = {}
        self._controllers: dict[str, STOMPBinding] = {}
        self._changes = StateChanges()
        self._tasks: set[asyncio.Task[None]] = set()
        self._message_ids = itertools.count(1)
        #: ``time.monotonic()`` of every accepted connection, refused ones included.
        self.connection_attempts: list[float] = []
        #: How many connections ``refuse_connections`` / ``refuse_next_connections`` closed.
        self.refused = 0
        #: How much of each counted scenario field (STOMPScenario.COUNTED) is used up.
        self._used: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Stop listening and drop every connection (idempotent)."""
        await self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        self._changes.close(ConnectionError("STOMP broker closed"))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ scenario

    def set_scenario(self, scenario: STOMPScenario | None = None,
                     **changes: Any) -> STOMPScenario:
        """Replace or change the scenario; its counted fields start counting again."""
        new = super().set_scenario(scenario, **changes)
        self._used = {}
        return new

    def _take(self, name: str) -> bool:
        """Use one unit of the counted scenario field ``name``; False when none is left."""
        used = self._used.get(name, 0)
        if used >= getattr(self._scenario, name):
            return False
        self._used[name] = used + 1
        return True

    # ------------------------------------------------------------------ inspection

    @property
    def connections(self) -> dict[str, STOMPSession]:
        """Open client connections by ``conn_id`` (a copy)."""
        return dict(self._sessions)

    def find_agent(self, endpoint_id: str) -> STOMPSession | None:
        """The newest connected session of ``endpoint_id``, preferring subscribed ones."""
        fallback = None
        for session in reversed(list(self._sessions.values())):
            if session.connected and not session.closed and session.matches(endpoint_id):
                if session.subscriptions:
                    return session
                fallback = fallback or session
        return fallback

    async def wait_for_agent(self, endpoint_id: str, timeout: float = 10.0) -> STOMPSession:
        """Wait until ``endpoint_id`` is connected AND subscribed.

        Raises ``TimeoutError`` after ``timeout`` seconds, ``ConnectionError``
        if the broker is closed meanwhile.
        """
        def subscribed() -> STOMPSession | None:
            session = self.find_agent(endpoint_id)
            return session if session is not None and session.subscriptions else None

        return await self._changes.wait_until(
            subscribed, timeout=timeout,
            what=f"STOMP agent {endpoint_id!r} did not connect and subscribe")

    # ------------------------------------------------------------------ controllers

    def attach_controller(self, endpoint_id: str, destination: str) -> STOMPBinding:
        """An in-process controller endpoint receiving every SEND to ``destination``."""
        current = self._controllers.get(destination)
        if current is not None and not current.closed:
            raise ValueError(f"destination {destination!r} already has a controller attached")
        binding = STOMPBinding(self, endpoint_id, destination)
        self._controllers[destination] = binding
        self._local("stomp.controller_attached", None,
                    {"endpoint_id": endpoint_id, "destination": destination})
        return binding

    def detach_controller(self, binding: STOMPBinding) -> None:
        """Used by :meth:`STOMPBinding.close`."""
        if self._controllers.get(binding.destination) is binding:
            del self._controllers[binding.destination]

    async def send_to_agent(self, data: bytes, *, to_id: str, reply_to: str,
                            destination: str | None = None,
                            headers: Mapping[str, str] | None = None) -> int:
        """MESSAGE ``data`` to agent ``to_id`` with ``reply-to-dest: reply_to``.

        The destination is ``destination`` or else the agent's newest
        subscription; like a SEND to it, every subscriber of that destination
        gets the MESSAGE.  Returns how many were sent.  Raises
        :class:`BindingClosed` if the agent is not connected, not subscribed
        to the destination, or its connection fails while writing.
        """
        session = self.find_agent(to_id)
        if session is None:
            raise BindingClosed(f"STOMP agent {to_id!r} is not connected")
        dest = destination
        if dest is None:
            if not session.subscriptions:
                raise BindingClosed(f"STOMP agent {to_id!r} has not subscribed")
            dest = session.destinations[-1]
        targets = self._subscribers(dest)
        if not any(s is session for s, _ in targets):
            raise BindingClosed(f"STOMP agent {to_id!r} is not subscribed to {dest!r}")
        extra = {"content-type": USP_CONTENT_TYPE, "reply-to-dest": reply_to}
        extra.update(headers or {})
        body = bytes(data)
        if body and self._take("corrupt_messages"):
            # The last byte goes: the Record's final (length-delimited) field then
            # overruns the body, so the Record cannot be parsed (TP-469 6.9).
            body = body[:-1]
            self._action(session.conn_id, "corrupt_message", to_id=to_id, length=len(body))
        for target, sub in targets:
            try:
                await target.send_frame(self._message(dest, sub, body, list(extra.items())))
            except ConnectionError as exc:
                if target is session:
                    raise BindingClosed(f"STOMP agent {to_id!r}: {exc}") from None
        return len(targets)

    # ------------------------------------------------------------------ on-demand actions

    def _target(self, endpoint_id: str | None, conn_id: str | None) -> STOMPSession:
        session = self._sessions.get(conn_id) if conn_id else (
            self.find_agent(endpoint_id) if endpoint_id else None)
        if session is None:
            raise LookupError(f"no STOMP connection for endpoint {endpoint_id!r} / {conn_id!r}")
        return session

    async def send_error(self, endpoint_id: str | None = None, message: str = "error", *,
                         conn_id: str | None = None, body: str = "", close: bool = True) -> None:
        """Send an ERROR frame to a client now (R-STOMP.25), then close unless told not to.

        The client is chosen by ``endpoint_id`` or ``conn_id``; ``LookupError``
        if there is none.
        """
        session = self._target(endpoint_id, conn_id)
        self._action(session.conn_id, "send_error", message=message, close=close)
        with contextlib.suppress(ConnectionError):
            await session.send_frame(_error_frame(message, body), note="on demand")
        if close:
            await self._drop(session)

    async def drop(self, endpoint_id: str | None = None, *, conn_id: str | None = None) -> None:
        """Close a client's TCP connection without any STOMP frame."""
        session = self._target(endpoint_id, conn_id)
        self._action(session.conn_id, "drop_connection")
        await self._drop(session)

    async def _drop(self, session: STOMPSession) -> None:
        session.closed = True
        await session.conn.close()

    # ------------------------------------------------------------------ connection handling

    def _accept(self, conn_id: str, peer: str) -> bool:
        """Count every attempt before TLS; refuse it when the scenario says so."""
        now = time.monotonic()
        self.connection_attempts.append(now)
        if self._scenario.refuse_connections or self._take("refuse_next_connections"):
            self.refused += 1
            self._action(conn_id, "refuse_connection", attempt=len(self.connection_attempts), t=now)
            return False
        return True

    async def _handle(self, conn: Connection) -> None:
        now = time.monotonic()
        session = STOMPSession(conn=conn, opened_at=now, last_rx=now, last_tx=now)
        self._sessions[conn.conn_id] = session
        try:
            await self._serve(session)
        except _Close:
            pass
        finally:
            session.closed = True
            session.connected = False
            self._sessions.pop(conn.conn_id, None)

    async def _serve(self, session: STOMPSession) -> None:
        conn = session.conn
        decoder = StompDecoder(max_frame_size=self.max_frame_size)
        missed_reported = False
        while not session.closed:
            timeout = None if missed_reported else self._rx_timeout(session)
            try:
                if timeout is None:
                    data = await conn.reader.read(_READ_SIZE)
                else:
                    data = await asyncio.wait_for(conn.reader.read(_READ_SIZE), timeout)
            except TimeoutError:
                missed_reported = True
                self._heartbeat_missed(session)
                if self._scenario.close_on_missed_heartbeat:
                    self._action(session.conn_id, "close_on_missed_heartbeat")
                    return
                continue
            except OSError as exc:  # reset, or a TLS error such as data after close_notify
                conn.record("stomp.read_error", direction="in",
                            decoded={"error": f"{type(exc).__name__}: {exc}"[:300]})
                return
            if not data:
                return
            session.last_rx = time.monotonic()
            missed_reported = False
            try:
                events = decoder.feed(data)
            except StompDecodeError as exc:
                for event in exc.events:
                    await self._on_event(session, event)
                conn.record("stomp.violation", direction="in", raw=bytes(data),
                            decoded=[{"rule": "STOMP-1.2", "message": exc.reason}],
                            note="malformed STOMP frame")
                await self._protocol_error(session, f"malformed frame: {exc.reason}")
            for event in events:
                await self._on_event(session, event)

    def _rx_timeout(self, session: STOMPSession) -> float | None:
        interval = session.heart_beat[0]
        if not session.connected or interval <= 0:
            return None
        limit = interval / 1000 * self._scenario.heartbeat_tolerance
        return max(0.0, session.last_rx + limit - time.monotonic())

    def _heartbeat_missed(self, session: STOMPSession) -> None:
        silence = time.monotonic() - session.last_rx
        session.conn.record(
            "stomp.heartbeat_missed", direction="local",
            decoded={"expected_ms": session.heart_beat[0],
                     "tolerance": self._scenario.heartbeat_tolerance,
                     "silence_ms": round(silence * 1000, 1)},
            note=f"no bytes for {silence * 1000:.0f} ms (heart-beat {session.heart_beat[0]} ms)")

    async def _on_event(self, session: STOMPSession, event: Frame | HeartBeat) -> None:
        conn = session.conn
        if isinstance(event, HeartBeat):
            conn.record("stomp.heartbeat", direction="in", raw=event.raw)
            return
        frame = event
        session.frames_in += 1
        conn.record(_frame_kind(frame.command), direction="in", raw=frame.raw,
                    decoded=frame_summary(frame))
        violations = validate(frame, "agent", client_cert_auth=bool(session.peer_endpoint_ids),
                              expected_host=self._scenario.expected_host,
                              subscribe_dest=session.subscribe_dest)
        if violations:
            conn.record("stomp.violation", direction="in", raw=frame.raw,
                        decoded=[{"rule": v.rule, "message": v.message} for v in violations],
                        note=f"{frame.command[:40]}: " + ", ".join(sorted({v.rule for v in violations})))
        await self._dispatch(session, frame)
        limit = self._scenario.close_after_frames
        if limit is not None and session.frames_in >= limit:
            self._action(session.conn_id, "close_after_frames", frames=session.frames_in)
            raise _Close

    async def _dispatch(self, session: STOMPSession, frame: Frame) -> None:
        cmd = frame.command
        if cmd in ("CONNECT", "STOMP"):
            if session.connected:
                await self._protocol_error(session, "already connected", frame)
            await self._on_connect(session, frame)
            return
        if not session.connected:
            await self._protocol_error(session, f"expected CONNECT or STOMP, got {cmd[:40]!r}",
                                       frame)
        handler = self._handlers.get(cmd)
        if handler is None:
            await self._protocol_error(session, f"unexpected command {cmd[:40]!r}", frame)
            return
        await handler(self, session, frame)
        if cmd != "DISCONNECT":
            await self._receipt(session, frame)

    async def _protocol_error(self, session: STOMPSession, message: str,
                              frame: Frame | None = None) -> None:
        """ERROR (with receipt-id when the culprit asked for a receipt), then close."""
        error = _error_frame(message, "")
        receipt = frame.header("receipt") if frame is not None else None
        if receipt is not None:
            error.headers.insert(0, ("receipt-id", receipt))
        with contextlib.suppress(ConnectionError):
            await session.send_frame(error, note="protocol error")
        raise _Close

    async def _receipt(self, session: STOMPSession, frame: Frame) -> None:
        receipt = frame.header("receipt")
        if receipt is None:
            return
        if self._scenario.withhold_receipts:
            self._action(session.conn_id, "withhold_receipt", receipt=receipt,
                         command=frame.command)
            return
        await session.send_frame(Frame("RECEIPT", [("receipt-id", receipt)]))

    # ------------------------------------------------------------------ frame handlers

    async def _on_connect(self, session: STOMPSession, frame: Frame) -> None:
        scenario = self._scenario
        session.endpoint_id_raw = frame.header("endpoint-id")
        session.endpoint_id = usp_endpoint_id(frame)
        session.login = frame.header("login")
        session.host = frame.header("host")
        session.client_heart_beat, _ = parse_heartbeat(frame.header("heart-beat"))
        versions = {v.strip() for v in (frame.header("accept-version") or "1.0").split(",")}
        if "1.2" not in versions:
            error = _error_frame("supported protocol versions are 1.2", "")
            error.headers.insert(0, ("version", "1.2"))
            with contextlib.suppress(ConnectionError):
                await session.send_frame(error, note="no common STOMP version")
            raise _Close
        refusal = self._authenticate(session, frame)
        if refusal is not None:
            with contextlib.suppress(ConnectionError):
                await session.send_frame(_error_frame("authentication failed", refusal),
                                         note=f"login refused: {refusal}")
            raise _Close
        if scenario.error_on_connect is not None:
            self._action(session.conn_id, "error_on_connect", message=scenario.error_on_connect)
            with contextlib.suppress(ConnectionError):
                await session.send_frame(_error_frame(scenario.error_on_connect, ""),
                                         note="scenario: ERROR instead of CONNECTED")
            raise _Close
        session.server_heart_beat = scenario.heart_beat
        session.heart_beat = negotiate_heartbeat(session.client_heart_beat, scenario.heart_beat)
        headers = [("version", "1.2"), ("heart-beat", format_heartbeat(scenario.heart_beat)),
                   ("server", self.server_name), ("session", session.conn_id)]
        if scenario.subscribe_dest is not None and self._take("subscribe_dest_skip"):
            self._action(session.conn_id, "subscribe_dest_skipped",
                         left=scenario.subscribe_dest_skip - self._used["subscribe_dest_skip"])
        elif scenario.subscribe_dest is not None:
            headers.append(("subscribe-dest", scenario.subscribe_dest))
            session.subscribe_dest = scenario.subscribe_dest
            self._action(session.conn_id, "subscribe_dest", value=scenario.subscribe_dest)
        if scenario.connected_headers:
            headers.extend(scenario.connected_headers)
            self._action(session.conn_id, "connected_headers",
                         headers=[list(h) for h in scenario.connected_headers])
        session.connected = True
        session.last_rx = time.monotonic()
        await session.send_frame(
            Frame("CONNECTED", headers),
            note=f"heart-beat negotiated c->s {session.heart_beat[0]} ms, "
                 f"s->c {session.heart_beat[1]} ms")
        if session.heart_beat[1] > 0:
            task = asyncio.get_running_loop().create_task(self._heartbeats(session))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._changes.changed()

    def _authenticate(self, session: STOMPSession, frame: Frame) -> str | None:
        """None when accepted, else why not (R-STOMP.3, R-STOMP.34)."""
        if self.credentials is None:
            return None
        login, passcode = frame.header("login"), frame.header("passcode")
        if login is None and session.peer_endpoint_ids:
            return None  # authenticated by its TLS client certificate
        if login is None:
            return "no login header"
        expected = self.credentials.get(login)
        if expected is None or passcode is None or not hmac.compare_digest(
                expected.encode(), passcode.encode()):
            return f"bad login or passcode for {login[:60]!r}"
        return None

    async def _on_subscribe(self, session: STOMPSession, frame: Frame) -> None:
        sub_id, dest = frame.header("id"), frame.header("destination")
        ack = frame.header("ack") or "auto"
        if not sub_id:
            await self._protocol_error(session, "SUBSCRIBE requires an id header", frame)
        if not dest:
            await self._protocol_error(session, "SUBSCRIBE requires a destination header", frame)
        if ack not in ACK_MODES:
            await self._protocol_error(session, f"invalid ack mode {ack[:40]!r}", frame)
        assert sub_id is not None and dest is not None
        if sub_id in session.subscriptions:
            await self._protocol_error(session, f"subscription id {sub_id[:60]!r} already in use",
                                       frame)
        session.subscriptions[sub_id] = Subscription(sub_id, dest, ack)
        self._changes.changed()

    async def _on_unsubscribe(self, session: STOMPSession, frame: Frame) -> None:
        sub_id = frame.header("id")
        if not sub_id:
            await self._protocol_error(session, "UNSUBSCRIBE requires an id header", frame)
        session.subscriptions.pop(sub_id or "", None)

    async def _on_send(self, session: STOMPSession, frame: Frame) -> None:
        if not frame.header("destination"):
            await self._protocol_error(session, "SEND requires a destination header", frame)
        tx = frame.header("transaction")
        if tx is not None:
            if tx not in session.transactions:
                await self._protocol_error(session, f"unknown transaction {tx[:60]!r}", frame)
            session.transactions[tx].append(frame)
            return
        await self._route(session, frame)

    async def _on_ack(self, session: STOMPSession, frame: Frame) -> None:
        """ACK/NACK are accepted and have no effect (messages are never redelivered)."""

    async def _on_transaction(self, session: STOMPSession, frame: Frame) -> None:
        tx = frame.header("transaction")
        if not tx:
            await self._protocol_error(session, f"{frame.command} requires a transaction header",
                                       frame)
        assert tx is not None
        if frame.command == "BEGIN":
            if tx in session.transactions:
                await self._protocol_error(session, f"transaction {tx[:60]!r} already begun", frame)
            session.transactions[tx] = []
            return
        if tx not in session.transactions:
            await self._protocol_error(session, f"unknown transaction {tx[:60]!r}", frame)
        sends = session.transactions.pop(tx)
        if frame.command == "COMMIT":
            for send in sends:
                await self._route(session, send)

    async def _on_disconnect(self, session: STOMPSession, frame: Frame) -> None:
        with contextlib.suppress(ConnectionError):
            await self._receipt(session, frame)
        raise _Close

    _handlers: ClassVar[Mapping[str, Callable[[STOMPBroker, STOMPSession, Frame],
                                              Awaitable[None]]]] = {
        "SUBSCRIBE": _on_subscribe, "UNSUBSCRIBE": _on_unsubscribe, "SEND": _on_send,
        "ACK": _on_ack, "NACK": _on_ack, "BEGIN": _on_transaction, "COMMIT": _on_transaction,
        "ABORT": _on_transaction, "DISCONNECT": _on_disconnect,
    }

    # ------------------------------------------------------------------ routing

    def _subscribers(self, destination: str) -> list[tuple[STOMPSession, Subscription]]:
        return [(s, sub) for s in list(self._sessions.values()) if s.connected and not s.closed
                for sub in list(s.subscriptions.values()) if sub.destination == destination]

    def _message(self, destination: str, sub: Subscription, body: bytes,
                 headers: list[tuple[str, str]]) -> Frame:
        message_id = f"{MTP}-msg-{next(self._message_ids)}"
        out = [("destination", destination), ("message-id", message_id),
               ("subscription", sub.id)]
        if sub.ack != "auto":
            out.append(("ack", message_id))
        out += [(n, v) for n, v in headers if n not in _MESSAGE_OWN]
        out.append(("content-length", str(len(body))))
        return Frame("MESSAGE", out, body)

    async def _route(self, session: STOMPSession, frame: Frame) -> None:
        """Deliver a SEND to the attached controller and to every subscriber."""
        dest = frame.header("destination") or ""
        binding = self._controllers.get(dest)
        targets = self._subscribers(dest)
        if binding is not None:
            first = frame_summary(frame)["headers"]
            record = InboundRecord(
                data=frame.body, mtp=MTP, conn_id=session.conn_id,
                received_at=time.monotonic(), reply_to=frame.header("reply-to-dest"),
                meta={"headers": first, "destination": dest, "endpoint_id": session.endpoint_id,
                      "peer_endpoint_ids": session.peer_endpoint_ids})
            try:
                binding.deliver(record)
            except Exception as exc:  # noqa: BLE001 - a broken sink must not drop the agent
                _log.exception("STOMP controller sink failed")
                self._local("stomp.sink_error", session.conn_id, {"error": repr(exc)[:300]})
        elif not targets:
            self._local("stomp.unrouted", session.conn_id, {"destination": dest},
                        note="SEND to a destination nobody subscribed to")
        for target, sub in targets:
            with contextlib.suppress(ConnectionError):
                await target.send_frame(self._message(dest, sub, frame.body, frame.headers))

    # ------------------------------------------------------------------ heart-beats

    async def _heartbeats(self, session: STOMPSession) -> None:
        """Send an EOL whenever nothing was written for the negotiated interval."""
        interval = session.heart_beat[1] / 1000
        silenced = False
        try:
            while not session.closed:
                delay = session.last_tx + interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                if not self._scenario.send_heartbeats:
                    if not silenced:
                        silenced = True
                        self._action(session.conn_id, "heartbeats_stopped")
                    await asyncio.sleep(interval)
                    continue
                if silenced:
                    silenced = False
                    self._action(session.conn_id, "heartbeats_resumed")
                await session.send_heartbeat()
        except ConnectionError:
            pass


def _error_frame(message: str, body: str) -> Frame:
    data = body.encode("utf-8")
    return Frame("ERROR", [("message", message), ("content-type", "text/plain"),
                           ("content-length", str(len(data)))], data)
