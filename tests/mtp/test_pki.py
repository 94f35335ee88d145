"""Tests for conformance.mtp.pki: the test PKI, its negative variants and real TLS over loopback.

Requirement ids: R-SEC.0a / R-SEC.10 / R-SEC.10a (Endpoint ID in the SAN),
R-SEC.2 (trusted CA, fingerprints), R-SEC.5..R-SEC.8 (self-signed),
R-SEC.19 / R-SEC.20 (validity dates); TP-469 2.3, 2.4, 2.5, 2.6, 2.8, 4.1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import ssl
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp import pki
from conformance.mtp.pki import (
    CA,
    NEGATIVE_VARIANTS,
    USP_ID_URN_PREFIX,
    CertificateInvalid,
    Credential,
    PKIError,
    TestPKI,
)

T = TypeVar("T")
UTC = dt.timezone.utc
#: Fixed clock for tests that do not touch OpenSSL (which always uses the system clock).
NOW = dt.datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
CTRL = "proto::controller-1"
AGENT = "os::012345-ABC"
STEP = 2.0  # timeout for each await in the TLS tests


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ca() -> CA:
    return pki.make_ca("unit test CA", now=NOW)


@pytest.fixture(scope="module")
def ctrl(ca: CA) -> Credential:
    return pki.issue(ca, endpoint_id=CTRL, dns_names=["localhost"], ips=["127.0.0.1"], now=NOW)


@pytest.fixture(scope="module")
def negatives(ca: CA) -> dict[str, Credential]:
    return pki.negative_variants(ca, endpoint_id=CTRL, now=NOW)


@pytest.fixture(scope="module")
def live() -> dict[str, Any]:
    """Credentials valid against the real clock, for OpenSSL handshakes."""
    now = dt.datetime.now(UTC)
    ca = pki.make_ca("live CA", now=now)
    common: dict[str, Any] = {"dns_names": ["localhost"], "ips": ["127.0.0.1"], "now": now}
    return {
        "ca": ca,
        "server": pki.issue(ca, endpoint_id=AGENT, **common),
        "client": pki.issue(ca, endpoint_id=CTRL, **common),
        "neg": pki.negative_variants(ca, endpoint_id=CTRL, now=now),
    }


def _ext(cert: x509.Certificate, cls: type[Any]) -> Any:
    return cert.extensions.get_extension_for_class(cls).value


# ----------------------------------------------------------------------------- CA


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_make_ca_root(key_type: pki.KeyType) -> None:
    root = pki.make_ca("Root X", now=NOW, valid_days=10, key_type=key_type)
    cert = root.cert
    cert.verify_directly_issued_by(cert)  # self-signed, signature valid
    assert root.chain == () and root.name == "Root X"
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.ca is True
    assert _ext(cert, x509.KeyUsage).key_cert_sign
    assert cert.not_valid_before_utc == NOW - pki.BACKDATE
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=10)
    key = root.key
    if key_type == "ec":
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    else:
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert root.trust_pem() == root.cert_pem()


def test_make_ca_intermediate_chain(ca: CA) -> None:
    inter = pki.make_ca("Intermediate", now=NOW, parent=ca, path_length=0)
    inter.cert.verify_directly_issued_by(ca.cert)
    assert inter.chain == (ca.cert,)
    assert inter.trust_pem() == ca.cert_pem()  # R-SEC.2: a root or intermediate can be the anchor
    leaf = pki.issue(inter, endpoint_id=AGENT, now=NOW)
    assert leaf.chain == (inter.cert, ca.cert)
    built = pki.verify_chain(leaf, [ca], now=NOW)
    assert [c.subject for c in built] == [leaf.cert.subject, inter.cert.subject, ca.cert.subject]


def test_bad_key_type() -> None:
    with pytest.raises(PKIError):
        pki.make_ca("x", now=NOW, key_type="dsa")  # type: ignore[arg-type]


def test_naive_now_is_utc() -> None:
    naive = pki.make_ca("n", now=NOW.replace(tzinfo=None), valid_days=1)
    assert naive.cert.not_valid_after_utc == NOW + dt.timedelta(days=1)


def test_now_defaults_to_clock() -> None:
    before = dt.datetime.now(UTC).replace(microsecond=0)
    root = pki.make_ca("default clock", valid_days=1)
    assert root.cert.not_valid_before_utc >= before - pki.BACKDATE
    assert pki.validity_status(root.cert) == "valid"


# ----------------------------------------------------------------------------- issue


@pytest.mark.parametrize("eid", [CTRL, AGENT, "oui::00D09E-123456789", "fqdn::agent.example.com"])
def test_issue_san_uri_r_sec_0a(ca: CA, eid: str) -> None:
    """R-SEC.0a / R-SEC.10: the Endpoint ID is in a URI SAN in URN form."""
    cred = pki.issue(ca, endpoint_id=eid, now=NOW)
    san = _ext(cred.cert, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [USP_ID_URN_PREFIX + eid]
    assert cred.endpoint_ids == [eid] == pki.endpoint_ids_from_cert(cred.cert)
    cred.cert.verify_directly_issued_by(ca.cert)
    assert cred.chain == (ca.cert,)


def test_issue_dns_ip_and_usages(ca: CA) -> None:
    cred = pki.issue(
        ca, endpoint_id=CTRL, dns_names=["localhost", "b.example"], ips=["127.0.0.1", "::1"], now=NOW
    )
    san = _ext(cred.cert, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "b.example"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = _ext(cred.cert, x509.ExtendedKeyUsage)
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _ext(cred.cert, x509.BasicConstraints).ca is False
    assert cred.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == CTRL

    only_client = pki.issue(ca, endpoint_id=CTRL, server=False, now=NOW)
    assert list(_ext(only_client.cert, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    neither = pki.issue(ca, endpoint_id=CTRL, server=False, client=False, now=NOW)
    with pytest.raises(x509.ExtensionNotFound):
        neither.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_issue_validity_window(ca: CA) -> None:
    default = pki.issue(ca, endpoint_id=CTRL, now=NOW, valid_days=7)
    assert default.cert.not_valid_before_utc == NOW - pki.BACKDATE
    assert default.cert.not_valid_after_utc == NOW + dt.timedelta(days=7)
    start, end = NOW - dt.timedelta(days=2), NOW + dt.timedelta(hours=5)
    explicit = pki.issue(ca, endpoint_id=CTRL, now=NOW, not_before=start, not_after=end)
    assert (explicit.cert.not_valid_before_utc, explicit.cert.not_valid_after_utc) == (start, end)
    with pytest.raises(PKIError):
        pki.issue(ca, endpoint_id=CTRL, now=NOW, not_before=end, not_after=start)


def test_issue_san_overrides(ca: CA) -> None:
    uris = ["urn:bbf:usp:id:proto::a", "urn:bbf:usp:id:proto::b", "https://example.com/x"]
    multi = pki.issue(ca, endpoint_id=CTRL, san_uris=uris, now=NOW)
    assert pki.endpoint_ids_from_cert(multi.cert) == ["proto::a", "proto::b"]
    dns_only = pki.issue(ca, endpoint_id=CTRL, san_uris=(), dns_names=["x.example"], now=NOW)
    assert pki.endpoint_ids_from_cert(dns_only.cert) == []
    assert pki.endpoint_ids_from_cert(dns_only.cert, include_fqdn_dns=True) == ["fqdn::x.example"]
    no_san = pki.issue(ca, endpoint_id=CTRL, dns_names=["x"], omit_san=True, now=NOW)
    with pytest.raises(x509.ExtensionNotFound):
        no_san.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    nothing = pki.issue(ca, now=NOW)  # no identity at all -> no SAN extension, CN placeholder
    assert pki.endpoint_ids_from_cert(nothing.cert) == []


def test_issue_long_endpoint_id_truncates_cn_only(ca: CA) -> None:
    eid = "proto::" + "x" * 120
    cred = pki.issue(ca, endpoint_id=eid, now=NOW)
    cn = cred.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert len(cn) == 64
    assert cred.endpoint_ids == [eid]


def test_issue_bad_ip(ca: CA) -> None:
    with pytest.raises(PKIError):
        pki.issue(ca, endpoint_id=CTRL, ips=["not-an-ip"], now=NOW)


def test_wrong_endpoint_id() -> None:
    assert pki.wrong_endpoint_id(CTRL) == "proto::wrong-controller-1"
    assert pki.wrong_endpoint_id(AGENT) == "os::wrong-012345-ABC"
    assert pki.wrong_endpoint_id("plain") == "proto::wrong-plain"
    assert pki.endpoint_id_uri(AGENT) == "urn:bbf:usp:id:os::012345-ABC"


# ----------------------------------------------------------------------------- negatives


def test_negative_variant_names(negatives: dict[str, Credential]) -> None:
    assert tuple(negatives) == NEGATIVE_VARIANTS


def test_expired_and_not_yet_valid_windows(negatives: dict[str, Credential]) -> None:
    """R-SEC.20 / TP-469 2.6 and 2.8: time-invalid certificates."""
    expired = negatives["expired"].cert
    assert expired.not_valid_after_utc == NOW - dt.timedelta(days=1)
    assert expired.not_valid_before_utc < expired.not_valid_after_utc
    assert pki.validity_status(expired, NOW) == "expired"
    # R-SEC.19: a time-less agent would still accept it; at an older time it was valid.
    assert pki.validity_status(expired, NOW - dt.timedelta(days=10)) == "valid"
    future = negatives["not_yet_valid"].cert
    assert future.not_valid_before_utc == NOW + dt.timedelta(days=1)
    assert pki.validity_status(future, NOW) == "not_yet_valid"
    for name in ("expired", "not_yet_valid"):
        assert negatives[name].endpoint_ids == [CTRL]  # only the dates are wrong


def test_negatives_fail_verification(ca: CA, negatives: dict[str, Credential]) -> None:
    """R-SEC.2 / R-SEC.20: everything except wrong_san is rejected by chain validation."""
    for name in ("expired", "not_yet_valid", "untrusted_ca", "no_san", "self_signed"):
        with pytest.raises(CertificateInvalid):
            pki.verify_chain(negatives[name], [ca], now=NOW)
    # wrong_san is a valid chain: only the identity check at the USP layer catches it (TP-469 2.4)
    pki.verify_chain(negatives["wrong_san"], [ca], now=NOW)


def test_untrusted_ca_variant(ca: CA, negatives: dict[str, Credential]) -> None:
    """TP-469 2.3: well formed, right SAN, signed by another CA."""
    cred = negatives["untrusted_ca"]
    assert cred.cert.issuer != ca.cert.subject
    assert cred.endpoint_ids == [CTRL]
    other = CA(cert=cred.chain[0], key=cred.key)  # key unused for trust
    assert pki.verify_chain(cred, [other], now=NOW)[0] == cred.cert


def test_san_variants(negatives: dict[str, Credential]) -> None:
    """R-SEC.0a / TP-469 2.4: no SAN at all, or a SAN naming another Endpoint ID."""
    assert pki.endpoint_ids_from_cert(negatives["no_san"].cert) == []
    with pytest.raises(x509.ExtensionNotFound):
        negatives["no_san"].cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert negatives["wrong_san"].endpoint_ids == [pki.wrong_endpoint_id(CTRL)]
    assert CTRL not in negatives["wrong_san"].endpoint_ids


def test_self_signed_variant(negatives: dict[str, Credential]) -> None:
    """R-SEC.5: a self-signed cert still carries the Endpoint ID; usable only when pinned."""
    cred = negatives["self_signed"]
    assert cred.cert.issuer == cred.cert.subject and cred.chain == ()
    cred.cert.verify_directly_issued_by(cred.cert)
    assert cred.endpoint_ids == [CTRL]
    assert pki.verify_chain(cred, [cred], now=NOW) == [cred.cert]
    assert pki.cert_summary(cred.cert)["self_issued"] is True


def test_negative_variants_custom(ca: CA) -> None:
    other = pki.make_ca("other", now=NOW)
    out = pki.negative_variants(ca, endpoint_id=AGENT, now=NOW, untrusted_ca=other, wrong_id="os::X")
    assert out["untrusted_ca"].chain == (other.cert,)
    assert out["wrong_san"].endpoint_ids == ["os::X"]


# ----------------------------------------------------------------------------- verify_chain


def test_verify_chain_server_names(ca: CA, ctrl: Credential) -> None:
    assert pki.verify_chain(ctrl, [ca], now=NOW, server_name="localhost")[0] == ctrl.cert
    assert pki.verify_chain(ctrl.cert, [ca], now=NOW, server_name="127.0.0.1",
                            intermediates=[])[0] == ctrl.cert
    with pytest.raises(CertificateInvalid):
        pki.verify_chain(ctrl, [ca], now=NOW, server_name="other.example")
    with pytest.raises(CertificateInvalid):
        pki.verify_chain(ctrl, [ca], now=NOW + dt.timedelta(days=400))
    with pytest.raises(PKIError):
        pki.verify_chain(ctrl, [], now=NOW)


# ----------------------------------------------------------------------------- files


def test_write_pem_and_load(tmp_path: Path, ctrl: Credential, ca: CA) -> None:
    files = pki.write_pem(tmp_path / "sub", "ctrl", ctrl)
    assert files.cert.name == "ctrl.crt" and files.key.name == "ctrl.key"
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert pki.load_certs(files.cert.read_bytes()) == [ctrl.cert]
    assert pki.load_certs(files.chain.read_bytes()) == [ca.cert]
    assert pki.load_certs(files.fullchain.read_bytes()) == [ctrl.cert, ca.cert]
    back = pki.load_credential(files.cert, files.key, files.chain)
    assert back.cert == ctrl.cert and back.chain == (ca.cert,)
    assert back.key.private_numbers() == ctrl.key.private_numbers()
    implicit = pki.load_credential(files.fullchain, files.key)
    assert implicit.chain == (ca.cert,)
    assert set(files.as_dict()) == {"cert", "key", "chain", "fullchain"}


def test_write_pem_self_signed_has_empty_chain(tmp_path: Path, negatives: dict[str, Credential]) -> None:
    files = pki.write_pem(tmp_path, "ss", negatives["self_signed"])
    assert files.chain.read_bytes() == b""
    assert pki.load_credential(files.cert, files.key, files.chain).chain == ()


@pytest.mark.parametrize("name", ["", "a/b", "..", "."])
def test_write_pem_bad_name(tmp_path: Path, ctrl: Credential, name: str) -> None:
    with pytest.raises(PKIError):
        pki.write_pem(tmp_path, name, ctrl)


def test_load_credential_errors(tmp_path: Path, ctrl: Credential) -> None:
    files = pki.write_pem(tmp_path, "c", ctrl)
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"garbage")
    with pytest.raises(PKIError):
        pki.load_credential(files.cert, bad)
    with pytest.raises(PKIError):
        pki.load_credential(bad, files.key)


def test_load_cert_formats(ctrl: Credential) -> None:
    der = ctrl.cert.public_bytes(serialization.Encoding.DER)
    assert pki.load_cert(der) == ctrl.cert
    assert pki.load_cert(ctrl.cert_pem()) == ctrl.cert
    assert pki.load_cert(ctrl.cert) is ctrl.cert
    for bad in (b"", b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n", b"\x30\x03abc"):
        with pytest.raises(PKIError):
            pki.load_cert(bad)
    with pytest.raises(PKIError):
        pki.load_cert("text")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_hostile_bytes_only_pki_error(data: bytes) -> None:
    for fn in (pki.load_cert, pki.endpoint_ids_from_cert, pki.cert_summary, pki.fingerprint):
        try:
            fn(data)
        except PKIError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40), st.integers(min_value=0))
def test_mutated_der_only_pki_error(ctrl_der: bytes, pos: int) -> None:
    """Corrupting a real certificate never raises anything but PKIError."""
    at = pos % len(_DER_SAMPLE)
    der = _DER_SAMPLE[:at] + ctrl_der + _DER_SAMPLE[at + len(ctrl_der) :]
    try:
        pki.cert_summary(der)
        pki.endpoint_ids_from_cert(der, include_fqdn_dns=True)
    except PKIError:
        pass


_DER_SAMPLE = pki.issue(
    pki.make_ca("sample", now=NOW), endpoint_id=CTRL, dns_names=["d"], ips=["::1"], now=NOW
).cert.public_bytes(serialization.Encoding.DER)


# ----------------------------------------------------------------------------- inspection


def test_endpoint_ids_prefix_rules(ca: CA) -> None:
    cred = pki.issue(
        ca,
        san_uris=["URN:BBF:USP:ID:proto::Upper", "urn:bbf:usp:id:", "urn:other:x", "urn:bbf:usp:idX"],
        now=NOW,
    )
    assert pki.endpoint_ids_from_cert(cred.cert) == ["proto::Upper"]
    assert pki.endpoint_ids_from_cert(cred.cert_pem()) == ["proto::Upper"]


def test_fingerprint(ctrl: Credential) -> None:
    der = ctrl.cert.public_bytes(serialization.Encoding.DER)
    expected = hashlib.sha256(der).hexdigest().upper()
    assert pki.fingerprint(ctrl.cert).replace(":", "") == expected
    assert pki.fingerprint(der, "sha1").replace(":", "") == hashlib.sha1(der).hexdigest().upper()
    with pytest.raises(PKIError):
        pki.fingerprint(ctrl.cert, "md5")


def test_cert_summary(ctrl: Credential, ca: CA) -> None:
    s = pki.cert_summary(ctrl.cert, now=NOW)
    json.dumps(s)  # JSON-able for reports
    assert s["endpoint_ids"] == [CTRL]
    assert s["san"] == {"uri": [USP_ID_URN_PREFIX + CTRL], "dns": ["localhost"], "ip": ["127.0.0.1"]}
    assert s["issuer"] == ca.cert.subject.rfc4514_string()
    assert s["status"] == "valid" and s["is_ca"] is False and s["self_issued"] is False
    assert s["key"] == "ec-secp256r1" and s["signature_hash"] == "sha256"
    assert s["fingerprint_sha256"] == pki.fingerprint(ctrl.cert)
    assert s["not_after"] == ctrl.cert.not_valid_after_utc.isoformat()
    assert "status" not in pki.cert_summary(ctrl.cert)
    assert pki.cert_summary(ca.cert)["is_ca"] is True
    rsa_cred = pki.issue(ca, endpoint_id=AGENT, key_type="rsa", now=NOW)
    assert pki.cert_summary(rsa_cred.cert)["key"] == "rsa-2048"


def test_validity_status_boundaries(ctrl: Credential) -> None:
    c = ctrl.cert
    assert pki.validity_status(c, c.not_valid_before_utc) == "valid"
    assert pki.validity_status(c, c.not_valid_after_utc) == "valid"
    assert pki.validity_status(c, c.not_valid_before_utc - dt.timedelta(seconds=1)) == "not_yet_valid"
    assert pki.validity_status(c, c.not_valid_after_utc + dt.timedelta(seconds=1)) == "expired"


# ----------------------------------------------------------------------------- ssl_context


def test_ssl_context_settings(ca: CA, ctrl: Credential) -> None:
    srv = pki.ssl_context("server", ctrl, [ca])
    assert srv.verify_mode == ssl.CERT_REQUIRED
    assert srv.minimum_version == ssl.TLSVersion.TLSv1_2
    assert pki.ssl_context("server", ctrl, [ca], require_client_cert=False).verify_mode == ssl.CERT_OPTIONAL
    assert pki.ssl_context("server", ctrl, require_client_cert=False).verify_mode == ssl.CERT_NONE
    cli = pki.ssl_context("client", ctrl, [ca])
    assert cli.check_hostname is False and cli.verify_mode == ssl.CERT_REQUIRED
    assert cli.minimum_version == ssl.TLSVersion.TLSv1_2
    assert pki.ssl_context("client", None, [ca], check_hostname=True).check_hostname is True
    anon = pki.ssl_context("client", verify=False)
    assert anon.verify_mode == ssl.CERT_NONE and anon.check_hostname is False
    pki.ssl_context("client", None, [ca], alpn=["mqtt"])


def test_ssl_context_errors(ca: CA, ctrl: Credential) -> None:
    with pytest.raises(PKIError):
        pki.ssl_context("server", None, [ca])
    with pytest.raises(PKIError):
        pki.ssl_context("server", ctrl, [])  # mutual TLS without anchors
    with pytest.raises(PKIError):
        pki.ssl_context("client", ctrl, [])
    with pytest.raises(PKIError):
        pki.ssl_context("peer", ctrl, [ca])  # type: ignore[arg-type]
    with pytest.raises(PKIError):
        pki.ssl_context("client", ctrl, ["not a cert"])  # type: ignore[list-item]


# ----------------------------------------------------------------------------- real TLS on loopback


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout=5 * STEP)

    return asyncio.run(bounded())


class _TLSAcceptor(asyncio.Protocol):
    """Accepts TCP, then runs the server-side TLS handshake itself so its errors surface.

    Reading is paused in connection_made, so no ClientHello byte can be consumed
    before loop.start_tls takes the transport over.
    """

    def __init__(self, ctx: ssl.SSLContext, outcome: asyncio.Future[Any]) -> None:
        self.ctx = ctx
        self.outcome = outcome

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        asyncio.get_running_loop().create_task(self._upgrade(transport))

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await asyncio.wait_for(
                loop.start_tls(transport, self, self.ctx, server_side=True), STEP
            )
        except Exception as exc:
            transport.close()
            if not self.outcome.done():
                self.outcome.set_result(exc)
            return
        assert tls is not None
        peer = pki.peer_certificate(tls)
        tls.write(b"hello\n")
        tls.close()  # flushes the line, then close_notify
        if not self.outcome.done():
            self.outcome.set_result(peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.outcome.done():
            self.outcome.set_result(exc or ConnectionError("closed before handshake"))


async def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[Any, Any]:
    """Run one TLS connection over loopback and report what each side saw.

    Returns (server outcome, client outcome): the server gets the client's
    certificate (or None) or the handshake exception; the client gets
    (first line, server certificate) or its exception.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[Any] = loop.create_future()
    server = await loop.create_server(lambda: _TLSAcceptor(server_ctx, outcome), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client: Any
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"),
            STEP,
        )
        try:
            client = (await asyncio.wait_for(reader.readline(), STEP), pki.peer_certificate(writer))
        except (ssl.SSLError, ConnectionError) as exc:
            client = exc
        writer.close()
    except (ssl.SSLError, ConnectionError) as exc:
        client = exc
    result = await asyncio.wait_for(outcome, STEP)
    server.close()
    await asyncio.wait_for(server.wait_closed(), STEP)
    return result, client


