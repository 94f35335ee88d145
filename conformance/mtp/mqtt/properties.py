"""MQTT 5.0 properties: identifiers, data types, where each one may appear,
and the ``Properties`` container.

A property set is kept as the ordered list of ``(identifier, value)`` pairs
seen on the wire, duplicates included, so that validation can report a
property that must appear at most once.  Accessors such as
``props.content_type`` or ``props.user_properties`` read that list.

Value types by data type: Byte, Two Byte, Four Byte and Variable Byte
Integers are ``int``; UTF-8 Encoded Strings are ``str``; a UTF-8 String Pair
is a ``(name, value)`` tuple; Binary Data is ``bytes``.  Decoded strings that
are not valid UTF-8 keep their bytes as lone surrogates (Python's
``surrogateescape``), so validation can report them and re-encoding gives
back the original bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import IntEnum
from typing import Any, Final, Literal, TypeAlias

from conformance.mtp.mqtt.constants import PacketType


class PropertyId(IntEnum):
    """The 27 MQTT 5.0 property identifiers (MQTT 5.0 §2.2.2.2, Table 2-4)."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


class PropertyType(IntEnum):
    """The data types of MQTT 5.0 §1.5 used by properties."""

    BYTE = 1
    TWO_BYTE_INTEGER = 2
    FOUR_BYTE_INTEGER = 3
    VARIABLE_BYTE_INTEGER = 4
    UTF8_STRING = 5
    UTF8_STRING_PAIR = 6
    BINARY_DATA = 7


P = PropertyId
T = PropertyType

#: Data type of every property identifier.
PROPERTY_TYPES: Final[dict[int, PropertyType]] = {
    P.PAYLOAD_FORMAT_INDICATOR: T.BYTE,
    P.MESSAGE_EXPIRY_INTERVAL: T.FOUR_BYTE_INTEGER,
    P.CONTENT_TYPE: T.UTF8_STRING,
    P.RESPONSE_TOPIC: T.UTF8_STRING,
    P.CORRELATION_DATA: T.BINARY_DATA,
    P.SUBSCRIPTION_IDENTIFIER: T.VARIABLE_BYTE_INTEGER,
    P.SESSION_EXPIRY_INTERVAL: T.FOUR_BYTE_INTEGER,
    P.ASSIGNED_CLIENT_IDENTIFIER: T.UTF8_STRING,
    P.SERVER_KEEP_ALIVE: T.TWO_BYTE_INTEGER,
    P.AUTHENTICATION_METHOD: T.UTF8_STRING,
    P.AUTHENTICATION_DATA: T.BINARY_DATA,
    P.REQUEST_PROBLEM_INFORMATION: T.BYTE,
    P.WILL_DELAY_INTERVAL: T.FOUR_BYTE_INTEGER,
    P.REQUEST_RESPONSE_INFORMATION: T.BYTE,
    P.RESPONSE_INFORMATION: T.UTF8_STRING,
    P.SERVER_REFERENCE: T.UTF8_STRING,
    P.REASON_STRING: T.UTF8_STRING,
    P.RECEIVE_MAXIMUM: T.TWO_BYTE_INTEGER,
    P.TOPIC_ALIAS_MAXIMUM: T.TWO_BYTE_INTEGER,
    P.TOPIC_ALIAS: T.TWO_BYTE_INTEGER,
    P.MAXIMUM_QOS: T.BYTE,
    P.RETAIN_AVAILABLE: T.BYTE,
    P.USER_PROPERTY: T.UTF8_STRING_PAIR,
    P.MAXIMUM_PACKET_SIZE: T.FOUR_BYTE_INTEGER,
    P.WILDCARD_SUBSCRIPTION_AVAILABLE: T.BYTE,
    P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: T.BYTE,
    P.SHARED_SUBSCRIPTION_AVAILABLE: T.BYTE,
}

#: Spec name of every property ("Content Type").
PROPERTY_NAMES: Final[dict[int, str]] = {
    pid: pid.name.replace("_", " ").title().replace("Qos", "QoS").replace("Utf8", "UTF-8")
    for pid in PropertyId
}

#: The Will Properties of the CONNECT payload, a property context of its own.
WILL: Final = "will"
PropertyContext: TypeAlias = PacketType | Literal["will"]

