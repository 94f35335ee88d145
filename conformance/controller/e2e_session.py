"""The suite Controller's E2E security with an agent: TLS12 sessions, signed Records.

TP-469 Feature 23. A case turns it on with a ``controller`` step::

    - controller: {e2e_security: {payload_security: TLS12, certificate: good}}

``payload_security``: ``TLS12`` (a TLS12 session context, below) or
``PLAINTEXT`` (no session context: every no_session_context Record the
Controller sends is signed with ``ECDSA_P256_SHA256_ASN1`` and
``sender_cert``, R-E2E.29 / R-E2E.31, as over an MTP that does not protect
Record integrity, TP-469 3.2). Other keys: ``certificate`` (``good``,
``wrong-san``, ``expired``, ``untrusted-ca``: what the controller presents in
the TLS handshake and in ``sender_cert``), ``send_alert`` (once the agent's
certificate is in, answer its handshake with a fatal alert instead of the
controller's next flight, TP-469 3.5),
``bad_signature`` (corrupt the ``mac_signature`` of every Record sent, 3.3).
``controller: {e2e_renegotiate: true}`` asks the agent for a TLS renegotiation
in place of a payload (3.6). Setting ``e2e_security`` back to None (the runner
restores it when the case ends) closes the session with a DisconnectRecord;
until that Record is out, everything else the Controller sends waits
(:func:`settle`), so the agent never forgets a session that started after it
(a new case's ClientHello overtaking the previous case's DisconnectRecord).

While it is on, the Controller's ``send`` goes through a
:class:`conformance.usp.secure_session.SecuredSession` (the controller is the
TLS client of sessions it starts and the TLS server of sessions the agent
starts), and the agent's session_context Records come here: their Msgs are
decrypted and stored as usual (so ``send`` expectations match responses), and
the timeline gets what the case checks with ``expect_mtp`` (``mtp``: the
run's MTP, ``direction: in``):

* ``e2e.tls``: one per TLS12 Record from the agent: ``session_id``,
  ``sequence_id``, ``content_types``, ``handshake``, ``certificate_sans``,
  ``certificate_request``, ``alerts`` (see
  :func:`conformance.usp.e2e_tls.describe_tls`; an alert the controller could
  decrypt is named), ``method`` (``hmac``, ``signature`` or ``none``) and
  ``integrity`` (``ok`` or why the check failed);
* ``e2e.session_start``: the agent started a session context (``session_id``);
* ``e2e.established`` / ``e2e.failed`` (``reason``, ``alert``).

:class:`E2EPki` is the run's E2E PKI: a CA the agent trusts, the agent's
credential and the controller credentials (good and broken ones).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conformance.mtp.binding import BindingClosed, InboundRecord
from conformance.usp import e2e_tls, records, secure_session
from conformance.usp.metrics import Violation, check_msg
from conformance.usp.schema import Msg, PayloadSecurity, Record

if TYPE_CHECKING:
    from conformance.agent.e2e_security import E2EMaterial
    from conformance.controller.controller import Controller

CERTIFICATES = ("good", "wrong-san", "expired", "untrusted-ca")
SETTINGS = ("payload_security", "certificate", "send_alert", "bad_signature")
#: how long a closing Controller waits for DisconnectRecords still going out
_CLOSE_TIMEOUT = 5.0


@dataclass
class E2EPki:
    """The E2E PKI of a run: the CA the agent trusts and the agent's credential."""

    ca: Any
    agent: Any
    _issued: dict[tuple[str, str], secure_session.Credentials] = field(default_factory=dict)

    @classmethod
    def make(cls, agent_id: str) -> E2EPki:
        from conformance.mtp import pki

        ca = pki.make_ca("usp-conformance E2E CA")
        return cls(ca, pki.issue(ca, endpoint_id=agent_id))

    def agent_material(self, *, mtp_protects_integrity: bool = True) -> E2EMaterial:
        """What the reference agent needs (conformance.agent.e2e_security)."""
        from conformance.agent.e2e_security import E2EMaterial

        return E2EMaterial(self.agent.cert, self.agent.key, tuple(self.agent.chain),
                           (self.ca.cert,), mtp_protects_integrity=mtp_protects_integrity)

    def controller(self, endpoint_id: str, certificate: str = "good") -> secure_session.Credentials:
        """A controller credential: ``good`` or one of the broken variants."""
        from conformance.mtp import pki

        if certificate not in CERTIFICATES:
            raise ValueError(f"certificate must be one of {', '.join(CERTIFICATES)}")
        key = (endpoint_id, certificate)
        if key not in self._issued:
            ca = self.ca
            now = _dt.datetime.now(_dt.UTC)
            if certificate == "untrusted-ca":
                ca = pki.make_ca("an E2E CA the agent does not trust")
            if certificate == "wrong-san":
                cred = pki.issue(ca, endpoint_id=pki.wrong_endpoint_id(endpoint_id))
            elif certificate == "expired":
                cred = pki.issue(ca, endpoint_id=endpoint_id,
                                 not_before=now - _dt.timedelta(days=30),
                                 not_after=now - _dt.timedelta(days=1))
            else:
                cred = pki.issue(ca, endpoint_id=endpoint_id)
            self._issued[key] = secure_session.Credentials(
                cred.cert, cred.key, tuple(cred.chain), (self.ca.cert,))
        return self._issued[key]


