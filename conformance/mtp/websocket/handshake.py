"""WebSocket opening handshake for both roles, with USP's rules (R-WS.7..12a).

Builders produce the exact upgrade request / response bytes; parsers wrap
an HTTP head in :class:`HandshakeRequest` / :class:`HandshakeResponse`
with the WebSocket fields decoded; validators return
:class:`~.errors.Violation` lists (``blocking`` ones forbid the session).
:class:`ClientHandshake` and :class:`ServerHandshake` tie these together
as incremental, sans-I/O state machines. Randomness (the 16-byte nonce) is
always passed in by the caller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from .errors import Violation, WSParseError, WSUsageError
from .extensions import BBF_USP_EXTENSION, Extension, extension_param, format_extensions, parse_extensions
from .httphead import (
    DEFAULT_MAX_HEAD_SIZE,
    HeadReader,
    HeadState,
    HttpRequestHead,
    HttpResponseHead,
    is_token,
    parse_request_head,
    parse_response_head,
    split_list,
)

__all__ = [
    "USP_SUBPROTOCOL",
    "WS_GUID",
    "WS_VERSION",
    "ClientHandshake",
    "ClientHandshakeResult",
    "HandshakeRequest",
    "HandshakeResponse",
    "ServerHandshake",
    "ServerHandshakeResult",
    "build_rejection",
    "build_request",
    "build_response",
    "build_target",
    "compute_accept",
    "encode_eid",
    "generate_key",
    "parse_request",
    "parse_response",
    "query_eid",
    "validate_request",
    "validate_response",
]

#: Fixed GUID appended to the key before hashing (RFC 6455 1.3).
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Subprotocol for protobuf-encoded USP Records (R-WS.9).
USP_SUBPROTOCOL = "v1.usp"
WS_VERSION = "13"

Headers = Sequence[tuple[str, str]]
ExtensionsArg = Sequence[Extension] | str | None


# --- keys ------------------------------------------------------------------


def generate_key(random16: bytes) -> str:
    """Sec-WebSocket-Key from 16 caller-supplied random bytes (RFC 6455 4.1)."""
    if len(random16) != 16:
        raise WSUsageError("Sec-WebSocket-Key needs exactly 16 random bytes")
    return base64.b64encode(random16).decode("ascii")


def compute_accept(key: str) -> str:
    """Sec-WebSocket-Accept for ``key``: base64(SHA-1(key + GUID))."""
    digest = hashlib.sha1((key + WS_GUID).encode("latin-1", errors="replace")).digest()
    return base64.b64encode(digest).decode("ascii")


def _key_is_valid(key: str) -> bool:
    try:
        return len(base64.b64decode(key.encode("latin-1"), validate=True)) == 16
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False


# --- the eid query parameter (R-WS.10b, R-WS.10c) --------------------------


def encode_eid(eid: str) -> str:
    """Percent-encode an Endpoint ID as opaque data; ``%`` becomes ``%25``."""
    return quote(eid, safe=":")


def build_target(path: str = "/", eid: str | None = None, query: str | None = None) -> str:
    """Request target ``path?query&eid=...`` (R-WS.10b: ``&``-separated)."""
    parts = [query] if query else []
    if eid is not None:
        parts.append(f"eid={encode_eid(eid)}")
    return f"{path}?{'&'.join(parts)}" if parts else path


def query_eid(target: str) -> str | None:
    """Decoded value of the first ``eid`` pair in the target's query."""
    _, sep, rest = target.partition("?")
    if not sep:
        return None
    for pair in rest.partition("#")[0].split("&"):
        key, eq, value = pair.partition("=")
        if eq and unquote(key) == "eid":
            return unquote(value)
    return None


# --- builders ---------------------------------------------------------------