# Per context: the section holding its properties and the properties it
# allows, in the order the specification lists them, so that the section of
# one property is f"{base}.{index + 2}" (index 0 is "Property Length").
_CONTEXTS: Final[dict[PropertyContext, tuple[str, tuple[PropertyId, ...]]]] = {
    PacketType.CONNECT: ("3.1.2.11", (
        P.SESSION_EXPIRY_INTERVAL, P.RECEIVE_MAXIMUM, P.MAXIMUM_PACKET_SIZE,
        P.TOPIC_ALIAS_MAXIMUM, P.REQUEST_RESPONSE_INFORMATION, P.REQUEST_PROBLEM_INFORMATION,
        P.USER_PROPERTY, P.AUTHENTICATION_METHOD, P.AUTHENTICATION_DATA)),
    WILL: ("3.1.3.2", (
        P.WILL_DELAY_INTERVAL, P.PAYLOAD_FORMAT_INDICATOR, P.MESSAGE_EXPIRY_INTERVAL,
        P.CONTENT_TYPE, P.RESPONSE_TOPIC, P.CORRELATION_DATA, P.USER_PROPERTY)),
    PacketType.CONNACK: ("3.2.2.3", (
        P.SESSION_EXPIRY_INTERVAL, P.RECEIVE_MAXIMUM, P.MAXIMUM_QOS, P.RETAIN_AVAILABLE,
        P.MAXIMUM_PACKET_SIZE, P.ASSIGNED_CLIENT_IDENTIFIER, P.TOPIC_ALIAS_MAXIMUM,
        P.REASON_STRING, P.USER_PROPERTY, P.WILDCARD_SUBSCRIPTION_AVAILABLE,
        P.SUBSCRIPTION_IDENTIFIER_AVAILABLE, P.SHARED_SUBSCRIPTION_AVAILABLE,
        P.SERVER_KEEP_ALIVE, P.RESPONSE_INFORMATION, P.SERVER_REFERENCE,
        P.AUTHENTICATION_METHOD, P.AUTHENTICATION_DATA)),
    PacketType.PUBLISH: ("3.3.2.3", (
        P.PAYLOAD_FORMAT_INDICATOR, P.MESSAGE_EXPIRY_INTERVAL, P.TOPIC_ALIAS,
        P.RESPONSE_TOPIC, P.CORRELATION_DATA, P.USER_PROPERTY, P.SUBSCRIPTION_IDENTIFIER,
        P.CONTENT_TYPE)),
    PacketType.PUBACK: ("3.4.2.2", (P.REASON_STRING, P.USER_PROPERTY)),
    PacketType.PUBREC: ("3.5.2.2", (P.REASON_STRING, P.USER_PROPERTY)),
    PacketType.PUBREL: ("3.6.2.2", (P.REASON_STRING, P.USER_PROPERTY)),
    PacketType.PUBCOMP: ("3.7.2.2", (P.REASON_STRING, P.USER_PROPERTY)),
    PacketType.SUBSCRIBE: ("3.8.2.1", (P.SUBSCRIPTION_IDENTIFIER, P.USER_PROPERTY)),
    PacketType.SUBACK: ("3.9.2.1", (P.REASON_STRING, P.USER_PROPERTY)),
    PacketType.UNSUBSCRIBE: ("3.10.2.1", (P.USER_PROPERTY,)),
    PacketType.UNSUBACK: ("3.11.2.1", (P.REASON_STRING, P.USER_PROPERTY)),
    PacketType.DISCONNECT: ("3.14.2.2", (
        P.SESSION_EXPIRY_INTERVAL, P.REASON_STRING, P.USER_PROPERTY, P.SERVER_REFERENCE)),
    PacketType.AUTH: ("3.15.2.2", (
        P.AUTHENTICATION_METHOD, P.AUTHENTICATION_DATA, P.REASON_STRING, P.USER_PROPERTY)),
}

#: Context -> the property identifiers it allows (MQTT 5.0 Table 2-4).
ALLOWED_PROPERTIES: Final[dict[PropertyContext, frozenset[int]]] = {
    ctx: frozenset(ids) for ctx, (_, ids) in _CONTEXTS.items()
}


def property_section(context: PropertyContext, pid: int) -> str:
    """The MQTT 5.0 section defining ``pid`` in ``context`` ("3.3.2.3.9"), or
    the section of the whole property block when ``pid`` is not allowed there."""
    entry = _CONTEXTS.get(context)
    if entry is None:
        return "2.2.2.2"
    base, ids = entry
    for index, allowed in enumerate(ids):
        if allowed == pid:
            return f"{base}.{index + 2}"
    return base


def allows_multiple(context: PropertyContext, pid: int) -> bool:
    """User Property may repeat everywhere; Subscription Identifier only in a
    PUBLISH (one per matching subscription, MQTT 5.0 §3.3.4)."""
    return pid == P.USER_PROPERTY or (
        pid == P.SUBSCRIPTION_IDENTIFIER and context == PacketType.PUBLISH)


PropertyValue: TypeAlias = int | str | bytes | tuple[str, str]


def _getter(pid: PropertyId) -> Any:
    def get(self: Properties) -> Any:
        for key, value in self.items:
            if key == pid:
                return value
        return None

    get.__doc__ = f"First {PROPERTY_NAMES[pid]} ({pid:#04x}) value, or None."
    return property(get)


