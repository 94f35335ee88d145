"""Rule checks on one decoded (or constructed) MQTT packet.

``validate(packet, version, sender=...)`` returns the ``Violation`` list of
the packet and never raises.  Each violation names the normative statement
it breaks (``MQTT-3.1.2-3``) or the section (``MQTT-5.0 §3.8.3.1``) for the
protocol version in use, a stable ``code`` and, for 5.0, the Reason Code a
receiver would use.  ``RULES`` lists every code with its default rules.

Checks that need connection state (Packet Identifiers in use, Topic Alias
Maximum, Maximum QoS, what the CONNECT announced) are not here; the broker
that owns that state makes them.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Final

from conformance.mtp.mqtt.constants import (
    FIXED_FLAGS,
    MAX_STRING_BYTES,
    MAX_VBI,
    PacketType,
    ProtocolVersion,
)
from conformance.mtp.mqtt.errors import Severity, Violation
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
from conformance.mtp.mqtt.properties import (
    ALLOWED_PROPERTIES,
    PROPERTY_NAMES,
    PROPERTY_TYPES,
    WILL,
    Properties,
    PropertyContext,
    PropertyId,
    PropertyType,
    allows_multiple,
    property_section,
)
from conformance.mtp.mqtt.reason_codes import REASON_CODES, SUBACK_RETURN_CODES_V311, ReasonCode
from conformance.mtp.mqtt.text import DISALLOWED, SURROGATES, encode_text
from conformance.mtp.mqtt.topics import is_shared, topic_filter_problems, topic_name_problems

P = PropertyId
RC = ReasonCode
V5: Final = ProtocolVersion.V5


class Role(StrEnum):
    """Who sent the packet: enables the checks that depend on direction."""

    CLIENT = "client"
    SERVER = "server"


def _s5(section: str) -> str:
    return f"MQTT-5.0 §{section}"


def _s4(section: str) -> str:
    return f"MQTT-3.1.1 §{section}"


#: code -> (MQTT 5.0 rule, MQTT 3.1.1 rule, MQTT 5.0 Reason Code).  A check
#: may cite a more specific rule; ``None`` means the check does not apply.
RULES: Final[dict[str, tuple[str | None, str | None, int | None]]] = {
    "reserved-flags": ("MQTT-2.1.3-1", "MQTT-2.2.2-1", RC.MALFORMED_PACKET),
    "non-minimal-vbi": ("MQTT-1.5.5-1", _s4("2.2.3"), RC.MALFORMED_PACKET),
    "missing-property-length": ("MQTT-2.2.2-1", None, RC.MALFORMED_PACKET),
    "not-in-version": (None, _s4("2.2.1"), None),
    "wrong-direction": (_s5("2.1.2"), _s4("2.2.1"), RC.PROTOCOL_ERROR),
    "field-type": (_s5("1.5"), _s4("1.5"), None),
    "out-of-range": (_s5("1.5.2"), _s4("1.5.2"), None),
    "too-long": (_s5("1.5.4"), _s4("1.5.3"), RC.MALFORMED_PACKET),
    "invalid-utf8": ("MQTT-1.5.4-1", "MQTT-1.5.3-1", RC.MALFORMED_PACKET),
    "utf8-null": ("MQTT-1.5.4-2", "MQTT-1.5.3-2", RC.MALFORMED_PACKET),
    "utf8-disallowed": (_s5("1.5.4"), _s4("1.5.3"), None),
    "unknown-property": (_s5("2.2.2.2"), None, RC.MALFORMED_PACKET),
    "property-type": (_s5("2.2.2.2"), None, RC.MALFORMED_PACKET),
    "property-not-allowed": (_s5("2.2.2.2"), None, RC.MALFORMED_PACKET),
    "duplicate-property": (_s5("2.2.2.2"), None, RC.PROTOCOL_ERROR),
    "property-value": (_s5("2.2.2.2"), None, RC.PROTOCOL_ERROR),
    "authentication-method-missing": (_s5("3.1.2.11.10"), None, RC.PROTOCOL_ERROR),
    "protocol-name": ("MQTT-3.1.2-1", "MQTT-3.1.2-1", RC.UNSUPPORTED_PROTOCOL_VERSION),
    "protocol-level": ("MQTT-3.1.2-2", "MQTT-3.1.2-2", RC.UNSUPPORTED_PROTOCOL_VERSION),
    "connect-reserved-flag": ("MQTT-3.1.2-3", "MQTT-3.1.2-3", RC.MALFORMED_PACKET),
    "will-qos-without-will": ("MQTT-3.1.2-11", "MQTT-3.1.2-13", RC.MALFORMED_PACKET),
    "will-retain-without-will": ("MQTT-3.1.2-13", "MQTT-3.1.2-15", RC.MALFORMED_PACKET),
    "password-without-username": (None, "MQTT-3.1.2-22", None),
    "client-id-empty-without-clean-session": (None, "MQTT-3.1.3-7", None),
    "connack-reserved-flags": ("MQTT-3.2.2-1", _s4("3.2.2.1"), RC.MALFORMED_PACKET),
    "session-present-on-failure": ("MQTT-3.2.2-6", "MQTT-3.2.2-4", RC.PROTOCOL_ERROR),
    "reason-code-invalid": (_s5("2.4"), _s4("3.2.2.3"), RC.PROTOCOL_ERROR),
    "reason-codes-empty": (_s5("2.4"), _s4("3.9.3"), RC.PROTOCOL_ERROR),
    "qos-invalid": ("MQTT-3.3.1-4", "MQTT-3.3.1-4", RC.MALFORMED_PACKET),
    "dup-on-qos0": ("MQTT-3.3.1-2", "MQTT-3.3.1-2", RC.PROTOCOL_ERROR),
    "packet-id-zero": ("MQTT-2.2.1-3", "MQTT-2.3.1-1", RC.PROTOCOL_ERROR),
    "packet-id-on-qos0": ("MQTT-2.2.1-2", "MQTT-2.3.1-5", None),
    "topic-name-wildcard": ("MQTT-3.3.2-2", "MQTT-3.3.2-2", RC.TOPIC_NAME_INVALID),
    "topic-empty": ("MQTT-4.7.3-1", "MQTT-4.7.3-1", RC.PROTOCOL_ERROR),
    "topic-filter-invalid": ("MQTT-4.7.1-1", "MQTT-4.7.1-2", RC.TOPIC_FILTER_INVALID),
    "shared-subscription-invalid": ("MQTT-4.8.2-2", None, RC.TOPIC_FILTER_INVALID),
    "no-local-on-shared": ("MQTT-3.8.3-4", None, RC.PROTOCOL_ERROR),
    "retain-handling-invalid": (_s5("3.8.3.1"), None, RC.PROTOCOL_ERROR),
    "subscription-options-reserved": ("MQTT-3.8.3-5", "MQTT-3.8.3-4", RC.MALFORMED_PACKET),
    "subscribe-empty": ("MQTT-3.8.3-2", "MQTT-3.8.3-3", RC.PROTOCOL_ERROR),
    "unsubscribe-empty": ("MQTT-3.10.3-2", "MQTT-3.10.3-2", RC.PROTOCOL_ERROR),
    "subscription-identifier-from-client": ("MQTT-3.3.4-6", None, RC.PROTOCOL_ERROR),
    "session-expiry-from-server": ("MQTT-3.14.2-2", None, RC.PROTOCOL_ERROR),
    "payload-format-invalid": (_s5("3.3.2.3.2"), None, RC.PAYLOAD_FORMAT_INVALID),
}

# Packet-specific rules for the reserved fixed-header flags.
_FLAG_RULES5: Final = {PacketType.PUBREL: "MQTT-3.6.1-1", PacketType.SUBSCRIBE: "MQTT-3.8.1-1",
                       PacketType.UNSUBSCRIBE: "MQTT-3.10.1-1",
                       PacketType.DISCONNECT: "MQTT-3.14.1-1", PacketType.AUTH: "MQTT-3.15.1-1"}
_FLAG_RULES4: Final = {PacketType.PUBREL: "MQTT-3.6.1-1", PacketType.SUBSCRIBE: "MQTT-3.8.1-1",
                       PacketType.UNSUBSCRIBE: "MQTT-3.10.1-1",
                       PacketType.DISCONNECT: "MQTT-3.14.1-1"}
# "MUST use one of the ... Reason Codes" per packet type (MQTT 5.0).
_REASON_RULES5: Final = {PacketType.CONNACK: "MQTT-3.2.2-8", PacketType.PUBACK: "MQTT-3.4.2-1",
                         PacketType.PUBREC: "MQTT-3.5.2-1", PacketType.PUBREL: "MQTT-3.6.2-1",
                         PacketType.PUBCOMP: "MQTT-3.7.2-1", PacketType.SUBACK: "MQTT-3.9.3-2",
                         PacketType.UNSUBACK: "MQTT-3.11.3-2",
                         PacketType.DISCONNECT: "MQTT-3.14.2-1", PacketType.AUTH: "MQTT-3.15.2-1"}
_CLIENT_ONLY: Final = frozenset({PacketType.CONNECT, PacketType.SUBSCRIBE,
                                 PacketType.UNSUBSCRIBE, PacketType.PINGREQ})
_SERVER_ONLY: Final = frozenset({PacketType.CONNACK, PacketType.SUBACK, PacketType.UNSUBACK,
                                 PacketType.PINGRESP})
# Properties whose value must be 0 or 1, and those for which 0 is a Protocol Error.
_BOOLEAN: Final = frozenset({P.PAYLOAD_FORMAT_INDICATOR, P.REQUEST_PROBLEM_INFORMATION,
                             P.REQUEST_RESPONSE_INFORMATION, P.MAXIMUM_QOS, P.RETAIN_AVAILABLE,
                             P.WILDCARD_SUBSCRIPTION_AVAILABLE,
                             P.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                             P.SHARED_SUBSCRIPTION_AVAILABLE})
_NON_ZERO: Final = frozenset({P.RECEIVE_MAXIMUM, P.MAXIMUM_PACKET_SIZE,
                              P.SUBSCRIPTION_IDENTIFIER, P.TOPIC_ALIAS})
_INT_LIMITS: Final = {PropertyType.BYTE: 0xFF, PropertyType.TWO_BYTE_INTEGER: 0xFFFF,
                      PropertyType.FOUR_BYTE_INTEGER: 0xFFFFFFFF,
                      PropertyType.VARIABLE_BYTE_INTEGER: MAX_VBI}
# Any character that needs a closer look: control, surrogate, noncharacter.
_SUSPECT: Final = re.compile(DISALLOWED.pattern[:-1] + "\x00\ud800-\udfff]")


class _Checker:
    """Collects violations for one protocol version."""

    __slots__ = ("out", "sender", "v5")

    def __init__(self, v5: bool, sender: Role | None) -> None:
        self.v5 = v5
        self.sender = sender
        self.out: list[Violation] = []

    def add(self, code: str, field: str | None, message: str, *, rule: str | None = None,
            severity: Severity = Severity.ERROR, reason_code: int | None = -1) -> None:
        rule5, rule4, rc = RULES[code]
        if rule is None:
            rule = rule5 if self.v5 else rule4
        if reason_code == -1:
            reason_code = rc if self.v5 else None
        self.out.append(Violation(rule or code, message, code, field, severity, reason_code))

    # ---- primitive fields ----------------------------------------------

    def text(self, value: Any, field: str, *, optional: bool = False) -> bool:
        """Checks a UTF-8 Encoded String field; False when it is not a str."""
        if value is None and optional:
            return False
        if not isinstance(value, str):
            self.add("field-type", field, f"{field} must be a str, not {type(value).__name__}")
            return False
        if _SUSPECT.search(value) is not None:
            if SURROGATES.search(value) is not None:
                self.add("invalid-utf8", field, f"{field} is not well-formed UTF-8")
            if "\x00" in value:
                self.add("utf8-null", field, f"{field} contains U+0000")
            found = DISALLOWED.search(value)
            if found is not None:
                self.add("utf8-disallowed", field,
                         f"{field} contains the Disallowed Unicode code point "
                         f"U+{ord(found.group()):04X}", severity=Severity.WARNING)
        if len(value) > MAX_STRING_BYTES // 4 and len(encode_text(value)) > MAX_STRING_BYTES:
            self.add("too-long", field, f"{field} encodes to more than 65535 bytes")
        return True

    def binary(self, value: Any, field: str) -> None:
        if value is None:
            return
        if not isinstance(value, bytes | bytearray | memoryview):
            self.add("field-type", field, f"{field} must be bytes, not {type(value).__name__}")
        elif len(value) > MAX_STRING_BYTES:
            self.add("too-long", field, f"{field} is longer than 65535 bytes",
                     rule=_s5("1.5.6") if self.v5 else _s4("3.1.3"))

    def integer(self, value: Any, top: int, field: str) -> bool:
        if isinstance(value, int) and 0 <= value <= top:
            return True
        code = "out-of-range" if isinstance(value, int) else "field-type"
        self.add(code, field, f"{field}={value!r} is not an integer in 0..{top}",
                 rule=(_s5("1.5.1") if self.v5 else _s4("1.5.1")) if top == 0xFF else None)
        return False

    def packet_id(self, value: Any, rule5: str, rule4: str, what: str) -> None:
        if self.integer(value, 0xFFFF, "packet_id") and value == 0:
            self.add("packet-id-zero", "packet_id", f"{what} has Packet Identifier 0",
                     rule=rule5 if self.v5 else rule4)

    def topic_name(self, value: str, field: str, *, wildcard_rule: str | None = None,
                   alias: bool = False) -> None:
        for problem in topic_name_problems(value):
            if problem == "empty":
                if alias and self.v5:
                    continue
                self.add("topic-empty", field, f"{field} is empty",
                         rule=_s5("3.3.2.1") if self.v5 and field == "topic" else None)
            else:
                self.add("topic-name-wildcard", field, f"{field} {value!r} contains a wildcard",
                         rule=wildcard_rule)

    def topic_filter(self, value: str, field: str) -> None:
        for problem in topic_filter_problems(value, shared=self.v5):
            if problem == "empty":
                self.add("topic-empty", field, f"{field} is empty",
                         reason_code=RC.TOPIC_FILTER_INVALID if self.v5 else None)
            elif problem == "multi-level":
                self.add("topic-filter-invalid", field,
                         f"{field} {value!r}: '#' must be alone in the last level")
            elif problem == "single-level":
                self.add("topic-filter-invalid", field,
                         f"{field} {value!r}: '+' must fill a whole level",
                         rule="MQTT-4.7.1-2" if self.v5 else "MQTT-4.7.1-3")
            elif problem == "share-name":
                self.add("shared-subscription-invalid", field,
                         f"{field} {value!r}: empty ShareName", rule="MQTT-4.8.2-1")
            else:
                self.add("shared-subscription-invalid", field,
                         f"{field} {value!r}: the ShareName must be free of '+' and '#' "
                         "and be followed by '/' and a Topic Filter")

    # ---- properties ----------------------------------------------------

    def properties(self, props: Any, context: PropertyContext, field: str = "properties"
                   ) -> None:
        if not isinstance(props, Properties):
            self.add("field-type", field, f"{field} must be Properties")
            return
        if not self.v5:
            if props:
                self.add("not-in-version", field, "MQTT 3.1.1 packets have no properties")
            return
        allowed = ALLOWED_PROPERTIES[context]
        seen: set[int] = set()
        for index, (pid, value) in enumerate(props.items):
            item = f"{field}[{index}]"
            kind = PROPERTY_TYPES.get(pid) if isinstance(pid, int) else None
            if kind is None:
                self.add("unknown-property", item, f"unknown property identifier {pid!r}")
                continue
            name = PROPERTY_NAMES[pid]
            if pid not in allowed:
                self.add("property-not-allowed", item,
                         f"{name} is not allowed in {_where(context)}")
            elif pid in seen and not allows_multiple(context, pid):
                self.add("duplicate-property", item,
                         f"{name} appears more than once in {_where(context)}",
                         rule=_s5(property_section(context, pid)))
            seen.add(pid)
            if self._property_value(pid, kind, value, name, item):
                self._property_rules(pid, value, name, item, context)

    def _property_value(self, pid: int, kind: PropertyType, value: Any, name: str,
                        item: str) -> bool:
        limit = _INT_LIMITS.get(kind)
        if limit is not None:
            ok = isinstance(value, int) and 0 <= value <= limit
        elif kind == PropertyType.UTF8_STRING:
            ok = isinstance(value, str)
        elif kind == PropertyType.UTF8_STRING_PAIR:
            ok = (isinstance(value, tuple) and len(value) == 2
                  and isinstance(value[0], str) and isinstance(value[1], str))
        else:
            ok = isinstance(value, bytes | bytearray | memoryview)
        if not ok:
            self.add("property-type", item, f"{name} value {value!r} is not a {kind.name}")
            return False
        if kind == PropertyType.UTF8_STRING:
            self.text(value, f"{item} ({name})")
        elif kind == PropertyType.UTF8_STRING_PAIR:
            self.text(value[0], f"{item} ({name} name)")
            self.text(value[1], f"{item} ({name} value)")
        elif kind == PropertyType.BINARY_DATA:
            self.binary(value, f"{item} ({name})")
        return True

    def _property_rules(self, pid: int, value: Any, name: str, item: str,
                        context: PropertyContext) -> None:
        if pid in _BOOLEAN and value not in (0, 1):
            self.add("property-value", item, f"{name} must be 0 or 1, not {value}",
                     rule=_s5(property_section(context, pid)))
        elif pid in _NON_ZERO and value == 0:
            if pid == P.TOPIC_ALIAS:
                self.add("property-value", item, "Topic Alias 0 is not permitted",
                         rule="MQTT-3.3.2-8", reason_code=RC.TOPIC_ALIAS_INVALID)
            else:
                self.add("property-value", item, f"{name} must not be 0",
                         rule=_s5(property_section(context, pid)))
        elif pid == P.RESPONSE_TOPIC:
            self.topic_name(value, f"{item} (Response Topic)",
                            wildcard_rule="MQTT-3.3.2-14" if context == PacketType.PUBLISH
                            else "MQTT-4.7.0-1")

    def payload_format(self, props: Properties, payload: Any, field: str, section: str
                       ) -> None:
        if not self.v5 or not isinstance(payload, bytes | bytearray | memoryview):
            return
        if props.get(P.PAYLOAD_FORMAT_INDICATOR) == 1:
            try:
                bytes(payload).decode("utf-8")
            except UnicodeDecodeError:
                self.add("payload-format-invalid", field,
                         f"{field} is not UTF-8 although the Payload Format Indicator is 1",
                         rule=_s5(section), severity=Severity.WARNING)

    def reason_code(self, packet_type: PacketType, value: Any, field: str) -> None:
        if not self.integer(value, 0xFF, field):
            return
        if self.v5:
            if value not in REASON_CODES[packet_type]:
                self.add("reason-code-invalid", field,
                         f"{value:#04x} is not a {packet_type.name} Reason Code",
                         rule=_REASON_RULES5[packet_type])
        elif packet_type == PacketType.SUBACK:
            if value not in SUBACK_RETURN_CODES_V311:
                self.add("reason-code-invalid", field,
                         f"{value:#04x} is not a SUBACK return code", rule="MQTT-3.9.3-2")
        elif packet_type == PacketType.CONNACK:
            if value > 5:
                self.add("reason-code-invalid", field,
                         f"CONNACK return code {value} is reserved")
        elif value:
            self.add("not-in-version", field,
                     f"MQTT 3.1.1 {packet_type.name} has no reason code")


def _where(context: PropertyContext) -> str:
    return "Will Properties" if context == WILL else PacketType(context).name


# ------------------------------------------------------------------------
# Per packet type
# ------------------------------------------------------------------------

def _connect(c: _Checker, p: Connect) -> None:
    if not (isinstance(p.protocol_level, int) and p.protocol_level in (4, 5)):
        c.add("protocol-level", "protocol_level",
              f"Protocol Level {p.protocol_level!r} is not 4 (3.1.1) or 5 (5.0)")
    if c.text(p.protocol_name, "protocol_name") and p.protocol_name != "MQTT":
        c.add("protocol-name", "protocol_name",
              f"Protocol Name is {p.protocol_name!r}, not 'MQTT'")
    flags = p.connect_flags
    if flags is not None:
        if flags & 0x01:
            c.add("connect-reserved-flag", "connect_flags",
                  "the reserved bit 0 of the Connect Flags is set")
        if not flags & 0x04:
            if flags & 0x18:
                c.add("will-qos-without-will", "connect_flags",
                      "Will QoS is not 0 although the Will Flag is 0")
            if flags & 0x20:
                c.add("will-retain-without-will", "connect_flags",
                      "Will Retain is set although the Will Flag is 0")
    c.integer(p.keep_alive, 0xFFFF, "keep_alive")
    c.properties(p.properties, PacketType.CONNECT)
    _authentication(c, p.properties, PacketType.CONNECT)
    c.text(p.client_id, "client_id")
    if not c.v5 and p.client_id == "" and not p.clean_start:
        c.add("client-id-empty-without-clean-session", "client_id",
              "a zero-byte ClientId needs Clean Session set to 1")
    if p.will is not None:
        _will(c, p)
    c.text(p.username, "username", optional=True)
    c.binary(p.password, "password")
    if not c.v5 and p.password is not None and p.username is None:
        c.add("password-without-username", "password",
              "MQTT 3.1.1 allows a Password only with a User Name")


def _will(c: _Checker, p: Connect) -> None:
    will = p.will
    assert will is not None
    if c.integer(will.qos, 3, "will.qos") and will.qos == 3:
        c.add("qos-invalid", "will.qos", "Will QoS 3 is not allowed",
              rule="MQTT-3.1.2-12" if c.v5 else "MQTT-3.1.2-14")
    if c.text(will.topic, "will.topic"):
        c.topic_name(will.topic, "will.topic",
                     wildcard_rule="MQTT-4.7.0-1" if c.v5 else "MQTT-4.7.1-1")
    c.binary(will.payload, "will.payload")
    c.properties(will.properties, WILL, "will.properties")
    if isinstance(will.properties, Properties):
        c.payload_format(will.properties, will.payload, "will.payload", "3.1.3.2.3")


def _authentication(c: _Checker, props: Any, context: PacketType) -> None:
    if not c.v5 or not isinstance(props, Properties):
        return
    has_method = P.AUTHENTICATION_METHOD in props
    if context == PacketType.AUTH and not has_method:
        c.add("authentication-method-missing", "properties",
              "AUTH must carry an Authentication Method", rule=_s5("3.15.2.2.2"))
    elif (context == PacketType.CONNECT and not has_method
          and P.AUTHENTICATION_DATA in props):
        c.add("authentication-method-missing", "properties",
              "Authentication Data without an Authentication Method")


def _connack(c: _Checker, p: Connack) -> None:
    flags = p.acknowledge_flags
    if flags is not None and flags & 0xFE:
        c.add("connack-reserved-flags", "acknowledge_flags",
              f"reserved bits of the Connect Acknowledge Flags are set ({flags:#04x})")
    c.reason_code(PacketType.CONNACK, p.reason_code, "reason_code")
    if p.session_present and p.reason_code != 0:
        c.add("session-present-on-failure", "session_present",
              "Session Present is 1 in a CONNACK that refuses the connection")
    c.properties(p.properties, PacketType.CONNACK)


def _publish(c: _Checker, p: Publish) -> None:
    if c.integer(p.qos, 3, "qos"):
        if p.qos == 3:
            c.add("qos-invalid", "qos", "PUBLISH has both QoS bits set")
        if p.dup and p.qos == 0:
            c.add("dup-on-qos0", "dup", "DUP is set on a QoS 0 PUBLISH")
        if p.qos:
            server = c.sender == Role.SERVER
            c.packet_id(p.packet_id, "MQTT-2.2.1-4" if server else "MQTT-2.2.1-3",
                        "MQTT-2.3.1-1", "a QoS > 0 PUBLISH")
        elif p.packet_id:
            c.add("packet-id-on-qos0", "packet_id",
                  "a QoS 0 PUBLISH has no Packet Identifier (the value is not encoded)",
                  severity=Severity.WARNING)
    c.properties(p.properties, PacketType.PUBLISH)
    if c.text(p.topic, "topic"):
        alias = isinstance(p.properties, Properties) and P.TOPIC_ALIAS in p.properties
        c.topic_name(p.topic, "topic", alias=alias)
    if not isinstance(p.payload, bytes | bytearray | memoryview):
        c.add("field-type", "payload", f"payload must be bytes, not {type(p.payload).__name__}")
    if not isinstance(p.properties, Properties):
        return
    if c.v5 and c.sender == Role.CLIENT and P.SUBSCRIPTION_IDENTIFIER in p.properties:
        c.add("subscription-identifier-from-client", "properties",
              "a PUBLISH from a Client carries a Subscription Identifier")
    c.payload_format(p.properties, p.payload, "payload", "3.3.2.3.2")


def _pub_response(c: _Checker, p: _PubResponse) -> None:
    c.packet_id(p.packet_id, "MQTT-2.2.1-5", "MQTT-2.3.1-6", p.TYPE.name)
    c.reason_code(p.TYPE, p.reason_code, "reason_code")
    c.properties(p.properties, p.TYPE)


def _subscribe(c: _Checker, p: Subscribe) -> None:
    c.packet_id(p.packet_id, "MQTT-2.2.1-3", "MQTT-2.3.1-1", "SUBSCRIBE")
    c.properties(p.properties, PacketType.SUBSCRIBE)
    if not p.subscriptions:
        c.add("subscribe-empty", "subscriptions", "SUBSCRIBE has no Topic Filter")
    for index, sub in enumerate(p.subscriptions):
        field = f"subscriptions[{index}]"
        if c.text(sub.topic_filter, f"{field}.topic_filter"):
            c.topic_filter(sub.topic_filter, f"{field}.topic_filter")
        ok = all((c.integer(sub.qos, 3, f"{field}.qos"),
                  c.integer(sub.retain_handling, 3, f"{field}.retain_handling"),
                  c.integer(sub.reserved, 3, f"{field}.reserved")))
        if not ok:
            continue
        if sub.qos == 3:
            c.add("qos-invalid", f"{field}.qos", "Maximum QoS 3 is not allowed",
                  rule=_s5("3.8.3.1") if c.v5 else "MQTT-3.8.3-4",
                  reason_code=RC.PROTOCOL_ERROR if c.v5 else None)
        if c.v5:
            if sub.reserved:
                c.add("subscription-options-reserved", f"{field}.reserved",
                      "bits 6-7 of the Subscription Options are set")
            if sub.retain_handling == 3:
                c.add("retain-handling-invalid", f"{field}.retain_handling",
                      "Retain Handling 3 is not allowed")
            if sub.no_local and isinstance(sub.topic_filter, str) \
                    and is_shared(sub.topic_filter):
                c.add("no-local-on-shared", f"{field}.no_local",
                      "No Local is set on a Shared Subscription")
        elif sub.options & 0xFC:
            c.add("subscription-options-reserved", field,
                  f"reserved bits 2-7 of the Requested QoS byte are set ({sub.options:#04x})")


def _suback(c: _Checker, p: Suback) -> None:
    c.packet_id(p.packet_id, "MQTT-2.2.1-6", "MQTT-2.3.1-7", "SUBACK")
    c.properties(p.properties, PacketType.SUBACK)
    if not p.reason_codes:
        c.add("reason-codes-empty", "reason_codes", "SUBACK has no Reason Code",
              rule=_s5("3.9.3") if c.v5 else None)
    for index, code in enumerate(p.reason_codes):
        c.reason_code(PacketType.SUBACK, code, f"reason_codes[{index}]")


def _unsubscribe(c: _Checker, p: Unsubscribe) -> None:
    c.packet_id(p.packet_id, "MQTT-2.2.1-3", "MQTT-2.3.1-1", "UNSUBSCRIBE")
    c.properties(p.properties, PacketType.UNSUBSCRIBE)
    if not p.topic_filters:
        c.add("unsubscribe-empty", "topic_filters", "UNSUBSCRIBE has no Topic Filter")
    for index, topic_filter in enumerate(p.topic_filters):
        field = f"topic_filters[{index}]"
        if c.text(topic_filter, field):
            c.topic_filter(topic_filter, field)


def _unsuback(c: _Checker, p: Unsuback) -> None:
    c.packet_id(p.packet_id, "MQTT-2.2.1-6", "MQTT-2.3.1-7", "UNSUBACK")
    c.properties(p.properties, PacketType.UNSUBACK)
    if not c.v5:
        if p.reason_codes:
            c.add("not-in-version", "reason_codes", "MQTT 3.1.1 UNSUBACK has no payload")
        return
    if not p.reason_codes:
        c.add("reason-codes-empty", "reason_codes", "UNSUBACK has no Reason Code",
              rule=_s5("3.11.3"))
    for index, code in enumerate(p.reason_codes):
        c.reason_code(PacketType.UNSUBACK, code, f"reason_codes[{index}]")


def _disconnect(c: _Checker, p: Disconnect) -> None:
    c.reason_code(PacketType.DISCONNECT, p.reason_code, "reason_code")
    c.properties(p.properties, PacketType.DISCONNECT)
    if c.v5 and c.sender == Role.SERVER and isinstance(p.properties, Properties) \
            and P.SESSION_EXPIRY_INTERVAL in p.properties:
        c.add("session-expiry-from-server", "properties",
              "a Server DISCONNECT carries a Session Expiry Interval")


def _auth(c: _Checker, p: Auth) -> None:
    c.reason_code(PacketType.AUTH, p.reason_code, "reason_code")
    c.properties(p.properties, PacketType.AUTH)
    _authentication(c, p.properties, PacketType.AUTH)


_CHECKS: Final[dict[type, Any]] = {
    Connect: _connect,
    Connack: _connack,
    Publish: _publish,
    Subscribe: _subscribe,
    Suback: _suback,
    Unsubscribe: _unsubscribe,
    Unsuback: _unsuback,
    Disconnect: _disconnect,
    Auth: _auth,
}


def validate(packet: Packet, version: ProtocolVersion | int | None = None, *,
             sender: Role | str | None = None) -> list[Violation]:
    """Every rule ``packet`` breaks under MQTT ``version`` (5 by default).

    A CONNECT is checked against the version of its own Protocol Level.
    ``sender`` (``"client"`` or ``"server"``) enables direction checks such
    as MQTT-3.3.4-6 (no Subscription Identifier from a Client).  Problems
    the decoder saw in the bytes (``packet.wire_violations``) come first.
    """
    if isinstance(packet, Connect) and isinstance(packet.protocol_level, int):
        resolved = version_of_level(packet.protocol_level)
    elif version is None:
        resolved = V5
    else:
        resolved = version_of_level(int(version))
    checker = _Checker(resolved == V5, Role(sender) if sender is not None else None)
    checker.out.extend(packet.wire_violations)
    ptype = packet.TYPE
    if ptype == PacketType.AUTH and not checker.v5:
        checker.add("not-in-version", None, "AUTH does not exist in MQTT 3.1.1")
        return checker.out
    if packet.flags is not None and ptype != PacketType.PUBLISH \
            and packet.flags != FIXED_FLAGS[ptype]:
        rules = _FLAG_RULES5 if checker.v5 else _FLAG_RULES4
        checker.add("reserved-flags", "flags",
                    f"{ptype.name} fixed-header flags are {packet.flags:#06b}, "
                    f"not {FIXED_FLAGS[ptype]:#06b}", rule=rules.get(ptype))
    if checker.sender is not None:
        _direction(checker, ptype)
    check = _CHECKS.get(type(packet))
    if check is not None:
        check(checker, packet)
    elif isinstance(packet, _PubResponse):
        _pub_response(checker, packet)
    return checker.out


def _direction(c: _Checker, ptype: PacketType) -> None:
    if c.sender == Role.SERVER and (ptype in _CLIENT_ONLY
                                    or (ptype == PacketType.DISCONNECT and not c.v5)):
        c.add("wrong-direction", None, f"a Server sent {ptype.name}, which only Clients send")
    elif c.sender == Role.CLIENT and ptype in _SERVER_ONLY:
        c.add("wrong-direction", None, f"a Client sent {ptype.name}, which only Servers send")


__all__ = ["RULES", "Role", "validate"]
