"""Built-in MTP actions of the run environment: close_connection, then the agent
reconnects and the next step still works (over every MTP the agent dials)."""

from __future__ import annotations

import asyncio

import pytest

from conformance.cases.environment import BUILTIN_MTPS, BuiltinSettings, RunEnvironment
from conformance.usp import messages


@pytest.mark.parametrize("mtp", ["mqtt", "stomp", "websocket", "uds"])
def test_close_connection_and_reconnect(mtp):
    async def main():
        async with RunEnvironment(BuiltinSettings(mtp=mtp)) as run:
            env = run.environment
            primary = env.controllers["primary"]
            mark = primary.mark
            await env.actions["close_connection"](None)
            # R-MTP.6/8: a new channel starts with a connect Record.
            await primary.connect_record(BUILTIN_MTPS[mtp], since=mark, timeout=30)
            resp = await primary.request(messages.request(
                "get", {"param_paths": ["Device.LocalAgent.EndpointID"]}), timeout=10)
            assert resp.body.WhichOneof("msg_body") == "response"
    asyncio.run(main())


def test_a_case_needing_a_missing_identity_is_not_applicable(tmp_path):
    """The agent dials one WebSocket server for the primary only: a case acting as the
    secondary controller is skipped (not an error, not an EUT failure) and the selftest
    counts the row as not applicable."""
    from conformance.cases.loader import load_case
    from conformance.cases.runner import CaseRunner
    from conformance.cases.selftest import Row, table

    path = tmp_path / "X-ID-1-secondary.yaml"
    path.write_text(
        "id: X-ID-1\ntitle: t\npurpose: p\nfunctionality: mandatory\nmetrics: {1: m}\n"
        "steps:\n  - send: {get: {param_paths: [Device.LocalAgent.EndpointID]}}\n"
        "    as: secondary\n    expect: {response: {get_resp: {}}, metrics: [1]}\n")
    case = load_case(path)
    assert case.identities == ("primary", "secondary")

    async def main():
        async with RunEnvironment(BuiltinSettings(mtp="websocket")) as run:
            return await CaseRunner(case, run.environment).run()
    result = asyncio.run(main())
    assert result.verdict == "skip"
    assert "acts as the secondary controller, which this run over websocket does not provide" \
        in result.reason
    row = Row("X-ID-1", None, "pass", "skip", None, result.reason)
    assert row.ok and "1 not applicable over this MTP" in table([row])