class ControllerE2E:
    """One Controller's TLS12 session context with its agent."""

    def __init__(self, ctrl: Controller, pki: E2EPki, settings: Mapping[str, Any]) -> None:
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ValueError(f"e2e_security: unknown key(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(SETTINGS)}")
        security = str(settings.get("payload_security", "TLS12")).upper()
        if security not in ("TLS12", "PLAINTEXT"):
            raise ValueError("e2e_security: payload_security must be TLS12 or PLAINTEXT")
        #: PLAINTEXT: signed no_session_context Records, no session context
        self.plaintext = security == "PLAINTEXT"
        self.ctrl = ctrl
        self.agent_id = ctrl.default_agent
        self.settings = dict(settings)
        creds = pki.controller(ctrl.endpoint_id, str(settings.get("certificate", "good")))
        policy = secure_session.SecurityPolicy(
            verify="never",   # judged below and reported, never silently dropped
            restart_on_failure=False, allow_renegotiation=True,
            answer_with_alert=bool(settings.get("send_alert", False)))
        self.session = secure_session.SecuredSession(ctrl.endpoint_id, self.agent_id, creds,
                                                     policy=policy, rng=ctrl._rng)
        self._agent_sessions: set[int] = set()
        #: set when the session is given up: nothing of it is sent any more
        self.closed = False
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._timer())

    # --- controller hooks ------------------------------------------------------------------

    def claims(self, rec: Record) -> bool:
        """Whether a Record from the agent belongs to this session."""
        return not self.plaintext and rec.from_id == self.agent_id \
            and records.record_kind(rec) == "session_context"

    async def send(self, msg: Msg) -> None:
        if self.plaintext:  # R-E2E.29: a signed no_session_context Record
            rec = records.no_session_record(msg, to_id=self.agent_id,
                                            from_id=self.ctrl.endpoint_id,
                                            version=self.ctrl.usp_version)
            rec = self.session.protect(rec)
            await self._send_records([rec], msg)
            return
        outcome = self.session.send(msg.SerializeToString(), now=time.monotonic())
        await self._transmit(outcome, msg)

    async def renegotiate(self) -> None:
        if self.plaintext:
            raise ValueError("e2e_renegotiate needs payload_security TLS12")
        await self._transmit(self.session.renegotiate(now=time.monotonic()))

    def set_send_alert(self, on: bool) -> None:
        from dataclasses import replace

        self.session.policy = replace(self.session.policy, answer_with_alert=on)
        self.settings["send_alert"] = on

    def on_record(self, rec: Record, inbound: InboundRecord, violations: list[Violation]) -> None:
        from conformance.controller.controller import Received

        sc = rec.session_context
        fresh = sc.sequence_id == 1 and sc.session_id not in self._agent_sessions \
            and sc.session_id != self.session.session_id
        self._agent_sessions.add(sc.session_id)
        if fresh:
            self._event("e2e.session_start", inbound, {"session_id": sc.session_id})
        integrity = self._integrity(rec)
        outcome = self.session.receive(rec, now=time.monotonic())
        view = {"session_id": sc.session_id, "sequence_id": sc.sequence_id,
                "payload_security": PayloadSecurity.Name(rec.payload_security)
                if rec.payload_security in PayloadSecurity.values() else rec.payload_security,
                "method": _method(rec), "integrity": integrity,
                **e2e_tls.describe_tls([bytes(p) for p in sc.payload])}
        if outcome.alert:
            view["alerts"] = [outcome.alert if a == "encrypted" else a for a in view["alerts"]]
        self._event("e2e.tls", inbound, view)
        if outcome.established:
            peer = self.session.channel.peer_certificate if self.session.channel else None
            self._event("e2e.established", inbound, {
                "peer_sans": e2e_tls.certificate_sans(peer) if peer is not None else []})
        if outcome.failure:
            self._event("e2e.failed", inbound, {"reason": outcome.failure,
                                                "alert": outcome.alert or ""})
        stored = False
        plain: list[bytes] = []
        if rec.payload_security != PayloadSecurity.TLS12:
            # A PLAINTEXT answer in a TLS session (R-E2E.19 broken): decoded for the verdict.
            plain = [bytes(p) for p in sc.payload]
        for payload in [*outcome.messages, *plain]:
            try:
                msg = records.parse_msg(payload)
            except records.MsgDecodeError as exc:
                self.ctrl._store(Received(rec, None, inbound, [
                    *violations, Violation(2, "R-ENC.0", "record.payload", str(exc))]))
            else:
                self.ctrl._store(Received(rec, msg, inbound, [*violations, *check_msg(msg)]))
            stored = True
        if not stored:
            self.ctrl._store(Received(rec, None, inbound, list(violations)))
        if outcome.records:
            self.ctrl._spawn(self._send_records(outcome.records))
        self._wake.set()

    async def stop(self) -> None:
        """Give the session up without telling the agent: its timer is cancelled and
        awaited, and Records of it still queued are dropped."""
        self.closed = True
        self._task.cancel()
        await asyncio.wait([self._task])

    async def close(self) -> None:
        """End the session: stop it, tell the agent with a DisconnectRecord (R-MTP.7: the
        agent forgets the session context, so no retry of it reaches a later case)."""
        await self.stop()
        if self.plaintext:  # no session context to end
            return
        try:
            await self.ctrl.send_record(records.disconnect_record(
                to_id=self.agent_id, from_id=self.ctrl.endpoint_id,
                reason="E2E session closed by the test controller"), to=self.agent_id)
        except (BindingClosed, ConnectionError, LookupError):
            pass

    # --- internals ----------------------------------------------------------------------------

    def _integrity(self, rec: Record) -> str:
        """The controller's judgement of the agent's Record integrity (R-E2E.30 ff.)."""
        sc = rec.session_context
        channel = self.session.channel
        key = channel.peer_mac_key if (channel is not None
                                       and sc.session_id == self.session.session_id) else None
        if _method(rec) == "hmac":
            if key is None:
                return "MAC before the TLS handshake completed"
            return e2e_tls.verify_mac(rec, key) or "ok"
        if _method(rec) == "signature":
            if key is not None:
                return "signature instead of the MAC after the TLS handshake"
            return e2e_tls.verify_signature(rec, trust=self.session.credentials.trust,
                                            expected_id=self.agent_id) or "ok"
        return "no mac_signature"

    async def _transmit(self, outcome: secure_session.SecureOutcome, msg: Msg | None = None) -> None:
        await self._send_records(outcome.records, msg)
        self._wake.set()

    async def _send_records(self, recs: list[Record], msg: Msg | None = None) -> None:
        await settle(self.ctrl)  # an earlier session's DisconnectRecord first
        for rec in recs:
            if self.closed:  # given up meanwhile: the agent has forgotten the session
                return
            if self.settings.get("bad_signature") and rec.mac_signature:
                rec.mac_signature = bytes([rec.mac_signature[0] ^ 0xFF]) + rec.mac_signature[1:]
            await self.ctrl.send_record(rec, to=self.agent_id, msg=msg)

    async def _timer(self) -> None:
        while True:
            deadline = self.session.next_deadline()
            self._wake.clear()
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
            outcome = self.session.poll(time.monotonic())
            try:
                await self._send_records(outcome.records)
            except (BindingClosed, ConnectionError, LookupError):
                pass

    def _event(self, kind: str, inbound: InboundRecord, decoded: dict[str, Any]) -> None:
        if self.ctrl.timeline is not None:
            self.ctrl.timeline.record(kind, direction="in", mtp=inbound.mtp,
                                      conn_id=inbound.conn_id, decoded=decoded,
                                      note=self.ctrl.endpoint_id)