def _render(start: str, headers: Headers) -> bytes:
    lines = [start]
    for name, value in headers:
        if not is_token(name) or "\r" in value or "\n" in value:
            raise WSUsageError(f"cannot send header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError as exc:
        raise WSUsageError(f"header text is not Latin-1: {exc}") from None


def _extensions_value(extensions: ExtensionsArg) -> str | None:
    if extensions is None or isinstance(extensions, str):
        return extensions
    return format_extensions(extensions) if extensions else None


def build_request(
    host: str,
    path: str = "/",
    *,
    key: str,
    eid: str | None = None,
    subprotocols: Sequence[str] = (USP_SUBPROTOCOL,),
    extensions: ExtensionsArg = None,
    origin: str | None = None,
    extra_headers: Headers = (),
) -> bytes:
    """The client's upgrade request (RFC 6455 4.1, R-WS.10, R-WS.10b).

    ``extensions`` is a structured list or a raw header value.
    """
    headers: list[tuple[str, str]] = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", WS_VERSION),
    ]
    if subprotocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    ext_value = _extensions_value(extensions)
    if ext_value is not None:
        headers.append(("Sec-WebSocket-Extensions", ext_value))
    if origin is not None:
        headers.append(("Origin", origin))
    headers.extend(extra_headers)
    return _render(f"GET {build_target(path, eid)} HTTP/1.1", headers)


def build_response(
    key: str,
    *,
    subprotocol: str | None = USP_SUBPROTOCOL,
    extensions: ExtensionsArg = None,
    accept: str | None = None,
    extra_headers: Headers = (),
) -> bytes:
    """A ``101 Switching Protocols`` answer (RFC 6455 4.2.2, R-WS.11).

    ``accept`` overrides the computed Sec-WebSocket-Accept (to send a wrong
    one on purpose).
    """
    headers: list[tuple[str, str]] = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", compute_accept(key) if accept is None else accept),
    ]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    ext_value = _extensions_value(extensions)
    if ext_value is not None:
        headers.append(("Sec-WebSocket-Extensions", ext_value))
    headers.extend(extra_headers)
    return _render("HTTP/1.1 101 Switching Protocols", headers)


def build_rejection(status: int = 400, reason: str = "Bad Request", *, extra_headers: Headers = ()) -> bytes:
    """An empty-bodied HTTP error response refusing the upgrade."""
    if not 100 <= status <= 999:
        raise WSUsageError(f"bad HTTP status {status}")
    headers = [*extra_headers, ("Content-Length", "0"), ("Connection", "close")]
    return _render(f"HTTP/1.1 {status} {reason}", headers)


# --- parsed views -----------------------------------------------------------


def _parse_ext_headers(values: list[str]) -> tuple[list[Extension], str | None]:
    if not values:
        return [], None
    try:
        return parse_extensions(values), None
    except WSParseError as exc:
        return [], str(exc)


class HandshakeRequest:
    """An upgrade request with its WebSocket fields decoded."""

    def __init__(self, http: HttpRequestHead) -> None:
        self.http = http
        self.extensions, self.extension_error = _parse_ext_headers(http.get_all("Sec-WebSocket-Extensions"))

    @property
    def method(self) -> str:
        return self.http.method

    @property
    def target(self) -> str:
        return self.http.target

    @property
    def path(self) -> str:
        return self.http.target.partition("?")[0]

    @property
    def key(self) -> str | None:
        return self.http.get("Sec-WebSocket-Key")

    @property
    def subprotocols(self) -> list[str]:
        return split_list(self.http.get_all("Sec-WebSocket-Protocol"))

    @property
    def query_eid(self) -> str | None:
        """Client Endpoint ID from ``?eid=`` (R-WS.10b)."""
        return query_eid(self.http.target)

    @property
    def extension_eid(self) -> str | None:
        """Client Endpoint ID from the deprecated extension (R-WS.10a)."""
        return extension_param(self.extensions, BBF_USP_EXTENSION, "eid")

    @property
    def endpoint_id(self) -> str | None:
        """Best-known client Endpoint ID: the query first, then the extension."""
        eid = self.query_eid
        return eid if eid is not None else self.extension_eid


