"""The reference Agent's E2E security: Record integrity and TLS12 payload security.

TP-469 Feature 23 (and the integrity rules of 2.7). :class:`E2ESecurity` sits
in front of :class:`conformance.agent.core.AgentCore`: the core hands it every
Record first (:meth:`E2ESecurity.handle`) and it either takes the Record over
(returning the Records to send back) or returns None for the core's own path.

* Record integrity (R-E2E.28 .. R-E2E.31): a Record carrying a
  ``mac_signature`` is always checked; when the MTP does not protect Record
  integrity (``E2EMaterial.mtp_protects_integrity`` False) every Record is, and
  the agent signs what it sends back (R-E2E.29). A failing Record is ignored
  (R-E2E.23, TP-469 2.7, 3.2, 3.3).
* TLS12 session contexts: each controller gets a
  :class:`conformance.usp.secure_session.SecuredSession`; the agent is the TLS
  server when the controller starts the session and the TLS client when the
  agent restarts it. Its certificate carries ``urn:bbf:usp:id:<EndpointID>``;
  the controller's must chain to the agent's trust anchors and name the
  controller's Endpoint ID (R-E2E.43, TP-469 3.7). Renegotiation is refused
  (R-E2E.42, 3.6), a PLAINTEXT Record in a TLS session fails (R-E2E.19, 3.13),
  a failed TLS session restarts the session context after the R-E2E.10 wait
  (3.5), Records after the handshake are MACed (R-E2E.33, 3.4). The
  controller's ``E2ESession.`` parameters (SessionRetryMinimumWaitInterval,
  SessionRetryIntervalMultiplier, SessionExpiration, ...) shape each TLS
  session through the core's :class:`conformance.agent.sessions.SessionManager`
  and apply at once, also to a running session, as for PLAINTEXT sessions.
* A DisconnectRecord from a controller ends its TLS session (R-MTP.7): no
  retry of it follows.
* TLS12 outside a session context is refused (R-E2E.41).

The faults registered here break exactly one of these rules each.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cryptography import x509

from conformance.agent.context import AgentState
from conformance.agent.faults import register
from conformance.usp import e2e_tls, records, secure_session, session
from conformance.usp.schema import PayloadSecurity, Record

if TYPE_CHECKING:
    from conformance.agent.core import AgentCore

register("e2e.accepts_bad_signature", "TP-469 2.7 / R-E2E.30",
         "processes no_session_context Records whose mac_signature does not verify")
register("e2e.trusts_unprotected_mtp", "TP-469 3.2 / R-E2E.30",
         "processes unsigned Records although the MTP does not protect their integrity")
register("e2e.accepts_bad_handshake_signature", "TP-469 3.3 / R-E2E.31",
         "answers a TLS ClientHello whose Record signature does not verify")
register("e2e.no_mac", "TP-469 3.4 / R-E2E.29",
         "sends TLS12 Records after the handshake without mac_signature")
register("e2e.no_retry_wait", "TP-469 3.5 / R-E2E.10",
         "restarts a failed TLS session context at once instead of after the retry wait")
register("e2e.accepts_renegotiation", "TP-469 3.6 / R-E2E.42",
         "accepts TLS renegotiation requests in E2E sessions")
register("e2e.accepts_wrong_san", "TP-469 3.7 / R-E2E.43",
         "accepts a controller certificate whose SAN does not name the controller")
register("e2e.mixed_payload_security", "TP-469 3.13 / R-E2E.19",
         "answers a PLAINTEXT Record sent inside a TLS12 session context")

_TLS12 = PayloadSecurity.TLS12


@dataclass(frozen=True)
class E2EMaterial:
    """The agent's E2E credential and trust anchors.

    ``mtp_protects_integrity``: whether the agent's MTPs count as protecting
    Record integrity (R-E2E.28); when False every Record must be signed.
    """

    cert: x509.Certificate
    key: Any
    chain: tuple[x509.Certificate, ...] = ()
    trust: tuple[x509.Certificate, ...] = ()
    mtp_protects_integrity: bool = True

    @property
    def credentials(self) -> secure_session.Credentials:
        return secure_session.Credentials(self.cert, self.key, self.chain, self.trust)


@dataclass
class E2ESecurity:
    """Integrity checks and TLS12 session contexts of one agent."""

    state: AgentState
    material: E2EMaterial
    config_for: Callable[[str], session.SessionConfig] = lambda _cid: session.SessionConfig()
    rng: random.Random = field(default_factory=random.SystemRandom)
    sessions: dict[str, secure_session.SecuredSession] = field(default_factory=dict)
    #: the core that hands Records in (its SessionManager reads the E2ESession objects)
    core: AgentCore | None = None

    # --- entry points the core calls --------------------------------------------------

    def handle(self, rec: Record, now: float, core: AgentCore) -> list[Record] | None:
        """Records to send back when E2E security takes ``rec`` over; None otherwise."""
        self.core = core
        kind = records.record_kind(rec)
        if kind == "disconnect":
            self.sessions.pop(rec.from_id, None)
            return None
        if kind == "session_context":
            secured = self.sessions.get(rec.from_id)
            if secured is not None and rec.payload_security != _TLS12 \
                    and rec.session_context.session_id != secured.session_id:
                # A new PLAINTEXT session replaces the TLS one (R-E2E.6).
                self.sessions.pop(rec.from_id, None)
                secured = None
            if rec.payload_security == _TLS12 or secured is not None:
                return self._in_tls_session(rec, now, core, secured)
            return self._check_plain(rec, core)
        if kind == "no_session_context":
            if rec.payload_security != PayloadSecurity.PLAINTEXT:
                core._event("ignored", rec.from_id,
                            "TLS12 payload outside a session context (R-E2E.41)")
                return []
            verdict = self._check_plain(rec, core)
            if verdict is not None or self.material.mtp_protects_integrity:
                return verdict
            return [self._sign(r) for r in core._no_session(rec)]  # R-E2E.29
        return None

    def poll(self, now: float) -> dict[str, list[Record]]:
        """Time-driven work of the TLS sessions (retries, acknowledgements), by controller."""
        out: dict[str, list[Record]] = {}
        for cid, secured in list(self.sessions.items()):
            self._reconfigure(cid, secured, self.core)
            recs = secured.poll(now).records
            if recs:
                out[cid] = self._mac_fault(recs)
        return out

    def next_deadline(self) -> float | None:
        times = [t for s in self.sessions.values() if (t := s.next_deadline()) is not None]
        return min(times) if times else None

    # --- integrity of PLAINTEXT Records ---------------------------------------------------

    def _check_plain(self, rec: Record, core: AgentCore) -> list[Record] | None:
        """[] when the Record fails its integrity check (ignored), None when it passes."""
        faults = self.state.faults
        if not rec.mac_signature:
            if self.material.mtp_protects_integrity or faults.on("e2e.trusts_unprotected_mtp"):
                return None
            core._event("ignored", rec.from_id,
                        "unsigned Record on an MTP that does not protect integrity (R-E2E.30)")
            return []
        problem = e2e_tls.verify_signature(rec, trust=self.material.trust,
                                           expected_id=rec.from_id)
        if problem is None or faults.on("e2e.accepts_bad_signature"):
            return None
        core._event("ignored", rec.from_id, f"integrity check failed: {problem} (R-E2E.23)")
        return []

    def _sign(self, rec: Record) -> Record:
        m = self.material
        e2e_tls.sign_record(rec, m.cert, m.key, m.chain)
        return rec

    # --- TLS12 session contexts --------------------------------------------------------------

    def _policy(self) -> secure_session.SecurityPolicy:
        faults = self.state.faults
        return secure_session.SecurityPolicy(
            verify="present" if self.material.mtp_protects_integrity else "always",
            verify_handshake_signatures=not faults.on("e2e.accepts_bad_handshake_signature"),
            check_peer_id=not faults.on("e2e.accepts_wrong_san"),
            allow_renegotiation=faults.on("e2e.accepts_renegotiation"),
            retry_wait=not faults.on("e2e.no_retry_wait"),
            same_security=not faults.on("e2e.mixed_payload_security"))

    def _config(self, cid: str, core: AgentCore | None) -> session.SessionConfig:
        """The controller's E2ESession settings (R-E2E.10 retry parameters, expiry...)."""
        manager = getattr(core, "sessions", None)
        base = manager.settings(cid).config if manager is not None else self.config_for(cid)
        return replace(base, payload_security=_TLS12)

    def _reconfigure(self, cid: str, secured: secure_session.SecuredSession,
                     core: AgentCore | None) -> None:
        """A changed E2ESession object applies to the running TLS session too."""
        cfg = self._config(cid, core)
        if secured.ctx.config != cfg:
            try:
                secured.ctx.reconfigure(cfg)
            except ValueError:  # e.g. a MaxUSPRecordSize leaving no room: keep the old one
                pass

    def _in_tls_session(self, rec: Record, now: float, core: AgentCore,
                        secured: secure_session.SecuredSession | None) -> list[Record]:
        cid = rec.from_id
        if secured is None:
            secured = secure_session.SecuredSession(
                self.state.endpoint_id, cid, self.material.credentials, self._config(cid, core),
                policy=self._policy(), rng=self.rng)
            self.sessions[cid] = secured
        else:
            self._reconfigure(cid, secured, core)
        if rec.payload_security != _TLS12 and self.state.faults.on("e2e.mixed_payload_security"):
            return self._answer_plain(rec, core)
        outcome = secured.receive(rec, now=now)
        if outcome.rejected:
            core._event("ignored", cid, outcome.rejected)
        if outcome.failure:
            core._event("session_violation", cid, outcome.failure)
        out = list(outcome.records)
        for payload in outcome.messages:
            try:
                msg = records.parse_msg(payload)
            except records.MsgDecodeError as exc:
                core._event("ignored", cid, f"undecodable Msg in TLS session: {exc}")
                continue
            reply = core.handle_msg(cid, msg)
            if reply is not None:
                out += secured.send(reply.SerializeToString(), now=now).records  # R-MSG.0a
        return self._mac_fault(out)

    def _answer_plain(self, rec: Record, core: AgentCore) -> list[Record]:
        """The e2e.mixed_payload_security fault: a PLAINTEXT payload answered as is."""
        sc = rec.session_context
        out: list[Record] = []
        for payload in sc.payload:
            try:
                msg = records.parse_msg(bytes(payload))
            except records.MsgDecodeError:
                continue
            reply = core.handle_msg(rec.from_id, msg)
            if reply is not None:
                out.append(records.session_record(
                    to_id=rec.from_id, from_id=self.state.endpoint_id,
                    session_id=sc.session_id, sequence_id=sc.expected_id or 1,
                    expected_id=sc.sequence_id + 1, payloads=[reply.SerializeToString()]))
        return out

    def _mac_fault(self, recs: list[Record]) -> list[Record]:
        if not self.state.faults.on("e2e.no_mac"):
            return recs
        for rec in recs:  # e2e.no_mac: the MAC is left out (signatures stay)
            if rec.mac_signature and not rec.sender_cert:
                rec.mac_signature = b""
        return recs


def material_from_files(cert_pem: bytes, key_pem: bytes, trust_pem: bytes = b"", *,
                        mtp_protects_integrity: bool = True) -> E2EMaterial:
    """E2E material from PEM data (the agent's TLS files of its run configuration)."""
    from cryptography.hazmat.primitives import serialization

    certs = x509.load_pem_x509_certificates(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    trust = tuple(x509.load_pem_x509_certificates(trust_pem)) if trust_pem else ()
    return E2EMaterial(certs[0], key, tuple(certs[1:]), trust,
                       mtp_protects_integrity=mtp_protects_integrity)
