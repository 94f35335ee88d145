"""The reference Agent driven by the reference Controller over every MTP.

In-process runs (AgentRuntime) over MQTT 5.0/3.1.1, STOMP, WebSocket (both
roles) and UDS, with mutual TLS where the MTP has it; FactoryReset() and
persistence across a restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conformance.agent.config import AgentConfig
from conformance.agent.runtime import AgentRuntime, tls_material
from conformance.controller.controller import Controller
from conformance.mtp import pki
from conformance.mtp.mqtt.broker import MQTTBroker
from conformance.mtp.stomp.broker import STOMPBroker
from conformance.mtp.timeline import Timeline
from conformance.mtp.uds.server import UDSServer
from conformance.mtp.websocket.client import WSClient
from conformance.mtp.websocket.server import WSServer
from conformance.usp import messages

AGENT, CTRL = "os::012345-0001", "proto::controller-1"
STEP = 15.0


def _config(tmp_path: Path, values: dict[str, str], **kw) -> AgentConfig:
    return AgentConfig(state_dir=tmp_path / "state", extra_values=values, **kw)


@pytest.fixture(scope="module")
def pkis(tmp_path_factory):
    """A test PKI written to disk: the agent reads PEM files like a real device."""
    d = tmp_path_factory.mktemp("pki")
    ca = pki.make_ca("agent-test CA")
    agent = pki.issue(ca, endpoint_id=AGENT, ips=["127.0.0.1"])
    ctrl = pki.issue(ca, endpoint_id=CTRL, ips=["127.0.0.1"])
    files = pki.write_pem(d, "agent", agent)
    cafiles = pki.write_pem(d, "ca", ca)
    return {"ca": ca, "ctrl": ctrl, "agent_cert": Path(files.cert), "agent_key": Path(files.key),
            "trust": Path(cafiles.cert)}


def _tls_config(tmp_path, values, pkis) -> tuple[AgentConfig, object]:
    cfg = _config(tmp_path, values, certificate=pkis["agent_cert"], private_key=pkis["agent_key"],
                  trust=pkis["trust"])
    return cfg, tls_material(cfg.certificate, cfg.private_key, cfg.trust)


async def _exercise(ctrl: Controller, connect_kind: str) -> None:
    """Connect Record, Get, Add a ValueChange subscription, Set, Notify, NotifyResp."""
    hello = await ctrl.connect_record(connect_kind, timeout=STEP)
    assert hello.record.from_id == AGENT and hello.violations == []
    resp = await ctrl.request(messages.request("get", {"param_paths": ["Device.DeviceInfo."]}))
    params = resp.body.response.get_resp.req_path_results[0].resolved_path_results[0].result_params
    assert params["Manufacturer"] == "usp-conformance"
    add = await ctrl.request(messages.request("add", {"create_objs": [{
        "obj_path": "Device.LocalAgent.Subscription.",
        "param_settings": [{"param": "ID", "value": "vc"}, {"param": "Enable", "value": True},
                           {"param": "NotifType", "value": "ValueChange"},
                           {"param": "NotifRetry", "value": True},
                           {"param": "ReferenceList",
                            "value": "Device.LocalAgent.Controller.1.PeriodicNotifInterval"}]}]}))
    assert add.body.response.add_resp.created_obj_results[0].oper_status.oper_success.instantiated_path
    mark = ctrl.mark
    await ctrl.request(messages.request("set", {"update_objs": [{
        "obj_path": "Device.LocalAgent.Controller.1.",
        "param_settings": [{"param": "PeriodicNotifInterval", "value": "7200"}]}]}))
    note = await ctrl.notification(since=mark)
    change = note.msg.body.request.notify
    assert (change.subscription_id, change.send_resp) == ("vc", True)
    assert change.value_change.param_value == "7200"
    assert all(not r.violations for r in ctrl.received), [r.violations for r in ctrl.received]


@pytest.mark.parametrize("version", ["5.0", "3.1.1"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mtls"])
def test_agent_over_mqtt(tmp_path, pkis, version, tls):
    async def main():
        tl = Timeline()
        sctx = pki.ssl_context("server", pkis["ctrl"], trust=[pkis["ca"]]) if tls else None
        async with await MQTTBroker(timeline=tl, ssl_context=sctx).start() as broker:
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(broker.attach_controller(CTRL, "usp/controller"), agent_id=AGENT)
            values = {"Device.MQTT.Client.1.BrokerPort": broker.port,
                      "Device.MQTT.Client.1.Enable": "true",
                      "Device.MQTT.Client.1.ProtocolVersion": version,
                      "Device.LocalAgent.MTP.1.Enable": "true"}
            if tls:
                values["Device.MQTT.Client.1.TransportProtocol"] = "TLS"
                cfg, material = _tls_config(tmp_path, {k: str(v) for k, v in values.items()}, pkis)
            else:
                cfg, material = _config(tmp_path, {k: str(v) for k, v in values.items()}), None
            runtime = await AgentRuntime(cfg, tls=material).start()
            try:
                await _exercise(ctrl, "mqtt_connect")
                if tls:
                    done = await tl.expect("tls.handshake_done", within=STEP, direction="in")
                    assert done.decoded["peer_endpoint_ids"] == [AGENT]
            finally:
                await runtime.stop()
                await ctrl.close()
            # R-MTP.7: a DisconnectRecord before the agent closed its MTP.
            assert any(r.record is not None and r.record.WhichOneof("record_type") == "disconnect"
                       for r in ctrl.received)
    asyncio.run(main())


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mtls"])
def test_agent_over_stomp(tmp_path, pkis, tls):
    async def main():
        tl = Timeline()
        sctx = pki.ssl_context("server", pkis["ctrl"], trust=[pkis["ca"]]) if tls else None
        async with await STOMPBroker(timeline=tl, ssl_context=sctx).start() as broker:
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(broker.attach_controller(CTRL, "/queue/controller"), agent_id=AGENT)
            values = {"Device.STOMP.Connection.1.Port": str(broker.port),
                      "Device.STOMP.Connection.1.Enable": "true",
                      "Device.STOMP.Connection.1.EnableEncryption": "true" if tls else "false",
                      "Device.LocalAgent.MTP.2.Enable": "true",
                      "Device.LocalAgent.Controller.1.MTP.2.Enable": "true"}
            cfg, material = _tls_config(tmp_path, values, pkis) if tls else (
                _config(tmp_path, values), None)
            runtime = await AgentRuntime(cfg, tls=material).start()
            try:
                await _exercise(ctrl, "stomp_connect")
                sends = tl.filter(kind="stomp.SEND", direction="in")
                assert sends and not tl.filter(kind="stomp.violation")
            finally:
                await runtime.stop()
                await ctrl.close()
    asyncio.run(main())


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mtls"])
def test_agent_as_websocket_client(tmp_path, pkis, tls):
    async def main():
        tl = Timeline()
        sctx = pki.ssl_context("server", pkis["ctrl"], trust=[pkis["ca"]]) if tls else None
        async with await WSServer(CTRL, timeline=tl, ssl_context=sctx).start() as server:
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(server.binding, agent_id=AGENT)
            values = {"Device.LocalAgent.MTP.3.Enable": "true",
                      "Device.LocalAgent.MTP.3.WebSocket.Port": "0",
                      "Device.LocalAgent.Controller.1.MTP.3.Enable": "true",
                      "Device.LocalAgent.Controller.1.MTP.3.WebSocket.Port": str(server.port),
                      "Device.LocalAgent.Controller.1.MTP.3.WebSocket.EnableEncryption":
                          "true" if tls else "false"}
            cfg, material = _tls_config(tmp_path, values, pkis) if tls else (
                _config(tmp_path, values), None)
            runtime = await AgentRuntime(cfg, tls=material).start()
            try:
                await _exercise(ctrl, "websocket_connect")
            finally:
                await runtime.stop()
                await ctrl.close()
    asyncio.run(main())


def test_agent_as_websocket_server(tmp_path):
    """The controller connects to the agent's WS server (the quoted eid extension answer)."""
    async def main():
        tl = Timeline()
        values = {"Device.LocalAgent.MTP.3.Enable": "true",
                  "Device.LocalAgent.MTP.3.WebSocket.Port": "0"}
        runtime = await AgentRuntime(_config(tmp_path, values)).start()
        ws = next(m for m in runtime.mtps if m.name == "websocket")
        await ws.wait_for(lambda: ws.port or None, timeout=STEP, what="the agent's WS server")
        client = WSClient("127.0.0.1", ws.port, "/usp", eid=CTRL, timeline=tl)
        try:
            await client.connect()
            assert client.agent_eid == AGENT
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(client.binding, agent_id=AGENT)
            await _exercise(ctrl, "websocket_connect")
        finally:
            await client.close()
            await runtime.stop()
    asyncio.run(main())


