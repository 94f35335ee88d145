"""Sockets for every MTP server and peer the suite runs (asyncio).

One place owns the socket details that all MTPs share:

* TCP_NODELAY on every TCP socket (interop notes: Nagle + delayed ACK turn a
  0.5 ms round trip into 44 ms);
* TLS done explicitly with ``start_tls`` after the TCP accept/connect, so a
  failed handshake (expired certificate, wrong CA, no client certificate) is
  a ``tls.handshake_failed`` timeline event with the reason, not a line in
  asyncio's log, and the peer certificate's ``urn:bbf:usp:id:`` Endpoint IDs
  are known before the MTP handler runs;
* connection ids and ``conn.open`` / ``conn.close`` timeline entries;
* Unix domain sockets (UDS MTP) with the same :class:`Connection` shape.

MTP servers pass a handler ``async def handler(conn: Connection)``; when it
returns (or raises) the connection is closed and recorded as closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.mtp.timeline import Timeline

_log = logging.getLogger(__name__)
_conn_numbers = itertools.count(1)

#: Default time allowed for a TLS handshake before it counts as failed.
TLS_HANDSHAKE_TIMEOUT = 10.0


@dataclass
class Connection:
    """One accepted or opened byte stream, plain or TLS, TCP or Unix."""

    conn_id: str
    mtp: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: str
    tls: bool = False
    peer_cert: dict[str, Any] | None = None       # ssl getpeercert() form
    peer_cert_der: bytes | None = None
    peer_endpoint_ids: list[str] = field(default_factory=list)
    timeline: Timeline | None = None

    async def write(self, data: bytes) -> None:
        """Write and drain; a vanished peer raises ConnectionError."""
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        """Close the stream (idempotent; never raises for an already-dead peer)."""
        if not self.writer.is_closing():
            self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)

    @property
    def closing(self) -> bool:
        return self.writer.is_closing()

    def record(self, kind: str, *, direction: str, raw: bytes | None = None,
               decoded: Any = None, note: str | None = None) -> None:
        """Append a timeline entry for this connection (no-op without a timeline)."""
        if self.timeline is not None:
            self.timeline.record(kind, direction=direction, mtp=self.mtp, conn_id=self.conn_id,
                                 raw=raw, decoded=decoded, note=note)


Handler = Callable[[Connection], Awaitable[None]]


def new_conn_id(mtp: str) -> str:
    """A process-unique connection id such as ``mqtt-7``."""
    return f"{mtp}-{next(_conn_numbers)}"


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Disable Nagle on a TCP stream (no-op for Unix sockets)."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _peer_text(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = peer[0]
        return f"[{host}]:{peer[1]}" if ":" in str(host) else f"{host}:{peer[1]}"
    return str(peer or "unix")


def _endpoint_ids_from_der(der: bytes | None) -> list[str]:
    if not der:
        return []
    from cryptography import x509  # local: only TLS connections need it

    from conformance.mtp.pki import endpoint_ids_from_cert

    try:
        return list(endpoint_ids_from_cert(x509.load_der_x509_certificate(der)))
    except ValueError:
        return []


async def _start_tls(conn: Connection, context: ssl.SSLContext, *, server_side: bool,
                     server_hostname: str | None, timeout: float) -> bool:
    """Upgrade ``conn`` to TLS; record the outcome; False when the handshake failed."""
    conn.record("tls.handshake_start", direction="in" if server_side else "out")
    try:
        await asyncio.wait_for(
            conn.writer.start_tls(context, server_hostname=None if server_side else server_hostname,
                                  ssl_handshake_timeout=timeout),
            timeout + 1.0)
    except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError, EOFError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        conn.record("tls.handshake_failed", direction="in" if server_side else "out",
                    decoded={"reason": str(reason), "error": str(exc)[:300]},
                    note=f"TLS handshake failed: {reason}")
        return False
    ssl_obj = conn.writer.get_extra_info("ssl_object")
    conn.tls = True
    if ssl_obj is not None:
        conn.peer_cert = ssl_obj.getpeercert() or None
        conn.peer_cert_der = ssl_obj.getpeercert(binary_form=True)
        conn.peer_endpoint_ids = _endpoint_ids_from_der(conn.peer_cert_der)
    conn.record("tls.handshake_done", direction="in" if server_side else "out",
                decoded={"version": ssl_obj.version() if ssl_obj else None,
                         "cipher": ssl_obj.cipher()[0] if ssl_obj and ssl_obj.cipher() else None,
                         "peer_endpoint_ids": conn.peer_endpoint_ids})
    return True


class Server:
    """A listening TCP or Unix socket that runs ``handler`` per connection."""

    def __init__(self, mtp: str, handler: Handler, *, ssl_context: ssl.SSLContext | None = None,
                 timeline: Timeline | None = None,
                 tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT) -> None:
        self.mtp = mtp
        self.handler = handler
        self.ssl_context = ssl_context
        self.timeline = timeline
        self.tls_handshake_timeout = tls_handshake_timeout
        self.connections: dict[str, Connection] = {}
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.host = ""
        self.port = 0
        self.path = ""

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> Server:
        """Listen on ``host:port`` (port 0: the OS picks; see :attr:`port`)."""
        self._server = await asyncio.start_server(self._accept, host, port)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        return self

    async def start_unix(self, path: str) -> Server:
        """Listen on a Unix domain socket path (UDS MTP)."""
        self._server = await asyncio.start_unix_server(self._accept, path)
        self.path = path
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        set_nodelay(writer)
        conn = Connection(new_conn_id(self.mtp), self.mtp, reader, writer, _peer_text(writer),
                          timeline=self.timeline)
        self.connections[conn.conn_id] = conn
        conn.record("conn.open", direction="in", decoded={"peer": conn.peer})
        try:
            if self.ssl_context is not None and not await _start_tls(
                    conn, self.ssl_context, server_side=True, server_hostname=None,
                    timeout=self.tls_handshake_timeout):
                return
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # a broken handler must not kill the server
            _log.exception("%s handler failed on %s", self.mtp, conn.conn_id)
            conn.record("conn.handler_error", direction="in", note="suite handler raised; see log")
        finally:
            self.connections.pop(conn.conn_id, None)
            await conn.close()
            conn.record("conn.close", direction="in")
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        """Stop listening and close every open connection (idempotent)."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            await conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_connection(
    mtp: str, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None, timeline: Timeline | None = None,
    timeout: float = 10.0,
) -> Connection:
    """Connect to ``host:port`` (TCP_NODELAY, optional TLS); raise ConnectionError on failure.

    A failed TLS handshake is recorded as ``tls.handshake_failed`` and then
    raised as :class:`ConnectionError` naming the reason.
    """
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise ConnectionError(f"{mtp}: cannot connect to {host}:{port}: {exc or 'timeout'}") from None
    set_nodelay(writer)
    conn = Connection(new_conn_id(mtp), mtp, reader, writer, _peer_text(writer), timeline=timeline)
    conn.record("conn.open", direction="out", decoded={"peer": conn.peer})
    if ssl_context is not None and not await _start_tls(
            conn, ssl_context, server_side=False, server_hostname=server_hostname or host,
            timeout=timeout):
        await conn.close()
        raise ConnectionError(f"{mtp}: TLS handshake with {host}:{port} failed")
    return conn


async def open_unix_connection(mtp: str, path: str, *, timeline: Timeline | None = None,
                               timeout: float = 10.0) -> Connection:
    """Connect to a Unix domain socket; raise ConnectionError on failure."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise ConnectionError(f"{mtp}: cannot connect to {path}: {exc or 'timeout'}") from None
    conn = Connection(new_conn_id(mtp), mtp, reader, writer, path, timeline=timeline)
    conn.record("conn.open", direction="out", decoded={"peer": path})
    return conn
