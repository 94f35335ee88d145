"""TP-469 universal test metrics: judge any Record/Msg an EUT sends.

TP-469 ("Universal Test Metrics") lists four checks that apply to every
message an EUT sends, in every case:

1. the EUT's Endpoint ID is valid (R-ARC.2a, R-ARC.3..5);
2. Records and Msgs follow the USP schemas (R-ENC.0, R-ENC.1; with R-ENC.2/3
   for enums and oneofs and R-MSG.5..10 for header and body);
3. Path Names and Search Paths follow the path grammar (R-ARC.7);
4. Path Names the Agent reports from its instantiated data model use
   instance number addressing (R-MSG.3).

:func:`check_record_bytes` never raises on hostile input: every problem is a
:class:`Violation` naming the metric, the requirement, where it was found and
what is wrong. The case engine attaches them to every step's verdict.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from google.protobuf import unknown_fields
from google.protobuf.message import Message

from conformance.usp import endpoint, paths
from conformance.usp.messages import expected_msg_type, header_matches_body
from conformance.usp.records import (
    MsgDecodeError,
    RecordDecodeError,
    parse_msg,
    parse_record,
    record_kind,
)
from conformance.usp.schema import (
    KNOWN_USP_VERSIONS,
    Msg,
    PayloadSARState,
    PayloadSecurity,
    Record,
    is_repeated,
    msg_type_name,
)

# TP-469 universal metric numbers.
ENDPOINT_ID = 1
SCHEMA = 2
PATH_GRAMMAR = 3
INSTANCE_NUMBERS = 4


@dataclass(frozen=True)
class Violation:
    """One broken universal metric at one place in a Record or Msg."""

    metric: int
    requirement: str
    location: str
    message: str
    severity: str = "error"  # "error" for MUST, "warning" for SHOULD

    def __str__(self) -> str:
        return f"[metric {self.metric}, {self.requirement}] {self.location}: {self.message}"


@dataclass
class RecordCheck:
    """What :func:`check_record_bytes` found: the decoded parts and the violations."""

    record: Record | None = None
    msg: Msg | None = None
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(v.severity == "error" for v in self.violations)


# Fields that must hold exactly one member (R-ENC.3), by message full name.
_REQUIRED_ONEOFS: dict[str, str] = {
    "usp_record.Record": "record_type",
    "usp.Body": "msg_body",
    "usp.Request": "req_type",
    "usp.Response": "resp_type",
    "usp.AddResp.CreatedObjectResult.OperationStatus": "oper_status",
    "usp.DeleteResp.DeletedObjectResult.OperationStatus": "oper_status",
    "usp.SetResp.UpdatedObjectResult.OperationStatus": "oper_status",
    "usp.RegisterResp.RegisteredPathResult.OperationStatus": "oper_status",
    "usp.DeregisterResp.DeregisteredPathResult.OperationStatus": "oper_status",
    "usp.OperateResp.OperationResult": "operation_resp",
    "usp.Notify": "notification",
    "usp.Notify.OperationComplete": "operation_resp",
}

# Path-bearing fields, by (message full name, field name) -> how to judge them.
#   "reported": a path from the Agent's instantiated data model: grammar, no
#               search syntax, instance number addressing (R-MSG.3)
#   "echoed":   the Controller's requested path echoed back: grammar only
#   "supported": supported data model path ({i} placeholders allowed)
#   "relative": a parameter/command/event name relative to an object
_PATH_FIELDS: dict[tuple[str, str], str] = {
    ("usp.GetResp.RequestedPathResult", "requested_path"): "echoed",
    ("usp.GetResp.ResolvedPathResult", "resolved_path"): "reported",
    ("usp.GetInstancesResp.RequestedPathResult", "requested_path"): "echoed",
    ("usp.GetInstancesResp.CurrInstance", "instantiated_obj_path"): "reported",
    ("usp.GetSupportedDMResp.RequestedObjectResult", "req_obj_path"): "echoed",
    ("usp.GetSupportedDMResp.SupportedObjectResult", "supported_obj_path"): "supported",
    ("usp.GetSupportedDMResp.SupportedObjectResult", "divergent_paths"): "supported",
    ("usp.GetSupportedDMResp.SupportedParamResult", "param_name"): "relative",
    ("usp.GetSupportedDMResp.SupportedCommandResult", "command_name"): "relative",
    ("usp.GetSupportedDMResp.SupportedEventResult", "event_name"): "relative",
    ("usp.AddResp.CreatedObjectResult", "requested_path"): "echoed",
    ("usp.AddResp.CreatedObjectResult.OperationStatus.OperationSuccess", "instantiated_path"): "reported",
    ("usp.AddResp.ParameterError", "param"): "relative",
    ("usp.DeleteResp.DeletedObjectResult", "requested_path"): "echoed",
    ("usp.DeleteResp.DeletedObjectResult.OperationStatus.OperationSuccess", "affected_paths"): "reported",
    ("usp.DeleteResp.UnaffectedPathError", "unaffected_path"): "reported",
    ("usp.SetResp.UpdatedObjectResult", "requested_path"): "echoed",
    ("usp.SetResp.UpdatedInstanceFailure", "affected_path"): "reported",
    ("usp.SetResp.UpdatedInstanceResult", "affected_path"): "reported",
    ("usp.SetResp.ParameterError", "param"): "relative",
    ("usp.OperateResp.OperationResult", "executed_command"): "reported",
    ("usp.OperateResp.OperationResult", "req_obj_path"): "reported",
    ("usp.Notify.Event", "obj_path"): "reported",
    ("usp.Notify.Event", "event_name"): "relative",
    ("usp.Notify.ValueChange", "param_path"): "reported",
    ("usp.Notify.ObjectCreation", "obj_path"): "reported",
    ("usp.Notify.ObjectDeletion", "obj_path"): "reported",
    ("usp.Notify.OperationComplete", "obj_path"): "reported",
    ("usp.Notify.OperationComplete", "command_name"): "relative",
    ("usp.Error.ParamError", "param_path"): "echoed",
    ("usp.Get", "param_paths"): "echoed",
    ("usp.GetInstances", "obj_paths"): "echoed",
    ("usp.GetSupportedDM", "obj_paths"): "echoed",
    ("usp.Delete", "obj_paths"): "echoed",
    ("usp.Operate", "command"): "echoed",
    ("usp.Add.CreateObject", "obj_path"): "echoed",
    ("usp.Set.UpdateObject", "obj_path"): "echoed",
    ("usp.Register.RegistrationPath", "path"): "supported",
    ("usp.Deregister", "paths"): "supported",
}
# Map fields whose keys are parameter names relative to the owning object.
_RELATIVE_KEY_MAPS: frozenset[tuple[str, str]] = frozenset({
    ("usp.GetResp.ResolvedPathResult", "result_params"),
    ("usp.SetResp.UpdatedInstanceResult", "updated_params"),
    ("usp.GetInstancesResp.CurrInstance", "unique_keys"),
    ("usp.AddResp.CreatedObjectResult.OperationStatus.OperationSuccess", "unique_keys"),
    ("usp.Notify.ObjectCreation", "unique_keys"),
})


def check_record_bytes(
    data: bytes,
    *,
    eut_endpoint_id: str | None = None,
    suite_endpoint_id: str | None = None,
) -> RecordCheck:
    """Decode bytes an EUT sent and check every universal metric; never raises."""
    result = RecordCheck()
    try:
        rec = parse_record(data)
    except RecordDecodeError as exc:
        result.violations.append(Violation(SCHEMA, "R-ENC.1", "record", str(exc)))
        return result
    result.record = rec
    result.violations += check_record(rec, eut_endpoint_id=eut_endpoint_id,
                                      suite_endpoint_id=suite_endpoint_id)
    if rec.payload_security == PayloadSecurity.TLS12:
        return result  # the payload is TLS bytes: its Msg is checked once decrypted (R-E2E.41)
    if record_kind(rec) == "no_session_context" or (
        record_kind(rec) == "session_context"
        and rec.session_context.payload_sar_state == PayloadSARState.NONE
        and len(rec.session_context.payload) == 1
    ):
        payload = (rec.no_session_context.payload if record_kind(rec) == "no_session_context"
                   else rec.session_context.payload[0])
        try:
            result.msg = parse_msg(payload)
        except MsgDecodeError as exc:
            result.violations.append(Violation(SCHEMA, "R-ENC.0", "record.payload", str(exc)))
        else:
            result.violations += check_msg(result.msg, location="msg")
    return result


def check_record(rec: Record, *, eut_endpoint_id: str | None = None,
                 suite_endpoint_id: str | None = None) -> list[Violation]:
    """Record-level checks: schema, version, addressing and the sender's Endpoint ID."""
    out = list(_schema_violations(rec, "record", "R-ENC.1"))
    if not rec.version:
        out.append(Violation(SCHEMA, "R-ENC.1", "record.version", "version is empty"))
    elif rec.version not in KNOWN_USP_VERSIONS and not _looks_like_version(rec.version):
        out.append(Violation(SCHEMA, "R-ENC.1", "record.version",
                             f"version {rec.version!r} is not of the form major.minor"))
    if not rec.from_id:
        out.append(Violation(ENDPOINT_ID, "R-ARC.2", "record.from_id", "from_id is empty"))
    else:
        out += [
            Violation(ENDPOINT_ID, v.requirement, "record.from_id", v.message, v.severity)
            for v in endpoint.validate_endpoint_id(rec.from_id)
        ]
        if eut_endpoint_id is not None and rec.from_id != eut_endpoint_id:
            out.append(Violation(ENDPOINT_ID, "R-ARC.2", "record.from_id",
                                 f"from_id {rec.from_id!r} is not the EUT's Endpoint ID "
                                 f"{eut_endpoint_id!r}"))
    if suite_endpoint_id is not None and rec.to_id != suite_endpoint_id:
        out.append(Violation(SCHEMA, "R-E2E.1", "record.to_id",
                             f"to_id {rec.to_id!r} is not the receiver's Endpoint ID "
                             f"{suite_endpoint_id!r}"))
    # A session_context Record without payload is legal: it announces a session or carries
    # only expected_id (the rule against it, R-E2E.2, was deprecated in USP 1.2).
    return out


