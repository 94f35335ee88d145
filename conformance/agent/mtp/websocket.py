"""The reference Agent's WebSocket MTP, both roles (TR-369 "WebSocket Binding").

Built on the suite's sans-I/O codec (:mod:`conformance.mtp.websocket`): the
opening handshakes, and :class:`~conformance.mtp.websocket.peer.WSPeer` to
pump an established connection (binary messages only, automatic Pongs,
Ping keep-alive, closing handshake, every frame in the timeline).

Client role (R-WS.5), one session per Controller with a ``ws://`` or
``wss://`` address (``Device.LocalAgent.Controller.{i}.MTP.{i}.WebSocket``):
the upgrade request carries the URL path (R-WS.2), ``?eid=`` with the
Agent's Endpoint ID, percent-encoded as opaque data (R-WS.10b, R-WS.10c),
subprotocol ``v1.usp`` (R-WS.9, R-WS.10) and, unless turned off, the
``bbf-usp-protocol`` offer; a 101 answer without ``v1.usp`` does not
establish a session (R-WS.12), one without the extension is fine
(R-WS.11b). Pings go out every KeepAliveInterval (R-WS.17, R-WS.18). A
closed or failed session is retried with the R-WS.19 back-off, whose count
restarts once a session is up (R-WS.20).

Server role (R-WS.6; ``Device.LocalAgent.MTP.{i}.WebSocket`` Port, Path,
EnableEncryption through the server ``ssl_context``, KeepAliveInterval):
requests for another path get 404; without ``v1.usp`` they are refused
(R-WS.12a); the Controller's Endpoint ID comes from ``?eid=`` (R-WS.10b)
and a second session with an Endpoint ID that already has one, in either
role, is refused with 409 (R-WS.4); over TLS a Controller whose certificate
does not name that Endpoint ID is refused with 403 (R-SEC.0a, R-SEC.3). The answer always carries
``Sec-WebSocket-Extensions: bbf-usp-protocol; eid="<agent id>"`` with the
value quoted (R-WS.11a, as deployed agents do).

On every new session the Agent sends the WebSocketConnect Record first
(R-MTP.6, TP-469 7.10). Records go in binary messages, unfragmented
(R-WS.14, R-WS.14a); fragmented ones are accepted (R-WS.14b); a received
message that is not a USP Record closes the connection with 1003 (R-WS.16).
Over TLS, a Record whose ``from_id`` the peer's certificate does not name is
dropped (R-SEC.0a), and a Controller's server whose certificate names other
Endpoint IDs is left at once (:mod:`conformance.agent.mtp.tls`).

The ``ws.*`` faults registered here break one of these rules each (TP-469
7.1 .. 7.12); ``self.faults`` is asked where the rule is applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from conformance.agent.faults import register
from conformance.agent.mtp import tls as agent_tls
from conformance.agent.mtp.backoff import Backoff, RetryPolicy, WebSocketRetry
from conformance.agent.mtp.base import (
    AgentMTP,
    ControllerRoute,
    MTPNotConnected,
    NoRoute,
    Route,
)
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import Connection, Server, open_connection
from conformance.mtp.websocket.connection import Role
from conformance.mtp.websocket.events import CloseReceived, Event, Message, Pong
from conformance.mtp.websocket.extensions import (
    BBF_USP_EXTENSION,
    Extension,
    format_extensions,
)
from conformance.mtp.websocket.handshake import (
    USP_SUBPROTOCOL,
    ClientHandshake,
    ClientHandshakeResult,
    ServerHandshake,
    ServerHandshakeResult,
    build_rejection,
    build_response,
    build_target,
    parse_request,
    parse_response,
)
from conformance.mtp.websocket.peer import (
    WSPeer,
    WSScenario,
    abort_connection,
    read_handshake,
    request_summary,
    response_summary,
    violations_summary,
)

__all__ = ["WSController", "WSServerConfig", "WSSession", "WebSocketMTP"]

_log = logging.getLogger(__name__)
_NORMAL = WSScenario()  # the Agent never deviates on purpose...
_NO_PONGS = WSScenario(withhold_pongs=True)  # ...unless a fault says so


def _scenario() -> WSScenario:
    return _NORMAL


def _no_pongs() -> WSScenario:
    return _NO_PONGS


# Named faults (selftest: each makes a TP-469 section 7 case fail on one metric).
register("ws.no_eid_query", "R-WS.10b / TP-469 7.1, 7.9",
         "leaves the eid= query pair out of the upgrade request target")
register("ws.duplicate_sessions", "R-WS.4 / TP-469 7.2",
         "its WebSocket server accepts a second session from a Controller that has one open")
register("ws.no_close_reply", "R-WS.8 / TP-469 7.4",
         "answers the Controller's Close frame by dropping TCP, without a Close of its own")
register("ws.bad_record_wrong_close_code", "R-WS.16 / TP-469 7.6",
         "closes with status 1002 instead of 1003 when a message is not a USP Record")
register("ws.no_pong", "R-WS.17 / TP-469 7.7",
         "never answers a Ping with a Pong")
register("ws.close_on_unsolicited_pong", "R-WS.13 (RFC 6455 5.5.3) / TP-469 7.7",
         "closes the session (1002) when a Pong arrives that answers none of its Pings")
register("ws.retry_immediately", "R-WS.19 / TP-469 7.8",
         "reconnects at once after losing a session (no SessionRetryMinimumWaitInterval wait "
         "before retry #1)")
register("ws.retry_fixed_interval", "R-WS.19 / TP-469 7.8",
         "waits exactly SessionRetryMinimumWaitInterval before every retry, ignoring "
         "SessionRetryIntervalMultiplier and the retry count")
register("ws.connect_record_no_to_id", "R-MTP.6 / TP-469 7.10",
         "sends its WebSocketConnect Record with an empty to_id instead of the Controller's "
         "Endpoint ID")
register("ws.require_extension", "R-WS.11b / TP-469 7.11",
         "treats a 101 answer without the bbf-usp-protocol extension as a failed handshake")
register("ws.no_defragmentation", "R-WS.14b / TP-469 7.12",
         "takes the first frame of a fragmented message as the whole USP Record")


@dataclass(frozen=True)
class _FixedRetry:
    """``ws.retry_fixed_interval``: every retry waits the minimum wait interval."""

    wait: float

    def bounds(self, retry: int) -> tuple[float, float]:
        return self.wait, self.wait

    def delay(self, retry: int, rng: random.Random) -> float:
        return self.wait


@dataclass(frozen=True)
class _ImmediateFirstRetry:
    """``ws.retry_immediately``: retry #1 after a lost session without any wait."""

    policy: WebSocketRetry

    def bounds(self, retry: int) -> tuple[float, float]:
        return (0.0, 0.0) if retry == 1 else self.policy.bounds(retry)

    def delay(self, retry: int, rng: random.Random) -> float:
        return 0.0 if retry == 1 else self.policy.delay(retry, rng)