class HandshakeResponse:
    """A handshake answer with its WebSocket fields decoded."""

    def __init__(self, http: HttpResponseHead) -> None:
        self.http = http
        self.extensions, self.extension_error = _parse_ext_headers(http.get_all("Sec-WebSocket-Extensions"))

    @property
    def status(self) -> int | None:
        return self.http.status

    @property
    def accept(self) -> str | None:
        return self.http.get("Sec-WebSocket-Accept")

    @property
    def subprotocol(self) -> str | None:
        return self.http.get("Sec-WebSocket-Protocol")

    @property
    def extension_eid(self) -> str | None:
        """Server Endpoint ID from the bbf-usp-protocol extension (R-WS.11a)."""
        return extension_param(self.extensions, BBF_USP_EXTENSION, "eid")


def parse_request(head: bytes) -> HandshakeRequest:
    """Parse a complete request head; never raises on hostile bytes."""
    return HandshakeRequest(parse_request_head(head))


def parse_response(head: bytes) -> HandshakeResponse:
    """Parse a complete response head; never raises on hostile bytes."""
    return HandshakeResponse(parse_response_head(head))


# --- validators -------------------------------------------------------------


def _has_token(values: list[str], wanted: str) -> bool:
    return any(token.lower() == wanted for token in split_list(values))


def validate_request(req: HandshakeRequest, *, require_eid: bool = True) -> list[Violation]:
    """Check an upgrade request against RFC 6455 4.2.1 and R-WS.9/10/10b."""
    http = req.http
    out = list(http.violations)
    rule = "RFC6455 4.2.1"
    if req.method != "GET":
        out.append(Violation(rule, f"method must be GET, got {req.method!r}"))
    if http.version is None or http.version < (1, 1):
        out.append(Violation(rule, "HTTP version must be 1.1 or higher"))
    if http.count("Host") != 1:
        out.append(Violation(rule, f"expected one Host header, got {http.count('Host')}"))
    if not _has_token(http.get_all("Upgrade"), "websocket"):
        out.append(Violation(rule, "Upgrade header must include 'websocket'"))
    if not _has_token(http.get_all("Connection"), "upgrade"):
        out.append(Violation(rule, "Connection header must include 'Upgrade'"))
    keys = http.get_all("Sec-WebSocket-Key")
    if len(keys) != 1:
        out.append(Violation("RFC6455 11.3.1", f"expected one Sec-WebSocket-Key, got {len(keys)}"))
    elif not _key_is_valid(keys[0]):
        out.append(Violation(rule, f"Sec-WebSocket-Key is not base64 of 16 bytes: {keys[0]!r}"))
    if http.get_all("Sec-WebSocket-Version") != [WS_VERSION]:
        out.append(Violation(rule, f"Sec-WebSocket-Version must be {WS_VERSION}"))
    protocols = req.subprotocols
    if not http.get_all("Sec-WebSocket-Protocol"):
        out.append(Violation("R-WS.10", "no Sec-WebSocket-Protocol header; the server must refuse (R-WS.12a)"))
    elif USP_SUBPROTOCOL not in protocols:
        out.append(Violation("R-WS.9", f"subprotocol {USP_SUBPROTOCOL!r} not offered: {protocols!r}"))
    bad = [p for p in protocols if not is_token(p)]
    if bad:
        out.append(Violation("RFC6455 4.1", f"subprotocols must be tokens: {bad!r}"))
    if req.extension_error is not None:
        out.append(Violation("RFC6455 9.1", f"malformed Sec-WebSocket-Extensions: {req.extension_error}"))
    if require_eid and not req.query_eid:
        out.append(Violation("R-WS.10b", "request target has no eid= query pair", blocking=False))
    return out


