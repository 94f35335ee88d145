"""The suite's WebSocket server: agents connect to the reference Controller (R-WS.5).

:class:`WSServer` listens through :class:`~conformance.mtp.transport.Server`
(plain or TLS, R-WS.22), runs the sans-I/O :class:`~.handshake.ServerHandshake`
on each connection, records both heads and any rule the agent broke, then
hands the connection to a :class:`~.peer.WSPeer`. It knows which agent is on
which connection: from ``?eid=`` (R-WS.10b), else the deprecated extension
eid (R-WS.10a), else the ``from_id`` of the first Record received (normally
the WebSocketConnect Record, TP-469 7.10).

:class:`WSServerBinding` is the Controller endpoint on this server: ``send``
puts a Record in a binary message on the agent's connection (R-WS.14).

Scenario hooks (:class:`~.peer.WSScenario`) cover TP-469 section 7:
rejecting or refusing connections (every attempt is counted and
timestamped in :attr:`WSServer.connection_attempts` for the R-WS.19 back-off
checks of 7.8), altering the subprotocol or extension in the answer (7.5,
7.11), withholding pongs, fragmenting (7.12) and text frames (7.6), and the
one-off actions a case script sets (a Ping or unsolicited Pong, 7.7; a Close
with a code, 7.4; a payload that is no USP Record, 7.6) on the agent's open
connection; closing with a code (7.4) and dropping TCP (7.8) are also methods.
"""

from __future__ import annotations

import asyncio
import http
import os
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Self

from conformance.mtp.binding import Binding, BindingClosed
from conformance.mtp.scenario import ServerHost
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import Connection, Server
from conformance.mtp.waiting import StateChanges
from conformance.usp.records import RecordDecodeError, parse_record

from .connection import Role
from .events import Message
from .extensions import BBF_USP_EXTENSION, Extension
from .handshake import (
    USP_SUBPROTOCOL,
    ServerHandshake,
    ServerHandshakeResult,
    build_rejection,
    build_response,
    parse_response,
)
from .peer import (
    MTP,
    WSPeer,
    WSScenario,
    apply_scenario,
    check_keepalive,
    deliver,
    perform_action,
    read_handshake,
    request_summary,
    response_summary,
    spawn_action,
    violations_summary,
)

__all__ = ["ConnectionAttempt", "WSScenario", "WSServer", "WSServerBinding"]


@dataclass
class ConnectionAttempt:
    """One TCP connection an agent opened (after TLS, if any).

    ``t`` is the timeline clock at arrival (``time.monotonic()`` without a
    timeline); ``outcome`` is ``pending``, ``refused`` (scenario),
    ``incomplete`` (no complete upgrade request), ``rejected`` (an HTTP
    error was answered) or ``accepted``.
    """

    number: int
    t: float
    conn_id: str
    peer: str
    outcome: str = "pending"
    status: int | None = None
    eid: str | None = None


