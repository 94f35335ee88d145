"""Build USP Msgs (TR-369 "Messages") from plain data and from text format.

Case files describe messages either as a mapping that uses protobuf JSON
field names (``{"body": {"request": {"get": {"paramPaths": [...]}}}}``, the
original snake_case names are accepted too) or in protobuf text format, the
form TP-469 prints its examples in. Both end up here. The header is completed
when the caller leaves it out: ``msg_type`` is derived from the body (R-MSG.1:
it must agree with the body) and ``msg_id`` comes from a :class:`MsgIdAllocator`.

Also: :func:`request` / :func:`response` / :func:`error` shortcuts used by the
reference Controller and Agent, and :func:`to_mapping` for matchers.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from conformance.usp.schema import (
    MSG_TYPE_BODY,
    REQUEST_KINDS,
    RESPONSE_KINDS,
    Msg,
    MsgType,
    body_kind,
)


class MsgBuildError(ValueError):
    """A message description (mapping or text) does not fit the USP Msg schema."""


class MsgIdAllocator:
    """Hands out unique msg_ids (``<prefix>-<n>``); safe to share between threads.

    R-MSG.2 asks that a sender's msg_ids be unique among its outstanding
    requests; a per-run prefix also keeps ids distinct across runs.
    """

    def __init__(self, prefix: str = "uspc") -> None:
        self.prefix = prefix
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            n = next(self._counter)
        return f"{self.prefix}-{n}"

    __call__ = next


def expected_msg_type(msg: Msg) -> int | None:
    """The MsgType the body implies (R-MSG.1), or None if the body is empty."""
    outer, inner = body_kind(msg)
    if outer == "error":
        return MsgType.ERROR
    if outer == "request" and inner in REQUEST_KINDS:
        return REQUEST_KINDS[inner][0]
    if outer == "response" and inner in RESPONSE_KINDS:
        return RESPONSE_KINDS[inner]
    return None


def complete_header(msg: Msg, *, msg_id: str | None = None,
                    allocator: MsgIdAllocator | None = None, require_id: bool = True) -> Msg:
    """Fill a missing header.msg_type (from the body) and msg_id (given or allocated).

    With ``require_id=False`` a msg_id may stay empty, for the sender (the
    Controller) to allocate when it sends the message.
    """
    if not msg.HasField("header") or not msg.header.msg_type:
        implied = expected_msg_type(msg)
        # ERROR is 0, the proto3 default: only an error body can mean it.
        if implied is not None:
            msg.header.msg_type = implied
    if msg_id is not None:
        msg.header.msg_id = msg_id
    elif not msg.header.msg_id:
        if allocator is None:
            if not require_id:
                return msg
            raise MsgBuildError("message has no header.msg_id and no allocator was given")
        msg.header.msg_id = allocator.next()
    return msg


def msg_from_mapping(data: Mapping[str, Any], *, msg_id: str | None = None,
                     allocator: MsgIdAllocator | None = None) -> Msg:
    """Build a Msg from a mapping with protobuf JSON (or snake_case) field names.

    Enum values may be names (``"GET"``) or numbers. Unknown fields are an
    error naming the field. The header is completed by :func:`complete_header`.
    """
    if not isinstance(data, Mapping):
        raise MsgBuildError(f"a message must be a mapping, got {type(data).__name__}")
    msg = Msg()
    try:
        json_format.ParseDict(_plain(data, Msg.DESCRIPTOR), msg)
    except json_format.ParseError as exc:
        raise MsgBuildError(f"message does not fit the USP Msg schema: {exc}") from None
    return complete_header(msg, msg_id=msg_id, allocator=allocator)


def msg_from_text(text: str, *, msg_id: str | None = None,
                  allocator: MsgIdAllocator | None = None) -> Msg:
    """Build a Msg from protobuf text format, as TP-469 prints its messages.

    TP-469 writes variables as ``'<msg_id>'``; they are ordinary strings here
    and are meant to be substituted by the caller (the case engine) first,
    except ``header.msg_id``, which ``msg_id``/``allocator`` override when the
    text still holds the ``<msg_id>`` placeholder.
    """
    msg = Msg()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise MsgBuildError(f"message text does not fit the USP Msg schema: {exc}") from None
    if msg.header.msg_id == "<msg_id>":
        msg.header.msg_id = ""
    return complete_header(msg, msg_id=msg_id, allocator=allocator)


def request(kind: str, fields: Mapping[str, Any] | Message | None = None, *,
            msg_id: str | None = None, allocator: MsgIdAllocator | None = None) -> Msg:
    """Build a request Msg: ``request("get", {"param_paths": ["Device."]})``.

    Without ``msg_id`` or ``allocator`` the msg_id stays empty; the Controller
    allocates one when it sends the message.
    """
    if kind not in REQUEST_KINDS:
        raise MsgBuildError(f"unknown request {kind!r}; expected one of {sorted(REQUEST_KINDS)}")
    msg = Msg()
    _fill(getattr(msg.body.request, kind), fields)
    return complete_header(msg, msg_id=msg_id, allocator=allocator, require_id=False)


def response(kind: str, fields: Mapping[str, Any] | Message | None, *, msg_id: str) -> Msg:
    """Build a response Msg answering ``msg_id``: ``response("get_resp", {...}, msg_id=...)``."""
    if kind not in RESPONSE_KINDS:
        raise MsgBuildError(f"unknown response {kind!r}; expected one of {sorted(RESPONSE_KINDS)}")
    msg = Msg()
    _fill(getattr(msg.body.response, kind), fields)
    return complete_header(msg, msg_id=msg_id)


def error(err_code: int, err_msg: str = "", *, msg_id: str,
          param_errs: list[tuple[str, int, str]] | tuple[()] = ()) -> Msg:
    """Build an Error Msg answering ``msg_id`` (param_errs as (path, code, message))."""
    msg = Msg()
    msg.header.msg_id = msg_id
    msg.header.msg_type = MsgType.ERROR
    msg.body.error.err_code = err_code
    msg.body.error.err_msg = err_msg
    for path, code, text in param_errs:
        msg.body.error.param_errs.add(param_path=path, err_code=code, err_msg=text)
    return msg


def response_kind_for(request_kind: str) -> str | None:
    """The response oneof that answers a request oneof (``get`` -> ``get_resp``)."""
    entry = REQUEST_KINDS.get(request_kind)
    return entry[2] if entry else None


def header_matches_body(msg: Msg) -> bool:
    """True when header.msg_type agrees with the body (R-MSG.1)."""
    return MSG_TYPE_BODY.get(msg.header.msg_type, (None, None)) == body_kind(msg)


def to_mapping(msg: Message, *, json_names: bool = False) -> dict[str, Any]:
    """Plain-data view of a message (snake_case names by default; enums as names).

    Fields at their default value are included so that matchers can check
    for e.g. ``err_code: 0`` or ``allow_partial: false``.
    """
    return json_format.MessageToDict(
        msg,
        preserving_proto_field_name=not json_names,
        always_print_fields_with_no_presence=True,
    )


def _fill(target: Message, fields: Mapping[str, Any] | Message | None) -> None:
    if fields is None:
        target.SetInParent()
    elif isinstance(fields, Message):
        target.CopyFrom(fields)
    else:
        try:
            json_format.ParseDict(_plain(fields, target.DESCRIPTOR), target)
        except json_format.ParseError as exc:
            raise MsgBuildError(f"{target.DESCRIPTOR.name} does not fit the schema: {exc}") from None
        target.SetInParent()


def _plain(value: Any, descriptor: Any = None) -> Any:
    """Copy YAML-loaded data into dict/list for ParseDict, coercing scalars.

    USP carries every parameter and argument value as a string (R-ENC.6), so
    a YAML ``value: true`` or ``max_depth: 2`` is accepted: where the schema
    says string, booleans become ``"true"``/``"false"`` and numbers their
    decimal text. Other mismatches are left for ParseDict to report.
    """
    if isinstance(value, Mapping):
        if descriptor is None:
            return {str(k): _plain(v) for k, v in value.items()}
        if descriptor.GetOptions().map_entry:
            val_field = descriptor.fields_by_name["value"]
            return {str(k): _coerce(v, val_field) for k, v in value.items()}
        out = {}
        for key, item in value.items():
            field = descriptor.fields_by_name.get(str(key)) or _json_field(descriptor, str(key))
            out[str(key)] = _coerce(item, field) if field is not None else _plain(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, descriptor) for v in value]
    return value


def _json_field(descriptor: Any, name: str) -> Any:
    for field in descriptor.fields:
        if field.json_name == name:
            return field
    return None


def _coerce(value: Any, field: Any) -> Any:
    if field.message_type is not None:
        if isinstance(value, (list, tuple)):
            return [_plain(v, field.message_type) for v in value]
        return _plain(value, field.message_type)
    if field.type == field.TYPE_STRING:
        if isinstance(value, (list, tuple)):
            return [_scalar_text(v) for v in value]
        return _scalar_text(value)
    return _plain(value)


def _scalar_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


__all__ = [
    "MsgBuildError",
    "MsgIdAllocator",
    "complete_header",
    "error",
    "expected_msg_type",
    "header_matches_body",
    "msg_from_mapping",
    "msg_from_text",
    "request",
    "response",
    "response_kind_for",
    "to_mapping",
]
