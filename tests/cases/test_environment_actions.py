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
