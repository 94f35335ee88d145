"""The suite's UNIX Domain Socket MTP endpoints: server, client and Binding.

* :class:`UDSServer` listens on a socket path (R-UDS.2/3) for an agent that
  acts as UDS client; :class:`UDSClient` connects to an agent that listens
  (R-UDS.4).  Both run every connection through a :class:`~.peer.UDSPeer`
  (handshake, frame recording, violations, scenario hooks).
* :class:`UDSBinding` is the reference Controller's view: Records from a
  handshaken peer go to the sink, ``send(data, to_id=...)`` frames a Record
  for the connection whose Handshake carried ``to_id``.

Cases script both through :meth:`UDSEndpoint.set_scenario` (``field=value``
changes of :class:`~.peer.UDSScenario`); the server also acts on
``drop_connections`` (an accept filter) and ``listening`` (the socket goes
away and comes back, recorded as ``uds.listening``). Every change is recorded
as ``uds.scenario_set``.

Sockets come from :mod:`conformance.mtp.transport`; the other timeline kinds
are listed in :mod:`conformance.mtp.uds.peer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import stat
from dataclasses import replace
from typing import Any, Self

from conformance.mtp import transport
from conformance.mtp.binding import Binding, BindingClosed, InboundRecord
from conformance.mtp.timeline import Timeline
from conformance.mtp.uds.codec import DEFAULT_MAX_FRAME_SIZE
from conformance.mtp.uds.peer import MTP, UDSPeer, UDSScenario, scenario_fields
from conformance.mtp.uds.session import HANDSHAKE_TIMEOUT, UDSRole
from conformance.mtp.waiting import StateChanges

__all__ = ["UDSBinding", "UDSClient", "UDSEndpoint", "UDSServer"]


class UDSEndpoint:
    """State shared by the server and client: identity, peers, waiters, binding."""

    role: UDSRole = UDSRole.SERVER

    def __init__(self, path: str | os.PathLike[str], endpoint_id: str, *,
                 timeline: Timeline | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 scenario: UDSScenario | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if handshake_timeout <= 0:
            raise ValueError("handshake_timeout must be > 0")
        self.path = os.fspath(path)
        self.endpoint_id = endpoint_id
        #: Optional TLS over the socket (R-UDS.23a).
        self.ssl_context = ssl_context
        self.timeline = timeline
        self.handshake_timeout = handshake_timeout
        self.max_frame_size = max_frame_size
        self.scenario = scenario or UDSScenario()
        #: Every live connection by conn_id (handshaken or not).
        self.connections: dict[str, UDSPeer] = {}
        #: Handshaken connections by the peer's Endpoint ID (latest wins).
        self.peers: dict[str, UDSPeer] = {}
        self.binding = UDSBinding(self)
        self._changes = StateChanges()

    def set_scenario(self, scenario: UDSScenario | None = None, **changes: Any) -> UDSScenario:
        """Deviations for the next connections/frames; returns the new scenario.

        ``set_scenario(UDSScenario(...))`` replaces it, ``set_scenario(None)``
        goes back to normal behaviour, ``set_scenario(field=value, ...)``
        changes fields of the current one (the case engine's ``scenario``
        step). Raises ValueError for an unknown field or a bad value.
        """
        unknown = sorted(set(changes) - set(scenario_fields()))
        if unknown:
            raise ValueError(f"unknown UDS scenario field(s) {', '.join(unknown)}; known: "
                             f"{', '.join(scenario_fields())}")
        if scenario is None and not changes:
            new = UDSScenario()
        else:
            try:
                new = replace(scenario or self.scenario, **changes)
            except TypeError as exc:  # a value the dataclass cannot take
                raise ValueError(f"bad UDS scenario value: {exc}") from None
        self.scenario = new
        if self.timeline is not None:
            self.timeline.record("uds.scenario_set", direction="local", mtp=MTP,
                                 decoded=new.to_json(), note="scenario set")
        return new

    async def wait_for_peer(self, endpoint_id: str | None = None, timeout: float = 10.0) -> UDSPeer:
        """The open connection whose Handshake named ``endpoint_id`` (any if None),
        waiting up to ``timeout`` s; raises :class:`TimeoutError`."""
        return await self._changes.wait_until(
            lambda: self._find_peer(endpoint_id), timeout=timeout,
            what=f"no UDS handshake from {endpoint_id or 'any peer'}")

    def _find_peer(self, endpoint_id: str | None) -> UDSPeer | None:
        if endpoint_id is not None:
            peer = self.peers.get(endpoint_id)
            return peer if peer is not None and peer.is_open else None
        return next((p for p in self.peers.values() if p.is_open), None)

    async def close_peers(self, reason: str = "suite endpoint closed") -> None:
        """Close every connection from our side."""
        for peer in list(self.connections.values()):
            await peer.close(reason)

    # --- PeerOwner callbacks (used by UDSPeer) ---------------------------------

    def _peer_handshaken(self, peer: UDSPeer) -> None:
        peer_id = peer.peer_endpoint_id
        assert peer_id is not None
        self.peers[peer_id] = peer
        self._changes.changed()

    def _peer_closed(self, peer: UDSPeer) -> None:
        self.connections.pop(peer.conn_id, None)
        peer_id = peer.peer_endpoint_id
        if peer_id is not None and self.peers.get(peer_id) is peer:
            del self.peers[peer_id]

    def _deliver(self, record: InboundRecord) -> None:
        self.binding.deliver(record)


class UDSServer(UDSEndpoint):
    """Listening UDS endpoint (the agent under test is the UDS client)."""

    role = UDSRole.SERVER

    def __init__(self, path: str | os.PathLike[str], endpoint_id: str, *,
                 timeline: Timeline | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 scenario: UDSScenario | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(path, endpoint_id, timeline=timeline, handshake_timeout=handshake_timeout,
                         scenario=scenario, max_frame_size=max_frame_size,
                         ssl_context=ssl_context)
        self._server: transport.Server | None = None
        #: Applies ``listening`` changes in order (set_scenario is synchronous).
        self._listening_task: asyncio.Task[None] | None = None

    async def start(self) -> Self:
        """Bind and listen on :attr:`path` (R-UDS.2); a stale socket file is replaced."""
        server = transport.Server(MTP, self._handle, timeline=self.timeline,
                                  ssl_context=self.ssl_context, accept_filter=self._accept)
        await server.start_unix(self.path)
        self._server = server
        return self

    @property
    def listening(self) -> bool:
        """Whether the socket is there and accepting connections."""
        return self._server is not None

    def set_scenario(self, scenario: UDSScenario | None = None, **changes: Any) -> UDSScenario:
        before = self.scenario.listening
        new = super().set_scenario(scenario, **changes)
        if new.listening != before:
            previous = self._listening_task
            self._listening_task = asyncio.get_running_loop().create_task(
                self._switch_listening(new.listening, previous))
        return new

    async def _switch_listening(self, listen: bool, previous: asyncio.Task[None] | None) -> None:
        """Remove the socket (closing its connections) or listen on it again."""
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        if listen and self._server is None:
            await self.start()
        elif not listen and self._server is not None:
            await self.close_peers("scenario: the socket goes away")
            await self._stop_listening()
        if self.timeline is not None:
            self.timeline.record("uds.listening", direction="local", mtp=MTP,
                                 decoded={"listening": self.listening, "path": self.path},
                                 note="socket back" if self.listening else "socket removed")

    def _accept(self, conn_id: str, peer: str) -> bool:
        """Accept filter: the ``drop_connections`` scenario closes the next N connections."""
        left = self.scenario.drop_connections
        if left <= 0:
            return True
        self.scenario = replace(self.scenario, drop_connections=left - 1)
        if self.timeline is not None:
            self.timeline.record("uds.scenario", direction="local", mtp=MTP, conn_id=conn_id,
                                 decoded={"action": "drop_connection", "left": left - 1},
                                 note="scenario: drop_connection")
        return False

    async def _handle(self, conn: transport.Connection) -> None:
        peer = UDSPeer(conn, UDSRole.SERVER, self)
        self.connections[conn.conn_id] = peer
        await peer.run()

    async def close(self) -> None:
        """Close all connections, stop listening and remove the socket file (idempotent)."""
        if self._listening_task is not None:
            with contextlib.suppress(Exception):
                await self._listening_task
            self._listening_task = None
        await self.close_peers()
        await self._stop_listening()

    async def _stop_listening(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.stat(self.path).st_mode):
                    os.unlink(self.path)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class UDSClient(UDSEndpoint):
    """Connecting UDS endpoint (the agent under test listens on :attr:`path`)."""

    role = UDSRole.CLIENT

    def __init__(self, path: str | os.PathLike[str], endpoint_id: str, *,
                 timeline: Timeline | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 scenario: UDSScenario | None = None,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(path, endpoint_id, timeline=timeline, handshake_timeout=handshake_timeout,
                         scenario=scenario, max_frame_size=max_frame_size,
                         ssl_context=ssl_context)
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self, timeout: float = 10.0) -> UDSPeer:
        """Open a SOCK_STREAM connection (R-UDS.4) and start the handshake (R-UDS.16).

        Returns at once with the running peer; await :meth:`wait_for_peer` or
        ``peer.handshake_done`` for the server's Handshake.  Raises
        ConnectionError when nothing listens on :attr:`path`.
        """
        conn = await transport.open_unix_connection(MTP, self.path, timeline=self.timeline,
                                                    ssl_context=self.ssl_context, timeout=timeout)
        peer = UDSPeer(conn, UDSRole.CLIENT, self)
        self.connections[conn.conn_id] = peer
        task = asyncio.get_running_loop().create_task(self._run(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return peer

    async def _run(self, peer: UDSPeer) -> None:
        try:
            await peer.run()
        finally:
            peer.conn.record("conn.close", direction="out")

    async def close(self) -> None:
        """Close every connection this client opened (idempotent)."""
        await self.close_peers()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class UDSBinding(Binding):
    """The reference Controller's endpoint on a :class:`UDSServer` or :class:`UDSClient`.

    Inbound Records carry ``meta={"peer_endpoint_id": ..., "role": ...}``.
    :meth:`close` only detaches the Controller; the endpoint's owner stops
    the socket.
    """

    mtp = MTP

    def __init__(self, endpoint: UDSEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.closed = False

    def deliver(self, record: InboundRecord) -> None:
        if not self.closed:
            super().deliver(record)

    async def send(self, data: bytes, *, to_id: str) -> None:
        """Frame ``data`` as a USP Record TLV to the peer whose Handshake named ``to_id``."""
        if self.closed:
            raise BindingClosed("UDS binding is closed")
        peer = self.endpoint.peers.get(to_id)
        if peer is None or not peer.is_open:
            raise BindingClosed(f"no handshaken UDS connection to {to_id!r}")
        try:
            await peer.send_record(bytes(data))
        except (ConnectionError, RuntimeError) as exc:
            raise BindingClosed(f"UDS connection to {to_id!r} lost: {exc}") from None

    async def close(self) -> None:
        self.closed = True
        self.set_sink(None)

    @property
    def address(self) -> str:
        return self.endpoint.path
