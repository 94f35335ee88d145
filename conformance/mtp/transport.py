"""Sockets for every MTP server and peer the suite runs (asyncio).

One place owns the socket details that all MTPs share:

* TCP_NODELAY on every TCP socket (interop notes: Nagle + delayed ACK turn a
  0.5 ms round trip into 44 ms);
* TLS done explicitly with ``start_tls`` after the TCP accept/connect, so a
  failed handshake (expired certificate, wrong CA, no client certificate) is
  a ``tls.handshake_failed`` timeline event with the reason, not a line in
  asyncio's log, and the peer certificate's ``urn:bbf:usp:id:`` Endpoint IDs
  are known before the MTP handler runs; ``tls.handshake_done`` carries the
  peer certificate (subject, issuer, validity window and whether it holds
  now, subjectAltName URIs / DNS names / IPs, Endpoint IDs) for the checks
  of TP-469 4.1;
* a server whose ``ssl_context`` is replaced (a case makes the suite present
  another certificate) closes a connection whose handshake ran with the old
  one, so every session after the change met the new certificate;
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
#: StreamReader buffer limit (a USP Record may be large).
STREAM_LIMIT = 16 * 1024 * 1024


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
#: Called with (conn_id, peer) before any TLS; False refuses (closes) the connection.
AcceptFilter = Callable[[str, str], bool]


def new_conn_id(mtp: str) -> str:
    """A process-unique connection id such as ``mqtt-7``."""
    return f"{mtp}-{next(_conn_numbers)}"


def set_nodelay(stream: asyncio.StreamWriter | asyncio.BaseTransport) -> None:
    """Disable Nagle on a TCP stream or transport (no-op for Unix sockets)."""
    sock = stream.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _peer_text(stream: asyncio.StreamWriter | asyncio.BaseTransport, default: str = "unix") -> str:
    peer = stream.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = peer[0]
        return f"[{host}]:{peer[1]}" if ":" in str(host) else f"{host}:{peer[1]}"
    return str(peer or default)


def _endpoint_ids_from_der(der: bytes | None) -> list[str]:
    if not der:
        return []
    from cryptography import x509  # local: only TLS connections need it

    from conformance.mtp.pki import endpoint_ids_from_cert

    try:
        return list(endpoint_ids_from_cert(x509.load_der_x509_certificate(der)))
    except ValueError:
        return []


def peer_certificate_summary(der: bytes | None) -> dict[str, Any] | None:
    """What a timeline entry shows of a peer certificate (None without one, or when it
    cannot be read): :func:`conformance.mtp.pki.cert_summary` with ``status`` now."""
    if not der:
        return None
    import datetime as _dt  # local: only TLS connections need it

    from conformance.mtp.pki import PKIError, cert_summary

    try:
        return cert_summary(der, now=_dt.datetime.now(_dt.UTC))
    except PKIError:
        return None


def _tls_failed(timeline: Timeline | None, mtp: str, conn_id: str, exc: BaseException, *,
                direction: str) -> None:
    if timeline is None:
        return
    reason = getattr(exc, "reason", None) or type(exc).__name__
    timeline.record("tls.handshake_failed", direction=direction, mtp=mtp, conn_id=conn_id,
                    decoded={"reason": str(reason), "error": str(exc)[:300]},
                    note=f"TLS handshake failed: {reason}")


def _tls_done(conn: Connection, ssl_obj: Any, *, direction: str) -> None:
    conn.tls = True
    if ssl_obj is not None:
        conn.peer_cert = ssl_obj.getpeercert() or None
        conn.peer_cert_der = ssl_obj.getpeercert(binary_form=True)
        conn.peer_endpoint_ids = _endpoint_ids_from_der(conn.peer_cert_der)
    conn.record("tls.handshake_done", direction=direction,
                decoded={"version": ssl_obj.version() if ssl_obj else None,
                         "cipher": ssl_obj.cipher()[0] if ssl_obj and ssl_obj.cipher() else None,
                         "peer_endpoint_ids": conn.peer_endpoint_ids,
                         "peer_certificate": peer_certificate_summary(conn.peer_cert_der)})


_TLS_ERRORS = (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError, EOFError)


class _Acceptor(asyncio.Protocol):
    """Accepts a socket with reading paused, then hands it to :meth:`Server._run`.

    Pausing in ``connection_made`` guarantees that no byte (e.g. a TLS
    ClientHello) is consumed before the server decides between plain streams
    and its own ``loop.start_tls`` handshake.
    """

    def __init__(self, server: Server) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self.server._run(transport))
        self.server._tasks.add(task)
        task.add_done_callback(self.server._tasks.discard)


class Server:
    """A listening TCP or Unix socket that runs ``handler`` per connection."""

    def __init__(self, mtp: str, handler: Handler, *, ssl_context: ssl.SSLContext | None = None,
                 timeline: Timeline | None = None,
                 tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT,
                 accept_filter: AcceptFilter | None = None) -> None:
        self.mtp = mtp
        #: Runs before the TLS handshake: scenario hooks count and refuse
        #: connection attempts here (reconnect back-off checks).
        self.accept_filter = accept_filter
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
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Acceptor(self), host, port)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        return self

    async def start_unix(self, path: str) -> Server:
        """Listen on a Unix domain socket path (UDS MTP)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Acceptor(self), path)
        self.path = path
        return self

    async def _run(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader)
        set_nodelay(transport)
        peer_text = _peer_text(transport, self.path or "unix")
        conn_id = new_conn_id(self.mtp)
        if self.timeline is not None:
            self.timeline.record("conn.open", direction="in", mtp=self.mtp, conn_id=conn_id,
                                 decoded={"peer": peer_text})
        if self.accept_filter is not None and not self.accept_filter(conn_id, peer_text):
            transport.close()
            if self.timeline is not None:
                self.timeline.record("conn.close", direction="local", mtp=self.mtp,
                                     conn_id=conn_id, note="refused by scenario")
            return
        ssl_obj = None
        context = self.ssl_context   # a later change must not apply to this handshake
        if context is not None:
            try:
                tls_transport = await asyncio.wait_for(
                    loop.start_tls(transport, protocol, context, server_side=True,
                                   ssl_handshake_timeout=self.tls_handshake_timeout),
                    self.tls_handshake_timeout + 1.0)
            except _TLS_ERRORS as exc:
                transport.close()
                _tls_failed(self.timeline, self.mtp, conn_id, exc, direction="in")
                if self.timeline is not None:
                    self.timeline.record("conn.close", direction="in", mtp=self.mtp,
                                         conn_id=conn_id)
                return
            if tls_transport is None:  # the peer vanished during the handshake
                transport.close()
                return
            transport = tls_transport
            protocol.connection_made(transport)
            ssl_obj = transport.get_extra_info("ssl_object")
        else:
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            transport.resume_reading()
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        conn = Connection(conn_id, self.mtp, reader, writer, peer_text, timeline=self.timeline)
        if context is not None:
            _tls_done(conn, ssl_obj, direction="in")
            if self.ssl_context is not context:  # the certificate changed meanwhile
                await conn.close()
                conn.record("conn.close", direction="local",
                            note="closed: the server's certificate changed during the handshake")
                return
        self.connections[conn.conn_id] = conn
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the peer went away (a TLS peer may do so uncleanly)
        except asyncio.CancelledError:
            raise
        except Exception:  # a broken handler must not kill the server
            _log.exception("%s handler failed on %s", self.mtp, conn.conn_id)
            conn.record("conn.handler_error", direction="in", note="suite handler raised; see log")
        finally:
            self.connections.pop(conn.conn_id, None)
            await conn.close()
            conn.record("conn.close", direction="in")

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
    if ssl_context is not None:
        await _client_tls(conn, ssl_context, server_hostname or host, timeout, f"{host}:{port}")
    return conn


