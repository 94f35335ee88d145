"""``validate``: each kind of violation, with the normative statement or
section of the version in use, and no false alarms on conformant packets.

R-MQTT.1 / R-MQTT.2 make MQTT 5.0 and 3.1.1 binding on USP Endpoints; the
TP-469 section 11 cases rely on these checks (11.2 CONNECT with
usp-endpoint-id, R-MQTT.13; 11.8 SUBSCRIBE, R-MQTT.15; 11.10 CONNACK
subscribe-topic, R-MQTT.44; 11.12/11.14/11.15 PUBLISH Response Topic and
Content Type, R-MQTT.23 and R-MQTT.27).
"""

from __future__ import annotations

from typing import Any

import pytest

from conformance.mtp.mqtt import (
    RULES,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Role,
    Severity,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Violation,
    Will,
    decode,
    encode,
    validate,
)

H = bytes.fromhex
P = PropertyId


def _connect_with_flags(flags: int) -> Packet:
    return decode(encode(Connect(client_id="c"), overrides={"connect_flags": flags}))


def _sub(topic_filter: str = "a", **options: Any) -> Subscribe:
    return Subscribe(1, [Subscription(topic_filter, **options)])


# (id, packet, version, sender, code, rule)
CASES: list[tuple[str, Any, int, str | None, str, str]] = [
    ("flags-pingreq-5", Pingreq(flags=1), 5, None, "reserved-flags", "MQTT-2.1.3-1"),
    ("flags-pingreq-4", Pingreq(flags=1), 4, None, "reserved-flags", "MQTT-2.2.2-1"),
    ("flags-connack", Connack(flags=8), 5, None, "reserved-flags", "MQTT-2.1.3-1"),
    ("flags-pubrel", Pubrel(1, flags=0), 5, None, "reserved-flags", "MQTT-3.6.1-1"),
    ("flags-subscribe", Subscribe(1, [Subscription("a")], flags=0), 4, None,
     "reserved-flags", "MQTT-3.8.1-1"),
    ("flags-unsubscribe", Unsubscribe(1, ["a"], flags=0), 5, None, "reserved-flags",
     "MQTT-3.10.1-1"),
    ("flags-disconnect", Disconnect(flags=2), 5, None, "reserved-flags", "MQTT-3.14.1-1"),
    ("flags-auth", Auth(flags=1), 5, None, "reserved-flags", "MQTT-3.15.1-1"),
    ("vbi", decode(H("c08000")), 5, None, "non-minimal-vbi", "MQTT-1.5.5-1"),
    ("no-property-length", decode(H("20020000")), 5, None, "missing-property-length",
     "MQTT-2.2.2-1"),
    ("auth-in-311", Auth(), 4, None, "not-in-version", "MQTT-3.1.1 §2.2.1"),
    ("props-in-311", Publish("t", properties=Properties.of(content_type="x")), 4, None,
     "not-in-version", "MQTT-3.1.1 §2.2.1"),
    ("rc-in-311", Puback(1, 0x80), 4, None, "not-in-version", "MQTT-3.1.1 §2.2.1"),
    ("unsuback-codes-311", Unsuback(1, [0]), 4, None, "not-in-version", "MQTT-3.1.1 §2.2.1"),
    ("client-sends-connack", Connack(), 5, "client", "wrong-direction", "MQTT-5.0 §2.1.2"),
    ("server-sends-subscribe", _sub(), 5, "server", "wrong-direction", "MQTT-5.0 §2.1.2"),
    ("server-sends-disconnect-311", Disconnect(), 4, "server", "wrong-direction",
     "MQTT-3.1.1 §2.2.1"),
    ("topic-type", Publish(7), 5, None, "field-type", "MQTT-5.0 §1.5"),  # type: ignore[arg-type]
    ("payload-type", Publish("t", "text"), 5, None,  # type: ignore[arg-type]
     "field-type", "MQTT-5.0 §1.5"),
    ("props-type", Publish("t", properties={}), 5, None,  # type: ignore[arg-type]
     "field-type", "MQTT-5.0 §1.5"),
    ("packet-id-range", Publish("t", qos=1, packet_id=70_000), 5, None, "out-of-range",
     "MQTT-5.0 §1.5.2"),
    ("reason-code-range", Connack(False, 256), 5, None, "out-of-range", "MQTT-5.0 §1.5.1"),
    ("sub-qos-range", _sub(qos=7), 5, None, "out-of-range", "MQTT-5.0 §1.5.2"),
    ("long-topic", Publish("t" * 65_536), 5, None, "too-long", "MQTT-5.0 §1.5.4"),
    ("long-password", Connect(password=b"x" * 65_536), 5, None, "too-long", "MQTT-5.0 §1.5.6"),
    ("bad-utf8-5", decode(H("3005" "0002fffe" "00")), 5, None, "invalid-utf8", "MQTT-1.5.4-1"),
    ("bad-utf8-4", Publish("\udcff"), 4, None, "invalid-utf8", "MQTT-1.5.3-1"),
    ("surrogate", Connect(client_id="\ud800"), 5, None, "invalid-utf8", "MQTT-1.5.4-1"),
    ("null-5", Connect(client_id="a\x00b"), 5, None, "utf8-null", "MQTT-1.5.4-2"),
    ("null-4", Connect(protocol_level=4, username="\x00"), 4, None, "utf8-null",
     "MQTT-1.5.3-2"),
    ("control-char", Publish("a\x01b"), 5, None, "utf8-disallowed", "MQTT-5.0 §1.5.4"),
    ("noncharacter", Publish("a\ufffe"), 4, None, "utf8-disallowed", "MQTT-3.1.1 §1.5.3"),
    ("unknown-property", Publish("t", properties=Properties([(0x7F, 1)])), 5, None,
     "unknown-property", "MQTT-5.0 §2.2.2.2"),
    ("property-type", Publish("t", properties=Properties.of(content_type=5)), 5, None,
     "property-type", "MQTT-5.0 §2.2.2.2"),
    ("pair-type", Publish("t", properties=Properties([(P.USER_PROPERTY, ("a",))])),  # type: ignore[list-item]
     5, None,
     "property-type", "MQTT-5.0 §2.2.2.2"),
    ("byte-range", Connack(properties=Properties.of(maximum_qos=300)), 5, None,
     "property-type", "MQTT-5.0 §2.2.2.2"),
    ("not-allowed", Connect(properties=Properties.of(topic_alias=1)), 5, None,
     "property-not-allowed", "MQTT-5.0 §2.2.2.2"),
    ("will-not-allowed", Connect(will=Will("w", properties=Properties.of(topic_alias=1))),
     5, None, "property-not-allowed", "MQTT-5.0 §2.2.2.2"),
    ("duplicate", Publish("t", properties=Properties.of(content_type="a").add(
        P.CONTENT_TYPE, "b")), 5, None, "duplicate-property", "MQTT-5.0 §3.3.2.3.9"),
    ("duplicate-sub-id", Subscribe(1, [Subscription("a")], Properties.of(
        subscription_identifiers=[1, 2])), 5, None, "duplicate-property",
     "MQTT-5.0 §3.8.2.1.2"),
    ("pfi-value", Publish("t", properties=Properties.of(payload_format_indicator=2)), 5, None,
     "property-value", "MQTT-5.0 §3.3.2.3.2"),
    ("receive-max-0", Connect(properties=Properties.of(receive_maximum=0)), 5, None,
     "property-value", "MQTT-5.0 §3.1.2.11.3"),
    ("max-qos-2", Connack(properties=Properties.of(maximum_qos=2)), 5, None,
     "property-value", "MQTT-5.0 §3.2.2.3.4"),
    ("rri-2", Connect(properties=Properties.of(request_response_information=2)), 5, None,
     "property-value", "MQTT-5.0 §3.1.2.11.6"),
    ("topic-alias-0", Publish("t", properties=Properties.of(topic_alias=0)), 5, None,
     "property-value", "MQTT-3.3.2-8"),
    ("sub-id-0", Subscribe(1, [Subscription("a")], Properties.of(subscription_identifier=0)),
     5, None, "property-value", "MQTT-5.0 §3.8.2.1.2"),
    ("auth-data-alone", Connect(properties=Properties.of(authentication_data=b"x")), 5, None,
     "authentication-method-missing", "MQTT-5.0 §3.1.2.11.10"),
    ("auth-no-method", Auth(0x18), 5, None, "authentication-method-missing",
     "MQTT-5.0 §3.15.2.2.2"),
    ("protocol-name", Connect("MQIsdp", 4), 4, None, "protocol-name", "MQTT-3.1.2-1"),
    ("protocol-level-3", Connect("MQIsdp", 3), 4, None, "protocol-level", "MQTT-3.1.2-2"),
    ("protocol-level-6", Connect(protocol_level=6), 5, None, "protocol-level", "MQTT-3.1.2-2"),
    ("connect-reserved", _connect_with_flags(0x03), 5, None, "connect-reserved-flag",
     "MQTT-3.1.2-3"),
    ("will-qos-5", _connect_with_flags(0x0A), 5, None, "will-qos-without-will",
     "MQTT-3.1.2-11"),
    ("will-retain-5", _connect_with_flags(0x22), 5, None, "will-retain-without-will",
     "MQTT-3.1.2-13"),
    ("will-qos-4", decode(encode(Connect(protocol_level=4), overrides={"connect_flags": 0x12})),
     4, None, "will-qos-without-will", "MQTT-3.1.2-13"),
    ("will-retain-4", decode(encode(Connect(protocol_level=4), overrides={
        "connect_flags": 0x22})), 4, None, "will-retain-without-will", "MQTT-3.1.2-15"),
    ("password-alone", Connect(protocol_level=4, password=b"pw"), 4, None,
     "password-without-username", "MQTT-3.1.2-22"),
    ("empty-id-persistent", Connect(protocol_level=4, clean_start=False), 4, None,
     "client-id-empty-without-clean-session", "MQTT-3.1.3-7"),
    ("connack-flags-5", decode(H("2003020000")), 5, None, "connack-reserved-flags",
     "MQTT-3.2.2-1"),
    ("connack-flags-4", decode(H("20028000"), 4), 4, None, "connack-reserved-flags",
     "MQTT-3.1.1 §3.2.2.1"),
    ("session-present-5", Connack(True, 0x80), 5, None, "session-present-on-failure",
     "MQTT-3.2.2-6"),
    ("session-present-4", Connack(True, 5), 4, None, "session-present-on-failure",
     "MQTT-3.2.2-4"),
    ("rc-connack", Connack(False, 0x10), 5, None, "reason-code-invalid", "MQTT-3.2.2-8"),
    ("rc-connack-4", Connack(False, 6), 4, None, "reason-code-invalid", "MQTT-3.1.1 §3.2.2.3"),
    ("rc-puback", Puback(1, 0x92), 5, None, "reason-code-invalid", "MQTT-3.4.2-1"),
    ("rc-pubrec", Pubrec(1, 0x04), 5, None, "reason-code-invalid", "MQTT-3.5.2-1"),
    ("rc-pubrel", Pubrel(1, 0x10), 5, None, "reason-code-invalid", "MQTT-3.6.2-1"),
    ("rc-pubcomp", Pubcomp(1, 0x80), 5, None, "reason-code-invalid", "MQTT-3.7.2-1"),
    ("rc-suback", Suback(1, [3]), 5, None, "reason-code-invalid", "MQTT-3.9.3-2"),
    ("rc-suback-4", Suback(1, [0x87]), 4, None, "reason-code-invalid", "MQTT-3.9.3-2"),
    ("rc-unsuback", Unsuback(1, [1]), 5, None, "reason-code-invalid", "MQTT-3.11.3-2"),
    ("rc-disconnect", Disconnect(0x01), 5, None, "reason-code-invalid", "MQTT-3.14.2-1"),
    ("rc-auth", Auth(0x01, Properties.of(authentication_method="m")), 5, None,
     "reason-code-invalid", "MQTT-3.15.2-1"),
    ("suback-empty", Suback(1, []), 5, None, "reason-codes-empty", "MQTT-5.0 §3.9.3"),
    ("suback-empty-4", Suback(1, []), 4, None, "reason-codes-empty", "MQTT-3.1.1 §3.9.3"),
    ("unsuback-empty", Unsuback(1, []), 5, None, "reason-codes-empty", "MQTT-5.0 §3.11.3"),
    ("publish-qos3", decode(H("3606" "000161" "0001" "00")), 5, None, "qos-invalid",
     "MQTT-3.3.1-4"),
    ("will-qos3-5", Connect(will=Will("w", qos=3)), 5, None, "qos-invalid", "MQTT-3.1.2-12"),
    ("will-qos3-4", Connect(protocol_level=4, will=Will("w", qos=3)), 4, None, "qos-invalid",
     "MQTT-3.1.2-14"),
    ("sub-qos3-5", _sub(qos=3), 5, None, "qos-invalid", "MQTT-5.0 §3.8.3.1"),
    ("sub-qos3-4", _sub(qos=3), 4, None, "qos-invalid", "MQTT-3.8.3-4"),
    ("dup-qos0", Publish("t", dup=True), 5, None, "dup-on-qos0", "MQTT-3.3.1-2"),
    ("pid0-client", Publish("t", qos=1), 5, "client", "packet-id-zero", "MQTT-2.2.1-3"),
    ("pid0-server", Publish("t", qos=2), 5, "server", "packet-id-zero", "MQTT-2.2.1-4"),
    ("pid0-4", Publish("t", qos=1), 4, None, "packet-id-zero", "MQTT-2.3.1-1"),
    ("pid0-puback", Puback(0), 5, None, "packet-id-zero", "MQTT-2.2.1-5"),
    ("pid0-pubrel-4", Pubrel(0), 4, None, "packet-id-zero", "MQTT-2.3.1-6"),
    ("pid0-subscribe", Subscribe(0, [Subscription("a")]), 5, None, "packet-id-zero",
     "MQTT-2.2.1-3"),
    ("pid0-unsubscribe", Unsubscribe(0, ["a"]), 4, None, "packet-id-zero", "MQTT-2.3.1-1"),
    ("pid0-suback", Suback(0, [0]), 5, None, "packet-id-zero", "MQTT-2.2.1-6"),
    ("pid0-unsuback-4", Unsuback(0), 4, None, "packet-id-zero", "MQTT-2.3.1-7"),
    ("pid-on-qos0", Publish("t", packet_id=5), 5, None, "packet-id-on-qos0", "MQTT-2.2.1-2"),
    ("topic-wildcard", Publish("a/+"), 5, None, "topic-name-wildcard", "MQTT-3.3.2-2"),
    ("will-topic-wildcard-5", Connect(will=Will("a/#")), 5, None, "topic-name-wildcard",
     "MQTT-4.7.0-1"),
    ("will-topic-wildcard-4", Connect(protocol_level=4, will=Will("a/#")), 4, None,
     "topic-name-wildcard", "MQTT-4.7.1-1"),
    ("response-topic-wildcard", Publish("t", properties=Properties.of(response_topic="r/#")),
     5, None, "topic-name-wildcard", "MQTT-3.3.2-14"),
    ("publish-topic-empty-5", Publish(""), 5, None, "topic-empty", "MQTT-5.0 §3.3.2.1"),
    ("publish-topic-empty-4", Publish(""), 4, None, "topic-empty", "MQTT-4.7.3-1"),
    ("will-topic-empty", Connect(will=Will("")), 5, None, "topic-empty", "MQTT-4.7.3-1"),
    ("filter-empty", _sub(""), 5, None, "topic-empty", "MQTT-4.7.3-1"),
    ("hash-misplaced-5", _sub("a/#/b"), 5, None, "topic-filter-invalid", "MQTT-4.7.1-1"),
    ("hash-misplaced-4", Unsubscribe(1, ["a#"]), 4, None, "topic-filter-invalid",
     "MQTT-4.7.1-2"),
    ("plus-misplaced-5", _sub("a+/b"), 5, None, "topic-filter-invalid", "MQTT-4.7.1-2"),
    ("plus-misplaced-4", _sub("+a"), 4, None, "topic-filter-invalid", "MQTT-4.7.1-3"),
    ("share-name-empty", _sub("$share//a"), 5, None, "shared-subscription-invalid",
     "MQTT-4.8.2-1"),
    ("share-name-wildcard", _sub("$share/g+/a"), 5, None, "shared-subscription-invalid",
     "MQTT-4.8.2-2"),
    ("share-no-filter", Unsubscribe(1, ["$share/g"]), 5, None, "shared-subscription-invalid",
     "MQTT-4.8.2-2"),
    ("no-local-shared", _sub("$share/g/a", no_local=True), 5, None, "no-local-on-shared",
     "MQTT-3.8.3-4"),
    ("retain-handling-3", _sub(retain_handling=3), 5, None, "retain-handling-invalid",
     "MQTT-5.0 §3.8.3.1"),
    ("options-reserved-5", decode(H("8207" "000100" "000161" "c0")), 5, None,
     "subscription-options-reserved", "MQTT-3.8.3-5"),
    ("options-reserved-4", _sub(no_local=True), 4, None, "subscription-options-reserved",
     "MQTT-3.8.3-4"),
    ("subscribe-empty-5", Subscribe(1, []), 5, None, "subscribe-empty", "MQTT-3.8.3-2"),
    ("subscribe-empty-4", Subscribe(1, []), 4, None, "subscribe-empty", "MQTT-3.8.3-3"),
    ("unsubscribe-empty", Unsubscribe(1, []), 5, None, "unsubscribe-empty", "MQTT-3.10.3-2"),
    ("sub-id-from-client", Publish("t", properties=Properties.of(subscription_identifier=1)),
     5, "client", "subscription-identifier-from-client", "MQTT-3.3.4-6"),
    ("expiry-from-server", Disconnect(properties=Properties.of(session_expiry_interval=0)),
     5, "server", "session-expiry-from-server", "MQTT-3.14.2-2"),
    ("payload-not-utf8", Publish("t", b"\xff", properties=Properties.of(
        payload_format_indicator=1)), 5, None, "payload-format-invalid", "MQTT-5.0 §3.3.2.3.2"),
    ("will-payload-not-utf8", Connect(will=Will("w", b"\xc0", properties=Properties.of(
        payload_format_indicator=1))), 5, None, "payload-format-invalid",
     "MQTT-5.0 §3.1.3.2.3"),
]