def test_tls_mutual_auth_ok(live: dict[str, Any]) -> None:
    """TP-469 4.1 / R-SEC.0a: mutual TLS; each side reads the other's Endpoint ID from the cert."""
    sctx = pki.ssl_context("server", live["server"], [live["ca"]])
    cctx = pki.ssl_context("client", live["client"], [live["ca"]])
    server_seen, client_seen = _run(lambda: _handshake(sctx, cctx))
    assert isinstance(server_seen, x509.Certificate)
    assert pki.endpoint_ids_from_cert(server_seen) == [CTRL]
    line, server_cert = client_seen
    assert line == b"hello\n"
    assert pki.endpoint_ids_from_cert(server_cert) == [AGENT]


@pytest.mark.parametrize("variant", ["expired", "untrusted_ca", "not_yet_valid"])
def test_tls_bad_client_cert_rejected(live: dict[str, Any], variant: str) -> None:
    """TP-469 2.3 / 2.8, R-SEC.2 / R-SEC.20: the verifying side refuses the handshake."""
    sctx = pki.ssl_context("server", live["server"], [live["ca"]])
    cctx = pki.ssl_context("client", live["neg"][variant], [live["ca"]])
    server_seen, client_seen = _run(lambda: _handshake(sctx, cctx))
    assert isinstance(server_seen, ssl.SSLCertVerificationError)
    # The client never gets application data: an alert, a reset or EOF.
    assert not (isinstance(client_seen, tuple) and client_seen[0] == b"hello\n")


