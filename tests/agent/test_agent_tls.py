"""The reference Agent's TLS on its MTPs (conformance.agent.mtp.tls): what it presents and
how it judges the certificate it receives (R-MTP.1..R-MTP.4, R-SEC.0a, R-SEC.2, R-SEC.3,
R-SEC.10, R-SEC.19, R-SEC.20; TP-469 2.6, 2.8, 4.1), with the ``tls.*`` faults."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.config import ConfigError, load_config
from conformance.agent.faults import FaultSet, catalogue
from conformance.agent.mtp import tls as agent_tls
from conformance.agent.mtp.backoff import MQTTRetry
from conformance.agent.mtp.base import ControllerRoute
from conformance.agent.mtp.from_model import TLSMaterial as ModelTLSMaterial
from conformance.agent.mtp.mqtt import MQTTMTP, MQTTClientConfig
from conformance.agent.mtp.websocket import WebSocketMTP, WSServerConfig
from conformance.agent.runtime import tls_material
from conformance.mtp import pki
from conformance.mtp.mqtt.broker import MQTTBroker
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import Connection, Server, open_connection
from conformance.mtp.websocket.client import WSClient, WSHandshakeError
from conformance.usp import messages, records

AGENT = "os::012345-AGENT"
CTRL = "proto::controller-1"
STEP = 5.0
LOOPBACK = ["127.0.0.1"]
TLS_FAULTS = ("tls.accept_expired", "tls.accept_untrusted_ca", "tls.accept_wrong_san",
              "tls.checks_time_without_clock")


@pytest.fixture(scope="module")
def pkis() -> dict[str, Any]:
    """A CA, the agent's credential and every certificate the suite can present."""
    ca = pki.make_ca("agent tls test CA")
    good = pki.issue(ca, endpoint_id=CTRL, ips=LOOPBACK)
    out: dict[str, Any] = {"ca": ca, "agent": pki.issue(ca, endpoint_id=AGENT, ips=LOOPBACK)}
    for name in pki.PRESENTABLE:
        out[name] = pki.presentable(name, ca=ca, good=good, endpoint_id=CTRL, ips=LOOPBACK)
    return out


def faults(*names: str) -> FaultSet:
    return FaultSet(names)


# --------------------------------------------------------------------------- contexts


def test_faults_are_registered() -> None:
    """Each tls.* fault names the requirement it breaks."""
    known = catalogue()
    for name in TLS_FAULTS:
        assert name in known and known[name].requirement.startswith("R-")


def test_client_context_checks_chain_host_and_dates(pkis: dict[str, Any]) -> None:
    """R-SEC.2 (chain), server identity (R-MTP.4), R-MTP.3 (dates with absolute time)."""
    ctx = agent_tls.client_context(pkis["agent"], [pkis["ca"].cert])
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert not ctx.verify_flags & pki.NO_CHECK_TIME
    no_clock = agent_tls.client_context(pkis["agent"], [pkis["ca"].cert], absolute_time=False)
    assert no_clock.verify_flags & pki.NO_CHECK_TIME          # R-MTP.2
    unchecked = agent_tls.client_context(pkis["agent"], [])
    assert unchecked.verify_mode == ssl.CERT_NONE and not unchecked.check_hostname


def test_server_context_requires_a_client_certificate(pkis: dict[str, Any]) -> None:
    """R-MTP.1: the agent's TLS server requires the peer's certificate."""
    ctx = agent_tls.server_context(pkis["agent"], [pkis["ca"].cert])
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert not ctx.verify_flags & pki.NO_CHECK_TIME
    assert agent_tls.server_context(pkis["agent"], [pkis["ca"].cert],
                                    absolute_time=False).verify_flags & pki.NO_CHECK_TIME
    assert agent_tls.server_context(pkis["agent"], []).verify_mode == ssl.CERT_NONE


