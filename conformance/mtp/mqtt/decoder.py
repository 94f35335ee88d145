"""MQTT 3.1.1 / 5.0 decoding: bytes -> packet objects (sans-I/O).

``decode(data, version)`` parses exactly one packet; ``MQTTDecoder`` is the
streaming form for one direction of a connection: ``feed(chunk)`` returns an
iterator over every packet the bytes so far complete, whatever the chunking,
and learns the protocol version from a CONNECT (its Protocol Level) as a
server's decoder must.

Malformed input raises ``MQTTDecodeError`` and never any other exception.
Anything that parses is returned as a packet even when it breaks a rule
(``validate()`` reports those).  A few problems are visible only in the
bytes: a Variable Byte Integer that is not minimal (MQTT-1.5.5-1), or a 5.0
CONNACK, SUBACK, UNSUBACK or AUTH that ends where its Property Length should
be (MQTT-2.2.2-1); they are recorded in ``packet.wire_violations``.
Strings that are not valid UTF-8 are kept as lone surrogates (see ``text``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any, Final

from conformance.mtp.mqtt.constants import PacketType, ProtocolVersion
from conformance.mtp.mqtt.errors import MQTTDecodeError, Violation
from conformance.mtp.mqtt.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    _PubResponse,
    version_of_level,
)
from conformance.mtp.mqtt.properties import PROPERTY_NAMES, PROPERTY_TYPES, Properties

V5: Final = ProtocolVersion.V5

# Property data types as plain ints for a fast dispatch.
_BYTE, _TWO, _FOUR, _VBI, _STR, _PAIR, _BIN = range(1, 8)
_KIND: Final[dict[int, int]] = {int(pid): int(kind) for pid, kind in PROPERTY_TYPES.items()}
_NAME: Final[dict[int, str]] = {int(pid): name for pid, name in PROPERTY_NAMES.items()}
_unpack_i = struct.Struct("!I").unpack_from

Notes = list[tuple[str, int, str]]


def _vbi(data: bytes, pos: int, end: int, what: str, notes: Notes
         ) -> tuple[int, int]:
    start = pos
    value = 0
    shift = 0
    while True:
        if pos >= end:
            raise MQTTDecodeError(f"{what}: Variable Byte Integer is truncated", start)
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and pos - start > 1:
                notes.append(("non-minimal-vbi", start, what))
            return value, pos
        shift += 7
        if shift == 28:
            raise MQTTDecodeError(f"{what}: Variable Byte Integer longer than 4 bytes", start)


def decode_vbi(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Read a Variable Byte Integer at ``offset``; returns (value, next offset)."""
    return _vbi(data, offset, len(data), "Variable Byte Integer", [])