def test_tls_self_signed_pinned(live: dict[str, Any]) -> None:
    """R-SEC.6 / R-SEC.8 (TOFU): a pinned self-signed Controller cert is accepted."""
    ss = live["neg"]["self_signed"]
    sctx = pki.ssl_context("server", live["server"], [live["ca"], ss])
    cctx = pki.ssl_context("client", ss, [live["ca"]])
    server_seen, _ = _run(lambda: _handshake(sctx, cctx))
    assert isinstance(server_seen, x509.Certificate)
    assert pki.endpoint_ids_from_cert(server_seen) == [CTRL]


def test_tls_intermediate_as_anchor(live: dict[str, Any]) -> None:
    """R-SEC.2: a stored intermediate CA certificate is enough to trust its leaves."""
    now = dt.datetime.now(UTC)
    inter = pki.make_ca("live intermediate", now=now, parent=live["ca"])
    client = pki.issue(inter, endpoint_id=CTRL, now=now)
    sctx = pki.ssl_context("server", live["server"], [inter.cert])
    cctx = pki.ssl_context("client", client, [live["ca"]])
    server_seen, _ = _run(lambda: _handshake(sctx, cctx))
    assert isinstance(server_seen, x509.Certificate) and server_seen == client.cert
    # The same client is refused by a server trusting an unrelated CA.
    sctx2 = pki.ssl_context("server", live["server"], [pki.make_ca("unrelated", now=now)])
    server_seen, _ = _run(lambda: _handshake(sctx2, cctx))
    assert isinstance(server_seen, ssl.SSLCertVerificationError)


