"""STOMP 1.2 heart-beat header parsing and interval negotiation.

A ``heart-beat`` header is ``<x>,<y>`` in milliseconds: in a CONNECT/STOMP
frame ``x`` is the smallest interval the client can send at and ``y`` the
interval it wants to receive at (0 = cannot / does not want); CONNECTED
carries the server's pair with the same meaning.  R-STOMP.8 to R-STOMP.11
make agents use this negotiation.
"""

from __future__ import annotations

import re

from conformance.mtp.stomp.violation import Violation

HeartBeatPair = tuple[int, int]
_STRICT = re.compile(r"[0-9]+,[0-9]+")
_LOOSE = re.compile(r"\s*([0-9]+)\s*,\s*([0-9]+)\s*")


def parse_heartbeat(value: str | None, *, rule: str = "R-STOMP.10"
                    ) -> tuple[HeartBeatPair, list[Violation]]:
    """Parse a ``heart-beat`` header value, never raising.

    A missing header means ``(0, 0)``.  Surrounding blanks are tolerated but
    reported; anything else unusable yields ``(0, 0)`` and a violation.
    """
    if value is None:
        return (0, 0), []
    if _STRICT.fullmatch(value):
        x, y = value.split(",")
        return (int(x), int(y)), []
    loose = _LOOSE.fullmatch(value)
    if loose:
        return (int(loose[1]), int(loose[2])), [
            Violation(rule, f"heart-beat {value!r} has blanks; expected '<int>,<int>'")]
    return (0, 0), [Violation(rule, f"heart-beat {value[:40]!r} is not '<int>,<int>'")]


def format_heartbeat(pair: HeartBeatPair) -> str:
    """Header value for ``pair`` (``"10000,0"``)."""
    x, y = pair
    if x < 0 or y < 0:
        raise ValueError("heart-beat intervals cannot be negative")
    return f"{x},{y}"


def negotiate_heartbeat(client_hb: HeartBeatPair, server_hb: HeartBeatPair) -> HeartBeatPair:
    """Effective intervals per STOMP 1.2 "Heart-beating".

    Returns ``(client_to_server_ms, server_to_client_ms)``: each direction is
    0 (off) when the sender cannot send or the receiver does not want them,
    else the larger of the two wishes.
    """
    cx, cy = client_hb
    sx, sy = server_hb
    if min(cx, cy, sx, sy) < 0:
        raise ValueError("heart-beat intervals cannot be negative")
    client_to_server = 0 if cx == 0 or sy == 0 else max(cx, sy)
    server_to_client = 0 if sx == 0 or cy == 0 else max(sx, cy)
    return client_to_server, server_to_client
