"""Sans-I/O STOMP 1.2 codec: a streaming decoder (bytes in, frames and
heart-beats out) and an encoder that can also build malformed frames on
purpose.

Wire grammar (STOMP 1.2): ``command EOL *(header EOL) EOL *OCTET NUL *(EOL)``
with ``EOL = [CR] LF``.  Decoding rules:

* EOLs between frames are heart-beats and come out as ``HeartBeat`` events
  (the broker uses them for missed-heart-beat detection, R-STOMP.11).
* The first ``:`` of a header line splits name and value, so a value keeps
  any further colons (``endpoint-id:os::012345-ABC`` in a STOMP frame).
* When ``content-length`` is present (first occurrence wins) the body is
  exactly that many octets and may contain NUL (binary USP Records,
  R-STOMP.19/R-STOMP.22); the next octet must be the NUL terminator.
  Without it the body ends at the first NUL.
* Header text must be UTF-8 and may not contain NUL or a bare CR.
* After a ``StompDecodeError`` the stream cannot be resynchronised: the
  decoder refuses further input and the connection should be dropped.
"""

from __future__ import annotations

from typing import Literal

from conformance.mtp.stomp.frames import (
    UNESCAPED_COMMANDS,
    Frame,
    HeartBeat,
    StompDecodeError,
    content_length_matches,
    escape_header,
    unescape_header,
)

#: Upper bound on one frame (headers + body) accepted by default.
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024

_LF, _CR, _NUL = 0x0A, 0x0D, 0x00
_IDLE, _HEADERS, _BODY = 0, 1, 2

Event = Frame | HeartBeat