def test_tls_client_verify_modes(live: dict[str, Any]) -> None:
    """A verifying client refuses an untrusted server; verify=False still reads its cert."""
    bad_server = live["neg"]["untrusted_ca"]
    sctx = pki.ssl_context("server", bad_server, require_client_cert=False)
    strict = pki.ssl_context("client", None, [live["ca"]])
    server_seen, client_seen = _run(lambda: _handshake(sctx, strict))
    assert isinstance(client_seen, ssl.SSLCertVerificationError)
    assert isinstance(server_seen, Exception)
    lax = pki.ssl_context("client", verify=False)
    server_seen, client_seen = _run(lambda: _handshake(sctx, lax))
    assert server_seen is None  # no client certificate presented
    line, cert = client_seen
    assert line == b"hello\n" and cert == bad_server.cert


def test_tls_start_server_ssl_path(live: dict[str, Any]) -> None:
    """The plain asyncio.start_server(ssl=...) path used by MTP servers also works."""

    async def scenario() -> tuple[list[str], bytes]:
        sctx = pki.ssl_context("server", live["server"], [live["ca"]])
        cctx = pki.ssl_context("client", live["client"], [live["ca"]])
        seen: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            cert = pki.peer_certificate(writer)
            seen.set_result(pki.endpoint_ids_from_cert(cert) if cert else [])
            writer.write(b"ok\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=cctx), STEP)
        line = await asyncio.wait_for(reader.readline(), STEP)
        writer.close()
        ids = await asyncio.wait_for(seen, STEP)
        server.close()
        await asyncio.wait_for(server.wait_closed(), STEP)
        return ids, line

    ids, line = _run(scenario)
    assert ids == [CTRL] and line == b"ok\n"


def test_peer_certificate_plain_connection() -> None:
    async def scenario() -> Any:
        got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.set_result(pki.peer_certificate(writer))
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), STEP)
        result = await asyncio.wait_for(got, STEP)
        writer.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), STEP)
        return result

    assert _run(scenario) is None