def test_agent_over_uds(tmp_path):
    async def main():
        tl = Timeline()
        path = str(tmp_path / "usp.sock")
        async with await UDSServer(path, CTRL, timeline=tl).start() as server:
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(server.binding, agent_id=AGENT)
            values = {"Device.UnixDomainSockets.UnixDomainSocket.1.Path": path,
                      "Device.LocalAgent.MTP.4.Enable": "true",
                      "Device.LocalAgent.Controller.1.MTP.4.Enable": "true"}
            runtime = await AgentRuntime(_config(tmp_path, values)).start()
            try:
                await _exercise(ctrl, "uds_connect")
            finally:
                await runtime.stop()
                await ctrl.close()
    asyncio.run(main())


def test_factory_reset_and_persistence(tmp_path):
    """State persists across a restart; FactoryReset() rebuilds the factory model."""
    async def main():
        tl = Timeline()
        async with await STOMPBroker(timeline=tl).start() as broker:
            values = {"Device.STOMP.Connection.1.Port": str(broker.port),
                      "Device.STOMP.Connection.1.Enable": "true",
                      "Device.LocalAgent.MTP.2.Enable": "true",
                      "Device.LocalAgent.Controller.1.MTP.2.Enable": "true"}
            cfg = _config(tmp_path, values)
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(broker.attach_controller(CTRL, "/queue/controller"), agent_id=AGENT)
            runtime = await AgentRuntime(cfg).start()
            await ctrl.connect_record("stomp_connect")
            await ctrl.request(messages.request("set", {"update_objs": [{
                "obj_path": "Device.LocalAgent.Controller.1.",
                "param_settings": [{"param": "PeriodicNotifInterval", "value": "4242"}]}]}))
            await runtime.stop()
            assert runtime.boot_cause == "LocalFactoryReset"
            # A new life of the agent: the value survived, the cause is a local reboot.
            mark = ctrl.mark
            runtime = await AgentRuntime(cfg).start()
            await ctrl.connect_record("stomp_connect", since=mark)
            got = await ctrl.request(messages.request("get", {"param_paths": [
                "Device.LocalAgent.Controller.1.PeriodicNotifInterval"]}))
            res = got.body.response.get_resp.req_path_results[0].resolved_path_results[0]
            assert res.result_params["PeriodicNotifInterval"] == "4242"
            await ctrl.request(messages.request("operate", {"command": "Device.FactoryReset()",
                                                            "send_resp": True}))
            assert await asyncio.wait_for(runtime.run(), STEP) == "reboot"
            mark = ctrl.mark
            runtime = await AgentRuntime(cfg).start()
            assert runtime.boot_cause == "RemoteFactoryReset"
            await ctrl.connect_record("stomp_connect", since=mark)
            got = await ctrl.request(messages.request("get", {"param_paths": [
                "Device.LocalAgent.Controller.1.PeriodicNotifInterval"]}))
            res = got.body.response.get_resp.req_path_results[0].resolved_path_results[0]
            assert res.result_params["PeriodicNotifInterval"] == "86400"  # factory value
            await runtime.stop()
            await ctrl.close()
    asyncio.run(main())


