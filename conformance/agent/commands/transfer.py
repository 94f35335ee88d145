"""File transfers of the reference Agent (the Download() of firmware images).

The reference Agent fetches from two kinds of source only, so that a
conformance run can never make it reach outside the test host:

* ``file://`` URLs (no host, or ``localhost``) naming a local file;
* ``http://`` and ``https://`` URLs whose host is a loopback address
  (``127.0.0.0/8``, ``::1``) or ``localhost``; redirects are followed only
  to such URLs, environment proxies are never used, and every transfer has a
  timeout and a size limit.

``Username``/``Password`` (TR-181 Download() arguments) are sent as HTTP
Basic credentials. A URL carrying a ``userinfo`` component is refused
(TR-181 ``Download().URL``).

:func:`parse_source_url` accepts any string and raises only
:class:`TransferError`; :func:`fetch` raises only :class:`TransferError`
(and ``asyncio.CancelledError`` when its task is canceled).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import ipaddress
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "DEFAULT_MAX_SIZE",
    "DEFAULT_TIMEOUT",
    "Source",
    "TransferError",
    "fetch",
    "is_loopback_host",
    "parse_source_url",
]

#: Seconds a whole transfer may take.
DEFAULT_TIMEOUT = 60.0
#: Largest file the agent accepts (bytes).
DEFAULT_MAX_SIZE = 64 * 1024 * 1024

_SCHEMES = ("file", "http", "https")


class TransferError(Exception):
    """A source that cannot be used or a transfer that failed.

    ``unsupported`` is true when the URL itself is unacceptable (syntax,
    scheme, userinfo), as opposed to a transfer that was tried and failed.
    """

    def __init__(self, message: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unsupported = unsupported


@dataclass(frozen=True)
class Source:
    """A parsed, acceptable source URL."""

    url: str
    scheme: str
    host: str
    port: int | None
    path: str

    @property
    def file_name(self) -> str:
        """Last path segment (``fw-1.2.3.bin``), may be empty."""
        return self.path.rstrip("/").rpartition("/")[2]


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP literal (no name resolution)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_source_url(text: object, *, allow_remote: bool = False) -> Source:
    """Check a Download() ``URL``; raise :class:`TransferError` when it is unusable.

    Non-loopback hosts raise (not ``unsupported``: a device would try and
    fail) unless ``allow_remote`` is set.
    """
    if not isinstance(text, str) or not text or len(text) > 2048:
        raise TransferError("URL is empty, too long or not a string", unsupported=True)
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise TransferError("URL contains whitespace or control characters", unsupported=True)
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
        host = parts.hostname or ""
    except ValueError as exc:
        raise TransferError(f"malformed URL: {exc}", unsupported=True) from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise TransferError(f"unsupported URL scheme {parts.scheme!r} (file, http, https)",
                            unsupported=True)
    if "@" in parts.netloc:
        raise TransferError("the URL must not carry user information (RFC 3986 userinfo)",
                            unsupported=True)
    path = urllib.parse.unquote(parts.path)
    if scheme == "file":
        if host not in ("", "localhost") or port is not None:
            raise TransferError("file URLs must name a local file", unsupported=True)
        if not path.startswith("/") or "\x00" in path:
            raise TransferError("file URLs need an absolute path", unsupported=True)
        return Source(text, scheme, "", None, path)
    if not host:
        raise TransferError("the URL has no host", unsupported=True)
    if not allow_remote and not is_loopback_host(host):
        raise TransferError(f"host {host!r} is not a loopback address; this agent only "
                            "downloads from the local host")
    return Source(text, scheme, host, port, path or "/")


async def fetch(source: Source, *, username: str = "", password: str = "",
                timeout: float = DEFAULT_TIMEOUT, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """The bytes of ``source``; :class:`TransferError` on any failure."""
    if source.scheme == "file":
        job = asyncio.to_thread(_read_file, Path(source.path), max_size)
    else:
        job = asyncio.to_thread(_http_get, source, username, password, timeout, max_size)
    try:
        return await asyncio.wait_for(job, timeout)
    except TimeoutError:
        raise TransferError(f"transfer took longer than {timeout:g} s") from None


def _read_limited(stream: IO[bytes], max_size: int) -> bytes:
    data = stream.read(max_size + 1)
    if len(data) > max_size:
        raise TransferError(f"file is larger than {max_size} bytes")
    return data


def _read_file(path: Path, max_size: int) -> bytes:
    try:
        with path.open("rb") as fh:
            return _read_limited(fh, max_size)
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror or exc}") from None


class _LoopbackRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to another acceptable (loopback http/https) URL."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: http.client.HTTPMessage, newurl: str) -> urllib.request.Request | None:
        try:
            target = parse_source_url(newurl)
            if target.scheme == "file":
                raise TransferError("not an http(s) URL")
        except TransferError as exc:
            fp.close()
            raise TransferError(f"refused redirect to {newurl!r}: {exc.message}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _http_get(source: Source, username: str, password: str, timeout: float,
              max_size: int) -> bytes:
    request = urllib.request.Request(source.url, headers={"User-Agent": "usp-conformance-agent"})
    if username or password:
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _LoopbackRedirects())
    try:
        with opener.open(request, timeout=timeout) as response:
            return _read_limited(response, max_size)
    except TransferError:
        raise
    except urllib.error.HTTPError as exc:
        exc.close()
        raise TransferError(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransferError(f"cannot fetch {source.url}: {reason}") from None