def test_material_makes_fresh_contexts(pkis: dict[str, Any]) -> None:
    mat = agent_tls.material(pkis["agent"], [pkis["ca"].cert], absolute_time=False)
    assert ModelTLSMaterial is agent_tls.TLSMaterial   # from_model re-exports it
    assert mat.client is not None and mat.server is not None
    first, second = mat.client(), mat.client()
    assert first is not second and first.verify_flags & pki.NO_CHECK_TIME
    assert mat.server().verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("server_side", [False, True])
def test_apply_faults_changes_one_check_each(pkis: dict[str, Any], server_side: bool) -> None:
    """Each tls.* fault turns off exactly the check it names (no fault: nothing changes)."""
    def make(absolute_time: bool = True) -> ssl.SSLContext:
        build = agent_tls.server_context if server_side else agent_tls.client_context
        return build(pkis["agent"], [pkis["ca"].cert], absolute_time=absolute_time)

    clean = agent_tls.apply_faults(make(), faults(), server_side=server_side)
    assert clean.verify_mode == ssl.CERT_REQUIRED and not clean.verify_flags & pki.NO_CHECK_TIME
    expired = agent_tls.apply_faults(make(), faults("tls.accept_expired"), server_side=server_side)
    assert expired.verify_flags & pki.NO_CHECK_TIME and expired.verify_mode == ssl.CERT_REQUIRED
    clock = agent_tls.apply_faults(make(absolute_time=False),
                                   faults("tls.checks_time_without_clock"), server_side=server_side)
    assert not clock.verify_flags & pki.NO_CHECK_TIME
    untrusted = agent_tls.apply_faults(make(), faults("tls.accept_untrusted_ca"),
                                       server_side=server_side)
    assert untrusted.verify_mode == ssl.CERT_NONE
    wrong = agent_tls.apply_faults(make(), faults("tls.accept_wrong_san"), server_side=server_side)
    assert wrong.verify_mode == ssl.CERT_REQUIRED
    assert wrong.check_hostname is False
    # a context that checks nothing is left alone
    none = agent_tls.client_context(pkis["agent"], [])
    assert agent_tls.apply_faults(none, faults(*TLS_FAULTS), server_side=False) is none
    assert none.verify_mode == ssl.CERT_NONE


# --------------------------------------------------------------------------- live handshakes


async def _serve(conn: Connection) -> None:
    await conn.write(b"hi")
    await asyncio.sleep(0.05)


async def _agent_dials(pkis: dict[str, Any], presented: str, *, absolute_time: bool = True,
                       fault_names: tuple[str, ...] = ()) -> bool:
    """Whether the agent's client context completes a handshake with a suite server
    presenting ``presented`` at 127.0.0.1 (the server side records the outcome)."""
    tl = Timeline()
    sctx = pki.ssl_context("server", pkis[presented], trust=[pkis["ca"]])
    server = await Server("t", _serve, ssl_context=sctx, timeline=tl).start_tcp()
    cctx = agent_tls.apply_faults(
        agent_tls.client_context(pkis["agent"], [pkis["ca"].cert], absolute_time=absolute_time),
        faults(*fault_names), server_side=False)
    try:
        async with server:
            try:
                conn = await open_connection("t", "127.0.0.1", server.port, ssl_context=cctx)
            except ConnectionError:
                await tl.expect("tls.handshake_failed", within=STEP, direction="in")
                return False
            await conn.close()
            return True
    finally:
        await server.close()


@pytest.mark.parametrize(("presented", "accepted"), [
    ("good", True), ("expired", False), ("not-yet-valid", False), ("untrusted-ca", False),
    ("wrong-san", False), ("self-signed", False)])
def test_agent_as_client_judges_the_server_certificate(pkis: dict[str, Any], presented: str,
                                                        accepted: bool) -> None:
    """R-SEC.2, R-MTP.3, R-MTP.4 (server identity): only the good certificate is accepted."""
    assert asyncio.run(_agent_dials(pkis, presented)) is accepted