def test_session_context_and_untrusted_controller(tmp_path):
    """E2E session context end to end (R-E2E.*) and an unknown controller getting the
    Untrusted role (R-SEC.*): it may read the agent but not change it."""
    from conformance.usp.session import SessionConfig

    async def main():
        tl = Timeline()
        async with await STOMPBroker(timeline=tl).start() as broker:
            values = {"Device.STOMP.Connection.1.Port": str(broker.port),
                      "Device.STOMP.Connection.1.Enable": "true",
                      "Device.LocalAgent.MTP.2.Enable": "true",
                      "Device.LocalAgent.Controller.1.MTP.2.Enable": "true"}
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(broker.attach_controller(CTRL, "/queue/controller"), agent_id=AGENT)
            stranger = Controller("proto::stranger", timeline=tl, default_timeout=STEP)
            sb = broker.attach_controller("proto::stranger", "/queue/stranger")
            stranger.attach(sb, agent_id=AGENT)
            runtime = await AgentRuntime(_config(tmp_path, values)).start()
            try:
                await ctrl.connect_record("stomp_connect")
                ctx = ctrl.use_session_context(AGENT, SessionConfig(max_record_size=600))
                resp = await ctrl.request(messages.request("get", {"param_paths": [
                    "Device.LocalAgent.", "Device.DeviceInfo."]}))
                assert len(resp.body.response.get_resp.req_path_results) == 2
                assert ctx.session_id is not None
                kinds = {e.decoded.split("]")[0] for e in tl.filter(kind="usp.record", direction="in")}
                assert "Record[session_context" in kinds  # answered inside the session (R-MSG.0a)
                ctrl.drop_session_context(AGENT)
                # The stranger: readable DeviceInfo, no writes.
                read = await stranger.request(messages.request("get", {"param_paths": [
                    "Device.DeviceInfo.SoftwareVersion"]}))
                res = read.body.response.get_resp.req_path_results[0]
                assert res.err_code == 0 and res.resolved_path_results
                denied = await stranger.request(messages.request("set", {"update_objs": [{
                    "obj_path": "Device.LocalAgent.Controller.1.",
                    "param_settings": [{"param": "PeriodicNotifInterval", "value": "5",
                                        "required": True}]}]}))
                assert denied.body.WhichOneof("msg_body") == "error"
                assert 7006 in {denied.body.error.err_code,
                                *(p.err_code for p in denied.body.error.param_errs)}
                ok = await ctrl.request(messages.request("set", {"update_objs": [{
                    "obj_path": "Device.LocalAgent.Controller.1.",
                    "param_settings": [{"param": "PeriodicNotifInterval", "value": "5"}]}]}))
                assert ok.body.WhichOneof("msg_body") == "response"
            finally:
                await runtime.stop()
                await ctrl.close()
                await stranger.close()
    asyncio.run(main())
