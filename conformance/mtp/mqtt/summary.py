"""JSON-able summaries of MQTT packets, properties and violations for the timeline.

The broker records every packet both ways as ``mqtt.<TYPE>`` with the raw
bytes and the summary made here.  Properties become a dict keyed by the
snake_case property name (``response_topic``, ``content_type``); User
Properties are a list of ``[name, value]`` pairs in wire order,
Subscription Identifiers a list of ints, Binary Data a hex string.  A
property that appears more than once (a violation except for the two list
kinds) keeps its first value and lists every value under ``duplicates``.
Payloads are shown by length only; the bytes are in the entry's ``raw``.
"""

from __future__ import annotations

from typing import Any, Final

from conformance.mtp.mqtt.constants import PacketType, ProtocolVersion
from conformance.mtp.mqtt.errors import Violation
from conformance.mtp.mqtt.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Publish,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    _PubResponse,
)
from conformance.mtp.mqtt.properties import Properties, PropertyId
from conformance.mtp.mqtt.reason_codes import ConnectReturnCode, reason_code_name

__all__ = ["KINDS", "packet_summary", "properties_summary", "violation_summary"]

P = PropertyId
V5: Final = ProtocolVersion.V5
#: Timeline kind per packet type number (``mqtt.PUBLISH``).
KINDS: Final[dict[int, str]] = {int(t): f"mqtt.{t.name}" for t in PacketType}
_KEYS: Final[dict[int, str]] = {int(p): p.name.lower() for p in PropertyId}


def _value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, tuple):
        return [_value(v) for v in value]
    return value


def properties_summary(props: Properties) -> dict[str, Any]:
    """The properties as a JSON-able dict (see the module docstring)."""
    out: dict[str, Any] = {}
    if not props.items:
        return out
    dups: dict[str, list[Any]] | None = None
    for pid, value in props.items:
        if pid == P.USER_PROPERTY:
            out.setdefault("user_properties", []).append(_value(value))
            continue
        if pid == P.SUBSCRIPTION_IDENTIFIER:
            out.setdefault("subscription_identifiers", []).append(value)
            continue
        key = _KEYS.get(pid, f"0x{pid:02x}")
        if key in out:
            if dups is None:
                dups = {}
            dups.setdefault(key, [out[key]]).append(_value(value))
        else:
            out[key] = _value(value)
    if dups:
        out["duplicates"] = dups
    return out


def _reason(ptype: int, code: int, v5: bool) -> str:
    if ptype == PacketType.CONNACK and not v5:
        try:
            return ConnectReturnCode(code).name
        except ValueError:
            return f"reserved ({code})"
    return reason_code_name(ptype, code)


def packet_summary(packet: Packet, version: ProtocolVersion | int | None = V5) -> dict[str, Any]:
    """A JSON-able dict of every field of ``packet`` (payloads by length).

    ``version`` (5 or 4) only decides how reason codes are named; a CONNECT
    is summarised by its own Protocol Level.
    """
    ptype = packet.TYPE
    v5 = version is None or int(version) >= V5
    out: dict[str, Any] = {"type": ptype.name}
    if isinstance(packet, Publish):
        out["topic"] = packet.topic
        out["qos"] = packet.qos
        out["retain"] = packet.retain
        out["dup"] = packet.dup
        if packet.qos:
            out["packet_id"] = packet.packet_id
        out["payload_length"] = len(packet.payload)
        out["properties"] = properties_summary(packet.properties)
    elif isinstance(packet, _PubResponse):
        out["packet_id"] = packet.packet_id
        out["reason_code"] = packet.reason_code
        out["reason"] = _reason(ptype, packet.reason_code, v5)
        out["properties"] = properties_summary(packet.properties)
    elif isinstance(packet, Connect):
        out.update(_connect(packet))
    elif isinstance(packet, Connack):
        out["session_present"] = packet.session_present
        out["reason_code"] = packet.reason_code
        out["reason"] = _reason(ptype, packet.reason_code, v5)
        out["properties"] = properties_summary(packet.properties)
        if packet.acknowledge_flags is not None:
            out["acknowledge_flags"] = packet.acknowledge_flags
    elif isinstance(packet, Subscribe):
        out["packet_id"] = packet.packet_id
        out["subscriptions"] = [
            {"topic_filter": s.topic_filter, "qos": s.qos, "no_local": s.no_local,
             "retain_as_published": s.retain_as_published,
             "retain_handling": s.retain_handling, "options": s.options}
            for s in packet.subscriptions]
        out["properties"] = properties_summary(packet.properties)
    elif isinstance(packet, Suback | Unsuback):
        out["packet_id"] = packet.packet_id
        out["reason_codes"] = list(packet.reason_codes)
        out["reasons"] = [_reason(ptype, c, v5) for c in packet.reason_codes]
        out["properties"] = properties_summary(packet.properties)
    elif isinstance(packet, Unsubscribe):
        out["packet_id"] = packet.packet_id
        out["topic_filters"] = list(packet.topic_filters)
        out["properties"] = properties_summary(packet.properties)
    elif isinstance(packet, Disconnect | Auth):
        out["reason_code"] = packet.reason_code
        out["reason"] = _reason(ptype, packet.reason_code, v5)
        out["properties"] = properties_summary(packet.properties)
    if packet.flags is not None and ptype != PacketType.PUBLISH:
        out["flags"] = packet.flags
    return out


def _connect(p: Connect) -> dict[str, Any]:
    out: dict[str, Any] = {
        "protocol_name": p.protocol_name, "protocol_level": p.protocol_level,
        "clean_start": p.clean_start, "keep_alive": p.keep_alive, "client_id": p.client_id,
        "username": p.username,
        "password_length": None if p.password is None else len(p.password),
        "properties": properties_summary(p.properties),
    }
    if p.connect_flags is not None:
        out["connect_flags"] = p.connect_flags
    if p.will is not None:
        out["will"] = {"topic": p.will.topic, "qos": p.will.qos, "retain": p.will.retain,
                       "payload_length": len(p.will.payload),
                       "properties": properties_summary(p.will.properties)}
    return out


def violation_summary(v: Violation) -> dict[str, Any]:
    """A violation as ``{rule, message, code, field, severity, reason_code}``."""
    return {"rule": v.rule, "message": v.message, "code": v.code, "field": v.field,
            "severity": str(v.severity), "reason_code": v.reason_code}