def check_msg(msg: Msg, *, location: str = "msg") -> list[Violation]:
    """Msg-level checks: schema (R-MSG.5..10), paths (R-ARC.7) and R-MSG.3."""
    out = list(_schema_violations(msg, location, "R-MSG.5"))
    if not msg.HasField("header"):
        out.append(Violation(SCHEMA, "R-MSG.6", f"{location}.header", "header is missing"))
    if not msg.HasField("body"):
        out.append(Violation(SCHEMA, "R-MSG.7", f"{location}.body", "body is missing"))
    if not msg.header.msg_id:
        out.append(Violation(SCHEMA, "R-MSG.8", f"{location}.header.msg_id", "msg_id is empty"))
    if msg.HasField("body") and expected_msg_type(msg) is not None and not header_matches_body(msg):
        out.append(Violation(
            SCHEMA, "R-MSG.10", f"{location}.header.msg_type",
            f"msg_type {msg_type_name(msg.header.msg_type)} does not match the body "
            f"(expected {msg_type_name(expected_msg_type(msg) or 0)})"))
    out += _path_violations(msg, location)
    return out


def _looks_like_version(text: str) -> bool:
    major, dot, minor = text.partition(".")
    return bool(dot) and major.isdigit() and minor.isdigit() and major.isascii() and minor.isascii()


