"""Readable text renderings of Records and Msgs for logs, timelines and reports.

``render_record`` shows a Record in protobuf text format with each Msg
payload decoded in place (undecodable payloads shown as hex with the decode
error), ``render_msg`` shows a Msg, and ``summary`` gives the one-line form
used in progress output and timeline listings
(``GET_RESP id=uspc-4 Device.DeviceInfo. (3 params)``).
"""

from __future__ import annotations

import textwrap

from google.protobuf import text_format
from google.protobuf.message import Message

from conformance.usp.records import MsgDecodeError, parse_msg, record_kind
from conformance.usp.schema import Msg, Record, body_kind, is_repeated, msg_type_name

_HEX_LIMIT = 256  # bytes of an undecodable payload shown in renderings


def render_msg(msg: Msg) -> str:
    """Protobuf text format of a Msg, UTF-8 kept readable."""
    return text_format.MessageToString(msg, as_utf8=True).rstrip("\n")


def render_record(rec: Record, *, decode_payload: bool = True) -> str:
    """Text rendering of a Record; payload bytes are replaced by the decoded Msg."""
    if not decode_payload:
        return text_format.MessageToString(rec, as_utf8=True).rstrip("\n")
    head = Record()
    head.CopyFrom(rec)
    kind = record_kind(rec)
    payloads: list[bytes] = []
    if kind == "no_session_context":
        payloads = [rec.no_session_context.payload]
        head.no_session_context.ClearField("payload")
        head.no_session_context.SetInParent()
    elif kind == "session_context":
        payloads = list(rec.session_context.payload)
        head.session_context.ClearField("payload")
    lines = [text_format.MessageToString(head, as_utf8=True).rstrip("\n")]
    for i, payload in enumerate(payloads):
        lines.append(f"payload[{i}] ({len(payload)} bytes):")
        lines.append(textwrap.indent(_render_payload(payload, segmented=kind == "session_context"
                                                     and rec.session_context.payload_sar_state != 0), "  "))
    return "\n".join(lines)


def _render_payload(payload: bytes, *, segmented: bool) -> str:
    if segmented:
        return f"segment {_hex(payload)}"
    try:
        return render_msg(parse_msg(payload))
    except MsgDecodeError as exc:
        return f"undecodable Msg: {exc}\n{_hex(payload)}"


def _hex(data: bytes) -> str:
    shown = data[:_HEX_LIMIT].hex(" ")
    return shown + (f" ... (+{len(data) - _HEX_LIMIT} bytes)" if len(data) > _HEX_LIMIT else "")


def summary(obj: Message) -> str:
    """One line describing a Record or Msg."""
    if isinstance(obj, Record):
        return _record_summary(obj)
    if isinstance(obj, Msg):
        return _msg_summary(obj)
    return f"{obj.DESCRIPTOR.name} {text_format.MessageToString(obj, as_one_line=True)}"


def _record_summary(rec: Record) -> str:
    kind = record_kind(rec) or "no-record-type"
    head = f"Record[{kind}] {rec.from_id or '?'} -> {rec.to_id or '?'} v{rec.version or '?'}"
    if kind == "no_session_context":
        try:
            return f"{head}: {_msg_summary(parse_msg(rec.no_session_context.payload))}"
        except MsgDecodeError:
            return f"{head}: undecodable payload ({len(rec.no_session_context.payload)} bytes)"
    if kind == "session_context":
        sc = rec.session_context
        return (f"{head} session={sc.session_id} seq={sc.sequence_id} exp={sc.expected_id}"
                f" sar={sc.payload_sar_state}/{sc.payloadrec_sar_state} payloads={len(sc.payload)}")
    if kind == "mqtt_connect":
        return f"{head} topic={rec.mqtt_connect.subscribed_topic!r}"
    if kind == "stomp_connect":
        return f"{head} destination={rec.stomp_connect.subscribed_destination!r}"
    if kind == "disconnect":
        return f"{head} code={rec.disconnect.reason_code} reason={rec.disconnect.reason!r}"
    return head


def _msg_summary(msg: Msg) -> str:
    outer, inner = body_kind(msg)
    name = msg_type_name(msg.header.msg_type)
    head = f"{name} id={msg.header.msg_id!r}"
    if outer == "error":
        err = msg.body.error
        return f"{head} err_code={err.err_code} {err.err_msg!r}" + (
            f" param_errs={len(err.param_errs)}" if err.param_errs else "")
    if outer is None or inner is None:
        return f"{head} (empty body)"
    body = getattr(getattr(msg.body, outer), inner)
    detail = _paths_hint(inner, body)
    return f"{head} {inner}" + (f" {detail}" if detail else "")


def _paths_hint(kind: str, body: Message) -> str:
    if kind == "get":
        return ", ".join(body.param_paths)
    if kind in ("get_instances", "get_supported_dm"):
        return ", ".join(body.obj_paths)
    if kind == "delete":
        return ", ".join(body.obj_paths)
    if kind in ("add", "set"):
        objs = body.create_objs if kind == "add" else body.update_objs
        return ", ".join(o.obj_path for o in objs)
    if kind == "operate":
        return body.command
    if kind == "notify":
        which = body.WhichOneof("notification") or "no-notification"
        return f"sub={body.subscription_id!r} {which}"
    if kind == "get_resp":
        return f"({sum(len(r.resolved_path_results) for r in body.req_path_results)} resolved)"
    if kind.endswith("_resp"):
        field = next(iter(body.DESCRIPTOR.fields), None)
        if field is not None and is_repeated(field):
            return f"({len(getattr(body, field.name))} results)"
    return ""


__all__ = ["render_msg", "render_record", "summary"]
