"""Test PKI: the certificates the suite uses when it plays the TLS peer of an EUT.

The suite needs a private CA, a Controller and an Agent credential carrying
their Endpoint IDs in the certificate ``subjectAltName`` (R-SEC.0a, R-SEC.10),
and a set of deliberately broken credentials for the TP-469 cases that check
how an Agent treats bad certificates:

========================  ==================================================
variant                   used for
========================  ==================================================
``expired``               TP-469 2.6 (no absolute time, R-SEC.19) and
                          2.8 (invalid TLS certificate, R-SEC.20)
``not_yet_valid``         R-SEC.20 (time based validity, other direction)
``untrusted_ca``          TP-469 2.3 (credentials from an untrusted CA, R-SEC.2)
``no_san``                R-SEC.0a / R-SEC.3 (no Endpoint ID in the cert)
``wrong_san``             TP-469 2.4 (SAN does not match the ``from_id``)
``self_signed``           TP-469 2.5 (self-signed Controller, R-SEC.5..R-SEC.8)
========================  ==================================================

:func:`presentable` makes what the suite's MTP server (or its client, when the
EUT is the TLS server) presents to an EUT on purpose: the :data:`PRESENTABLE`
names used by the cases' ``tls_certificate`` scenario (TP-469 2.6, 2.8, 4.1).
Its ``wrong-san`` names neither the Endpoint ID nor the host the EUT dials.

Everything is generated in memory with ``cryptography``; time is an explicit
``now`` argument (when omitted it defaults to the current UTC time, the only
place this module reads a clock).  :func:`ssl_context` turns credentials into
``ssl.SSLContext`` objects for asyncio streams, and :func:`endpoint_ids_from_cert`
/ :func:`cert_summary` read a peer certificate back for checks and reports.

Malformed certificate input (random bytes, broken PEM, undecodable
extensions) raises :class:`PKIError` and nothing else.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import ipaddress
import json
import os
import ssl
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "BACKDATE",
    "CA",
    "CertificateInvalid",
    "Credential",
    "DEFAULT_AGENT_ID",
    "DEFAULT_CONTROLLER_ID",
    "KeyType",
    "NEGATIVE_VARIANTS",
    "NO_CHECK_TIME",
    "PKIError",
    "PRESENTABLE",
    "PemFiles",
    "TestPKI",
    "USP_ID_URN_PREFIX",
    "WRONG_DNS_NAME",
    "WRONG_IP",
    "cert_summary",
    "endpoint_id_uri",
    "endpoint_ids_from_cert",
    "fingerprint",
    "issue",
    "load_cert",
    "load_certs",
    "load_credential",
    "make_ca",
    "negative_variants",
    "peer_certificate",
    "presentable",
    "self_signed",
    "ssl_context",
    "validity_status",
    "verify_chain",
    "write_pem",
    "wrong_endpoint_id",
]

#: URN prefix of an Endpoint ID placed in a ``uniformResourceIdentifier`` SAN (R-SEC.0a).
USP_ID_URN_PREFIX: Final = "urn:bbf:usp:id:"
#: Default identities used by :class:`TestPKI`.
DEFAULT_CONTROLLER_ID: Final = "proto::controller-1"
DEFAULT_AGENT_ID: Final = "os::012345-ABC"
#: Valid credentials start this long before ``now`` to absorb clock skew with the EUT.
BACKDATE: Final = _dt.timedelta(days=1)
#: Names of the broken credentials made by :func:`negative_variants`.
NEGATIVE_VARIANTS: Final = (
    "expired",
    "not_yet_valid",
    "untrusted_ca",
    "no_san",
    "wrong_san",
    "self_signed",
)

#: What the suite can present to an EUT on a TLS MTP connection (:func:`presentable`).
PRESENTABLE: Final = (
    "good",
    "expired",
    "not-yet-valid",
    "untrusted-ca",
    "wrong-san",
    "self-signed",
    "no-san",
)
#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME: verify a chain but not its validity dates
#: (an endpoint without absolute time, R-MTP.2, R-SEC.19, R-WS.23).
NO_CHECK_TIME: Final = 0x200000
#: Names and address of a ``wrong-san`` certificate: a reserved name (RFC 2606) and
#: TEST-NET-1 (RFC 5737), which no EUT dials.
WRONG_DNS_NAME: Final = "wrong-name.invalid"
WRONG_IP: Final = "192.0.2.1"

KeyType: TypeAlias = Literal["ec", "rsa"]
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_ORG: Final = "usp-conformance test PKI"
_CN_MAX: Final = 64  # upper bound of X.520 commonName


class PKIError(ValueError):
    """Raised for unusable certificate or key material (the only error raised on bad input)."""


class CertificateInvalid(PKIError):
    """A certificate chain did not verify against the given trust anchors."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Credential:
    """An end-entity certificate, its private key and the issuing chain.

    ``chain`` lists the issuer certificates from the direct issuer up to and
    including the root; it is empty for a self-signed certificate.
    """

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def endpoint_ids(self) -> list[str]:
        """Endpoint IDs carried as ``urn:bbf:usp:id:`` URI SANs."""
        return endpoint_ids_from_cert(self.cert)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM of the private key."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def fullchain_pem(self) -> bytes:
        """Leaf followed by its issuers: what a TLS peer sends."""
        return self.cert_pem() + self.chain_pem()