# ----------------------------------------------------------------------------- TestPKI bundle


def test_test_pki_create(tmp_path: Path) -> None:
    bundle = TestPKI.create(tmp_path / "pki", now=NOW)
    assert TestPKI.__test__ is False  # never collected by pytest
    paths = bundle.paths()
    expected = {"ca", "untrusted-ca", "controller", "agent"} | {
        "controller-" + v.replace("_", "-") for v in NEGATIVE_VARIANTS
    }
    assert set(paths) == expected
    for files in paths.values():
        for p in files.values():
            assert Path(p).is_file()
    assert bundle.controller.endpoint_ids == [pki.DEFAULT_CONTROLLER_ID]
    assert bundle.agent.endpoint_ids == [pki.DEFAULT_AGENT_ID]
    assert set(bundle.negatives) == set(NEGATIVE_VARIANTS)
    assert bundle.negatives["untrusted_ca"].chain == (bundle.untrusted_ca.cert,)
    pki.verify_chain(bundle.controller, [bundle.ca], now=NOW, server_name="127.0.0.1")
    pki.verify_chain(bundle.agent, [bundle.ca], now=NOW)
    manifest = json.loads(bundle.manifest.read_text())
    assert manifest["controller_id"] == pki.DEFAULT_CONTROLLER_ID
    assert manifest["credentials"]["controller-expired"]["summary"]["status"] == "expired"
    assert manifest["credentials"]["agent"]["files"] == paths["agent"]
    loaded = pki.load_credential(paths["agent"]["cert"], paths["agent"]["key"], paths["agent"]["chain"])
    assert loaded.cert == bundle.agent.cert