def _method(rec: Record) -> str:
    if not rec.mac_signature:
        return "none"
    return "signature" if rec.sender_cert else "hmac"


def apply(ctrl: Controller, value: Mapping[str, Any] | None) -> None:
    """Apply a case's ``e2e_security`` value to ``ctrl`` (None: back to no E2E security).

    A change of ``send_alert`` alone keeps the running session; anything else
    closes it (DisconnectRecord) and starts over on the next ``send``.
    """
    old: ControllerE2E | None = getattr(ctrl, "e2e", None)
    if old is not None and value:
        same = {k: v for k, v in old.settings.items() if k != "send_alert"}
        if same == {k: v for k, v in dict(value).items() if k != "send_alert"}:
            old.set_send_alert(bool(value.get("send_alert", False)))
            return
    if old is not None:
        ctrl.e2e = None
        old.closed = True
        task = asyncio.get_running_loop().create_task(old.close())
        ctrl.e2e_closing.add(task)
        task.add_done_callback(ctrl.e2e_closing.discard)
    if value:
        pki = getattr(ctrl, "e2e_pki", None)
        if pki is None:
            raise ValueError("this run has no E2E PKI (the EUT's E2E trust anchors and the "
                             "controller's E2E certificate)")
        ctrl.e2e = ControllerE2E(ctrl, pki, value)


