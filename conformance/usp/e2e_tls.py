"""E2E Record integrity and TLS payload security (sans-I/O).

TR-369 "Validating the Integrity of the USP Record" and "Secure Message
Exchange": the pieces both the reference Agent and the suite's Controller
need, with no sockets, threads or sleeps.

* :func:`integrity_input` lays out the non-payload fields of a Record in the
  order and encoding R-E2E.32 / R-E2E.32.1 prescribe;
* :func:`sign_record` / :func:`verify_signature`: the ``ECDSA_P256_SHA256_ASN1``
  signature method with ``sender_cert`` (R-E2E.31), used for PLAINTEXT
  Records and for TLS12 Records before the handshake has completed (R-E2E.30);
* :func:`mac_record` / :func:`verify_mac`: the HMAC-SHA256 method with keys
  exported from the TLS session (R-E2E.33 .. R-E2E.39);
* :class:`TLSChannel`: one TLS 1.2 endpoint (pyOpenSSL over memory BIOs)
  whose TLS records travel as ``payload`` entries of session_context Records
  (R-E2E.40 .. R-E2E.43): handshake, application data, alerts, the exporter
  keys, refusal of renegotiation (R-E2E.42) and peer certificate checks
  (chain to the trust anchors, ``urn:bbf:usp:id:`` SAN of the peer);
* :func:`split_tls_records` / :func:`describe_tls`: the TLS record layer of a
  payload, read without keys (content types, the plaintext handshake messages,
  certificates and alerts), for verdicts and reports.

Verification functions return a reason (``str``) on failure and ``None`` on
success; they never raise on hostile input. :class:`TLSChannel` reports
failures in :class:`TLSResult`. Only unusable *local* material (our own
credential) raises :class:`E2EError`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import struct
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto

from conformance.usp import schema

__all__ = [
    "ALERT_DESCRIPTIONS",
    "CONTENT_TYPES",
    "EXPORTER_LABEL",
    "HANDSHAKE_TYPES",
    "KEYING_MATERIAL_LENGTH",
    "SIGNATURE_SCHEME",
    "TLS12_CIPHER",
    "E2EError",
    "TLSChannel",
    "TLSResult",
    "certificate_sans",
    "describe_tls",
    "integrity_input",
    "mac_record",
    "parse_sender_cert",
    "sign_record",
    "split_tls_records",
    "verify_mac",
    "verify_signature",
]

#: R-E2E.36: the RFC 5705 exporter label; the context is empty (zero length).
EXPORTER_LABEL: Final = b"EXPORTER-BBF-USP-Record"
#: R-E2E.37: octets of keying material; the first half is the client key (R-E2E.39).
KEYING_MATERIAL_LENGTH: Final = 64
#: R-E2E.40: the TLS 1.2 cipher suite (OpenSSL name).
TLS12_CIPHER: Final = "ECDHE-ECDSA-AES128-GCM-SHA256"
#: Name TR-369 gives the signature method of R-E2E.31.
SIGNATURE_SCHEME: Final = "ECDSA_P256_SHA256_ASN1"
USP_ID_URN_PREFIX: Final = "urn:bbf:usp:id:"

#: TLS record content types (RFC 5246 section 6.2.1).
CONTENT_TYPES: Final = {20: "change_cipher_spec", 21: "alert", 22: "handshake",
                        23: "application_data"}
#: TLS 1.2 handshake message types (RFC 5246 section 7.4).
HANDSHAKE_TYPES: Final = {0: "hello_request", 1: "client_hello", 2: "server_hello", 4: "new_session_ticket",
                          11: "certificate", 12: "server_key_exchange",
                          13: "certificate_request", 14: "server_hello_done",
                          15: "certificate_verify", 16: "client_key_exchange", 20: "finished"}
#: TLS alert descriptions (RFC 5246 section 7.2, RFC 8446 section 6).
ALERT_DESCRIPTIONS: Final = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
                             40: "handshake_failure", 42: "bad_certificate",
                             43: "unsupported_certificate", 44: "certificate_revoked",
                             45: "certificate_expired", 46: "certificate_unknown",
                             47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied",
                             50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
                             71: "insufficient_security", 80: "internal_error",
                             90: "user_canceled", 100: "no_renegotiation",
                             109: "missing_extension", 110: "unsupported_extension",
                             116: "certificate_required"}

_TLS_HEADER = 5
_MAX_TLS_RECORD = 2**14 + 2048   # RFC 5246: ciphertext length limit
_HMAC_SIZE = 32
_OP_ALLOW_CLIENT_RENEG = 0x100   # SSL_OP_ALLOW_CLIENT_RENEGOTIATION (OpenSSL 3)
_Role = Literal["client", "server"]


class E2EError(ValueError):
    """Our own E2E material (credential, trust anchors) is unusable."""


# --- R-E2E.32: the integrity input --------------------------------------------------


def _u32(value: int) -> bytes:
    return struct.pack(">I", value & 0xFFFFFFFF)


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value & 0xFFFFFFFFFFFFFFFF)


def integrity_input(rec: schema.Record) -> bytes:
    """The non-payload fields of ``rec`` as the MAC / signature input (R-E2E.32).

    Record fields by field number (version, to_id, from_id, payload_security,
    sender_cert; ``mac_signature`` itself left out), then, for a
    session_context Record, its fields (session_id, sequence_id, expected_id,
    retransmit_id, payload_sar_state, payloadrec_sar_state; ``payload`` left
    out). Encoding per R-E2E.32.1: strings UTF-8, bytes as they are, uint64 as
    8 and uint32/enums as 4 big-endian bytes.
    """
    parts = [rec.version.encode("utf-8"), rec.to_id.encode("utf-8"),
             rec.from_id.encode("utf-8"), _u32(rec.payload_security), bytes(rec.sender_cert)]
    if rec.WhichOneof("record_type") == "session_context":
        sc = rec.session_context
        parts += [_u64(sc.session_id), _u64(sc.sequence_id), _u64(sc.expected_id),
                  _u64(sc.retransmit_id), _u32(sc.payload_sar_state),
                  _u32(sc.payloadrec_sar_state)]
    return b"".join(parts)


# --- R-E2E.31: the signature method ---------------------------------------------------


def _pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def sign_record(rec: schema.Record, cert: x509.Certificate, key: Any,
                chain: Sequence[x509.Certificate] = ()) -> None:
    """Sign ``rec`` in place with ECDSA P-256 / SHA-256, DER signature (R-E2E.31).

    ``sender_cert`` gets the PEM of ``cert`` and its ``chain`` first, since it
    is part of the signed input (R-E2E.32). Raises :class:`E2EError` when
    ``key`` is not a P-256 private key.
    """
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise E2EError(f"{SIGNATURE_SCHEME} needs a P-256 private key")
    rec.sender_cert = _pem([cert, *chain])
    rec.mac_signature = b""
    rec.mac_signature = key.sign(integrity_input(rec), ec.ECDSA(hashes.SHA256()))


def parse_sender_cert(data: bytes) -> list[x509.Certificate] | str:
    """The certificates of a ``sender_cert`` field (PEM, leaf first), or why not."""
    if not data:
        return "no sender_cert"
    try:
        certs = x509.load_pem_x509_certificates(bytes(data))
    except (ValueError, TypeError) as exc:
        return f"sender_cert is not PEM certificates: {exc}"
    return certs or "sender_cert holds no certificate"


def certificate_sans(cert: x509.Certificate) -> list[str]:
    """The URI subjectAltName entries of ``cert`` (empty when there are none or on error)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [str(u) for u in ext.value.get_values_for_type(x509.UniformResourceIdentifier)]
    except (x509.ExtensionNotFound, ValueError, TypeError):
        return []