def test_test_pki_custom_ids(tmp_path: Path) -> None:
    bundle = TestPKI.create(tmp_path, controller_id="proto::c9", agent_id="oui::00D09E-1", now=NOW)
    assert bundle.controller.endpoint_ids == ["proto::c9"]
    assert bundle.negatives["wrong_san"].endpoint_ids == ["proto::wrong-c9"]


# ----------------------------------------------------------------------------- presentable


def test_presentable_variants(ca: CA, ctrl: Credential) -> None:
    """What the suite presents on purpose (TP-469 2.6, 2.8, 4.1): each broken in one way."""
    made = {name: pki.presentable(name, ca=ca, good=ctrl, endpoint_id=CTRL, ips=["127.0.0.1"],
                                  now=NOW)
            for name in pki.PRESENTABLE}
    assert made["good"] is ctrl
    assert pki.validity_status(made["expired"].cert, NOW) == "expired"        # R-SEC.20
    assert pki.validity_status(made["not-yet-valid"].cert, NOW) == "not_yet_valid"
    for name in ("expired", "not-yet-valid", "untrusted-ca", "self-signed"):
        assert made[name].endpoint_ids == [CTRL]
        assert pki.cert_summary(made[name].cert)["san"]["ip"] == ["127.0.0.1"]
    pki.verify_chain(made["good"], [ca], now=NOW, server_name="127.0.0.1")
    with pytest.raises(CertificateInvalid):                                     # R-SEC.2
        pki.verify_chain(made["untrusted-ca"], [ca], now=NOW)
    assert made["self-signed"].cert.issuer == made["self-signed"].cert.subject
    wrong = pki.cert_summary(made["wrong-san"].cert)                            # R-SEC.0a
    assert wrong["endpoint_ids"] == [pki.wrong_endpoint_id(CTRL)]
    assert wrong["san"]["dns"] == [pki.WRONG_DNS_NAME] and wrong["san"]["ip"] == [pki.WRONG_IP]
    with pytest.raises(CertificateInvalid):   # it does not name the host the EUT dials
        pki.verify_chain(made["wrong-san"], [ca], now=NOW, server_name="127.0.0.1")
    assert made["no-san"].endpoint_ids == []
    assert pki.cert_summary(made["no-san"].cert)["san"] == {"uri": [], "dns": [], "ip": []}


