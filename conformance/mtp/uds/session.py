"""Sans-I/O UDS connection state machine: the Handshake exchange and the
receive-side rules of TR-369 "UNIX Domain Socket Binding".

The caller owns the socket and the clock: it passes received bytes and the
current time in and carries out the returned actions (``Send`` bytes,
``Close`` the socket, hand ``RecordReceived`` to the USP layer).

* Client: ``start`` sends its Handshake (R-UDS.16) and arms a 30 s deadline
  for the server's Handshake (R-UDS.18, checked by ``poll``).
* Server: answers the client's Handshake with its own (R-UDS.17).
* A Handshake that cannot be processed gets an Error frame (R-UDS.21); this
  machine then also closes, since no USP Record can follow.
* Records before the handshake completes are ignored (R-UDS.20); so are a
  repeated Handshake (R-UDS.19, whose text says "Type 2 (Handshake)": read
  here as an unexpected Type 1) and unknown TLV types (R-UDS.15).
* An unparseable frame gets an Error frame and a close (R-UDS.24); a
  received Error closes the connection (R-UDS.25); a record the caller
  cannot extract is refused with ``fail`` (R-UDS.23).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from conformance.mtp.uds.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    UDSDecoder,
    encode_error,
    encode_handshake,
    encode_record,
)
from conformance.mtp.uds.frames import TLV, TLVType, UDSDecodeError, UDSFrame
from conformance.mtp.uds.validate import endpoint_id_problem

#: Seconds a client waits for the server's Handshake (R-UDS.18).
HANDSHAKE_TIMEOUT = 30.0


class UDSRole(StrEnum):
    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Close:
    reason: str
    rule: str


@dataclass(frozen=True)
class HandshakeDone:
    peer_endpoint_id: str


@dataclass(frozen=True)
class RecordReceived:
    record: bytes


@dataclass(frozen=True)
class PeerError:
    """The peer sent an Error TLV (decoded with replacement characters)."""

    message: str


@dataclass(frozen=True)
class Ignored:
    reason: str
    rule: str
    tlv: TLV | None = None


Action = Send | Close | HandshakeDone | RecordReceived | PeerError | Ignored


class UDSConnection:
    """One end of a UDS MTP connection, as client or server."""

    def __init__(self, role: UDSRole | str, endpoint_id: str, *,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.role = UDSRole(role)
        self.endpoint_id = endpoint_id
        self.handshake_timeout = handshake_timeout
        self.peer_endpoint_id: str | None = None
        self.deadline: float | None = None
        self.closed = False
        self._sent_handshake = False
        self._decoder = UDSDecoder(max_frame_size=max_frame_size)

    @property
    def is_open(self) -> bool:
        """Handshake finished both ways and not closed: records may flow."""
        return self._sent_handshake and self.peer_endpoint_id is not None and not self.closed

    def start(self, now: float) -> list[Action]:
        """Call once the socket is connected; the client sends first."""
        if self.role is UDSRole.SERVER or self._sent_handshake or self.closed:
            return []
        self._sent_handshake = True
        self.deadline = now + self.handshake_timeout
        return [Send(encode_handshake(self.endpoint_id))]

    def poll(self, now: float) -> list[Action]:
        """Close a client whose Handshake was not answered in time (R-UDS.18)."""
        if self.closed or self.deadline is None or self.peer_endpoint_id is not None:
            return []
        if now < self.deadline:
            return []
        return self._close("no Handshake from the server in time", "R-UDS.18")

    def send_record(self, record: bytes) -> list[Action]:
        """Frame a USP Record for sending (R-UDS.22); only once open."""
        if not self.is_open:
            raise RuntimeError("UDS handshake not complete (R-UDS.20)")
        return [Send(encode_record(record))]

    def fail(self, reason: str, rule: str = "R-UDS.23") -> list[Action]:
        """Send an Error frame and close (R-UDS.21/23/24)."""
        if self.closed:
            return []
        return [Send(encode_error(reason)), *self._close(reason, rule)]

    def receive_data(self, data: bytes, now: float) -> list[Action]:
        """Feed received bytes; returns what to do about them."""
        if self.closed:
            return []
        if self.role is UDSRole.CLIENT and not self._sent_handshake:
            raise RuntimeError("client must call start() before receiving")
        try:
            frames = self._decoder.feed(data)
            error = None
        except UDSDecodeError as exc:
            frames, error = exc.events, exc
        actions: list[Action] = []
        for frame in frames:
            actions += self._on_frame(frame)
            if self.closed:
                return actions
        if error is not None:
            actions += self.fail(f"cannot parse frame ({error.rule}): {error.reason}", "R-UDS.24")
        return actions

    def _close(self, reason: str, rule: str) -> list[Action]:
        self.closed = True
        return [Close(reason, rule)]

    def _on_frame(self, frame: UDSFrame) -> list[Action]:
        if not frame.tlvs:
            return [Ignored("frame without TLV", "R-UDS.6")]
        actions: list[Action] = []
        for tlv in frame.tlvs:
            actions += self._on_tlv(tlv)
            if self.closed:
                break
        return actions

    def _on_tlv(self, tlv: TLV) -> list[Action]:
        if tlv.type == TLVType.ERROR:
            text = tlv.value.decode("utf-8", "replace")
            return [PeerError(text), *self._close(f"peer sent Error: {text[:200]}", "R-UDS.25")]
        if tlv.type == TLVType.HANDSHAKE:
            return self._on_handshake(tlv)
        if tlv.type == TLVType.USP_RECORD:
            if not self.is_open:
                return [Ignored("USP Record before the handshake completed", "R-UDS.20", tlv)]
            return [RecordReceived(tlv.value)]
        return [Ignored(f"unknown TLV type {tlv.type}", "R-UDS.15", tlv)]

    def _on_handshake(self, tlv: TLV) -> list[Action]:
        if self.peer_endpoint_id is not None:
            return [Ignored("unexpected Handshake after the handshake", "R-UDS.19", tlv)]
        problem = endpoint_id_problem(tlv.value)
        if problem is not None:
            return self.fail(f"cannot process Handshake: {problem}", "R-UDS.21")
        self.peer_endpoint_id = tlv.text()
        actions: list[Action] = []
        if self.role is UDSRole.SERVER:
            self._sent_handshake = True
            actions.append(Send(encode_handshake(self.endpoint_id)))
        actions.append(HandshakeDone(self.peer_endpoint_id))
        return actions
