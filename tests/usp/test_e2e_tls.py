"""conformance.usp.e2e_tls and secure_session: Record integrity and TLS12 payloads (R-E2E.28-.43)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.mtp import pki
from conformance.usp import e2e_tls, records, secure_session
from conformance.usp.schema import PayloadSecurity, Record

AGENT, CTRL = "os::agent-1", "proto::ctrl-1"


@pytest.fixture(scope="module")
def ca() -> pki.CA:
    return pki.make_ca("test E2E CA")


@pytest.fixture(scope="module")
def agent(ca: pki.CA) -> pki.Credential:
    return pki.issue(ca, endpoint_id=AGENT)


@pytest.fixture(scope="module")
def ctrl(ca: pki.CA) -> pki.Credential:
    return pki.issue(ca, endpoint_id=CTRL)


def _session_rec(**kw: int) -> Record:
    return records.session_record(to_id=AGENT, from_id=CTRL, session_id=kw.get("sid", 7),
                                  sequence_id=kw.get("seq", 1), expected_id=kw.get("exp", 1),
                                  payloads=[b"payload"])


def test_integrity_input_layout() -> None:
    """R-E2E.32 / R-E2E.32.1: field order, big-endian ints, payload and MAC left out."""
    rec = _session_rec(sid=2, seq=3, exp=4)
    rec.payload_security = PayloadSecurity.TLS12
    rec.mac_signature = b"ignored"
    rec.sender_cert = b"CERT"
    expected = (b"1.4" + AGENT.encode() + CTRL.encode() + struct.pack(">I", 1) + b"CERT"
                + struct.pack(">QQQQ", 2, 3, 4, 0) + struct.pack(">II", 0, 0))
    assert e2e_tls.integrity_input(rec) == expected
    rec.session_context.payload.append(b"more")
    assert e2e_tls.integrity_input(rec) == expected  # payload is not covered
    plain = records.no_session_record(b"x", to_id=AGENT, from_id=CTRL)
    assert e2e_tls.integrity_input(plain).endswith(struct.pack(">I", 0))


def test_signature_round_trip_and_tampering(ca: pki.CA, ctrl: pki.Credential) -> None:
    """R-E2E.31: ECDSA P-256 SHA-256 with sender_cert; any field change breaks it."""
    rec = _session_rec()
    e2e_tls.sign_record(rec, ctrl.cert, ctrl.key)
    assert rec.sender_cert.startswith(b"-----BEGIN CERTIFICATE-----")
    assert e2e_tls.verify_signature(rec, trust=[ca.cert], expected_id=CTRL) is None
    assert "SAN" in (e2e_tls.verify_signature(rec, expected_id="proto::other") or "")
    other = pki.make_ca("other CA")
    assert "trust anchors" in (e2e_tls.verify_signature(rec, trust=[other.cert]) or "")
    rec.session_context.sequence_id = 2
    assert e2e_tls.verify_signature(rec) is not None
    unsigned = _session_rec()
    assert e2e_tls.verify_signature(unsigned) == "no mac_signature"
    unsigned.mac_signature = b"\x30\x01"
    assert e2e_tls.verify_signature(unsigned) == "no sender_cert"


def test_sign_needs_p256(ca: pki.CA) -> None:
    rsa_cred = pki.issue(ca, endpoint_id=CTRL, key_type="rsa")
    with pytest.raises(e2e_tls.E2EError):
        e2e_tls.sign_record(_session_rec(), rsa_cred.cert, rsa_cred.key)
    rec = _session_rec()
    rec.sender_cert = rsa_cred.cert_pem()
    rec.mac_signature = b"\x30\x00"
    assert "P-256" in (e2e_tls.verify_signature(rec) or "")


def test_mac_round_trip() -> None:
    """R-E2E.33: HMAC-SHA256 over the non-payload fields."""
    rec = _session_rec()
    e2e_tls.mac_record(rec, b"k" * 32)
    assert len(rec.mac_signature) == 32
    assert e2e_tls.verify_mac(rec, b"k" * 32) is None
    assert e2e_tls.verify_mac(rec, b"j" * 32) is not None
    rec.session_context.payload.append(b"not covered")
    assert e2e_tls.verify_mac(rec, b"k" * 32) is None
    rec.to_id = "os::elsewhere"
    assert e2e_tls.verify_mac(rec, b"k" * 32) is not None
    assert e2e_tls.verify_mac(_session_rec(), b"k" * 32) == "no mac_signature"


def test_split_and_describe() -> None:
    alert = bytes([21, 3, 3, 0, 2, 2, 40])
    recs, rest = e2e_tls.split_tls_records(alert + alert[:3])
    assert recs == [alert] and rest == alert[:3]
    info = e2e_tls.describe_tls([alert])
    assert info["content_types"] == ["alert"] and info["alerts"] == ["handshake_failure"]
    assert e2e_tls.describe_tls([b"\x00"])["malformed"] is True


def _handshake(client: e2e_tls.TLSChannel, server: e2e_tls.TLSChannel) -> list[dict]:
    seen = []
    out = client.start().out
    for _ in range(6):
        if not out:
            break
        result = server.receive(out)
        seen.append(e2e_tls.describe_tls(result.out))
        client, server, out = server, client, result.out
    return seen


def test_tls_channel_handshake_keys_and_data(ca: pki.CA, agent: pki.Credential,
                                            ctrl: pki.Credential) -> None:
    """R-E2E.36-.40, .43: TLS 1.2 mutual auth, exporter keys shared, data both ways."""
    cli = e2e_tls.TLSChannel("client", ctrl.cert, ctrl.key, trust=[ca.cert], peer_id=AGENT)
    srv = e2e_tls.TLSChannel("server", agent.cert, agent.key, trust=[ca.cert], peer_id=CTRL)
    flights = _handshake(cli, srv)
    assert flights[0]["certificate_request"] and flights[0]["certificate_sans"] == [
        f"urn:bbf:usp:id:{AGENT}"]
    assert cli.established and srv.established
    assert cli.keys() == srv.keys() and len(cli.keys()[0]) == 32  # type: ignore[index]
    assert cli.local_mac_key == srv.peer_mac_key != cli.peer_mac_key
    got = srv.receive(cli.send(b"msg").out)
    assert got.messages == [b"msg"]


def test_tls_channel_rejects_wrong_san(ca: pki.CA, agent: pki.Credential) -> None:
    """R-E2E.43 / TP-469 3.7: a controller certificate naming someone else."""
    wrong = pki.issue(ca, endpoint_id="proto::wrong")
    cli = e2e_tls.TLSChannel("client", wrong.cert, wrong.key, trust=[ca.cert], peer_id=AGENT)
    srv = e2e_tls.TLSChannel("server", agent.cert, agent.key, trust=[ca.cert], peer_id=CTRL)
    flights = _handshake(cli, srv)
    assert "alert" in flights[2]["content_types"]  # the server answers the certificate
    assert srv.failure and "SAN" in srv.failure and not srv.established


def test_renegotiation_refused(ca: pki.CA, agent: pki.Credential, ctrl: pki.Credential) -> None:
    """R-E2E.42: the server answers a renegotiation with an alert and stays usable."""
    cli = e2e_tls.TLSChannel("client", ctrl.cert, ctrl.key, trust=[ca.cert], peer_id=AGENT,
                             allow_renegotiation=True)
    srv = e2e_tls.TLSChannel("server", agent.cert, agent.key, trust=[ca.cert], peer_id=CTRL)
    _handshake(cli, srv)
    refused = srv.receive(cli.renegotiate().out)
    assert refused.renegotiation_refused and refused.failure is None
    assert cli.receive(refused.out).alert == "no_renegotiation"
    assert srv.send(b"still").failure is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_hostile_bytes_never_raise(data: bytes) -> None:
    """Never crash on hostile input: a reason or a failure, nothing raised."""
    e2e_tls.describe_tls([data])
    e2e_tls.split_tls_records(data)
    rec = _session_rec()
    rec.mac_signature = data
    rec.sender_cert = data
    assert e2e_tls.verify_signature(rec) is not None
    assert e2e_tls.verify_mac(rec, b"k" * 32) is not None or len(data) == 32


_SERVER: dict[str, e2e_tls.TLSChannel] = {}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=3))
def test_channel_survives_garbage(payloads: list[bytes]) -> None:
    ca = pki.make_ca("g") if "ca" not in _SERVER else None
    if ca is not None:
        cred = pki.issue(ca, endpoint_id=AGENT)
        _SERVER["ca"] = e2e_tls.TLSChannel("server", cred.cert, cred.key)
        _SERVER["cred"] = cred  # type: ignore[assignment]
    cred = _SERVER["cred"]  # type: ignore[assignment]
    srv = e2e_tls.TLSChannel("server", cred.cert, cred.key)  # type: ignore[attr-defined]
    result = srv.receive(payloads)
    assert isinstance(result, e2e_tls.TLSResult)


def test_secured_sessions_talk(ca: pki.CA, agent: pki.Credential, ctrl: pki.Credential) -> None:
    """SecuredSession: signatures before the handshake, MACs after (R-E2E.30)."""
    creds_a = secure_session.Credentials(agent.cert, agent.key, trust=(ca.cert,))
    creds_c = secure_session.Credentials(ctrl.cert, ctrl.key, trust=(ca.cert,))
    a = secure_session.SecuredSession(AGENT, CTRL, creds_a)
    c = secure_session.SecuredSession(CTRL, AGENT, creds_c)
    queue = [(a, r) for r in c.send(b"GET", now=0).records]
    got: list[bytes] = []
    methods = []
    while queue:
        dst, rec = queue.pop(0)
        methods.append("hmac" if rec.mac_signature and not rec.sender_cert else "sig")
        assert rec.payload_security == PayloadSecurity.TLS12  # R-E2E.18
        outcome = dst.receive(rec, now=0)
        assert outcome.rejected is None, outcome.rejected
        peer = c if dst is a else a
        queue += [(peer, r) for r in outcome.records]
        for m in outcome.messages:
            got.append(m)
            if dst is a:
                queue += [(c, r) for r in a.send(b"RESP", now=0).records]
    assert got == [b"GET", b"RESP"]
    assert methods[0] == "sig" and methods[-1] == "hmac"
    # R-E2E.19: a PLAINTEXT Record inside the TLS session fails and restarts it
    plain = records.session_record(to_id=AGENT, from_id=CTRL, session_id=a.session_id or 0,
                                   sequence_id=9, expected_id=1, payloads=[b"x"])
    outcome = a.receive(plain, now=0)
    assert outcome.rejected and "R-E2E.19" in outcome.rejected
    assert a.channel is None


def _pump(queue: list[tuple[secure_session.SecuredSession, Record]],
          peer_of: dict[int, secure_session.SecuredSession], now: float,
          seen: list[tuple[str, secure_session.SecureOutcome]]) -> None:
    """Deliver Records until both sides are quiet; record each receiver's outcome."""
    while queue:
        dst, rec = queue.pop(0)
        outcome = dst.receive(rec, now=now)
        seen.append((dst.local_id, outcome))
        queue += [(peer_of[id(dst)], r) for r in outcome.records]


