"""The reference agent's E2E security (conformance.agent.e2e_security) through AgentCore.

R-E2E.19, .23, .29-.31, .41; TP-469 2.7, 3.2, 3.13. The TLS session faults are
exercised end to end in tests/controller/test_e2e_session.py.
"""

from __future__ import annotations

import pytest

from conformance.agent.context import AgentState
from conformance.agent.core import AgentCore
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.store import Store
from conformance.agent.e2e_security import E2ESecurity, material_from_files
from conformance.agent.faults import FaultSet
from conformance.controller.e2e_session import E2EPki
from conformance.usp import e2e_tls, messages, records, secure_session
from conformance.usp.schema import PayloadSecurity

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"


@pytest.fixture(scope="module")
def pki() -> E2EPki:
    return E2EPki.make(AGENT)


def _core(pki: E2EPki, *faults: str, protected: bool = True) -> AgentCore:
    state = AgentState(AGENT, load_definitions(), Store(load_definitions()),
                       faults=FaultSet(faults))
    core = AgentCore(state)
    core.e2e = E2ESecurity(state, pki.agent_material(mtp_protects_integrity=protected))
    return core


def _get_record(**security: object) -> records.Record:
    msg = messages.request("get", {"param_paths": ["Device.LocalAgent.EndpointID"]},
                           msg_id="g1")
    rec = records.no_session_record(msg, to_id=AGENT, from_id=CTRL)
    for name, value in security.items():
        setattr(rec, name, value)
    return rec


def _send(core: AgentCore, rec: records.Record) -> list[records.Record]:
    return core.handle_record(records.serialize(rec), now=0.0)


def test_bad_signature_is_ignored(pki: E2EPki) -> None:
    """TP-469 2.7 / R-E2E.30: a Record whose mac_signature fails gets no answer."""
    rec = _get_record(mac_signature=b"\x30\x06\x02\x01\x01\x02\x01\x01")
    assert _send(_core(pki), rec) == []
    assert len(_send(_core(pki, "e2e.accepts_bad_signature"), rec)) == 1


def test_forged_signature_with_real_certificate_is_ignored(pki: E2EPki) -> None:
    """R-E2E.31: sender_cert of the controller, signature over other fields."""
    creds = pki.controller(CTRL)
    rec = _get_record()
    e2e_tls.sign_record(rec, creds.cert, creds.key)
    assert len(_send(_core(pki), rec)) == 1  # a good signature passes
    rec.version = "1.3"
    assert _send(_core(pki), rec) == []


def test_signature_must_name_the_sender(pki: E2EPki) -> None:
    """R-E2E.31: the sender certificate of another Endpoint ID does not count."""
    creds = pki.controller(CTRL, "wrong-san")
    rec = _get_record()
    e2e_tls.sign_record(rec, creds.cert, creds.key)
    assert _send(_core(pki), rec) == []


def test_unprotected_mtp_needs_signatures(pki: E2EPki) -> None:
    """TP-469 3.2 / R-E2E.30: without MTP integrity an unsigned Record is ignored;
    signed ones are answered with a signed Record (R-E2E.29)."""
    assert _send(_core(pki, protected=False), _get_record()) == []
    assert len(_send(_core(pki, "e2e.trusts_unprotected_mtp", protected=False),
                     _get_record())) == 1
    creds = pki.controller(CTRL)
    rec = _get_record()
    e2e_tls.sign_record(rec, creds.cert, creds.key)
    out = _send(_core(pki, protected=False), rec)
    assert len(out) == 1
    assert e2e_tls.verify_signature(out[0], trust=[pki.ca.cert], expected_id=AGENT) is None


def test_unsigned_records_pass_when_mtp_protects(pki: E2EPki) -> None:
    """R-E2E.28/.30: the default run treats the MTP as protecting integrity."""
    assert len(_send(_core(pki), _get_record())) == 1


def test_tls12_outside_session_is_ignored(pki: E2EPki) -> None:
    """R-E2E.41: TLS12 payload security only inside session contexts."""
    assert _send(_core(pki), _get_record(payload_security=PayloadSecurity.TLS12)) == []


def test_plaintext_session_still_works(pki: E2EPki) -> None:
    """A PLAINTEXT session context is left to the core's session machinery."""
    msg = messages.request("get", {"param_paths": ["Device.LocalAgent.EndpointID"]},
                           msg_id="s1")
    rec = records.session_record(to_id=AGENT, from_id=CTRL, session_id=5, sequence_id=1,
                                 expected_id=1, payloads=[msg.SerializeToString()])
    out = _send(_core(pki), rec)
    assert any(r.payload_security == PayloadSecurity.PLAINTEXT and r.session_context.payload
               for r in out)


