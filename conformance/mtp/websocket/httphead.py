"""HTTP/1.1 message heads for the WebSocket opening handshake (RFC 7230).

:class:`HeadReader` collects bytes until the blank line that ends a head,
under a size limit, and keeps whatever followed (the first frame bytes).
:func:`parse_request_head` / :func:`parse_response_head` split a head into
start line and header fields, recording every syntax problem as a
:class:`~.errors.Violation` instead of raising.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from .errors import Violation

__all__ = [
    "DEFAULT_MAX_HEAD_SIZE",
    "HeadReader",
    "HeadState",
    "HttpHead",
    "HttpRequestHead",
    "HttpResponseHead",
    "is_token",
    "parse_request_head",
    "parse_response_head",
    "split_list",
]

DEFAULT_MAX_HEAD_SIZE = 16 * 1024
_END = b"\r\n\r\n"
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_VERSION_RE = re.compile(r"HTTP/(\d)\.(\d)")
_RULE = "RFC7230 3"


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 7230 ``token``."""
    return bool(text) and all(ch in _TCHAR for ch in text)


def split_list(values: Iterable[str]) -> list[str]:
    """Split ``#element`` header values on commas; drop empty elements."""
    out: list[str] = []
    for value in values:
        out.extend(part.strip(" \t") for part in value.split(",") if part.strip(" \t"))
    return out


class HeadState(Enum):
    """Progress of a :class:`HeadReader`."""

    NEED_MORE = "need-more"
    COMPLETE = "complete"
    TOO_LARGE = "too-large"


class HeadReader:
    """Incremental collector of one HTTP head (bytes in until CRLF CRLF).

    After COMPLETE, ``head`` holds the head including its terminator and
    ``trailing`` every byte fed after it. TOO_LARGE is final.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_HEAD_SIZE) -> None:
        self.max_size = max_size
        self.state = HeadState.NEED_MORE
        self.head: bytes | None = None
        self.trailing = b""
        self._buf = bytearray()

    def feed(self, data: bytes) -> HeadState:
        if self.state is HeadState.COMPLETE:
            self.trailing += data
            return self.state
        if self.state is HeadState.TOO_LARGE:
            return self.state
        start = max(0, len(self._buf) - 3)
        self._buf += data
        idx = self._buf.find(_END, start)
        if idx != -1 and idx + 4 <= self.max_size:
            self.head = bytes(self._buf[: idx + 4])
            self.trailing = bytes(self._buf[idx + 4 :])
            self._buf = bytearray()
            self.state = HeadState.COMPLETE
        elif idx != -1 or len(self._buf) > self.max_size:
            self._buf = bytearray()
            self.state = HeadState.TOO_LARGE
        return self.state


@dataclass
class HttpHead:
    """Start line plus header fields (names as sent, values OWS-trimmed)."""

    start_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        key = name.lower()
        return [v for n, v in self.headers if n.lower() == key]

    def get(self, name: str) -> str | None:
        """First value of header ``name`` or None."""
        values = self.get_all(name)
        return values[0] if values else None

    def count(self, name: str) -> int:
        return len(self.get_all(name))


@dataclass
class HttpRequestHead(HttpHead):
    method: str = ""
    target: str = ""
    version: tuple[int, int] | None = None


@dataclass
class HttpResponseHead(HttpHead):
    version: tuple[int, int] | None = None
    status: int | None = None
    reason: str = ""


def _split_head(head: bytes) -> tuple[str, list[str], list[Violation]]:
    violations: list[Violation] = []
    text = head.decode("latin-1")
    if text.endswith("\r\n\r\n"):
        text = text[:-4]
    else:
        violations.append(Violation(_RULE, "head does not end with CRLF CRLF"))
    lines = text.split("\r\n")
    return lines[0], lines[1:], violations


def _parse_fields(lines: list[str], violations: list[Violation]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            continue  # only possible at the end of an unterminated head
        if line[:1] in (" ", "\t"):
            violations.append(Violation("RFC7230 3.2.4", f"obsolete line folding: {line!r}"))
            if headers:
                name, value = headers[-1]
                folded = line.strip(" \t")
                headers[-1] = (name, f"{value} {folded}".strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            violations.append(Violation("RFC7230 3.2", f"header line without colon: {line!r}"))
            continue
        if not is_token(name):
            violations.append(Violation("RFC7230 3.2", f"invalid header name: {name!r}"))
            name = name.strip(" \t")
            if not name:
                continue
        value = value.strip(" \t")
        if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value):
            violations.append(Violation("RFC7230 3.2", f"control character in {name} value"))
        headers.append((name, value))
    return headers


def _parse_version(text: str) -> tuple[int, int] | None:
    match = _VERSION_RE.fullmatch(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_request_head(head: bytes) -> HttpRequestHead:
    """Parse a request head; problems are listed in ``violations``."""
    start, lines, violations = _split_head(head)
    parts = start.split(" ")
    result = HttpRequestHead(start_line=start, violations=violations)
    if len(parts) != 3 or not all(parts):
        violations.append(Violation("RFC7230 3.1.1", f"malformed request line: {start!r}"))
    else:
        result.method, result.target = parts[0], parts[1]
        result.version = _parse_version(parts[2])
        if result.version is None:
            violations.append(Violation("RFC7230 2.6", f"malformed HTTP version: {parts[2]!r}"))
    result.headers = _parse_fields(lines, violations)
    return result


def parse_response_head(head: bytes) -> HttpResponseHead:
    """Parse a status line and header fields; never raises."""
    start, lines, violations = _split_head(head)
    result = HttpResponseHead(start_line=start, violations=violations)
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    result.version = _parse_version(version)
    if result.version is None or len(code) != 3 or not code.isascii() or not code.isdigit():
        violations.append(Violation("RFC7230 3.1.2", f"malformed status line: {start!r}"))
    else:
        result.status = int(code)
        result.reason = reason
    result.headers = _parse_fields(lines, violations)
    return result