@pytest.mark.parametrize("presented", ["expired", "not-yet-valid"])
def test_agent_without_absolute_time_ignores_dates(pkis: dict[str, Any], presented: str) -> None:
    """R-MTP.2 / R-SEC.19 (TP-469 2.6): dates are ignored, the chain is still checked;
    tls.checks_time_without_clock breaks it."""
    assert asyncio.run(_agent_dials(pkis, presented, absolute_time=False))
    assert not asyncio.run(_agent_dials(pkis, "untrusted-ca", absolute_time=False))
    assert not asyncio.run(_agent_dials(pkis, presented, absolute_time=False,
                                        fault_names=("tls.checks_time_without_clock",)))


@pytest.mark.parametrize(("fault", "presented"), [
    ("tls.accept_expired", "expired"), ("tls.accept_untrusted_ca", "untrusted-ca"),
    ("tls.accept_wrong_san", "wrong-san")])
def test_client_faults_accept_what_they_name(pkis: dict[str, Any], fault: str,
                                             presented: str) -> None:
    """TP-469 2.8 / 4.1 kill faults: each makes the agent accept one bad certificate."""
    assert asyncio.run(_agent_dials(pkis, presented, fault_names=(fault,)))
    if fault != "tls.accept_untrusted_ca":   # the others keep checking the rest
        assert not asyncio.run(_agent_dials(pkis, "untrusted-ca", fault_names=(fault,)))


async def _suite_dials(pkis: dict[str, Any], presented: str | None, *,
                       fault_names: tuple[str, ...] = ()) -> str | None:
    """The agent's TLS server judges a client certificate: the reason the agent's
    side recorded for a failed handshake, or None when it completed."""
    tl = Timeline()
    sctx = agent_tls.apply_faults(agent_tls.server_context(pkis["agent"], [pkis["ca"].cert]),
                                  faults(*fault_names), server_side=True)
    server = await Server("t", _serve, ssl_context=sctx, timeline=tl).start_tcp()
    cred = pkis[presented] if presented else None
    cctx = pki.ssl_context("client", cred, trust=[pkis["ca"]])
    cctx.maximum_version = ssl.TLSVersion.TLSv1_2   # the server's verdict inside the handshake
    try:
        async with server:
            try:
                conn = await open_connection("t", "127.0.0.1", server.port, ssl_context=cctx)
                await conn.close()
            except ConnectionError:
                pass   # the agent refused: its side of the timeline says why
            entry = await tl.expect("tls.handshake_*", within=STEP, direction="in")
            return entry.decoded["reason"] if entry.kind == "tls.handshake_failed" else None
    finally:
        await server.close()


def test_agent_as_server_judges_the_client_certificate(pkis: dict[str, Any]) -> None:
    """R-MTP.1 (a certificate is required), R-SEC.2, R-MTP.3; faults relax one check each."""
    assert asyncio.run(_suite_dials(pkis, "good")) is None
    assert asyncio.run(_suite_dials(pkis, None)) is not None          # R-MTP.1
    assert asyncio.run(_suite_dials(pkis, "expired")) == "CERTIFICATE_VERIFY_FAILED"
    assert asyncio.run(_suite_dials(pkis, "untrusted-ca")) is not None
    assert asyncio.run(_suite_dials(pkis, "expired", fault_names=("tls.accept_expired",))) is None
    assert asyncio.run(_suite_dials(pkis, "untrusted-ca",
                                    fault_names=("tls.accept_untrusted_ca",))) is None


# --------------------------------------------------------------------------- identities


def _conn(*, tls: bool = True, der: bytes | None = b"cert", ids: list[str] | None = None
          ) -> Connection:
    return Connection("c-1", "websocket", None, None, "peer", tls=tls,  # type: ignore[arg-type]
                      peer_cert_der=der, peer_endpoint_ids=list(ids or []))


