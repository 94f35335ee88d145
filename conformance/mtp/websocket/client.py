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
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Self

from conformance.mtp.binding import Binding, BindingClosed
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import open_connection
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
    check_keepalive,
    deliver,
    read_handshake,
    request_summary,
    response_summary,
    violations_summary,
)

__all__ = ["WSClient", "WSClientBinding", "WSHandshakeError", "WSScenario", "connect_ws"]


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

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{_host_header(self.host, self.port)}{self.path}"

    def set_scenario(self, scenario: WSScenario | None = None, **changes: Any) -> WSScenario:
        """Replace the scenario (or change some fields of the current one); returns it."""
        self.scenario = replace(scenario or self.scenario, **changes)
        return self.scenario

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
        self.handshake = result
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
        self.agent_eid = result.server_eid
        peer = WSPeer(
            conn, Role.CLIENT, scenario=lambda: self.scenario, on_message=self._on_message,
            remote_eid=self.agent_eid, close_on_violation=self.close_on_violation,
            ping_interval=self.ping_interval, pong_timeout=self.pong_timeout, close_timeout=self.close_timeout,
            random_bytes=self.random_bytes,
        )
        conn.record("ws.open", direction="local", decoded={
            "agent_eid": self.agent_eid, "path": self.path,
            "subprotocol": result.response.subprotocol if result.response else None, "tls": conn.tls,
            "peer_endpoint_ids": conn.peer_endpoint_ids,
        })
        if self.agent_eid:
            conn.record("ws.agent", direction="local", decoded={"eid": self.agent_eid, "source": "extension"})
        self.peer = peer
        peer.start(result.trailing)
        return self

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
        peer = self.peer
        if peer is None:
            return False
        if peer.closed.is_set():
            return bool(peer.clean)
        return await peer.close(code, reason, wait=wait)

    async def abort(self) -> None:
        """Drop the TCP connection without a Close frame."""
        await self._require().abort()

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