class StompDecoder:
    """Incremental STOMP 1.2 decoder; ``feed`` bytes, get events back.

    ``unescape_connect=True`` also unescapes CONNECT/STOMP/CONNECTED headers
    (not STOMP 1.2 behaviour, but what the R-STOMP.4 note asks senders to do;
    see ``validate.usp_endpoint_id`` for the per-header alternative).
    """

    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 unescape_connect: bool = False) -> None:
        self.max_frame_size = max_frame_size
        self.unescape_connect = unescape_connect
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._failed: StompDecodeError | None = None
        self._reset()

    def _reset(self) -> None:
        self._state = _IDLE
        self._scan = 0  # next index not yet searched
        self._line_start = 0
        self._lines: list[bytes] = []
        self._body_start = 0
        self._content_length: int | None = None
        self._frame: Frame | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as an event (0 between frames)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        """Add ``data``; return every complete frame/heart-beat, in order."""
        if self._failed is not None:
            raise StompDecodeError(f"decoder failed earlier: {self._failed.reason}")
        self._buf += data
        events: list[Event] = []
        try:
            while (event := self._step()) is not None:
                events.append(event)
        except StompDecodeError as exc:
            exc.events = events
            self._failed = exc
            raise
        return events

    def _error(self, message: str, index: int) -> StompDecodeError:
        return StompDecodeError(message, offset=self._base + index)

    def _consume(self, n: int) -> bytes:
        raw = bytes(self._buf[:n])
        del self._buf[:n]
        self._base += n
        return raw

    def _step(self) -> Event | None:
        if self._state == _IDLE:
            return self._step_idle()
        if self._state == _HEADERS and not self._step_headers():
            return None
        return self._step_body()

    def _step_idle(self) -> Event | None:
        buf = self._buf
        if not buf:
            return None
        if buf[0] == _LF:
            return HeartBeat(self._consume(1))
        if buf[0] == _CR:
            if len(buf) < 2:
                return None
            if buf[1] != _LF:
                raise self._error("CR not followed by LF between frames", 0)
            return HeartBeat(self._consume(2))
        self._state = _HEADERS
        return self._step()

    def _step_headers(self) -> bool:
        """Collect header lines; True once the blank line has been seen."""
        buf = self._buf
        while True:
            nl = buf.find(b"\n", self._scan)
            end = len(buf) if nl < 0 else nl
            nul = buf.find(b"\x00", self._scan, end)
            if nul >= 0:
                raise self._error("NUL inside the frame's command/header section", nul)
            if nl < 0:
                self._scan = len(buf)
                if len(buf) > self.max_frame_size:
                    raise self._error("frame header section exceeds max_frame_size",
                                      self.max_frame_size)
                return False
            line = bytes(buf[self._line_start:nl])
            self._scan = self._line_start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if line or not self._lines:
                self._lines.append(line)
                continue
            self._body_start = nl + 1
            self._parse_preamble()
            self._state = _BODY
            return True

    def _parse_preamble(self) -> None:
        command = self._text(self._lines[0], 0)
        escaped = command not in UNESCAPED_COMMANDS or self.unescape_connect
        headers: list[tuple[str, str]] = []
        for line in self._lines[1:]:
            text = self._text(line, 0)
            name, sep, value = text.partition(":")
            if not sep:
                raise self._error(f"header line without ':' {text[:60]!r}", 0)
            if not name:
                raise self._error("empty header name", 0)
            if escaped:
                try:
                    name, value = unescape_header(name), unescape_header(value)
                except StompDecodeError as exc:
                    raise self._error(exc.reason, 0) from None
            headers.append((name, value))
        self._frame = Frame(command, headers)
        length = self._frame.header("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                raise self._error(f"invalid content-length {length[:40]!r}", 0)
            # Compare digit counts first: int() refuses huge digit strings.
            if (len(length.lstrip("0")) > len(str(self.max_frame_size))
                    or self._body_start + int(length) + 1 > self.max_frame_size):
                raise self._error("content-length exceeds max_frame_size", 0)
            self._content_length = int(length)
        self._scan = self._body_start

    def _text(self, line: bytes, index: int) -> str:
        if b"\r" in line:
            raise self._error("bare CR in frame header section", index)
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            raise self._error("frame header section is not valid UTF-8", index) from None

    def _step_body(self) -> Event | None:
        buf = self._buf
        if self._content_length is not None:
            end = self._body_start + self._content_length
            if len(buf) <= end:
                return None
            if buf[end] != _NUL:
                raise self._error("frame not NUL-terminated after content-length octets", end)
        else:
            end = buf.find(b"\x00", self._scan)
            if end < 0:
                self._scan = len(buf)
                if len(buf) > self.max_frame_size:
                    raise self._error("frame body exceeds max_frame_size", self.max_frame_size)
                return None
        frame = self._frame
        assert frame is not None
        frame.body = bytes(buf[self._body_start:end])
        frame.raw = self._consume(end + 1)
        self._reset()
        return frame


def decode_frame(data: bytes, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                 unescape_connect: bool = False) -> Frame:
    """Decode exactly one frame (trailing EOLs allowed, nothing else)."""
    decoder = StompDecoder(max_frame_size=max_frame_size, unescape_connect=unescape_connect)
    events = decoder.feed(data)
    frames = [e for e in events if isinstance(e, Frame)]
    if decoder.buffered:
        raise StompDecodeError("incomplete frame", offset=len(data))
    if len(frames) != 1 or not isinstance(events[0], Frame):
        raise StompDecodeError(f"expected one frame, got {len(frames)}")
    return frames[0]


ContentLength = int | Literal["keep", "auto", "omit"]


def encode_frame(
    frame: Frame,
    *,
    escape: bool | None = None,
    content_length: ContentLength = "keep",
    eol: bytes = b"\n",
    terminate: bool = True,
    trailing_eols: int = 0,
    check: bool = True,
) -> bytes:
    """Serialise ``frame``.

    ``escape``: None applies the STOMP 1.2 rule for the command, False writes
    header text verbatim (e.g. an unescaped ``:``), True forces escaping.
    ``content_length``: "keep" writes headers as given, "auto" sets it to the
    body length, "omit" drops it, an int writes that (possibly wrong) value.
    ``terminate=False`` leaves out the NUL; ``trailing_eols`` appends EOLs.
    ``check`` raises ``ValueError`` when the result could not be decoded back
    (bad command/header text, NUL in a body without content-length); turn it
    off to build malformed frames.
    """
    if escape is None:
        escape = frame.command not in UNESCAPED_COMMANDS
    headers = list(frame.headers)
    if content_length != "keep":
        value = None if content_length == "omit" else (
            str(len(frame.body)) if content_length == "auto" else str(content_length))
        headers = _set_header(headers, "content-length", value)
    if check:
        _check_encodable(frame, headers, escape, eol, strict_length=content_length == "keep")
    out = bytearray(frame.command.encode("utf-8"))
    out += eol
    for name, value in headers:
        if escape:
            name, value = escape_header(name), escape_header(value)
        out += f"{name}:{value}".encode("utf-8")
        out += eol
    out += eol
    out += frame.body
    if terminate:
        out += b"\x00"
    out += eol * trailing_eols
    return bytes(out)


def encode_heartbeat(eol: bytes = b"\n") -> bytes:
    """One heart-beat (an EOL sent while no frame is in progress)."""
    return eol


def _set_header(headers: list[tuple[str, str]], name: str,
                value: str | None) -> list[tuple[str, str]]:
    """Replace the first ``name`` (dropping duplicates) or append it."""
    out: list[tuple[str, str]] = []
    placed = value is None
    for n, v in headers:
        if n != name:
            out.append((n, v))
        elif not placed:
            out.append((n, value))  # type: ignore[arg-type]
            placed = True
    if not placed:
        out.append((name, value))  # type: ignore[arg-type]
    return out


def _check_encodable(frame: Frame, headers: list[tuple[str, str]], escape: bool,
                     eol: bytes, *, strict_length: bool) -> None:
    if eol not in (b"\n", b"\r\n"):
        raise ValueError("eol must be LF or CRLF")
    cmd = frame.command
    if not cmd or any(c in cmd for c in "\r\n\x00"):
        raise ValueError(f"invalid STOMP command {cmd!r}")
    for name, value in headers:
        if not name:
            raise ValueError("empty header name")
        if "\x00" in name or "\x00" in value:
            raise ValueError(f"NUL in header {name!r}")
        if not escape and (any(c in name for c in "\r\n:") or any(c in value for c in "\r\n")):
            raise ValueError(f"header {name!r} needs escaping but escape is off")
    lengths = [v for n, v in headers if n == "content-length"]
    if not lengths and b"\x00" in frame.body:
        raise ValueError("body contains NUL: a content-length header is required")
    if strict_length and lengths and not content_length_matches(lengths[0], frame.body):
        raise ValueError(f"content-length {lengths[0]!r} does not match the body "
                         f"({len(frame.body)} octets); pass content_length= to force it")
