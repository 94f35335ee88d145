"""Reference Controller <-> independent MQTT agents through the suite's MQTT broker.

Agents: paho-mqtt (3.1.1 and 5.0, plain and mutual TLS) answering Gets with
the echo core, and Debian's mosquitto_pub publishing a Record by hand.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conformance.controller.controller import Controller
from conformance.mtp import pki
from conformance.mtp.mqtt.broker import MQTTBroker
from conformance.mtp.timeline import Timeline
from conformance.usp import messages, records
from tests.support.echo import AGENT_ID, answer
from tests.support.tools import APT_HINT, require_tool

CTRL = "proto::controller-1"
CTRL_TOPIC, AGENT_TOPIC = "usp/controller", "usp/agent/echo"
STEP = 10.0


class PahoEchoAgent:
    def __init__(self, port: int, version: int, ssl_context=None) -> None:
        self.version = version
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="echo-agent",
                                  protocol=mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311)
        if ssl_context is not None:
            self.client.tls_set_context(ssl_context)
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.port = port

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        # 3.1.1 has no Response Topic: the reply-to rides in the topic name (R-MQTT.24).
        self.client.subscribe(AGENT_TOPIC if self.version == 5 else f"{AGENT_TOPIC}/#", qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish_record(self, data: bytes, topic: str) -> None:
        props = None
        if self.version == 5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = AGENT_TOPIC
            props.ContentType = "usp.msg"
        else:  # 3.1.1: the reply topic rides in the topic name (R-MQTT.24/25)
            topic = f"{topic}/reply-to={AGENT_TOPIC}"
        self.client.publish(topic, data, qos=1, properties=props)

    def _on_message(self, client, userdata, message) -> None:
        reply = answer(message.payload)
        if reply is not None:
            if self.version == 5:
                topic = message.properties.ResponseTopic
            else:  # R-MQTT.25
                topic = message.topic.rpartition("/reply-to=")[2].replace("%2F", "/")
            self.publish_record(reply, topic)


@pytest.mark.parametrize("version", [5, 4], ids=["mqtt5", "mqtt311"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "mtls"])
def test_controller_get_through_our_broker(version, tls):
    async def main():
        tl = Timeline()
        sctx = cctx = None
        if tls:
            ca = pki.make_ca("mqtt ca")
            sctx = pki.ssl_context("server", pki.issue(ca, endpoint_id=CTRL, ips=["127.0.0.1"]),
                                   trust=[ca])
            cctx = pki.ssl_context("client", pki.issue(ca, endpoint_id=AGENT_ID), trust=[ca])
        async with await MQTTBroker(timeline=tl, ssl_context=sctx).start() as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(binding, agent_id=AGENT_ID)
            agent = PahoEchoAgent(broker.port, version, cctx)
            await asyncio.to_thread(agent.start)
            try:
                await broker.wait_for_subscription(
                    lambda client, sub: sub.topic_filter.startswith(AGENT_TOPIC), timeout=STEP)
                hello = records.mqtt_connect_record(
                    to_id=CTRL, from_id=AGENT_ID, mqtt_version=1 if version == 5 else 0,
                    subscribed_topic=AGENT_TOPIC)
                agent.publish_record(records.serialize(hello), CTRL_TOPIC)
                connect = await ctrl.connect_record("mqtt_connect")
                assert connect.record.mqtt_connect.subscribed_topic == AGENT_TOPIC
                binding.set_agent_topic(AGENT_ID, AGENT_TOPIC)
                resp = await ctrl.request(messages.request("get", {"param_paths": ["Device."]}))
                res = resp.body.response.get_resp.req_path_results[0].resolved_path_results[0]
                assert dict(res.result_params) == {"SoftwareVersion": "echo-1"}
                assert all(not r.violations for r in ctrl.received)
                # Every packet of the agent is in the timeline with its raw bytes.
                connects = tl.filter(kind="mqtt.CONNECT", direction="in")
                assert connects and connects[0].raw and \
                    connects[0].decoded["protocol_level"] == version
                out = tl.filter(kind="mqtt.PUBLISH", direction="out")
                expected_topic = AGENT_TOPIC if version == 5 else \
                    f"{AGENT_TOPIC}/reply-to={CTRL_TOPIC.replace('/', '%2F')}"  # R-MQTT.24
                assert out and out[-1].decoded["topic"] == expected_topic
                if version == 5:  # R-MQTT.23, R-MQTT.27
                    assert "usp.msg" in str(out[-1].decoded["properties"])
                    assert CTRL_TOPIC in str(out[-1].decoded["properties"])
                if tls:
                    done = await tl.expect("tls.handshake_done", within=STEP, direction="in")
                    assert done.decoded["peer_endpoint_ids"] == [AGENT_ID]
            finally:
                await asyncio.to_thread(agent.stop)
                await ctrl.close()
    asyncio.run(main())


def test_mosquitto_pub_record_reaches_controller():
    """Debian's mosquitto_pub (an independent client) delivers a Record to the Controller."""
    pub = require_tool("mosquitto_pub", APT_HINT)

    async def main():
        tl = Timeline()
        async with await MQTTBroker(timeline=tl).start() as broker:
            ctrl = Controller(CTRL, timeline=tl, default_timeout=STEP)
            ctrl.attach(broker.attach_controller(CTRL, CTRL_TOPIC), agent_id=AGENT_ID)
            notify = messages.request("notify", {"subscription_id": "s", "event": {
                "obj_path": "Device.", "event_name": "Boot!"}}, msg_id="boot-1")
            data = records.serialize(records.no_session_record(notify, to_id=CTRL,
                                                               from_id=AGENT_ID))
            proc = await asyncio.create_subprocess_exec(
                pub, "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5", "-q", "1",
                "-t", CTRL_TOPIC, "-D", "publish", "response-topic", AGENT_TOPIC,
                "-D", "publish", "content-type", "usp.msg", "-s",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                _, err = await asyncio.wait_for(proc.communicate(data), STEP)
            finally:
                if proc.returncode is None:
                    proc.kill()
            assert proc.returncode == 0, err
            got = await ctrl.notification()
            assert got.msg.header.msg_id == "boot-1" and got.inbound.reply_to == AGENT_TOPIC
            assert got.violations == []
    asyncio.run(main())
