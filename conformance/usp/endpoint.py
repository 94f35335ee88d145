"""USP Endpoint Identifier parsing and validation (TR-369 "Endpoint Identifier").

An Endpoint ID has three parts, ``authority-scheme ":" [authority-id] ":"
instance-id``. Record ``to_id``/``from_id`` fields carry that bare form; an
X.509 ``subjectAltName`` carries it behind the ``urn:bbf:usp:id:`` prefix
(R-SEC.0a).

This module is pure and sans-I/O:

* :func:`parse_endpoint_id` splits text into an :class:`EndpointID` and
  raises :class:`EndpointIDError` (and nothing else) when it cannot, or, in
  strict mode (the default), when the id breaks a MUST-level rule.
* :func:`validate_endpoint_id` never raises; it returns :class:`Violation`
  records, one per broken rule, each tagged with the requirement id.
* :func:`from_certificate_uri`, :func:`validate_certificate_uri`,
  :func:`matches_certificate_uri` and :func:`matches_certificate_dns_name`
  handle the certificate forms, including the wildcard rules of R-SEC.11 and
  R-SEC.12.

Violation codes (code, requirement, severity: meaning):

- ``ARC.2a.grammar`` (R-ARC.2a, error): fewer than two ":" separators, or not text
- ``ARC.2a.scheme.unknown`` (R-ARC.2a, error): scheme not in the table
- ``ARC.2a.scheme.case`` (R-ARC.2a, warning): known scheme not written in lower case
- ``ARC.2a.<scheme>.authority-id`` (R-ARC.2a, error): authority-id breaks the scheme's row
- ``ARC.2a.<scheme>.instance-id`` (R-ARC.2a, error): instance-id breaks the row
  (os, ops, uuid, imei, fqdn)
- ``ARC.2a.uuid.case`` (R-ARC.2a, warning): upper-case hex (RFC 4122 emits lower case)
- ``ARC.2a.uuid.variant`` (R-ARC.2a, warning): variant bits are not RFC 4122's
- ``ARC.2a.imei.check-digit`` (R-ARC.2a, warning): Luhn check digit mismatch
- ``ARC.2a.fqdn.wildcard`` (R-ARC.2a, error): "*" in an fqdn instance-id
- ``ARC.3.bbf-reserved`` (R-ARC.3, warning): BBF OUI 00256D or PEN 3561 in use
- ``ARC.4.non-production`` (R-ARC.4, error): "proto" or "doc" scheme, reported
  only when the caller says the id is used in production
- ``ARC.5.instance-id.empty`` (R-ARC.5, error): empty instance-id
- ``ARC.5.instance-id.charset`` (R-ARC.5, error): character outside unreserved / "%"
- ``ARC.5.instance-id.pct-encoding`` (R-ARC.5, error): "%" without two hex digits
- ``ARC.6.instance-id.length`` (R-ARC.6, error): instance-id over 50 characters
- ``SEC.0a.urn-prefix`` (R-SEC.0a, error): certificate URI lacks ``urn:bbf:usp:id:``
- ``SEC.12.wildcard-scheme`` (R-SEC.12, error): wildcard with a scheme that forbids it
- ``SEC.12.wildcard-oui`` (R-SEC.12, error): os/ops wildcard touches the OUI part

Severity: ``"error"`` marks a broken MUST. ``"warning"`` marks either a
SHOULD-level concern or a MUST whose breach depends on context the validator
cannot see (who owns the BBF OUI; GSMA's check digit, which the table's own
IMEI example does not satisfy). R-ARC.4 depends on the deployment, so it is
only checked when the caller passes ``production=True``.

Grammar notes: the ``authority-scheme`` syntax line has no requirement id of
its own, so grammar failures cite R-ARC.2a, the requirement that makes the
scheme table binding. "Non-reserved characters" in the authority-id rows is
read as the R-ARC.5 ``unreserved`` set (ALPHA / DIGIT / "-" / "." / "_",
ASCII only, no percent-encoding). Hex OUIs are accepted in either case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "BBF_OUI",
    "BBF_PEN",
    "CERTIFICATE_URN_PREFIX",
    "MAX_INSTANCE_ID_LENGTH",
    "SCHEMES",
    "WILDCARD_SCHEMES",
    "EndpointID",
    "EndpointIDError",
    "Severity",
    "Violation",
    "from_certificate_uri",
    "matches_certificate_dns_name",
    "matches_certificate_uri",
    "parse_endpoint_id",
    "validate_certificate_uri",
    "validate_endpoint_id",
]

Severity = Literal["error", "warning"]

#: The authority-scheme values listed by R-ARC.2a, in table order.
SCHEMES: Final[tuple[str, ...]] = (
    "oui", "cid", "pen", "self", "user", "os",
    "ops", "uuid", "imei", "proto", "doc", "fqdn",
)
#: Schemes whose certificate instance-id may carry a wildcard (R-SEC.12).
WILDCARD_SCHEMES: Final[frozenset[str]] = frozenset({"oui", "cid", "pen", "os", "ops"})
#: Prefix of the URN form used in certificate subjectAltName (R-SEC.0a).
CERTIFICATE_URN_PREFIX: Final = "urn:bbf:usp:id:"
#: Upper bound on instance-id length (R-ARC.6).
MAX_INSTANCE_ID_LENGTH: Final = 50
#: Identifiers reserved for BBF documentation and prototyping (R-ARC.3).
BBF_OUI: Final = "00256D"
BBF_PEN: Final = "3561"

_WILDCARD: Final = "*"
_UNRESERVED = re.compile(r"[A-Za-z0-9._-]*")
_UNRESERVED_NO_DOT = re.compile(r"[A-Za-z0-9_-]*")
_INSTANCE_CHAR = re.compile(r"[A-Za-z0-9._%-]")
_PCT = re.compile(r"%[0-9A-Fa-f]{2}")
_OUI = re.compile(r"[0-9A-Fa-f]{6}|[0-9A-Fa-f]{7}|[0-9A-Fa-f]{9}")
_CID = re.compile(r"[0-9A-Fa-f]{6}")
_DECIMAL = re.compile(r"[0-9]+")
_UUID = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
)
_NIL_UUID: Final = "00000000-0000-0000-0000-000000000000"
_IMEI = re.compile(r"[0-9]{15}")
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class EndpointIDError(ValueError):
    """The one exception raised by this module's parsers.

    ``violations`` lists the broken rules (possibly empty when the input was
    not text at all).
    """

    def __init__(self, message: str, violations: tuple[Violation, ...] = ()) -> None:
        super().__init__(message)
        self.violations: tuple[Violation, ...] = violations


@dataclass(frozen=True)
class Violation:
    """One broken Endpoint ID rule."""

    code: str
    requirement: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"[{self.requirement}] {self.code} ({self.severity}): {self.message}"


@dataclass(frozen=True)
class EndpointID:
    """The three components of an Endpoint ID, kept exactly as written."""

    scheme: str
    authority_id: str
    instance_id: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.authority_id}:{self.instance_id}"

    @property
    def urn(self) -> str:
        """The certificate ``subjectAltName`` URI form (R-SEC.0a)."""
        return CERTIFICATE_URN_PREFIX + str(self)

    @property
    def has_wildcard(self) -> bool:
        """True when the instance-id carries a certificate wildcard (R-SEC.11)."""
        return _WILDCARD in self.instance_id


# ---------------------------------------------------------------------------
# Splitting


def _as_text(text: object) -> str | None:
    """Accept ``str`` or UTF-8 ``bytes``; anything else yields None."""
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _split(text: str) -> EndpointID | None:
    """Split on the first two colons; None when there are fewer than two."""
    scheme, sep1, rest = text.partition(":")
    authority, sep2, instance = rest.partition(":")
    if not sep1 or not sep2:
        return None
    return EndpointID(scheme, authority, instance)


# ---------------------------------------------------------------------------
# Rule checks


def _v(code: str, requirement: str, message: str, severity: Severity = "error") -> Violation:
    return Violation(code, requirement, message, severity)


def _generic_instance_checks(instance: str, *, allow_wildcard: bool) -> list[Violation]:
    """R-ARC.5 character set and R-ARC.6 length, common to every scheme."""
    out: list[Violation] = []
    if not instance:
        return [_v("ARC.5.instance-id.empty", "R-ARC.5", "instance-id is empty")]
    bad = sorted(
        {c for c in instance
         if not _INSTANCE_CHAR.fullmatch(c) and not (allow_wildcard and c == _WILDCARD)}
    )
    if bad:
        shown = "".join(bad[:10])
        out.append(_v("ARC.5.instance-id.charset", "R-ARC.5",
                      f"instance-id has characters outside unreserved/pct-encoded: {shown!r}"))
    for match in re.finditer("%", instance):
        if not _PCT.match(instance, match.start()):
            out.append(_v("ARC.5.instance-id.pct-encoding", "R-ARC.5",
                          f"'%' at offset {match.start()} is not followed by two hex digits"))
            break
    if len(instance) > MAX_INSTANCE_ID_LENGTH:
        out.append(_v("ARC.6.instance-id.length", "R-ARC.6",
                      f"instance-id is {len(instance)} characters, limit is "
                      f"{MAX_INSTANCE_ID_LENGTH}"))
    return out


def _authority_checks(scheme: str, authority: str) -> list[Violation]:
    """The authority-id half of one R-ARC.2a row; ``scheme`` is lower case."""
    if scheme in ("os", "ops", "uuid", "imei", "fqdn"):
        if authority:
            return [_v(f"ARC.2a.{scheme}.authority-id", "R-ARC.2a",
                       f"authority-id must be empty for '{scheme}', got {authority[:20]!r}")]
        return []
    if scheme == "oui":
        if not _OUI.fullmatch(authority):
            return [_v("ARC.2a.oui.authority-id", "R-ARC.2a",
                       f"authority-id for 'oui' must be 6, 7 or 9 hex digits, "
                       f"got {authority[:20]!r}")]
        return _bbf_oui(authority)
    if scheme == "cid":
        if not _CID.fullmatch(authority):
            return [_v("ARC.2a.cid.authority-id", "R-ARC.2a",
                       f"authority-id for 'cid' must be 6 hex digits, got {authority[:20]!r}")]
        return []
    if scheme == "pen":
        if not _DECIMAL.fullmatch(authority) or (len(authority) > 1 and authority[0] == "0"):
            return [_v("ARC.2a.pen.authority-id", "R-ARC.2a",
                       f"authority-id for 'pen' must be a decimal enterprise number "
                       f"without leading zeros, got {authority[:20]!r}")]
        if authority == BBF_PEN:
            return [_v("ARC.3.bbf-reserved", "R-ARC.3",
                       f"PEN {BBF_PEN} is reserved for BBF documentation and prototyping",
                       "warning")]
        return []
    # self, user, proto, doc: 0..6 non-reserved characters ("." barred for proto).
    pattern = _UNRESERVED_NO_DOT if scheme == "proto" else _UNRESERVED
    if len(authority) > 6 or not pattern.fullmatch(authority):
        extra = ' (excluding ".")' if scheme == "proto" else ""
        return [_v(f"ARC.2a.{scheme}.authority-id", "R-ARC.2a",
                   f"authority-id for '{scheme}' must be 0-6 non-reserved characters"
                   f"{extra}, got {authority[:20]!r}")]
    return []


def _bbf_oui(oui: str) -> list[Violation]:
    if oui.upper() == BBF_OUI:
        return [_v("ARC.3.bbf-reserved", "R-ARC.3",
                   f"OUI {BBF_OUI} is reserved for BBF documentation and prototyping",
                   "warning")]
    return []


def _check_oui_prefixed(scheme: str, instance: str, *, allow_wildcard: bool) -> list[Violation]:
    """os: ``OUI-SerialNumber``; ops: ``OUI-ProductClass-SerialNumber``.

    Splits on the first dashes, so only the SerialNumber may contain "-". In
    a certificate, a wildcard may stand for everything after the OUI but
    never for any of the OUI itself (R-SEC.12).
    """
    parts = 2 if scheme == "os" else 3
    shape = "<OUI>-<SerialNumber>" if parts == 2 else "<OUI>-<ProductClass>-<SerialNumber>"
    oui, dash, rest = instance.partition("-")
    wildcard = allow_wildcard and _WILDCARD in instance
    if wildcard and _WILDCARD in oui:
        return [_v("SEC.12.wildcard-oui", "R-SEC.12",
                   f"the OUI part of an '{scheme}' instance-id must not be wildcarded")]
    if parts == 3 and not (wildcard and _WILDCARD in rest):
        product, dash2, serial = rest.partition("-")
        shaped = bool(dash and dash2 and product and serial)
    else:
        shaped = bool(dash and rest)
    if not shaped or not _OUI.fullmatch(oui):
        return [_v(f"ARC.2a.{scheme}.instance-id", "R-ARC.2a",
                   f"instance-id for '{scheme}' must be {shape} with a 6, 7 or 9 "
                   f"hex digit OUI, got {instance[:60]!r}")]
    return _bbf_oui(oui)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _check_uuid(instance: str) -> list[Violation]:
    if not _UUID.fullmatch(instance):
        return [_v("ARC.2a.uuid.instance-id", "R-ARC.2a",
                   f"instance-id for 'uuid' must be an RFC 4122 UUID "
                   f"(8-4-4-4-12 hex), got {instance[:60]!r}")]
    out: list[Violation] = []
    if instance != instance.lower():
        out.append(_v("ARC.2a.uuid.case", "R-ARC.2a",
                      "RFC 4122 UUID text is emitted in lower case", "warning"))
    if instance != _NIL_UUID and instance[19].lower() not in "89ab":
        out.append(_v("ARC.2a.uuid.variant", "R-ARC.2a",
                      "UUID variant bits are not the RFC 4122 variant", "warning"))
    return out


def _check_imei(instance: str) -> list[Violation]:
    if not _IMEI.fullmatch(instance):
        return [_v("ARC.2a.imei.instance-id", "R-ARC.2a",
                   f"instance-id for 'imei' must be 15 decimal digits, got {instance[:60]!r}")]
    if not _luhn_ok(instance):
        return [_v("ARC.2a.imei.check-digit", "R-ARC.2a",
                   "IMEI check digit (Luhn) does not match", "warning")]
    return []


def _check_fqdn(instance: str) -> list[Violation]:
    """A host name per RFC 1123 (LDH labels), at least two labels, a
    non-numeric top label, one optional trailing dot, no wildcard."""
    if _WILDCARD in instance:
        return [_v("ARC.2a.fqdn.wildcard", "R-ARC.2a",
                   "fqdn instance-id must not contain wildcards")]
    name = instance.removesuffix(".")
    labels = name.split(".")
    ok = (
        len(labels) >= 2
        and len(name) <= 253
        and all(_DNS_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )
    if not ok:
        return [_v("ARC.2a.fqdn.instance-id", "R-ARC.2a",
                   f"instance-id for 'fqdn' must be a fully qualified host name, "
                   f"got {instance[:60]!r}")]
    return []


def _instance_checks(scheme: str, instance: str, *, allow_wildcard: bool) -> list[Violation]:
    """The instance-id half of one R-ARC.2a row; ``scheme`` is lower case."""
    if scheme in ("os", "ops"):
        return _check_oui_prefixed(scheme, instance, allow_wildcard=allow_wildcard)
    if scheme == "uuid":
        return _check_uuid(instance)
    if scheme == "imei":
        return _check_imei(instance)
    if scheme == "fqdn":
        return _check_fqdn(instance)
    return []  # the assigning entity defines the syntax


def _check(eid: EndpointID, *, allow_wildcard: bool,
           production: bool = False) -> list[Violation]:
    out: list[Violation] = []
    scheme = eid.scheme.lower()
    if scheme not in SCHEMES:
        out.append(_v("ARC.2a.scheme.unknown", "R-ARC.2a",
                      f"unknown authority-scheme {eid.scheme[:20]!r}"))
    elif eid.scheme != scheme:
        out.append(_v("ARC.2a.scheme.case", "R-ARC.2a",
                      f"authority-scheme {eid.scheme!r} should be written in lower case",
                      "warning"))
    wildcard = allow_wildcard and _WILDCARD in eid.instance_id
    if wildcard and scheme not in WILDCARD_SCHEMES:
        out.append(_v("SEC.12.wildcard-scheme", "R-SEC.12",
                      f"wildcards are only allowed for schemes {sorted(WILDCARD_SCHEMES)}"))
        wildcard = False
    out += _generic_instance_checks(eid.instance_id, allow_wildcard=wildcard)
    if scheme in SCHEMES:
        out += _authority_checks(scheme, eid.authority_id)
        if eid.instance_id:
            out += _instance_checks(scheme, eid.instance_id, allow_wildcard=wildcard)
        if production and scheme in ("proto", "doc"):
            out.append(_v("ARC.4.non-production", "R-ARC.4",
                          f"'{scheme}' Endpoint IDs must not be used in production"))
    return out


_GRAMMAR = _v("ARC.2a.grammar", "R-ARC.2a",
              'Endpoint ID must be authority-scheme ":" [authority-id] ":" instance-id')
_NOT_TEXT = _v("ARC.2a.grammar", "R-ARC.2a", "Endpoint ID must be UTF-8 text")


# ---------------------------------------------------------------------------
# Public API


def validate_endpoint_id(text: str | bytes, *, production: bool = False) -> list[Violation]:
    """Every rule ``text`` breaks; an empty list means it is a clean Endpoint ID.

    Never raises. Checks the grammar, the R-ARC.2a row of its scheme, R-ARC.3,
    R-ARC.5 and R-ARC.6; with ``production`` also R-ARC.4 (no "proto"/"doc").
    """
    decoded = _as_text(text)
    if decoded is None:
        return [_NOT_TEXT]
    eid = _split(decoded)
    if eid is None:
        return [_GRAMMAR]
    return _check(eid, allow_wildcard=False, production=production)


def parse_endpoint_id(text: str | bytes, *, strict: bool = True,
                      production: bool = False) -> EndpointID:
    """Split ``text`` into an :class:`EndpointID`.

    With ``strict`` (the default) any error-severity violation from
    :func:`validate_endpoint_id` raises; warnings never do. With
    ``strict=False`` only the three-part structure is required. ``production``
    is passed on to the validator (R-ARC.4). Raises
    :class:`EndpointIDError` and nothing else.
    """
    decoded = _as_text(text)
    if decoded is None:
        raise EndpointIDError("Endpoint ID is not UTF-8 text", (_NOT_TEXT,))
    eid = _split(decoded)
    if eid is None:
        raise EndpointIDError(f"not an Endpoint ID: {decoded[:80]!r}", (_GRAMMAR,))
    if strict:
        errors = tuple(v for v in _check(eid, allow_wildcard=False, production=production)
                       if v.severity == "error")
        if errors:
            raise EndpointIDError(
                f"invalid Endpoint ID {decoded[:80]!r}: {errors[0].message}", errors)
    return eid


def _strip_urn(uri: str) -> str | None:
    """Drop the ``urn:bbf:usp:id:`` prefix; "urn" and the NID are case-insensitive
    (RFC 8141), the rest of the prefix is compared exactly."""
    head = CERTIFICATE_URN_PREFIX
    if len(uri) < len(head) or uri[:8].lower() != head[:8] or uri[8:len(head)] != head[8:]:
        return None
    return uri[len(head):]


def validate_certificate_uri(uri: str | bytes) -> list[Violation]:
    """Rules broken by a subjectAltName URI (R-SEC.0a, R-SEC.12, plus the
    Endpoint ID rules). A wildcard ``*`` in the instance-id is tolerated for
    the schemes R-SEC.12 allows. Never raises."""
    decoded = _as_text(uri)
    if decoded is None:
        return [_NOT_TEXT]
    body = _strip_urn(decoded)
    if body is None:
        return [_v("SEC.0a.urn-prefix", "R-SEC.0a",
                   f"certificate URI must start with {CERTIFICATE_URN_PREFIX!r}")]
    eid = _split(body)
    if eid is None:
        return [_GRAMMAR]
    return _check(eid, allow_wildcard=True)


def from_certificate_uri(uri: str | bytes, *, strict: bool = True) -> EndpointID:
    """The Endpoint ID inside a ``urn:bbf:usp:id:...`` subjectAltName URI.

    The result may carry a wildcard (see :attr:`EndpointID.has_wildcard`).
    With ``strict`` any error from :func:`validate_certificate_uri` raises
    :class:`EndpointIDError`; otherwise only the prefix and the three-part
    structure are required.
    """
    decoded = _as_text(uri)
    if decoded is None:
        raise EndpointIDError("certificate URI is not UTF-8 text", (_NOT_TEXT,))
    body = _strip_urn(decoded)
    if body is None:
        raise EndpointIDError(
            f"not a {CERTIFICATE_URN_PREFIX!r} URI: {decoded[:80]!r}",
            tuple(validate_certificate_uri(decoded)))
    eid = _split(body)
    if eid is None:
        raise EndpointIDError(f"not an Endpoint ID URN: {decoded[:80]!r}", (_GRAMMAR,))
    if strict:
        errors = tuple(v for v in _check(eid, allow_wildcard=True) if v.severity == "error")
        if errors:
            raise EndpointIDError(
                f"invalid certificate Endpoint ID {decoded[:80]!r}: {errors[0].message}",
                errors)
    return eid


def _wildcard_match(pattern: str, value: str) -> bool:
    """``*`` stands for any run (possibly empty) of characters."""
    regex = ".*".join(re.escape(piece) for piece in pattern.split(_WILDCARD))
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _coerce(endpoint_id: EndpointID | str) -> EndpointID | None:
    if isinstance(endpoint_id, EndpointID):
        return endpoint_id
    try:
        return parse_endpoint_id(endpoint_id, strict=False)
    except EndpointIDError:
        return None


def matches_certificate_uri(endpoint_id: EndpointID | str, uri: str) -> bool:
    """Whether a subjectAltName URI vouches for ``endpoint_id`` (R-SEC.0a, R-SEC.10a).

    Exact match of all three components, or a wildcard match of the
    instance-id when R-SEC.11/R-SEC.12 allow it (same scheme and authority-id,
    a wildcard-capable scheme, and for os/ops an unwildcarded OUI part). An
    endpoint id that itself contains ``*`` only matches exactly. Never raises.
    """
    eid = _coerce(endpoint_id)
    if eid is None:
        return False
    try:
        cert = from_certificate_uri(uri, strict=False)
    except EndpointIDError:
        return False
    if cert == eid:
        return True
    if not cert.has_wildcard or eid.has_wildcard:
        return False
    if (cert.scheme, cert.authority_id) != (eid.scheme, eid.authority_id):
        return False
    if any(v.requirement == "R-SEC.12" for v in _check(cert, allow_wildcard=True)):
        return False
    return _wildcard_match(cert.instance_id, eid.instance_id)


def matches_certificate_dns_name(endpoint_id: EndpointID | str, dns_name: str) -> bool:
    """Whether a ``dNSName`` subjectAltName vouches for an ``fqdn`` Endpoint ID
    (R-SEC.0a). DNS names compare case-insensitively, ignoring one trailing
    dot; wildcards never match (R-ARC.2a fqdn row, R-SEC.12). Never raises."""
    eid = _coerce(endpoint_id)
    if eid is None or not isinstance(dns_name, str) or eid.scheme != "fqdn":
        return False
    if eid.authority_id or _WILDCARD in dns_name or _WILDCARD in eid.instance_id:
        return False
    ours = eid.instance_id.removesuffix(".").lower()
    theirs = dns_name.removesuffix(".").lower()
    return bool(ours) and ours == theirs
