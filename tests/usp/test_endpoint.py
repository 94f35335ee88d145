"""Tests for conformance.usp.endpoint (TR-369 R-ARC.2a..R-ARC.6, R-SEC.0a, R-SEC.11/12)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.usp.endpoint import (
    BBF_OUI,
    BBF_PEN,
    CERTIFICATE_URN_PREFIX,
    MAX_INSTANCE_ID_LENGTH,
    SCHEMES,
    EndpointID,
    EndpointIDError,
    Violation,
    from_certificate_uri,
    matches_certificate_dns_name,
    matches_certificate_uri,
    parse_endpoint_id,
    validate_certificate_uri,
    validate_endpoint_id,
)


def codes(text: str | bytes, **kw: bool) -> set[str]:
    return {v.code for v in validate_endpoint_id(text, **kw)}


def errors(text: str | bytes) -> set[str]:
    return {v.code for v in validate_endpoint_id(text) if v.severity == "error"}


# --------------------------------------------------------------------------
# EndpointID / Violation value types


def test_endpoint_id_str_and_urn() -> None:
    eid = EndpointID("oui", "00D09E", "ABC123")
    assert str(eid) == "oui:00D09E:ABC123"
    assert eid.urn == "urn:bbf:usp:id:oui:00D09E:ABC123"
    assert EndpointID("os", "", "012345-ABC").urn == "urn:bbf:usp:id:os::012345-ABC"
    assert not eid.has_wildcard
    assert EndpointID("oui", "00D09E", "AB*").has_wildcard


def test_endpoint_id_is_frozen_and_hashable() -> None:
    eid = EndpointID("self", "", "me")
    with pytest.raises(dataclasses.FrozenInstanceError):
        eid.scheme = "user"  # type: ignore[misc]
    assert {eid, EndpointID("self", "", "me")} == {eid}


def test_violation_fields_and_str() -> None:
    (v,) = validate_endpoint_id("nonsense")
    assert isinstance(v, Violation)
    assert (v.code, v.requirement, v.severity) == ("ARC.2a.grammar", "R-ARC.2a", "error")
    assert "R-ARC.2a" in str(v) and "ARC.2a.grammar" in str(v)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.code = "x"  # type: ignore[misc]


def test_schemes_match_table() -> None:
    # R-ARC.2a: the twelve authority-scheme values.
    assert SCHEMES == ("oui", "cid", "pen", "self", "user", "os", "ops",
                       "uuid", "imei", "proto", "doc", "fqdn")


# --------------------------------------------------------------------------
# Spec examples and real-world ids validate without errors (R-ARC.2a)


@pytest.mark.parametrize("text", [
    "oui:00256D:my-unique-bbf-id-42",
    "cid:3AA3F8:my-unique-usp-id-42",
    "pen:3561:my-unique-bbf-id-42",
    "self::my-Agent",
    "os::00256D-0123456789",
    "ops::00256D-STB-0123456789",
    "uuid::f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    "imei::990000862471854",
    "proto::my-Agent",
    "fqdn::www.example.org",
])
def test_spec_examples_have_no_errors(text: str) -> None:
    assert errors(text) == set()
    assert str(parse_endpoint_id(text)) == text


@pytest.mark.parametrize("text", [
    "os::012345-ABC",
    "proto::controller-1",
    "oui:00D09E:ABC123",
    "self::agent_1.local",
    "self:abc:x",
    "user::x",
    "user:abcdef:x",
    "doc::example",
    "doc:a.b:example",
    "ops::0A1B2C-Router-SN%2D42",
    "uuid::00000000-0000-0000-0000-000000000000",
    "imei::490154203237518",
    "pen:1:x",
    "oui:0A1B2C3:x",
    "oui:0a1b2c3d4:x",
    "cid:abcdef:x",
    "fqdn::agent-1.example.com.",
    "proto:abc_12:controller-1",
])
def test_clean_ids(text: str) -> None:
    assert validate_endpoint_id(text) == []
    assert parse_endpoint_id(text) == EndpointID(*text.split(":", 2))


def test_bytes_input_is_accepted() -> None:
    assert validate_endpoint_id(b"os::012345-ABC") == []
    assert parse_endpoint_id(b"os::012345-ABC") == EndpointID("os", "", "012345-ABC")
    assert codes(b"\xff\xfe") == {"ARC.2a.grammar"}


# --------------------------------------------------------------------------
# Grammar and generic instance-id rules


@pytest.mark.parametrize("text", ["", "oui", "oui:00D09E", ":", "self-agent"])
def test_grammar_needs_two_separators(text: str) -> None:
    assert codes(text) == {"ARC.2a.grammar"}
    with pytest.raises(EndpointIDError) as info:
        parse_endpoint_id(text, strict=False)
    assert info.value.violations[0].code == "ARC.2a.grammar"


def test_unknown_scheme() -> None:
    # R-ARC.2a: only the table's schemes are allowed.
    assert codes("mac::001122334455") == {"ARC.2a.scheme.unknown"}
    assert codes("::x") == {"ARC.2a.scheme.unknown"}


def test_upper_case_scheme_is_a_warning_and_still_checked() -> None:
    vs = validate_endpoint_id("OUI:00D09E:a")
    assert [(v.code, v.severity) for v in vs] == [("ARC.2a.scheme.case", "warning")]
    assert "ARC.2a.oui.authority-id" in codes("OUI:xyz:a")
    parse_endpoint_id("OUI:00D09E:a")  # warnings never raise


def test_instance_id_empty() -> None:
    # R-ARC.5: instance-id is at least one unreserved / pct-encoded char.
    assert codes("self::") == {"ARC.5.instance-id.empty"}
    assert codes("oui:00D09E:") == {"ARC.5.instance-id.empty"}
    # Authority-id is still judged when the instance-id is missing.
    assert codes("os:x:") == {"ARC.5.instance-id.empty", "ARC.2a.os.authority-id"}


@pytest.mark.parametrize("text", [
    "self::a b", "self::a/b", "self::a:b", "self::caf\u00e9", "self::a~b",
    "self::*", "self::a@b", "self::\u0661",
])
def test_instance_id_charset(text: str) -> None:
    # R-ARC.5: only ALPHA / DIGIT / "-" / "." / "_" and pct-encoded.
    assert "ARC.5.instance-id.charset" in codes(text)


@pytest.mark.parametrize("text", ["self::a%", "self::a%4", "self::a%G1", "self::%%41"])
def test_instance_id_bad_pct_encoding(text: str) -> None:
    assert "ARC.5.instance-id.pct-encoding" in codes(text)


def test_instance_id_good_pct_encoding() -> None:
    assert validate_endpoint_id("self::a%2Fb%3a") == []


def test_instance_id_length_limit() -> None:
    # R-ARC.6: at most 50 characters.
    assert MAX_INSTANCE_ID_LENGTH == 50
    assert validate_endpoint_id("self::" + "a" * 50) == []
    assert codes("self::" + "a" * 51) == {"ARC.6.instance-id.length"}
    # Length counts the encoded form.
    assert codes("self::" + "%41" * 17) == {"ARC.6.instance-id.length"}


# --------------------------------------------------------------------------
# The R-ARC.2a table, row by row


@pytest.mark.parametrize("authority", ["", "00D09", "00D09E12", "00D09E1234", "GGGGGG",
                                       "00-D0-9E", "\uff10\uff10D09E"])
def test_oui_authority(authority: str) -> None:
    assert "ARC.2a.oui.authority-id" in codes(f"oui:{authority}:x")


@pytest.mark.parametrize("authority", ["", "3AA3F", "3AA3F8A", "3AA3FZ"])
def test_cid_authority(authority: str) -> None:
    assert codes(f"cid:{authority}:x") == {"ARC.2a.cid.authority-id"}


@pytest.mark.parametrize("authority", ["", "abc", "-1", "1.5", "007", "\u0661\u0662"])
def test_pen_authority(authority: str) -> None:
    # R-ARC.2a: decimal encoding of the IANA number.
    assert codes(f"pen:{authority}:x") == {"ARC.2a.pen.authority-id"}


@pytest.mark.parametrize("scheme", ["self", "user", "doc"])
def test_short_authority_rows(scheme: str) -> None:
    assert codes(f"{scheme}:abcdef:x") == set()
    assert codes(f"{scheme}:a.b_c-:x") == set()
    assert codes(f"{scheme}:abcdefg:x") == {f"ARC.2a.{scheme}.authority-id"}
    assert codes(f"{scheme}:a b:x") == {f"ARC.2a.{scheme}.authority-id"}
    assert codes(f"{scheme}:a%20:x") == {f"ARC.2a.{scheme}.authority-id"}


def test_proto_authority_excludes_dot() -> None:
    assert codes("proto:abc:x") == set()
    assert codes("proto:a.b:x") == {"ARC.2a.proto.authority-id"}
    assert codes("proto:abcdefg:x") == {"ARC.2a.proto.authority-id"}


@pytest.mark.parametrize("scheme, instance", [
    ("os", "012345-ABC"), ("ops", "012345-PC-ABC"),
    ("uuid", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
    ("imei", "490154203237518"), ("fqdn", "a.example.com"),
])
def test_zero_length_authority_rows(scheme: str, instance: str) -> None:
    assert codes(f"{scheme}::{instance}") == set()
    assert codes(f"{scheme}:x:{instance}") == {f"ARC.2a.{scheme}.authority-id"}


@pytest.mark.parametrize("instance", ["012345", "012345-", "-ABC", "01234-ABC",
                                      "0123456789-ABC", "XYZXYZ-ABC"])
def test_os_instance(instance: str) -> None:
    assert codes(f"os::{instance}") == {"ARC.2a.os.instance-id"}


def test_os_serial_may_contain_dashes_and_seven_or_nine_digit_oui() -> None:
    assert codes("os::012345-AB-CD") == set()
    assert codes("os::0123456-ABC") == set()
    assert codes("os::012345678-ABC") == set()


@pytest.mark.parametrize("instance", ["012345-ABC", "012345--ABC", "012345-PC-",
                                      "ZZZZZZ-PC-SN", "-PC-SN"])
def test_ops_instance(instance: str) -> None:
    assert codes(f"ops::{instance}") == {"ARC.2a.ops.instance-id"}


@pytest.mark.parametrize("instance", [
    "f81d4fae7dec11d0a76500a0c91e6bf6",
    "f81d4fae-7dec-11d0-a765-00a0c91e6bf",
    "{f81d4fae-7dec-11d0-a765-00a0c91e6bf6}",
    "g81d4fae-7dec-11d0-a765-00a0c91e6bf6",
])
def test_uuid_instance(instance: str) -> None:
    assert "ARC.2a.uuid.instance-id" in codes(f"uuid::{instance}")


def test_uuid_warnings() -> None:
    vs = validate_endpoint_id("uuid::F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6")
    assert [(v.code, v.severity) for v in vs] == [("ARC.2a.uuid.case", "warning")]
    vs = validate_endpoint_id("uuid::f81d4fae-7dec-11d0-c765-00a0c91e6bf6")
    assert [(v.code, v.severity) for v in vs] == [("ARC.2a.uuid.variant", "warning")]


@pytest.mark.parametrize("instance", ["49015420323751", "4901542032375188", "49015420323751X"])
def test_imei_instance(instance: str) -> None:
    assert codes(f"imei::{instance}") == {"ARC.2a.imei.instance-id"}


def test_imei_check_digit_is_a_warning() -> None:
    # The table's own example fails Luhn, so a mismatch is only a warning.
    vs = validate_endpoint_id("imei::990000862471854")
    assert [(v.code, v.severity) for v in vs] == [("ARC.2a.imei.check-digit", "warning")]
    assert validate_endpoint_id("imei::490154203237518") == []
    parse_endpoint_id("imei::990000862471854")


@pytest.mark.parametrize("instance", ["localhost", "a..b", "-a.example.com", "a-.example.com",
                                      "a_b.example.com", "1.2.3.4", "a.example.com..",
                                      "x" * 64 + ".com", ".example.com"])
def test_fqdn_instance(instance: str) -> None:
    assert "ARC.2a.fqdn.instance-id" in codes(f"fqdn::{instance}")


def test_fqdn_wildcard() -> None:
    assert "ARC.2a.fqdn.wildcard" in codes("fqdn::*.example.com")


def test_bbf_reserved_identifiers_warn() -> None:
    # R-ARC.3: BBF OUI and PEN are for BBF only.
    assert BBF_OUI == "00256D" and BBF_PEN == "3561"
    for text in ("oui:00256D:x", "oui:00256d:x", "pen:3561:x",
                 "os::00256D-1", "ops::00256D-PC-1"):
        vs = validate_endpoint_id(text)
        assert [(v.code, v.requirement, v.severity) for v in vs] == [
            ("ARC.3.bbf-reserved", "R-ARC.3", "warning")], text


def test_proto_and_doc_in_production() -> None:
    # R-ARC.4: only judged when the caller says the id is in production use.
    assert codes("proto::controller-1") == set()
    assert codes("proto::controller-1", production=True) == {"ARC.4.non-production"}
    assert codes("doc::x", production=True) == {"ARC.4.non-production"}
    assert codes("self::x", production=True) == set()
    with pytest.raises(EndpointIDError):
        parse_endpoint_id("doc::x", production=True)


def test_multiple_violations_are_all_reported() -> None:
    found = codes("uuid:abc:" + "Z*" * 30)
    assert found == {"ARC.2a.uuid.authority-id", "ARC.5.instance-id.charset",
                     "ARC.6.instance-id.length", "ARC.2a.uuid.instance-id"}


# --------------------------------------------------------------------------
# parse_endpoint_id


def test_parse_strict_raises_with_violations() -> None:
    with pytest.raises(EndpointIDError) as info:
        parse_endpoint_id("oui:xyz:a b")
    assert isinstance(info.value, ValueError)
    assert {v.code for v in info.value.violations} == {
        "ARC.2a.oui.authority-id", "ARC.5.instance-id.charset"}
    assert all(v.severity == "error" for v in info.value.violations)


def test_parse_lenient_only_needs_structure() -> None:
    assert parse_endpoint_id("oui:xyz:a b", strict=False) == EndpointID("oui", "xyz", "a b")
    assert parse_endpoint_id("a:b:c:d", strict=False) == EndpointID("a", "b", "c:d")


@pytest.mark.parametrize("bad", [None, 42, 3.5, ["os::1-2"], b"\xc3\x28"])
def test_parse_non_text(bad: object) -> None:
    with pytest.raises(EndpointIDError):
        parse_endpoint_id(bad)  # type: ignore[arg-type]
    assert codes(bad) == {"ARC.2a.grammar"}  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Certificate forms (R-SEC.0a, R-SEC.10a, R-SEC.11, R-SEC.12)


def test_from_certificate_uri() -> None:
    assert CERTIFICATE_URN_PREFIX == "urn:bbf:usp:id:"
    eid = from_certificate_uri("urn:bbf:usp:id:oui:00D09E:ABC123")
    assert eid == EndpointID("oui", "00D09E", "ABC123")
    assert eid.urn == "urn:bbf:usp:id:oui:00D09E:ABC123"
    # "urn" and the namespace id are case-insensitive (RFC 8141).
    assert from_certificate_uri("URN:BBF:usp:id:os::012345-ABC") == EndpointID(
        "os", "", "012345-ABC")
    assert from_certificate_uri(b"urn:bbf:usp:id:self::x") == EndpointID("self", "", "x")


@pytest.mark.parametrize("uri", ["oui:00D09E:ABC123", "urn:bbf:usp:oui:00D09E:ABC123",
                                 "urn:ietf:usp:id:self::x", "urn:bbf:USP:ID:self::x", "",
                                 "urn:bbf:usp:id:"])
def test_from_certificate_uri_rejects_bad_prefix(uri: str) -> None:
    with pytest.raises(EndpointIDError):
        from_certificate_uri(uri, strict=False)


def test_from_certificate_uri_strictness() -> None:
    with pytest.raises(EndpointIDError) as info:
        from_certificate_uri("urn:bbf:usp:id:oui:XYZ:ABC")
    assert info.value.violations[0].code == "ARC.2a.oui.authority-id"
    assert from_certificate_uri("urn:bbf:usp:id:oui:XYZ:ABC", strict=False).authority_id == "XYZ"
    with pytest.raises(EndpointIDError):
        from_certificate_uri(b"\xff")


def test_certificate_wildcards_allowed_schemes() -> None:
    # R-SEC.12: wildcards only for oui, cid, pen, os and ops.
    for uri in ("urn:bbf:usp:id:oui:00D09E:*", "urn:bbf:usp:id:cid:3AA3F8:box-*",
                "urn:bbf:usp:id:pen:9999:*", "urn:bbf:usp:id:os::00D09E-*",
                "urn:bbf:usp:id:ops::00D09E-STB-*", "urn:bbf:usp:id:ops::00D09E-*"):
        assert [v for v in validate_certificate_uri(uri) if v.severity == "error"] == [], uri
        assert from_certificate_uri(uri).has_wildcard
    for uri in ("urn:bbf:usp:id:self::*", "urn:bbf:usp:id:uuid::*",
                "urn:bbf:usp:id:fqdn::*.example.com"):
        found = {v.code for v in validate_certificate_uri(uri)}
        assert "SEC.12.wildcard-scheme" in found, uri
        with pytest.raises(EndpointIDError):
            from_certificate_uri(uri)


def test_certificate_wildcard_must_not_cover_oui() -> None:
    # R-SEC.12: the assigning-entity part of os/ops stays unwildcarded.
    for uri in ("urn:bbf:usp:id:os::*", "urn:bbf:usp:id:os::00D0*-1",
                "urn:bbf:usp:id:ops::*-STB-1"):
        assert {v.code for v in validate_certificate_uri(uri)} == {"SEC.12.wildcard-oui"}


def test_validate_certificate_uri_prefix_and_grammar() -> None:
    assert {v.code for v in validate_certificate_uri("oui:00D09E:x")} == {"SEC.0a.urn-prefix"}
    assert {v.code for v in validate_certificate_uri("urn:bbf:usp:id:self")} == {
        "ARC.2a.grammar"}
    assert {v.code for v in validate_certificate_uri(b"\xff")} == {"ARC.2a.grammar"}
    assert validate_certificate_uri("urn:bbf:usp:id:oui:00D09E:ABC123") == []


def test_matches_certificate_uri_exact() -> None:
    # R-SEC.0a / R-SEC.10a: from_id must match the certificate.
    uri = "urn:bbf:usp:id:oui:00D09E:ABC123"
    assert matches_certificate_uri("oui:00D09E:ABC123", uri)
    assert matches_certificate_uri(EndpointID("oui", "00D09E", "ABC123"), uri)
    assert not matches_certificate_uri("oui:00D09E:ABC124", uri)
    assert not matches_certificate_uri("oui:00D09F:ABC123", uri)
    assert not matches_certificate_uri("cid:00D09E:ABC123", uri)
    assert not matches_certificate_uri("oui:00D09E:ABC123", "oui:00D09E:ABC123")
    assert not matches_certificate_uri("garbage", uri)
    assert not matches_certificate_uri("oui:00D09E:ABC123", "urn:bbf:usp:id:garbage")


def test_matches_certificate_uri_wildcards() -> None:
    # R-SEC.11: same scheme and authority-id, wildcarded instance-id.
    assert matches_certificate_uri("oui:00D09E:ABC123", "urn:bbf:usp:id:oui:00D09E:*")
    assert matches_certificate_uri("oui:00D09E:ABC123", "urn:bbf:usp:id:oui:00D09E:ABC*")
    assert matches_certificate_uri("os::00D09E-123", "urn:bbf:usp:id:os::00D09E-*")
    assert matches_certificate_uri("ops::00D09E-STB-9", "urn:bbf:usp:id:ops::00D09E-STB-*")
    assert not matches_certificate_uri("oui:00D09E:XYZ", "urn:bbf:usp:id:oui:00D09E:ABC*")
    assert not matches_certificate_uri("oui:00D09F:ABC", "urn:bbf:usp:id:oui:00D09E:*")
    assert not matches_certificate_uri("os::00D09F-123", "urn:bbf:usp:id:os::00D09E-*")
    # R-SEC.12: forbidden wildcards never match.
    assert not matches_certificate_uri("self::agent", "urn:bbf:usp:id:self::*")
    assert not matches_certificate_uri("os::00D09E-123", "urn:bbf:usp:id:os::*")
    # A wildcard in the endpoint id is not a wildcard.
    assert not matches_certificate_uri("oui:00D09E:A*", "urn:bbf:usp:id:oui:00D09E:*")
    # Regex metacharacters in the pattern are literal.
    assert not matches_certificate_uri("oui:00D09E:AxB", "urn:bbf:usp:id:oui:00D09E:A.B*")


def test_matches_certificate_dns_name() -> None:
    # R-SEC.0a: fqdn ids may be carried as a dNSName.
    assert matches_certificate_dns_name("fqdn::agent.example.com", "agent.example.com")
    assert matches_certificate_dns_name("fqdn::Agent.Example.com", "agent.example.com.")
    assert matches_certificate_dns_name(EndpointID("fqdn", "", "a.example.org"), "a.example.org")
    assert not matches_certificate_dns_name("fqdn::agent.example.com", "other.example.com")
    assert not matches_certificate_dns_name("fqdn::agent.example.com", "*.example.com")
    assert not matches_certificate_dns_name("self::agent.example.com", "agent.example.com")
    assert not matches_certificate_dns_name("fqdn:x:agent.example.com", "agent.example.com")
    assert not matches_certificate_dns_name("fqdn::", "")
    assert not matches_certificate_dns_name("nope", "agent.example.com")
    assert not matches_certificate_dns_name("fqdn::a.example.com", None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Hostile input (property tests)

_ID_ALPHABET = st.sampled_from(list("abcAF09:-._%*~/ \u00e9") + ["%41", "%G", "oui:", "os::"])
_id_like = st.lists(_ID_ALPHABET, max_size=40).map("".join)
_anything = st.one_of(st.text(max_size=80), _id_like, st.binary(max_size=80))


@settings(max_examples=300, deadline=None)
@given(_anything)
def test_parse_never_raises_anything_else(text: str | bytes) -> None:
    for strict in (True, False):
        try:
            eid = parse_endpoint_id(text, strict=strict)
        except EndpointIDError:
            continue
        assert isinstance(eid, EndpointID)
        original = text.decode() if isinstance(text, bytes) else text
        assert str(eid) == original


@settings(max_examples=300, deadline=None)
@given(_anything)
def test_validate_never_raises_and_agrees_with_parse(text: str | bytes) -> None:
    vs = validate_endpoint_id(text)
    assert all(isinstance(v, Violation) and v.severity in ("error", "warning") for v in vs)
    assert all(v.requirement.startswith("R-") for v in vs)
    has_error = any(v.severity == "error" for v in vs)
    try:
        parse_endpoint_id(text)
        assert not has_error
    except EndpointIDError as exc:
        assert has_error
        assert exc.violations


@settings(max_examples=300, deadline=None)
@given(_anything, _anything)
def test_certificate_functions_never_raise(uri: str | bytes, other: str | bytes) -> None:
    cert_uri = uri if isinstance(uri, bytes) else CERTIFICATE_URN_PREFIX + uri
    for candidate in (uri, cert_uri):
        validate_certificate_uri(candidate)
        try:
            from_certificate_uri(candidate)
        except EndpointIDError:
            pass
    if isinstance(other, str) and isinstance(cert_uri, str):
        assert isinstance(matches_certificate_uri(other, cert_uri), bool)
        assert isinstance(matches_certificate_dns_name(other, uri if isinstance(uri, str)
                                                       else ""), bool)


_valid_instance = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._",
    min_size=1, max_size=50)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["self", "user", "proto", "doc"]), _valid_instance)
def test_generated_valid_ids_round_trip(scheme: str, instance: str) -> None:
    text = f"{scheme}::{instance}"
    assert validate_endpoint_id(text) == []
    eid = parse_endpoint_id(text)
    assert str(eid) == text
    assert from_certificate_uri(eid.urn, strict=False) == eid
    assert matches_certificate_uri(eid, eid.urn)
