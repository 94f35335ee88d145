"""One established WebSocket connection driven over asyncio, for both roles.

:class:`WSPeer` pumps bytes between a :class:`~conformance.mtp.transport.Connection`
and the sans-I/O :class:`~.connection.WSConnection`: it records every frame
in and out (``ws.frame``, raw bytes plus a decoded summary), every complete
message (``ws.message``), rule breaches found in the EUT's traffic
(``ws.violation``), missed keep-alive answers (``ws.pong_missed``), test
actions (``ws.scenario``) and the end of the connection (``ws.closed``).
Complete binary messages go to an ``on_message`` callback (R-WS.14); the
server and client modules turn them into USP Records for the Controller.
Every received event can also be watched through ``on_event``.

Also here, because both roles share them: :class:`WSScenario` (what the
suite does on purpose, set by tests or the case engine at any time, with
:func:`apply_scenario` / :func:`perform_action` for its one-off actions),
:class:`FrameSplitter` (a pure, never-raising splitter that finds frame
boundaries in raw bytes so each frame is recorded with its exact wire
bytes) and the head / frame summaries written into the timeline.

Timeline kinds written by the WebSocket MTP (``mtp="websocket"``):
``ws.attempt``, ``ws.handshake_request``, ``ws.handshake_response``,
``ws.handshake_incomplete``, ``ws.open``, ``ws.agent``,
``ws.duplicate_session``, ``ws.frame``, ``ws.message``, ``ws.violation``,
``ws.pong_missed``, ``ws.scenario``, ``ws.sink_error``, ``ws.closed`` and
(client) ``ws.second_session``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

from conformance.mtp.binding import Binding, InboundRecord
from conformance.mtp.transport import Connection

from .connection import ConnectionState, Role, WSConnection
from .errors import Violation, WSUsageError
from .events import (
    ConnectionClosed,
    Event,
    Message,
    Ping,
    Pong,
    ProtocolViolation,
)
from .frames import (
    DEFAULT_MAX_FRAME_PAYLOAD,
    Frame,
    FrameDecoder,
    Opcode,
    encode_close_payload,
    is_valid_close_code,
    parse_close_payload,
)
from .handshake import (
    ClientHandshake,
    ClientHandshakeResult,
    HandshakeRequest,
    HandshakeResponse,
    ServerHandshake,
    ServerHandshakeResult,
)

__all__ = [
    "MTP",
    "ONE_OFF_ACTIONS",
    "FrameSplitter",
    "Handshake",
    "Piece",
    "WSPeer",
    "WSScenario",
    "abort_connection",
    "apply_scenario",
    "check_keepalive",
    "deliver",
    "frame_summary",
    "perform_action",
    "read_handshake",
    "request_summary",
    "response_summary",
    "split_frames",
    "violations_summary",
    "wire_frame_size",
]

#: MTP name used in timelines and bindings.
MTP = "websocket"
#: Bytes asked from the socket per read.
READ_SIZE = 65536
#: Control-frame payload bytes shown as hex in a frame summary.
_SHOWN_PAYLOAD = 125

OnMessage = Callable[["WSPeer", Message, float], None]
OnEvent = Callable[["WSPeer", Event], None]
Handshake = ClientHandshake | ServerHandshake
HandshakeResult = ClientHandshakeResult | ServerHandshakeResult

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class WSScenario:
    """What the suite's WebSocket side does on purpose (TP-469 section 7).

    Set it on a server or client at any time (``obj.scenario = WSScenario(...)``);
    handshake fields act on the next connection, the others on the next
    frame sent or received. Every action taken is recorded as ``ws.scenario``.

    Handshake (server: the 101 answer; client: the upgrade request):

    * ``reject_status`` -- server only: answer the upgrade with this HTTP
      status instead of 101 (TP-469 7.8 "reject new connections").
    * ``refuse_connections`` -- server only: reset every new TCP connection
      at once; attempts are still counted and timestamped (R-WS.19 back-off).
    * ``omit_subprotocol`` / ``subprotocol`` -- leave out, or replace the
      value of, ``Sec-WebSocket-Protocol`` (R-WS.10/11/12/12a; TP-469 7.5).
    * ``omit_extension`` / ``extension`` -- leave out, or send this raw value
      for, ``Sec-WebSocket-Extensions`` (R-WS.11a/11b/11c; TP-469 7.11).
    * ``omit_eid`` -- client only: no ``?eid=`` and no extension eid (R-WS.10b).

    Frames:

    * ``withhold_pongs`` -- do not answer Pings (tests the peer's keep-alive, R-WS.17).
    * ``fragment_size`` -- send each USP Record fragmented into frames of at
      most this many bytes (R-WS.14a/14b; TP-469 7.12).
    * ``send_text`` -- send USP Records in text frames instead of binary
      (R-WS.14, R-WS.16; TP-469 7.6).

    Connection (client only):

    * ``redial`` -- when the agent ends the session (a Close, TCP dropped),
      open a new one at once, so that the Controller stays reachable after a
      case in which the agent closes on purpose (TP-469 7.2, 7.6).

    One-off actions (:data:`ONE_OFF_ACTIONS`): setting one of these through
    ``set_scenario`` performs it once on the agent's open connection; the
    stored scenario keeps them at their defaults (a case script can name
    them in a ``scenario`` step, TP-469 section 7):

    * ``send_ping`` -- send a Ping with this text as payload (7.7).
    * ``send_pong`` -- send an unsolicited Pong with this text as payload (7.7).
    * ``send_close`` -- send a Close with this status code and wait for the
      end of the connection (7.4).
    * ``send_payload_hex`` -- send these bytes (hex) as one binary message,
      e.g. something that is not a USP Record (R-WS.16; 7.6).
    * ``second_session`` -- client only: open a second session to the agent
      with the same Endpoint ID, send a Get over it if it is accepted, and
      watch this many seconds whether the agent ends one of the two (R-WS.4;
      7.2); the outcome is recorded as ``ws.second_session``.

    The same actions are :class:`WSPeer` methods for tests: ``close(code)``
    (any code), ``abort()`` (TCP dropped, 7.8), ``ping()`` / ``pong()`` and
    ``send_frame()`` (malformed frames).
    """

    reject_status: int | None = None
    reject_reason: str = ""
    refuse_connections: bool = False
    omit_subprotocol: bool = False
    subprotocol: str | None = None
    omit_extension: bool = False
    extension: str | None = None
    omit_eid: bool = False
    withhold_pongs: bool = False
    fragment_size: int | None = None
    send_text: bool = False
    redial: bool = False
    send_ping: str | None = None
    send_pong: str | None = None
    send_close: int | None = None
    send_payload_hex: str | None = None
    second_session: float | None = None

    def __post_init__(self) -> None:
        if self.fragment_size is not None and self.fragment_size < 1:
            raise ValueError("fragment_size must be positive")
        if self.reject_status is not None and not 100 <= self.reject_status <= 999:
            raise ValueError(f"reject_status {self.reject_status} is not an HTTP status")
        for name in ("send_ping", "send_pong"):
            text = getattr(self, name)
            if text is not None and (not isinstance(text, str) or len(text.encode()) > 125):
                raise ValueError(f"{name} is a text of at most 125 bytes (a control payload)")
        code = self.send_close
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)
                                 or not 0 <= code <= 0xFFFF):
            raise ValueError(f"send_close {code!r} is not a 16-bit status code")
        if self.send_payload_hex is not None:
            try:
                bytes.fromhex(str(self.send_payload_hex))
            except ValueError:
                raise ValueError(f"send_payload_hex {self.send_payload_hex!r} is not hex") from None
        watch = self.second_session
        if watch is not None and (isinstance(watch, bool) or not isinstance(watch, (int, float))
                                  or not watch > 0):
            raise ValueError("second_session is the number of seconds to watch (> 0)")

    def actions(self) -> dict[str, Any]:
        """The one-off actions this scenario asks for (fields not at their default)."""
        return {name: getattr(self, name) for name in ONE_OFF_ACTIONS
                if getattr(self, name) is not None}


#: Scenario fields that are performed once when set, never stored (see :class:`WSScenario`).
ONE_OFF_ACTIONS = ("send_ping", "send_pong", "send_close", "send_payload_hex", "second_session")


def apply_scenario(current: WSScenario, scenario: WSScenario | None,
                   changes: dict[str, Any]) -> tuple[WSScenario, dict[str, Any]]:
    """The scenario to store after ``set_scenario(scenario, **changes)`` and the one-off
    actions to perform (in the order given); ValueError for a bad field or value."""
    unknown = sorted(set(changes) - set(WSScenario.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown WebSocket scenario field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(WSScenario.__dataclass_fields__)}")
    try:
        new = replace(scenario or current, **changes)
    except TypeError as exc:  # e.g. a text where a number belongs
        raise ValueError(f"bad WebSocket scenario value: {exc}") from None
    wanted = new.actions()
    order = [k for k in changes if k in wanted] + [k for k in wanted if k not in changes]
    cleared: dict[str, Any] = dict.fromkeys(wanted)
    return replace(new, **cleared), {k: wanted[k] for k in order}


def spawn_action(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
    """Run a one-off scenario action as a task kept in ``tasks`` until it ends (so that the
    owner can cancel what is left when it closes); needs a running event loop."""
    try:
        task = asyncio.get_running_loop().create_task(coro)
    except RuntimeError:
        coro.close()
        raise RuntimeError("one-off scenario actions need a running event loop") from None
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def perform_action(peer: WSPeer | None, name: str, value: Any, *,
                         close_wait: float = 5.0) -> None:
    """Do one peer-level one-off action on ``peer`` (the agent's open connection); an
    action that cannot be done is recorded as ``ws.scenario`` with an ``error``."""
    if peer is None or not peer.is_open:
        if peer is not None:
            peer.scenario_action(name, error="no open connection")
        return
    try:
        if name == "send_ping":
            peer.scenario_action("send_ping", payload=value)
            await peer.ping(str(value).encode())
        elif name == "send_pong":
            await peer.pong(str(value).encode())
        elif name == "send_close":
            peer.scenario_action("send_close", code=value)
            await peer.close(int(value), wait=close_wait)
        elif name == "send_payload_hex":
            data = bytes.fromhex(str(value))
            peer.scenario_action("send_payload", len=len(data), payload_hex=data[:64].hex())
            await peer.send_record(data)
        else:
            peer.scenario_action(name, error="not an action of this side")
    except ConnectionError as exc:
        peer.scenario_action(name, error=str(exc)[:200])


# --------------------------------------------------------------------------- frame splitting


def _frame_layout(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(header bytes, payload length) of the frame at ``pos``, None if the header is partial."""
    avail = len(buf) - pos
    if avail < 2:
        return None
    b1 = buf[pos + 1]
    len7 = b1 & 0x7F
    header = 2
    if len7 == 126:
        if avail < 4:
            return None
        (length,) = struct.unpack_from("!H", buf, pos + 2)
        header = 4
    elif len7 == 127:
        if avail < 10:
            return None
        (length,) = struct.unpack_from("!Q", buf, pos + 2)
        header = 10
    else:
        length = len7
    if b1 & 0x80:
        header += 4
    return header, length


def wire_frame_size(buf: bytes | bytearray, pos: int = 0) -> int | None:
    """Bytes taken on the wire by the frame starting at ``pos``, or None if its
    header is not complete yet. Never raises; the length is not checked."""
    layout = _frame_layout(buf, pos)
    return None if layout is None else layout[0] + layout[1]


@dataclass(frozen=True)
class Piece:
    """A slice of raw wire bytes: one whole frame, or bytes that cannot be framed."""

    raw: bytes
    frame: Frame | None = None
    error: str | None = None


class FrameSplitter:
    """Cuts a byte stream into frames with their exact wire bytes (pure, never raises).

    After a framing error (a 64-bit length with its top bit set, or a length
    over ``max_payload``) every later byte is returned as an error piece.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_FRAME_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.error: str | None = None
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held that do not form a whole frame yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Piece]:
        if self.error is not None:
            return [Piece(bytes(data), None, self.error)] if data else []
        self._buf += data
        pieces: list[Piece] = []
        while True:
            layout = _frame_layout(self._buf, 0)
            if layout is None:
                break
            header, length = layout
            if length >> 63:
                return pieces + self._fail("64-bit payload length has its top bit set")
            if length > self.max_payload:
                return pieces + self._fail(f"frame payload of {length} bytes exceeds {self.max_payload}")
            size = header + length
            if len(self._buf) < size:
                break
            raw = bytes(self._buf[:size])
            decoded = FrameDecoder(self.max_payload).feed(raw)
            if len(decoded) != 1 or not isinstance(decoded[0], Frame):
                detail = decoded[0].detail if decoded and isinstance(decoded[0], Violation) else "undecodable"
                return pieces + self._fail(detail)
            del self._buf[:size]
            pieces.append(Piece(raw, decoded[0]))
        return pieces

    def flush(self) -> list[Piece]:
        """Whatever is buffered, as an incomplete-frame piece (e.g. at EOF)."""
        if not self._buf:
            return []
        rest = bytes(self._buf)
        self._buf.clear()
        return [Piece(rest, None, "incomplete frame")]

    def _fail(self, detail: str) -> list[Piece]:
        self.error = detail
        rest = bytes(self._buf)
        self._buf.clear()
        return [Piece(rest, None, detail)] if rest else []


def split_frames(data: bytes) -> list[Piece]:
    """All pieces of ``data`` (whole frames, then any unframeable or partial rest)."""
    splitter = FrameSplitter()
    return splitter.feed(data) + splitter.flush()


# --------------------------------------------------------------------------- summaries


def frame_summary(piece: Piece) -> dict[str, Any]:
    """JSON-able summary of one frame for ``ws.frame`` entries."""
    frame = piece.frame
    if frame is None:
        return {"error": piece.error, "len": len(piece.raw)}
    try:
        name = Opcode(frame.opcode).name.lower()
    except ValueError:
        name = f"reserved-0x{frame.opcode:X}"
    out: dict[str, Any] = {
        "opcode": frame.opcode,
        "type": name,
        "fin": frame.fin,
        "rsv": frame.rsv,
        "masked": frame.masked,
        "len": len(frame.payload),
    }
    if frame.opcode == Opcode.CLOSE:
        info = parse_close_payload(frame.payload)
        out["code"] = info.code
        out["reason"] = info.reason
        if info.problem is not None:
            out["problem"] = info.problem.detail
    elif frame.is_control:
        out["payload_hex"] = frame.payload[:_SHOWN_PAYLOAD].hex()
    return out


def violations_summary(violations: Sequence[Violation | ProtocolViolation]) -> dict[str, Any]:
    """``ws.violation`` payload: ``{"violations": [{rule, message, ...}]}``."""
    items: list[dict[str, Any]] = []
    for v in violations:
        if isinstance(v, Violation):
            items.append({"rule": v.rule, "message": v.detail, "level": v.level, "blocking": v.blocking,
                          "close_code": v.close_code})
        else:
            items.append({"rule": v.rule, "message": v.detail, "close_code": v.close_code, "fatal": v.fatal})
    return {"violations": items}


def _head_fields(start_line: str, headers: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {"start_line": start_line, "headers": [[n, v] for n, v in headers]}


def request_summary(req: HandshakeRequest | None) -> dict[str, Any]:
    """Decoded upgrade request for ``ws.handshake_request``."""
    if req is None:
        return {"error": "no complete request head"}
    out = _head_fields(req.http.start_line, req.http.headers)
    out.update(
        target=req.target,
        path=req.path,
        eid=req.endpoint_id,
        query_eid=req.query_eid,
        subprotocols=req.subprotocols,
        extensions=[[name, dict(params)] for name, params in req.extensions],
    )
    return out


def response_summary(resp: HandshakeResponse | None) -> dict[str, Any]:
    """Decoded handshake answer for ``ws.handshake_response``."""
    if resp is None:
        return {"error": "no complete response head"}
    out = _head_fields(resp.http.start_line, resp.http.headers)
    out.update(
        status=resp.status,
        subprotocol=resp.subprotocol,
        extensions=[[name, dict(params)] for name, params in resp.extensions],
        extension_eid=resp.extension_eid,
    )
    return out


def abort_connection(conn: Connection) -> None:
    """Drop the TCP connection at once with a reset (SO_LINGER 0), no Close frame."""
    transport = conn.writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# --------------------------------------------------------------------------- helpers for both roles


async def read_handshake(conn: Connection, handshake: Handshake,
                         timeout: float) -> tuple[HandshakeResult | None, bytes]:
    """Feed ``handshake`` from ``conn`` until its head is complete.

    Returns the result (None on EOF, a reset or ``timeout``) and every byte
    read, so the caller can record the exact head (``received`` minus the
    result's ``trailing`` bytes).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    received = bytearray()
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None, bytes(received)
        try:
            data = await asyncio.wait_for(conn.reader.read(READ_SIZE), remaining)
        except (TimeoutError, ConnectionError, OSError):
            return None, bytes(received)
        if not data:
            return None, bytes(received)
        received += data
        result = handshake.receive_data(data)
        if result is not None:
            return result, bytes(received)


def deliver(binding: Binding, peer: WSPeer, msg: Message, received_at: float) -> None:
    """Hand a binary message to the binding's sink as an InboundRecord (a broken sink is logged)."""
    record = InboundRecord(
        data=msg.data, mtp=MTP, conn_id=peer.conn_id, received_at=received_at,
        meta={"opcode": int(msg.opcode), "fragments": len(msg.fragments), "agent_eid": peer.remote_eid},
    )
    try:
        binding.deliver(record)
    except Exception:  # noqa: BLE001 -- the Controller's bug must not kill the connection
        _log.exception("record sink failed on %s", peer.conn_id)
        peer.record("ws.sink_error", direction="local", note="the record sink raised; see log")


def check_keepalive(ping_interval: float | None, pong_timeout: float | None) -> None:
    """Raise ValueError for a non-positive keep-alive interval or pong timeout."""
    if ping_interval is not None and ping_interval <= 0:
        raise ValueError("ping_interval must be positive")
    if pong_timeout is not None and pong_timeout <= 0:
        raise ValueError("pong_timeout must be positive")


# --------------------------------------------------------------------------- the peer


class WSPeer:
    """One open WebSocket connection (after the opening handshake), either role.

    ``remote_eid`` is the peer's Endpoint ID once known. :meth:`run` pumps
    until the connection ends; sending methods may be called concurrently
    (each write is one ``transport.write`` call, so frames never interleave).
    """

    def __init__(
        self,
        conn: Connection,
        role: Role | str,
        *,
        scenario: Callable[[], WSScenario],
        on_message: OnMessage | None = None,
        on_event: OnEvent | None = None,
        remote_eid: str | None = None,
        close_on_violation: bool = True,
        ping_interval: float | None = None,
        pong_timeout: float | None = None,
        close_timeout: float = 2.0,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        check_keepalive(ping_interval, pong_timeout)
        self.conn = conn
        self.role = Role(role)
        self.ws = WSConnection(self.role, binary_only=True, close_on_violation=close_on_violation,
                               random_bytes=random_bytes)
        self._scenario = scenario
        self.on_message = on_message
        #: Called with every event of the received bytes, after the peer handled it
        #: (the reference Agent's faults hook in here).
        self.on_event = on_event
        self.remote_eid = remote_eid
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout if pong_timeout is not None else ping_interval
        self.close_timeout = close_timeout
        #: Messages received, binary and text (text ones are R-WS.14 breaches).
        self.messages_in = 0
        #: Pongs that answered none of our Pings (RFC 6455 5.5.3 allows them).
        self.unsolicited_pongs = 0
        #: None until the transport ends, then whether both Close frames were exchanged.
        self.clean: bool | None = None
        self.closed = asyncio.Event()
        self._rx = FrameSplitter()
        self._pong_waiters: list[tuple[bytes, asyncio.Future[bool]]] = []
        self._ping_numbers = itertools.count(1)
        self._keepalive: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = False

    # --- properties ---------------------------------------------------------

    @property
    def conn_id(self) -> str:
        return self.conn.conn_id

    @property
    def scenario(self) -> WSScenario:
        return self._scenario()

    @property
    def is_open(self) -> bool:
        """True while Records can be sent (no Close sent, transport alive)."""
        return (not self.closed.is_set() and not self.conn.closing
                and self.ws.state in (ConnectionState.OPEN, ConnectionState.CLOSE_RECEIVED))

    def record(self, kind: str, *, direction: str, raw: bytes | None = None, decoded: Any = None,
               note: str | None = None) -> None:
        self.conn.record(kind, direction=direction, raw=raw, decoded=decoded, note=note)

    def scenario_action(self, action: str, note: str | None = None, **details: Any) -> None:
        """Record a deliberate test action as ``ws.scenario``."""
        self.record("ws.scenario", direction="local", decoded={"action": action, **details}, note=note)

    # --- pumping ------------------------------------------------------------

    def start(self, initial: bytes = b"") -> asyncio.Task[None]:
        """Run :meth:`run` in a background task (client side)."""
        self._task = asyncio.get_running_loop().create_task(self.run(initial))
        return self._task

    async def run(self, initial: bytes = b"") -> None:
        """Pump until the connection ends; ``initial`` are bytes that followed the handshake."""
        self._running = True
        if self.ping_interval is not None:
            self._keepalive = asyncio.get_running_loop().create_task(self._keepalive_loop())
        try:
            if initial:
                await self._on_bytes(initial)
            deadline: float | None = None
            while not self.conn.closing:
                if self.ws.state is ConnectionState.CLOSED:
                    if self.role is Role.SERVER:
                        break  # the server closes TCP first (RFC 6455 7.1.1)
                    if deadline is None:
                        deadline = time.monotonic() + self.close_timeout
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    data = await asyncio.wait_for(self.conn.reader.read(READ_SIZE), timeout)
                except TimeoutError:
                    break
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    break
                await self._on_bytes(data)
        finally:
            await self._finish()

    async def _on_bytes(self, data: bytes) -> None:
        for piece in self._rx.feed(data):
            self.record("ws.frame", direction="in", raw=piece.raw, decoded=frame_summary(piece))
        withhold = self.scenario.withhold_pongs
        self.ws.auto_pong = not withhold
        events = self.ws.receive_data(data)
        self._handle(events, withhold=withhold)
        out = self.ws.data_to_send()
        if out:
            with contextlib.suppress(ConnectionError):
                await self._write(out)

    def _handle(self, events: list[Event], *, withhold: bool = False) -> None:
        violations: list[ProtocolViolation] = []
        for event in events:
            if isinstance(event, Message):
                self._on_message(event)
            elif isinstance(event, Ping):
                if withhold:
                    self.scenario_action("withhold_pong", payload_hex=event.payload.hex())
            elif isinstance(event, Pong):
                if not event.solicited:
                    self.unsolicited_pongs += 1
                self._resolve_pongs()
            elif isinstance(event, ProtocolViolation):
                violations.append(event)
            elif isinstance(event, ConnectionClosed):
                self.clean = event.clean
            if self.on_event is not None:
                self.on_event(self, event)
        if violations:
            self.record("ws.violation", direction="in", decoded=violations_summary(violations))

    def _on_message(self, msg: Message) -> None:
        received_at = time.monotonic()
        self.messages_in += 1
        self.record("ws.message", direction="in",
                    decoded={"opcode": int(msg.opcode), "type": msg.opcode.name.lower(), "len": len(msg.data),
                             "fragments": len(msg.fragments)})
        if msg.opcode is Opcode.BINARY and self.on_message is not None:
            self.on_message(self, msg, received_at)

    def _resolve_pongs(self) -> None:
        outstanding = self.ws.outstanding_pings
        keep: list[tuple[bytes, asyncio.Future[bool]]] = []
        for payload, fut in self._pong_waiters:
            if payload in outstanding:
                keep.append((payload, fut))
            elif not fut.done():
                fut.set_result(True)
        self._pong_waiters = keep

    async def _finish(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keepalive
        for piece in self._rx.flush():
            self.record("ws.frame", direction="in", raw=piece.raw, decoded=frame_summary(piece))
        self._handle(self.ws.receive_eof())
        for _, fut in self._pong_waiters:
            if not fut.done():
                fut.set_result(False)
        self._pong_waiters.clear()
        await self.conn.close()
        if self.role is Role.CLIENT:  # the transport Server records its own connections' end
            self.record("conn.close", direction="out")
        received = self.ws.close_received
        self.record("ws.closed", direction="local", decoded={
            "clean": bool(self.clean),
            "close_sent": list(self.ws.close_sent) if self.ws.close_sent else None,
            "close_received": None if received is None else [received.code, received.reason],
        })
        self.closed.set()

    async def _write(self, data: bytes) -> None:
        """Write frames and record each one; ConnectionError if the transport is gone."""
        if self.conn.closing:
            raise ConnectionError(f"{self.conn_id}: connection closed")
        self.conn.writer.write(data)
        for piece in split_frames(data):
            self.record("ws.frame", direction="out", raw=piece.raw, decoded=frame_summary(piece))
        await self.conn.writer.drain()

    # --- sending ------------------------------------------------------------

    async def send_record(self, data: bytes, *, fragment_size: int | None = None,
                          text: bool | None = None) -> None:
        """Send one USP Record as a message (binary, unfragmented unless the scenario says so).

        Raises ConnectionError when the connection can no longer carry data.
        """
        scenario = self.scenario
        size = fragment_size if fragment_size is not None else scenario.fragment_size
        as_text = text if text is not None else scenario.send_text
        if not self.is_open:
            raise ConnectionError(f"{self.conn_id}: WebSocket connection is not open")
        opcode = Opcode.TEXT if as_text else Opcode.BINARY
        try:
            frames = self.ws.send_message(bytes(data), size, opcode=opcode)
        except WSUsageError as exc:
            raise ConnectionError(f"{self.conn_id}: {exc}") from None
        if size is not None and size < len(data):
            self.scenario_action("fragment", fragment_size=size)
        if as_text:
            self.scenario_action("text_frame", note="USP Record sent in a text frame (R-WS.14)")
        count = max(1, -(-len(data) // size)) if size else 1
        self.record("ws.message", direction="out",
                    decoded={"opcode": int(opcode), "type": opcode.name.lower(), "len": len(data),
                             "fragments": count})
        await self._write(frames)

    async def ping(self, payload: bytes | None = None, *, timeout: float | None = None) -> bool | None:
        """Send a Ping; with ``timeout``, wait for its Pong.

        Returns None without ``timeout``, else True when answered in time and
        False otherwise (a timeout is recorded as ``ws.pong_missed``).
        """
        if payload is None:
            payload = b"usp-conformance-%d" % next(self._ping_numbers)
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        try:
            frame = self.ws.ping(payload)
        except WSUsageError as exc:
            raise ConnectionError(f"{self.conn_id}: {exc}") from None
        self._pong_waiters.append((payload, fut))
        await self._write(frame)
        if timeout is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            self._pong_waiters = [(p, f) for p, f in self._pong_waiters if f is not fut]
            self.record("ws.pong_missed", direction="local",
                        decoded={"payload_hex": payload.hex(), "waited": timeout},
                        note=f"no Pong within {timeout:g}s (R-WS.17)")
            return False

    async def pong(self, payload: bytes = b"") -> None:
        """Send a Pong (unsolicited, or a manual answer while pongs are withheld)."""
        try:
            frame = self.ws.pong(payload)
        except WSUsageError as exc:
            raise ConnectionError(f"{self.conn_id}: {exc}") from None
        self.scenario_action("pong", payload_hex=payload.hex())
        await self._write(frame)

    async def _keepalive_loop(self) -> None:
        assert self.ping_interval is not None
        while self.is_open:
            await asyncio.sleep(self.ping_interval)
            if not self.is_open:
                return
            try:
                await self.ping(timeout=self.pong_timeout)
            except ConnectionError:
                return

    async def send_frame(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        """Send any frame, rules unchecked (see ``WSConnection.send_frame``)."""
        frame = self.ws.send_frame(opcode, payload, **options)
        self.scenario_action("raw_frame", opcode=opcode, len=len(payload),
                             options={k: (v.hex() if isinstance(v, bytes) else v) for k, v in options.items()})
        await self._write(frame)

    async def close(self, code: int | None = 1000, reason: str = "", *, wait: float | None = 5.0) -> bool:
        """Send a Close with ``code`` (any 16-bit value) and wait for the connection to end.

        Codes RFC 6455 forbids on the wire (1005, 1006, 999, ...) are sent
        raw on purpose. After ``wait`` seconds without the end, the TCP
        connection is dropped. Returns whether the close was clean.
        """
        if code != 1000:  # a deliberate status code is a test action; a normal close is not
            self.scenario_action("close", code=code, reason=reason)
        if self.ws.close_sent is None and self.ws.state is not ConnectionState.CLOSED and not self.conn.closing:
            if code is None or is_valid_close_code(code):
                frame = self.ws.close(code, reason)
            else:
                frame = self.ws.send_frame(Opcode.CLOSE, encode_close_payload(code, reason))
            with contextlib.suppress(ConnectionError):
                await self._write(frame)
        if wait is None:
            return bool(self.clean)
        try:
            await asyncio.wait_for(self.closed.wait(), wait)
        except TimeoutError:
            abort_connection(self.conn)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 2.0)
        return bool(self.clean)

    async def abort(self) -> None:
        """Drop the TCP connection abruptly (no Close frame) and wait for the pump to end."""
        self.scenario_action("abort", note="TCP connection reset without a Close frame")
        abort_connection(self.conn)
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 2.0)

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until the connection ended; returns whether that was clean."""
        await asyncio.wait_for(self.closed.wait(), timeout)
        return bool(self.clean)