@dataclass(frozen=True)
class CA(Credential):
    """A certificate authority: a :class:`Credential` whose certificate may sign others.

    ``chain`` is empty for a root and holds the parents of an intermediate.
    """

    name: str = ""

    def trust_pem(self) -> bytes:
        """PEM of the root of this CA's hierarchy (what a peer must trust)."""
        root = self.chain[-1] if self.chain else self.cert
        return root.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class PemFiles:
    """Paths written by :func:`write_pem`. ``chain`` may be an empty file (self-signed)."""

    cert: Path
    key: Path
    chain: Path
    fullchain: Path

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in vars(self).items()}


# --------------------------------------------------------------------------- helpers


def _utc(now: _dt.datetime | None) -> _dt.datetime:
    """Normalise ``now`` to an aware UTC datetime; naive values are taken as UTC."""
    if now is None:
        now = _dt.datetime.now(_dt.timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=_dt.timezone.utc)
    return now.astimezone(_dt.timezone.utc).replace(microsecond=0)


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise PKIError(f"unsupported key_type {key_type!r} (expected 'ec' or 'rsa')")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:_CN_MAX] or "-"),
        ]
    )


def endpoint_id_uri(endpoint_id: str) -> str:
    """The URN form of ``endpoint_id`` placed in a URI SAN (R-SEC.0a)."""
    return USP_ID_URN_PREFIX + endpoint_id


def wrong_endpoint_id(endpoint_id: str) -> str:
    """A different but well-formed Endpoint ID with the same authority (TP-469 2.4)."""
    authority, sep, instance = endpoint_id.rpartition("::")
    if not sep:
        return "proto::wrong-" + endpoint_id
    return f"{authority}::wrong-{instance}"


def _signing_hash(key: PrivateKey) -> hashes.SHA256:
    """Signature digest for every certificate (SHA-256 for both EC and RSA keys)."""
    return hashes.SHA256()


def _ski(key: PrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


# --------------------------------------------------------------------------- issuing


def make_ca(
    name: str,
    *,
    now: _dt.datetime | None = None,
    valid_days: int = 3650,
    key_type: KeyType = "ec",
    parent: CA | None = None,
    path_length: int | None = None,
) -> CA:
    """Create a root CA (or an intermediate one signed by ``parent``).

    Validity runs from ``now - BACKDATE`` for ``valid_days`` days.
    ``now`` defaults to the current UTC time.
    """
    now = _utc(now)
    key = _new_key(key_type)
    subject = _name(name)
    issuer_name = parent.cert.subject if parent else subject
    signer = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + _dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(key), critical=False)
    )
    if parent is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
            critical=False,
        )
    cert = builder.sign(signer, _signing_hash(signer))
    chain = (parent.cert, *parent.chain) if parent else ()
    return CA(cert=cert, key=key, chain=chain, name=name)


