"""MQTT 3.1.1 / 5.0 encoding: packet objects -> bytes (sans-I/O).

``encode(packet, version)`` writes a packet for a connection of the given
version; ``overrides`` bend any field or wire detail so that tests can send
deliberately malformed packets.  Values that cannot be put on the wire at
all raise ``MQTTEncodeError``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from typing import Any, Final

from conformance.mtp.mqtt.constants import (
    FIXED_FLAGS,
    MAX_REMAINING_LENGTH,
    MAX_STRING_BYTES,
    PacketType,
    ProtocolVersion,
)
from conformance.mtp.mqtt.errors import MQTTEncodeError
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
    version_of_level,
)
from conformance.mtp.mqtt.properties import PROPERTY_NAMES, PROPERTY_TYPES, Properties
from conformance.mtp.mqtt.text import encode_text

V5: Final = ProtocolVersion.V5

_BYTE, _TWO, _FOUR, _VBI, _STR, _PAIR, _BIN = range(1, 8)
_KIND: Final[dict[int, int]] = {int(pid): int(kind) for pid, kind in PROPERTY_TYPES.items()}
_NAME: Final[dict[int, str]] = {int(pid): name for pid, name in PROPERTY_NAMES.items()}
_pack_h = struct.Struct("!H").pack
_pack_i = struct.Struct("!I").pack
_BYTES: Final = [bytes((i,)) for i in range(256)]

#: Overrides that act on the wire rather than on a packet field (see ``encode``).
WIRE_OVERRIDES: Final = frozenset({
    "packet_type", "flags", "remaining_length", "remaining_length_bytes", "body",
    "trailing", "raw_properties", "property_length", "will_raw_properties",
    "will_property_length", "connect_flags", "acknowledge_flags", "short_form",
})


def encode_vbi(value: int) -> bytes:
    """Minimal Variable Byte Integer encoding of 0..268,435,455 (MQTT 5.0 §1.5.5)."""
    if 0 <= value < 0x80:
        return _BYTES[value]
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise MQTTEncodeError(f"{value} does not fit in a Variable Byte Integer")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _byte(value: Any, what: str) -> bytes:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise MQTTEncodeError(f"{what}={value!r} does not fit in a byte")
    return _BYTES[value]


def _two(value: Any, what: str) -> bytes:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise MQTTEncodeError(f"{what}={value!r} does not fit in a Two Byte Integer")
    return _pack_h(value)


def _four(value: Any, what: str) -> bytes:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise MQTTEncodeError(f"{what}={value!r} does not fit in a Four Byte Integer")
    return _pack_i(value)


def _str(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MQTTEncodeError(f"{what} must be a str, not {type(value).__name__}")
    data = encode_text(value)
    if len(data) > MAX_STRING_BYTES:
        raise MQTTEncodeError(f"{what} is {len(data)} bytes long, more than 65535")
    return _pack_h(len(data)) + data


def _bin(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise MQTTEncodeError(f"{what} must be bytes, not {type(value).__name__}")
    if len(value) > MAX_STRING_BYTES:
        raise MQTTEncodeError(f"{what} is {len(value)} bytes long, more than 65535")
    return _pack_h(len(value)) + bytes(value)


def _vbi_value(value: Any, what: str) -> bytes:
    if not isinstance(value, int):
        raise MQTTEncodeError(f"{what}={value!r} is not an int")
    try:
        return encode_vbi(value)
    except MQTTEncodeError as exc:
        raise MQTTEncodeError(f"{what}: {exc}") from None


def encode_properties(props: Properties) -> bytes:
    """The property list without its length prefix, in list order."""
    out = bytearray()
    for pid, value in props.items:
        kind = _KIND.get(pid) if isinstance(pid, int) else None
        if kind is None:
            raise MQTTEncodeError(
                f"unknown property identifier {pid!r} (use overrides['raw_properties'])")
        name = _NAME[pid]
        out.append(pid)
        if kind == _STR:
            out += _str(value, name)
        elif kind == _PAIR:
            if not (isinstance(value, tuple | list) and len(value) == 2):
                raise MQTTEncodeError(f"{name} must be a (name, value) pair, not {value!r}")
            out += _str(value[0], f"{name} name")
            out += _str(value[1], f"{name} value")
        elif kind == _BYTE:
            out += _byte(value, name)
        elif kind == _TWO:
            out += _two(value, name)
        elif kind == _FOUR:
            out += _four(value, name)
        elif kind == _VBI:
            out += _vbi_value(value, name)
        else:
            out += _bin(value, name)
    return bytes(out)


def _props_block(props: Properties, ov: Mapping[str, Any], prefix: str = "") -> bytes:
    raw = ov.get(prefix + "raw_properties")
    content = encode_properties(props) if raw is None else bytes(raw)
    length = ov.get(prefix + "property_length", len(content))
    return _vbi_value(length, prefix + "property_length") + content


def _wants_props(v5: bool, props: Properties, ov: Mapping[str, Any], what: str,
                 prefix: str = "") -> bool:
    if v5 or prefix + "raw_properties" in ov or prefix + "property_length" in ov:
        return True
    if props:
        raise MQTTEncodeError(f"{what}: MQTT 3.1.1 has no properties")
    return False


def _enc_connect(p: Connect, v5: bool, ov: Mapping[str, Any]) -> list[bytes]:
    will = p.will
    flags = ov.get("connect_flags")
    if flags is None:
        flags = (p.clean_start << 1) | (p.username is not None) << 7 \
            | (p.password is not None) << 6
        if will is not None:
            if not isinstance(will.qos, int) or not 0 <= will.qos <= 3:
                raise MQTTEncodeError(f"will.qos={will.qos!r} does not fit in 2 bits")
            flags |= 0x04 | will.qos << 3 | bool(will.retain) << 5
    out = [_str(p.protocol_name, "protocol_name"), _byte(p.protocol_level, "protocol_level"),
           _byte(flags, "connect_flags"), _two(p.keep_alive, "keep_alive")]
    if _wants_props(v5, p.properties, ov, "CONNECT"):
        out.append(_props_block(p.properties, ov))
    out.append(_str(p.client_id, "client_id"))
    if will is not None:
        if _wants_props(v5, will.properties, ov, "Will", "will_"):
            out.append(_props_block(will.properties, ov, "will_"))
        out.append(_str(will.topic, "will.topic"))
        out.append(_bin(will.payload, "will.payload"))
    if p.username is not None:
        out.append(_str(p.username, "username"))
    if p.password is not None:
        out.append(_bin(p.password, "password"))
    return out


def _enc_connack(p: Connack, v5: bool, ov: Mapping[str, Any]) -> list[bytes]:
    ack = ov.get("acknowledge_flags", int(bool(p.session_present)))
    out = [_byte(ack, "acknowledge_flags"), _byte(p.reason_code, "reason_code")]
    if _wants_props(v5, p.properties, ov, "CONNACK"):
        out.append(_props_block(p.properties, ov))
    return out


def _enc_publish(p: Publish, v5: bool, ov: Mapping[str, Any]) -> list[bytes]:
    _fixed_flags(p)  # checks qos
    out = [_str(p.topic, "topic")]
    if p.qos:
        out.append(_two(p.packet_id, "packet_id"))
    if _wants_props(v5, p.properties, ov, "PUBLISH"):
        out.append(_props_block(p.properties, ov))
    if not isinstance(p.payload, bytes | bytearray | memoryview):
        raise MQTTEncodeError(f"payload must be bytes, not {type(p.payload).__name__}")
    out.append(bytes(p.payload))
    return out


def _short_form(ov: Mapping[str, Any]) -> bool:
    return ov.get("short_form", True) and "raw_properties" not in ov \
        and "property_length" not in ov


def _enc_pub_response(p: _PubResponse, v5: bool, ov: Mapping[str, Any]) -> list[bytes]:
    out = [_two(p.packet_id, "packet_id")]
    if not v5:
        if p.reason_code or p.properties:
            raise MQTTEncodeError(f"{p.TYPE.name}: MQTT 3.1.1 has no reason code or properties")
        return out
    short = _short_form(ov)
    if short and not p.properties and p.reason_code == 0:
        return out
    out.append(_byte(p.reason_code, "reason_code"))
    if not short or p.properties:
        out.append(_props_block(p.properties, ov))
    return out


def _enc_subscribe(p: Subscribe, v5: bool, ov: Mapping[str, Any]) -> list[bytes]:
    out = [_two(p.packet_id, "packet_id")]
    if _wants_props(v5, p.properties, ov, "SUBSCRIBE"):
        out.append(_props_block(p.properties, ov))
    for index, sub in enumerate(p.subscriptions):
        for name in ("qos", "retain_handling", "reserved"):
            value = getattr(sub, name)
            if not isinstance(value, int) or not 0 <= value <= 3:
                raise MQTTEncodeError(f"subscriptions[{index}].{name}={value!r} "
                                      "does not fit in 2 bits")
        out.append(_str(sub.topic_filter, f"subscriptions[{index}].topic_filter"))
        out.append(_BYTES[sub.options])
    return out


def _codes(codes: list[int]) -> bytes:
    try:
        return bytes(codes)
    except (ValueError, TypeError) as exc:
        raise MQTTEncodeError(f"reason_codes: {exc}") from None


def _enc_suback(p: Suback, v5: bool, ov: Mapping[str, Any]) -> list[bytes]:
    out = [_two(p.packet_id, "packet_id")]
    if _wants_props(v5, p.properties, ov, "SUBACK"):
        out.append(_props_block(p.properties, ov))
    out.append(_codes(p.reason_codes))
    return out


def _enc_unsubscribe(p: Unsubscribe, v5: bool, ov: Mapping[str, Any]) -> list[bytes]:
    out = [_two(p.packet_id, "packet_id")]
    if _wants_props(v5, p.properties, ov, "UNSUBSCRIBE"):
        out.append(_props_block(p.properties, ov))
    out.extend(_str(f, f"topic_filters[{i}]") for i, f in enumerate(p.topic_filters))
    return out


def _enc_unsuback(p: Unsuback, v5: bool, ov: Mapping[str, Any]) -> list[bytes]:
    out = [_two(p.packet_id, "packet_id")]
    if _wants_props(v5, p.properties, ov, "UNSUBACK"):
        out.append(_props_block(p.properties, ov))
    elif p.reason_codes:
        raise MQTTEncodeError("UNSUBACK: MQTT 3.1.1 has no reason codes")
    out.append(_codes(p.reason_codes))
    return out


def _enc_empty(p: Packet, v5: bool, ov: Mapping[str, Any]) -> list[bytes]:
    return []


def _enc_disconnect(p: Disconnect | Auth, v5: bool, ov: Mapping[str, Any]) -> list[bytes]:
    if not v5:
        if isinstance(p, Auth):
            raise MQTTEncodeError("AUTH does not exist in MQTT 3.1.1")
        if p.reason_code or p.properties:
            raise MQTTEncodeError("DISCONNECT: MQTT 3.1.1 has no reason code or properties")
        return []
    short = _short_form(ov)
    if short and not p.properties and p.reason_code == 0:
        return []
    out = [_byte(p.reason_code, "reason_code")]
    # DISCONNECT may stop after its Reason Code (MQTT 5.0 §3.14.2.2.1); AUTH may not.
    if not short or p.properties or isinstance(p, Auth):
        out.append(_props_block(p.properties, ov))
    return out


_ENCODERS: Final[dict[int, Callable[..., list[bytes]]]] = {
    PacketType.CONNECT: _enc_connect,
    PacketType.CONNACK: _enc_connack,
    PacketType.PUBLISH: _enc_publish,
    PacketType.PUBACK: _enc_pub_response,
    PacketType.PUBREC: _enc_pub_response,
    PacketType.PUBREL: _enc_pub_response,
    PacketType.PUBCOMP: _enc_pub_response,
    PacketType.SUBSCRIBE: _enc_subscribe,
    PacketType.SUBACK: _enc_suback,
    PacketType.UNSUBSCRIBE: _enc_unsubscribe,
    PacketType.UNSUBACK: _enc_unsuback,
    PacketType.PINGREQ: _enc_empty,
    PacketType.PINGRESP: _enc_empty,
    PacketType.DISCONNECT: _enc_disconnect,
    PacketType.AUTH: _enc_disconnect,
}

_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _fixed_flags(packet: Packet) -> int:
    if isinstance(packet, Publish):
        if not isinstance(packet.qos, int) or not 0 <= packet.qos <= 3:
            raise MQTTEncodeError(f"qos={packet.qos!r} does not fit in 2 bits")
        return bool(packet.dup) << 3 | packet.qos << 1 | bool(packet.retain)
    return FIXED_FLAGS[packet.TYPE]


def encode(packet: Packet, version: ProtocolVersion | int | None = None, *,
           overrides: Mapping[str, Any] | None = None) -> bytes:
    """Encode ``packet`` for a connection of ``version`` (default 5.0).

    A CONNECT always uses the layout of its own ``protocol_level``.
    ``overrides`` builds deliberately malformed packets.  A key naming a
    packet field replaces that field first (``{"qos": 3, "packet_id": 0}``);
    the wire-level keys are:

    * ``packet_type`` / ``flags``: the two nibbles of the first byte;
    * ``remaining_length``: the value written (the body is unchanged), or
      ``remaining_length_bytes``: the raw encoding (e.g. ``b"\\x80\\x00"``);
    * ``body``: the whole variable header and payload; ``trailing``: bytes
      appended after the body (counted in the Remaining Length);
    * ``raw_properties`` / ``property_length``: the property bytes (without
      length) and the Property Length value; ``will_raw_properties`` /
      ``will_property_length`` do the same for the Will Properties.  Either
      forces a property block even for MQTT 3.1.1;
    * ``connect_flags`` (CONNECT), ``acknowledge_flags`` (CONNACK): the byte;
    * ``short_form=False``: write Reason Code and Property Length even when
      the 5.0 acknowledgement, DISCONNECT or AUTH could omit them.

    Raises ``MQTTEncodeError`` when a value does not fit its field, for an
    unknown override, or for 5.0-only content in a 3.1.1 packet.
    """
    ov: dict[str, Any] = dict(overrides) if overrides else {}
    if ov:
        names = _FIELD_NAMES.get(type(packet))
        if names is None:
            names = _FIELD_NAMES[type(packet)] = frozenset(f.name for f in fields(packet))
        changes = {key: ov.pop(key) for key in list(ov)
                   if key in names and key not in WIRE_OVERRIDES}
        unknown = set(ov) - WIRE_OVERRIDES
        if unknown:
            raise MQTTEncodeError(f"unknown override(s) for {packet.TYPE.name}: "
                                  f"{sorted(unknown)}")
        if changes:
            packet = replace(packet, **changes)
    if isinstance(packet, Connect):
        v5 = packet.version == V5
    else:
        v5 = version is None or version_of_level(int(version)) == V5
    body = bytes(ov["body"]) if "body" in ov else b"".join(
        _ENCODERS[packet.TYPE](packet, v5, ov))
    if "trailing" in ov:
        body += bytes(ov["trailing"])
    flags = ov["flags"] if "flags" in ov else _fixed_flags(packet)
    first = (ov.get("packet_type", packet.TYPE) & 0x0F) << 4 | (flags & 0x0F)
    if "remaining_length_bytes" in ov:
        length = bytes(ov["remaining_length_bytes"])
    else:
        length = _vbi_value(ov.get("remaining_length", len(body)), "remaining_length")
    return _BYTES[first] + length + body
