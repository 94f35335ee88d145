"""The suite's WebSocket client: the reference Controller connects to an agent (R-WS.6).

:class:`WSClient` opens TCP (optionally TLS, R-WS.22) through
:func:`~conformance.mtp.transport.open_connection`, sends the upgrade request
built by the sans-I/O :class:`~.handshake.ClientHandshake` (subprotocol
``v1.usp``, ``?eid=`` with our Endpoint ID, and the ``bbf-usp-protocol``
offer so that agents which always answer it, with a quoted ``eid="os::..."``
value, stay within RFC 6455), records both heads and the agent's breaches,
and then pumps the connection with a :class:`~.peer.WSPeer`.

The agent's Endpoint ID is taken from the extension in its answer
(R-WS.11a) or, failing that, from the ``from_id`` of the first Record.
:class:`WSClientBinding` is the Controller endpoint on this connection.

Its :class:`~.peer.WSScenario` also drives what only a client can do for
TP-469 section 7 when the agent is the server: open a second session with
the same Endpoint ID and record what the agent does about it
(``second_session``, 7.2), and dial again when the agent ends the session
(``redial``, 7.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Self

from conformance.mtp.binding import Binding, BindingClosed
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import open_connection
from conformance.usp import messages, records
from conformance.usp.records import RecordDecodeError, parse_record

from .connection import Role
from .errors import WSUsageError
from .events import Message
from .handshake import (
    USP_SUBPROTOCOL,
    ClientHandshake,
    ClientHandshakeResult,
    parse_request,
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

__all__ = ["WSClient", "WSClientBinding", "WSHandshakeError", "WSScenario", "connect_ws"]

#: Seconds between attempts while redialing an agent that ended the session.
REDIAL_PAUSE = 0.2


class WSHandshakeError(ConnectionError):
    """The agent refused the upgrade, or its answer forbids the session (R-WS.12).

    ``result`` is None when no complete answer arrived.
    """

    def __init__(self, message: str, result: ClientHandshakeResult | None = None) -> None:
        super().__init__(message)
        self.result = result

    @property
    def status(self) -> int | None:
        """HTTP status of the answer, if one arrived."""
        if self.result is None or self.result.response is None:
            return None
        return self.result.response.status


def _host_header(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{shown}:{port}"


class WSClient:
    """One Controller-to-agent WebSocket connection (reconnect with :meth:`connect`)."""

    mtp = MTP

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/usp",
        *,
        eid: str,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeline: Timeline | None = None,
        scenario: WSScenario | None = None,
        ping_interval: float | None = None,
        pong_timeout: float | None = None,
        handshake_timeout: float = 10.0,
        close_timeout: float = 2.0,
        close_on_violation: bool = True,
        tolerant: bool = False,
        extra_headers: Sequence[tuple[str, str]] = (),
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``eid`` is our (the Controller's) Endpoint ID. ``tolerant`` keeps a
        session whose 101 answer breaks a rule (recorded all the same)."""
        check_keepalive(ping_interval, pong_timeout)
        self.host = host
        self.port = port
        self.path = path
        self.eid = eid
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.timeline = timeline
        self.scenario = scenario or WSScenario()
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.close_on_violation = close_on_violation
        self.tolerant = tolerant
        self.extra_headers = tuple(extra_headers)
        self.random_bytes = random_bytes
        #: The current connection (None before :meth:`connect`).
        self.peer: WSPeer | None = None
        #: The agent's Endpoint ID, once known.
        self.agent_eid: str | None = None
        #: Outcome of the last opening handshake.
        self.handshake: ClientHandshakeResult | None = None
        self.binding = WSClientBinding(self)
        self._ending = False      # we close or abort: no redial
        self._switching = False   # a second session is being watched: no redial
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{_host_header(self.host, self.port)}{self.path}"

    @property
    def is_open(self) -> bool:
        return self.peer is not None and self.peer.is_open

    # --- connecting -----------------------------------------------------------

    def _build_handshake(self, scenario: WSScenario, action: Callable[..., None]) -> ClientHandshake:
        eid: str | None = self.eid
        if scenario.omit_eid:
            eid = None
            action("omit_eid")
        subprotocols: tuple[str, ...] = (USP_SUBPROTOCOL,)
        if scenario.omit_subprotocol:
            subprotocols = ()
            action("omit_subprotocol")
        elif scenario.subprotocol is not None:
            subprotocols = (scenario.subprotocol,)
            action("alter_subprotocol", subprotocol=scenario.subprotocol)
        extensions: str | None = None
        if scenario.omit_extension:
            action("omit_extension")
        elif scenario.extension is not None:
            extensions = scenario.extension
            action("alter_extension", extension=extensions)
        return ClientHandshake(
            _host_header(self.host, self.port), self.path, key_random=self.random_bytes(16), eid=eid,
            subprotocols=subprotocols, extensions=extensions, offer_bbf_extension=not scenario.omit_extension,
            extra_headers=self.extra_headers,
        )

    async def connect(self) -> WSClient:
        """Open the connection and run the opening handshake (R-WS.7).

        Raises ConnectionError when TCP/TLS fails and :class:`WSHandshakeError`
        when the agent refuses or its answer forbids the session; each step is
        in the timeline either way.
        """
        if self.is_open:
            raise WSUsageError("already connected; use another WSClient for a second session")
        self._ending = False
        peer, result = await self._establish()
        self.handshake = result
        self.agent_eid = peer.remote_eid
        self.peer = peer
        self._start(peer, result.trailing)
        return self

    async def _establish(self) -> tuple[WSPeer, ClientHandshakeResult]:
        """A new connection through the opening handshake, not started yet (errors as
        :meth:`connect`)."""
        scenario = self.scenario
        conn = await open_connection(MTP, self.host, self.port, ssl_context=self.ssl_context,
                                     server_hostname=self.server_hostname, timeline=self.timeline,
                                     timeout=self.handshake_timeout)

        def action(name: str, **details: Any) -> None:
            conn.record("ws.scenario", direction="local", decoded={"action": name, **details})

        try:
            handshake = self._build_handshake(scenario, action)
            request = handshake.data_to_send()
            await conn.write(request)
            conn.record("ws.handshake_request", direction="out", raw=request,
                        decoded=request_summary(parse_request(request)))
            result, received = await read_handshake(conn, handshake, self.handshake_timeout)
        except BaseException:
            await conn.close()
            conn.record("conn.close", direction="out")
            raise
        if not isinstance(result, ClientHandshakeResult):
            conn.record("ws.handshake_incomplete", direction="in", raw=received or None,
                        decoded={"bytes": len(received)}, note="no complete handshake answer")
            await conn.close()
            conn.record("conn.close", direction="out")
            raise WSHandshakeError(f"{self.url}: no complete handshake answer ({len(received)} bytes)")
        head = received[: len(received) - len(result.trailing)]
        conn.record("ws.handshake_response", direction="in", raw=head, decoded=response_summary(result.response))
        if result.violations:
            conn.record("ws.violation", direction="in", decoded=violations_summary(result.violations))
        status = result.response.status if result.response else None
        if not (result.established or (self.tolerant and status == 101)):
            await conn.close()
            conn.record("conn.close", direction="out")
            problems = "; ".join(f"{v.rule}: {v.detail}" for v in result.violations if v.blocking)
            raise WSHandshakeError(f"{self.url}: handshake failed (status {status}): {problems}", result)
        agent_eid = result.server_eid
        peer = WSPeer(
            conn, Role.CLIENT, scenario=lambda: self.scenario, on_message=self._on_message,
            remote_eid=agent_eid, close_on_violation=self.close_on_violation,
            ping_interval=self.ping_interval, pong_timeout=self.pong_timeout, close_timeout=self.close_timeout,
            random_bytes=self.random_bytes,
        )
        conn.record("ws.open", direction="local", decoded={
            "agent_eid": agent_eid, "path": self.path,
            "subprotocol": result.response.subprotocol if result.response else None, "tls": conn.tls,
            "peer_endpoint_ids": conn.peer_endpoint_ids,
        })
        if agent_eid:
            conn.record("ws.agent", direction="local", decoded={"eid": agent_eid, "source": "extension"})
        return peer, result

    def _start(self, peer: WSPeer, trailing: bytes) -> None:
        """Pump ``peer`` in the background; its end may trigger a redial."""
        def ended(_task: asyncio.Task[None]) -> None:
            self._ended(peer)

        peer.start(trailing).add_done_callback(ended)

    # --- scenario ---------------------------------------------------------------

    def set_scenario(self, scenario: WSScenario | None = None, **changes: Any) -> WSScenario:
        """Replace the scenario (or change some fields of the current one); returns it.

        One-off actions (``send_ping``, ``second_session``...) are started on the
        current connection and not stored; they need a running loop.
        """
        self.scenario, actions = apply_scenario(self.scenario, scenario, changes)
        for name, value in actions.items():
            if name == "second_session":
                self._spawn(self._second_session(float(value)))
            else:
                self._spawn(perform_action(self.peer, name, value,
                                           close_wait=self.close_timeout + 3.0))
        return self.scenario

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        spawn_action(self._tasks, coro)

    def _local(self, kind: str, conn_id: str | None, decoded: Any, note: str | None = None) -> None:
        if self.timeline is not None:
            self.timeline.record(kind, direction="local", mtp=MTP, conn_id=conn_id,
                                 decoded=decoded, note=note)

    def _ended(self, peer: WSPeer) -> None:
        """A connection's pump ended: dial again if the agent ended the current one and
        the scenario says ``redial`` (TP-469 7.2, 7.6)."""
        if (peer is self.peer and not self._ending and not self._switching
                and self.scenario.redial):
            self._local("ws.scenario", peer.conn_id, {"action": "redial"})
            with contextlib.suppress(RuntimeError):
                self._spawn(self._redial())

    async def _redial(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.handshake_timeout
        while not self._ending:
            try:
                await self.connect()
                return
            except (ConnectionError, OSError) as exc:
                if loop.time() >= deadline:
                    self._local("ws.scenario", None, {"action": "redial", "error": str(exc)[:200]})
                    return
            await asyncio.sleep(REDIAL_PAUSE)

    async def _second_session(self, watch: float) -> None:
        """TP-469 7.2 / R-WS.4: a second session with our Endpoint ID while the first is
        open; records ``ws.second_session`` with the ``outcome``: ``rejected`` (the
        handshake was refused), ``refused`` (TCP or TLS failed), ``first_closed`` or
        ``second_closed`` (the agent ended one of the two within ``watch`` seconds; the
        survivor stays the current connection) or ``both_open`` (then we close the
        second). ``no_session`` when there was no first session to begin with."""
        first = self.peer
        decoded: dict[str, Any] = {"first_conn_id": first.conn_id if first else None,
                                   "watch": watch}
        if first is None or not first.is_open:
            self._local("ws.second_session", None, {**decoded, "outcome": "no_session"})
            return
        self._switching = True
        try:
            await self._watch_second(first, decoded, watch)
        finally:
            self._switching = False

    async def _watch_second(self, first: WSPeer, decoded: dict[str, Any], watch: float) -> None:
        try:
            second, result = await self._establish()
        except WSHandshakeError as exc:
            self._local("ws.second_session", None,
                        {**decoded, "outcome": "rejected", "status": exc.status,
                         "error": str(exc)[:200]}, note="the agent refused a second session")
            return
        except (ConnectionError, OSError) as exc:
            self._local("ws.second_session", None,
                        {**decoded, "outcome": "refused", "status": None,
                         "error": str(exc)[:200]}, note="no connection for a second session")
            return
        self._start(second, result.trailing)
        decoded.update(second_conn_id=second.conn_id, status=101)
        with contextlib.suppress(ConnectionError):  # TP-469 7.2 step 3: a Get over it
            await second.send_record(self._probe_record())
        ends = {asyncio.ensure_future(first.closed.wait()): "first_closed",
                asyncio.ensure_future(second.closed.wait()): "second_closed"}
        done, pending = await asyncio.wait(ends, timeout=watch,
                                           return_when=asyncio.FIRST_COMPLETED)
        for fut in pending:
            fut.cancel()
        outcome = ends[next(iter(done))] if done else "both_open"
        if outcome == "first_closed" and self.peer is first:
            self.peer = second        # the agent kept the new session: it is ours now
        self._local("ws.second_session", second.conn_id, {**decoded, "outcome": outcome})
        if outcome == "both_open":
            await second.close(1000, wait=self.close_timeout)

    def _probe_record(self) -> bytes:
        msg = messages.request("get", {"param_paths": ["Device.DeviceInfo."]},
                               msg_id="ws-second-session")
        return records.serialize(records.no_session_record(
            msg, to_id=self.agent_eid or "", from_id=self.eid))

    def _on_message(self, peer: WSPeer, msg: Message, received_at: float) -> None:
        if peer.remote_eid is None:
            try:
                from_id = parse_record(msg.data).from_id
            except RecordDecodeError:
                from_id = ""
            if from_id:
                peer.remote_eid = from_id
                if peer is self.peer:
                    self.agent_eid = from_id
                peer.record("ws.agent", direction="local", decoded={"eid": from_id, "source": "record"})
        deliver(self.binding, peer, msg, received_at)

    # --- actions ----------------------------------------------------------------

    def _require(self) -> WSPeer:
        if self.peer is None or not self.peer.is_open:
            raise BindingClosed(f"no open WebSocket connection to {self.url}")
        return self.peer

    async def send_record(self, data: bytes, **options: Any) -> None:
        """Send Record bytes (options as :meth:`WSPeer.send_record`); BindingClosed if not open."""
        try:
            await self._require().send_record(data, **options)
        except ConnectionError as exc:
            raise BindingClosed(str(exc)) from None

    async def close(self, code: int | None = 1000, reason: str = "", *, wait: float = 5.0) -> bool:
        """Close the connection (Close frame, then TCP); returns whether it was clean."""
        self._ending = True
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        peer = self.peer
        if peer is None:
            return False
        if peer.closed.is_set():
            return bool(peer.clean)
        return await peer.close(code, reason, wait=wait)

    async def abort(self) -> None:
        """Drop the TCP connection without a Close frame."""
        peer = self._require()
        self._ending = True
        await peer.abort()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class WSClientBinding(Binding):
    """The Controller endpoint on a :class:`WSClient` connection (mtp ``websocket``)."""

    mtp = MTP

    def __init__(self, client: WSClient) -> None:
        super().__init__()
        self.client = client

    async def send(self, data: bytes, *, to_id: str) -> None:
        """Send Record bytes in a binary message (R-WS.14); ``to_id`` is not checked
        against the agent's id so that misaddressed Records can be sent on purpose."""
        await self.client.send_record(data)

    async def close(self) -> None:
        """Close the WebSocket connection (idempotent)."""
        await self.client.close()

    @property
    def address(self) -> str:
        return self.client.url


async def connect_ws(
    host: str,
    port: int,
    path: str = "/usp",
    *,
    eid: str,
    ssl_context: ssl.SSLContext | None = None,
    timeline: Timeline | None = None,
    **options: Any,
) -> WSClient:
    """Connect to an agent's WebSocket server as Controller ``eid``; see :class:`WSClient`."""
    client = WSClient(host, port, path, eid=eid, ssl_context=ssl_context, timeline=timeline, **options)
    return await client.connect()
