"""Sans-I/O WebSocket connection state machine for both roles (RFC 6455 5-7).

``receive_data(bytes) -> [events]`` decodes, checks and reassembles peer
traffic; ``send_message`` / ``ping`` / ``pong`` / ``close`` / ``send_frame``
return the bytes to write. Replies the connection makes by itself (an
automatic Pong, the Close echo, the Close that fails a connection) are
queued: write ``data_to_send()`` after every ``receive_data`` call.

Peer bytes never raise: broken rules become :class:`~.events.ProtocolViolation`
events carrying the close code RFC 6455 7.4.1 assigns. :class:`WSUsageError`
is raised only when the caller misuses the API. Randomness for client masks
comes from the ``random_bytes`` callable passed in.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable
from enum import Enum

from .errors import Violation, WSUsageError
from .events import CloseReceived, ConnectionClosed, Event, FrameReceived, Message, Ping, Pong, ProtocolViolation
from .frames import (
    DEFAULT_MAX_FRAME_PAYLOAD,
    MAX_CONTROL_PAYLOAD,
    CloseInfo,
    Frame,
    FrameDecoder,
    Opcode,
    encode_close_payload,
    encode_frame,
    frame_violations,
    is_valid_close_code,
    parse_close_payload,
)

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "ConnectionState", "Role", "WSConnection"]

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class ConnectionState(Enum):
    """Closing-handshake progress (RFC 6455 7.1)."""

    OPEN = "open"
    CLOSE_SENT = "close-sent"  # our Close is out, the peer's not yet in
    CLOSE_RECEIVED = "close-received"  # the peer's Close is in, ours not yet out
    CLOSED = "closed"


class WSConnection:
    """One WebSocket connection after the opening handshake.

    Options: ``auto_pong`` answers Pings (False withholds them, to test a
    peer's keep-alive, R-WS.17); ``auto_close_reply`` echoes the peer's
    Close; ``close_on_violation`` fails the connection on the first broken
    rule (False keeps decoding where possible and only reports);
    ``binary_only`` reports text messages as R-WS.14 breaches with close
    code 1003 (R-WS.16); ``allowed_rsv`` holds RSV bits of negotiated
    extensions; ``emit_frames`` adds a FrameReceived event per frame.
    """

    def __init__(
        self,
        role: Role | str,
        *,
        auto_pong: bool = True,
        auto_close_reply: bool = True,
        close_on_violation: bool = True,
        binary_only: bool = False,
        allowed_rsv: int = 0,
        emit_frames: bool = False,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_payload: int = DEFAULT_MAX_FRAME_PAYLOAD,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        try:
            self.role = Role(role)
        except ValueError:
            raise WSUsageError(f"role must be 'client' or 'server', not {role!r}") from None
        self.auto_pong = auto_pong
        self.auto_close_reply = auto_close_reply
        self.close_on_violation = close_on_violation
        self.binary_only = binary_only
        self.allowed_rsv = allowed_rsv
        self.emit_frames = emit_frames
        self.max_message_size = max_message_size
        self._random = random_bytes
        self.state = ConnectionState.OPEN
        #: The violation that stopped decoding, if any.
        self.failure: ProtocolViolation | None = None
        #: (code, reason) of the Close we sent.
        self.close_sent: tuple[int | None, str] | None = None
        #: The peer's Close, decoded.
        self.close_received: CloseInfo | None = None
        #: Payloads of our Pings not answered by a Pong yet, oldest first.
        self.outstanding_pings: list[bytes] = []
        self._decoder = FrameDecoder(max_frame_payload)
        self._out = bytearray()
        self._eof = False
        self._late_reported = False
        self._reset_message()

    # --- receiving ---------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; returns the events they complete."""
        if self._eof:
            raise WSUsageError("receive_data after receive_eof")
        events: list[Event] = []
        if self.failure is not None:
            return events
        for item in self._decoder.feed(data):
            if isinstance(item, Violation):
                self._violation(item, events, force_fatal=True)
                break
            self._handle_frame(item, events)
            if self.failure is not None:
                break
        return events

    def receive_eof(self) -> list[Event]:
        """The transport closed; reports whether the close was clean."""
        if self._eof:
            return []
        self._eof = True
        clean = self.close_sent is not None and self.close_received is not None
        self.state = ConnectionState.CLOSED
        return [ConnectionClosed(clean)]

    def data_to_send(self) -> bytes:
        """Drain bytes the connection queued by itself (pongs, closes)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _violation(self, violation: Violation, events: list[Event], *, force_fatal: bool = False) -> bool:
        fatal = force_fatal or self.close_on_violation
        event = ProtocolViolation(violation.rule, violation.detail, violation.close_code, fatal)
        events.append(event)
        if fatal:
            self.failure = event
            if self.close_on_violation:
                if self.close_sent is None and violation.close_code is not None:
                    self._out += self._close_frame(violation.close_code, violation.rule)
                self.state = ConnectionState.CLOSED
        return fatal

    def _handle_frame(self, frame: Frame, events: list[Event]) -> None:
        if self.emit_frames:
            events.append(FrameReceived(frame))
        if self.close_received is not None:
            if not self._late_reported:
                self._late_reported = True
                # Reported only: the connection is closing anyway.
                events.append(ProtocolViolation("RFC6455 5.5.1", "frame received after the peer's Close", None, False))
            return
        expect_masked = self.role is Role.SERVER
        for violation in frame_violations(frame, expect_masked=expect_masked, allowed_rsv=self.allowed_rsv):
            if self._violation(violation, events):
                return
        opcode = frame.opcode
        if opcode in (Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY):
            self._handle_data(frame, events)
        elif opcode == Opcode.PING:
            events.append(Ping(frame.payload))
            can_send = self.state in (ConnectionState.OPEN, ConnectionState.CLOSE_SENT)
            if self.auto_pong and can_send and len(frame.payload) <= MAX_CONTROL_PAYLOAD:
                self._out += self._frame(Opcode.PONG, frame.payload)
        elif opcode == Opcode.PONG:
            solicited = frame.payload in self.outstanding_pings
            if solicited:
                # A Pong may answer the latest of several Pings (RFC 6455 5.5.3).
                del self.outstanding_pings[: self.outstanding_pings.index(frame.payload) + 1]
            events.append(Pong(frame.payload, solicited))
        elif opcode == Opcode.CLOSE:
            self._handle_close(frame, events)

    def _reset_message(self) -> None:
        self._msg_opcode: Opcode | None = None
        self._fragments: list[bytes] = []
        self._msg_size = 0
        self._utf8: codecs.IncrementalDecoder | None = None
        self._msg_flagged = False

    def _handle_data(self, frame: Frame, events: list[Event]) -> None:
        if frame.opcode == Opcode.CONTINUATION:
            if self._msg_opcode is None:
                self._violation(
                    Violation("RFC6455 5.4", "continuation frame with no message in progress", close_code=1002), events
                )
                return
        else:
            if self._msg_opcode is not None:
                interleaved = Violation(
                    "RFC6455 5.4", "new data frame while a fragmented message is in progress", close_code=1002
                )
                if self._violation(interleaved, events):
                    return
            self._reset_message()
            self._msg_opcode = Opcode(frame.opcode)
            if frame.opcode == Opcode.TEXT:
                self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._fragments.append(frame.payload)
        self._msg_size += len(frame.payload)
        if self._msg_size > self.max_message_size and not self._msg_flagged:
            self._msg_flagged = True
            too_big = Violation("RFC6455 7.4.1", f"message exceeds {self.max_message_size} bytes", close_code=1009)
            if self._violation(too_big, events):
                return
        if self._utf8 is not None:
            try:
                self._utf8.decode(frame.payload, final=frame.fin)
            except UnicodeDecodeError:
                self._utf8 = None
                bad = Violation("RFC6455 8.1", "text message is not valid UTF-8", close_code=1007)
                if self._violation(bad, events):
                    return
        if not frame.fin:
            return
        assert self._msg_opcode is not None
        message = Message(b"".join(self._fragments), self._msg_opcode, self._fragments)
        self._reset_message()
        events.append(message)
        if self.binary_only and message.opcode is Opcode.TEXT:
            self._violation(
                Violation("R-WS.14", "USP Record sent in a text message; R-WS.16 closes with 1003", close_code=1003),
                events,
            )

    def _handle_close(self, frame: Frame, events: list[Event]) -> None:
        info = parse_close_payload(frame.payload)
        self.close_received = info
        self._reset_message()
        events.append(CloseReceived(info.code, info.reason))
        if info.problem is not None and self._violation(info.problem, events):
            return
        if self.state is ConnectionState.CLOSE_SENT:
            self.state = ConnectionState.CLOSED
        elif self.state is ConnectionState.OPEN:
            self.state = ConnectionState.CLOSE_RECEIVED
            if self.auto_close_reply:
                code = info.code if info.problem is None else info.problem.close_code
                self._out += self._close_frame(code, "")

    # --- sending -----------------------------------------------------------

    def _mask_key(self) -> bytes | None:
        return self._random(4) if self.role is Role.CLIENT else None

    def _frame(self, opcode: int, payload: bytes, fin: bool = True) -> bytes:
        return encode_frame(opcode, payload, fin=fin, mask_key=self._mask_key())

    def _close_frame(self, code: int | None, reason: str) -> bytes:
        self.close_sent = (code, reason)
        self.state = (
            ConnectionState.CLOSED if self.state is ConnectionState.CLOSE_RECEIVED else ConnectionState.CLOSE_SENT
        )
        return self._frame(Opcode.CLOSE, encode_close_payload(code, reason if code is not None else ""))

    def send_message(
        self, data: bytes | str, fragment_size: int | None = None, *, opcode: Opcode | None = None
    ) -> bytes:
        """Frames for one message (binary for bytes, text for str).

        ``fragment_size`` splits the payload into frames of at most that
        many bytes (R-WS.14a advises against it; R-WS.14b makes peers
        accept it).
        """
        if self.state not in (ConnectionState.OPEN, ConnectionState.CLOSE_RECEIVED):
            raise WSUsageError(f"cannot send data in state {self.state.value}")
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if opcode is None:
            opcode = Opcode.TEXT if isinstance(data, str) else Opcode.BINARY
        if opcode not in (Opcode.TEXT, Opcode.BINARY):
            raise WSUsageError("send_message takes TEXT or BINARY; use send_frame for others")
        if fragment_size is not None and fragment_size < 1:
            raise WSUsageError("fragment_size must be positive")
        size = fragment_size or max(len(payload), 1)
        chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        out = bytearray()
        for index, chunk in enumerate(chunks):
            frame_opcode = opcode if index == 0 else Opcode.CONTINUATION
            out += self._frame(frame_opcode, chunk, fin=index == len(chunks) - 1)
        return bytes(out)

    def _control_payload(self, payload: bytes) -> bytes:
        if self.state is ConnectionState.CLOSED:
            raise WSUsageError("connection is closed")
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise WSUsageError("control payload over 125 bytes; use send_frame to break that rule")
        return bytes(payload)

    def ping(self, payload: bytes = b"") -> bytes:
        """A Ping (keep-alive, R-WS.17); its payload is tracked until ponged."""
        payload = self._control_payload(payload)
        self.outstanding_pings.append(payload)
        return self._frame(Opcode.PING, payload)

    def pong(self, payload: bytes = b"") -> bytes:
        """A Pong (reply by hand when ``auto_pong`` is off, or unsolicited)."""
        return self._frame(Opcode.PONG, self._control_payload(payload))

    def close(self, code: int | None = 1000, reason: str = "") -> bytes:
        """Start (or answer) the closing handshake (RFC 6455 7, R-WS.8).

        ``code`` None sends an empty body. Invalid codes are refused here;
        use ``send_frame`` with ``encode_close_payload`` to send one.
        """
        if self.close_sent is not None or self.state is ConnectionState.CLOSED:
            raise WSUsageError("a Close was already sent")
        if code is None and reason:
            raise WSUsageError("a close reason needs a status code")
        if code is not None and not is_valid_close_code(code):
            raise WSUsageError(f"close code {code} may not be sent")
        if len(reason.encode("utf-8")) > MAX_CONTROL_PAYLOAD - 2:
            raise WSUsageError("close reason over 123 bytes")
        return self._close_frame(code, reason)

    def send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        masked: bool | None = None,
        mask_key: bytes | None = None,
        length_size: int | None = None,
    ) -> bytes:
        """Any frame, rules unchecked (for malformed traffic on purpose).

        ``masked`` None masks as the role requires; True/False force it.
        A Close sent this way still moves the closing-handshake state.
        """
        if masked is None:
            masked = self.role is Role.CLIENT or mask_key is not None
        if masked and mask_key is None:
            mask_key = self._random(4)
        frame = encode_frame(
            opcode, payload, fin=fin, rsv=rsv, mask_key=mask_key if masked else None, length_size=length_size
        )
        if opcode == Opcode.CLOSE and self.close_sent is None:
            info = parse_close_payload(payload)
            self.close_sent = (info.code, info.reason)
            self.state = (
                ConnectionState.CLOSED if self.state is ConnectionState.CLOSE_RECEIVED else ConnectionState.CLOSE_SENT
            )
        return frame
