"""Build and parse USP Records (TR-369 "Record" encoding, R-ENC.1).

A Record is the envelope every MTP carries. This module builds each record
kind (no_session_context, session_context, the MQTT/STOMP/WebSocket/UDS
connect records and disconnect), parses bytes from a peer into a ``Record``
and unwraps the ``Msg`` inside. It is pure: bytes in, objects out.

Parsing is deliberately split in two:

* :func:`parse_record` / :func:`parse_msg` only fail when the bytes are not
  decodable at all (raising :class:`RecordDecodeError` / :class:`MsgDecodeError`);
* strictness (unknown fields, unknown enum values, unset oneofs) is judged by
  :mod:`conformance.usp.metrics`, which returns violations instead of raising,
  so a malformed record from an EUT becomes a verdict, not a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError, Message

from conformance.usp.schema import (
    USP_VERSION,
    DisconnectRecord,
    MQTTConnectRecord,
    Msg,
    NoSessionContextRecord,
    PayloadSARState,
    PayloadSecurity,
    Record,
    SessionContextRecord,
    STOMPConnectRecord,
    UDSConnectRecord,
    WebSocketConnectRecord,
)

#: Record oneof field names, in schema order.
RECORD_KINDS = (
    "no_session_context",
    "session_context",
    "websocket_connect",
    "mqtt_connect",
    "stomp_connect",
    "disconnect",
    "uds_connect",
)
#: Record kinds an endpoint sends right after an MTP connection is up.
CONNECT_KINDS = frozenset({"websocket_connect", "mqtt_connect", "stomp_connect", "uds_connect"})


class RecordDecodeError(ValueError):
    """The bytes are not a decodable USP Record (R-ENC.1)."""


class MsgDecodeError(ValueError):
    """A Record payload is not a decodable USP Msg (R-ENC.0)."""


@dataclass(frozen=True)
class Security:
    """Record-level security fields, carried through unchanged (R-E2E.*)."""

    payload_security: int = PayloadSecurity.PLAINTEXT
    mac_signature: bytes = b""
    sender_cert: bytes = b""


def _envelope(to_id: str, from_id: str, version: str, security: Security | None) -> Record:
    sec = security or Security()
    return Record(
        version=version,
        to_id=to_id,
        from_id=from_id,
        payload_security=sec.payload_security,
        mac_signature=sec.mac_signature,
        sender_cert=sec.sender_cert,
    )


def _payload_bytes(payload: Msg | bytes) -> bytes:
    return payload.SerializeToString() if isinstance(payload, Message) else bytes(payload)


def no_session_record(
    payload: Msg | bytes,
    *,
    to_id: str,
    from_id: str,
    version: str = USP_VERSION,
    security: Security | None = None,
) -> Record:
    """Wrap a Msg (or already-serialized Msg bytes) in a no_session_context Record."""
    rec = _envelope(to_id, from_id, version, security)
    rec.no_session_context.CopyFrom(NoSessionContextRecord(payload=_payload_bytes(payload)))
    return rec


def session_record(
    *,
    to_id: str,
    from_id: str,
    session_id: int,
    sequence_id: int,
    expected_id: int,
    payloads: list[bytes] | tuple[bytes, ...] = (),
    retransmit_id: int = 0,
    payload_sar_state: int = PayloadSARState.NONE,
    payloadrec_sar_state: int = PayloadSARState.NONE,
    version: str = USP_VERSION,
    security: Security | None = None,
) -> Record:
    """Build a session_context Record; :mod:`conformance.usp.session` decides the ids."""
    rec = _envelope(to_id, from_id, version, security)
    rec.session_context.CopyFrom(
        SessionContextRecord(
            session_id=session_id,
            sequence_id=sequence_id,
            expected_id=expected_id,
            retransmit_id=retransmit_id,
            payload_sar_state=payload_sar_state,
            payloadrec_sar_state=payloadrec_sar_state,
            payload=list(payloads),
        )
    )
    return rec


def mqtt_connect_record(
    *, to_id: str, from_id: str, mqtt_version: int = MQTTConnectRecord.V5,
    subscribed_topic: str = "", version: str = USP_VERSION,
) -> Record:
    """MQTTConnectRecord: sent once the sender is connected and subscribed (R-MQTT.*)."""
    rec = _envelope(to_id, from_id, version, None)
    rec.mqtt_connect.CopyFrom(MQTTConnectRecord(version=mqtt_version, subscribed_topic=subscribed_topic))
    return rec


def stomp_connect_record(
    *, to_id: str, from_id: str, subscribed_destination: str = "", version: str = USP_VERSION,
) -> Record:
    """STOMPConnectRecord: sent once the sender is connected and subscribed (R-STOMP.*)."""
    rec = _envelope(to_id, from_id, version, None)
    rec.stomp_connect.CopyFrom(
        STOMPConnectRecord(version=STOMPConnectRecord.V1_2, subscribed_destination=subscribed_destination)
    )
    return rec


def websocket_connect_record(*, to_id: str, from_id: str, version: str = USP_VERSION) -> Record:
    """WebSocketConnectRecord: sent on every new WebSocket connection (R-WS.*)."""
    rec = _envelope(to_id, from_id, version, None)
    rec.websocket_connect.CopyFrom(WebSocketConnectRecord())
    return rec


def uds_connect_record(*, to_id: str, from_id: str, version: str = USP_VERSION) -> Record:
    """UDSConnectRecord: sent after a Unix domain socket handshake (R-UDS.*)."""
    rec = _envelope(to_id, from_id, version, None)
    rec.uds_connect.CopyFrom(UDSConnectRecord())
    return rec


def disconnect_record(
    *, to_id: str, from_id: str, reason: str = "", reason_code: int = 0, version: str = USP_VERSION,
) -> Record:
    """DisconnectRecord: the sender is about to close the MTP connection."""
    rec = _envelope(to_id, from_id, version, None)
    rec.disconnect.CopyFrom(DisconnectRecord(reason=reason, reason_code=reason_code))
    return rec


def connect_record(kind: str, *, to_id: str, from_id: str, **kwargs: object) -> Record:
    """Build the connect record for an MTP by name: mqtt, stomp, websocket or uds."""
    builders = {
        "mqtt": mqtt_connect_record,
        "stomp": stomp_connect_record,
        "websocket": websocket_connect_record,
        "uds": uds_connect_record,
    }
    try:
        builder = builders[kind]
    except KeyError:
        raise ValueError(f"unknown MTP {kind!r}; expected one of {sorted(builders)}") from None
    return builder(to_id=to_id, from_id=from_id, **kwargs)  # type: ignore[arg-type]


# --- parsing ---------------------------------------------------------------


def parse_record(data: bytes) -> Record:
    """Decode bytes into a Record; raise :class:`RecordDecodeError` if impossible."""
    rec = Record()
    try:
        rec.ParseFromString(bytes(data))
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise RecordDecodeError(f"not a USP Record ({len(data)} bytes): {exc}") from None
    return rec


def parse_msg(data: bytes) -> Msg:
    """Decode bytes into a Msg; raise :class:`MsgDecodeError` if impossible."""
    msg = Msg()
    try:
        msg.ParseFromString(bytes(data))
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise MsgDecodeError(f"not a USP Msg ({len(data)} bytes): {exc}") from None
    return msg


def record_kind(rec: Record) -> str | None:
    """Name of the Record's ``record_type`` oneof, or None when unset (R-ENC.3)."""
    return rec.WhichOneof("record_type")


