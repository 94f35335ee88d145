"""Events a :class:`~.connection.WSConnection` reports for received bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

from .frames import Frame, Opcode

__all__ = [
    "CloseReceived",
    "ConnectionClosed",
    "Event",
    "FrameReceived",
    "Message",
    "Ping",
    "Pong",
    "ProtocolViolation",
]


@dataclass
class Message:
    """A complete data message; ``fragments`` are the frame payloads in order."""

    data: bytes
    opcode: Opcode
    fragments: list[bytes] = field(default_factory=list)

    @property
    def is_text(self) -> bool:
        return self.opcode is Opcode.TEXT

    @property
    def text(self) -> str:
        """The payload as text (undecodable bytes replaced)."""
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Ping:
    payload: bytes


@dataclass(frozen=True)
class Pong:
    """A Pong; ``solicited`` is True when it answers a Ping we sent."""

    payload: bytes
    solicited: bool


@dataclass(frozen=True)
class CloseReceived:
    """The peer's Close; ``code`` None means the body had no status code."""

    code: int | None
    reason: str


@dataclass(frozen=True)
class ProtocolViolation:
    """The peer broke a rule; ``fatal`` means the connection was failed
    (a Close with ``close_code`` was queued and later input is ignored)."""

    rule: str
    detail: str
    close_code: int | None
    fatal: bool


@dataclass(frozen=True)
class FrameReceived:
    """Every decoded frame, raw, when the connection emits frames."""

    frame: Frame


@dataclass(frozen=True)
class ConnectionClosed:
    """The transport ended; ``clean`` when both Close frames were exchanged."""

    clean: bool


Event = Message | Ping | Pong | CloseReceived | ProtocolViolation | FrameReceived | ConnectionClosed