def test_presentable_unknown_and_custom_ca(ca: CA, ctrl: Credential) -> None:
    with pytest.raises(PKIError, match="choose one of"):
        pki.presentable("rotten", ca=ca, good=ctrl, endpoint_id=CTRL)
    other = pki.make_ca("other", now=NOW)
    made = pki.presentable("untrusted-ca", ca=ca, good=ctrl, endpoint_id=CTRL, now=NOW,
                           untrusted_ca=other)
    assert made.chain == (other.cert,)


_SHARED_CA = pki.make_ca("hypothesis CA", now=NOW)
_SHARED_GOOD = pki.issue(_SHARED_CA, endpoint_id=CTRL, now=NOW)


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=20))
def test_presentable_rejects_any_other_name(name: str) -> None:
    """Any name outside PRESENTABLE is a PKIError, never another exception."""
    if name in pki.PRESENTABLE:
        return
    with pytest.raises(PKIError):
        pki.presentable(name, ca=_SHARED_CA, good=_SHARED_GOOD, endpoint_id=CTRL)



def test_ssl_context_check_time(ca: CA, ctrl: Credential) -> None:
    """check_time=False sets OpenSSL's NO_CHECK_TIME flag (R-MTP.2, R-SEC.19)."""
    assert not pki.ssl_context("client", None, [ca]).verify_flags & pki.NO_CHECK_TIME
    for role in ("client", "server"):
        ctx = pki.ssl_context(role, ctrl, [ca], check_time=False)  # type: ignore[arg-type]
        assert ctx.verify_flags & pki.NO_CHECK_TIME


@pytest.mark.parametrize("variant", ["expired", "not_yet_valid"])
def test_tls_no_check_time_accepts_dates(live: dict[str, Any], variant: str) -> None:
    """TP-469 2.6 / R-MTP.2: without absolute time the dates are not judged (the chain is)."""
    sctx = pki.ssl_context("server", live["server"], [live["ca"]], check_time=False)
    cctx = pki.ssl_context("client", live["neg"][variant], [live["ca"]])
    server_seen, _ = _run(lambda: _handshake(sctx, cctx))
    assert isinstance(server_seen, x509.Certificate)
    cctx = pki.ssl_context("client", live["neg"]["untrusted_ca"], [live["ca"]])
    server_seen, _ = _run(lambda: _handshake(sctx, cctx))
    assert isinstance(server_seen, ssl.SSLCertVerificationError)