async def settle(ctrl: Controller) -> None:
    """Wait until the DisconnectRecords of closed E2E sessions are out (a closing task
    itself does not wait)."""
    pending = {t for t in ctrl.e2e_closing if t is not asyncio.current_task()}
    if pending and asyncio.current_task() not in ctrl.e2e_closing:
        await asyncio.wait(pending)


async def shutdown(ctrl: Controller) -> None:
    """The Controller is closing: finish pending closes, stop the running session's
    timer (no DisconnectRecord: the MTP is going away)."""
    pending = set(ctrl.e2e_closing)
    if pending:
        _done, late = await asyncio.wait(pending, timeout=_CLOSE_TIMEOUT)
        for task in late:  # an MTP that no longer moves: give the DisconnectRecord up
            task.cancel()
        if late:
            await asyncio.wait(late)
    e2e: ControllerE2E | None = getattr(ctrl, "e2e", None)
    ctrl.e2e = None
    if e2e is not None:
        await e2e.stop()


def renegotiate(ctrl: Controller) -> None:
    """Ask the agent for a TLS renegotiation on the running E2E session (TP-469 3.6)."""
    e2e: ControllerE2E | None = getattr(ctrl, "e2e", None)
    if e2e is None or e2e.plaintext:
        raise ValueError("e2e_renegotiate needs an E2E TLS session (e2e_security first)")
    ctrl._spawn(e2e.renegotiate())