@pytest.mark.parametrize(("packet", "version", "sender", "code", "rule"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_violation_is_found(packet: Packet, version: int, sender: str | None, code: str,
                            rule: str) -> None:
    found = validate(packet, version, sender=sender)
    assert (code, rule) in {(v.code, v.rule) for v in found}, found
    assert all(isinstance(v, Violation) and v.message for v in found)


def test_every_rule_code_is_exercised() -> None:
    assert {c[4] for c in CASES} == set(RULES)


def test_violation_fields() -> None:
    (violation,) = validate(Publish("a/+", b""), 5)
    assert violation.field == "topic"
    assert violation.severity is Severity.ERROR
    assert violation.reason_code == ReasonCode.TOPIC_NAME_INVALID
    assert str(violation) == "[MQTT-3.3.2-2] topic 'a/+' contains a wildcard"
    (v4,) = validate(Publish("a/+", b""), 4)
    assert v4.reason_code is None  # 3.1.1 has no reason codes
    (warning,) = validate(Publish("a\x7f"), 5)
    assert warning.severity is Severity.WARNING and warning.reason_code is None
    (malformed,) = validate(Pingreq(flags=1), 5)
    assert malformed.reason_code == ReasonCode.MALFORMED_PACKET


def test_topic_alias_allows_an_empty_topic_in_5_0() -> None:
    assert validate(Publish("", properties=Properties.of(topic_alias=1)), 5) == []


def test_subscription_identifiers_may_repeat_in_a_server_publish() -> None:
    packet = Publish("t", properties=Properties.of(subscription_identifiers=[1, 1, 2]))
    assert validate(packet, 5, sender=Role.SERVER) == []


# Conformant packets, as a USP Agent and the suite's broker exchange them.
CLEAN_V5: list[tuple[Packet, str]] = [
    (Connect(client_id="proto::agent-1", keep_alive=60, username="u", password=b"p",
             will=Will("usp/agent/will", b"x", 1, False,
                       Properties.of(will_delay_interval=5, payload_format_indicator=1)),
             properties=Properties.of(request_response_information=1,  # R-MQTT.12
                                      session_expiry_interval=0, receive_maximum=10,
                                      authentication_method="SCRAM",
                                      authentication_data=b"d",
                                      user_properties=[("usp-endpoint-id",  # R-MQTT.13
                                                        "proto::agent-1")])), "client"),
    (Connack(False, 0, Properties.of(response_information="usp/replies/agent-1",  # R-MQTT.21
                                     assigned_client_identifier="a1", maximum_qos=1,
                                     retain_available=0,
                                     user_properties=[("subscribe-topic",  # R-MQTT.44
                                                       "usp/agent/#")])), "server"),
    (Subscribe(1, [Subscription("usp/agent/#", 1, retain_handling=2),  # R-MQTT.15
                   Subscription("$share/g/x", 0, False, True)],
               Properties.of(subscription_identifier=1)), "client"),
    (Suback(1, [1, 0x80]), "server"),
    (Publish("usp/controller", b"\x08\x01", 1, False, False, 9,
             Properties.of(response_topic="usp/agent/reply",  # R-MQTT.23
                           content_type="usp.msg", correlation_data=b"c",  # R-MQTT.27
                           message_expiry_interval=30, payload_format_indicator=0)), "client"),
    (Publish("usp/agent", b"\x08", 2, True, True, 10,
             Properties.of(subscription_identifiers=[1, 2], topic_alias=3)), "server"),
    (Puback(9), "server"), (Pubrec(10, 0x10), "client"), (Pubrel(10, 0x92), "server"),
    (Pubcomp(10), "client"), (Unsubscribe(2, ["usp/agent/#"]), "client"),
    (Unsuback(2, [0, 0x11]), "server"), (Pingreq(), "client"), (Pingresp(), "server"),
    (Disconnect(0x04, Properties.of(session_expiry_interval=10, reason_string="bye")),
     "client"),
    (Disconnect(0x8B, Properties.of(server_reference="other")), "server"),
    (Auth(0x18, Properties.of(authentication_method="SCRAM")), "server"),
]
CLEAN_V4: list[tuple[Packet, str]] = [
    (Connect(protocol_level=4, client_id="agent", username="u", password=b"p",
             will=Will("w", b"", 2, True)), "client"),
    (Connect(protocol_level=4), "client"),
    (Connack(True, 0), "server"), (Connack(False, 5), "server"),
    (Publish("usp/controller/reply-to=usp%2Fagent", b"\x08", 1, packet_id=1), "client"),
    (Subscribe(1, [Subscription("usp/agent/#", 2)]), "client"), (Suback(1, [0, 0x80]), "server"),
    (Unsubscribe(1, ["$share/x"]), "client"), (Unsuback(1), "server"), (Puback(1), "server"),
    (Pubrel(1), "client"), (Pingreq(), "client"), (Disconnect(), "client"),
]


@pytest.mark.parametrize(("packet", "sender"), CLEAN_V5, ids=lambda x: type(x).__name__)
def test_conformant_v5_packets_have_no_violations(packet: Packet, sender: str) -> None:
    assert validate(packet, 5, sender=sender) == []
    assert validate(decode(encode(packet)), 5, sender=sender) == []


@pytest.mark.parametrize(("packet", "sender"), CLEAN_V4, ids=lambda x: type(x).__name__)
def test_conformant_v311_packets_have_no_violations(packet: Packet, sender: str) -> None:
    assert validate(packet, 4, sender=sender) == []
    assert validate(decode(encode(packet, 4), 4), 4, sender=sender) == []


def test_connect_is_checked_against_its_own_level() -> None:
    assert validate(Connect(protocol_level=4, password=b"x"), 5)[0].rule == "MQTT-3.1.2-22"
    assert validate(Connect(password=b"x"), 4) == []  # 5.0 allows a Password alone


def test_validate_never_raises_on_odd_objects() -> None:
    odd: list[Any] = [
        Connect(protocol_name=None, protocol_level="5", client_id=3, username=4,  # type: ignore
                password="pw", keep_alive=-1, properties=None),  # type: ignore[arg-type]
        Connect(will=Will(None, None, "1", False, None)),  # type: ignore[arg-type]
        Subscribe(None, [Subscription(None, None, None, None, None, None)]),  # type: ignore
        Suback(1, ["x"]), Unsubscribe(1, [None]),  # type: ignore[list-item]
        Publish(None, None, None),  # type: ignore[arg-type]
        Disconnect(None, None), Auth(None, None),  # type: ignore[arg-type]
    ]
    for packet in odd:
        for version in (4, 5):
            assert all(isinstance(v, Violation) for v in validate(packet, version, sender="client"))