def _ee_builder(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    key: PrivateKey,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    server: bool,
    client: bool,
    uris: Sequence[str],
    dns_names: Sequence[str],
    ips: Sequence[str],
    omit_san: bool,
) -> x509.CertificateBuilder:
    if not_after <= not_before:
        raise PKIError("not_after must be later than not_before")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(key), critical=False)
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    general: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    general += [x509.DNSName(d) for d in dns_names]
    try:
        general += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    except ValueError as exc:
        raise PKIError(f"bad IP address in ips: {exc}") from exc
    if general and not omit_san:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    return builder


def _window(
    now: _dt.datetime,
    valid_days: int,
    not_before: _dt.datetime | None,
    not_after: _dt.datetime | None,
) -> tuple[_dt.datetime, _dt.datetime]:
    start = _utc(not_before) if not_before is not None else now - BACKDATE
    end = _utc(not_after) if not_after is not None else now + _dt.timedelta(days=valid_days)
    return start, end


def _sans(endpoint_id: str | None, san_uris: Sequence[str] | None) -> list[str]:
    if san_uris is not None:
        return list(san_uris)
    return [endpoint_id_uri(endpoint_id)] if endpoint_id else []


def issue(
    ca: CA,
    *,
    endpoint_id: str | None = None,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    server: bool = True,
    client: bool = True,
    now: _dt.datetime | None = None,
    valid_days: int = 365,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    san_uris: Sequence[str] | None = None,
    omit_san: bool = False,
    common_name: str | None = None,
    key_type: KeyType = "ec",
) -> Credential:
    """Issue an end-entity credential signed by ``ca``.

    The SAN carries ``urn:bbf:usp:id:<endpoint_id>`` (R-SEC.0a) plus the given
    ``dns_names`` / ``ips``.  ``san_uris`` replaces the derived URI list (pass
    ``()`` for none); ``omit_san`` drops the extension entirely.  ``server`` /
    ``client`` choose the extendedKeyUsage purposes.  The window defaults to
    ``[now - BACKDATE, now + valid_days]``; explicit ``not_before`` /
    ``not_after`` win.  ``now`` defaults to the current UTC time.
    """
    now = _utc(now)
    start, end = _window(now, valid_days, not_before, not_after)
    key = _new_key(key_type)
    cn = common_name or endpoint_id or (dns_names[0] if dns_names else "usp-conformance")
    cert = (
        _ee_builder(
            subject=_name(cn),
            issuer=ca.cert.subject,
            key=key,
            not_before=start,
            not_after=end,
            server=server,
            client=client,
            uris=_sans(endpoint_id, san_uris),
            dns_names=dns_names,
            ips=ips,
            omit_san=omit_san,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, _signing_hash(ca.key))
    )
    return Credential(cert=cert, key=key, chain=(ca.cert, *ca.chain))


def self_signed(
    *,
    endpoint_id: str | None = None,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    server: bool = True,
    client: bool = True,
    now: _dt.datetime | None = None,
    valid_days: int = 365,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
    san_uris: Sequence[str] | None = None,
    common_name: str | None = None,
    key_type: KeyType = "ec",
) -> Credential:
    """A self-signed end-entity credential that still carries the Endpoint ID SAN (R-SEC.5).

    A peer can only accept it by pinning the certificate itself (TOFU, R-SEC.6/R-SEC.8):
    pass the credential in ``trust`` of :func:`ssl_context`.
    """
    now = _utc(now)
    start, end = _window(now, valid_days, not_before, not_after)
    key = _new_key(key_type)
    cn = common_name or endpoint_id or (dns_names[0] if dns_names else "usp-conformance")
    name = _name(cn)
    builder = _ee_builder(
        subject=name,
        issuer=name,
        key=key,
        not_before=start,
        not_after=end,
        server=server,
        client=client,
        uris=_sans(endpoint_id, san_uris),
        dns_names=dns_names,
        ips=ips,
        omit_san=False,
    )
    cert = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
    ).sign(key, _signing_hash(key))
    return Credential(cert=cert, key=key, chain=())


