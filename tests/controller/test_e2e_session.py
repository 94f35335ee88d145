"""End to end: the suite Controller and the reference agent in a TLS12 session context.

TP-469 Feature 23 (3.3-3.7, 3.13) over an in-memory binding: the Controller's
``e2e_security`` mode (conformance.controller.e2e_session) against AgentCore
with E2ESecurity (conformance.agent.e2e_security).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from conformance.agent.context import AgentState
from conformance.agent.core import AgentCore
from conformance.agent.datamodel import load_definitions
from conformance.agent.datamodel.store import Store
from conformance.agent.e2e_security import E2ESecurity
from conformance.agent.faults import FaultSet
from conformance.controller.controller import Controller
from conformance.controller.e2e_session import E2EPki
from conformance.mtp.binding import Binding, InboundRecord
from conformance.mtp.timeline import Timeline
from conformance.usp import e2e_tls, messages, records
from conformance.usp.schema import PayloadSecurity

AGENT, CTRL = "os::012345-AGENT", "proto::controller-1"


class Loopback(Binding):
    """Records from the controller go straight into the agent core, answers come back."""

    mtp = "mqtt"

    def __init__(self, core: AgentCore) -> None:
        super().__init__()
        self.core = core
        self.agent_out: list = []

    async def send(self, data: bytes, *, to_id: str) -> None:
        for rec in self.core.handle_record(data, now=time.monotonic()):
            self._back(rec)

    def _back(self, rec) -> None:
        self.agent_out.append(rec)
        self.deliver(InboundRecord(records.serialize(rec), "mqtt", "c1", time.monotonic()))

    def poll(self, now: float) -> None:
        for recs in self.core.session_poll(now).values():
            for rec in recs:
                self._back(rec)

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def pki() -> E2EPki:
    return E2EPki.make(AGENT)


def _setup(pki: E2EPki, *faults: str) -> tuple[Controller, Loopback, Timeline]:
    state = AgentState(AGENT, load_definitions(), Store(load_definitions()),
                       faults=FaultSet(faults))
    core = AgentCore(state)
    core.e2e = E2ESecurity(state, pki.agent_material())
    timeline = Timeline()
    ctrl = Controller(CTRL, timeline=timeline)
    binding = Loopback(core)
    ctrl.attach(binding, agent_id=AGENT)
    ctrl.e2e_pki = pki
    return ctrl, binding, timeline


def _get(msg_id: str) -> object:
    return messages.request("get", {"param_paths": ["Device.LocalAgent.EndpointID"]},
                            msg_id=msg_id)


def _events(timeline: Timeline, kind: str) -> list[dict]:
    return [e.decoded for e in timeline.filter(kind, direction="in")]


def test_get_over_tls12_session_is_answered_with_macs(pki: E2EPki) -> None:
    """R-E2E.33/.39/.41, TP-469 3.4: a Get inside the TLS session; the agent MACs."""
    async def run() -> None:
        ctrl, binding, timeline = _setup(pki)
        ctrl.e2e_security = {"payload_security": "TLS12", "certificate": "good"}
        reply = await ctrl.request(_get("t1"), timeout=5)
        assert reply.body.response.get_resp.req_path_results[0].resolved_path_results
        tls = _events(timeline, "e2e.tls")
        assert tls[0]["certificate_sans"] == [f"urn:bbf:usp:id:{AGENT}"]  # R-E2E.43
        assert tls[0]["certificate_request"] is True                        # mutual auth
        assert all(e["integrity"] == "ok" for e in tls)
        assert tls[-1]["method"] == "hmac" and tls[0]["method"] == "signature"
        assert all(r.payload_security == PayloadSecurity.TLS12 for r in binding.agent_out)
        assert _events(timeline, "e2e.established")[0]["peer_sans"] == [
            f"urn:bbf:usp:id:{AGENT}"]
        ctrl.e2e_security = None
        await ctrl.close()
    asyncio.run(run())


def test_no_mac_fault_leaves_mac_out(pki: E2EPki) -> None:
    """Fault e2e.no_mac (TP-469 3.4): the response Record has no mac_signature."""
    async def run() -> None:
        ctrl, _binding, timeline = _setup(pki, "e2e.no_mac")
        ctrl.e2e_security = {"payload_security": "TLS12"}
        await ctrl.request(_get("t2"), timeout=5)
        assert _events(timeline, "e2e.tls")[-1]["method"] == "none"
        await ctrl.close()
    asyncio.run(run())


@pytest.mark.parametrize("certificate", ["wrong-san", "expired", "untrusted-ca"])
def test_bad_controller_certificate_gets_an_alert(pki: E2EPki, certificate: str) -> None:
    """R-E2E.43, TP-469 3.7/3.5: the agent refuses the certificate with a TLS alert."""
    async def run() -> None:
        ctrl, _binding, timeline = _setup(pki)
        ctrl.e2e_security = {"payload_security": "TLS12", "certificate": certificate}
        msg_id = await ctrl.send(_get("t3"))
        with pytest.raises(TimeoutError):
            await ctrl.response(msg_id, timeout=0.5)
        tls = _events(timeline, "e2e.tls")
        assert "alert" in tls[-1]["content_types"]
        assert _events(timeline, "e2e.failed")
        await ctrl.close()
    asyncio.run(run())


def test_wrong_san_accepted_with_fault(pki: E2EPki) -> None:
    """Fault e2e.accepts_wrong_san (TP-469 3.7): the handshake completes."""
    async def run() -> None:
        ctrl, _binding, _timeline = _setup(pki, "e2e.accepts_wrong_san")
        ctrl.e2e_security = {"payload_security": "TLS12", "certificate": "wrong-san"}
        await ctrl.request(_get("t4"), timeout=5)
        await ctrl.close()
    asyncio.run(run())


@pytest.mark.parametrize("fault", [None, "e2e.accepts_bad_handshake_signature"])
def test_client_hello_with_bad_signature(pki: E2EPki, fault: str | None) -> None:
    """R-E2E.31, TP-469 3.3: a ClientHello Record with a broken signature is ignored."""
    async def run() -> None:
        ctrl, _binding, timeline = _setup(pki, *([fault] if fault else []))
        ctrl.e2e_security = {"payload_security": "TLS12", "bad_signature": True}
        await ctrl.send(_get("t5"))
        await asyncio.sleep(0)
        answered = bool(_events(timeline, "e2e.tls"))
        assert answered is (fault is not None)
        await ctrl.close()
    asyncio.run(run())


@pytest.mark.parametrize("fault", [None, "e2e.accepts_renegotiation"])
def test_renegotiation_is_refused(pki: E2EPki, fault: str | None) -> None:
    """R-E2E.42, TP-469 3.6: no_renegotiation alert, no new handshake."""
    async def run() -> None:
        ctrl, _binding, timeline = _setup(pki, *([fault] if fault else []))
        ctrl.e2e_security = {"payload_security": "TLS12"}
        await ctrl.request(_get("t6"), timeout=5)
        before = len(_events(timeline, "e2e.tls"))
        ctrl.e2e_renegotiate = True
        for _ in range(5):
            await asyncio.sleep(0)
        after = _events(timeline, "e2e.tls")[before:]
        assert after
        if fault is None:
            assert after[0]["content_types"] == ["alert"]
            assert after[0]["alerts"] == ["no_renegotiation"]
        else:
            assert "handshake" in after[0]["content_types"]
        await ctrl.close()
    asyncio.run(run())


def test_plaintext_record_in_tls_session_fails_and_session_restarts(pki: E2EPki) -> None:
    """R-E2E.19, TP-469 3.13: no answer to a PLAINTEXT payload; a new session follows."""
    async def run() -> None:
        ctrl, binding, timeline = _setup(pki)
        ctrl.e2e_security = {"payload_security": "TLS12"}
        await ctrl.request(_get("t7"), timeout=5)
        sid = ctrl.e2e.session.session_id
        plain = records.session_record(
            to_id=AGENT, from_id=CTRL, session_id=sid, sequence_id=50, expected_id=1,
            payloads=[_get("t8").SerializeToString()])
        count = len(binding.agent_out)
        await ctrl.send_record(plain, to=AGENT)
        assert len(binding.agent_out) == count  # nothing answered (R-E2E.23)
        # the restart is announced after the retry wait (R-E2E.10: 5-10 s by default)
        binding.poll(time.monotonic() + 11)
        starts = _events(timeline, "e2e.session_start")
        assert starts and starts[-1]["session_id"] != sid
        await ctrl.close()
    asyncio.run(run())


def test_handshake_alert_then_agent_retries_after_wait(pki: E2EPki) -> None:
    """R-E2E.10/.21, TP-469 3.5: after a failed handshake the agent starts a new session
    (as TLS client) only after the retry wait, and a good handshake then completes."""
    async def run() -> None:
        ctrl, binding, timeline = _setup(pki)
        ctrl.e2e_security = {"payload_security": "TLS12", "send_alert": True}
        await ctrl.send(_get("t9"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert _events(timeline, "e2e.tls")
        now = time.monotonic()
        binding.poll(now + 4.0)
        assert not _events(timeline, "e2e.session_start")  # not before m = 5 s
        ctrl.e2e_security = {"payload_security": "TLS12", "send_alert": False}
        binding.poll(now + 10.5)
        for _ in range(10):
            await asyncio.sleep(0)
        assert _events(timeline, "e2e.session_start")
        assert _events(timeline, "e2e.established")
        await ctrl.close()
    asyncio.run(run())


def _spy(binding: Loopback) -> list[str]:
    """The kinds of the Records the controller sends through ``binding``, in order."""
    sent: list[str] = []
    original = binding.send

    async def spy(data: bytes, *, to_id: str) -> None:
        sent.append(records.record_kind(records.parse_record(data)) or "")
        await original(data, to_id=to_id)

    binding.send = spy  # type: ignore[method-assign]
    return sent


def test_new_session_after_close_waits_for_the_disconnect(pki: E2EPki) -> None:
    """R-MTP.7: when one case's E2E session is closed and the next case opens another at
    once, the DisconnectRecord reaches the agent before the new ClientHello, so the agent
    does not forget the new session (the bug: a second Feature-23 case on the same agent
    got no response)."""
    async def run() -> None:
        ctrl, binding, _timeline = _setup(pki)
        sent = _spy(binding)
        ctrl.e2e_security = {"payload_security": "TLS12"}
        await ctrl.request(_get("n1"), timeout=5)
        first = ctrl.e2e
        ctrl.e2e_security = None           # the runner restores the setting ...
        ctrl.e2e_security = {"payload_security": "TLS12"}  # ... the next case sets it again
        reply = await ctrl.request(_get("n2"), timeout=5)
        assert reply.body.response.get_resp.req_path_results
        assert first._task.done()          # the old timer was cancelled and awaited
        bye = sent.index("disconnect")
        assert sent[bye + 1:] and all(k == "session_context" for k in sent[bye + 1:])
        assert not ctrl.e2e_closing
        await ctrl.close()
    asyncio.run(run())


def test_close_awaits_the_timer_task(pki: E2EPki) -> None:
    """Controller.close stops the E2E timer task and waits for it (no task left pending)."""
    async def run() -> None:
        ctrl, _binding, _timeline = _setup(pki)
        ctrl.e2e_security = {"payload_security": "TLS12"}
        await ctrl.request(_get("c1"), timeout=5)
        e2e = ctrl.e2e
        ctrl.e2e_security = {"payload_security": "TLS12", "certificate": "expired"}
        closing = set(ctrl.e2e_closing)
        current = ctrl.e2e
        await ctrl.close()
        assert e2e._task.done() and current._task.done() and ctrl.e2e is None
        assert all(t.done() for t in closing) and not ctrl.e2e_closing
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not [t for t in others if not t.done()]
    asyncio.run(run())


def test_plaintext_mode_signs_records(pki: E2EPki) -> None:
    """TP-469 3.2 / R-E2E.29-.31: over an MTP that does not protect integrity the agent
    ignores an unsigned Get and answers one the controller signed (PLAINTEXT mode)."""
    async def run() -> None:
        state = AgentState(AGENT, load_definitions(), Store(load_definitions()),
                           faults=FaultSet(()))
        core = AgentCore(state)
        core.e2e = E2ESecurity(state, pki.agent_material(mtp_protects_integrity=False))
        ctrl = Controller(CTRL, timeline=Timeline())
        binding = Loopback(core)
        ctrl.attach(binding, agent_id=AGENT)
        ctrl.e2e_pki = pki
        sent = _spy(binding)
        msg_id = await ctrl.send(_get("p1"))
        with pytest.raises(TimeoutError):
            await ctrl.response(msg_id, timeout=0.2)
        ctrl.e2e_security = {"payload_security": "PLAINTEXT"}
        reply = await ctrl.request(_get("p2"), timeout=5)
        assert reply.body.response.get_resp.req_path_results
        answer = binding.agent_out[-1]
        assert records.record_kind(answer) == "no_session_context"
        assert e2e_tls.verify_signature(answer, trust=[pki.ca.cert], expected_id=AGENT) is None
        with pytest.raises(ValueError):
            ctrl.e2e_renegotiate = True
        ctrl.e2e_security = None
        await ctrl.close()
        assert sent == ["no_session_context"] * 2  # no session: no DisconnectRecord
    asyncio.run(run())


def test_payload_security_must_be_known(pki: E2EPki) -> None:
    async def run() -> None:
        ctrl, _binding, _timeline = _setup(pki)
        with pytest.raises(ValueError):
            ctrl.e2e_security = {"payload_security": "TLS13"}
        await ctrl.close()
    asyncio.run(run())
