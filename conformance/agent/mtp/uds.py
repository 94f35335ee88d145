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

Named faults (``uds.*``, registered below) each break one of these rules at
one place. Faults on the frames of USP Records leave the UDSConnect Record
alone, and faults on reconnecting leave the first connection alone, so that
an agent with the fault still boots and the case that the fault targets can
run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Sequence
from typing import Literal

from conformance.agent.faults import register
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
from conformance.mtp.uds.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    UDSDecoder,
    decode_frame,
    encode_error,
    encode_frame,
    encode_raw_frame,
    encode_record,
)
from conformance.mtp.uds.frames import (
    HEADER_SIZE,
    SYNC,
    TLVType,
    UDSDecodeError,
    UDSFrame,
)
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
from conformance.mtp.uds.validate import endpoint_id_problem

__all__ = ["UDSMTP"]

_log = logging.getLogger(__name__)
_READ_SIZE = 64 * 1024
#: Seconds between attempts when a fault skips the back-off (keeps the loop from spinning).
_NO_WAIT = 0.05
#: How a session ended: no socket, closed before the handshake, or lost after it.
Outcome = Literal["connect_failed", "failed", "lost"]

# --- named faults (conformance/agent/faults.py) -------------------------------------------
register("uds.handshake_wrong_endpoint_id", "R-UDS.16",
         "names another Endpoint ID (its own with '-wrong' appended) in its Handshake")
register("uds.record_before_handshake", "R-UDS.16, R-UDS.20",
         "sends a UDSConnect Record on each new connection before its Handshake (and the "
         "proper one after the handshake)")
register("uds.connect_record_first_connection_only", "R-MTP.6, R-MTP.8",
         "sends the UDSConnect Record on the first connection only, not after reconnecting")
register("uds.frame_bad_sync", "R-UDS.8",
         "starts the frames of USP Msg Records with '_usp' instead of '_USP'")
register("uds.frame_length_counts_header", "R-UDS.9",
         "counts the 8-octet header in the length of the frames of USP Msg Records")
register("uds.tlv_length_little_endian", "R-UDS.11",
         "writes the TLV length of USP Msg Records in little-endian byte order")
register("uds.record_tlv_wrong_type", "R-UDS.14, R-UDS.22",
         "puts USP Msg Records in a Type 4 TLV instead of Type 3")
register("uds.empty_frame", "R-UDS.6",
         "sends a frame without any TLV (header only) before each USP Msg Record frame")
register("uds.length_16_bit", "R-UDS.9, R-UDS.11",
         "keeps only the low 16 bits of frame and TLV lengths of USP Msg Records (wrong "
         "above 65535 octets)")
register("uds.one_read_per_frame", "R-UDS.4, R-UDS.9",
         "expects each socket read to hold whole frames: a frame split over reads is lost")
register("uds.max_frame_64k", "R-UDS.9",
         "refuses frames longer than 65535 octets as unparseable")
register("uds.no_handshake_timeout", "R-UDS.18",
         "waits for the server's Handshake forever instead of closing after 30 seconds")
register("uds.early_record_processed", "R-UDS.20",
         "keeps USP Records received before the handshake completed and processes them after")
register("uds.unknown_tlv_error", "R-UDS.15",
         "answers a TLV of an undefined type with an Error TLV and closes the connection")
register("uds.unknown_tlv_drops_frame", "R-UDS.15",
         "drops a whole frame that holds a TLV of an undefined type, its USP Record included")
register("uds.repeated_handshake_error", "R-UDS.19",
         "answers a Handshake received after the handshake with an Error TLV and closes")
register("uds.bad_handshake_no_error", "R-UDS.21",
         "closes the connection on a Handshake it cannot process without sending an Error TLV")
register("uds.bad_record_no_error", "R-UDS.23",
         "silently drops a USP Record TLV that cannot be extracted and keeps the connection")
