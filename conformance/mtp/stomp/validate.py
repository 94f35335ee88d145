"""USP STOMP binding checks on single frames (TR-369 "STOMP Binding").

``validate(frame, role)`` returns the ``Violation`` list for a frame sent by
a USP Agent or Controller (the STOMP clients) or by the STOMP server.  It
never raises.  Checks that need connection state (frame order, which
destination was granted) belong to the broker; the optional keyword
arguments pass in the little state that single-frame checks can use.

Endpoint ID escaping: STOMP 1.2 leaves CONNECT/STOMP headers unescaped, yet
the note under R-STOMP.4 asks senders to escape the colons of the Endpoint
ID (OB-USP-Agent does).  ``usp_endpoint_id`` accepts both forms.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum

from conformance.mtp.stomp.frames import (
    BODY_COMMANDS,
    CLIENT_COMMANDS,
    COMMANDS,
    SERVER_COMMANDS,
    UNESCAPED_COMMANDS,
    USP_CONTENT_TYPE,
    Frame,
    StompDecodeError,
    content_length_matches,
    unescape_header,
)
from conformance.mtp.stomp.heartbeat import parse_heartbeat
from conformance.mtp.stomp.violation import Violation

STOMP = "STOMP-1.2"
_BLANK_LINE = re.compile(rb"\n\r?\n")


class Role(StrEnum):
    """Who sent the frame."""

    AGENT = "agent"
    CONTROLLER = "controller"
    SERVER = "server"


def validate(
    frame: Frame,
    role: Role | str,
    *,
    client_cert_auth: bool = False,
    expected_host: str | None = None,
    subscribe_dest: str | None = None,
    check_record: bool = True,
) -> list[Violation]:
    """Binding and STOMP 1.2 violations of one frame sent by ``role``.

    Never raises on frame content; an unknown ``role`` is a ``ValueError``.

    ``client_cert_auth``: the client authenticated with a certificate, so
    login/passcode are optional (R-STOMP.3).  ``expected_host``: the
    configured virtual host (R-STOMP.5).  ``subscribe_dest``: the value the
    server sent in CONNECTED, which SUBSCRIBE must use (R-STOMP.14).
    ``check_record``: SEND bodies must parse as a USP Record (R-STOMP.22).
    """
    role = Role(role)
    out: list[Violation] = []
    cmd = frame.command
    if cmd not in COMMANDS:
        return [Violation(STOMP, f"unknown command {cmd[:40]!r}")]
    if role is Role.SERVER:
        if cmd in CLIENT_COMMANDS:
            out.append(Violation(STOMP, f"{cmd} is a client frame, sent by the server"))
        else:
            out += _SERVER_CHECKS[cmd](frame)
    elif cmd in SERVER_COMMANDS:
        out.append(Violation(STOMP, f"{cmd} is a server frame, sent by a client"))
    elif cmd in ("BEGIN", "COMMIT", "ABORT"):
        out.append(Violation("R-STOMP.26", f"USP Endpoints must not send {cmd}"))
    elif cmd in ("ACK", "NACK"):
        out.append(Violation("R-STOMP.27", f"USP Endpoints must not send {cmd}"))
    elif cmd in ("CONNECT", "STOMP"):
        out += _check_connect(frame, role, client_cert_auth, expected_host)
    elif cmd == "SUBSCRIBE":
        out += _check_subscribe(frame, subscribe_dest)
    elif cmd == "SEND":
        out += _check_send(frame, check_record)
    elif cmd == "UNSUBSCRIBE" and not frame.header("id"):
        out.append(Violation("R-STOMP.28", "UNSUBSCRIBE without an id header"))
    out += _check_common(frame)
    return out


def usp_endpoint_id(frame: Frame) -> str | None:
    """The sender's Endpoint ID from a CONNECT/STOMP frame (R-STOMP.4).

    The value is unescaped when it holds only valid STOMP escapes (the
    R-STOMP.4 note) and returned verbatim otherwise (STOMP 1.2 rule).
    """
    value = frame.header("endpoint-id")
    if value is None or frame.command not in UNESCAPED_COMMANDS:
        return value
    try:
        return unescape_header(value)
    except StompDecodeError:
        return value


def _check_connect(frame: Frame, role: Role, client_cert_auth: bool,
                   expected_host: str | None) -> list[Violation]:
    out: list[Violation] = []
    if frame.command == "CONNECT":
        out.append(Violation("R-STOMP.2", "session must start with a STOMP frame, not CONNECT"))
    versions = [v.strip() for v in (frame.header("accept-version") or "").split(",")]
    if "1.2" not in versions:
        out.append(Violation("R-STOMP.2", "accept-version must be present and include 1.2"))
    host = frame.header("host")
    if not host:
        out.append(Violation("R-STOMP.2", "host header is required by STOMP 1.2"))
    elif expected_host is not None and host != expected_host:
        out.append(Violation("R-STOMP.5", f"host {host!r} is not the configured {expected_host!r}"))
    if not usp_endpoint_id(frame):
        out.append(Violation("R-STOMP.4", "endpoint-id header missing or empty"))
    if not client_cert_auth:
        for name in ("login", "passcode"):
            if not frame.has_header(name):
                out.append(Violation("R-STOMP.3", f"{name} header required without client cert"))
    # R-STOMP.8-10 bind agents; for a controller it is plain STOMP 1.2.
    hb_rule = "R-STOMP.10" if role is Role.AGENT else STOMP
    _, hb_violations = parse_heartbeat(frame.header("heart-beat"), rule=hb_rule)
    return out + hb_violations


def _check_subscribe(frame: Frame, subscribe_dest: str | None) -> list[Violation]:
    out: list[Violation] = []
    dest = frame.header("destination")
    if not dest:
        out.append(Violation("R-STOMP.13", "SUBSCRIBE without a destination header"))
    elif subscribe_dest is not None and dest != subscribe_dest:
        out.append(Violation("R-STOMP.14",
                             f"destination {dest!r} is not the subscribe-dest {subscribe_dest!r}"))
    if not frame.header("id"):
        out.append(Violation("R-STOMP.12", "SUBSCRIBE without an id header (STOMP 1.2)"))
    ack = frame.header("ack")
    if ack is not None and ack != "auto":
        out.append(Violation("R-STOMP.17", f"ack must be 'auto', got {ack!r}"))
    return out


def _check_send(frame: Frame, check_record: bool) -> list[Violation]:
    out: list[Violation] = []
    if not frame.header("destination"):
        out.append(Violation("R-STOMP.18", "SEND without a destination header"))
    length = frame.header("content-length")
    if length is None:
        out.append(Violation("R-STOMP.19", "SEND without a content-length header"))
    elif not content_length_matches(length, frame.body):
        out.append(Violation("R-STOMP.19",
                             f"content-length {length[:20]!r} != body length {len(frame.body)}"))
    ctype = frame.header("content-type")
    if ctype != USP_CONTENT_TYPE:
        out.append(Violation("R-STOMP.20",
                             f"content-type must be {USP_CONTENT_TYPE}, got {ctype!r}"))
    if not frame.header("reply-to-dest"):
        out.append(Violation("R-STOMP.21", "SEND without a reply-to-dest header"))
    if not frame.body:
        out.append(Violation("R-STOMP.22", "SEND body is empty (must be a USP Record)"))
    elif check_record and not _is_record(frame.body):
        out.append(Violation("R-STOMP.22", "SEND body is not a protobuf USP Record"))
    return out


def _is_record(body: bytes) -> bool:
    from conformance.usp import schema

    record = schema.Record()
    try:
        record.ParseFromString(body)
    except Exception:  # protobuf raises DecodeError, or RuntimeError on deep nesting
        return False
    return record.WhichOneof("record_type") is not None


def _check_common(frame: Frame) -> list[Violation]:
    out: list[Violation] = []
    if frame.body and frame.command not in BODY_COMMANDS:
        out.append(Violation(STOMP, f"{frame.command} frames must not have a body"))
    length = frame.header("content-length")
    if frame.command != "SEND" and length is not None and not content_length_matches(
            length, frame.body):
        out.append(Violation(STOMP, f"content-length {length[:20]!r} != body length"))
    if frame.escaped and frame.raw is not None and _raw_colon_in_value(frame.raw):
        out.append(Violation(STOMP, "unescaped ':' in a header value (must be \\c)"))
    return out


def _raw_colon_in_value(raw: bytes) -> bool:
    blank = _BLANK_LINE.search(raw)
    head = raw[: blank.start()] if blank else raw
    return any(b":" in line.partition(b":")[2] for line in head.split(b"\n")[1:])


def _check_connected(frame: Frame) -> list[Violation]:
    out = [] if frame.header("version") else [Violation(STOMP, "CONNECTED without version")]
    _, hb = parse_heartbeat(frame.header("heart-beat"), rule=STOMP)
    return out + hb


def _check_message(frame: Frame) -> list[Violation]:
    out = [Violation(STOMP, f"MESSAGE without {name}")
           for name in ("destination", "message-id", "subscription") if not frame.header(name)]
    if frame.header("content-type") == USP_CONTENT_TYPE and not frame.header("reply-to-dest"):
        out.append(Violation("R-STOMP.23", "USP MESSAGE without reply-to-dest"))
    return out


def _check_receipt(frame: Frame) -> list[Violation]:
    return [] if frame.header("receipt-id") else [Violation(STOMP, "RECEIPT without receipt-id")]


def _check_error(frame: Frame) -> list[Violation]:
    return []


_SERVER_CHECKS: dict[str, Callable[[Frame], list[Violation]]] = {
    "CONNECTED": _check_connected,
    "MESSAGE": _check_message,
    "RECEIPT": _check_receipt,
    "ERROR": _check_error,
}