def test_material_from_files(pki: E2EPki) -> None:
    material = material_from_files(pki.agent.fullchain_pem(), pki.agent.key_pem(),
                                   pki.ca.trust_pem(), mtp_protects_integrity=False)
    assert material.cert == pki.agent.cert and material.trust == (pki.ca.cert,)
    assert material.mtp_protects_integrity is False


def _tls_session(pki: E2EPki, core: AgentCore, *, alert: bool = False,
                 now: float = 0.0) -> secure_session.SecuredSession:
    """A controller-side SecuredSession that opened a TLS12 session with ``core``."""
    ctrl = secure_session.SecuredSession(
        CTRL, AGENT, pki.controller(CTRL),
        policy=secure_session.SecurityPolicy(verify="never", restart_on_failure=False,
                                             answer_with_alert=alert))
    msg = messages.request("get", {"param_paths": ["Device.LocalAgent.EndpointID"]},
                           msg_id="tls1")
    queue = list(ctrl.send(msg.SerializeToString(), now=now).records)
    while queue:
        for reply in core.handle_record(records.serialize(queue.pop(0)), now=now):
            queue += ctrl.receive(reply, now=now).records
    return ctrl


def _e2e_object(core: AgentCore) -> str:
    store = core.state.store
    inst = store.add("Device.LocalAgent.Controller.", {"EndpointID": CTRL})
    return inst + "E2ESession."


def test_tls_session_follows_e2esession_retry_parameters(pki: E2EPki) -> None:
    """TP-469 3.5 / R-E2E.10: after a failed handshake the restart waits within
    [m, m.k/1000] of the Controller's E2ESession.SessionRetry* values, also when they
    change while the session runs."""
    core = _core(pki)
    e2e_obj = _e2e_object(core)
    store = core.state.store
    store.set(e2e_obj + "SessionRetryMinimumWaitInterval", "30")
    store.set(e2e_obj + "SessionRetryIntervalMultiplier", "1000")
    _tls_session(pki, core, alert=True)  # the handshake fails on the controller's alert
    secured = core.e2e.sessions[CTRL]
    assert secured.channel is None
    deadline = core.session_deadline()
    assert deadline is not None and 30.0 <= deadline <= 30.0 + 1e-6
    # a change applies to the running session (the next wait drawn)
    store.set(e2e_obj + "SessionRetryMinimumWaitInterval", "2")
    store.set(e2e_obj + "SessionRetryIntervalMultiplier", "1500")
    core.session_poll(1.0)
    assert secured.ctx.config.retry_minimum_wait_interval == 2
    assert secured.ctx.config.retry_interval_multiplier == 1500
    restarted = core.session_poll(30.0)[CTRL]
    assert restarted and all(r.payload_security == PayloadSecurity.TLS12 for r in restarted)


def test_no_retry_wait_fault_restarts_at_once(pki: E2EPki) -> None:
    """Fault e2e.no_retry_wait (TP-469 3.5): the new session is announced with no wait."""
    core = _core(pki, "e2e.no_retry_wait")
    ctrl = secure_session.SecuredSession(
        CTRL, AGENT, pki.controller(CTRL),
        policy=secure_session.SecurityPolicy(verify="never", restart_on_failure=False,
                                             answer_with_alert=True))
    msg = messages.request("get", {"param_paths": ["Device.LocalAgent.EndpointID"]},
                           msg_id="tls2")
    hello = ctrl.send(msg.SerializeToString(), now=0).records
    flight = _send(core, hello[0])
    alert = ctrl.receive(flight[0], now=0).records
    restart = _send(core, alert[0])
    assert restart and restart[0].session_context.session_id != hello[0].session_context.session_id


def test_disconnect_ends_tls_session_and_its_retries(pki: E2EPki) -> None:
    """R-MTP.7: a DisconnectRecord from the controller drops its TLS session, so the
    restart pending after a failure never comes (a later case starts clean)."""
    core = _core(pki)
    _tls_session(pki, core, alert=True)
    assert CTRL in core.e2e.sessions and core.session_deadline() is not None
    bye = records.disconnect_record(to_id=AGENT, from_id=CTRL, reason="done")
    assert _send(core, bye) == []
    assert CTRL not in core.e2e.sessions
    assert core.session_deadline() is None
    assert core.session_poll(100.0) == {}


def test_working_tls_session_answers(pki: E2EPki) -> None:
    """R-E2E.41: a Get inside the TLS12 session is answered in it."""
    core = _core(pki)
    ctrl = _tls_session(pki, core)
    assert ctrl.established and core.e2e.sessions[CTRL].established
