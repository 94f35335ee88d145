"""The reference Agent's UNIX domain socket client (TR-369 "UNIX Domain Socket Binding").

Runs the suite's sans-I/O :class:`~conformance.mtp.uds.session.UDSConnection`
(client role) over :func:`conformance.mtp.transport.open_unix_connection`
(TLS optional, R-UDS.23a):

* connects with SOCK_STREAM (R-UDS.4) and sends its Handshake first
  (R-UDS.16); gives up when the server's Handshake does not come within
  ``handshake_timeout`` (30 s, R-UDS.18);
* once both Handshakes are exchanged, sends the UDSConnect Record to the
  Controller that answered (R-MTP.6), then USP Records in Type 3 TLVs
  (R-UDS.22); Records received before the handshake, repeated Handshakes
  and unknown TLVs are ignored (R-UDS.15, R-UDS.19, R-UDS.20);
* answers an unparseable frame or a Record that cannot be extracted with an
  Error TLV and closes (R-UDS.23, R-UDS.24); closes on a received Error
  (R-UDS.25);
* reconnects after a random 1 to 5 seconds whenever the connection fails or
  closes (R-UDS.5; the range is configurable for tests).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Sequence

from conformance.agent.mtp.backoff import Backoff, UDSRetry
from conformance.agent.mtp.base import (
    AgentMTP,
    ControllerRoute,
    MTPNotConnected,
    NoRoute,
    Route,
)
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import Connection, open_unix_connection
from conformance.mtp.uds.codec import UDSDecoder, decode_frame
from conformance.mtp.uds.frames import UDSDecodeError, UDSFrame
from conformance.mtp.uds.peer import describe_frame
from conformance.mtp.uds.session import (
    HANDSHAKE_TIMEOUT,
    Action,
    Close,
    HandshakeDone,
    Ignored,
    PeerError,
    RecordReceived,
    Send,
    UDSConnection,
    UDSRole,
)

__all__ = ["UDSMTP"]

_log = logging.getLogger(__name__)
_READ_SIZE = 64 * 1024


class UDSMTP(AgentMTP):
    """The Agent as UNIX domain socket client of a Controller listening on ``path``."""

    name = "uds"

    def __init__(self, endpoint_id: str, path: str, *,
                 controllers: Sequence[ControllerRoute] = (), retry: UDSRetry | None = None,
                 ssl_context: ssl.SSLContext | None = None, timeline: Timeline | None = None,
                 rng: random.Random | None = None, handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 connect_timeout: float = 10.0) -> None:
        super().__init__(endpoint_id, controllers=controllers, timeline=timeline, rng=rng)
        if handshake_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be > 0")
        self.path = path
        self.retry = retry or UDSRetry()
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        #: The Controller's Endpoint ID from its Handshake (current connection).
        self.peer_endpoint_id: str | None = None
        self.conn_id: str | None = None
        self._conn: Connection | None = None
        self._machine: UDSConnection | None = None
        self._backoff = Backoff(self.retry, self.rng)
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._open = False

    @property
    def connected(self) -> bool:
        return (self._open and self._machine is not None and self._machine.is_open
                and self._conn is not None and not self._conn.closing)

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, disconnect_record: bytes | Sequence[bytes] | None = None) -> None:
        if not self._begin_stop():
            return
        if self.connected:
            await self._send_disconnects(disconnect_record)
        if self._conn is not None:
            await self._conn.close()
        await self._cancel(self._task)

    async def _run(self) -> None:
        first = True
        while not self.stopping:
            if not first and not await self._retry_wait(self._backoff, self.conn_id):
                break
            first = False
            try:
                await self._session()
            except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                self._record("uds.state", direction="local", conn_id=self.conn_id,
                             decoded={"state": "lost", "error": str(exc)[:300]})
            except Exception as exc:  # noqa: BLE001 - keep retrying whatever went wrong
                _log.exception("uds: connection failed")
                self._record("uds.state", direction="local", conn_id=self.conn_id,
                             decoded={"state": "error", "error": repr(exc)[:300]})

    async def _session(self) -> None:
        try:
            conn = await open_unix_connection(self.name, self.path, ssl_context=self.ssl_context,
                                              timeline=self.timeline,
                                              timeout=self.connect_timeout)
        except ConnectionError as exc:
            self._record("uds.state", direction="local",
                         decoded={"state": "connect_failed", "error": str(exc)[:300]})
            return
        loop = asyncio.get_running_loop()
        machine = UDSConnection(UDSRole.CLIENT, self.endpoint_id,
                                handshake_timeout=self.handshake_timeout)
        self._conn, self._machine, self.conn_id = conn, machine, conn.conn_id
        self.peer_endpoint_id = None
        decoder = UDSDecoder()
        try:
            await self._apply(machine.start(loop.time()))
            while not machine.closed and not conn.closing:
                deadline = None if machine.peer_endpoint_id is not None else machine.deadline
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await conn.reader.read(_READ_SIZE)
                except TimeoutError:  # R-UDS.18
                    await self._apply(machine.poll(loop.time()))
                    continue
                if not data:
                    by, why = (("agent", "MTP stopped") if self.stopping
                               else ("peer", "peer closed the connection"))
                    self._record("uds.closed", direction="local", conn_id=conn.conn_id,
                                 decoded={"by": by, "reason": why})
                    break
                await self._on_data(decoder, data, loop.time())
        finally:
            was_open, self._open = self._open, False
            await conn.close()
            conn.record("conn.close", direction="out")
            if was_open:
                self._notify_disconnected()

    async def _on_data(self, decoder: UDSDecoder, data: bytes, now: float) -> None:
        machine = self._machine
        assert machine is not None
        try:
            frames, error = decoder.feed(data), None
        except UDSDecodeError as exc:
            frames, error = exc.events, exc
        for frame in frames:
            self._record_frame("in", frame)
            await self._apply(machine.receive_data(frame.raw or b"", now))
            if machine.closed:
                return
        if error is not None:  # R-UDS.24
            self._record("uds.violation", direction="in", conn_id=self.conn_id, raw=data,
                         decoded={"violations": [{"rule": error.rule, "message": error.reason}]})
            await self._apply(machine.fail(f"cannot parse frame ({error.rule}): {error.reason}",
                                           "R-UDS.24"))

    def _record_frame(self, direction: str, frame: UDSFrame) -> None:
        summary = describe_frame(frame)
        names = ",".join(t["name"] for t in summary["tlvs"]) or "no TLV"
        self._record("uds.frame", direction=direction, conn_id=self.conn_id, raw=frame.raw,
                     decoded=summary, note=names)

    # ------------------------------------------------------------------ actions

    async def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                await self._write(action.data)
            elif isinstance(action, Close):
                self._record("uds.closed", direction="local", conn_id=self.conn_id,
                             decoded={"by": "agent", "reason": action.reason, "rule": action.rule})
                if self._conn is not None:
                    await self._conn.close()
            elif isinstance(action, HandshakeDone):
                await self._handshake_done(action.peer_endpoint_id)
            elif isinstance(action, RecordReceived):
                await self._on_record(action.record)
            elif isinstance(action, PeerError):
                self._record("uds.error", direction="in", conn_id=self.conn_id,
                             decoded={"message": action.message})
            elif isinstance(action, Ignored):
                self._record("uds.ignored", direction="local", conn_id=self.conn_id,
                             decoded={"reason": action.reason, "rule": action.rule},
                             note=f"{action.reason} [{action.rule}]")

    async def _handshake_done(self, peer_id: str) -> None:
        self.peer_endpoint_id = peer_id
        self._open = True
        self._backoff.reset()
        self._record("uds.handshake_done", direction="local", conn_id=self.conn_id,
                     decoded={"peer_endpoint_id": peer_id})
        try:  # R-MTP.6: the UDSConnect Record before anything else
            await self.send(self._connect_record(peer_id), to_id=peer_id)
        except ConnectionError:
            return
        self._record("uds.connect_record", direction="out", conn_id=self.conn_id,
                     decoded={"to_id": peer_id})
        self._notify_connected()

    async def _on_record(self, data: bytes) -> None:
        machine = self._machine
        assert machine is not None
        if not self.decodable(data):  # R-UDS.23
            await self._apply(machine.fail("cannot extract the USP Record", "R-UDS.23"))
            return
        self._deliver(data, Route(self.name, self.conn_id or "", None, self.peer_endpoint_id))

    async def _write(self, data: bytes) -> None:
        conn = self._conn
        if conn is None or conn.closing:
            raise MTPNotConnected("uds: no connection")
        async with self._write_lock:
            try:
                frame: UDSFrame | None = decode_frame(data)
            except UDSDecodeError:
                frame = None
            if frame is not None:
                self._record_frame("out", frame)
            try:
                await conn.write(data)
            except OSError as exc:
                raise MTPNotConnected(f"uds: write failed: {exc}") from exc

    async def send(self, data: bytes, *, to_id: str, reply_to: str | None = None) -> None:
        machine = self._machine
        if not self.connected or machine is None:
            raise MTPNotConnected("uds: no handshaken connection")
        if to_id != self.peer_endpoint_id:
            raise NoRoute(f"uds: connected to {self.peer_endpoint_id!r}, not {to_id!r}")
        await self._apply(machine.send_record(bytes(data)))