def _alert_pair(ca: pki.CA, agent: pki.Credential, ctrl: pki.Credential,
                ) -> tuple[secure_session.SecuredSession, secure_session.SecuredSession,
                           dict[int, secure_session.SecuredSession]]:
    from conformance.usp.session import SessionConfig

    cfg = SessionConfig(retry_minimum_wait_interval=2, retry_interval_multiplier=1500)
    a = secure_session.SecuredSession(
        AGENT, CTRL, secure_session.Credentials(agent.cert, agent.key, trust=(ca.cert,)), cfg)
    c = secure_session.SecuredSession(
        CTRL, AGENT, secure_session.Credentials(ctrl.cert, ctrl.key, trust=(ca.cert,)),
        policy=secure_session.SecurityPolicy(verify="never", restart_on_failure=False,
                                             answer_with_alert=True))
    return a, c, {id(a): c, id(c): a}


def _alerts(outcome: secure_session.SecureOutcome) -> list[str]:
    return e2e_tls.describe_tls([bytes(p) for r in outcome.records
                                 for p in r.session_context.payload])["alerts"]


def test_answer_with_alert_as_client(ca: pki.CA, agent: pki.Credential,
                                     ctrl: pki.Credential) -> None:
    """TP-469 3.5: the failing client sends its ClientHello, then a fatal alert instead
    of its certificate flight; the agent's TLS fails and it restarts only after the
    R-E2E.10 wait (m = 2 s, k = 1500: 2 to 3 s)."""
    a, c, peer_of = _alert_pair(ca, agent, ctrl)
    started = c.send(b"GET", now=0)
    assert e2e_tls.describe_tls([bytes(p) for r in started.records
                                 for p in r.session_context.payload])["handshake"] == [
        "client_hello"]
    seen: list[tuple[str, secure_session.SecureOutcome]] = []
    _pump([(a, r) for r in started.records], peer_of, 0.0, seen)
    ctrl_outcomes = [o for who, o in seen if who == CTRL]
    assert ctrl_outcomes[0].failure and _alerts(ctrl_outcomes[0]) == ["handshake_failure"]
    agent_failure = [o for who, o in seen if who == AGENT and o.failure]
    assert agent_failure and not agent_failure[0].records  # nothing at once (R-E2E.10)
    deadline = a.next_deadline()
    assert deadline is not None and 2.0 <= deadline <= 3.0
    assert not a.poll(1.9).records
    restarted = a.poll(deadline)
    assert restarted.session_started and restarted.records  # announcement and ClientHello


def test_answer_with_alert_as_server(ca: pki.CA, agent: pki.Credential,
                                     ctrl: pki.Credential) -> None:
    """TP-469 3.5: in a session the agent starts, the failing server answers the
    agent's certificate flight with a fatal alert instead of its Finished."""
    a, c, peer_of = _alert_pair(ca, agent, ctrl)
    started = a.start(now=0)
    seen: list[tuple[str, secure_session.SecureOutcome]] = []
    _pump([(c, r) for r in started.records], peer_of, 0.0, seen)
    ctrl_outcomes = [o for who, o in seen if who == CTRL]
    failed = [o for o in ctrl_outcomes if o.failure]
    assert len(failed) == 1 and _alerts(failed[0]) == ["handshake_failure"]
    assert not any(o.established for o in ctrl_outcomes)
    # the agent's flight before the alert carried its client certificate
    agent_flights = [e2e_tls.describe_tls([bytes(p) for r in o.records
                                           for p in r.session_context.payload])
                     for who, o in seen if who == AGENT]
    assert any("certificate" in f["handshake"] for f in agent_flights)
    assert any(o.failure for who, o in seen if who == AGENT)
    assert not a.established and a.next_deadline() is not None