def negative_variants(
    ca: CA,
    *,
    endpoint_id: str,
    now: _dt.datetime | None = None,
    untrusted_ca: CA | None = None,
    wrong_id: str | None = None,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    key_type: KeyType = "ec",
) -> dict[str, Credential]:
    """Broken credentials for ``endpoint_id``, keyed by :data:`NEGATIVE_VARIANTS`.

    * ``expired``: valid for 30 days, ended one day before ``now``.
    * ``not_yet_valid``: starts one day after ``now``.
    * ``untrusted_ca``: well formed but signed by ``untrusted_ca`` (a fresh CA by default).
    * ``no_san``: no subjectAltName extension at all.
    * ``wrong_san``: SAN names ``wrong_id`` (default :func:`wrong_endpoint_id`).
    * ``self_signed``: signed by its own key, SAN present.
    """
    now = _utc(now)
    day = _dt.timedelta(days=1)
    other = untrusted_ca or make_ca("usp-conformance untrusted CA", now=now, key_type=key_type)
    common: dict[str, Any] = {"dns_names": dns_names, "ips": ips, "key_type": key_type, "now": now}
    return {
        "expired": issue(
            ca,
            endpoint_id=endpoint_id,
            not_before=now - 31 * day,
            not_after=now - day,
            **common,
        ),
        "not_yet_valid": issue(
            ca,
            endpoint_id=endpoint_id,
            not_before=now + day,
            not_after=now + 366 * day,
            **common,
        ),
        "untrusted_ca": issue(other, endpoint_id=endpoint_id, **common),
        "no_san": issue(ca, endpoint_id=endpoint_id, omit_san=True, **common),
        "wrong_san": issue(ca, endpoint_id=wrong_id or wrong_endpoint_id(endpoint_id), **common),
        "self_signed": self_signed(endpoint_id=endpoint_id, **common),
    }


def presentable(
    name: str,
    *,
    ca: CA,
    good: Credential,
    endpoint_id: str,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    now: _dt.datetime | None = None,
    untrusted_ca: CA | None = None,
    key_type: KeyType = "ec",
) -> Credential:
    """The credential called ``name`` (one of :data:`PRESENTABLE`) for the suite's side.

    ``good`` is returned as it is; the others name ``endpoint_id`` and the given
    ``dns_names`` / ``ips`` like it, but are broken in one way each:

    * ``expired`` / ``not-yet-valid``: the window ended a day before ``now`` /
      starts a day after it (R-MTP.3, R-SEC.20);
    * ``untrusted-ca``: signed by ``untrusted_ca`` (a fresh CA by default, R-SEC.2);
    * ``wrong-san``: names another Endpoint ID, :data:`WRONG_DNS_NAME` and
      :data:`WRONG_IP` instead (server identity and R-SEC.0a);
    * ``self-signed``: its own issuer (R-SEC.5);
    * ``no-san``: no subjectAltName at all (R-SEC.0a).
    """
    if name not in PRESENTABLE:
        raise PKIError(f"unknown certificate {name!r}; choose one of {', '.join(PRESENTABLE)}")
    if name == "good":
        return good
    now = _utc(now)
    day = _dt.timedelta(days=1)
    common: dict[str, Any] = {"endpoint_id": endpoint_id, "dns_names": dns_names, "ips": ips,
                              "key_type": key_type, "now": now}
    if name == "expired":
        return issue(ca, not_before=now - 31 * day, not_after=now - day, **common)
    if name == "not-yet-valid":
        return issue(ca, not_before=now + day, not_after=now + 366 * day, **common)
    if name == "untrusted-ca":
        other = untrusted_ca or make_ca("usp-conformance untrusted CA", now=now, key_type=key_type)
        return issue(other, **common)
    if name == "wrong-san":
        return issue(ca, endpoint_id=wrong_endpoint_id(endpoint_id), dns_names=[WRONG_DNS_NAME],
                     ips=[WRONG_IP], now=now, key_type=key_type)
    if name == "self-signed":
        return self_signed(**common)
    return issue(ca, omit_san=True, **common)


