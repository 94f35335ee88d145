"""The ``tls_certificate`` scenario of TLS runs: the suite presents good and bad
certificates to the EUT and puts its own back after the case (TP-469 2.6, 2.8, 4.1;
R-MTP.2, R-MTP.3, R-SEC.0a, R-SEC.2), with the built-in agent over real sockets."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest

from conformance.agent.faults import catalogue
from conformance.cases.environment import (
    TLS_CERTIFICATE_FIELD,
    BuiltinSettings,
    RunEnvironment,
    RunPKI,
    _SuiteSide,
)
from conformance.cases.loader import load_case
from conformance.cases.runner import CaseRunner, SuiteError
from conformance.mtp import pki
from conformance.usp import messages

ROOT = Path(__file__).resolve().parents[2] / "testcases"
CASES = {"4.1": "04-general-mtp/4.1-use-of-x509-certificates-at-the-mtp-layer.yaml",
         "2.6": "02-authentication-and-access-control/2.6-connecting-without-absolute-time.yaml",
         "2.8": "02-authentication-and-access-control/2.8-agent-ignores-invalid-tls-certificate.yaml"}
STEP = 15.0


def settings(mtp: str, **kw: Any) -> BuiltinSettings:
    return BuiltinSettings(mtp=mtp, tls=kw.pop("tls", True), response_timeout=3.0, **kw)


def presented(run: RunEnvironment) -> dict[str, Any]:
    return run.timeline.filter("tls.presented")[-1].decoded  # type: ignore[return-value]


def records_since(run: RunEnvironment, seq: int) -> list[Any]:
    return [e for e in run.timeline.filter("usp.record", direction="in") if e.seq >= seq]


async def get_answered(run: RunEnvironment) -> None:
    primary = run.controllers["primary"]
    msg_id = await primary.send(messages.request("get", {"param_paths": ["Device.DeviceInfo."]}))
    await primary.response(msg_id, timeout=STEP)


def test_run_pki_makes_each_certificate_once() -> None:
    """RunPKI: the suite's own certificate is "good"; the others are made once each."""
    run_pki = RunPKI.make()
    assert run_pki.credential() is run_pki.suite
    expired = run_pki.credential("expired")
    assert run_pki.credential("expired") is expired
    assert pki.validity_status(expired.cert) == "expired"
    assert run_pki.suite_context("client", "wrong-san").verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(pki.PKIError):
        run_pki.credential("rotten")
    material = run_pki.agent_material(absolute_time=False)
    assert material.client is not None
    assert material.client().verify_flags & pki.NO_CHECK_TIME                 # R-MTP.2
    assert material.server is not None
    assert not run_pki.agent_material().server().verify_flags & pki.NO_CHECK_TIME  # type: ignore[misc]


def test_the_suite_side_alone_cannot_make_certificates() -> None:
    """Without the suite's own CA (external EUTs) no other certificate can be presented."""
    side = _SuiteSide("mqtt", "os::x", 1.0)
    with pytest.raises(SuiteError, match="built-in agent"):
        side._tls_context("server", "expired")


def test_mqtt_expired_certificate_refused_then_back() -> None:
    """TP-469 2.8 over MQTT: the suite's broker presents an expired certificate, the EUT
    meets it on its next connection and refuses it (no Record); the reset puts the
    suite's certificate back and waits for the EUT's connect Record (R-MTP.8)."""
    async def main() -> None:
        async with RunEnvironment(settings("mqtt")) as run:
            mark = run.timeline.next_seq
            await run.scenario("any", {TLS_CERTIFICATE_FIELD: "expired"})
            seen = presented(run)
            assert seen["certificate"] == "expired" and seen["role"] == "server"
            assert seen["handshake"] == "failed" and run.presenting == "expired"
            await asyncio.sleep(0.5)
            assert not records_since(run, mark)
            await run.reset_scenarios()
            assert run.presenting == "good" and records_since(run, mark)
            await get_answered(run)
    asyncio.run(main())


def test_stomp_agent_without_absolute_time_accepts_expired() -> None:
    """TP-469 2.6 / R-MTP.2: an agent without absolute time ignores the dates; the
    tls.presented event shows its own certificate (R-SEC.10)."""
    async def main() -> None:
        async with RunEnvironment(settings("stomp", absolute_time=False)) as run:
            assert "no-absolute-time" in run.environment.offers
            await run.scenario("stomp", {TLS_CERTIFICATE_FIELD: "expired"})
            seen = presented(run)
            assert seen["handshake"] == "done"
            assert seen["peer_certificate"]["endpoint_ids"] == [run.agent_id]
            assert seen["peer_certificate"]["status"] == "valid"
            await run.timeline.expect("usp.record", within=STEP, direction="in",
                                      where=lambda e: e.seq > run.timeline.filter(
                                          "tls.presented")[-1].seq)
            await get_answered(run)
            await run.reset_scenarios()
            await get_answered(run)
    asyncio.run(main())


def test_websocket_server_wrong_san_refused_and_redialled() -> None:
    """websocket-server runs: the suite dials the EUT with the certificate as client
    certificate; a Controller certificate naming another Endpoint ID is refused
    (R-SEC.0a, R-SEC.3); after the reset the suite dials with its own again."""
    async def main() -> None:
        async with RunEnvironment(settings("websocket-server")) as run:
            mark = run.timeline.next_seq
            await run.scenario("websocket", {TLS_CERTIFICATE_FIELD: "wrong-san"})
            seen = presented(run)
            assert seen["role"] == "client" and seen["certificate"] == "wrong-san"
            assert not records_since(run, mark)
            await run.reset_scenarios()
            assert records_since(run, mark)
            await get_answered(run)
    asyncio.run(main())


def test_scenario_errors() -> None:
    """Unknown certificates, another MTP's server and runs without TLS are suite errors."""
    async def main() -> None:
        async with RunEnvironment(settings("websocket-server")) as run:
            with pytest.raises(SuiteError, match="choose one of"):
                await run.scenario("any", {TLS_CERTIFICATE_FIELD: "rotten"})
            with pytest.raises(SuiteError, match="this run is over"):
                await run.scenario("mqtt", {TLS_CERTIFICATE_FIELD: "expired"})
            assert run.presenting == "good"
        async with RunEnvironment(settings("mqtt", tls=False)) as run:
            with pytest.raises(SuiteError, match="does not use TLS"):
                await run.scenario("any", {TLS_CERTIFICATE_FIELD: "expired"})
            await run.reset_scenarios()   # nothing to put back
    asyncio.run(main())


def test_case_files_name_registered_faults() -> None:
    """4.1, 2.6 and 2.8 need TLS runs (2.6 also no absolute time) and are killed by
    registered tls.* faults."""
    known = catalogue()
    for case_id, rel in CASES.items():
        case = load_case(ROOT / rel)
        assert case.case_id == case_id and "tls" in case.requires
        assert ("no-absolute-time" in case.requires) == (case_id == "2.6")
        assert case.killed_by and all(f in known and f.startswith("tls.") for f in case.killed_by)


def test_case_2_8_over_websocket_server() -> None:
    """The 2.8 case file end to end against the clean agent (the selftest runs the rest)."""
    async def main() -> None:
        case = load_case(ROOT / CASES["2.8"])
        async with RunEnvironment(settings("websocket-server")) as run:
            result = await CaseRunner(case, run.environment).run()
            assert result.verdict == "pass", result.reason
            assert run.presenting == "good"
            await get_answered(run)
    asyncio.run(main())