class WSServer(ServerHost):
    """WebSocket server for agents; one Controller endpoint (``endpoint_id``)."""

    mtp = MTP

    def __init__(
        self,
        endpoint_id: str,
        *,
        timeline: Timeline | None = None,
        ssl_context: ssl.SSLContext | None = None,
        path: str | None = "/usp",
        require_eid: bool = True,
        answer_extension: bool | None = None,
        close_on_violation: bool = True,
        ping_interval: float | None = None,
        pong_timeout: float | None = None,
        handshake_timeout: float = 10.0,
        close_timeout: float = 2.0,
        scenario: WSScenario | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``path`` None serves every path (else others get 404, R-WS.2);
        ``require_eid`` reports a missing ``?eid=`` (R-WS.10b);
        ``answer_extension`` None echoes ``bbf-usp-protocol`` only when offered
        (R-WS.11a); ``ping_interval`` / ``pong_timeout`` drive our keep-alive."""
        check_keepalive(ping_interval, pong_timeout)
        self.endpoint_id = endpoint_id
        self.timeline = timeline
        self.ssl_context = ssl_context
        self.path = path
        self.require_eid = require_eid
        self.answer_extension = answer_extension
        self.close_on_violation = close_on_violation
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.scenario = scenario or WSScenario()
        self.random_bytes = random_bytes
        #: Every connection attempt, oldest first (R-WS.19 back-off checks).
        self.connection_attempts: list[ConnectionAttempt] = []
        #: Open WebSocket connections by connection id.
        self.peers: dict[str, WSPeer] = {}
        #: The current connection of each identified agent, by Endpoint ID.
        self.agents: dict[str, WSPeer] = {}
        self.binding = WSServerBinding(self)
        self._server = Server(MTP, self._handle, ssl_context=ssl_context, timeline=timeline,
                              accept_filter=self._accept)
        self._attempts_by_conn: dict[str, ConnectionAttempt] = {}
        self._changes = StateChanges()
        self._action_tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ----------------------------------------------------------

    @property
    def url(self) -> str:
        """Where agents connect, e.g. ``ws://127.0.0.1:5000/usp``."""
        scheme = "wss" if self.ssl_context is not None else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.path or '/'}"

    async def close(self, code: int | None = 1001) -> None:
        """Close every connection (with a Close ``code`` first unless None) and stop listening."""
        for task in list(self._action_tasks):
            task.cancel()
        if code is not None:
            open_peers = [p for p in self.peers.values() if p.is_open]
            await asyncio.gather(*(p.close(code, wait=1.0) for p in open_peers), return_exceptions=True)
        await self._server.close()
        self._changes.close(ConnectionError("WebSocket server closed"))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def set_scenario(self, scenario: WSScenario | None = None, **changes: Any) -> WSScenario:
        """Replace the scenario (or change some fields of the current one); returns it.

        One-off actions (``send_ping``, ``send_close``...) are started on the
        newest open agent connection and not stored; they need a running loop.
        """
        self.scenario, actions = apply_scenario(self.scenario, scenario, changes)
        for name, value in actions.items():
            self._spawn(perform_action(self._live_agent(None), name, value,
                                       close_wait=self.close_timeout + 3.0))
        return self.scenario

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        spawn_action(self._action_tasks, coro)

    # --- lookups and waits --------------------------------------------------

    def peer_for(self, eid: str) -> WSPeer | None:
        """The open connection of agent ``eid``, if any."""
        peer = self.agents.get(eid)
        return peer if peer is not None and peer.is_open else None

    def _live_agent(self, eid: str | None) -> WSPeer | None:
        if eid is not None:
            return self.peer_for(eid)
        live = [p for p in self.agents.values() if p.is_open]
        return live[-1] if live else None

    async def wait_for_agent(self, eid: str | None = None, timeout: float = 10.0) -> WSPeer:
        """The open connection of agent ``eid`` (any agent when None), waiting
        up to ``timeout`` seconds for it; raises TimeoutError (ConnectionError
        if the server is closed meanwhile)."""
        who = f"agent {eid}" if eid else "any agent"
        return await self._changes.wait_until(
            lambda: self._live_agent(eid), timeout=timeout,
            what=f"no WebSocket connection from {who}")

    async def wait_for_attempts(self, count: int, timeout: float = 10.0) -> list[ConnectionAttempt]:
        """Wait until ``count`` connection attempts were seen in total; returns them all."""
        await self._changes.wait_until(
            lambda: True if len(self.connection_attempts) >= count else None, timeout=timeout,
            what=f"fewer than {count} connection attempts")
        return list(self.connection_attempts)

    # --- actions on agents' connections --------------------------------------

    def _require(self, eid: str) -> WSPeer:
        peer = self.peer_for(eid)
        if peer is None:
            raise BindingClosed(f"no open WebSocket connection from agent {eid}")
        return peer

    async def close_agent(self, eid: str, code: int | None = 1000, reason: str = "",
                          *, wait: float = 5.0) -> bool:
        """Send a Close with ``code`` to agent ``eid`` and wait for the end (TP-469 7.4)."""
        return await self._require(eid).close(code, reason, wait=wait)

    async def abort_agent(self, eid: str) -> None:
        """Drop agent ``eid``'s TCP connection without a Close (TP-469 7.8)."""
        await self._require(eid).abort()

    # --- per connection -------------------------------------------------------

    def _new_attempt(self, conn_id: str, peer: str) -> ConnectionAttempt:
        number = len(self.connection_attempts) + 1
        t = time.monotonic()
        if self.timeline is not None:
            entry = self.timeline.record("ws.attempt", direction="in", mtp=MTP, conn_id=conn_id,
                                         decoded={"number": number, "peer": peer})
            t = entry.t
        attempt = ConnectionAttempt(number, t, conn_id, peer)
        self.connection_attempts.append(attempt)
        self._changes.changed()
        return attempt

    def _accept(self, conn_id: str, peer: str) -> bool:
        """Count every attempt before TLS (R-WS.19 back-off); refuse it if the scenario says so."""
        attempt = self._new_attempt(conn_id, peer)
        if self.scenario.refuse_connections:
            attempt.outcome = "refused"
            if self.timeline is not None:
                self.timeline.record("ws.scenario", direction="local", mtp=MTP, conn_id=conn_id,
                                     decoded={"action": "refuse_connection",
                                              "attempt": attempt.number})
            return False
        self._attempts_by_conn[conn_id] = attempt
        return True

    async def _handle(self, conn: Connection) -> None:
        attempt = self._attempts_by_conn.pop(conn.conn_id)
        handshake = ServerHandshake(eid=self.endpoint_id, require_eid=self.require_eid,
                                    answer_extension=self.answer_extension)
        result, received = await read_handshake(conn, handshake, self.handshake_timeout)
        if not isinstance(result, ServerHandshakeResult):
            attempt.outcome = "incomplete"
            conn.record("ws.handshake_incomplete", direction="in", raw=received or None,
                        decoded={"bytes": len(received)}, note="connection ended before a complete upgrade request")
            return
        head = received[: len(received) - len(result.trailing)]
        conn.record("ws.handshake_request", direction="in", raw=head, decoded=request_summary(result.request))
        if result.violations:
            conn.record("ws.violation", direction="in", decoded=violations_summary(result.violations))
        response = self._answer(conn, result, self.scenario)
        parsed = parse_response(response)
        await conn.write(response)
        conn.record("ws.handshake_response", direction="out", raw=response, decoded=response_summary(parsed))
        attempt.status = parsed.status
        if parsed.status != 101:
            attempt.outcome = "rejected"
            return
        attempt.outcome = "accepted"
        assert result.request is not None
        request = result.request
        eid = request.endpoint_id
        source = "query" if request.query_eid else "extension"
        attempt.eid = eid
        peer = WSPeer(
            conn, Role.SERVER, scenario=lambda: self.scenario, on_message=self._on_message,
            close_on_violation=self.close_on_violation, ping_interval=self.ping_interval,
            pong_timeout=self.pong_timeout, close_timeout=self.close_timeout, random_bytes=self.random_bytes,
        )
        self.peers[conn.conn_id] = peer
        conn.record("ws.open", direction="local", decoded={
            "agent_eid": eid, "path": request.path, "subprotocol": parsed.subprotocol, "tls": conn.tls,
            "peer_endpoint_ids": conn.peer_endpoint_ids,
        })
        if eid:
            self._register(peer, eid, source)
        try:
            await peer.run(result.trailing)
        finally:
            self.peers.pop(conn.conn_id, None)
            if peer.remote_eid is not None and self.agents.get(peer.remote_eid) is peer:
                del self.agents[peer.remote_eid]

    def _answer(self, conn: Connection, result: ServerHandshakeResult, scenario: WSScenario) -> bytes:
        """The bytes answering the upgrade request, shaped by the scenario."""

        def action(name: str, **details: Any) -> None:
            conn.record("ws.scenario", direction="local", decoded={"action": name, **details})

        if scenario.reject_status is not None:
            status = scenario.reject_status
            try:
                phrase = scenario.reject_reason or http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "Rejected"
            action("reject_handshake", status=status)
            return build_rejection(status, phrase)
        request = result.request
        if not result.accepted or request is None or request.key is None:
            return result.response
        if self.path is not None and request.path != self.path:
            return build_rejection(404, "Not Found")
        altered = (scenario.omit_subprotocol or scenario.subprotocol is not None
                   or scenario.omit_extension or scenario.extension is not None)
        if not altered:
            return result.response
        subprotocol: str | None = USP_SUBPROTOCOL
        if scenario.omit_subprotocol:
            subprotocol = None
            action("omit_subprotocol")
        elif scenario.subprotocol is not None:
            subprotocol = scenario.subprotocol
            action("alter_subprotocol", subprotocol=subprotocol)
        extensions: str | list[Extension] | None = None
        if scenario.omit_extension:
            action("omit_extension")
        elif scenario.extension is not None:
            extensions = scenario.extension
            action("alter_extension", extension=extensions)
        else:
            offered = any(name == BBF_USP_EXTENSION for name, _ in request.extensions)
            if (offered if self.answer_extension is None else self.answer_extension):
                extensions = [(BBF_USP_EXTENSION, {"eid": self.endpoint_id})]
        return build_response(request.key, subprotocol=subprotocol, extensions=extensions)

    def _register(self, peer: WSPeer, eid: str, source: str) -> None:
        previous = self.agents.get(eid)
        if previous is not None and previous is not peer and previous.is_open:
            peer.record("ws.duplicate_session", direction="in",
                        decoded={"eid": eid, "previous_conn_id": previous.conn_id},
                        note="a second session from the same agent (R-WS.4)")
        peer.remote_eid = eid
        self.agents[eid] = peer
        peer.record("ws.agent", direction="local", decoded={"eid": eid, "source": source})
        self._changes.changed()

    def _on_message(self, peer: WSPeer, msg: Message, received_at: float) -> None:
        if peer.remote_eid is None:
            try:
                from_id = parse_record(msg.data).from_id
            except RecordDecodeError:
                from_id = ""
            if from_id:
                self._register(peer, from_id, "record")
        deliver(self.binding, peer, msg, received_at)


class WSServerBinding(Binding):
    """The Controller endpoint on a :class:`WSServer` (mtp ``websocket``)."""

    mtp = MTP

    def __init__(self, server: WSServer) -> None:
        super().__init__()
        self.server = server

    async def send(self, data: bytes, *, to_id: str) -> None:
        """Send Record bytes in a binary message to agent ``to_id`` (R-WS.14).

        Raises :class:`BindingClosed` when that agent has no open connection.
        """
        peer = self.server.peer_for(to_id)
        if peer is None:
            raise BindingClosed(f"no open WebSocket connection from agent {to_id}")
        try:
            await peer.send_record(data)
        except ConnectionError as exc:
            raise BindingClosed(str(exc)) from None

    async def close(self) -> None:
        """Detach the Controller (the server keeps running)."""
        self.set_sink(None)

    @property
    def address(self) -> str:
        return self.server.url