def validate_response(
    resp: HandshakeResponse,
    *,
    key: str,
    offered_subprotocols: Sequence[str] = (USP_SUBPROTOCOL,),
    offered_extensions: Iterable[str] = (),
) -> list[Violation]:
    """Check a handshake answer against RFC 6455 4.1 and R-WS.9/11/11a/12."""
    http = resp.http
    out = list(http.violations)
    rule = "RFC6455 4.1"
    if resp.status != 101:
        out.append(Violation(rule, f"status must be 101, got {resp.status}"))
        return out
    upgrade = http.get_all("Upgrade")
    if len(upgrade) != 1 or upgrade[0].lower() != "websocket":
        out.append(Violation(rule, f"Upgrade must be 'websocket', got {upgrade!r}"))
    if not _has_token(http.get_all("Connection"), "upgrade"):
        out.append(Violation(rule, "Connection header must include 'Upgrade'"))
    accepts = http.get_all("Sec-WebSocket-Accept")
    if not accepts:
        out.append(Violation(rule, "missing Sec-WebSocket-Accept"))
    elif len(accepts) > 1:
        out.append(Violation("RFC6455 11.3.3", "Sec-WebSocket-Accept repeated"))
    elif accepts[0] != compute_accept(key):
        out.append(Violation(rule, f"wrong Sec-WebSocket-Accept {accepts[0]!r}, expected {compute_accept(key)!r}"))
    protocols = split_list(http.get_all("Sec-WebSocket-Protocol"))
    if not protocols:
        missing = "no Sec-WebSocket-Protocol in the response (R-WS.11); the client must not proceed"
        out.append(Violation("R-WS.12", missing))
    elif len(protocols) > 1:
        out.append(Violation(rule, f"more than one subprotocol selected: {protocols!r}"))
    elif protocols[0] not in offered_subprotocols:
        out.append(Violation(rule, f"subprotocol {protocols[0]!r} was not offered"))
    elif protocols[0] != USP_SUBPROTOCOL:
        out.append(Violation("R-WS.9", f"subprotocol must be {USP_SUBPROTOCOL!r}, got {protocols[0]!r}"))
    offered = {name.lower() for name in offered_extensions}
    if resp.extension_error is not None:
        out.append(Violation("RFC6455 9.1", f"malformed Sec-WebSocket-Extensions: {resp.extension_error}"))
    for name, _ in resp.extensions:
        if name not in offered:
            out.append(Violation(rule, f"extension {name!r} was not offered"))
    names = {name for name, _ in resp.extensions}
    if BBF_USP_EXTENSION in offered and resp.extension_error is None:
        if BBF_USP_EXTENSION not in names:
            # Not an error for the client (R-WS.11b), only a SHOULD miss.
            out.append(Violation("R-WS.11a", f"server did not answer {BBF_USP_EXTENSION}", "SHOULD", False))
        elif not resp.extension_eid:
            out.append(Violation("R-WS.11a", f"{BBF_USP_EXTENSION} without an eid parameter", "SHOULD", False))
    return out


# --- state machines ---------------------------------------------------------


@dataclass
class ClientHandshakeResult:
    """Outcome of the client side; ``trailing`` are the first frame bytes."""

    response: HandshakeResponse | None
    violations: list[Violation] = field(default_factory=list)
    trailing: bytes = b""

    @property
    def established(self) -> bool:
        return self.response is not None and not any(v.blocking for v in self.violations)

    @property
    def server_eid(self) -> str | None:
        return self.response.extension_eid if self.response else None


class ClientHandshake:
    """Client role: holds the request bytes, then reads the answer.

    By default, when ``eid`` is given, the request both carries ``?eid=``
    (R-WS.10b) and offers ``bbf-usp-protocol; eid=...`` so that agents that
    always answer the extension (R-WS.11a) stay within RFC 6455 4.1.
    """

    def __init__(
        self,
        host: str,
        path: str = "/",
        *,
        key_random: bytes,
        eid: str | None = None,
        subprotocols: Sequence[str] = (USP_SUBPROTOCOL,),
        extensions: ExtensionsArg = None,
        offer_bbf_extension: bool = True,
        extra_headers: Headers = (),
        max_head_size: int = DEFAULT_MAX_HEAD_SIZE,
    ) -> None:
        self.key = generate_key(key_random)
        if extensions is None and offer_bbf_extension and eid is not None:
            extensions = [(BBF_USP_EXTENSION, {"eid": eid})]
        self.subprotocols = tuple(subprotocols)
        if isinstance(extensions, str):
            try:
                self.offered_extensions = [name for name, _ in parse_extensions(extensions)]
            except WSParseError:
                self.offered_extensions = []
        else:
            self.offered_extensions = [name for name, _ in extensions or ()]
        self.request = build_request(
            host, path, key=self.key, eid=eid, subprotocols=subprotocols, extensions=extensions,
            extra_headers=extra_headers,
        )
        self._reader = HeadReader(max_head_size)
        self.result: ClientHandshakeResult | None = None

    def data_to_send(self) -> bytes:
        """The upgrade request bytes."""
        return self.request

    def receive_data(self, data: bytes) -> ClientHandshakeResult | None:
        """Feed response bytes; returns the result once the head is complete."""
        if self.result is not None:
            raise WSUsageError("handshake already finished; feed later bytes to the WSConnection")
        state = self._reader.feed(data)
        if state is HeadState.NEED_MORE:
            return None
        if state is HeadState.TOO_LARGE:
            limit = f"response head exceeds {self._reader.max_size} bytes"
            self.result = ClientHandshakeResult(None, [Violation("RFC6455 4.1", limit)])
            return self.result
        assert self._reader.head is not None
        response = parse_response(self._reader.head)
        violations = validate_response(
            response, key=self.key, offered_subprotocols=self.subprotocols,
            offered_extensions=self.offered_extensions,
        )
        self.result = ClientHandshakeResult(response, violations, self._reader.trailing)
        return self.result