class Properties:
    """An ordered property list, duplicates preserved (MQTT 5.0 §2.2.2).

    Build one with ``Properties([(PropertyId.CONTENT_TYPE, "usp.msg")])``,
    ``Properties.of(content_type="usp.msg", user_properties=[("k", "v")])``
    or ``add()``; read it with ``get``, ``get_all`` or the named accessors.
    """

    __slots__ = ("items",)

    def __init__(self, items: Iterable[tuple[int, PropertyValue]] = ()) -> None:
        self.items: list[tuple[int, PropertyValue]] = list(items)

    @classmethod
    def of(cls, **values: Any) -> Properties:
        """Build from snake_case names (``response_topic="a/b"``).

        ``user_properties`` takes a list of pairs and ``subscription_identifiers``
        a list of ints; every other name takes one value.
        """
        props = cls()
        for name, value in values.items():
            if name == "user_properties":
                for pair in value:
                    props.items.append((P.USER_PROPERTY, tuple(pair)))  # type: ignore[arg-type]
            elif name == "subscription_identifiers":
                for sid in value:
                    props.items.append((P.SUBSCRIPTION_IDENTIFIER, sid))
            else:
                try:
                    pid = PropertyId[name.upper()]
                except KeyError:
                    raise ValueError(f"unknown MQTT property name {name!r}") from None
                props.items.append((pid, value))
        return props

    def add(self, pid: int, value: PropertyValue) -> Properties:
        """Append one property (kept in order, duplicates allowed); returns self."""
        self.items.append((pid, value))
        return self

    def get(self, pid: int, default: Any = None) -> Any:
        """The first value of ``pid``, or ``default``."""
        for key, value in self.items:
            if key == pid:
                return value
        return default

    def get_all(self, pid: int) -> list[Any]:
        """Every value of ``pid``, in wire order."""
        return [value for key, value in self.items if key == pid]

    def count(self, pid: int) -> int:
        """How many times ``pid`` appears."""
        return sum(1 for key, _ in self.items if key == pid)

    @property
    def ids(self) -> list[int]:
        """The identifiers in wire order."""
        return [key for key, _ in self.items]

    @property
    def user_properties(self) -> list[tuple[str, str]]:
        """All User Property pairs, in wire order."""
        return [value for key, value in self.items if key == P.USER_PROPERTY]  # type: ignore[misc]

    def user_property(self, name: str) -> str | None:
        """The value of the first User Property called ``name`` (R-MQTT.13's
        "usp-endpoint-id", R-MQTT.44's "subscribe-topic")."""
        for key, value in self.items:
            if key == P.USER_PROPERTY and value[0] == name:  # type: ignore[index]
                return value[1]  # type: ignore[index,return-value]
        return None

    def user_property_values(self, name: str) -> list[str]:
        """Values of every User Property called ``name``."""
        return [v[1] for k, v in self.items  # type: ignore[index,misc]
                if k == P.USER_PROPERTY and v[0] == name]  # type: ignore[index]

    @property
    def subscription_identifiers(self) -> list[int]:
        """All Subscription Identifier values, in wire order."""
        return [value for key, value in self.items  # type: ignore[misc]
                if key == P.SUBSCRIPTION_IDENTIFIER]

    payload_format_indicator = _getter(P.PAYLOAD_FORMAT_INDICATOR)
    message_expiry_interval = _getter(P.MESSAGE_EXPIRY_INTERVAL)
    content_type = _getter(P.CONTENT_TYPE)
    response_topic = _getter(P.RESPONSE_TOPIC)
    correlation_data = _getter(P.CORRELATION_DATA)
    subscription_identifier = _getter(P.SUBSCRIPTION_IDENTIFIER)
    session_expiry_interval = _getter(P.SESSION_EXPIRY_INTERVAL)
    assigned_client_identifier = _getter(P.ASSIGNED_CLIENT_IDENTIFIER)
    server_keep_alive = _getter(P.SERVER_KEEP_ALIVE)
    authentication_method = _getter(P.AUTHENTICATION_METHOD)
    authentication_data = _getter(P.AUTHENTICATION_DATA)
    request_problem_information = _getter(P.REQUEST_PROBLEM_INFORMATION)
    will_delay_interval = _getter(P.WILL_DELAY_INTERVAL)
    request_response_information = _getter(P.REQUEST_RESPONSE_INFORMATION)
    response_information = _getter(P.RESPONSE_INFORMATION)
    server_reference = _getter(P.SERVER_REFERENCE)
    reason_string = _getter(P.REASON_STRING)
    receive_maximum = _getter(P.RECEIVE_MAXIMUM)
    topic_alias_maximum = _getter(P.TOPIC_ALIAS_MAXIMUM)
    topic_alias = _getter(P.TOPIC_ALIAS)
    maximum_qos = _getter(P.MAXIMUM_QOS)
    retain_available = _getter(P.RETAIN_AVAILABLE)
    maximum_packet_size = _getter(P.MAXIMUM_PACKET_SIZE)
    wildcard_subscription_available = _getter(P.WILDCARD_SUBSCRIPTION_AVAILABLE)
    subscription_identifier_available = _getter(P.SUBSCRIPTION_IDENTIFIER_AVAILABLE)
    shared_subscription_available = _getter(P.SHARED_SUBSCRIPTION_AVAILABLE)

    def __contains__(self, pid: object) -> bool:
        return any(key == pid for key, _ in self.items)

    def __iter__(self) -> Iterator[tuple[int, PropertyValue]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Properties):
            return self.items == other.items
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{PropertyId(k).name if k in PROPERTY_TYPES else hex(k)}={v!r}"
            for k, v in self.items)
        return f"Properties({inner})"