def record_payload(rec: Record) -> bytes | None:
    """The Msg bytes of a no_session_context Record, or None for other kinds.

    Session-context payloads may be segmented; reassembly belongs to
    :class:`conformance.usp.session.SessionContext`.
    """
    if record_kind(rec) == "no_session_context":
        return rec.no_session_context.payload
    if record_kind(rec) == "session_context":
        sc = rec.session_context
        if sc.payload_sar_state == PayloadSARState.NONE and len(sc.payload) == 1:
            return sc.payload[0]
    return None


def unwrap_msg(rec: Record) -> Msg | None:
    """The Msg carried by a single-payload Record (None for connect/disconnect records).

    Raises :class:`MsgDecodeError` when a payload is present but undecodable.
    """
    payload = record_payload(rec)
    return None if payload is None else parse_msg(payload)


def to_mapping(rec: Record) -> dict[str, object]:
    """The non-payload fields of a Record as plain values, for matchers and reports.

    Integers stay integers, bytes become lowercase hex (``mac_signature``,
    session payloads), enums their names; ``type`` is the record_type oneof.
    The payload's Msg is not decoded here (the caller adds it as ``msg``).
    """
    out: dict[str, object] = {
        "version": rec.version, "to_id": rec.to_id, "from_id": rec.from_id,
        "payload_security": PayloadSecurity.Name(rec.payload_security)
        if rec.payload_security in PayloadSecurity.values() else int(rec.payload_security),
        "mac_signature": rec.mac_signature.hex(),
        "sender_cert": rec.sender_cert.decode("utf-8", "replace"),
        "type": record_kind(rec),
    }
    kind = record_kind(rec)
    if kind == "session_context":
        sc = rec.session_context
        out["session_context"] = {
            "session_id": sc.session_id, "sequence_id": sc.sequence_id,
            "expected_id": sc.expected_id, "retransmit_id": sc.retransmit_id,
            "payload_sar": _sar_name(sc.payload_sar_state),
            "payloadrec_sar": _sar_name(sc.payloadrec_sar_state),
            "payload_count": len(sc.payload), "payload_hex": [p.hex() for p in sc.payload]}
    elif kind == "no_session_context":
        out["no_session_context"] = {"payload_hex": rec.no_session_context.payload.hex()}
    elif kind == "disconnect":
        out["disconnect"] = {"reason": rec.disconnect.reason,
                             "reason_code": rec.disconnect.reason_code}
    return out


def _sar_name(value: int) -> str:
    return PayloadSARState.Name(value) if value in PayloadSARState.values() else str(value)


def serialize(obj: Record | Msg) -> bytes:
    """Serialize a Record or Msg deterministically (stable map ordering)."""
    return obj.SerializeToString(deterministic=True)


__all__ = [
    "CONNECT_KINDS",
    "RECORD_KINDS",
    "MsgDecodeError",
    "RecordDecodeError",
    "Security",
    "connect_record",
    "disconnect_record",
    "mqtt_connect_record",
    "no_session_record",
    "parse_msg",
    "parse_record",
    "record_kind",
    "record_payload",
    "serialize",
    "session_record",
    "stomp_connect_record",
    "to_mapping",
    "uds_connect_record",
    "unwrap_msg",
    "websocket_connect_record",
]