def _u16(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    if end - pos < 2:
        raise MQTTDecodeError(f"{what}: Two Byte Integer is truncated", pos)
    return data[pos] << 8 | data[pos + 1], pos + 2


def _u8(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    if pos >= end:
        raise MQTTDecodeError(f"{what}: byte is missing", pos)
    return data[pos], pos + 1


def _blob(data: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    if end - pos < 2:
        raise MQTTDecodeError(f"{what}: length prefix is truncated", pos)
    stop = pos + 2 + (data[pos] << 8 | data[pos + 1])
    if stop > end:
        raise MQTTDecodeError(f"{what}: length {stop - pos - 2} runs past the end", pos)
    return data[pos + 2:stop], stop


def _text(data: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    if end - pos < 2:
        raise MQTTDecodeError(f"{what}: length prefix is truncated", pos)
    stop = pos + 2 + (data[pos] << 8 | data[pos + 1])
    if stop > end:
        raise MQTTDecodeError(f"{what}: length {stop - pos - 2} runs past the end", pos)
    return data[pos + 2:stop].decode("utf-8", "surrogateescape"), stop


def _properties(data: bytes, pos: int, end: int, notes: Notes, what: str = "properties"
                ) -> tuple[Properties, int]:
    start = pos
    length, pos = _vbi(data, pos, end, f"{what} length", notes)
    stop = pos + length
    if stop > end:
        raise MQTTDecodeError(f"{what} length {length} runs past the end", start)
    items: list[tuple[int, Any]] = []
    while pos < stop:
        id_at = pos
        pid = data[pos]
        if pid < 0x80:
            pos += 1
        else:
            pid, pos = _vbi(data, pos, stop, "property identifier", notes)
        kind = _KIND.get(pid)
        if kind is None:
            raise MQTTDecodeError(f"unknown property identifier {pid:#04x}", id_at)
        if kind == _BYTE:
            if pos >= stop:
                raise MQTTDecodeError(f"{_NAME[pid]}: value is missing", pos)
            value: Any = data[pos]
            pos += 1
        elif kind == _STR:
            value, pos = _text(data, pos, stop, _NAME[pid])
        elif kind == _FOUR:
            if stop - pos < 4:
                raise MQTTDecodeError(f"{_NAME[pid]}: Four Byte Integer is truncated", pos)
            value = _unpack_i(data, pos)[0]
            pos += 4
        elif kind == _PAIR:
            name, pos = _text(data, pos, stop, "User Property name")
            val, pos = _text(data, pos, stop, "User Property value")
            value = (name, val)
        elif kind == _TWO:
            value, pos = _u16(data, pos, stop, _NAME[pid])
        elif kind == _VBI:
            value, pos = _vbi(data, pos, stop, _NAME[pid], notes)
        else:
            value, pos = _blob(data, pos, stop, _NAME[pid])
        items.append((pid, value))
    props = Properties()
    props.items = items
    return props, stop


def decode_properties(data: bytes | bytearray | memoryview, offset: int = 0
                      ) -> tuple[Properties, int]:
    """Read one property block (Property Length and properties) at ``offset``;
    returns the properties and the offset after the block."""
    data = bytes(data)
    return _properties(data, offset, len(data), [])


def _no_trailing(pos: int, end: int, what: str) -> None:
    if pos != end:
        raise MQTTDecodeError(f"{end - pos} unexpected bytes after the {what}", pos)


def _dec_connect(data: bytes, pos: int, end: int, flags: int, v5: bool, notes: Notes
                 ) -> Packet:
    name, pos = _text(data, pos, end, "Protocol Name")
    level, pos = _u8(data, pos, end, "Protocol Level")
    cflags, pos = _u8(data, pos, end, "Connect Flags")
    keep_alive, pos = _u16(data, pos, end, "Keep Alive")
    layout_v5 = version_of_level(level) == V5
    props = Properties()
    if layout_v5:
        props, pos = _properties(data, pos, end, notes)
    client_id, pos = _text(data, pos, end, "Client Identifier")
    will = None
    if cflags & 0x04:
        will_props = Properties()
        if layout_v5:
            will_props, pos = _properties(data, pos, end, notes, "Will Properties")
        topic, pos = _text(data, pos, end, "Will Topic")
        payload, pos = _blob(data, pos, end, "Will Payload")
        will = Will(topic, payload, (cflags >> 3) & 3, bool(cflags & 0x20), will_props)
    username = password = None
    if cflags & 0x80:
        username, pos = _text(data, pos, end, "User Name")
    if cflags & 0x40:
        password, pos = _blob(data, pos, end, "Password")
    _no_trailing(pos, end, "CONNECT payload")
    return Connect(name, level, bool(cflags & 0x02), keep_alive, client_id, will,
                   username, password, props, connect_flags=cflags)


def _dec_connack(data: bytes, pos: int, end: int, flags: int, v5: bool, notes: Notes
                 ) -> Packet:
    ack, pos = _u8(data, pos, end, "Connect Acknowledge Flags")
    code, pos = _u8(data, pos, end, "Connect Reason Code")
    props = Properties()
    if v5:
        if pos == end:
            notes.append(("missing-property-length", pos, "CONNACK"))
        else:
            props, pos = _properties(data, pos, end, notes)
    _no_trailing(pos, end, "CONNACK")
    return Connack(bool(ack & 1), code, props, acknowledge_flags=ack)


def _dec_publish(data: bytes, pos: int, end: int, flags: int, v5: bool, notes: Notes
                 ) -> Packet:
    topic, pos = _text(data, pos, end, "Topic Name")
    qos = (flags >> 1) & 3
    packet_id = 0
    if qos:
        packet_id, pos = _u16(data, pos, end, "Packet Identifier")
    props = Properties()
    if v5:
        props, pos = _properties(data, pos, end, notes)
    return Publish(topic, data[pos:end], qos, bool(flags & 1), bool(flags & 8),
                   packet_id, props)


def _dec_pub_response(cls: type[_PubResponse]) -> Callable[..., Packet]:
    def decode(data: bytes, pos: int, end: int, flags: int, v5: bool, notes: Notes
               ) -> Packet:
        packet_id, pos = _u16(data, pos, end, "Packet Identifier")
        code = 0
        props = Properties()
        if v5 and pos < end:
            code = data[pos]
            pos += 1
            if pos < end:
                props, pos = _properties(data, pos, end, notes)
        _no_trailing(pos, end, cls.TYPE.name)
        return cls(packet_id, code, props)
    return decode


def _dec_subscribe(data: bytes, pos: int, end: int, flags: int, v5: bool, notes: Notes
                   ) -> Packet:
    packet_id, pos = _u16(data, pos, end, "Packet Identifier")
    props = Properties()
    if v5:
        props, pos = _properties(data, pos, end, notes)
    subs = []
    while pos < end:
        topic_filter, pos = _text(data, pos, end, "Topic Filter")
        options, pos = _u8(data, pos, end, "Subscription Options")
        subs.append(Subscription.from_options(topic_filter, options))
    return Subscribe(packet_id, subs, props)


def _dec_suback(data: bytes, pos: int, end: int, flags: int, v5: bool, notes: Notes
                ) -> Packet:
    packet_id, pos = _u16(data, pos, end, "Packet Identifier")
    props = Properties()
    if v5:
        if pos == end:
            notes.append(("missing-property-length", pos, "SUBACK"))
        else:
            props, pos = _properties(data, pos, end, notes)
    return Suback(packet_id, list(data[pos:end]), props)


def _dec_unsubscribe(data: bytes, pos: int, end: int, flags: int, v5: bool, notes: Notes
                     ) -> Packet:
    packet_id, pos = _u16(data, pos, end, "Packet Identifier")
    props = Properties()
    if v5:
        props, pos = _properties(data, pos, end, notes)
    filters = []
    while pos < end:
        topic_filter, pos = _text(data, pos, end, "Topic Filter")
        filters.append(topic_filter)
    return Unsubscribe(packet_id, filters, props)


def _dec_unsuback(data: bytes, pos: int, end: int, flags: int, v5: bool, notes: Notes
                  ) -> Packet:
    packet_id, pos = _u16(data, pos, end, "Packet Identifier")
    if not v5:
        _no_trailing(pos, end, "UNSUBACK")
        return Unsuback(packet_id)
    props = Properties()
    if pos == end:
        notes.append(("missing-property-length", pos, "UNSUBACK"))
    else:
        props, pos = _properties(data, pos, end, notes)
    return Unsuback(packet_id, list(data[pos:end]), props)


def _dec_empty(cls: type[Packet]) -> Callable[..., Packet]:
    def decode(data: bytes, pos: int, end: int, flags: int, v5: bool, notes: Notes
               ) -> Packet:
        _no_trailing(pos, end, f"{cls.TYPE.name} fixed header")
        return cls()
    return decode


def _dec_disconnect(data: bytes, pos: int, end: int, flags: int, v5: bool, notes: Notes
                    ) -> Packet:
    code = 0
    props = Properties()
    if v5 and pos < end:
        code = data[pos]
        pos += 1
        if pos < end:
            props, pos = _properties(data, pos, end, notes)
    _no_trailing(pos, end, "DISCONNECT")
    return Disconnect(code, props)


def _dec_auth(data: bytes, pos: int, end: int, flags: int, v5: bool, notes: Notes
              ) -> Packet:
    code = 0
    props = Properties()
    if pos < end:
        code = data[pos]
        pos += 1
        if pos == end:
            notes.append(("missing-property-length", pos, "AUTH"))
        else:
            props, pos = _properties(data, pos, end, notes)
    _no_trailing(pos, end, "AUTH")
    return Auth(code, props)


_DECODERS: Final[dict[int, Callable[..., Packet]]] = {
    PacketType.CONNECT: _dec_connect,
    PacketType.CONNACK: _dec_connack,
    PacketType.PUBLISH: _dec_publish,
    PacketType.PUBACK: _dec_pub_response(Puback),
    PacketType.PUBREC: _dec_pub_response(Pubrec),
    PacketType.PUBREL: _dec_pub_response(Pubrel),
    PacketType.PUBCOMP: _dec_pub_response(Pubcomp),
    PacketType.SUBSCRIBE: _dec_subscribe,
    PacketType.SUBACK: _dec_suback,
    PacketType.UNSUBSCRIBE: _dec_unsubscribe,
    PacketType.UNSUBACK: _dec_unsuback,
    PacketType.PINGREQ: _dec_empty(Pingreq),
    PacketType.PINGRESP: _dec_empty(Pingresp),
    PacketType.DISCONNECT: _dec_disconnect,
    PacketType.AUTH: _dec_auth,
}

# Rules for problems the decoder notes: code -> (5.0 rule, 3.1.1 rule, message).
_WIRE_RULES: Final[dict[str, tuple[str, str, str]]] = {
    "non-minimal-vbi": ("MQTT-1.5.5-1", "MQTT-3.1.1 §2.2.3",
                        "{what} uses more bytes than its value needs"),
    "missing-property-length": ("MQTT-2.2.2-1", "MQTT-3.1.1 §2.2.2",
                                "{what} ends where its Property Length should be"),
}


def _wire_violations(notes: Notes, version: ProtocolVersion) -> tuple[Violation, ...]:
    out = []
    for code, offset, what in notes:
        rule5, rule4, message = _WIRE_RULES[code]
        out.append(Violation(rule5 if version == V5 else rule4,
                             f"{message.format(what=what)} (byte {offset})", code,
                             reason_code=0x81))
    return tuple(out)


def _decode_frame(frame: bytes, header_len: int, version: ProtocolVersion | None) -> Packet:
    """Decode one complete packet; offsets in errors are relative to ``frame``."""
    first = frame[0]
    ptype = first >> 4
    flags = first & 0x0F
    if ptype == 0:
        raise MQTTDecodeError("packet type 0 is reserved", 0, packet_type=0)
    if ptype != PacketType.CONNECT:
        if version is None:
            raise MQTTDecodeError(
                f"{PacketType(ptype).name} before CONNECT: protocol version unknown "
                "(MQTT-3.1.0-1)", 0, packet_type=ptype)
        if ptype == PacketType.AUTH and version != V5:
            raise MQTTDecodeError("packet type 15 (AUTH) is reserved in MQTT 3.1.1", 0,
                                  packet_type=ptype)
    notes: Notes = []
    if header_len > 2 and frame[header_len - 1] == 0:
        notes.append(("non-minimal-vbi", 1, "Remaining Length"))
    try:
        packet = _DECODERS[ptype](frame, header_len, len(frame), flags, version == V5, notes)
    except MQTTDecodeError as exc:
        exc.packet_type = ptype
        raise
    packet.flags = flags
    packet.raw = frame
    if notes:
        wire_version = packet.version if isinstance(packet, Connect) else version
        packet.wire_violations = _wire_violations(notes, wire_version or V5)
    return packet


def decode(data: bytes | bytearray | memoryview,
           version: ProtocolVersion | int | None = ProtocolVersion.V5) -> Packet:
    """Decode exactly one packet from ``data``.

    ``version`` is the protocol of the connection (5 or 4); a CONNECT carries
    its own.  ``None`` means unknown: only a CONNECT can then be decoded.
    Raises ``MQTTDecodeError`` for truncated, oversized or malformed input.
    """
    data = bytes(data)
    size = len(data)
    if size < 2:
        raise MQTTDecodeError("fixed header is truncated", size)
    remaining, header_len = _vbi(data, 1, size, "Remaining Length", [])
    total = header_len + remaining
    if size < total:
        raise MQTTDecodeError(f"packet is truncated: {total} bytes needed, {size} given",
                              size, packet_type=data[0] >> 4)
    if size > total:
        raise MQTTDecodeError(f"{size - total} bytes after the end of the packet", total,
                              packet_type=data[0] >> 4)
    return _decode_frame(data, header_len, _version(version))


def _version(version: ProtocolVersion | int | None) -> ProtocolVersion | None:
    return None if version is None else version_of_level(int(version))


class MQTTDecoder:
    """Streaming decoder for one direction of one connection.

    ``feed(data)`` buffers ``data`` and returns an iterator over the packets
    it completes; partial packets wait for more bytes and one chunk may
    complete several packets.  With ``version=None`` (a server reading a
    client) the version is learned from the CONNECT; ``learn_version=False``
    keeps a fixed version.  ``max_packet_size`` (the Maximum Packet Size
    this side announced) rejects larger packets as soon as their fixed
    header is read (MQTT 5.0 Reason Code 0x95).

    An error inside a correctly framed packet consumes that packet and
    raises; decoding may go on with the next one.  A broken fixed header
    (Remaining Length longer than 4 bytes, packet too large) loses the
    framing: every later ``feed`` raises the same error.
    """

    __slots__ = ("_buffer", "_error", "_learn", "_max_packet_size", "_offset", "_version")

    def __init__(self, version: ProtocolVersion | int | None = None, *,
                 learn_version: bool = True, max_packet_size: int | None = None) -> None:
        self._buffer = bytearray()
        self._version = _version(version)
        self._learn = learn_version
        self._max_packet_size = max_packet_size
        self._offset = 0
        self._error: MQTTDecodeError | None = None

    @property
    def version(self) -> ProtocolVersion | None:
        """The protocol version used for packets other than CONNECT."""
        return self._version

    @property
    def offset(self) -> int:
        """Bytes of the stream consumed so far (complete packets)."""
        return self._offset

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete packet."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[Packet]:
        """Add ``data`` and iterate over the packets now complete.

        Packets the caller does not take from the iterator stay buffered and
        come out of the next ``feed``.  An ``MQTTDecodeError`` ends the
        iteration; its ``offset`` counts from the start of the stream."""
        self._buffer += data
        return self._drain()

    def _drain(self) -> Iterator[Packet]:
        buf = self._buffer
        while True:
            if self._error is not None:
                raise self._error
            size = len(buf)
            if size < 2:
                return
            byte = buf[1]
            if byte < 0x80:
                remaining = byte
                header_len = 2
            else:
                remaining = byte & 0x7F
                shift = 7
                index = 2
                while True:
                    if index == 5:
                        self._fail(MQTTDecodeError(
                            "Remaining Length: Variable Byte Integer longer than 4 bytes",
                            self._offset + 1, packet_type=buf[0] >> 4))
                    if index >= size:
                        return
                    byte = buf[index]
                    index += 1
                    remaining |= (byte & 0x7F) << shift
                    if byte < 0x80:
                        break
                    shift += 7
                header_len = index
            total = header_len + remaining
            limit = self._max_packet_size
            if limit is not None and total > limit:
                self._fail(MQTTDecodeError(
                    f"packet of {total} bytes exceeds the Maximum Packet Size {limit}",
                    self._offset, packet_type=buf[0] >> 4, reason_code=0x95))
            if size < total:
                return
            frame = bytes(buf[:total])
            del buf[:total]
            base = self._offset
            self._offset += total
            try:
                packet = _decode_frame(frame, header_len, self._version)
            except MQTTDecodeError as exc:
                raise MQTTDecodeError(exc.reason, base + exc.offset,
                                      packet_type=exc.packet_type, raw=frame,
                                      reason_code=exc.reason_code) from None
            if self._learn and isinstance(packet, Connect):
                self._version = packet.version
            yield packet

    def _fail(self, error: MQTTDecodeError) -> None:
        self._error = error
        raise error