def test_identity_problem_follows_r_sec_0a() -> None:
    """R-SEC.0a / R-SEC.3: a certificate naming Endpoint IDs must name the Controller;
    a Controller dialling the agent must be named (required)."""
    none = faults()
    assert agent_tls.identity_problem(_conn(ids=[CTRL]), CTRL, none, required=True) is None
    problem = agent_tls.identity_problem(_conn(ids=["proto::other"]), CTRL, none, required=False)
    assert problem is not None and "proto::other" in problem
    assert agent_tls.identity_problem(_conn(ids=[]), CTRL, none, required=False) is None
    assert "no Endpoint ID" in (agent_tls.identity_problem(_conn(ids=[]), CTRL, none,
                                                           required=True) or "")
    assert agent_tls.identity_problem(_conn(tls=False), CTRL, none, required=True) is None
    assert agent_tls.identity_problem(_conn(der=None), CTRL, none, required=True) is None
    assert agent_tls.identity_problem(_conn(ids=["proto::other"]), CTRL,
                                      faults("tls.accept_wrong_san"), required=True) is None


def _record(from_id: str) -> bytes:
    msg = messages.request("get", {"param_paths": ["Device."]}, msg_id="1")
    return records.serialize(records.no_session_record(msg, to_id=AGENT, from_id=from_id))


def test_record_problem_checks_from_id() -> None:
    """R-SEC.0a: a Record whose from_id the certificate does not name is not processed."""
    conn = _conn(ids=[CTRL])
    assert agent_tls.record_problem(conn, _record(CTRL), faults()) is None
    assert "proto::intruder" in (agent_tls.record_problem(conn, _record("proto::intruder"),
                                                          faults()) or "")
    assert agent_tls.record_problem(conn, _record("proto::intruder"),
                                    faults("tls.accept_wrong_san")) is None
    assert agent_tls.record_problem(_conn(ids=[]), _record("proto::x"), faults()) is None
    assert agent_tls.record_problem(_conn(tls=False, ids=[CTRL]), _record("x"), faults()) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_record_problem_never_raises_on_garbage(data: bytes) -> None:
    """Hostile bytes are the MTP's business: no verdict, no exception."""
    problem = agent_tls.record_problem(_conn(ids=[CTRL]), data, faults())
    assert problem is None or "R-SEC.0a" in problem


# --------------------------------------------------------------------------- MTPs


@asynccontextmanager
async def _mqtt(pkis: dict[str, Any], presented: str, fault_names: tuple[str, ...] = ()
                ) -> AsyncIterator[tuple[MQTTBroker, MQTTMTP, Timeline]]:
    tl = Timeline()
    sctx = pki.ssl_context("server", pkis[presented], trust=[pkis["ca"]])
    broker = await MQTTBroker(timeline=tl, ssl_context=sctx).start()
    config = MQTTClientConfig(broker_port=broker.port, retry=MQTTRetry(0.1, 2000, 1))
    agent = MQTTMTP(AGENT, config, controllers=[ControllerRoute(CTRL, "usp/controller")],
                    ssl_context=agent_tls.client_context(pkis["agent"], [pkis["ca"].cert]),
                    timeline=Timeline())
    agent.faults = faults(*fault_names)
    try:
        await agent.start()
        yield broker, agent, tl
    finally:
        await agent.stop()
        await broker.close()


def test_mqtt_client_refuses_an_expired_broker_certificate(pkis: dict[str, Any]) -> None:
    """TP-469 2.8 over MQTT: no session with an expired certificate; tls.accept_expired
    (applied when the MTP starts) makes the agent connect."""
    async def main() -> None:
        async with _mqtt(pkis, "expired") as (broker, agent, tl):
            await tl.expect("tls.handshake_failed", within=STEP, direction="in")
            assert not agent.connected and not broker.clients
        async with _mqtt(pkis, "expired", ("tls.accept_expired",)) as (broker, agent, tl):
            await agent.wait_connected(STEP)
            assert tl.filter("tls.handshake_done", direction="in")
    asyncio.run(main())