# --- schema walking --------------------------------------------------------


def _walk(msg: Message, location: str) -> Iterator[tuple[Message, str]]:
    """Yield every sub-message with its location (depth-first, the root first)."""
    yield msg, location
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        if fd.message_type.GetOptions().map_entry:
            if fd.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    yield from _walk(item, f"{location}.{fd.name}[{key!r}]")
            continue
        if is_repeated(fd):
            for i, item in enumerate(value):
                yield from _walk(item, f"{location}.{fd.name}[{i}]")
        else:
            yield from _walk(value, f"{location}.{fd.name}")


def _schema_violations(root: Message, location: str, requirement: str) -> Iterator[Violation]:
    for msg, loc in _walk(root, location):
        desc = msg.DESCRIPTOR
        unknown = unknown_fields.UnknownFieldSet(msg)
        if len(unknown):
            numbers = sorted({f.field_number for f in unknown})
            yield Violation(SCHEMA, requirement, loc,
                            f"{desc.name} carries fields not in the schema: numbers {numbers}")
        for fd, value in msg.ListFields():
            if fd.enum_type is None:
                continue
            values = value if is_repeated(fd) else [value]
            for v in values:
                if fd.enum_type.values_by_number.get(v) is None:
                    yield Violation(SCHEMA, "R-ENC.2", f"{loc}.{fd.name}",
                                    f"{v} is not a value of {fd.enum_type.name}")
        for fd in desc.fields:
            # A singular sub-message that must carry a oneof, absent altogether
            # (e.g. CreatedObjectResult without oper_status).
            if (fd.message_type is not None and not is_repeated(fd)
                    and fd.message_type.full_name in _REQUIRED_ONEOFS
                    and fd.containing_oneof is None and not msg.HasField(fd.name)
                    and desc.full_name not in ("usp.Msg",)):
                yield Violation(SCHEMA, "R-ENC.3", f"{loc}.{fd.name}",
                                f"{desc.name} has no {fd.name} "
                                f"({_REQUIRED_ONEOFS[fd.message_type.full_name]} unset)")
        oneof = _REQUIRED_ONEOFS.get(desc.full_name)
        if oneof is not None and msg.WhichOneof(oneof) is None:
            # An empty Body/Record is reported by the header/body checks too;
            # R-ENC.3 names the missing oneof member itself.
            yield Violation(SCHEMA, "R-ENC.3", loc, f"{desc.name} has no {oneof} set")


