"""Error and violation types shared by the WebSocket codec modules.

Hostile input never raises here: parsers return :class:`Violation` records
(or, for the extension-header grammar only, raise :class:`WSParseError`).
:class:`WSUsageError` is the single exception for *API misuse* by the
calling code (bad arguments, sending after close, feeding a finished
handshake).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Violation", "WSParseError", "WSUsageError"]


class WSUsageError(Exception):
    """The caller used the API wrongly (never raised for peer bytes)."""


class WSParseError(ValueError):
    """A header value does not match its grammar (extension lists only)."""


@dataclass(frozen=True)
class Violation:
    """One broken rule found in peer traffic.

    ``rule`` names the source (``R-WS.12`` or ``RFC6455 4.1``), ``level`` is
    the strength of the rule, ``blocking`` says whether the opening handshake
    must fail because of it, and ``close_code`` is the status code a
    receiver fails the connection with (frame-level rules only).
    """

    rule: str
    detail: str
    level: Literal["MUST", "SHOULD"] = "MUST"
    blocking: bool = True
    close_code: int | None = None
