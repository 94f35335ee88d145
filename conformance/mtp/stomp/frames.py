"""STOMP 1.2 frame model: the ``Frame`` and ``HeartBeat`` events, the command
sets, header escaping and the one decode error type.

Pure data and string helpers; the byte-level codec lives in
:mod:`conformance.mtp.stomp.codec`.

Header escaping (STOMP 1.2 "Value Encoding"): every frame except CONNECT,
STOMP and CONNECTED escapes CR, LF, ``:`` and ``\\`` in header names and
values as ``\\r``, ``\\n``, ``\\c`` and ``\\\\``; any other backslash sequence
is a fatal protocol error.  The three connection frames are written and read
verbatim (kept that way for STOMP 1.0 compatibility).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Frames a STOMP client may send (STOMP 1.2 grammar ``client-command``).
CLIENT_COMMANDS: frozenset[str] = frozenset(
    {"SEND", "SUBSCRIBE", "UNSUBSCRIBE", "BEGIN", "COMMIT", "ABORT", "ACK", "NACK",
     "DISCONNECT", "CONNECT", "STOMP"}
)
#: Frames a STOMP server may send (STOMP 1.2 grammar ``server-command``).
SERVER_COMMANDS: frozenset[str] = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
COMMANDS: frozenset[str] = CLIENT_COMMANDS | SERVER_COMMANDS
#: Frames whose headers are neither escaped nor unescaped.
UNESCAPED_COMMANDS: frozenset[str] = frozenset({"CONNECT", "STOMP", "CONNECTED"})
#: Frames that may carry a body; all others must have an empty one.
BODY_COMMANDS: frozenset[str] = frozenset({"SEND", "MESSAGE", "ERROR"})

#: content-type of a SEND/MESSAGE carrying a USP Record (R-STOMP.20).
USP_CONTENT_TYPE = "application/vnd.bbf.usp.msg"
#: Error content-type of USP 1.0/1.1 (R-STOMP.23a, deprecated since USP 1.2).
USP_ERROR_CONTENT_TYPE = "application/vnd.bbf.usp.error"


class StompDecodeError(ValueError):
    """Raised for bytes that are not a well-formed STOMP 1.2 frame stream.

    ``offset`` is a stream offset (bytes fed since the decoder was created):
    the offending byte, or the start of the frame for header-section errors.
    ``events`` holds the frames and heart-beats that a ``StompDecoder.feed``
    call decoded before failing.
    """

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at byte {offset})")
        self.reason = message
        self.offset = offset
        self.events: list[Frame | HeartBeat] = []


@dataclass(init=False)
class Frame:
    """One STOMP frame.

    ``headers`` keeps wire order and duplicates; STOMP 1.2 says the first
    occurrence of a repeated header is the one that counts (see ``header``).
    A mapping is accepted too.  ``raw`` is the exact wire bytes (command up
    to and including the NUL) when the frame came from the decoder; it is not
    part of equality.
    """

    command: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def __init__(self, command: str,
                 headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                 body: bytes | bytearray = b"", raw: bytes | None = None) -> None:
        self.command = command
        items = headers.items() if isinstance(headers, Mapping) else headers
        self.headers = [(str(n), str(v)) for n, v in items]
        self.body = bytes(body)
        self.raw = raw

    def header(self, name: str, default: str | None = None) -> str | None:
        """Value of the first ``name`` header (names are case-sensitive)."""
        for n, v in self.headers:
            if n == name:
                return v
        return default

    def header_values(self, name: str) -> list[str]:
        """Every value of ``name``, in wire order (duplicates included)."""
        return [v for n, v in self.headers if n == name]

    def has_header(self, name: str) -> bool:
        return any(n == name for n, _ in self.headers)

    @property
    def escaped(self) -> bool:
        """Whether this command's headers use STOMP 1.2 value escaping."""
        return self.command not in UNESCAPED_COMMANDS


@dataclass(frozen=True)
class HeartBeat:
    """An EOL received between frames (STOMP 1.2 heart-beating).

    ``raw`` is ``b"\\n"`` or ``b"\\r\\n"``.  EOLs right after a frame's NUL
    are reported the same way: on the wire they cannot be told apart.
    """

    raw: bytes = b"\n"


_ESCAPES = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"}
_UNESCAPES = {"\\": "\\", "r": "\r", "n": "\n", "c": ":"}
_ESCAPE_RE = re.compile(r"[\\\r\n:]")
_UNESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)


def escape_header(text: str) -> str:
    """Escape a header name or value for a frame that uses escaping."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text)


def unescape_header(text: str) -> str:
    """Undo ``escape_header``; an undefined escape raises ``StompDecodeError``."""
    if "\\" not in text:
        return text

    def repl(m: re.Match[str]) -> str:
        ch = m.group(1)
        if ch not in _UNESCAPES:
            shown = ("\\" + ch) if ch else "trailing '\\'"
            raise StompDecodeError(f"undefined header escape {shown!r}")
        return _UNESCAPES[ch]

    return _UNESCAPE_RE.sub(repl, text)


def content_length_matches(value: str, body: bytes) -> bool:
    """Whether a ``content-length`` value is a decimal equal to ``len(body)``."""
    digits = value.lstrip("0")
    return (value.isascii() and value.isdigit() and len(digits) <= 20
            and int(digits or "0") == len(body))
