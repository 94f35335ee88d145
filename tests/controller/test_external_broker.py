"""Controller in external-broker mode against Debian's mosquitto and a paho agent.

The agent here is an independent paho-mqtt client that answers Get with a
GetResp and sends a Notify with send_resp; the Controller joins the same
mosquitto broker through :class:`ExternalBrokerBinding`.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conformance.controller.controller import Controller, ControllerTimeout
from conformance.controller.external_broker import BrokerAccount, ExternalBrokerBinding
from conformance.mtp.timeline import Timeline
from conformance.usp import messages, records
from tests.support.tools import mosquitto_broker

CTRL, AGENT = "proto::controller-1", "os::012345-ABC"
CTRL_TOPIC, AGENT_TOPIC = "/usp/controller", "/usp/agent"
STEP = 10.0


class PahoAgent:
    """A tiny agent: Get -> GetResp; on request sends a Notify(send_resp)."""

    def __init__(self, port: int, version: int) -> None:
        self.version = version
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="agent-1",
                                  protocol=mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.notify_resps: list[str] = []
        self.got_notify_resp = threading.Event()
        self.port = port
        self.reply_topic = CTRL_TOPIC

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        self.client.subscribe(AGENT_TOPIC, qos=1)
        assert self.subscribed.wait(STEP)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, msg) -> None:
        rec = records.no_session_record(msg, to_id=CTRL, from_id=AGENT)
        props = None
        if self.version == 5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = AGENT_TOPIC
            props.ContentType = "usp.msg"
        self.client.publish(self.reply_topic, records.serialize(rec), qos=1, properties=props)

    def _on_message(self, client, userdata, message) -> None:
        if self.version == 5:
            self.reply_topic = message.properties.ResponseTopic
        msg = records.unwrap_msg(records.parse_record(message.payload))
        kind = msg.body.WhichOneof("msg_body")
        if kind == "request" and msg.body.request.WhichOneof("req_type") == "get":
            path = msg.body.request.get.param_paths[0]
            self.publish(messages.response("get_resp", {"req_path_results": [{
                "requested_path": path,
                "resolved_path_results": [{"resolved_path": path,
                                           "result_params": {"SoftwareVersion": "1.0"}}]}]},
                msg_id=msg.header.msg_id))
        elif kind == "response":
            self.notify_resps.append(msg.header.msg_id)
            self.got_notify_resp.set()


@pytest.mark.parametrize("version", [5, 4])
def test_controller_round_trip_through_mosquitto(tmp_path, version):
    with mosquitto_broker(tmp_path) as port:
        agent = PahoAgent(port, version)
        agent.start()
        try:
            asyncio.run(_scenario(port, version, agent))
        finally:
            agent.stop()


async def _scenario(port: int, version: int, agent: PahoAgent) -> None:
    tl = Timeline()
    binding = ExternalBrokerBinding(
        BrokerAccount("127.0.0.1", port, client_id="ctrl-1", mqtt_version=version),
        controller_topic=CTRL_TOPIC, agent_topics={AGENT: AGENT_TOPIC}, timeline=tl)
    await binding.start(timeout=STEP)
    assert binding.owns_transport is False  # packet-level MTP checks: not applicable
    sock = binding._client.socket()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
    ctrl.attach(binding, agent_id=AGENT)
    try:
        resp = await ctrl.request(messages.request("get", {"param_paths": ["Device.DeviceInfo."]}))
        result = resp.body.response.get_resp.req_path_results[0]
        assert dict(result.resolved_path_results[0].result_params) == {"SoftwareVersion": "1.0"}
        assert ctrl.received[-1].violations == []
        # A Notify with send_resp gets an automatic NotifyResp with the same msg_id.
        mark = ctrl.mark
        agent.publish(messages.request("notify", {
            "subscription_id": "sub-1", "send_resp": True,
            "event": {"obj_path": "Device.", "event_name": "Boot!"}}, msg_id="n-1"))
        note = await ctrl.notification(since=mark)
        assert note.msg.body.request.notify.subscription_id == "sub-1"
        await tl.expect("mqtt.PUBLISH", within=STEP, direction="out",
                        where=lambda e: e.seq > note.index and e.kind == "mqtt.PUBLISH")
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, agent.got_notify_resp.wait, STEP)
        assert agent.notify_resps == ["n-1"]
        with pytest.raises(ControllerTimeout, match="response to msg_id 'never'"):
            await ctrl.response("never", timeout=0.2)
        kinds = {e.kind for e in tl}
        assert {"usp.record", "mqtt.PUBLISH", "conn.open"} <= kinds
    finally:
        await ctrl.close()


def test_unreachable_external_broker_is_a_clear_error():
    from tests.support.tools import free_port

    async def main():
        binding = ExternalBrokerBinding(BrokerAccount("127.0.0.1", free_port()),
                                        controller_topic=CTRL_TOPIC)
        with pytest.raises(ConnectionError, match="unreachable"):
            await binding.start(timeout=2)
    asyncio.run(main())
