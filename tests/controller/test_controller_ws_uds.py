"""Reference Controller over WebSocket (aiohttp agents, both roles, mTLS) and UDS."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from conformance.controller.controller import Controller
from conformance.mtp import pki
from conformance.mtp.timeline import Timeline
from conformance.mtp.uds.server import UDSClient, UDSServer
from conformance.mtp.websocket.client import WSClient
from conformance.mtp.websocket.server import WSServer
from conformance.usp import messages, records
from tests.support.echo import AGENT_ID, answer

CTRL = "proto::controller-1"
STEP = 10.0
GET = {"param_paths": ["Device.DeviceInfo."]}


def _assert_echo(resp) -> None:
    res = resp.body.response.get_resp.req_path_results[0].resolved_path_results[0]
    assert dict(res.result_params) == {"SoftwareVersion": "echo-1"}


async def _aiohttp_agent(url: str, ssl_ctx, started: asyncio.Event) -> None:
    """aiohttp client as the agent: WebSocketConnect Record, then answer Gets."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, protocols=("v1.usp",), ssl=ssl_ctx or False,
                                      headers={"Sec-WebSocket-Extensions":
                                               f'bbf-usp-protocol; eid="{AGENT_ID}"'}) as ws:
            hello = records.websocket_connect_record(to_id=CTRL, from_id=AGENT_ID)
            await ws.send_bytes(records.serialize(hello))
            started.set()
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    reply = answer(msg.data)
                    if reply is not None:
                        await ws.send_bytes(reply)
                else:
                    break


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mtls"])
def test_controller_over_ws_server_with_aiohttp_agent(tls):
    async def main():
        tl = Timeline()
        sctx = cctx = None
        if tls:
            ca = pki.make_ca("ws ca")
            sctx = pki.ssl_context("server", pki.issue(ca, endpoint_id=CTRL, ips=["127.0.0.1"]),
                                   trust=[ca])
            cctx = pki.ssl_context("client", pki.issue(ca, endpoint_id=AGENT_ID), trust=[ca])
        async with await WSServer(CTRL, timeline=tl, ssl_context=sctx).start() as server:
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(server.binding, agent_id=AGENT_ID)
            scheme = "wss" if tls else "ws"
            url = f"{scheme}://127.0.0.1:{server.port}/usp?eid={quote(AGENT_ID)}"  # R-WS.10b
            started = asyncio.Event()
            agent = asyncio.create_task(_aiohttp_agent(url, cctx, started))
            try:
                await asyncio.wait_for(started.wait(), STEP)
                await ctrl.connect_record("websocket_connect")
                _assert_echo(await ctrl.request(messages.request("get", GET)))
                assert all(not r.violations for r in ctrl.received)
            finally:
                await ctrl.close()
                await server.close()
                await asyncio.wait_for(agent, STEP)
    asyncio.run(main())


def test_controller_as_ws_client_to_aiohttp_agent_server():
    """The agent is the WS server and answers the quoted eid extension (interop notes)."""
    async def main():
        tl = Timeline()

        async def handler(request):
            ws = web.WebSocketResponse(protocols=("v1.usp",))
            ws.headers["Sec-WebSocket-Extensions"] = f'bbf-usp-protocol; eid="{AGENT_ID}"'
            await ws.prepare(request)
            await ws.send_bytes(records.serialize(
                records.websocket_connect_record(to_id=CTRL, from_id=AGENT_ID)))
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY and (reply := answer(msg.data)):
                    await ws.send_bytes(reply)
            return ws

        app = web.Application()
        app.router.add_get("/usp", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        client = WSClient("127.0.0.1", port, "/usp", eid=CTRL, timeline=tl)
        try:
            await client.connect()
            assert client.agent_eid == AGENT_ID
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(client.binding, agent_id=AGENT_ID)
            await ctrl.connect_record("websocket_connect")
            _assert_echo(await ctrl.request(messages.request("get", GET)))
        finally:
            await client.close()
            await runner.cleanup()
    asyncio.run(main())


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_controller_over_uds(tmp_path, tls):
    """UDS MTP, optionally with TLS over the socket (R-UDS.23a)."""
    async def main():
        tl = Timeline()
        path = str(tmp_path / "usp.sock")
        sctx = cctx = None
        if tls:
            ca = pki.make_ca("uds ca")
            sctx = pki.ssl_context("server", pki.issue(ca, endpoint_id=CTRL), trust=[ca])
            cctx = pki.ssl_context("client", pki.issue(ca, endpoint_id=AGENT_ID), trust=[ca])
        async with await UDSServer(path, CTRL, timeline=tl, ssl_context=sctx).start() as server:
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(server.binding, agent_id=AGENT_ID)
            async with UDSClient(path, AGENT_ID, timeline=tl, ssl_context=cctx) as agent:
                def on_record(inbound):
                    reply = answer(inbound.data)
                    if reply is not None:
                        asyncio.ensure_future(agent.binding.send(reply, to_id=CTRL))

                agent.binding.set_sink(on_record)
                await agent.connect(timeout=STEP)
                await server.wait_for_peer(AGENT_ID, timeout=STEP)
                await agent.wait_for_peer(CTRL, timeout=STEP)
                await agent.binding.send(records.serialize(
                    records.uds_connect_record(to_id=CTRL, from_id=AGENT_ID)), to_id=CTRL)
                await ctrl.connect_record("uds_connect")
                _assert_echo(await ctrl.request(messages.request("get", GET)))
                assert tl.filter(kind="uds.handshake_done")
                if tls:
                    done = tl.filter(kind="tls.handshake_done", direction="in")
                    assert done and done[0].decoded["peer_endpoint_ids"] == [AGENT_ID]
    asyncio.run(main())