# --- paths -------------------------------------------------------------------


def _path_violations(root: Message, location: str) -> list[Violation]:
    out: list[Violation] = []
    for msg, loc in _walk(root, location):
        name = msg.DESCRIPTOR.full_name
        for fd, value in msg.ListFields():
            mode = _PATH_FIELDS.get((name, fd.name))
            if mode is not None:
                values = list(value) if is_repeated(fd) else [value]
                for i, text in enumerate(values):
                    where = f"{loc}.{fd.name}" + (f"[{i}]" if len(values) > 1 else "")
                    out += _judge_path(text, mode, where)
            elif (name, fd.name) in _RELATIVE_KEY_MAPS:
                for key in value:
                    out += _judge_path(key, "relative", f"{loc}.{fd.name}[{key!r}]")
    return out


def _judge_path(text: str, mode: str, where: str) -> list[Violation]:
    if mode == "relative":
        problems = paths.validate_path(text, allow_search=False, allow_relative=True)
        return [Violation(PATH_GRAMMAR, "R-ARC.7", where, f"{text!r}: {p}") for p in problems]
    if mode == "supported":
        problems = paths.validate_path(text, allow_search=False, allow_supported=True)
        return [Violation(PATH_GRAMMAR, "R-ARC.7", where, f"{text!r}: {p}") for p in problems]
    # Search syntax in a reported path is judged by R-MSG.3 below, not as grammar.
    problems = paths.validate_path(text, allow_search=True, allow_supported=False)
    out = [Violation(PATH_GRAMMAR, "R-ARC.7", where, f"{text!r}: {p}") for p in problems]
    if mode == "reported" and not problems:
        out += [Violation(INSTANCE_NUMBERS, "R-MSG.3", where, f"{text!r}: {p}")
                for p in paths.check_instance_number_addressing(text)]
    return out


__all__ = [
    "ENDPOINT_ID",
    "INSTANCE_NUMBERS",
    "PATH_GRAMMAR",
    "SCHEMA",
    "RecordCheck",
    "Violation",
    "check_msg",
    "check_record",
    "check_record_bytes",
]