def _check_peer_cert(leaf: x509.Certificate, chain: Sequence[x509.Certificate],
                     trust: Sequence[x509.Certificate], expected_id: str | None,
                     now: _dt.datetime | None) -> str | None:
    if expected_id is not None and USP_ID_URN_PREFIX + expected_id not in certificate_sans(leaf):
        return f"certificate SAN does not name {USP_ID_URN_PREFIX}{expected_id}"
    if not trust:
        return None
    from cryptography.x509 import verification

    when = now or _dt.datetime.now(_dt.UTC)
    try:
        builder = verification.PolicyBuilder().store(verification.Store(list(trust))).time(when)
        builder.build_client_verifier().verify(leaf, list(chain))
    except (verification.VerificationError, ValueError, TypeError) as exc:
        return f"certificate does not verify against the trust anchors: {exc}"
    return None


def verify_signature(rec: schema.Record, *, trust: Sequence[x509.Certificate] = (),
                     expected_id: str | None = None, cert: x509.Certificate | None = None,
                     now: _dt.datetime | None = None) -> str | None:
    """Check the ``ECDSA_P256_SHA256_ASN1`` signature of ``rec`` (R-E2E.31); None if good.

    The key is that of ``cert`` when given (the certificate of the TLS
    session), else of the leaf in ``sender_cert``, which must then chain to
    ``trust`` (when non-empty) and carry ``urn:bbf:usp:id:<expected_id>``
    (when given).
    """
    if not rec.mac_signature:
        return "no mac_signature"
    if cert is None:
        certs = parse_sender_cert(rec.sender_cert)
        if isinstance(certs, str):
            return certs
        leaf = certs[0]
        problem = _check_peer_cert(leaf, certs[1:], trust, expected_id, now)
        if problem:
            return problem
    else:
        leaf = cert
    try:
        public = leaf.public_key()
    except (ValueError, TypeError) as exc:  # unsupported key algorithm
        return f"sender certificate key is unusable: {exc}"
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        return f"sender certificate key is not P-256 ({SIGNATURE_SCHEME})"
    try:
        public.verify(bytes(rec.mac_signature), integrity_input(rec), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return "mac_signature is not a valid signature of the non-payload fields"
    return None


# --- R-E2E.33 .. R-E2E.39: the TLS MAC method --------------------------------------------


def mac_record(rec: schema.Record, key: bytes) -> None:
    """Set ``mac_signature`` to the HMAC-SHA256 of the non-payload fields (R-E2E.33)."""
    rec.mac_signature = b""
    rec.mac_signature = hmac.new(key, integrity_input(rec), hashlib.sha256).digest()


def verify_mac(rec: schema.Record, key: bytes) -> str | None:
    """Check the HMAC-SHA256 ``mac_signature`` of ``rec``; None when it is right."""
    if not rec.mac_signature:
        return "no mac_signature"
    if len(rec.mac_signature) != _HMAC_SIZE:
        return f"mac_signature is {len(rec.mac_signature)} bytes, not an HMAC-SHA256"
    copy = schema.Record()
    copy.CopyFrom(rec)
    mac_record(copy, key)
    if not hmac.compare_digest(copy.mac_signature, bytes(rec.mac_signature)):
        return "mac_signature does not match the HMAC of the non-payload fields"
    return None


# --- the TLS record layer, read without keys ------------------------------------------------


def split_tls_records(data: bytes) -> tuple[list[bytes], bytes]:
    """Cut ``data`` into whole TLS records; return them and the incomplete rest."""
    out: list[bytes] = []
    pos = 0
    while len(data) - pos >= _TLS_HEADER:
        length = struct.unpack_from(">H", data, pos + 3)[0]
        end = pos + _TLS_HEADER + length
        if end > len(data):
            break
        out.append(bytes(data[pos:end]))
        pos = end
    return out, bytes(data[pos:])


def _handshake_messages(body: bytes) -> list[tuple[int, bytes]]:
    msgs: list[tuple[int, bytes]] = []
    pos = 0
    while len(body) - pos >= 4:
        kind = body[pos]
        length = int.from_bytes(body[pos + 1:pos + 4], "big")
        msgs.append((kind, body[pos + 4:pos + 4 + length]))
        pos += 4 + length
    return msgs


def _certificate_list(body: bytes) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    if len(body) < 3:
        return certs
    total = int.from_bytes(body[:3], "big")
    pos, end = 3, min(len(body), 3 + total)
    while end - pos >= 3:
        length = int.from_bytes(body[pos:pos + 3], "big")
        der = body[pos + 3:pos + 3 + length]
        pos += 3 + length
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except (ValueError, TypeError):
            continue
    return certs


def describe_tls(payloads: Sequence[bytes]) -> dict[str, Any]:
    """What a keyless observer sees in TLS records carried as Record payloads.

    Returns ``content_types`` (names, in order), ``handshake`` (names of the
    plaintext handshake messages: those before ChangeCipherSpec),
    ``certificate_sans`` (URI SANs of the first certificate of a plaintext
    Certificate message), ``certificate_request`` (bool), ``alerts`` (names of
    plaintext alerts; an encrypted alert is ``"encrypted"``) and
    ``malformed`` (bool: bytes that are not TLS records). Never raises.
    """
    out: dict[str, Any] = {"content_types": [], "handshake": [], "certificate_sans": [],
                           "certificate_request": False, "alerts": [], "malformed": False}
    encrypted = False
    for payload in payloads:
        recs, rest = split_tls_records(bytes(payload))
        if rest or not recs:
            out["malformed"] = True
        for rec in recs:
            ctype, body = rec[0], rec[_TLS_HEADER:]
            out["content_types"].append(CONTENT_TYPES.get(ctype, str(ctype)))
            if ctype == 20:
                encrypted = True
            elif ctype == 21:
                if not encrypted and len(body) == 2:
                    out["alerts"].append(ALERT_DESCRIPTIONS.get(body[1], str(body[1])))
                else:
                    out["alerts"].append("encrypted")
            elif ctype == 22 and not encrypted:
                for kind, msg in _handshake_messages(body):
                    name = HANDSHAKE_TYPES.get(kind, str(kind))
                    out["handshake"].append(name)
                    if name == "certificate_request":
                        out["certificate_request"] = True
                    if name == "certificate" and not out["certificate_sans"]:
                        certs = _certificate_list(msg)
                        if certs:
                            out["certificate_sans"] = certificate_sans(certs[0])
            elif ctype == 22:
                out["handshake"].append("encrypted")
    return out


# --- the TLS channel --------------------------------------------------------------------------


@dataclass
class TLSResult:
    """What one step of a :class:`TLSChannel` produced.

    ``out``: TLS records to send to the peer (handshake, alerts, data), one
    per payload entry; ``messages``: application data received (each a whole
    serialized Msg, as the peer wrote it); ``established``: the handshake
    completed in this step; ``failure``: why the TLS session is dead (fatal
    alert sent or received, a bad certificate, garbage); ``alert``: the name of
    an alert the peer sent, when known; ``renegotiation_refused``: the peer
    asked for a renegotiation and we refused it (R-E2E.42).
    """

    out: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    established: bool = False
    failure: str | None = None
    alert: str | None = None
    renegotiation_refused: bool = False


class TLSChannel:
    """One TLS 1.2 endpoint whose records travel in USP Record payloads (R-E2E.40 ff.).

    ``role``: ``client`` for the Endpoint that started the session context,
    ``server`` for the other. ``cert`` / ``key`` / ``chain``: our credential
    (R-E2E.43; an empty chain is fine). ``trust``: the CA certificates a peer
    certificate must chain to. ``peer_id``: the peer's Endpoint ID its
    certificate must carry as ``urn:bbf:usp:id:`` SAN (None: not checked).
    ``allow_renegotiation`` exists for fault injection only (R-E2E.42).
    Application data written before the handshake completes is queued.
    """

    def __init__(self, role: _Role, cert: x509.Certificate, key: Any, *,
                 chain: Sequence[x509.Certificate] = (),
                 trust: Sequence[x509.Certificate] = (), peer_id: str | None = None,
                 verify_peer: bool = True, allow_renegotiation: bool = False) -> None:
        if role not in ("client", "server"):
            raise E2EError(f"role must be client or server, not {role!r}")
        self.role: _Role = role
        self.peer_id = peer_id
        self._peer_problem: str | None = None
        self._queue: list[bytes] = []
        self._established = False
        self._failure: str | None = None
        self._renegotiations_seen = 0
        self.peer_certificate: x509.Certificate | None = None
        self._keys: tuple[bytes, bytes] | None = None
        try:
            ctx = SSL.Context(SSL.TLS_METHOD)
            ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
            ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
            ctx.set_cipher_list(TLS12_CIPHER.encode("ascii"))
            ctx.set_tmp_ecdh(ec.SECP256R1())  # R-E2E.40a: ECDHE on P-256
            ctx.use_certificate(cert)
            ctx.use_privatekey(key)
            for extra in chain:
                ctx.add_extra_chain_cert(extra)
            ctx.check_privatekey()
            store = ctx.get_cert_store()
            assert store is not None
            with warnings.catch_warnings():  # X509Store only takes pyOpenSSL objects
                warnings.simplefilter("ignore", DeprecationWarning)
                for anchor in trust:
                    store.add_cert(crypto.X509.from_cryptography(anchor))
        except (SSL.Error, crypto.Error, ValueError, TypeError) as exc:
            raise E2EError(f"unusable TLS credential: {exc}") from None
        if not allow_renegotiation:
            ctx.set_options(SSL.OP_NO_RENEGOTIATION)
        elif role == "server":  # OpenSSL 3 refuses client renegotiation unless allowed
            ctx.set_options(getattr(SSL, "OP_ALLOW_CLIENT_RENEGOTIATION", _OP_ALLOW_CLIENT_RENEG))
        if verify_peer:
            mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if role == "server" else 0)
            ctx.set_verify(mode, self._verify)
        else:
            ctx.set_verify(SSL.VERIFY_NONE, lambda *_args: True)
        self._conn = SSL.Connection(ctx, None)
        if role == "client":
            self._conn.set_connect_state()
        else:
            self._conn.set_accept_state()

    # -- state ---------------------------------------------------------------------------

    @property
    def established(self) -> bool:
        """The handshake has completed and the channel is not dead."""
        return self._established and self._failure is None

    @property
    def failure(self) -> str | None:
        return self._failure

    def keys(self) -> tuple[bytes, bytes] | None:
        """(client key, server key) of R-E2E.39 once established, else None."""
        if not self.established or self._keys is None:
            return None
        return self._keys

    @property
    def local_mac_key(self) -> bytes | None:
        """The key our Records are MACed with (client key for the client)."""
        keys = self.keys()
        return None if keys is None else keys[0 if self.role == "client" else 1]

    @property
    def peer_mac_key(self) -> bytes | None:
        """The key the peer's Records are MACed with."""
        keys = self.keys()
        return None if keys is None else keys[1 if self.role == "client" else 0]

    # -- steps ---------------------------------------------------------------------------

    def start(self) -> TLSResult:
        """Client: the ClientHello. Server: nothing (it waits for the client)."""
        result = TLSResult()
        if self.role == "client" and not self._established and self._failure is None:
            self._handshake(result)
        return result

    def send(self, data: bytes) -> TLSResult:
        """Encrypt one application message (queued until the handshake completes)."""
        result = TLSResult()
        if self._failure is not None:
            result.failure = self._failure
            return result
        if not self._established:
            self._queue.append(bytes(data))
            return result
        self._write(bytes(data), result)
        return result

    def receive(self, payloads: Sequence[bytes]) -> TLSResult:
        """Feed the TLS records of one reassembled payload from the peer."""
        result = TLSResult()
        if self._failure is not None:
            result.failure = self._failure
            return result
        try:
            for payload in payloads:
                self._conn.bio_write(bytes(payload))
        except (SSL.Error, ValueError, TypeError) as exc:
            self._fail(result, f"TLS input rejected: {exc}")
            return result
        if not self._established:
            self._handshake(result)
            if not self._established or self._failure is not None:
                return result
        self._read(result)
        return result

    def renegotiate(self) -> TLSResult:
        """Ask the peer for a renegotiation (what R-E2E.42 forbids accepting)."""
        result = TLSResult()
        if not self.established:
            result.failure = self._failure or "no established TLS session to renegotiate"
            return result
        try:
            self._conn.renegotiate()
            self._conn.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            self._fail(result, f"renegotiation request failed: {_reason(exc)}")
        self._drain(result)
        return result

    def alert(self) -> TLSResult:
        """Give up the handshake with a fatal alert to the peer (a failing peer, TP-469 3.5)."""
        result = TLSResult()
        # TLS 1.2 alert record: level fatal (2), handshake_failure (40); plaintext
        # before the handshake completes.
        result.out.append(bytes([21, 3, 3, 0, 2, 2, 40]))
        self._failure = "handshake aborted with an alert by this endpoint"
        result.failure = self._failure
        return result

    # -- internals --------------------------------------------------------------------------

    def _verify(self, _conn: SSL.Connection, cert: crypto.X509, _errno: int, depth: int,
                ok: int) -> bool:
        try:
            if depth == 0:
                leaf = cert.to_cryptography()
                self.peer_certificate = leaf
                if not ok:
                    self._peer_problem = "peer certificate does not verify"
                    return False
                if self.peer_id is not None and \
                        USP_ID_URN_PREFIX + self.peer_id not in certificate_sans(leaf):
                    self._peer_problem = (f"peer certificate SAN does not name "
                                          f"{USP_ID_URN_PREFIX}{self.peer_id}")
                    return False
            return bool(ok)
        except Exception:  # noqa: BLE001 - a hostile certificate must not escape into OpenSSL
            self._peer_problem = "peer certificate unreadable"
            return False

    def _handshake(self, result: TLSResult) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._drain(result)
            return
        except SSL.Error as exc:
            self._fail(result, self._peer_problem or f"TLS handshake failed: {_reason(exc)}")
            return
        self._established = True
        result.established = True
        # Exported once: a renegotiation attempt replaces the handshake randoms the
        # exporter reads, while the session keeps its keys (R-E2E.35, R-E2E.42).
        try:
            material = self._conn.export_keying_material(EXPORTER_LABEL, KEYING_MATERIAL_LENGTH,
                                                         b"")  # R-E2E.36: empty context
            self._keys = (material[:32], material[32:])  # R-E2E.39
        except SSL.Error as exc:
            self._fail(result, f"no keying material: {_reason(exc)}")
            return
        self._drain(result)
        queued, self._queue = self._queue, []
        for data in queued:
            self._write(data, result)

    def _write(self, data: bytes, result: TLSResult) -> None:
        try:
            self._conn.sendall(data)
        except SSL.Error as exc:
            self._fail(result, f"TLS write failed: {_reason(exc)}")
            return
        self._drain(result)

    def _read(self, result: TLSResult) -> None:
        chunks: list[bytes] = []
        while True:
            try:
                data = self._conn.recv(65536)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._fail(result, "peer closed the TLS session (close_notify)")
                break
            except SSL.Error as exc:
                reason = _reason(exc)
                if "renegotiation" in reason.lower():
                    result.alert = "no_renegotiation"
                self._fail(result, f"TLS session failed: {reason}")
                break
            if not data:
                break
            chunks.append(data)
        renegotiations = self._conn.total_renegotiations()
        self._renegotiations_seen = max(self._renegotiations_seen, renegotiations)
        if chunks:
            # One USP Msg per send(): TLS may split or join them; protobuf Msgs
            # are not self-delimiting, so the peer sends one Msg per Record payload.
            result.messages.append(b"".join(chunks))
        self._drain(result)
        if any(rec[0] == 21 for rec in result.out) and self._failure is None \
                and self.role == "server":
            result.renegotiation_refused = True

    def _drain(self, result: TLSResult) -> None:
        data = b""
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
            except SSL.Error:
                break
            if not chunk:
                break
            data += chunk
        recs, rest = split_tls_records(data)
        result.out.extend(recs)
        if rest:
            result.out.append(rest)

    def _fail(self, result: TLSResult, reason: str) -> None:
        self._failure = reason
        result.failure = reason
        self._drain(result)  # a fatal alert OpenSSL queued for the peer


def _reason(exc: BaseException) -> str:
    try:
        parts = [str(item[2]) for item in exc.args[0] if len(item) >= 3]  # type: ignore[index]
    except (TypeError, IndexError):
        parts = []
    return "; ".join(p for p in parts if p) or type(exc).__name__
