"""One suite-side UDS MTP connection driven over asyncio (server or client role).

:class:`UDSPeer` owns the socket of one connection and runs the sans-I/O
:class:`~conformance.mtp.uds.session.UDSConnection` on it: it feeds received
bytes frame by frame, carries out the returned actions, arms a timer on the
handshake deadline (no polling), and records everything on the timeline:

* ``uds.frame``      every frame in/out: raw bytes + :func:`describe_frame`
* ``uds.violation``  what the EUT sent wrong: ``{"violations": [{rule, message}]}``
* ``uds.handshake_done`` / ``uds.handshake_failed``
* ``uds.error``      Error TLVs received (``in``) or sent (``out``)
* ``uds.ignored``    TLVs ignored per R-UDS.15/19/20
* ``uds.closed``     who closed the connection and why
* ``uds.scenario``   every deviation taken because of a :class:`UDSScenario`
  (``frame_before_record``, ``tlvs_before_record``, ``early_record``,
  ``write_chunk``, ``keep_open_after_error``, ``malformed_handshake``, ...)

The endpoint that owns the peer (``UDSServer`` / ``UDSClient`` in
:mod:`conformance.mtp.uds.server`) implements :class:`PeerOwner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, fields
from typing import Any, Protocol

from conformance.mtp.binding import InboundRecord
from conformance.mtp.transport import Connection
from conformance.mtp.uds.codec import (
    UDSDecoder,
    decode_frame,
    encode_error,
    encode_handshake,
    encode_raw_frame,
    encode_record,
    encode_tlv,
)
from conformance.mtp.uds.frames import (
    HEADER_SIZE,
    TLV,
    TLVType,
    UDSDecodeError,
    UDSFrame,
)
from conformance.mtp.uds.script import (
    FrameSpecError,
    frame_bytes,
    frames_bytes,
    tlv_bytes,
)
from conformance.mtp.uds.session import (
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
from conformance.mtp.uds.validate import is_usp_record, validate_frame

__all__ = ["MTP", "PeerOwner", "UDSPeer", "UDSScenario", "describe_frame", "describe_tlv",
           "scenario_fields"]

MTP = "uds"
#: Bytes asked for per socket read.
READ_SIZE = 64 * 1024
#: Longest Handshake/Error text kept in a timeline summary.
_TEXT_LIMIT = 500
#: msg_id of the Get the ``early_record`` scenario sends before our Handshake.
EARLY_RECORD_MSG_ID = "uds-early-record"


@dataclass(frozen=True)
class UDSScenario:
    """Deviations the suite endpoint applies to connections (set at any time).

    Fields are read when the moment comes (connect, our Handshake, handshake
    completion, each outgoing Record, each write), so a new scenario affects
    the next such moment.  Every deviation taken is recorded as ``uds.scenario``.
    Fields holding wire data also take the YAML-friendly frame and TLV specs
    of :mod:`conformance.mtp.uds.script` (converted here, FrameSpecError if
    bad); other bad values are a ValueError.
    """

    #: Never send our Handshake (the peer client should give up, R-UDS.18).
    withhold_handshake: bool = False
    #: Raw bytes sent instead of our Handshake frame (malformed Handshake, R-UDS.21).
    handshake_frame: bytes | None = None
    #: Seconds to wait before sending our Handshake.
    handshake_delay: float = 0.0
    #: Error TLV text sent as soon as the connection exists (R-UDS.25 at the peer).
    error_on_connect: str | None = None
    #: Error TLV text sent once the handshake completed (R-UDS.25 at the peer).
    error_after_handshake: str | None = None
    #: Close the connection right after the handshake (peer client retries, R-UDS.5).
    close_after_handshake: bool = False
    #: Seconds to wait before each outgoing USP Record frame.
    record_delay: float = 0.0
    #: Frames written just before each outgoing USP Record frame (unknown TLVs,
    #: R-UDS.15; a repeated Handshake, R-UDS.19; unparseable frames, R-UDS.24).
    frames_before_record: tuple[bytes, ...] = ()
    #: Encoded TLVs put in front of the Record TLV inside each outgoing Record frame.
    tlvs_before_record: tuple[bytes, ...] = ()
    #: Server role: send a NoSessionContext Record holding a Get to the client
    #: after its Handshake and before ours (the client must ignore it, R-UDS.20).
    early_record: bool = False
    #: Close the connection when the peer sends an Error TLV (R-UDS.25); False
    #: keeps it open so that the peer's own termination can be observed (R-UDS.23/24).
    close_on_error: bool = True
    #: Write every outgoing frame in pieces of at most this many octets (0: whole),
    #: pausing :attr:`chunk_pause` seconds between pieces (stream reassembly, R-UDS.4).
    write_chunk: int = 0
    chunk_pause: float = 0.02
    #: Server: close the next N accepted connections at once, before any Handshake
    #: (counted down as they come; the peer client retries, R-UDS.5).
    drop_connections: int = 0
    #: Server: False stops listening and removes the socket file (open connections
    #: are closed); True listens again (``uds.listening`` on the timeline, R-UDS.5).
    listening: bool = True

    def __post_init__(self) -> None:
        if self.handshake_frame is not None:
            _set(self, "handshake_frame", frame_bytes(self.handshake_frame))
        _set(self, "frames_before_record", frames_bytes(self.frames_before_record))
        _set(self, "tlvs_before_record",
             tuple(tlv_bytes(t) for t in _items(self.tlvs_before_record, "tlvs_before_record")))
        for name in ("handshake_delay", "record_delay", "chunk_pause"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
        for name in ("write_chunk", "drop_connections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, not {value!r}")
        for name in ("withhold_handshake", "close_after_handshake", "early_record",
                     "close_on_error", "listening"):
            if not isinstance(getattr(self, name), bool):  # one error type: ValueError
                raise ValueError(  # noqa: TRY004
                    f"{name} must be true or false, not {getattr(self, name)!r}")
        for name in ("error_on_connect", "error_after_handshake"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be text or null, not {value!r}")

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (wire data as hex) for the timeline."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bytes):
                value = value[:256].hex()
            elif isinstance(value, tuple):
                value = [v[:256].hex() for v in value]
            out[f.name] = value
        return out


def _set(scenario: UDSScenario, name: str, value: Any) -> None:
    object.__setattr__(scenario, name, value)  # normalising a frozen dataclass


def _items(value: Any, name: str) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, (list, tuple)):
        raise FrameSpecError(f"{name} must be a list, not {type(value).__name__}")
    return tuple(value)


def scenario_fields() -> tuple[str, ...]:
    """Names a scenario step may set on the UDS server."""
    return tuple(f.name for f in fields(UDSScenario))


class PeerOwner(Protocol):
    """What a :class:`UDSPeer` needs from the endpoint that runs it."""

    endpoint_id: str
    handshake_timeout: float
    max_frame_size: int
    scenario: UDSScenario

    def _peer_handshaken(self, peer: UDSPeer) -> None: ...

    def _peer_closed(self, peer: UDSPeer) -> None: ...

    def _deliver(self, record: InboundRecord) -> None: ...


def describe_tlv(tlv: TLV) -> dict[str, Any]:
    """JSON-able summary of one TLV (never raises)."""
    out: dict[str, Any] = {"type": tlv.type, "length": len(tlv.value)}
    try:
        out["name"] = TLVType(tlv.type).name
    except ValueError:
        out["name"] = "UNKNOWN"
    if tlv.type in (TLVType.HANDSHAKE, TLVType.ERROR):
        out["text"] = tlv.value[:_TEXT_LIMIT * 4].decode("utf-8", "replace")[:_TEXT_LIMIT]
    elif tlv.type == TLVType.USP_RECORD:
        out["record"] = _record_summary(tlv.value)
    else:
        out["value_hex"] = tlv.value[:64].hex()
    return out


def _record_summary(data: bytes) -> dict[str, Any] | None:
    if not is_usp_record(data):
        return None
    from conformance.usp.records import parse_record, record_kind

    rec = parse_record(data)
    return {"kind": record_kind(rec), "version": rec.version,
            "to_id": rec.to_id, "from_id": rec.from_id}


def describe_frame(frame: UDSFrame) -> dict[str, Any]:
    """JSON-able summary of a decoded frame: declared length and its TLVs."""
    length = len(frame.raw) - HEADER_SIZE if frame.raw is not None else None
    return {"length": length, "tlvs": [describe_tlv(t) for t in frame.tlvs]}


def _describe_wire(data: bytes) -> dict[str, Any]:
    """Summary of bytes we send, which may be malformed on purpose."""
    try:
        return describe_frame(decode_frame(data))
    except UDSDecodeError as exc:
        return {"undecodable": exc.reason, "rule": exc.rule}


class UDSPeer:
    """The suite's side of one UDS connection; :meth:`run` until it closes."""

    def __init__(self, conn: Connection, role: UDSRole | str, owner: PeerOwner) -> None:
        self.conn = conn
        self.role = UDSRole(role)
        self.owner = owner
        self.machine = UDSConnection(self.role, owner.endpoint_id,
                                     handshake_timeout=owner.handshake_timeout,
                                     max_frame_size=owner.max_frame_size)
        self.handshake_done = asyncio.Event()
        self.closed = asyncio.Event()
        #: ``{"by": "suite"|"peer", "reason": ..., "rule": ...}`` once closed.
        self.close_info: dict[str, Any] | None = None
        self._decoder = UDSDecoder(max_frame_size=owner.max_frame_size)
        self._our_handshake = encode_handshake(owner.endpoint_id)
        self._deadline: float | None = None
        self._unframed = bytearray()
        self._write_lock = asyncio.Lock()

    # ------------------------------------------------------------------ state

    @property
    def conn_id(self) -> str:
        return self.conn.conn_id

    @property
    def peer_endpoint_id(self) -> str | None:
        """The Endpoint ID from the peer's Handshake, once received."""
        return self.machine.peer_endpoint_id

    @property
    def is_open(self) -> bool:
        """Handshake completed both ways and the socket is still usable."""
        return self.machine.is_open and self.close_info is None and not self.conn.closing

    # ------------------------------------------------------------------ sending

    async def send_record(self, record: bytes) -> None:
        """Send a USP Record TLV (R-UDS.22); RuntimeError before the handshake,
        ConnectionError if the socket is gone."""
        if self.close_info is not None:
            raise ConnectionError(f"{self.conn_id} is closed")
        actions = self.machine.send_record(record)
        scenario = self.owner.scenario
        delay = scenario.record_delay
        if delay > 0:
            self._scenario("record_delay", seconds=delay)
            await asyncio.sleep(delay)
            if self.close_info is not None:
                raise ConnectionError(f"{self.conn_id} closed during the record delay")
        for n, frame in enumerate(scenario.frames_before_record):
            self._scenario("frame_before_record", frame_hex=frame[:256].hex())
            if not await self._scripted_write(frame, first=n == 0):
                return
        first = not scenario.frames_before_record
        if scenario.tlvs_before_record:
            self._scenario("tlvs_before_record", count=len(scenario.tlvs_before_record))
            payload = b"".join(scenario.tlvs_before_record) + encode_tlv(TLVType.USP_RECORD, record)
            await self._scripted_write(encode_raw_frame(payload), first=first)
            return
        if first:
            await self._apply(actions)
            return
        for action in actions:  # the Send of the Record frame
            if isinstance(action, Send):
                await self._scripted_write(action.data, first=False)

    async def _scripted_write(self, data: bytes, *, first: bool) -> bool:
        """Write part of a scripted send; once something was written, a peer that closed
        meanwhile (e.g. on the frame the scenario put first) only loses the rest, recorded
        as ``record_lost``: what the peer did is for the case to judge. False if lost."""
        if first:
            await self._write(data)
            return True
        try:
            await self._write(data)
        except (ConnectionError, OSError) as exc:
            self._scenario("record_lost", reason=str(exc)[:200] or type(exc).__name__)
            return False
        return True

    async def send_error(self, message: str) -> None:
        """Send an Error TLV now, leaving the connection open (scenario action)."""
        self._scenario("send_error", message=message)
        await self._write(encode_error(message))

    async def send_raw(self, data: bytes, *, note: str | None = None) -> None:
        """Send arbitrary bytes (hand-built or malformed frames; scenario action)."""
        self._scenario("send_raw", length=len(data), note=note)
        await self._write(bytes(data))

    async def close(self, reason: str = "closed by the suite", rule: str | None = None) -> None:
        """Close the connection from our side (idempotent)."""
        await self._close_local(reason, rule)

    async def wait_closed(self, timeout: float) -> dict[str, Any]:
        """Wait until the connection is closed; returns :attr:`close_info`."""
        await asyncio.wait_for(self.closed.wait(), timeout)
        assert self.close_info is not None
        return self.close_info

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        """Handshake, then receive until either side closes; never raises ConnectionError."""
        loop = asyncio.get_running_loop()
        try:
            await self._on_connect(loop)
            while self.close_info is None:
                deadline = self._deadline if not self.handshake_done.is_set() else None
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await self.conn.reader.read(READ_SIZE)
                except TimeoutError:
                    await self._on_deadline(loop.time())
                    continue
                if not data:
                    self._peer_gone("peer closed the connection")
                    break
                await self._on_data(data, loop.time())
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self._peer_gone(f"connection lost: {exc}")
        finally:
            if self.close_info is None:  # cancelled (endpoint shutting down)
                self._set_closed("suite", "endpoint stopped", None)
            await self.conn.close()

    async def _on_connect(self, loop: asyncio.AbstractEventLoop) -> None:
        scenario = self.owner.scenario
        if scenario.error_on_connect is not None:
            self._scenario("error_on_connect", message=scenario.error_on_connect)
            await self._write(encode_error(scenario.error_on_connect))
        if self.role is UDSRole.CLIENT:
            if scenario.handshake_delay > 0:  # before start(): the R-UDS.18 timer runs from our send
                self._scenario("handshake_delay", seconds=scenario.handshake_delay)
                await asyncio.sleep(scenario.handshake_delay)
            actions = self.machine.start(loop.time())
            self._deadline = self.machine.deadline
            await self._apply(actions, delayed=True)
        else:
            # The state machine keeps no server-side deadline; a client that never
            # sends its Handshake breaks R-UDS.16, so give up after the same time.
            self._deadline = loop.time() + self.owner.handshake_timeout

    async def _on_deadline(self, now: float) -> None:
        if self.role is UDSRole.CLIENT:
            await self._apply(self.machine.poll(now))  # Close (R-UDS.18) once the deadline passed
        else:
            await self._close_local(
                f"no Handshake from the client within {self.owner.handshake_timeout:g} s",
                "R-UDS.16")

    async def _on_data(self, data: bytes, now: float) -> None:
        self._unframed += data  # mirrors the decoder's buffer, to show bad bytes whole
        try:
            frames, error = self._decoder.feed(data), None
        except UDSDecodeError as exc:
            frames, error = exc.events, exc
        for frame in frames:
            del self._unframed[:len(frame.raw or b"")]
            self._record_frame_in(frame)
            await self._apply(self.machine.receive_data(frame.raw or b"", now))
            if self.close_info is not None:
                return
        if error is not None:
            self.conn.record("uds.frame", direction="in", raw=bytes(self._unframed),
                             decoded={"undecodable": error.reason, "rule": error.rule,
                                      "offset": error.offset},
                             note=f"unparseable frame [{error.rule}]")
            self._violations([{"rule": error.rule, "message": error.reason}])
            await self._apply(self.machine.fail(
                f"cannot parse frame ({error.rule}): {error.reason}", "R-UDS.24"))

    def _record_frame_in(self, frame: UDSFrame) -> None:
        summary = describe_frame(frame)
        names = ",".join(t["name"] for t in summary["tlvs"]) or "no TLV"
        self.conn.record("uds.frame", direction="in", raw=frame.raw, decoded=summary, note=names)
        violations = validate_frame(frame)
        if violations:
            self._violations([{"rule": v.rule, "message": v.message} for v in violations])

    # ------------------------------------------------------------------ actions

    async def _apply(self, actions: list[Action], *, delayed: bool = False) -> None:
        for action in actions:
            if self.close_info is not None and not isinstance(action, Close):
                return
            if isinstance(action, Send):
                await self._send_from_machine(action.data, delayed=delayed)
            elif isinstance(action, Close):
                if action.rule == "R-UDS.25" and not self.owner.scenario.close_on_error:
                    # the peer's Error is not answered by a close: watch what the peer does
                    self._scenario("keep_open_after_error")
                    continue
                await self._close_local(action.reason, action.rule)
            elif isinstance(action, HandshakeDone):
                await self._on_handshake_done(action.peer_endpoint_id)
            elif isinstance(action, RecordReceived):
                await self._on_record(action.record)
            elif isinstance(action, PeerError):
                self.conn.record("uds.error", direction="in", decoded={"message": action.message},
                                 note="peer sent Error TLV")
            elif isinstance(action, Ignored):
                self.conn.record("uds.ignored", direction="local",
                                 decoded={"reason": action.reason, "rule": action.rule,
                                          "tlv_type": None if action.tlv is None else action.tlv.type},
                                 note=f"{action.reason} [{action.rule}]")

    async def _send_from_machine(self, data: bytes, *, delayed: bool) -> None:
        if data == self._our_handshake:
            scenario = self.owner.scenario
            if scenario.early_record and self.role is UDSRole.SERVER:
                await self._send_early_record()
            if scenario.withhold_handshake:
                self._scenario("withhold_handshake")
                return
            if scenario.handshake_delay > 0 and not delayed:
                self._scenario("handshake_delay", seconds=scenario.handshake_delay)
                await asyncio.sleep(scenario.handshake_delay)
            if scenario.handshake_frame is not None:
                self._scenario("malformed_handshake", frame_hex=scenario.handshake_frame[:256].hex())
                data = scenario.handshake_frame
        await self._write(data)

    async def _send_early_record(self) -> None:
        """A Get in a NoSessionContext Record before our Handshake (R-UDS.20 at the peer)."""
        from conformance.usp import messages, records

        msg = messages.request("get", {"param_paths": ["Device.LocalAgent.EndpointID"]},
                               msg_id=EARLY_RECORD_MSG_ID)
        rec = records.no_session_record(msg, to_id=self.peer_endpoint_id or "",
                                        from_id=self.owner.endpoint_id)
        self._scenario("early_record", msg_id=EARLY_RECORD_MSG_ID)
        await self._write(encode_record(records.serialize(rec)))

    async def _on_handshake_done(self, peer_id: str) -> None:
        self.conn.record("uds.handshake_done", direction="local",
                         decoded={"peer_endpoint_id": peer_id, "role": self.role.value},
                         note=f"handshake with {peer_id}")
        self.handshake_done.set()
        self.owner._peer_handshaken(self)
        scenario = self.owner.scenario
        if scenario.error_after_handshake is not None:
            self._scenario("error_after_handshake", message=scenario.error_after_handshake)
            await self._write(encode_error(scenario.error_after_handshake))
        if scenario.close_after_handshake:
            self._scenario("close_after_handshake")
            await self._close_local("scenario: close after handshake", None)

    async def _on_record(self, record: bytes) -> None:
        if not is_usp_record(record):  # already reported as an R-UDS.22 violation
            await self._apply(self.machine.fail("cannot extract the USP Record", "R-UDS.23"))
            return
        self.owner._deliver(InboundRecord(
            data=record, mtp=MTP, conn_id=self.conn_id, received_at=time.monotonic(),
            meta={"peer_endpoint_id": self.peer_endpoint_id, "role": self.role.value}))

    # ------------------------------------------------------------------ helpers

    async def _write(self, data: bytes) -> None:
        async with self._write_lock:
            summary = _describe_wire(data)
            names = ",".join(t["name"] for t in summary.get("tlvs", [])) or "malformed"
            self.conn.record("uds.frame", direction="out", raw=data, decoded=summary, note=names)
            for tlv in summary.get("tlvs", []):
                if tlv["name"] == "ERROR":
                    self.conn.record("uds.error", direction="out", decoded={"message": tlv["text"]},
                                     note="suite sent Error TLV")
            chunk, pause = self.owner.scenario.write_chunk, self.owner.scenario.chunk_pause
            if chunk <= 0 or len(data) <= chunk:
                await self.conn.write(data)
                return
            self._scenario("write_chunk", octets=chunk, pieces=-(-len(data) // chunk))
            await self.conn.write(data[:chunk])
            for start in range(chunk, len(data), chunk):
                await asyncio.sleep(pause)  # separate reads at the peer
                try:
                    await self.conn.write(data[start:start + chunk])
                except (ConnectionError, OSError) as exc:  # the peer gave up on a part-frame
                    self._scenario("write_chunk_aborted", at=start,
                                   reason=str(exc)[:200] or type(exc).__name__)
                    return

    def _scenario(self, action: str, **details: Any) -> None:
        decoded = {"action": action, **{k: v for k, v in details.items() if v is not None}}
        self.conn.record("uds.scenario", direction="local", decoded=decoded,
                         note=f"scenario: {action}")

    def _violations(self, items: list[dict[str, str]]) -> None:
        self.conn.record("uds.violation", direction="in", decoded={"violations": items},
                         note="; ".join(f"[{v['rule']}] {v['message']}" for v in items)[:300])

    def _set_closed(self, by: str, reason: str, rule: str | None) -> bool:
        if self.close_info is not None:
            return False
        self.close_info = {"by": by, "reason": reason, "rule": rule}
        if not self.handshake_done.is_set():
            self.conn.record("uds.handshake_failed", direction="local",
                             decoded={"reason": reason, "rule": rule, "by": by},
                             note=f"handshake failed: {reason}")
        self.conn.record("uds.closed", direction="local", decoded=dict(self.close_info),
                         note=f"closed by {by}: {reason}")
        self.owner._peer_closed(self)
        self.closed.set()
        return True

    async def _close_local(self, reason: str, rule: str | None) -> None:
        if self._set_closed("suite", reason, rule):
            with contextlib.suppress(Exception):
                await self.conn.close()

    def _peer_gone(self, reason: str) -> None:
        self._set_closed("peer", reason, None)