# --------------------------------------------------------------------------- files


def write_pem(directory: str | os.PathLike[str], name: str, credential: Credential) -> PemFiles:
    """Write ``<name>.crt``, ``<name>.key`` (mode 0600), ``<name>.chain.pem`` and
    ``<name>.fullchain.pem`` into ``directory`` (created if missing)."""
    if not name or "/" in name or name in {".", ".."}:
        raise PKIError(f"bad file base name {name!r}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = PemFiles(
        cert=out / f"{name}.crt",
        key=out / f"{name}.key",
        chain=out / f"{name}.chain.pem",
        fullchain=out / f"{name}.fullchain.pem",
    )
    files.cert.write_bytes(credential.cert_pem())
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(credential.key_pem())
    os.chmod(files.key, 0o600)
    files.chain.write_bytes(credential.chain_pem())
    files.fullchain.write_bytes(credential.fullchain_pem())
    return files


def load_certs(data: bytes) -> list[x509.Certificate]:
    """Parse one DER certificate or any number of PEM certificates; :class:`PKIError` otherwise."""
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except (ValueError, TypeError) as exc:
        raise PKIError(f"not a certificate: {exc}") from exc
    if not certs:
        raise PKIError("no certificate found")
    return certs


def load_cert(data: bytes | x509.Certificate) -> x509.Certificate:
    """The first certificate in PEM or DER ``data`` (a certificate is returned as is)."""
    if isinstance(data, x509.Certificate):
        return data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PKIError(f"expected bytes or a Certificate, got {type(data).__name__}")
    return load_certs(bytes(data))[0]


def load_credential(
    cert_file: str | os.PathLike[str],
    key_file: str | os.PathLike[str],
    chain_file: str | os.PathLike[str] | None = None,
) -> Credential:
    """Load a credential from PEM files (e.g. ones given in an EUT profile).

    Extra certificates after the leaf in ``cert_file`` are taken as the chain
    when ``chain_file`` is not given.
    """
    certs = load_certs(Path(cert_file).read_bytes())
    try:
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PKIError(f"cannot load private key {key_file}: {exc}") from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise PKIError(f"unsupported key type {type(key).__name__}")
    chain = certs[1:]
    if chain_file is not None:
        data = Path(chain_file).read_bytes()
        chain = load_certs(data) if data.strip() else []
    return Credential(cert=certs[0], key=key, chain=tuple(chain))


# --------------------------------------------------------------------------- TLS


TrustItem: TypeAlias = CA | Credential | x509.Certificate


def _trust_pem(trust: Iterable[TrustItem]) -> str:
    pems: list[bytes] = []
    for item in trust:
        if isinstance(item, CA):
            pems.append(item.trust_pem())
        elif isinstance(item, Credential):  # a pinned (typically self-signed) peer cert
            pems.append(item.cert_pem())
        elif isinstance(item, x509.Certificate):
            pems.append(item.public_bytes(serialization.Encoding.PEM))
        else:
            raise PKIError(f"cannot trust a {type(item).__name__}")
    return b"".join(pems).decode("ascii")