@asynccontextmanager
async def _ws_server(pkis: dict[str, Any], fault_names: tuple[str, ...] = ()
                     ) -> AsyncIterator[WebSocketMTP]:
    agent = WebSocketMTP(AGENT, controllers=[ControllerRoute(CTRL, "")],
                         server=WSServerConfig(port=0, path="/usp"),
                         server_ssl_context=agent_tls.server_context(pkis["agent"],
                                                                     [pkis["ca"].cert]),
                         timeline=Timeline())
    agent.faults = faults(*fault_names)
    try:
        await agent.start()
        yield agent
    finally:
        await agent.stop()


async def _dial(pkis: dict[str, Any], agent: WebSocketMTP, presented: str) -> WSClient:
    ctx = pki.ssl_context("client", pkis[presented], trust=[pkis["ca"]])
    return await WSClient("127.0.0.1", agent.port, "/usp", eid=CTRL, ssl_context=ctx,
                          timeline=Timeline()).connect()


def test_websocket_server_refuses_a_controller_named_otherwise(pkis: dict[str, Any]) -> None:
    """R-SEC.0a / R-SEC.3: the eid= Controller must be named by its certificate (403);
    tls.accept_wrong_san lets it in."""
    async def main() -> None:
        async with _ws_server(pkis) as agent:
            client = await _dial(pkis, agent, "good")
            assert client.is_open
            await client.close()
            with pytest.raises(WSHandshakeError) as refused:
                await _dial(pkis, agent, "wrong-san")
            assert refused.value.status == 403
        async with _ws_server(pkis, ("tls.accept_wrong_san",)) as agent:
            client = await _dial(pkis, agent, "wrong-san")
            assert client.is_open
            await client.close()
    asyncio.run(main())


def test_websocket_drops_records_from_another_endpoint(pkis: dict[str, Any]) -> None:
    """R-SEC.0a: a Record whose from_id the client certificate does not name is dropped."""
    async def main() -> None:
        async with _ws_server(pkis) as agent:
            got: list[bytes] = []
            agent.on_record = lambda data, route: got.append(data)
            client = await _dial(pkis, agent, "good")
            await client.binding.send(_record("proto::intruder"), to_id=AGENT)
            await client.binding.send(_record(CTRL), to_id=AGENT)
            async with asyncio.timeout(STEP):
                while not got:
                    await asyncio.sleep(0.01)
            assert [records.parse_record(d).from_id for d in got] == [CTRL]
            assert agent.timeline is not None
            assert agent.timeline.filter("ws.dropped")
            await client.close()
    asyncio.run(main())


# --------------------------------------------------------------------------- configuration


def test_runtime_tls_material_from_files(tmp_path: Path, pkis: dict[str, Any]) -> None:
    """The agent's PEM files: with absolute_time false the contexts ignore dates."""
    files = pki.write_pem(tmp_path, "agent", pkis["agent"])
    (tmp_path / "ca.pem").write_bytes(pkis["ca"].trust_pem())
    mat = tls_material(files.cert, files.key, tmp_path / "ca.pem", absolute_time=False)
    assert mat.client is not None and mat.client().verify_flags & pki.NO_CHECK_TIME
    assert mat.server is not None and mat.server().verify_mode == ssl.CERT_REQUIRED
    assert tls_material(None, None, None).client is None


def test_config_absolute_time(tmp_path: Path) -> None:
    """``absolute_time: false`` in the run configuration (TP-469 2.6); a non-boolean is
    a ConfigError."""
    path = tmp_path / "agent.yaml"
    path.write_text("state_dir: s\nabsolute_time: false\n")
    assert load_config(path).absolute_time is False
    path.write_text("state_dir: s\n")
    assert load_config(path).absolute_time is True
    path.write_text("state_dir: s\nabsolute_time: maybe\n")
    with pytest.raises(ConfigError, match="absolute_time"):
        load_config(path)
