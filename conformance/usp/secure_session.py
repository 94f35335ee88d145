"""A Session Context whose payloads are protected by TLS (payload_security TLS12), sans-I/O.

:class:`SecuredSession` couples a :class:`conformance.usp.session.SessionContext`
(sequence ids, retransmits, SAR) with a :class:`conformance.usp.e2e_tls.TLSChannel`
and the Record integrity rules, for one local and one remote Endpoint:

* every Record it emits carries ``payload_security`` TLS12 (R-E2E.18, R-E2E.41)
  and is protected: signed with ``sender_cert`` until the peer can know the
  TLS keys, MACed afterwards (R-E2E.29, R-E2E.30, R-E2E.31, R-E2E.33);
* every Record it receives is checked the same way (always, or only when it
  carries a ``mac_signature``, see ``verify``); a failing Record is ignored
  and the session restarts (R-E2E.23), a Record with another
  ``payload_security`` fails (R-E2E.19);
* the Endpoint that starts the session context is the TLS client, the other
  the TLS server (TR-369 "Session Handshake"); a failed TLS session fails the
  Record and restarts the session context after the retry wait (R-E2E.21,
  R-E2E.10, R-E2E.41);
* renegotiation requests are refused (R-E2E.42) unless told otherwise.

Both the reference Agent and the suite's Controller drive it; the behaviour
knobs in :class:`SecurityPolicy` exist so that the Agent can commit named
faults and the Controller can misbehave on purpose (bad signatures, alerts).
No clocks: ``now`` is passed in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509

from conformance.usp import e2e_tls, session
from conformance.usp.schema import PayloadSecurity, Record

__all__ = ["Credentials", "SecureOutcome", "SecuredSession", "SecurityPolicy"]

_TLS12 = PayloadSecurity.TLS12


@dataclass(frozen=True)
class Credentials:
    """Our certificate, key and issuers, and the CA certificates peers must chain to."""

    cert: x509.Certificate
    key: Any
    chain: tuple[x509.Certificate, ...] = ()
    trust: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class SecurityPolicy:
    """How strictly the session behaves (all True/strict by default).

    ``verify``: ``always`` checks every Record's integrity (the MTP does not
    protect it, R-E2E.30), ``present`` only Records carrying a
    ``mac_signature``, ``never`` none (a fault). ``verify_handshake_signatures``:
    False skips the signature check of Records before the handshake completes
    (a fault). ``protect``: sign/MAC our Records; ``mac``: False keeps signing
    after the handshake instead of MACing (a fault). ``check_peer_id``: the peer
    certificate must carry the peer's Endpoint ID. ``allow_renegotiation``:
    accept TLS renegotiation (a fault). ``restart_on_failure``: restart the
    session context after a failed Record; ``retry_wait``: do so after the
    R-E2E.10 wait (False: at once, a fault). ``answer_with_alert``: once the
    peer's certificate is in, send a fatal alert instead of our next
    handshake flight (a failing peer, TP-469 3.5): the TLS client instead of
    its Certificate .. Finished flight, the TLS server instead of its
    ChangeCipherSpec / Finished.
    ``same_security``: fail Records whose payload_security is not TLS12.
    """

    verify: str = "always"
    verify_handshake_signatures: bool = True
    protect: bool = True
    mac: bool = True
    check_peer_id: bool = True
    allow_renegotiation: bool = False
    restart_on_failure: bool = True
    retry_wait: bool = True
    answer_with_alert: bool = False
    same_security: bool = True


@dataclass
class SecureOutcome:
    """What one call produced.

    ``records``: Records to send, already protected; ``messages``: decrypted
    application payloads (serialized Msgs); ``rejected``: why the received
    Record was ignored (integrity, payload_security); ``failure``: why the TLS
    session failed; ``established``: the handshake completed; ``alert``: an
    alert the peer sent, when known; ``renegotiation_refused``: we refused a
    renegotiation (R-E2E.42); ``session_started``: a session of ours was
    announced (its first Record is in ``records``); ``events``: the Session
    Context events.
    """

    records: list[Record] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    rejected: str | None = None
    failure: str | None = None
    established: bool = False
    alert: str | None = None
    renegotiation_refused: bool = False
    session_started: bool = False
    events: list[session.Event] = field(default_factory=list)


class SecuredSession:
    """One TLS12 Session Context between ``local_id`` and ``peer_id``."""

    def __init__(self, local_id: str, peer_id: str, credentials: Credentials,
                 config: session.SessionConfig | None = None, *,
                 policy: SecurityPolicy | None = None, rng: random.Random | None = None,
                 session_id: int | None = None) -> None:
        self.local_id = local_id
        self.peer_id = peer_id
        self.credentials = credentials
        self.policy = policy or SecurityPolicy()
        cfg = replace(config or session.SessionConfig(), payload_security=_TLS12)
        self.ctx = session.SessionContext(local_id, peer_id, cfg, rng=rng, session_id=session_id)
        self.channel: e2e_tls.TLSChannel | None = None
        self._mac_ready = False
        #: sessions whose TLS already failed: Records of theirs are not processed again
        self._dead_session: int | None = None

    # -- state -------------------------------------------------------------------------

    @property
    def established(self) -> bool:
        return self.channel is not None and self.channel.established

    @property
    def session_id(self) -> int | None:
        return self.ctx.session_id

    # -- actions -------------------------------------------------------------------------

    def start(self, *, now: float) -> SecureOutcome:
        """Start a session context of ours and its TLS handshake as the client."""
        out = SecureOutcome()
        self._mac_ready = False
        if self.ctx.session_id is not None:
            # A new session of ours replaces the current one; its ClientHello follows
            # the empty announcing Record.
            out.events.append(self.ctx.restart(now=now, reason="TLS session requested"))
            self._emit(out, session.outgoing_records(out.events))
        # Without a session the ClientHello itself opens one (sequence_id 1).
        self._start_client(out, now)
        # Collect the session-start event now, so a later receive() does not take it
        # for a restart that invalidates the new TLS client.
        for event in self.ctx.poll(now):
            out.events.append(event)
            if isinstance(event, session.Transmit):
                self._emit(out, event.records)
        out.session_started = True
        return out

    def send(self, payload: bytes, *, now: float) -> SecureOutcome:
        """Encrypt one serialized Msg and send it (queued until the handshake completes)."""
        out = SecureOutcome()
        if self.channel is None or self.channel.failure is not None:
            # No TLS yet (or it died): a session of ours starts with its handshake first.
            started = self.start(now=now)
            out.records += started.records
            out.events += started.events
            out.session_started = True
        assert self.channel is not None
        self._tls_step(out, self.channel.send(payload), now)
        return out

    def renegotiate(self, *, now: float) -> SecureOutcome:
        """Send a TLS renegotiation request in place of a payload (TP-469 3.6)."""
        out = SecureOutcome()
        if self.channel is None:
            out.failure = "no TLS session"
            return out
        self._tls_step(out, self.channel.renegotiate(), now, restart=False)
        return out

    def poll(self, now: float) -> SecureOutcome:
        """Time-driven work of the session context (retries, acknowledgements)."""
        out = SecureOutcome()
        events = self.ctx.poll(now)
        out.events += events
        for event in events:
            if isinstance(event, session.Transmit):
                self._emit(out, event.records)
                if event.reason == "session establishment":
                    # The announcement of a session of ours: we are its TLS client.
                    self._mac_ready = False
                    out.session_started = True
                    self._start_client(out, now)
            elif isinstance(event, (session.SessionRestarted, session.SessionStarted,
                                    session.SessionExpired)):
                self._drop_channel()
        return out

    def next_deadline(self) -> float | None:
        return self.ctx.next_deadline()

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, rec: Record, *, now: float) -> SecureOutcome:
        """Digest one session_context Record from the peer; never raises on its content."""
        out = SecureOutcome()
        sc = rec.session_context
        if rec.payload_security != _TLS12 and self.policy.same_security:
            out.rejected = "payload_security differs from the session's TLS12 (R-E2E.19)"
            if self.ctx.session_id is not None and sc.session_id == self.ctx.session_id:
                self._restart(out, now, out.rejected)
            return out
        problem = self._check_integrity(rec)
        if problem is not None:
            out.rejected = problem
            if self.ctx.session_id is not None and sc.session_id == self.ctx.session_id \
                    and self.established:
                self._restart(out, now, f"integrity check failed: {problem} (R-E2E.23)")
            return out
        events = self.ctx.receive(rec, now=now)
        out.events += events
        for event in events:
            if isinstance(event, session.SessionStarted | session.SessionRestarted):
                if getattr(event, "initiated_by_peer", False):
                    self._server_channel()
                else:
                    self._drop_channel()
                self._emit(out, getattr(event, "records", ()))
            elif isinstance(event, session.RetransmitRequested | session.Transmit):
                self._emit(out, event.records)
            elif isinstance(event, session.MessageReceived):
                if self.ctx.session_id == self._dead_session:
                    continue
                if self.channel is None:
                    self._server_channel()
                assert self.channel is not None
                self._tls_step(out, self.channel.receive(event.payload_records), now)
        return out

    # -- internals -----------------------------------------------------------------------------

    def _check_integrity(self, rec: Record) -> str | None:
        mode = self.policy.verify
        if mode == "never" or (mode == "present" and not rec.mac_signature):
            return None
        key = None
        if self.channel is not None and rec.session_context.session_id == self.ctx.session_id:
            key = self.channel.peer_mac_key
        if key is not None:
            return e2e_tls.verify_mac(rec, key)
        if not self.policy.verify_handshake_signatures:
            return None
        # Integrity only: the sender_cert's key must have signed the fields (R-E2E.31).
        # Who the peer is, is the TLS handshake's business (R-E2E.43): it checks the
        # chain and the Endpoint ID of the certificate the peer presents there.
        return e2e_tls.verify_signature(rec)

    def _channel(self, role: str) -> e2e_tls.TLSChannel:
        c = self.credentials
        return e2e_tls.TLSChannel(
            role, c.cert, c.key, chain=c.chain, trust=c.trust,  # type: ignore[arg-type]
            peer_id=self.peer_id if self.policy.check_peer_id else None,
            allow_renegotiation=self.policy.allow_renegotiation)

    def _server_channel(self) -> None:
        self.channel = self._channel("server")
        self._mac_ready = False
        self._dead_session = None

    def _drop_channel(self) -> None:
        self.channel = None
        self._mac_ready = False

    def _start_client(self, out: SecureOutcome, now: float) -> None:
        self.channel = self._channel("client")
        self._dead_session = None
        self._tls_step(out, self.channel.start(), now)

    def _tls_step(self, out: SecureOutcome, result: e2e_tls.TLSResult, now: float, *,
                  restart: bool = True) -> None:
        out.messages += result.messages
        out.alert = out.alert or result.alert
        out.renegotiation_refused = out.renegotiation_refused or result.renegotiation_refused
        if self.policy.answer_with_alert and self._alert_due(result):
            # A failing peer: a fatal alert instead of our next handshake flight.
            assert self.channel is not None
            result = self.channel.alert()
        # The peer can check our MAC once it holds the keys: the TLS server gets them
        # from the client's Finished (before it answers), the client from the server's
        # Finished, so the server's Finished flight itself is still signed.
        if self.channel is not None and self.channel.established \
                and self.channel.role == "client":
            self._mac_ready = True
        if result.out:
            self._emit(out, self.ctx.send_payload_records(result.out, now=now))
        if result.established:
            out.established = True
        if self.channel is not None and self.channel.established:
            self._mac_ready = True
        if result.failure is not None:
            out.failure = result.failure
            if restart:
                self._restart(out, now, f"TLS failed: {result.failure}")
            else:
                self._dead_session = self.ctx.session_id

    def _alert_due(self, result: e2e_tls.TLSResult) -> bool:
        """Whether ``result`` holds the handshake flight ``answer_with_alert`` replaces:
        the client's flight after the server's (not its ClientHello), the server's
        final flight (the one completing the handshake)."""
        channel = self.channel
        if channel is None or result.failure or not result.out:
            return False
        if channel.role == "server":
            return result.established
        return not channel.established and any(
            r[:1] == b"\x16" and r[5:6] != b"\x01" for r in result.out)

    def _restart(self, out: SecureOutcome, now: float, reason: str) -> None:
        self._drop_channel()
        if not self.policy.restart_on_failure:
            self._dead_session = self.ctx.session_id
            return
        event = self.ctx.restart(now=now, reason=reason, requirement="R-E2E.21",
                                 failure=self.policy.retry_wait)
        out.events.append(event)
        recs = session.outgoing_records([event])
        if recs:  # announced at once (no retry wait): we are the TLS client
            self._emit(out, recs)
            out.session_started = True
            self._start_client(out, now)

    def _emit(self, out: SecureOutcome, recs: Sequence[Record]) -> None:
        for rec in recs:
            out.records.append(self.protect(rec))

    def protect(self, rec: Record) -> Record:
        """Sign or MAC one of our Records (R-E2E.29); a copy is returned."""
        copy = Record()
        copy.CopyFrom(rec)
        if not self.policy.protect:
            return copy
        key = self.channel.local_mac_key if (self.channel is not None and self._mac_ready) \
            else None
        if key is not None and self.policy.mac:
            copy.sender_cert = b""
            e2e_tls.mac_record(copy, key)
        else:
            c = self.credentials
            e2e_tls.sign_record(copy, c.cert, c.key, c.chain)
        return copy