async def open_unix_connection(mtp: str, path: str, *, ssl_context: ssl.SSLContext | None = None,
                               timeline: Timeline | None = None,
                               timeout: float = 10.0) -> Connection:
    """Connect to a Unix domain socket (TLS optional, R-UDS.23a); ConnectionError on failure."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise ConnectionError(f"{mtp}: cannot connect to {path}: {exc or 'timeout'}") from None
    conn = Connection(new_conn_id(mtp), mtp, reader, writer, path, timeline=timeline)
    conn.record("conn.open", direction="out", decoded={"peer": path})
    if ssl_context is not None:
        await _client_tls(conn, ssl_context, None, timeout, path)
    return conn


async def _client_tls(conn: Connection, context: ssl.SSLContext, server_hostname: str | None,
                      timeout: float, where: str) -> None:
    """Client-side TLS upgrade; a failure is recorded and raised as ConnectionError."""
    try:
        await asyncio.wait_for(
            conn.writer.start_tls(context, server_hostname=server_hostname,
                                  ssl_handshake_timeout=timeout), timeout + 1.0)
    except _TLS_ERRORS as exc:
        _tls_failed(conn.timeline, conn.mtp, conn.conn_id, exc, direction="out")
        await conn.close()
        raise ConnectionError(f"{conn.mtp}: TLS handshake with {where} failed: {exc}") from None
    _tls_done(conn, conn.writer.get_extra_info("ssl_object"), direction="out")