@dataclass
class ServerHandshakeResult:
    """Outcome of the server side: the answer to write and what followed."""

    request: HandshakeRequest | None
    response: bytes
    accepted: bool
    violations: list[Violation] = field(default_factory=list)
    trailing: bytes = b""

    @property
    def client_eid(self) -> str | None:
        return self.request.endpoint_id if self.request else None


class ServerHandshake:
    """Server role: reads the upgrade request and builds the answer.

    Any blocking violation yields an HTTP error (426 for a wrong version,
    431 for an oversized head, else 400), as R-WS.12a demands for a missing
    subprotocol. ``answer_extension`` None echoes ``bbf-usp-protocol`` with
    ``eid`` only when offered (R-WS.11a); True always sends it, as some
    deployed agents do.
    """

    def __init__(
        self,
        *,
        eid: str | None = None,
        require_eid: bool = True,
        answer_extension: bool | None = None,
        extra_headers: Headers = (),
        max_head_size: int = DEFAULT_MAX_HEAD_SIZE,
    ) -> None:
        self.eid = eid
        self.require_eid = require_eid
        self.answer_extension = answer_extension
        self.extra_headers = tuple(extra_headers)
        self._reader = HeadReader(max_head_size)
        self.result: ServerHandshakeResult | None = None

    def receive_data(self, data: bytes) -> ServerHandshakeResult | None:
        """Feed request bytes; returns the result once the head is complete."""
        if self.result is not None:
            raise WSUsageError("handshake already finished; feed later bytes to the WSConnection")
        state = self._reader.feed(data)
        if state is HeadState.NEED_MORE:
            return None
        if state is HeadState.TOO_LARGE:
            violation = Violation("RFC6455 4.2.1", f"request head exceeds {self._reader.max_size} bytes")
            response = build_rejection(431, "Request Header Fields Too Large")
            self.result = ServerHandshakeResult(None, response, False, [violation])
            return self.result
        assert self._reader.head is not None
        request = parse_request(self._reader.head)
        violations = validate_request(request, require_eid=self.require_eid)
        trailing = self._reader.trailing
        if any(v.blocking for v in violations):
            if request.http.get_all("Sec-WebSocket-Version") != [WS_VERSION]:
                version = [("Sec-WebSocket-Version", WS_VERSION)]
                response = build_rejection(426, "Upgrade Required", extra_headers=version)
            else:
                response = build_rejection(400, "Bad Request")
            self.result = ServerHandshakeResult(request, response, False, violations, trailing)
            return self.result
        offered = any(name == BBF_USP_EXTENSION for name, _ in request.extensions)
        send_ext = offered if self.answer_extension is None else self.answer_extension
        extensions: list[Extension] | None = None
        if send_ext and self.eid is not None:
            extensions = [(BBF_USP_EXTENSION, {"eid": self.eid})]
        assert request.key is not None
        response = build_response(
            request.key, subprotocol=USP_SUBPROTOCOL, extensions=extensions, extra_headers=self.extra_headers
        )
        self.result = ServerHandshakeResult(request, response, True, violations, trailing)
        return self.result
