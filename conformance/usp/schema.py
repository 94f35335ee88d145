"""The USP 1.4 wire schema: one import point for the generated protobuf types.

Every other module takes ``Msg``, ``Record`` and friends from here, never from
``conformance.usp.pb`` directly, so that the generated code has one owner.
R-ENC.0 / R-ENC.1: messages and records follow usp-msg-1-4.proto and
usp-record-1-4.proto (our copies in ``conformance/usp/proto``).
"""

from __future__ import annotations

from conformance.usp.pb import usp_msg_1_4_pb2 as msg_pb2
from conformance.usp.pb import usp_record_1_4_pb2 as record_pb2

#: USP version this suite speaks natively (Record.version, GetSupportedProtocol).
USP_VERSION = "1.4"
#: Versions the suite understands when an EUT sends them (interop notes: 1.3
#: agents are common in the field).
KNOWN_USP_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4")

# --- Msg -----------------------------------------------------------------
Msg = msg_pb2.Msg
Header = msg_pb2.Header
Body = msg_pb2.Body
Request = msg_pb2.Request
Response = msg_pb2.Response
Error = msg_pb2.Error
MsgType = msg_pb2.Header.MsgType

# --- Record --------------------------------------------------------------
Record = record_pb2.Record
NoSessionContextRecord = record_pb2.NoSessionContextRecord
SessionContextRecord = record_pb2.SessionContextRecord
WebSocketConnectRecord = record_pb2.WebSocketConnectRecord
MQTTConnectRecord = record_pb2.MQTTConnectRecord
STOMPConnectRecord = record_pb2.STOMPConnectRecord
UDSConnectRecord = record_pb2.UDSConnectRecord
DisconnectRecord = record_pb2.DisconnectRecord
PayloadSARState = record_pb2.SessionContextRecord.PayloadSARState
PayloadSecurity = record_pb2.Record.PayloadSecurity

#: Request oneof field name -> (request MsgType, response MsgType, response field).
REQUEST_KINDS: dict[str, tuple[int, int | None, str | None]] = {
    "get": (MsgType.GET, MsgType.GET_RESP, "get_resp"),
    "get_supported_dm": (MsgType.GET_SUPPORTED_DM, MsgType.GET_SUPPORTED_DM_RESP,
                         "get_supported_dm_resp"),
    "get_instances": (MsgType.GET_INSTANCES, MsgType.GET_INSTANCES_RESP, "get_instances_resp"),
    "set": (MsgType.SET, MsgType.SET_RESP, "set_resp"),
    "add": (MsgType.ADD, MsgType.ADD_RESP, "add_resp"),
    "delete": (MsgType.DELETE, MsgType.DELETE_RESP, "delete_resp"),
    "operate": (MsgType.OPERATE, MsgType.OPERATE_RESP, "operate_resp"),
    "notify": (MsgType.NOTIFY, MsgType.NOTIFY_RESP, "notify_resp"),
    "get_supported_protocol": (MsgType.GET_SUPPORTED_PROTO, MsgType.GET_SUPPORTED_PROTO_RESP,
                               "get_supported_protocol_resp"),
    "register": (MsgType.REGISTER, MsgType.REGISTER_RESP, "register_resp"),
    "deregister": (MsgType.DEREGISTER, MsgType.DEREGISTER_RESP, "deregister_resp"),
}

#: Response oneof field name -> response MsgType.
RESPONSE_KINDS: dict[str, int] = {
    resp_field: resp_type
    for _req_type, resp_type, resp_field in REQUEST_KINDS.values()
    if resp_field is not None and resp_type is not None
}

#: MsgType value -> (body oneof, inner oneof field); ERROR maps to ("error", None).
MSG_TYPE_BODY: dict[int, tuple[str, str | None]] = {
    MsgType.ERROR: ("error", None),
    **{req_type: ("request", name) for name, (req_type, _r, _f) in REQUEST_KINDS.items()},
    **{resp_type: ("response", name) for name, resp_type in RESPONSE_KINDS.items()},
}


def msg_type_name(value: int) -> str:
    """Name of a MsgType value, or ``"UNKNOWN(<n>)"`` for values outside the enum."""
    try:
        return MsgType.Name(value)
    except ValueError:
        return f"UNKNOWN({value})"


def body_kind(msg: Msg) -> tuple[str | None, str | None]:
    """Return (``request``/``response``/``error``, inner oneof name) of a Msg body."""
    outer = msg.body.WhichOneof("msg_body")
    if outer is None:
        return None, None
    if outer == "error":
        return "error", None
    inner_oneof = "req_type" if outer == "request" else "resp_type"
    return outer, getattr(msg.body, outer).WhichOneof(inner_oneof)


def is_repeated(field: object) -> bool:
    """Whether a FieldDescriptor is repeated (protobuf >= 6.32 deprecates ``label``)."""
    flag = getattr(field, "is_repeated", None)
    if isinstance(flag, bool):
        return flag
    return field.label == field.LABEL_REPEATED  # type: ignore[attr-defined]