def ssl_context(
    role: Literal["server", "client"],
    credential: Credential | None = None,
    trust: Iterable[TrustItem] = (),
    *,
    require_client_cert: bool = True,
    verify: bool = True,
    check_hostname: bool = False,
    alpn: Sequence[str] = (),
    check_time: bool = True,
) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` (TLS 1.2 or later) for asyncio streams.

    * ``role="server"``: presents ``credential`` (required); with
      ``require_client_cert`` the peer must present a certificate that chains
      to ``trust`` (mutual TLS), otherwise one is requested only when ``trust``
      is given (and then verified).
    * ``role="client"``: presents ``credential`` when given; verifies the
      server against ``trust`` unless ``verify=False`` (then any certificate is
      accepted and can still be read with :func:`peer_certificate`).

    ``trust`` holds CAs (their root is trusted) or certificates trusted as
    they are (an intermediate CA, a pinned or self-signed peer certificate;
    partial chains are allowed).  Hostname checking is OFF by default because
    the suite talks to loopback / lab addresses whose names rarely match the
    certificate; identity is checked at the USP layer through the Endpoint ID
    SAN (R-SEC.0a).  Pass ``check_hostname=True`` to enable it (client only).
    Certificate validity dates are checked against the system clock by OpenSSL
    unless ``check_time`` is False (:data:`NO_CHECK_TIME`: an endpoint without
    absolute time, R-MTP.2).
    """
    if role not in ("server", "client"):
        raise PKIError(f"role must be 'server' or 'client', not {role!r}")
    trust = list(trust)
    if role == "server":
        if credential is None:
            raise PKIError("a server context needs a credential")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if require_client_cert:
            if not trust:
                raise PKIError("require_client_cert needs at least one trust anchor")
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.verify_mode = ssl.CERT_OPTIONAL if trust else ssl.CERT_NONE
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = bool(check_hostname and verify)
        if verify:
            if not trust:
                raise PKIError("a verifying client context needs at least one trust anchor")
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Any certificate in `trust` is an anchor, even an intermediate or a pinned leaf.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if not check_time:
        ctx.verify_flags |= NO_CHECK_TIME
    if trust:
        ctx.load_verify_locations(cadata=_trust_pem(trust))
    if credential is not None:
        _load_credential_into(ctx, credential)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def _load_credential_into(ctx: ssl.SSLContext, credential: Credential) -> None:
    # The ssl module only loads keys from files: use a private temp dir, removed at once.
    with tempfile.TemporaryDirectory(prefix="usp-pki-") as tmp:
        files = write_pem(tmp, "cred", credential)
        try:
            ctx.load_cert_chain(files.fullchain, files.key)
        except ssl.SSLError as exc:
            raise PKIError(f"cannot load credential into SSL context: {exc}") from exc


def peer_certificate(conn: Any) -> x509.Certificate | None:
    """The certificate presented by the peer of ``conn``, or ``None``.

    ``conn`` is an ``ssl.SSLObject`` / ``ssl.SSLSocket``, or anything with
    ``get_extra_info`` (``asyncio.StreamWriter``, transports).
    """
    obj = conn
    if isinstance(conn, (asyncio.StreamWriter, asyncio.BaseTransport)):
        obj = conn.get_extra_info("ssl_object")
    if obj is None:
        return None
    der = obj.getpeercert(binary_form=True)
    return load_cert(der) if der else None


# --------------------------------------------------------------------------- inspection


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # undecodable / duplicate extensions
        raise PKIError(f"bad certificate extensions: {exc}") from exc


def endpoint_ids_from_cert(
    cert: x509.Certificate | bytes, *, include_fqdn_dns: bool = False
) -> list[str]:
    """Endpoint IDs named in the certificate's subjectAltName (R-SEC.0a, R-SEC.10a).

    Each ``uniformResourceIdentifier`` starting with ``urn:bbf:usp:id:``
    (prefix compared case-insensitively) yields the rest of the URI.  With
    ``include_fqdn_dns`` every ``dNSName`` also yields ``fqdn::<name>``, the
    alternative R-SEC.0a allows for the ``fqdn`` authority scheme.
    Accepts a certificate, or PEM/DER bytes (:class:`PKIError` if unparsable).
    """
    san = _san(load_cert(cert))
    if san is None:
        return []
    n = len(USP_ID_URN_PREFIX)
    ids = [
        uri[n:]
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri[:n].lower() == USP_ID_URN_PREFIX and len(uri) > n
    ]
    if include_fqdn_dns:
        ids += ["fqdn::" + d for d in san.get_values_for_type(x509.DNSName)]
    return ids


def fingerprint(cert: x509.Certificate | bytes, algorithm: str = "sha256") -> str:
    """Colon separated upper-case hex fingerprint of the DER encoding (cf. R-SEC.2)."""
    algos: dict[str, hashes.HashAlgorithm] = {
        "sha256": hashes.SHA256(),
        "sha1": hashes.SHA1(),
        "sha384": hashes.SHA384(),
        "sha512": hashes.SHA512(),
    }
    if algorithm not in algos:
        raise PKIError(f"unsupported fingerprint algorithm {algorithm!r}")
    return load_cert(cert).fingerprint(algos[algorithm]).hex(":").upper()


def validity_status(
    cert: x509.Certificate, now: _dt.datetime | None = None
) -> Literal["valid", "expired", "not_yet_valid"]:
    """Where ``now`` (default: current UTC time) falls in the validity window."""
    now = _utc(now)
    if now < cert.not_valid_before_utc:
        return "not_yet_valid"
    if now > cert.not_valid_after_utc:
        return "expired"
    return "valid"


def _key_desc(cert: x509.Certificate) -> str:
    try:
        pub = cert.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return "unknown"
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return f"ec-{pub.curve.name}"
    if isinstance(pub, rsa.RSAPublicKey):
        return f"rsa-{pub.key_size}"
    return type(pub).__name__


def cert_summary(cert: x509.Certificate | bytes, *, now: _dt.datetime | None = None) -> dict[str, Any]:
    """A JSON-able description of ``cert`` for reports.

    Keys: subject, issuer, serial, not_before, not_after, self_issued, is_ca,
    san (uri/dns/ip lists), endpoint_ids, key, signature_hash,
    fingerprint_sha256, and ``status`` (see :func:`validity_status`) when
    ``now`` is given.
    """
    c = load_cert(cert)
    try:
        san = _san(c)
        try:
            bc = c.extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca = bc.ca
        except x509.ExtensionNotFound:
            is_ca = False
        try:
            sig_hash: hashes.HashAlgorithm | None = c.signature_hash_algorithm
        except UnsupportedAlgorithm:
            sig_hash = None
        summary: dict[str, Any] = {
            "subject": c.subject.rfc4514_string(),
            "issuer": c.issuer.rfc4514_string(),
            "serial": format(c.serial_number, "x"),
            "not_before": c.not_valid_before_utc.isoformat(),
            "not_after": c.not_valid_after_utc.isoformat(),
            "self_issued": c.subject == c.issuer,
            "is_ca": is_ca,
            "san": {
                "uri": san.get_values_for_type(x509.UniformResourceIdentifier) if san else [],
                "dns": san.get_values_for_type(x509.DNSName) if san else [],
                "ip": [str(i) for i in san.get_values_for_type(x509.IPAddress)] if san else [],
            },
            "endpoint_ids": endpoint_ids_from_cert(c),
            "key": _key_desc(c),
            "signature_hash": sig_hash.name if sig_hash else None,
            "fingerprint_sha256": fingerprint(c),
        }
    except PKIError:
        raise
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PKIError(f"cannot summarise certificate: {exc}") from exc
    if now is not None:
        summary["status"] = validity_status(c, now)
    return summary


def verify_chain(
    cert: Credential | x509.Certificate,
    trust: Iterable[TrustItem],
    *,
    now: _dt.datetime | None = None,
    intermediates: Sequence[x509.Certificate] | None = None,
    server_name: str | None = None,
) -> list[x509.Certificate]:
    """Verify ``cert`` against ``trust`` with cryptography's RFC 5280 / WebPKI verifier.

    Without ``server_name`` the client-certificate policy is used; with it
    the server policy, matching a DNS name or an IP address literal.
    ``intermediates`` default to the credential's chain.  Returns the built
    chain (leaf first); raises :class:`CertificateInvalid` (e.g. expired,
    unknown issuer) -- the checks an Agent does under R-SEC.2 / R-SEC.20.
    Note the client policy insists on a subjectAltName extension.
    """
    leaf = cert.cert if isinstance(cert, Credential) else cert
    if intermediates is None:
        intermediates = cert.chain if isinstance(cert, Credential) else ()
    anchors = load_certs(_trust_pem(trust).encode("ascii")) if trust else []
    if not anchors:
        raise PKIError("verify_chain needs at least one trust anchor")
    builder = verification.PolicyBuilder().store(verification.Store(anchors)).time(_utc(now))
    try:
        if server_name is None:
            verified = builder.build_client_verifier().verify(leaf, list(intermediates))
            return list(verified.chain)
        try:
            subject: verification.Subject = x509.IPAddress(ipaddress.ip_address(server_name))
        except ValueError:
            subject = x509.DNSName(server_name)
        return list(builder.build_server_verifier(subject).verify(leaf, list(intermediates)))
    except verification.VerificationError as exc:
        raise CertificateInvalid(str(exc)) from exc


# --------------------------------------------------------------------------- bundle


@dataclass(frozen=True)
class TestPKI:
    """A complete throw-away PKI written to a directory.

    :meth:`create` makes a CA, a Controller credential (the suite's identity,
    also usable as the broker / server certificate: it names ``localhost``,
    ``127.0.0.1`` and ``::1``), an Agent credential for the EUT, and the
    Controller's :data:`NEGATIVE_VARIANTS`.  Files are ``ca.*``,
    ``untrusted-ca.*``, ``controller.*``, ``agent.*`` and ``controller-<variant>.*``
    (underscores in variant names become dashes), plus ``pki.json``, a
    manifest with paths and :func:`cert_summary` for each credential.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    directory: Path
    ca: CA
    untrusted_ca: CA
    controller: Credential
    agent: Credential
    negatives: Mapping[str, Credential]
    files: Mapping[str, PemFiles] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        *,
        controller_id: str = DEFAULT_CONTROLLER_ID,
        agent_id: str = DEFAULT_AGENT_ID,
        now: _dt.datetime | None = None,
        key_type: KeyType = "ec",
        dns_names: Sequence[str] = ("localhost",),
        ips: Sequence[str] = ("127.0.0.1", "::1"),
    ) -> TestPKI:
        """Generate everything into ``directory``; ``now`` defaults to the current UTC time."""
        now = _utc(now)
        out = Path(directory)
        ca = make_ca("usp-conformance test CA", now=now, key_type=key_type)
        untrusted = make_ca("usp-conformance untrusted CA", now=now, key_type=key_type)
        common: dict[str, Any] = {"dns_names": dns_names, "ips": ips, "now": now, "key_type": key_type}
        controller = issue(ca, endpoint_id=controller_id, **common)
        agent = issue(ca, endpoint_id=agent_id, **common)
        negatives = negative_variants(ca, endpoint_id=controller_id, untrusted_ca=untrusted, **common)
        creds: dict[str, Credential] = {
            "ca": ca,
            "untrusted-ca": untrusted,
            "controller": controller,
            "agent": agent,
        }
        creds.update({"controller-" + k.replace("_", "-"): v for k, v in negatives.items()})
        files = {name: write_pem(out, name, cred) for name, cred in creds.items()}
        pki = cls(out, ca, untrusted, controller, agent, negatives, files)
        manifest = {
            "created": now.isoformat(),
            "controller_id": controller_id,
            "agent_id": agent_id,
            "credentials": {
                name: {"files": files[name].as_dict(), "summary": cert_summary(c.cert, now=now)}
                for name, c in creds.items()
            },
        }
        (out / "pki.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return pki

    def paths(self) -> dict[str, dict[str, str]]:
        """``{credential name: {"cert"|"key"|"chain"|"fullchain": path}}`` (JSON-able)."""
        return {name: f.as_dict() for name, f in self.files.items()}

    @property
    def manifest(self) -> Path:
        return self.directory / "pki.json"
