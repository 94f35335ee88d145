"""``Sec-WebSocket-Extensions`` grammar (RFC 6455 9.1, RFC 7230 3.2.6).

Parses extension lists into ``[(name, {param: value})]`` and formats them
back. Parameter values may be tokens or quoted-strings with backslash
escapes; a quoted value that is not a token after unescaping (for example
``eid="os::012345-ABC"``, which real USP agents send per R-WS.11a) is
accepted, because deployed agents rely on it, and can be listed with
:func:`non_token_values` for reporting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import WSParseError, WSUsageError
from .httphead import is_token

__all__ = [
    "BBF_USP_EXTENSION",
    "Extension",
    "ExtensionParams",
    "extension_param",
    "format_extensions",
    "non_token_values",
    "parse_extensions",
]

#: Extension name USP uses to carry the Endpoint ID (R-WS.10a, R-WS.11a).
BBF_USP_EXTENSION = "bbf-usp-protocol"

ExtensionParams = dict[str, str | None]
Extension = tuple[str, ExtensionParams]

_OWS = " \t"


def _qdtext(ch: str) -> bool:
    code = ord(ch)
    return ch in "\t " or code == 0x21 or 0x23 <= code <= 0x5B or 0x5D <= code <= 0x7E or 0x80 <= code <= 0xFF


def _escapable(ch: str) -> bool:
    code = ord(ch)
    return ch in "\t " or 0x21 <= code <= 0x7E or 0x80 <= code <= 0xFF


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ows(self) -> None:
        while self.peek() and self.peek() in _OWS:
            self.pos += 1

    def token(self, what: str) -> str:
        start = self.pos
        while self.peek() and is_token(self.peek()):
            self.pos += 1
        if start == self.pos:
            raise WSParseError(f"expected {what} at offset {start} in {self.text!r}")
        return self.text[start : self.pos]

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1  # opening DQUOTE
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise WSParseError(f"unterminated quoted-string at offset {start} in {self.text!r}")
            self.pos += 1
            if ch == '"':
                return "".join(out)
            if ch == "\\":
                nxt = self.peek()
                if not nxt or not _escapable(nxt):
                    raise WSParseError(f"bad quoted-pair at offset {self.pos - 1} in {self.text!r}")
                out.append(nxt)
                self.pos += 1
            elif _qdtext(ch):
                out.append(ch)
            else:
                raise WSParseError(f"invalid character {ch!r} in quoted-string in {self.text!r}")


def _parse_one(value: str, out: list[Extension]) -> None:
    scan = _Scanner(value)
    found = 0
    while True:
        # RFC 7230 7: empty list elements are tolerated.
        scan.skip_ows()
        while scan.peek() == ",":
            scan.pos += 1
            scan.skip_ows()
        if not scan.peek():
            break
        name = scan.token("extension name").lower()
        params: ExtensionParams = {}
        scan.skip_ows()
        while scan.peek() == ";":
            scan.pos += 1
            scan.skip_ows()
            pname = scan.token("parameter name").lower()
            scan.skip_ows()
            pvalue: str | None = None
            if scan.peek() == "=":
                scan.pos += 1
                scan.skip_ows()
                pvalue = scan.quoted() if scan.peek() == '"' else scan.token("parameter value")
                scan.skip_ows()
            params[pname] = pvalue
        if scan.peek() not in ("", ","):
            raise WSParseError(f"unexpected {scan.peek()!r} at offset {scan.pos} in {value!r}")
        out.append((name, params))
        found += 1
    if not found:
        raise WSParseError("empty extension list")


def parse_extensions(values: str | Iterable[str]) -> list[Extension]:
    """Parse one header value or all values of repeated headers, in order.

    Extension and parameter names are lower-cased (they are case-insensitive
    tokens); values keep their case. A parameter without ``=`` maps to None;
    a repeated parameter keeps its last value. Raises :class:`WSParseError`
    (and nothing else) when the text breaks the grammar.
    """
    out: list[Extension] = []
    for value in [values] if isinstance(values, str) else values:
        _parse_one(value, out)
    return out


def _format_value(value: str, always_quote: bool) -> str:
    if is_token(value) and not always_quote:
        return value
    for ch in value:
        if not (_qdtext(ch) or ch in '"\\'):
            raise WSUsageError(f"character {ch!r} cannot appear in a header parameter value")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def format_extensions(extensions: Sequence[Extension], *, always_quote: bool = False) -> str:
    """Serialise an extension list; values that are not tokens get quoted.

    Raises :class:`WSUsageError` for names that are not tokens or values
    holding characters no quoted-string can carry.
    """
    parts: list[str] = []
    for name, params in extensions:
        if not is_token(name):
            raise WSUsageError(f"extension name {name!r} is not a token")
        items = [name]
        for pname, pvalue in params.items():
            if not is_token(pname):
                raise WSUsageError(f"parameter name {pname!r} is not a token")
            items.append(pname if pvalue is None else f"{pname}={_format_value(pvalue, always_quote)}")
        parts.append("; ".join(items))
    return ", ".join(parts)


def extension_param(extensions: Sequence[Extension], name: str, param: str) -> str | None:
    """Value of ``param`` in the first extension called ``name`` (or None)."""
    for ext_name, params in extensions:
        if ext_name == name.lower():
            return params.get(param.lower())
    return None


def non_token_values(extensions: Sequence[Extension]) -> list[tuple[str, str, str]]:
    """``(extension, param, value)`` for values that are not tokens.

    RFC 6455 9.1 asks quoted values to be tokens after unescaping; USP
    Endpoint IDs (``os::...``) are not, so this is informational only.
    """
    return [
        (name, pname, pvalue)
        for name, params in extensions
        for pname, pvalue in params.items()
        if pvalue is not None and not is_token(pvalue)
    ]