register("uds.bad_record_keeps_connection", "R-UDS.23",
         "answers a USP Record TLV that cannot be extracted with an Error TLV but stays connected")
register("uds.bad_frame_no_error", "R-UDS.24",
         "closes the connection on a frame it cannot parse without sending an Error TLV")
register("uds.bad_frame_keeps_connection", "R-UDS.24",
         "answers a frame it cannot parse with an Error TLV but stays connected")
register("uds.error_ignored", "R-UDS.25",
         "ignores Error TLVs: stays connected after receiving one")
register("uds.retry_no_wait", "R-UDS.5",
         "reconnects at once (no 1 to 5 second wait) after a connection closed or failed")
register("uds.failed_attempt_no_wait", "R-UDS.5",
         "waits 1 to 5 seconds only after losing an established connection; an attempt that "
         "fails before the handshake is retried at once")
register("uds.retry_gives_up", "R-UDS.5",
         "stops reconnecting when, after its first connection, the socket cannot be connected")


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
        self._decoder = UDSDecoder()
        self._backoff = Backoff(self.retry, self.rng)
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._open = False
        #: Records received before the handshake (kept only by uds.early_record_processed).
        self._early: list[bytes] = []
        #: How the last session ended (also when it ended with an exception).
        self._outcome: Outcome = "connect_failed"

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
        outcome: Outcome | None = None
        while not self.stopping:
            if outcome is not None and not await self._wait_before_retry(outcome):
                break
            try:
                outcome = await self._session()
            except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                outcome = self._outcome
                self._record("uds.state", direction="local", conn_id=self.conn_id,
                             decoded={"state": "lost", "error": str(exc)[:300]})
            except Exception as exc:  # noqa: BLE001 - keep retrying whatever went wrong
                outcome = self._outcome
                _log.exception("uds: connection failed")
                self._record("uds.state", direction="local", conn_id=self.conn_id,
                             decoded={"state": "error", "error": repr(exc)[:300]})
            if (outcome == "connect_failed" and self.connection_count > 0
                    and self.faults.on("uds.retry_gives_up")):
                self._record("uds.state", direction="local", decoded={"state": "gave_up"})
                break

    async def _wait_before_retry(self, outcome: Outcome) -> bool:
        """The R-UDS.5 wait before the next attempt; False if stopped meanwhile."""
        skip = self.faults.on("uds.retry_no_wait") or (
            outcome != "lost" and self.faults.on("uds.failed_attempt_no_wait"))
        if not skip:
            return await self._retry_wait(self._backoff, self.conn_id)
        self._record(self._kind("retry"), direction="local", conn_id=self.conn_id,
                     decoded={"retry": self._backoff.retry, "delay": 0.0, "no_wait": True},
                     note="retry without waiting (fault)")
        return await self._sleep(_NO_WAIT)

    async def _session(self) -> Outcome:
        try:
            conn = await open_unix_connection(self.name, self.path, ssl_context=self.ssl_context,
                                              timeline=self.timeline,
                                              timeout=self.connect_timeout)
        except ConnectionError as exc:
            self._record("uds.state", direction="local",
                         decoded={"state": "connect_failed", "error": str(exc)[:300]})
            self._outcome = "connect_failed"
            return self._outcome
        loop = asyncio.get_running_loop()
        handshake_id = self.endpoint_id
        if self.faults.on("uds.handshake_wrong_endpoint_id"):
            handshake_id += "-wrong"
        machine = UDSConnection(UDSRole.CLIENT, handshake_id,
                                handshake_timeout=self.handshake_timeout)
        self._conn, self._machine, self.conn_id = conn, machine, conn.conn_id
        self.peer_endpoint_id = None
        self._decoder = self._new_decoder()
        self._early = []
        self._outcome = "failed"
        try:
            if self.faults.on("uds.record_before_handshake"):
                to_id = next(iter(self.controllers), "")
                await self._write(encode_record(self._connect_record(to_id)))
            await self._apply(machine.start(loop.time()))
            while not machine.closed and not conn.closing:
                waiting = (machine.peer_endpoint_id is None
                           and not self.faults.on("uds.no_handshake_timeout"))
                deadline = machine.deadline if waiting else None
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
                await self._on_data(data, loop.time())
        finally:
            handshaken, self._open = self._open, False
            self._outcome = "lost" if handshaken else "failed"
            await conn.close()
            conn.record("conn.close", direction="out")
            if handshaken:
                self._notify_disconnected()
        return self._outcome

    def _new_decoder(self) -> UDSDecoder:
        limit = 0xFFFF if self.faults.on("uds.max_frame_64k") else DEFAULT_MAX_FRAME_SIZE
        return UDSDecoder(max_frame_size=limit)

    # ------------------------------------------------------------------ receiving

    async def _on_data(self, data: bytes, now: float) -> None:
        machine = self._machine
        assert machine is not None
        if self.faults.on("uds.one_read_per_frame"):
            self._decoder = self._new_decoder()  # what an unfinished frame left is lost
        try:
            frames, error = self._decoder.feed(data), None
        except UDSDecodeError as exc:
            frames, error = exc.events, exc
        for frame in frames:
            self._record_frame("in", frame)
            raw = await self._screen(frame)
            if raw is not None:
                await self._apply(machine.receive_data(raw, now))
            if machine.closed or self._conn is None or self._conn.closing:
                return
        if error is not None:  # R-UDS.24
            self._record("uds.violation", direction="in", conn_id=self.conn_id, raw=data,
                         decoded={"violations": [{"rule": error.rule, "message": error.reason}]})
            reason = f"cannot parse frame ({error.rule}): {error.reason}"
            if self.faults.on("uds.bad_frame_no_error"):
                await self._close_silently(reason, "R-UDS.24")
            elif self.faults.on("uds.bad_frame_keeps_connection"):
                await self._write(encode_error(reason))
                self._decoder = self._new_decoder()
            else:
                await self._apply(machine.fail(reason, "R-UDS.24"))

    async def _screen(self, frame: UDSFrame) -> bytes | None:
        """What the state machine gets of a received frame: the frame itself, except where
        an active fault handles it differently (None: nothing)."""
        machine = self._machine
        assert machine is not None
        on = self.faults.on
        if frame.unknown and on("uds.unknown_tlv_error"):
            await self._apply(machine.fail(f"unknown TLV type {frame.unknown[0].type}",
                                           "R-UDS.15"))
            return None
        if frame.unknown and on("uds.unknown_tlv_drops_frame"):
            self._ignored("frame with an unknown TLV dropped whole (fault)", "R-UDS.15")
            return None
        if frame.handshakes and machine.peer_endpoint_id is not None \
                and on("uds.repeated_handshake_error"):
            await self._apply(machine.fail("unexpected Handshake", "R-UDS.19"))
            return None
        if frame.handshakes and machine.peer_endpoint_id is None \
                and endpoint_id_problem(frame.handshakes[0].value) is not None \
                and on("uds.bad_handshake_no_error"):
            await self._close_silently("cannot process the Handshake", "R-UDS.21")
            return None
        if frame.errors and on("uds.error_ignored"):
            self._ignored("Error TLV ignored (fault)", "R-UDS.25")
            rest = [t for t in frame.tlvs if t.type != TLVType.ERROR]
            return encode_frame(rest) if rest else None
        if frame.records and not machine.is_open and on("uds.early_record_processed"):
            self._early += [t.value for t in frame.records]
        return frame.raw

    def _record_frame(self, direction: str, frame: UDSFrame) -> None:
        summary = describe_frame(frame)
        names = ",".join(t["name"] for t in summary["tlvs"]) or "no TLV"
        self._record("uds.frame", direction=direction, conn_id=self.conn_id, raw=frame.raw,
                     decoded=summary, note=names)

    def _ignored(self, reason: str, rule: str) -> None:
        self._record("uds.ignored", direction="local", conn_id=self.conn_id,
                     decoded={"reason": reason, "rule": rule}, note=f"{reason} [{rule}]")

    async def _close_silently(self, reason: str, rule: str) -> None:
        """Close without the Error TLV the rule asks for (faults only)."""
        await self._apply([Close(f"{reason} (no Error TLV: fault)", rule)])

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
                self._ignored(action.reason, action.rule)

    async def _handshake_done(self, peer_id: str) -> None:
        self.peer_endpoint_id = peer_id
        self._open = True
        self._backoff.reset()
        self._record("uds.handshake_done", direction="local", conn_id=self.conn_id,
                     decoded={"peer_endpoint_id": peer_id})
        if self.connection_count > 0 and self.faults.on("uds.connect_record_first_connection_only"):
            self._record("uds.connect_record", direction="local", conn_id=self.conn_id,
                         decoded={"to_id": peer_id, "sent": False}, note="skipped (fault)")
        else:
            try:  # R-MTP.6: the UDSConnect Record before anything else
                await self._send_record(self._connect_record(peer_id), msg=False)
            except ConnectionError:
                return
            self._record("uds.connect_record", direction="out", conn_id=self.conn_id,
                         decoded={"to_id": peer_id})
        self._notify_connected()
        early, self._early = self._early, []
        for data in early:  # uds.early_record_processed only
            await self._on_record(data)

    async def _on_record(self, data: bytes) -> None:
        machine = self._machine
        assert machine is not None
        if not self.decodable(data):  # R-UDS.23
            if self.faults.on("uds.bad_record_no_error"):
                self._ignored("USP Record that cannot be extracted dropped (fault)", "R-UDS.23")
            elif self.faults.on("uds.bad_record_keeps_connection"):
                await self._write(encode_error("cannot extract the USP Record"))
            else:
                await self._apply(machine.fail("cannot extract the USP Record", "R-UDS.23"))
            return
        self._deliver(data, Route(self.name, self.conn_id or "", None, self.peer_endpoint_id))

    # ------------------------------------------------------------------ sending

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
        if not self.connected or self._machine is None:
            raise MTPNotConnected("uds: no handshaken connection")
        if to_id != self.peer_endpoint_id:
            raise NoRoute(f"uds: connected to {self.peer_endpoint_id!r}, not {to_id!r}")
        await self._send_record(bytes(data))

    async def _send_record(self, data: bytes, *, msg: bool = True) -> None:
        """One Record in a Type 3 TLV (R-UDS.14, R-UDS.22); ``msg``: a Record carrying a
        USP Msg (not the UDSConnect Record), whose frames the framing faults break."""
        machine = self._machine
        if machine is None or not machine.is_open:
            raise MTPNotConnected("uds: handshake not complete (R-UDS.20)")
        for frame in (self._msg_frames(data) if msg else [encode_record(data)]):
            await self._write(frame)

    def _msg_frames(self, data: bytes) -> list[bytes]:
        """The frames carrying a USP Msg Record, as the active framing faults spoil them."""
        on = self.faults.on
        frames = [encode_raw_frame(b"")] if on("uds.empty_frame") else []
        short = on("uds.length_16_bit")
        tlv_len = len(data) & 0xFFFF if short else len(data)
        order: Literal["little", "big"] = "little" if on("uds.tlv_length_little_endian") else "big"
        tlv_type = 4 if on("uds.record_tlv_wrong_type") else int(TLVType.USP_RECORD)
        payload = bytes([tlv_type]) + tlv_len.to_bytes(4, order) + data
        length = len(payload) + (HEADER_SIZE if on("uds.frame_length_counts_header") else 0)
        if short:
            length &= 0xFFFF
        sync = b"_usp" if on("uds.frame_bad_sync") else SYNC
        frames.append(sync + length.to_bytes(4, "big") + payload)
        return frames