@dataclass(frozen=True)
class WSController(ControllerRoute):
    """A Controller the Agent connects to; ``address`` is its ``ws://`` / ``wss://`` URL.

    ``keep_alive_interval`` (seconds, None: no Pings) and ``retry`` are the
    KeepAliveInterval and SessionRetry* parameters of its MTP instance.
    """

    keep_alive_interval: float | None = None
    retry: WebSocketRetry = field(default_factory=WebSocketRetry)


@dataclass(frozen=True)
class WSServerConfig:
    """``Device.LocalAgent.MTP.{i}.WebSocket`` (port 0: the OS picks one)."""

    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/usp"
    keep_alive_interval: float | None = 60.0


@dataclass
class WSSession:
    """One open WebSocket session with a Controller."""

    eid: str
    role: str        # "client" (we connected) or "server" (the Controller did)
    peer: WSPeer

    @property
    def conn_id(self) -> str:
        return self.peer.conn_id


def _host_header(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{shown}:{port}"


class WebSocketMTP(AgentMTP):
    """The Agent's WebSocket client sessions and (optionally) its WebSocket server."""

    name = "websocket"
    kind_prefix = "ws"

    def __init__(self, endpoint_id: str, *, controllers: Sequence[ControllerRoute] = (),
                 server: WSServerConfig | None = None,
                 client_ssl_context: ssl.SSLContext | None = None,
                 server_ssl_context: ssl.SSLContext | None = None,
                 timeline: Timeline | None = None, rng: random.Random | None = None,
                 handshake_timeout: float = 10.0, close_timeout: float = 2.0,
                 offer_extension: bool = True) -> None:
        routes = [c if isinstance(c, WSController) else WSController(c.endpoint_id, c.address)
                  for c in controllers]
        super().__init__(endpoint_id, controllers=routes, timeline=timeline, rng=rng)
        for route in routes:
            if route.address and urlsplit(route.address).scheme not in ("ws", "wss"):
                raise ValueError(f"{route.endpoint_id}: not a ws:// or wss:// URL: {route.address!r}")
        self.server_config = server
        self.client_ssl_context = client_ssl_context
        self.server_ssl_context = server_ssl_context
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.offer_extension = offer_extension
        #: Open sessions by the Controller's Endpoint ID (at most one each, R-WS.4).
        self.sessions: dict[str, WSSession] = {}
        self._reserved: set[str] = set()
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ properties

    @property
    def connected(self) -> bool:
        return any(s.peer.is_open for s in self.sessions.values())

    @property
    def port(self) -> int:
        """The server's listening port (0 before :meth:`start`)."""
        return self._server.port if self._server is not None else 0

    @property
    def url(self) -> str | None:
        """Where Controllers reach the Agent's server (None without a server)."""
        if self._server is None or self.server_config is None:
            return None
        scheme = "wss" if self.server_ssl_context is not None else "ws"
        host = self._server.host
        return f"{scheme}://{_host_header(host, self._server.port)}{self.server_config.path}"

    def session(self, eid: str) -> WSSession | None:
        """The open session with Controller ``eid``, if any."""
        found = self.sessions.get(eid)
        return found if found is not None and found.peer.is_open else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._server is not None or self._tasks:
            return
        if self.client_ssl_context is not None:  # how the peer's certificate is judged
            agent_tls.apply_faults(self.client_ssl_context, self.faults, server_side=False)
        if self.server_ssl_context is not None:
            agent_tls.apply_faults(self.server_ssl_context, self.faults, server_side=True)
        if self.server_config is not None:
            cfg = self.server_config
            self._server = Server(self.name, self._handle, ssl_context=self.server_ssl_context,
                                  timeline=self.timeline)
            await self._server.start_tcp(cfg.host, cfg.port)
        loop = asyncio.get_running_loop()
        for route in self.controllers.values():
            assert isinstance(route, WSController)
            if route.address:
                task = loop.create_task(self._client_loop(route))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def stop(self, disconnect_record: bytes | Sequence[bytes] | None = None) -> None:
        if not self._begin_stop():
            return
        if self.connected:
            await self._send_disconnects(disconnect_record)
        peers = [s.peer for s in self.sessions.values()]
        await asyncio.gather(*(p.close(1000, wait=self.close_timeout) for p in peers),
                             return_exceptions=True)
        for task in list(self._tasks):
            await self._cancel(task)
        if self._server is not None:
            await self._server.close()

    # ------------------------------------------------------------------ sessions

    async def _run_session(self, peer: WSPeer, eid: str, role: str, initial: bytes) -> None:
        session = WSSession(eid, role, peer)
        self.sessions[eid] = session
        self._reserved.discard(eid)
        peer.record("ws.open", direction="local",
                    decoded={"controller_eid": eid, "role": role, "tls": peer.conn.tls,
                             "peer_endpoint_ids": peer.conn.peer_endpoint_ids})
        try:
            try:  # R-MTP.6: the WebSocketConnect Record on every new session
                to_id = "" if self.faults.on("ws.connect_record_no_to_id") else eid
                await peer.send_record(self._connect_record(to_id))
                peer.record("ws.connect_record", direction="out", decoded={"to_id": to_id})
                self._notify_connected()
            except ConnectionError:
                pass
            await peer.run(initial)
        finally:
            if self.sessions.get(eid) is session:
                del self.sessions[eid]
            self._notify_disconnected()

    def _on_message(self, peer: WSPeer, msg: Message, received_at: float) -> None:
        data = msg.data  # R-WS.14b: the codec put the fragments together
        if len(msg.fragments) > 1 and self.faults.on("ws.no_defragmentation"):
            data = msg.fragments[0]
        if not self.decodable(data):  # R-WS.16
            peer.record("ws.dropped", direction="local",
                        decoded={"reason": "not a USP Record", "len": len(data)})
            code = 1002 if self.faults.on("ws.bad_record_wrong_close_code") else 1003
            self._spawn(peer.close(code, "cannot extract the USP Record", wait=self.close_timeout))
            return
        problem = agent_tls.record_problem(peer.conn, data, self.faults)
        if problem is not None:  # R-SEC.0a: not from the Endpoint the certificate names
            peer.record("ws.dropped", direction="local", decoded={"reason": problem})
            return
        self._deliver(data, Route(self.name, peer.conn_id, None, peer.remote_eid))

    def _peer(self, conn: Connection, role: Role, eid: str,
              keep_alive: float | None) -> WSPeer:
        """The pump of one session, with the faults that act on received frames."""
        no_pongs = self.faults.on("ws.no_pong")
        peer = WSPeer(conn, role, scenario=_no_pongs if no_pongs else _scenario,
                      on_message=self._on_message, on_event=self._on_event, remote_eid=eid,
                      ping_interval=keep_alive, close_timeout=self.close_timeout)
        if self.faults.on("ws.no_close_reply"):
            peer.ws.auto_close_reply = False
        return peer

    def _on_event(self, peer: WSPeer, event: Event) -> None:
        """Faults only: the normal handling of every event is the peer's own."""
        if isinstance(event, CloseReceived) and self.faults.on("ws.no_close_reply"):
            abort_connection(peer.conn)
        elif (isinstance(event, Pong) and not event.solicited
              and self.faults.on("ws.close_on_unsolicited_pong") and peer.is_open):
            self._spawn(peer.close(1002, "unexpected Pong", wait=self.close_timeout))

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _busy(self, eid: str) -> bool:
        return eid in self._reserved or self.session(eid) is not None

    # ------------------------------------------------------------------ client role

    def _retry_policy(self, retry: WebSocketRetry) -> RetryPolicy:
        """R-WS.19's back-off, or the fault that breaks it."""
        if self.faults.on("ws.retry_fixed_interval"):
            return _FixedRetry(retry.minimum_wait_interval)
        if self.faults.on("ws.retry_immediately"):
            return _ImmediateFirstRetry(retry)
        return retry

    async def _client_loop(self, route: WSController) -> None:
        backoff = Backoff(self._retry_policy(route.retry), self.rng)
        first = True
        while not self.stopping:
            if not first and not await self._retry_wait(backoff, controller=route.endpoint_id):
                return
            first = False
            existing = self.session(route.endpoint_id)
            if existing is not None:  # R-WS.4: the Controller connected to us already
                await existing.peer.closed.wait()
                continue
            try:
                peer, initial = await self._connect(route)
            except ConnectionError as exc:
                self._record("ws.state", direction="local",
                             decoded={"state": "connect_failed", "controller": route.endpoint_id,
                                      "error": str(exc)[:300]})
                continue
            backoff.reset()  # R-WS.20
            try:
                await self._run_session(peer, route.endpoint_id, "client", initial)
            except Exception:  # noqa: BLE001 - keep retrying whatever went wrong
                _log.exception("websocket session with %s failed", route.endpoint_id)

    async def _connect(self, route: WSController) -> tuple[WSPeer, bytes]:
        url = urlsplit(route.address)
        tls = url.scheme == "wss"
        if tls and self.client_ssl_context is None:
            raise ConnectionError(f"{route.address}: wss:// needs a client ssl_context")
        host = url.hostname or "localhost"
        try:
            port = url.port or (443 if tls else 80)
        except ValueError as exc:
            raise ConnectionError(f"{route.address}: {exc}") from None
        if self._busy(route.endpoint_id):
            raise ConnectionError(f"a session with {route.endpoint_id} exists (R-WS.4)")
        self._reserved.add(route.endpoint_id)
        try:
            return await self._open(route, host, port, url.path or "/", url.query or None,
                                    self.client_ssl_context if tls else None)
        except BaseException:
            self._reserved.discard(route.endpoint_id)
            raise

    async def _open(self, route: WSController, host: str, port: int, path: str,
                    query: str | None, ctx: ssl.SSLContext | None) -> tuple[WSPeer, bytes]:
        conn = await open_connection(self.name, host, port, ssl_context=ctx,
                                     timeline=self.timeline, timeout=self.handshake_timeout)
        problem = agent_tls.identity_problem(conn, route.endpoint_id, self.faults, required=False)
        if problem is not None:  # the server's certificate names another Controller
            await conn.close()
            conn.record("conn.close", direction="out", note=problem)
            raise ConnectionError(f"{route.address}: {problem}")
        extensions: list[Extension] | None = None
        if self.offer_extension:
            extensions = [(BBF_USP_EXTENSION, {"eid": self.endpoint_id})]
        target = build_target(path, self.endpoint_id, query)
        if self.faults.on("ws.no_eid_query"):
            target = path + (f"?{query}" if query else "")
        handshake = ClientHandshake(
            _host_header(host, port), target,
            key_random=os.urandom(16), subprotocols=(USP_SUBPROTOCOL,), extensions=extensions)
        try:
            request = handshake.data_to_send()
            conn.record("ws.handshake_request", direction="out", raw=request,
                        decoded=request_summary(parse_request(request)))
            await conn.write(request)
            result, received = await read_handshake(conn, handshake, self.handshake_timeout)
            if not isinstance(result, ClientHandshakeResult):
                raise ConnectionError(f"{route.address}: no complete handshake answer")
            head = received[: len(received) - len(result.trailing)]
            conn.record("ws.handshake_response", direction="in", raw=head,
                        decoded=response_summary(result.response))
            if result.violations:
                conn.record("ws.violation", direction="in",
                            decoded=violations_summary(result.violations))
            if not result.established:  # R-WS.12 and RFC 6455 4.1
                status = result.response.status if result.response else None
                raise ConnectionError(f"{route.address}: handshake refused (status {status})")
            answered = result.response.extensions if result.response is not None else []
            if self.faults.on("ws.require_extension") and not any(
                    name == BBF_USP_EXTENSION for name, _ in answered):
                raise ConnectionError(f"{route.address}: no bbf-usp-protocol in the answer")
        except BaseException:
            await conn.close()
            conn.record("conn.close", direction="out")
            raise
        if result.server_eid and result.server_eid != route.endpoint_id:
            conn.record("ws.note", direction="local",
                        decoded={"configured": route.endpoint_id, "announced": result.server_eid},
                        note="the Controller announced another Endpoint ID")
        peer = self._peer(conn, Role.CLIENT, route.endpoint_id, route.keep_alive_interval)
        return peer, result.trailing

    # ------------------------------------------------------------------ server role

    async def _handle(self, conn: Connection) -> None:
        handshake = ServerHandshake(eid=None, require_eid=True, answer_extension=False)
        result, received = await read_handshake(conn, handshake, self.handshake_timeout)
        if not isinstance(result, ServerHandshakeResult):
            conn.record("ws.handshake_incomplete", direction="in", raw=received or None,
                        decoded={"bytes": len(received)})
            return
        head = received[: len(received) - len(result.trailing)]
        conn.record("ws.handshake_request", direction="in", raw=head,
                    decoded=request_summary(result.request))
        if result.violations:
            conn.record("ws.violation", direction="in", decoded=violations_summary(result.violations))
        response, eid = self._answer(conn, result)
        try:
            conn.record("ws.handshake_response", direction="out", raw=response,
                        decoded=response_summary(parse_response(response)))
            await conn.write(response)
        except BaseException:
            if eid is not None:
                self._reserved.discard(eid)
            raise
        if eid is None:
            return
        assert self.server_config is not None
        peer = self._peer(conn, Role.SERVER, eid, self.server_config.keep_alive_interval)
        await self._run_session(peer, eid, "server", result.trailing)

    def _answer(self, conn: Connection, result: ServerHandshakeResult) -> tuple[bytes, str | None]:
        """The bytes answering an upgrade request, and the Controller's eid when accepted."""
        request = result.request
        if not result.accepted or request is None or request.key is None:
            return result.response, None  # 400 (no v1.usp: R-WS.12a) or 426/431
        assert self.server_config is not None
        if request.path != self.server_config.path:
            return build_rejection(404, "Not Found"), None
        eid = request.endpoint_id
        if not eid:  # R-WS.10b: nothing identifies the Controller
            return build_rejection(400, "Bad Request"), None
        problem = agent_tls.identity_problem(conn, eid, self.faults, required=True)
        if problem is not None:  # R-SEC.0a, R-SEC.3: the certificate is another Controller's
            conn.record("ws.identity_refused", direction="in", decoded={"eid": eid},
                        note=f"refused: {problem}")
            return build_rejection(403, "Forbidden"), None
        busy = self._busy(eid) and not self.faults.on("ws.duplicate_sessions")
        if self.stopping or busy:  # R-WS.4
            conn.record("ws.duplicate_session", direction="in", decoded={"eid": eid},
                        note="refused: a session with this Endpoint ID exists (R-WS.4)")
            return build_rejection(409, "Conflict"), None
        self._reserved.add(eid)
        ext = format_extensions([(BBF_USP_EXTENSION, {"eid": self.endpoint_id})],
                                always_quote=True)
        return build_response(request.key, subprotocol=USP_SUBPROTOCOL, extensions=ext), eid

    # ------------------------------------------------------------------ sending

    async def send(self, data: bytes, *, to_id: str, reply_to: str | None = None) -> None:
        session = self.session(to_id)
        if session is None:
            if to_id in self.controllers:
                raise MTPNotConnected(f"websocket: no open session with {to_id}")
            raise NoRoute(f"websocket: no session and no route for {to_id!r}")
        await session.peer.send_record(bytes(data))
