"""The suite's MQTT broker over real loopback sockets (R-MQTT.*, TP-469 section 11).

Clients: paho-mqtt 2 (MQTT 3.1.1 and 5.0, plain and mutual TLS; its network
loop runs in its own thread and is bridged to asyncio with
``call_soon_threadsafe``) and a raw asyncio client built from the codec for
hand-made and malformed packets.  Debian's mosquitto command-line clients
are in ``test_broker_interop.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from conformance.mtp import pki
from conformance.mtp.binding import BindingClosed, InboundRecord
from conformance.mtp.mqtt import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    MQTTDecodeError,
    MQTTDecoder,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Violation,
    Will,
    decode,
    encode,
    validate,
)
from conformance.mtp.mqtt.binding import USP_CONTENT_TYPE, MQTTBinding
from conformance.mtp.mqtt.broker import DEFAULT_AGENT_TOPIC, MQTTBroker, MQTTScenario
from conformance.mtp.mqtt.session import ClientSubscription, MQTTSession
from conformance.mtp.mqtt.summary import (
    KINDS,
    packet_summary,
    properties_summary,
    violation_summary,
)
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import Connection, open_connection
from conformance.usp import messages, records

P = PropertyId
AGENT = "os::012345-AGENT"
AGENT_TOPIC = f"usp/agent/{AGENT}"
CTRL = "proto::controller-1"
CTRL_TOPIC = "usp/controller"
CREDS = {"agent": "secret"}
STEP = 5.0


# --------------------------------------------------------------------------- helpers


class RawClient:
    """An MQTT client made of the codec and a transport Connection."""

    def __init__(self, conn: Connection, version: int) -> None:
        self.conn = conn
        self.version = version
        self.decoder = MQTTDecoder(version, learn_version=False)
        self.packets: deque[Packet] = deque()
        self.eof = False

    @classmethod
    async def open(cls, broker: MQTTBroker, version: int = 5, ssl_context=None) -> RawClient:
        conn = await open_connection("mqtt-client", "127.0.0.1", broker.port,
                                     ssl_context=ssl_context)
        return cls(conn, version)

    async def send(self, packet: Packet, **overrides: Any) -> None:
        await self.conn.write(encode(packet, self.version, overrides=overrides or None))

    async def send_raw(self, data: bytes) -> None:
        await self.conn.write(data)

    async def _fill(self) -> None:
        data = await self.conn.reader.read(65536)
        if not data:
            self.eof = True
            raise EOFError("broker closed the connection")
        self.packets.extend(self.decoder.feed(data))

    async def packet(self, timeout: float = STEP) -> Packet:
        async with asyncio.timeout(timeout):
            while not self.packets:
                await self._fill()
        return self.packets.popleft()

    async def expect(self, cls: type, timeout: float = STEP) -> Any:
        packet = await self.packet(timeout)
        assert isinstance(packet, cls), packet
        assert validate(packet, self.version, sender="server") == [], packet
        return packet

    async def closed(self, timeout: float = STEP) -> list[Packet]:
        """Read until EOF; return the packets received on the way."""
        with contextlib.suppress(EOFError, ConnectionError):
            async with asyncio.timeout(timeout):
                while True:
                    await self._fill()
        assert self.eof
        return list(self.packets)

    async def close(self) -> None:
        await self.conn.close()

    def server_conn_id(self, tl: Timeline) -> str:
        """The broker-side conn_id of this connection (from its ``conn.open`` entry)."""
        port = self.conn.writer.get_extra_info("sockname")[1]
        opened = tl.filter("conn.open", predicate=lambda e: e.decoded["peer"].endswith(
            f":{port}"))
        assert opened, port
        return opened[-1].conn_id


def connect_packet(client_id: str = AGENT, *, version: int = 5, clean: bool = True,
                   keep_alive: int = 0, username: str | None = "agent",
                   password: bytes | None = b"secret", will: Will | None = None,
                   **props: Any) -> Connect:
    properties = Properties.of(**props) if version == 5 and props else Properties()
    return Connect("MQTT", version, clean, keep_alive, client_id, will, username, password,
                   properties)


async def raw_connect(broker: MQTTBroker, client_id: str = AGENT, *, version: int = 5,
                      **kwargs: Any) -> tuple[RawClient, Connack]:
    client = await RawClient.open(broker, version)
    await client.send(connect_packet(client_id, version=version, **kwargs))
    connack = await client.expect(Connack)
    return client, connack


async def raw_subscribe(client: RawClient, *filters: str, qos: int = 1, pid: int = 1,
                        **props: Any) -> Suback:
    props_ = Properties.of(**props) if props else Properties()
    await client.send(Subscribe(pid, [Subscription(f, qos) for f in filters], props_))
    suback = await client.expect(Suback)
    assert suback.packet_id == pid
    return suback


class Paho:
    """A paho-mqtt client whose callbacks land on the asyncio loop."""

    def __init__(self, version: int = 5, client_id: str = "", *, clean: bool = True,
                 username: str | None = "agent", password: str | None = "secret",
                 ssl_context=None) -> None:
        self.loop = asyncio.get_running_loop()
        self.version = version
        kwargs: dict[str, Any] = {}
        if version != 5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311,
                                  reconnect_on_failure=False, **kwargs)
        if username is not None:
            self.client.username_pw_set(username, password)
        if ssl_context is not None:
            self.client.tls_set_context(ssl_context)
        self.connack: asyncio.Future[tuple[Any, Any, Any]] = self.loop.create_future()
        self.messages: asyncio.Queue[mqtt.MQTTMessage] = asyncio.Queue()
        self.disconnects: asyncio.Queue[Any] = asyncio.Queue()
        self.subacks: dict[int, asyncio.Future[list[Any]]] = {}
        c = self.client
        c.on_connect = lambda cl, ud, flags, rc, props: self._call(self._connected,
                                                                   (flags, rc, props))
        c.on_message = lambda cl, ud, msg: self._call(self.messages.put_nowait, msg)
        c.on_subscribe = lambda cl, ud, mid, codes, props: self._call(self._subscribed, mid,
                                                                      codes)
        c.on_disconnect = lambda cl, ud, flags, rc, props: self._call(
            self.disconnects.put_nowait, rc)

    def _call(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def _connected(self, value: tuple[Any, Any, Any]) -> None:
        if not self.connack.done():
            self.connack.set_result(value)

    def _subscribed(self, mid: int, codes: list[Any]) -> None:
        fut = self.subacks.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(codes)

    async def connect(self, port: int, properties: PahoProperties | None = None,
                      keepalive: int = 60) -> tuple[Any, Any, Any]:
        """Connect (in an executor: TLS handshakes block) and wait for the CONNACK."""
        await asyncio.wait_for(self.loop.run_in_executor(
            None, lambda: self.client.connect("127.0.0.1", port, keepalive,
                                              properties=properties)), STEP)
        self.client.loop_start()
        return await asyncio.wait_for(self.connack, STEP)

    async def subscribe(self, topic: str, qos: int = 1) -> list[Any]:
        result, mid = self.client.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        fut = self.subacks[mid] = self.loop.create_future()
        return await asyncio.wait_for(fut, STEP)

    async def publish(self, topic: str, payload: bytes, qos: int = 1,
                      properties: PahoProperties | None = None, *, wait: bool = True
                      ) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        if wait and qos:
            await asyncio.wait_for(self.loop.run_in_executor(None, info.wait_for_publish, STEP),
                                   STEP + 1)
            assert info.is_published()
        return info

    async def message(self) -> mqtt.MQTTMessage:
        return await asyncio.wait_for(self.messages.get(), STEP)

    async def disconnected(self) -> Any:
        return await asyncio.wait_for(self.disconnects.get(), STEP)

    async def halt(self) -> None:
        """Stop paho's thread without a DISCONNECT (and before it reconnects)."""
        await asyncio.wait_for(self.loop.run_in_executor(None, self.client.loop_stop), STEP)

    async def stop(self) -> None:
        self.client.disconnect()
        await asyncio.wait_for(self.loop.run_in_executor(None, self.client.loop_stop), STEP)


def paho_props(kind: int = PacketTypes.PUBLISH, **values: Any) -> PahoProperties:
    props = PahoProperties(kind)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def agent_connect_props() -> PahoProperties:
    """What a USP Agent's MQTT 5.0 CONNECT carries (R-MQTT.12, R-MQTT.13)."""
    return paho_props(PacketTypes.CONNECT, RequestResponseInformation=1,
                      UserProperty=("usp-endpoint-id", AGENT))


def usp_record(to_id: str = CTRL, from_id: str = AGENT) -> bytes:
    msg = messages.request("get", {"param_paths": ["Device.DeviceInfo."]}, msg_id="1")
    return records.serialize(records.no_session_record(msg, to_id=to_id, from_id=from_id))


@contextlib.asynccontextmanager
async def running(timeline: Timeline, **kwargs: Any) -> AsyncIterator[MQTTBroker]:
    broker = await MQTTBroker(timeline, **kwargs).start()
    try:
        yield broker
    finally:
        await broker.close()


def actions(tl: Timeline, name: str) -> list[dict]:
    return [e.decoded for e in tl.filter("mqtt.scenario")
            if isinstance(e.decoded, dict) and e.decoded["action"] == name]


def violation_rules(tl: Timeline) -> set[str]:
    return {v["rule"] for e in tl.filter("mqtt.violation") for v in e.decoded}


def assert_clean(tl: Timeline) -> None:
    """No suite handler crashed and no client packet broke a rule."""
    assert not tl.filter("conn.handler_error"), [e.brief() for e in tl.filter("conn.handler_error")]
    assert not tl.filter("mqtt.violation"), [e.brief() for e in tl.filter("mqtt.violation")]
    assert not tl.filter("mqtt.decode_error")


def out_packets(tl: Timeline, kind: str, conn_id: str | None = None) -> list[dict]:
    return [e.decoded for e in tl.filter(f"mqtt.{kind}", direction="out", conn_id=conn_id)]


def props_of(paho_message_props: Any, name: str) -> Any:
    return getattr(paho_message_props, name, None)


# --------------------------------------------------------------------------- USP agent via paho


def test_paho_v5_agent_with_controller_binding():
    """R-MQTT.8/9/12/13/15/21/23/26/27/44 and TP-469 11.2, 11.4, 11.8, 11.12, 11.14:
    an agent-like paho 5.0 client with ClientID "" talks to the controller endpoint."""
    async def main():
        tl = Timeline()
        async with running(tl, credentials=CREDS) as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)
            assert isinstance(binding, MQTTBinding) and binding.mtp == "mqtt"
            assert binding.address == CTRL_TOPIC and binding.endpoint_id == CTRL
            inbound: list[InboundRecord] = []
            binding.set_sink(inbound.append)
            waiter = asyncio.create_task(broker.wait_for_client(AGENT, STEP))
            agent = Paho(5, "")
            flags, rc, props = await agent.connect(broker.port, agent_connect_props())
            assert rc == 0 and not flags.session_present
            assigned = props.AssignedClientIdentifier
            assert assigned and assigned.startswith("auto-")
            assert props.ResponseInformation == AGENT_TOPIC
            assert ("subscribe-topic", AGENT_TOPIC) in props.UserProperty
            client = await asyncio.wait_for(waiter, STEP)
            assert client.client_id == assigned and client.endpoint_id == AGENT
            assert client.assigned_client_id == assigned and client.v5
            assert client.username == "agent" and client.keep_alive == 60
            assert broker.find_agent(AGENT) is client and broker.find_client(assigned) is client

            # the agent subscribes to its Response Information (R-MQTT.15)
            codes = await agent.subscribe(AGENT_TOPIC, qos=1)
            assert [c.value for c in codes] == [1]
            got_client, sub = await broker.wait_for_subscription(AGENT_TOPIC, STEP)
            assert got_client is client and sub.qos == 1
            assert binding.agent_topic(AGENT) == AGENT_TOPIC    # from Response Information

            # agent -> controller with Response Topic, Content Type, Correlation Data,
            # User Property (R-MQTT.23, R-MQTT.27)
            data = usp_record()
            pp = paho_props(ResponseTopic=AGENT_TOPIC, ContentType=USP_CONTENT_TYPE,
                            CorrelationData=b"\x01\x02", UserProperty=("k", "v"))
            await agent.publish(CTRL_TOPIC, data, 1, pp)
            assert len(inbound) == 1
            rec = inbound[0]
            assert rec.data == data and rec.mtp == "mqtt" and rec.reply_to == AGENT_TOPIC
            assert rec.conn_id == client.conn_id and rec.meta["qos"] == 1
            assert rec.meta["topic"] == CTRL_TOPIC and rec.meta["client_id"] == assigned
            assert rec.meta["endpoint_id"] == AGENT and rec.meta["version"] == 5
            assert rec.meta["content_type"] == USP_CONTENT_TYPE
            assert rec.meta["properties"]["correlation_data"] == "0102"
            assert rec.meta["properties"]["user_properties"] == [["k", "v"]]
            assert broker.agent_topic(AGENT) == AGENT_TOPIC       # learned from from_id

            # controller -> agent (R-MQTT.23, R-MQTT.27)
            reply = usp_record(AGENT, CTRL)
            await binding.send(reply, to_id=AGENT)
            msg = await agent.message()
            assert msg.topic == AGENT_TOPIC and msg.payload == reply and msg.qos == 1
            assert msg.properties.ResponseTopic == CTRL_TOPIC
            assert msg.properties.ContentType == USP_CONTENT_TYPE

            # TP-469 11.15: the other registered content type, and extra properties
            binding.content_type = "application/vnd.bbf.usp.msg"
            await binding.send(b"x", to_id=AGENT, qos=0,
                               properties=Properties.of(correlation_data=b"c"))
            msg = await agent.message()
            assert msg.properties.ContentType == "application/vnd.bbf.usp.msg"
            assert msg.properties.CorrelationData == b"c" and msg.qos == 0

            # every packet both ways is in the timeline with raw bytes and a summary
            connect = tl.filter("mqtt.CONNECT", direction="in")[0]
            assert connect.raw and decode(connect.raw).client_id == ""
            assert connect.decoded["properties"]["user_properties"] == [
                ["usp-endpoint-id", AGENT]]
            assert connect.decoded["properties"]["request_response_information"] == 1
            connack = tl.filter("mqtt.CONNACK", direction="out")[0]
            assert decode(connack.raw).properties.assigned_client_identifier == assigned
            assert actions(tl, "connack")[0]["assigned_client_identifier"] == assigned
            publishes = tl.filter("mqtt.PUBLISH", direction="out")
            assert publishes[0].decoded["properties"]["response_topic"] == CTRL_TOPIC
            assert decode(publishes[0].raw).payload == reply
            await tl.expect("mqtt.PUBACK", within=STEP, direction="in")   # the agent's ack
            assert len(tl.filter("mqtt.PUBACK", direction="out")) == 1
            json.dumps([e.to_json() for e in tl.entries])
            assert client.to_json()["subscriptions"] == [AGENT_TOPIC]
            await agent.stop()
            await tl.expect("mqtt.DISCONNECT", within=STEP, direction="in")
            await tl.expect("conn.close", within=STEP, direction="in")
            assert broker.clients == {} and broker.sessions == {}
            assert client.disconnect_reason == 0
            with pytest.raises(BindingClosed, match="not connected"):
                await binding.send(b"x", to_id=AGENT)
        assert_clean(tl)
    asyncio.run(main())


def test_paho_v311_agent_reply_to_in_topic_name():
    """R-MQTT.8 (ClientId = Endpoint ID), R-MQTT.24, R-MQTT.25, TP-469 11.14 (3.1.1)."""
    async def main():
        tl = Timeline()
        async with running(tl, credentials=CREDS) as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)
            inbound: list[InboundRecord] = []
            binding.set_sink(inbound.append)
            agent = Paho(4, AGENT)
            _, rc, _ = await agent.connect(broker.port)
            assert rc == 0
            client = await broker.wait_for_client(AGENT, STEP)
            assert client.version == 4 and client.endpoint_id is None
            assert client.response_information is None and client.subscribe_topics == []
            assert out_packets(tl, "CONNACK")[0]["properties"] == {}
            await agent.subscribe(AGENT_TOPIC + "/#", qos=1)
            assert binding.agent_topic(AGENT) == AGENT_TOPIC      # the filter minus "/#"
            data = usp_record()
            await agent.publish(f"{CTRL_TOPIC}/reply-to={AGENT_TOPIC.replace('/', '%2F')}",
                                data, 1)
            assert inbound[0].reply_to == AGENT_TOPIC and inbound[0].meta["version"] == 4
            await binding.send(b"to the agent", to_id=AGENT)
            msg = await agent.message()
            assert msg.topic == f"{AGENT_TOPIC}/reply-to=usp%2Fcontroller"
            assert msg.payload == b"to the agent"
            await agent.stop()
        assert_clean(tl)
    asyncio.run(main())


def test_paho_clients_exchange_qos_0_1_2_and_wildcards():
    """R-MQTT.20/45/46: QoS 0, 1 and 2 both ways between 3.1.1 and 5.0 clients, wildcard
    filters, and 5.0 properties forwarded unchanged."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            v5 = Paho(5, "v5-client", username=None)
            v3 = Paho(4, "v3-client", username=None)
            await v5.connect(broker.port)
            await v3.connect(broker.port)
            assert [c.value for c in await v5.subscribe("a/+/c", qos=2)] == [2]
            assert [c.value for c in await v3.subscribe("a/#", qos=2)] == [2]
            assert [c.value for c in await v5.subscribe("x/#", qos=1)] == [1]
            for qos in (0, 1, 2):
                payload = f"from v3 qos {qos}".encode()
                await v3.publish("a/b/c", payload, qos)
                got = {(await v5.message()).payload, (await v3.message()).payload}
                assert got == {payload}
            for qos in (0, 1, 2):
                pp = paho_props(ResponseTopic="reply/here", ContentType="usp.msg",
                                CorrelationData=b"id-7", UserProperty=[("a", "1"), ("a", "2")],
                                PayloadFormatIndicator=0, MessageExpiryInterval=300)
                await v5.publish("a/b/c", b"from v5", qos, pp)
                mine, theirs = await v5.message(), await v3.message()
                assert mine.payload == theirs.payload == b"from v5"
                assert mine.qos == theirs.qos == qos
                assert mine.properties.ResponseTopic == "reply/here"
                assert mine.properties.ContentType == "usp.msg"
                assert mine.properties.CorrelationData == b"id-7"
                assert mine.properties.UserProperty == [("a", "1"), ("a", "2")]
                assert mine.properties.MessageExpiryInterval == 300
            # QoS downgraded to the subscription's: x/# was granted 1
            await v3.publish("x/y", b"q2", 2)
            assert (await v5.message()).qos == 1
            # the QoS 2 flows both ways are visible in the timeline
            for kind in ("PUBREC", "PUBREL", "PUBCOMP"):
                assert tl.filter(f"mqtt.{kind}", direction="in")
                assert tl.filter(f"mqtt.{kind}", direction="out")
            # no subscriber: PUBACK 0x10 on 5.0, and an mqtt.unrouted note
            await v5.publish("nobody/listens", b"?", 1)
            assert out_packets(tl, "PUBACK")[-1]["reason_code"] == 0x10
            assert tl.filter("mqtt.unrouted")[-1].decoded == {"topic": "nobody/listens"}
            await v5.stop()
            await v3.stop()
        assert_clean(tl)
    asyncio.run(main())


def test_paho_mutual_tls_and_certificate_authentication():
    """R-MQTT.43, R-MQTT.48, TP-469 11.3: mutual TLS; a client certificate instead
    of User Name/Password; the agent found by the certificate's Endpoint ID."""
    async def main():
        tl = Timeline()
        ca = pki.make_ca("mqtt broker test CA")
        server = pki.issue(ca, endpoint_id=CTRL, ips=["127.0.0.1"])
        agent_cred = pki.issue(ca, endpoint_id=AGENT)
        sctx = pki.ssl_context("server", server, trust=[ca])
        async with running(tl, ssl_context=sctx, credentials=CREDS) as broker:
            assert broker.tls
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)
            inbound: list[InboundRecord] = []
            binding.set_sink(inbound.append)
            agent = Paho(5, "tls-agent", username=None,
                         ssl_context=pki.ssl_context("client", agent_cred, trust=[ca]))
            _, rc, _ = await agent.connect(broker.port)
            assert rc == 0
            client = await broker.wait_for_client(AGENT, STEP)   # by certificate
            assert client.tls and client.peer_endpoint_ids == [AGENT]
            await agent.subscribe("tls/agent", qos=2)
            await binding.send(b"over tls", to_id=AGENT, qos=2)
            msg = await agent.message()
            assert msg.payload == b"over tls" and msg.qos == 2
            await agent.publish(CTRL_TOPIC, b"back", 2, paho_props(ResponseTopic="tls/agent"))
            assert inbound[0].data == b"back"
            assert inbound[0].meta["peer_endpoint_ids"] == [AGENT]
            done = tl.filter("tls.handshake_done", direction="in")
            assert done and done[0].decoded["peer_endpoint_ids"] == [AGENT]
            await agent.stop()
            # without a client certificate the TLS layer refuses the connection
            with pytest.raises((EOFError, OSError)):
                raw = await RawClient.open(broker, ssl_context=pki.ssl_context(
                    "client", None, trust=[ca]))
                try:
                    await raw.send(connect_packet("no-cert", username=None, password=None))
                    await raw.packet()
                finally:
                    await raw.close()
        assert tl.filter("tls.handshake_failed")
    asyncio.run(main())


def test_bad_credentials_refused_both_versions():
    """R-MQTT.7, R-MQTT.42: wrong or missing User Name/Password -> CONNACK 0x86 / 4."""
    async def main():
        tl = Timeline()
        async with running(tl, credentials=CREDS) as broker:
            for version, expected in ((5, 0x86), (4, 4)):
                for username, password in (("agent", b"wrong"), (None, None), ("who", b"x")):
                    raw = await RawClient.open(broker, version)
                    await raw.send(connect_packet("c", version=version, username=username,
                                                  password=password))
                    connack = await raw.expect(Connack)
                    assert connack.reason_code == expected and not connack.session_present
                    assert await raw.closed() == []
            assert broker.clients == {}
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


# --------------------------------------------------------------------------- scenario hooks


def test_scenario_connack_refusal_seen_by_paho():
    """TP-469 11.6 style refusals: 0x87 for 5.0, mapped to return code 5 for 3.1.1,
    and a 3.1.1 return code mapped to 5.0; each refusal is a scenario action."""
    async def main():
        tl = Timeline()
        async with running(tl, scenario=MQTTScenario(connack_reason_code=0x87)) as broker:
            p5 = Paho(5, "refused-5")
            _, rc, _ = await p5.connect(broker.port)
            await p5.stop()
            assert rc.value == 0x87 and rc.is_failure
            p3 = Paho(4, "refused-3")
            _, rc3, _ = await p3.connect(broker.port)
            await p3.stop()
            assert rc3.is_failure and str(rc3) == "Not authorized"
            codes = [e["reason_code"] for e in out_packets(tl, "CONNACK")]
            assert codes == [0x87, 5]
            broker.set_scenario(connack_reason_code=3)      # 3.1.1 Server unavailable
            raw, connack = await raw_connect(broker, "refused-raw")
            assert connack.reason_code == 0x88
            await raw.close()
            assert [a["reason_code"] for a in actions(tl, "connack_reason_code")] == [
                0x87, 5, 0x88]
            broker.set_scenario(connack_reason_code=None)
            raw, connack = await raw_connect(broker, "accepted")
            assert connack.reason_code == 0
            await raw.close()
    asyncio.run(main())


def test_scenario_connack_properties_present_absent_and_values():
    """R-MQTT.9/12/44, TP-469 11.4, 11.7, 11.8, 11.10: Assigned Client Identifier,
    Response Information, subscribe-topic and Server Keep Alive under control."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            # defaults, templated with the usp-endpoint-id
            paho = Paho(5, "")
            _, _, props = await paho.connect(broker.port, agent_connect_props())
            assert props.ResponseInformation == AGENT_TOPIC
            assert props.UserProperty == [("subscribe-topic", AGENT_TOPIC)]
            assert DEFAULT_AGENT_TOPIC == "usp/agent/{endpoint_id}"
            await paho.stop()
            # TP-469 11.10: no subscribe-topic; no Response Information; fixed assigned id
            broker.set_scenario(subscribe_topics=(), response_information=None,
                                assigned_client_identifier="fixed-id-1", server_keep_alive=30,
                                connack_user_properties=[("x", "y")])
            paho = Paho(5, "")
            _, _, props = await paho.connect(broker.port, agent_connect_props())
            assert props_of(props, "ResponseInformation") is None
            assert props.UserProperty == [("x", "y")]
            assert props.AssignedClientIdentifier == "fixed-id-1"
            assert props.ServerKeepAlive == 30
            client = await broker.wait_for_client("fixed-id-1", STEP)
            assert client.keep_alive == 30 and client.subscribe_topics == []
            await paho.stop()
            # values and templates; Assigned Client Identifier switched off
            broker.set_scenario(subscribe_topics=("t/{client_id}", "u/{endpoint_id}"),
                                response_information="r/{client_id}",
                                send_assigned_client_identifier=False,
                                assigned_client_identifier="given-7", server_keep_alive=None,
                                connack_user_properties=())
            raw, connack = await raw_connect(broker, "", request_response_information=1)
            cp = connack.properties
            assert cp.assigned_client_identifier is None
            assert (await broker.wait_for_client("given-7", STEP)).assigned_client_id is None
            assert cp.response_information == "r/given-7"
            assert cp.user_property_values("subscribe-topic") == ["t/given-7", "u/given-7"]
            await raw.close()
            # Response Information only on request, unless the scenario insists
            raw, connack = await raw_connect(broker, "no-request")
            assert connack.properties.response_information is None
            await raw.close()
            broker.set_scenario(response_information_unrequested=True)
            raw, connack = await raw_connect(broker, "unrequested")
            assert connack.properties.response_information == "r/unrequested"
            await raw.close()
            decided = actions(tl, "connack")
            assert decided[1]["response_information"] is None
            assert decided[1]["assigned_client_identifier"] == "fixed-id-1"
            assert decided[-1]["response_information"] == "r/unrequested"
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


def test_scenario_suback_failure_codes():
    """TP-469 11.11: SUBACK 0x80 for every filter, or per filter; 3.1.1 gets 0x80."""
    async def main():
        tl = Timeline()
        async with running(tl, scenario=MQTTScenario(suback_reason_code=0x80)) as broker:
            paho = Paho(5, "sub-fail", username=None)
            await paho.connect(broker.port)
            codes = await paho.subscribe(AGENT_TOPIC, 1)
            assert [c.value for c in codes] == [0x80] and codes[0].is_failure
            assert broker.sessions["sub-fail"].subscriptions == {}
            assert actions(tl, "suback_reason_code") == [
                {"action": "suback_reason_code", "topic_filter": AGENT_TOPIC,
                 "reason_code": 0x80}]
            await paho.stop()
            broker.set_scenario(suback_reason_code=None,
                                suback_reason_codes=[("bad/filter", 0x87), ("ok/one", 1)])
            raw, _ = await raw_connect(broker, "per-filter")
            suback = await raw_subscribe(raw, "bad/filter", "ok/one", "plain", qos=2)
            assert suback.reason_codes == [0x87, 1, 2]
            assert set(broker.sessions["per-filter"].subscriptions) == {"ok/one", "plain"}
            await raw.close()
            raw3, _ = await raw_connect(broker, "v3", version=4)
            suback = await raw_subscribe(raw3, "bad/filter", qos=1)
            assert suback.reason_codes == [0x80]
            await raw3.close()
        assert_clean(tl)
    asyncio.run(main())


def test_scenario_withhold_puback_and_pubrec():
    """Withheld PUBACK leaves paho's QoS 1 message unacknowledged (it is still routed)."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)
            inbound: list[InboundRecord] = []
            binding.set_sink(inbound.append)
            broker.set_scenario(withhold_puback=True)
            paho = Paho(5, "withheld", username=None)
            await paho.connect(broker.port)
            info = await paho.publish(CTRL_TOPIC, b"first", 1, wait=False)
            action = await tl.expect("mqtt.scenario", within=STEP,
                                     where=lambda e: e.decoded["action"] == "withhold_puback")
            assert action.decoded["packet_id"] == info.mid
            assert inbound[0].data == b"first"
            broker.set_scenario(withhold_puback=False)
            await paho.publish(CTRL_TOPIC, b"second", 1)       # acknowledged
            assert not info.is_published()                      # the first never was
            assert info.mid not in [e["packet_id"] for e in out_packets(tl, "PUBACK")]
            # QoS 2: PUBREC withheld, the message still delivered once
            broker.set_scenario(withhold_pubrec=True)
            info2 = await paho.publish(CTRL_TOPIC, b"third", 2, wait=False)
            await tl.expect("mqtt.scenario", within=STEP,
                            where=lambda e: e.decoded["action"] == "withhold_pubrec")
            assert not info2.is_published() and inbound[-1].data == b"third"
            await paho.stop()
    asyncio.run(main())


def test_scenario_withhold_pingresp_and_keep_alive_enforcement():
    """TP-469 11.7: PINGRESP withheld on demand; Keep Alive enforced at 1.5x
    (tolerance shortened here) with DISCONNECT 0x8D on 5.0 and a plain close on 3.1.1."""
    async def main():
        tl = Timeline()
        async with running(tl, scenario=MQTTScenario(withhold_pingresp=True)) as broker:
            raw, _ = await raw_connect(broker, "pinger", keep_alive=60)
            await raw.send(Pingreq())
            await tl.expect("mqtt.scenario", within=STEP,
                            where=lambda e: e.decoded["action"] == "withhold_pingresp")
            broker.set_scenario(withhold_pingresp=False)
            await raw.send(Pingreq())
            await raw.expect(Pingresp)
            assert len(tl.filter("mqtt.PINGRESP", direction="out")) == 1
            assert not raw.packets
            await raw.close()
            # keep alive: 1 s x 0.2 tolerance
            broker.set_scenario(keep_alive_tolerance=0.2)
            started = time.monotonic()
            raw, _ = await raw_connect(broker, "silent-5", keep_alive=1)
            disconnect = await raw.expect(Disconnect)
            assert disconnect.reason_code == 0x8D
            assert await raw.closed() == []
            assert time.monotonic() - started < 3
            entry = tl.filter("mqtt.keepalive_timeout")[0]
            assert entry.decoded["keep_alive"] == 1 and entry.decoded["tolerance"] == 0.2
            raw3, _ = await raw_connect(broker, "silent-3", version=4, keep_alive=1)
            assert await raw3.closed() == []
            # the Server Keep Alive replaces the client's value
            broker.set_scenario(server_keep_alive=1)
            raw, connack = await raw_connect(broker, "server-ka", keep_alive=0)
            assert connack.properties.server_keep_alive == 1
            assert (await raw.expect(Disconnect)).reason_code == 0x8D
            # activity postpones the deadline: 1 s x 0.5, a PINGREQ after 0.3 s
            broker.set_scenario(server_keep_alive=None, keep_alive_tolerance=0.5)
            raw, _ = await raw_connect(broker, "active", keep_alive=1)
            await tl.expect_none("mqtt.keepalive_timeout", during=0.3)
            await raw.send(Pingreq())
            await raw.expect(Pingresp)
            ping = tl.filter("mqtt.PINGREQ", direction="in")[-1]
            assert (await raw.expect(Disconnect)).reason_code == 0x8D
            timeout = tl.filter("mqtt.keepalive_timeout")[-1]
            assert timeout.t - ping.t >= 0.45
            await raw.close()
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


def test_scenario_server_disconnect_seen_by_paho_and_will_published():
    """TP-469 11.16: DISCONNECT with a Reason Code on demand (5.0); 3.1.1 connection
    closed; the Will Message of a server-disconnected client is published."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            watcher = Paho(5, "watcher", username=None)
            await watcher.connect(broker.port)
            await watcher.subscribe("wills/#", 1)
            paho = Paho(5, "doomed", username=None)
            paho.client.will_set("wills/doomed", b"gone", 1)
            await paho.connect(broker.port)
            client = await broker.disconnect_client("doomed", 0x98, reason_string="bye")
            assert client.client_id == "doomed"
            rc = await paho.disconnected()
            await paho.halt()
            assert rc.value == 0x98
            will = await watcher.message()
            assert will.topic == "wills/doomed" and will.payload == b"gone"
            assert tl.filter("mqtt.will")[0].decoded["client_id"] == "doomed"
            assert actions(tl, "disconnect")[0]["reason_code"] == 0x98
            sent = out_packets(tl, "DISCONNECT")[0]
            assert sent["reason_code"] == 0x98 and sent["properties"]["reason_string"] == "bye"
            p3 = Paho(4, "doomed-3", username=None)
            await p3.connect(broker.port)
            await broker.disconnect_client("doomed-3")
            await p3.disconnected()
            await p3.halt()
            assert len(out_packets(tl, "DISCONNECT")) == 1      # none for 3.1.1
            # drop without any packet, and unknown clients
            raw, _ = await raw_connect(broker, "dropped")
            await broker.drop_client("dropped")
            assert await raw.closed() == []
            with pytest.raises(LookupError):
                await broker.disconnect_client("nobody")
            with pytest.raises(LookupError):
                await broker.drop_client("nobody")
            await watcher.stop()
        assert_clean(tl)
    asyncio.run(main())


def test_scenario_refuse_connections_counted_and_timestamped():
    """TP-469 11.6 / 11.16 retry checks: refused attempts counted with timestamps,
    before any TLS (no handshake is attempted)."""
    async def main():
        tl = Timeline()
        ca = pki.make_ca("refuse CA")
        sctx = pki.ssl_context("server", pki.issue(ca, endpoint_id=CTRL, ips=["127.0.0.1"]),
                               require_client_cert=False)
        async with running(tl, ssl_context=sctx,
                           scenario=MQTTScenario(refuse_connections=True)) as broker:
            for _ in range(3):
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", broker.port), STEP)
                assert await asyncio.wait_for(reader.read(), STEP) == b""
                writer.close()
            assert broker.refused == 3 and len(broker.connection_attempts) == 3
            assert broker.connection_attempts == sorted(broker.connection_attempts)
            refused = actions(tl, "refuse_connection")
            assert [a["attempt"] for a in refused] == [1, 2, 3]
            assert [a["t"] for a in refused] == broker.connection_attempts
            assert not tl.filter("tls.handshake_failed") and not tl.filter("tls.handshake_done")
            broker.set_scenario(refuse_connections=False)
            raw = await RawClient.open(broker, ssl_context=pki.ssl_context(
                "client", None, trust=[ca]))
            await raw.send(connect_packet("after", username=None, password=None))
            assert (await raw.expect(Connack)).reason_code == 0
            assert len(broker.connection_attempts) == 4 and broker.refused == 3
            await raw.close()
    asyncio.run(main())


def test_scenario_close_after_packets():
    async def main():
        tl = Timeline()
        async with running(tl, scenario=MQTTScenario(close_after_packets=3)) as broker:
            raw, _ = await raw_connect(broker, "counted")
            await raw_subscribe(raw, "a")                  # packet 2
            await raw.send(Pingreq())                      # packet 3: answered, then closed
            assert [type(p) for p in await raw.closed()] == [Pingresp]
            assert actions(tl, "close_after_packets")[0]["packets"] == 3
        assert_clean(tl)
    asyncio.run(main())


def test_scenario_topic_alias_maximum_qos_and_packet_size():
    """MQTT 5.0 §3.3.2.3.4 Topic Alias, Maximum QoS (0x9B), Maximum Packet Size (0x95)."""
    async def main():
        tl = Timeline()
        scenario = MQTTScenario(topic_alias_maximum=2, maximum_qos=1, maximum_packet_size=200)
        async with running(tl, scenario=scenario) as broker:
            sub, _ = await raw_connect(broker, "subscriber")
            suback = await raw_subscribe(sub, "alias/topic", qos=2)
            assert suback.reason_codes == [1]                 # capped by Maximum QoS
            pub, connack = await raw_connect(broker, "aliaser")
            cp = connack.properties
            assert (cp.topic_alias_maximum, cp.maximum_qos, cp.maximum_packet_size) == (2, 1, 200)
            await pub.send(Publish("alias/topic", b"1", properties=Properties.of(topic_alias=1)))
            await pub.send(Publish("", b"2", properties=Properties.of(topic_alias=1)))
            for body in (b"1", b"2"):
                got = await sub.expect(Publish)
                assert got.topic == "alias/topic" and got.payload == body
                assert got.properties.topic_alias is None
            await pub.send(Publish("x", b"3", properties=Properties.of(topic_alias=3)))
            assert (await pub.expect(Disconnect)).reason_code == 0x94
            assert await pub.closed() == []
            pub, _ = await raw_connect(broker, "unmapped")
            await pub.send(Publish("", b"4", properties=Properties.of(topic_alias=2)))
            assert (await pub.expect(Disconnect)).reason_code == 0x82
            pub, _ = await raw_connect(broker, "qos2")
            await pub.send(Publish("alias/topic", b"5", qos=2, packet_id=1))
            assert (await pub.expect(Disconnect)).reason_code == 0x9B
            pub, _ = await raw_connect(broker, "big")
            await pub.send(Publish("alias/topic", b"x" * 300))
            assert (await pub.expect(Disconnect)).reason_code == 0x95
            assert {"MQTT-3.3.2-9", "MQTT-5.0 §3.3.2.3.4", "MQTT-3.2.2-11",
                    "MQTT-3.2.2-15"} <= violation_rules(tl)
            await sub.close()
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


def test_scenario_validation_and_json():
    s = MQTTScenario(subscribe_topics=["a", "b"], suback_reason_codes=[["f", 0x80]],
                     connack_user_properties=[("k", "v")])
    assert s.subscribe_topics == ("a", "b") and s.suback_reason_codes == (("f", 0x80),)
    data = s.to_json()
    assert data["suback_reason_codes"] == [["f", 0x80]] and json.dumps(data)
    for bad in ({"connack_reason_code": 0x10}, {"connack_reason_code": 6},
                {"suback_reason_code": 256}, {"suback_reason_codes": [("f", -1)]},
                {"maximum_qos": 2}, {"server_keep_alive": 70000}, {"topic_alias_maximum": -1},
                {"maximum_packet_size": 1}, {"close_after_packets": 0},
                {"keep_alive_tolerance": 0}):
        with pytest.raises(ValueError):
            MQTTScenario(**bad)
    with pytest.raises(TypeError):
        MQTTScenario(subscribe_topics="a/b")

    async def main():
        tl = Timeline()
        broker = MQTTBroker(tl)
        broker.scenario = MQTTScenario(withhold_puback=True)
        assert broker.scenario.withhold_puback
        new = broker.set_scenario(withhold_pingresp=True)
        assert new.withhold_puback and new.withhold_pingresp
        assert [a["scenario"]["withhold_pingresp"] for a in actions(tl, "set")] == [False, True]
        await broker.close()
    asyncio.run(main())


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("version", [5, 4])
def test_reserved_flags_violation_closes(version):
    """MQTT-3.8.1-1: SUBSCRIBE flags must be 0010; 5.0 gets DISCONNECT 0x81 first."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            raw, _ = await raw_connect(broker, "flags", version=version)
            await raw.send(Subscribe(1, [Subscription("a")]), flags=0)
            rest = await raw.closed()
            if version == 5:
                assert len(rest) == 1 and isinstance(rest[0], Disconnect)
                assert rest[0].reason_code == 0x81
            else:
                assert rest == []
            entry = tl.filter("mqtt.violation")[0]
            assert entry.decoded[0]["rule"] == "MQTT-3.8.1-1" and entry.raw[0] == 0x80
            assert entry.decoded[0]["code"] == "reserved-flags"
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


def test_violation_without_close_when_scenario_says_so():
    async def main():
        tl = Timeline()
        async with running(tl, scenario=MQTTScenario(close_on_violation=False)) as broker:
            raw, _ = await raw_connect(broker, "lenient")
            await raw.send(Subscribe(1, [Subscription("a")]), flags=0)
            assert (await raw.expect(Suback)).reason_codes == [0]
            await raw.send(Publish("a", b"q3", qos=3, packet_id=5))     # ignored
            await raw.send(Suback(9, [0]))                               # wrong direction
            await raw.send(Pingreq())
            await raw.expect(Pingresp)
            assert {"MQTT-3.8.1-1", "MQTT-3.3.1-4", "MQTT-5.0 §2.1.2"} <= violation_rules(tl)
            await raw.close()
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


def test_decode_errors_recorded_and_closed():
    """MQTT 5.0 §4.13: a Malformed Packet closes the connection (DISCONNECT 0x81 first
    on 5.0); a packet before CONNECT (MQTT-3.1.0-1); a too-large packet (0x95)."""
    async def main():
        tl = Timeline()
        async with running(tl, max_packet_size=1024) as broker:
            raw, _ = await raw_connect(broker, "malformed")
            await raw.send(Puback(1), body=b"\x00")                 # truncated Packet Id
            rest = await raw.closed()
            assert [p.reason_code for p in rest] == [0x81]
            err = tl.filter("mqtt.decode_error")[0]
            assert err.decoded["packet"] == "PUBACK" and err.decoded["reason_code"] == 0x81
            assert err.raw == b"\x40\x01\x00"
            # before CONNECT: nothing but a close
            raw = await RawClient.open(broker)
            await raw.send(Pingreq())
            assert await raw.closed() == []
            assert "before CONNECT" in tl.filter("mqtt.decode_error")[1].decoded["reason"]
            # too large for the broker
            raw, _ = await raw_connect(broker, "large")
            await raw.send(Publish("t", b"x" * 2000))
            assert [p.reason_code for p in await raw.closed()] == [0x95]
            # a broken CONNECT of 5.0 gets CONNACK 0x81; of 3.1.1 only a close
            raw = await RawClient.open(broker)
            await raw.send(connect_packet("c"), property_length=200)
            rest = await raw.closed()
            assert len(rest) == 1 and isinstance(rest[0], Connack)
            assert rest[0].reason_code == 0x81
            raw = await RawClient.open(broker, 4)
            await raw.send(connect_packet("c", version=4), trailing=b"\x00")
            assert await raw.closed() == []
            # a Remaining Length longer than 4 bytes
            raw, _ = await raw_connect(broker, "vbi")
            await raw.send_raw(b"\x30\xff\xff\xff\xff\x01")
            assert [p.reason_code for p in await raw.closed()] == [0x81]
            assert len(tl.filter("mqtt.decode_error")) == 6
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


def test_connect_violations_answered_with_connack_codes():
    """MQTT-3.1.2-1/2 (0x84 / return code 1), MQTT-3.1.3-8 (return code 2),
    MQTT-3.1.0-2 (second CONNECT), unsupported enhanced authentication (0x8C)."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            cases = [
                (5, Connect("MQTX", 5, True, 0, "a"), 0x84),
                (4, Connect("MQIsdp", 3, True, 0, "a"), 1),
                (4, Connect("MQTT", 4, False, 0, ""), 2),
                (5, Connect("MQTT", 5, True, 0, "a",
                            properties=Properties.of(authentication_method="SCRAM")), 0x8C),
            ]
            for version, packet, code in cases:
                raw = await RawClient.open(broker, version)
                await raw.send(packet)
                rest = await raw.closed()
                assert len(rest) == 1 and isinstance(rest[0], Connack), rest
                assert rest[0].reason_code == code
            raw = await RawClient.open(broker, 4)
            await raw.send(Connect("MQTT", 4, True, 0, "a", password=b"p"))   # no User Name
            assert await raw.closed() == []
            raw, _ = await raw_connect(broker, "twice")
            await raw.send(connect_packet("twice"))
            assert [p.reason_code for p in await raw.closed()] == [0x82]
            raw, _ = await raw_connect(broker, "auth")
            await raw.send(Auth(0x18, Properties.of(authentication_method="X")))
            assert [p.reason_code for p in await raw.closed()] == [0x82]
            assert {"MQTT-3.1.2-1", "MQTT-3.1.2-2", "MQTT-3.1.3-7", "MQTT-3.1.2-22",
                    "MQTT-3.1.0-2", "MQTT-5.0 §4.12"} <= violation_rules(tl)
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=300), st.booleans())
def test_random_bytes_never_crash_the_broker(data, after_connect):
    """Hostile input: whatever follows (or replaces) a CONNECT, the broker answers
    within the rules or closes; no handler error, and it still serves others."""
    async def main():
        tl = Timeline()
        async with running(tl, connect_timeout=1.0) as broker:
            raw = await RawClient.open(broker)
            if after_connect:
                await raw.send(connect_packet("fuzz"))
            with contextlib.suppress(ConnectionError):
                await raw.send_raw(data)
            with contextlib.suppress(MQTTDecodeError, EOFError, ConnectionError, TimeoutError):
                async with asyncio.timeout(0.1):
                    while True:
                        await raw._fill()
            await raw.close()
            ok, connack = await raw_connect(broker, "healthy")
            assert connack.reason_code == 0
            await ok.close()
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


# --------------------------------------------------------------------------- sessions


def test_session_takeover_and_resume():
    """MQTT-3.1.4-3: DISCONNECT 0x8E to the old connection; Clean Start 0 resumes the
    session (Session Present, subscriptions kept, unacknowledged PUBLISH resent with DUP)."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            first, _ = await raw_connect(broker, "same-id", clean=True,
                                         session_expiry_interval=60)
            await raw_subscribe(first, "resume/me", qos=1)
            await broker.publish("resume/me", b"unacked", qos=1)
            pending = await first.expect(Publish)
            assert pending.qos == 1 and not pending.dup
            second, connack = await raw_connect(broker, "same-id", clean=False)
            assert connack.session_present
            assert [p.reason_code for p in await first.closed()] == [0x8E]
            resent = await second.expect(Publish)
            assert resent.dup and resent.packet_id == pending.packet_id
            assert resent.payload == b"unacked"
            await second.send(Puback(resent.packet_id))
            assert tl.filter("mqtt.session_taken_over")[0].decoded["client_id"] == "same-id"
            session = broker.sessions["same-id"]
            assert set(session.subscriptions) == {"resume/me"}
            await tl.expect("mqtt.PUBACK", within=STEP, direction="in",
                            conn_id=second.server_conn_id(tl))
            assert session.inflight == {}
            # Clean Start 1 discards it
            third, connack = await raw_connect(broker, "same-id", clean=True)
            assert not connack.session_present
            assert broker.sessions["same-id"].subscriptions == {}
            await third.close()
        assert_clean(tl)
    asyncio.run(main())


def test_persistent_3_1_1_session_queues_while_offline():
    """MQTT 3.1.1 Clean Session 0: QoS 1/2 messages kept while the client is away."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            raw, _ = await raw_connect(broker, "durable", version=4, clean=False)
            await raw_subscribe(raw, "durable/#", qos=2)
            await raw.send(Disconnect())
            await raw.closed()
            await tl.expect("conn.close", within=STEP, conn_id=raw.server_conn_id(tl))
            assert broker.sessions["durable"].client is None
            assert await broker.publish("durable/a", b"q1", qos=1) == 1
            assert await broker.publish("durable/b", b"q2", qos=2) == 1
            await broker.publish("durable/c", b"q0", qos=0)      # not kept
            assert len(broker.sessions["durable"].queue) == 2
            raw, connack = await raw_connect(broker, "durable", version=4, clean=False)
            assert connack.session_present
            one = await raw.expect(Publish)
            two = await raw.expect(Publish)
            assert (one.payload, one.qos, two.payload, two.qos) == (b"q1", 1, b"q2", 2)
            await raw.send(Puback(one.packet_id))
            await raw.send(Pubrec(two.packet_id))
            assert (await raw.expect(Pubrel)).packet_id == two.packet_id
            await raw.send(Pubcomp(two.packet_id))
            await raw.send(Pingreq())
            await raw.expect(Pingresp)
            assert broker.sessions["durable"].inflight == {}
            assert broker.sessions["durable"].to_json()["queued"] == 0
            await raw.close()
        assert_clean(tl)
    asyncio.run(main())


def test_will_messages_normal_disconnect_and_delay():
    """MQTT 5.0 §3.1.2.5: Will on a dropped connection and on DISCONNECT 0x04, not on
    0x00; Will Delay cancelled by a reconnect (MQTT-3.1.3-9)."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            watcher, _ = await raw_connect(broker, "watcher")
            await raw_subscribe(watcher, "will/#", qos=1)

            def with_will(name: str, **props: Any) -> dict[str, Any]:
                return {"will": Will(f"will/{name}", name.encode(), 1, False,
                                     Properties.of(**props))}

            raw, _ = await raw_connect(broker, "normal", **with_will("normal"))
            await raw.send(Disconnect(0))
            await raw.closed()
            raw, _ = await raw_connect(broker, "dropped", **with_will("dropped",
                                                                        content_type="t"))
            await raw.close()
            got = await watcher.expect(Publish)
            assert got.topic == "will/dropped" and got.properties.content_type == "t"
            await watcher.send(Puback(got.packet_id))
            raw, _ = await raw_connect(broker, "with-will", **with_will("with-will"))
            await raw.send(Disconnect(0x04))
            assert (await watcher.expect(Publish)).topic == "will/with-will"
            assert [e.decoded["client_id"] for e in tl.filter("mqtt.will")] == [
                "dropped", "with-will"]
            # delayed will: a reconnect within the delay cancels it
            raw, _ = await raw_connect(broker, "delayed", session_expiry_interval=30,
                                       **with_will("delayed", will_delay_interval=1))
            await raw.close()
            await tl.expect("conn.close", within=STEP, conn_id=raw.server_conn_id(tl))
            raw, connack = await raw_connect(broker, "delayed", clean=False)
            assert connack.session_present
            await tl.expect_none("mqtt.will", during=1.3,
                                 where=lambda e: e.decoded["client_id"] == "delayed")
            await raw.send(Disconnect(0))
            await watcher.close()
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


def test_retained_messages_and_unsubscribe():
    """Retained messages on subscribe (retain flag set), deleted by an empty payload;
    UNSUBACK codes 0x00 / 0x11 and no delivery after UNSUBSCRIBE."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            pub, _ = await raw_connect(broker, "publisher")
            await pub.send(Publish("ret/a", b"kept", qos=0, retain=True))
            await pub.send(Publish("ret/b", b"gone", qos=0, retain=True))
            await pub.send(Publish("ret/b", b"", qos=0, retain=True))
            await pub.send(Pingreq())
            await pub.expect(Pingresp)
            assert set(broker.retained) == {"ret/a"}
            sub, _ = await raw_connect(broker, "late")
            await raw_subscribe(sub, "ret/+", qos=1, subscription_identifier=7)
            got = await sub.expect(Publish)
            assert got.retain and got.payload == b"kept"
            assert got.properties.subscription_identifiers == [7]
            await raw_subscribe(sub, "ret/a", qos=0, pid=2)        # exact filter, overlapping
            again = await sub.expect(Publish)
            assert again.retain and again.qos == 0
            await pub.send(Publish("ret/a", b"live", qos=1, packet_id=1))
            await pub.expect(Puback)
            live = await sub.expect(Publish)          # one delivery, at the highest QoS
            assert not live.retain and live.qos == 1
            assert sorted(live.properties.subscription_identifiers) == [7]
            await sub.send(Puback(live.packet_id))
            await sub.send(Unsubscribe(3, ["ret/+", "never"]))
            assert (await sub.expect(Unsuback)).reason_codes == [0, 0x11]
            await sub.send(Unsubscribe(4, ["ret/a"]))
            await sub.expect(Unsuback)
            await pub.send(Publish("ret/a", b"unheard", qos=1, packet_id=2))
            assert (await pub.expect(Puback)).reason_code == 0x10
            sub3, _ = await raw_connect(broker, "v3sub", version=4)
            await raw_subscribe(sub3, "ret/a", qos=1)
            assert (await sub3.expect(Publish)).payload == b"kept"   # still the retained one
            await sub3.send(Unsubscribe(2, ["ret/a"]))
            assert (await sub3.expect(Unsuback)).reason_codes == []
            for c in (pub, sub, sub3):
                await c.close()
        assert_clean(tl)
    asyncio.run(main())


def test_qos2_inbound_duplicates_and_unknown_ids():
    """MQTT-4.3.3: a re-sent QoS 2 PUBLISH is delivered once; unknown Packet Ids
    are answered with 0x92 and recorded as warnings."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)
            inbound: list[InboundRecord] = []
            binding.set_sink(inbound.append)
            raw, _ = await raw_connect(broker, "qos2")
            await raw.send(Publish(CTRL_TOPIC, b"once", qos=2, packet_id=9))
            assert (await raw.expect(Pubrec)).packet_id == 9
            await raw.send(Publish(CTRL_TOPIC, b"once", qos=2, packet_id=9, dup=True))
            assert (await raw.expect(Pubrec)).packet_id == 9
            await raw.send(Pubrel(9))
            assert (await raw.expect(Pubcomp)).reason_code == 0
            assert [r.data for r in inbound] == [b"once"]
            await raw.send(Pubrel(10))
            assert (await raw.expect(Pubcomp)).reason_code == 0x92
            await raw.send(Pubrec(11))
            assert (await raw.expect(Pubrel)).reason_code == 0x92
            await raw.send(Puback(12))
            await raw.send(Pubcomp(13))
            await raw.send(Pingreq())
            await raw.expect(Pingresp)
            warned = [v for e in tl.filter("mqtt.violation") for v in e.decoded]
            assert [v["code"] for v in warned] == ["packet-id-unknown"] * 4
            assert {v["severity"] for v in warned} == {"warning"}
            await raw.close()
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


def test_receive_maximum_and_maximum_packet_size_of_the_client():
    """MQTT-3.3.4-9 (Receive Maximum) and MQTT-3.1.2-25 (Maximum Packet Size)."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            raw, _ = await raw_connect(broker, "slow", receive_maximum=1,
                                       maximum_packet_size=100)
            await raw_subscribe(raw, "rm", qos=1)
            await broker.publish("rm", b"one", qos=1)
            await broker.publish("rm", b"two", qos=1)
            await broker.publish("rm", b"x" * 200, qos=0)         # too large: dropped
            first = await raw.expect(Publish)
            assert first.payload == b"one" and not raw.packets
            assert len(broker.sessions["slow"].queue) == 1
            await raw.send(Puback(first.packet_id))
            second = await raw.expect(Publish)
            assert second.payload == b"two"
            dropped = tl.filter("mqtt.dropped")[0].decoded
            assert dropped["size"] > 100 and "Maximum Packet Size" in dropped["reason"]
            await raw.close()
        assert_clean(tl)
    asyncio.run(main())


def test_message_expiry_interval_counts_down_while_queued():
    """MQTT-3.3.2-5/6: queued messages carry the remaining interval; expired ones are dropped."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            raw, _ = await raw_connect(broker, "expiring", clean=True,
                                       session_expiry_interval=60)
            await raw_subscribe(raw, "exp", qos=1)
            await raw.send(Disconnect(0))
            await raw.closed()
            await tl.expect("conn.close", within=STEP, conn_id=raw.server_conn_id(tl))
            await broker.publish("exp", b"kept", qos=1,
                                 properties=Properties.of(message_expiry_interval=100))
            await broker.publish("exp", b"dead", qos=1,
                                 properties=Properties.of(message_expiry_interval=0))
            raw, connack = await raw_connect(broker, "expiring", clean=False)
            assert connack.session_present
            got = await raw.expect(Publish)
            assert got.payload == b"kept"
            assert 0 < got.properties.message_expiry_interval <= 100
            await raw.send(Puback(got.packet_id))
            await raw.send(Pingreq())
            await raw.expect(Pingresp)
            assert tl.filter("mqtt.dropped")[0].decoded["reason"] == "message expired"
            await raw.close()
        assert_clean(tl)
    asyncio.run(main())


# --------------------------------------------------------------------------- binding and waits


def test_binding_topic_resolution_and_failures():
    """BindingClosed when the agent is unknown, has no known topic or is not subscribed;
    explicit topics win over learned, Response Information and single subscriptions."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC, qos=2)
            assert binding.qos == 2
            for bad in ("with/+/wildcard", ""):
                with pytest.raises(ValueError):
                    broker.attach_controller("x", bad)
            with pytest.raises(ValueError):
                broker.attach_controller("x", CTRL_TOPIC)
            with pytest.raises(ValueError):
                MQTTBinding(broker, "x", "t", qos=3)
            with pytest.raises(BindingClosed, match="not connected"):
                await binding.send(b"x", to_id=AGENT)
            raw, _ = await raw_connect(broker, "agent-raw",
                                       user_properties=[("usp-endpoint-id", AGENT)])
            with pytest.raises(BindingClosed, match="no MQTT topic known"):
                await binding.send(b"x", to_id=AGENT)
            await raw_subscribe(raw, "one/+/filter", qos=1)
            assert binding.agent_topic(AGENT) is None             # a wildcard filter only
            await raw_subscribe(raw, "agent/inbox", qos=2, pid=2)
            assert binding.agent_topic(AGENT) is None             # two filters: ambiguous
            binding.set_agent_topic(AGENT, "elsewhere")
            with pytest.raises(BindingClosed, match="not subscribed"):
                await binding.send(b"x", to_id=AGENT)
            binding.set_agent_topic(AGENT, "agent/inbox")
            await binding.send(b"explicit", to_id=AGENT)
            got = await raw.expect(Publish)
            assert got.topic == "agent/inbox" and got.qos == 2
            await raw.send(Pubrec(got.packet_id))
            await raw.expect(Pubrel)
            await raw.send(Pubcomp(got.packet_id))
            binding.set_agent_topic(AGENT, None)
            # learned: the Response Topic of a PUBLISH whose Record is from the agent
            await raw.send(Publish(CTRL_TOPIC, b"\xff\xff", qos=0,
                                   properties=Properties.of(response_topic="agent/inbox")))
            await raw.send(Publish(CTRL_TOPIC, usp_record(), qos=0,
                                   properties=Properties.of(response_topic="agent/inbox")))
            await raw.send(Pingreq())
            await raw.expect(Pingresp)
            assert binding.agent_topic(AGENT) == "agent/inbox"
            await binding.close()
            await binding.close()
            assert binding.closed
            with pytest.raises(BindingClosed, match="closed"):
                await binding.send(b"x", to_id=AGENT)
            again = broker.attach_controller(CTRL, CTRL_TOPIC)     # the topic is free again
            assert again is not binding
            await raw.close()
        assert not tl.filter("conn.handler_error")
    asyncio.run(main())


def test_sink_errors_do_not_drop_the_agent():
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)

            def broken(record: InboundRecord) -> None:
                raise RuntimeError("sink bug")

            binding.set_sink(broken)
            raw, _ = await raw_connect(broker, "agent")
            await raw.send(Publish(CTRL_TOPIC, b"x", qos=1, packet_id=1))
            assert (await raw.expect(Puback)).reason_code == 0
            assert "sink bug" in tl.filter("mqtt.sink_error")[0].decoded["error"]
            await raw.close()
    asyncio.run(main())


def test_wait_for_client_and_subscription_forms():
    async def main():
        tl = Timeline()
        broker = await MQTTBroker(tl).start()
        with pytest.raises(TimeoutError, match="no MQTT client"):
            await broker.wait_for_client("x", 0.05)
        with pytest.raises(TimeoutError, match="no MQTT subscription"):
            await broker.wait_for_subscription("x", 0.05)
        by_pred = asyncio.create_task(broker.wait_for_client(lambda c: c.username == "agent"))
        by_sub = asyncio.create_task(broker.wait_for_subscription(
            lambda c, s: s.topic_filter.startswith("w/") and c.client_id == "waited"))
        bad = asyncio.create_task(broker.wait_for_client(lambda c: 1 / 0))
        never = asyncio.create_task(broker.wait_for_subscription("never", STEP))
        raw, _ = await raw_connect(broker, "waited")
        client = await asyncio.wait_for(by_pred, STEP)
        assert client.client_id == "waited"
        with pytest.raises(ZeroDivisionError):
            await asyncio.wait_for(bad, STEP)
        await raw_subscribe(raw, "w/1", "w/2")
        got_client, sub = await asyncio.wait_for(by_sub, STEP)
        assert got_client is client and sub.topic_filter == "w/1"
        assert (await broker.wait_for_subscription("w/2", 0.1))[1].topic_filter == "w/2"
        assert await broker.wait_for_client("waited", 0.1) is client
        await broker.close()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(never, STEP)
        await raw.close()
    asyncio.run(main())


def test_connect_timeout_and_context_manager():
    async def main():
        tl = Timeline()
        async with MQTTBroker(tl, connect_timeout=0.2) as broker:
            assert broker.port and broker.host == "127.0.0.1" and not broker.tls
            raw = await RawClient.open(broker)
            assert await raw.closed() == []
            assert tl.filter("mqtt.connect_timeout")
            await tl.expect("conn.close", within=STEP, direction="in")
            assert broker.connections == {}
    asyncio.run(main())


# --------------------------------------------------------------------------- summaries and state


def test_packet_summary_covers_every_packet_type():
    props = Properties.of(content_type="c", correlation_data=b"\x00\xff",
                          user_properties=[("a", "b")], subscription_identifiers=[1, 2])
    props.add(P.CONTENT_TYPE, "dup")
    assert properties_summary(props) == {
        "content_type": "c", "correlation_data": "00ff", "user_properties": [["a", "b"]],
        "subscription_identifiers": [1, 2], "duplicates": {"content_type": ["c", "dup"]}}
    assert properties_summary(Properties()) == {}
    packets = [
        Connect(client_id="c", username="u", password=b"pw",
                will=Will("w", b"p", 1, True, Properties.of(content_type="x"))),
        Connack(True, 0, Properties.of(assigned_client_identifier="a")),
        Publish("t", b"abc", 1, False, False, 5, props),
        Puback(5, 0x10), Pubrec(5), Pubrel(5), Pubcomp(5, 0x92),
        Subscribe(1, [Subscription("a/#", 2, True)]), Suback(1, [2, 0x80]),
        Unsubscribe(2, ["a/#"]), Unsuback(2, [0x11]), Pingreq(), Pingresp(),
        Disconnect(0x8E), Auth(0x18, Properties.of(authentication_method="m")),
    ]
    for packet in packets:
        summary = packet_summary(packet, 5)
        assert summary["type"] == packet.TYPE.name
        json.dumps(summary)
        again = packet_summary(decode(encode(packet, 5), 5), 5)
        assert again["type"] == summary["type"]
        assert KINDS[packet.TYPE] == f"mqtt.{packet.TYPE.name}"
    connect = packet_summary(packets[0])
    assert connect["password_length"] == 2 and connect["will"]["payload_length"] == 1
    assert connect["will"]["properties"] == {"content_type": "x"}
    assert packet_summary(packets[4])["reason"] == "SUCCESS"
    assert packet_summary(Suback(1, [0x80]), 4)["reasons"] == ["UNSPECIFIED_ERROR"]
    assert packet_summary(Connack(False, 5), 4)["reason"] == "NOT_AUTHORIZED"
    assert packet_summary(Connack(False, 9), 4)["reason"] == "reserved (9)"
    assert packet_summary(Disconnect(0), 5)["reason"] == "NORMAL_DISCONNECTION"
    published = packet_summary(Publish("t", b"", 0))
    assert "packet_id" not in published and published["payload_length"] == 0
    v = Violation("R", "m", "c", "f", reason_code=0x81)
    assert violation_summary(v) == {"rule": "R", "message": "m", "code": "c", "field": "f",
                                    "severity": "error", "reason_code": 0x81}


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=2, max_size=200), st.sampled_from([4, 5]))
def test_summary_of_any_decodable_packet_is_json(data, version):
    try:
        packet = decode(data, version)
    except MQTTDecodeError:
        return
    json.dumps(packet_summary(packet, version))


def test_session_state_helpers():
    session = MQTTSession("c", expiry_interval=10, disconnected_at=100.0)
    assert not session.expired(105.0) and session.expired(110.0)
    session.expiry_interval = 0xFFFFFFFF
    assert not session.expired(1e9)
    session.disconnected_at = None
    assert not session.expired(1e9)
    ids = [session.next_packet_id() for _ in range(3)]
    assert ids == [1, 2, 3]
    session.inflight = {i: None for i in range(1, 65536)}  # type: ignore[misc]
    assert session.next_packet_id() is None
    session.inflight = {1: None}  # type: ignore[dict-item]
    session._next_id = 65535
    assert session.next_packet_id() == 2        # wraps and skips ids in use
    sub = ClientSubscription("a/#", 1, identifier=4)
    assert sub.to_json()["identifier"] == 4


# --------------------------------------------------------------------------- TP-469 section 11 hooks


def test_scenario_refuse_next_connections_counts_down():
    """TP-469 11.6: the next N connections are closed at accept, later ones accepted;
    the count starts when the field is set, and setting it again restarts it."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            broker.set_scenario(refuse_next_connections=2)
            for left in (1, 0):
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", broker.port), STEP)
                assert await asyncio.wait_for(reader.read(), STEP) == b""
                writer.close()
                assert actions(tl, "refuse_connection")[-1]["left"] == left
            raw, connack = await raw_connect(broker, "third")
            assert connack.reason_code == 0 and broker.refused == 2
            broker.set_scenario(withhold_pingresp=False)   # other changes keep the count
            second, connack = await raw_connect(broker, "fourth")
            assert connack.reason_code == 0
            broker.set_scenario(refuse_next_connections=1)
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", broker.port), STEP)
            assert await asyncio.wait_for(reader.read(), STEP) == b""
            writer.close()
            broker.scenario = MQTTScenario()               # a whole scenario resets it
            assert broker.refused == 3
            await raw.close()
            await second.close()
        assert_clean(tl)
    asyncio.run(main())


@pytest.mark.parametrize("version", [5, 4])
def test_scenario_disconnect_reason_code_is_one_shot(version):
    """TP-469 11.16: DISCONNECT with the Reason Code to every connected 5.0 client (a
    3.1.1 connection is closed without one); the field is cleared afterwards."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            raw, _ = await raw_connect(broker, "dropped", version=version)
            new = broker.set_scenario(disconnect_reason_code=0x8B)
            assert new.disconnect_reason_code is None
            assert broker.scenario.disconnect_reason_code is None
            packets = await raw.closed()
            if version == 5:
                assert [(type(p), p.reason_code) for p in packets] == [(Disconnect, 0x8B)]
            else:
                assert packets == []
            assert actions(tl, "disconnect")[0]["reason_code"] == 0x8B
            again, _ = await raw_connect(broker, "dropped", version=version)
            broker.set_scenario(withhold_pingresp=False)
            await again.send(Pingreq())
            await again.expect(Pingresp)                   # not disconnected a second time
            assert len(actions(tl, "disconnect")) == 1
            await again.close()
        assert_clean(tl)
    asyncio.run(main())


@pytest.mark.parametrize("version", [5, 4])
def test_scenario_agent_topic_content_type_and_reply_suffix(version):
    """TP-469 11.9/11.13 (agent_topic), 11.15 (publish_content_type), 11.14
    (controller_reply_suffix: the reply-to the controller gives, routed back to it)."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)
            inbound: list[InboundRecord] = []
            binding.set_sink(inbound.append)
            raw, _ = await raw_connect(broker, AGENT, version=version)
            await raw_subscribe(raw, "usp/agent/x/#", "new-11-9/#")
            binding.set_agent_topic(AGENT, "usp/agent/x")
            broker.set_scenario(agent_topic="new-11-9", controller_reply_suffix="/r",
                                publish_content_type="application/vnd.bbf.usp.msg")
            await binding.send(b"payload", to_id=AGENT)
            got = await raw.expect(Publish)
            await raw.send(Puback(got.packet_id))
            if version == 5:
                assert got.topic == "new-11-9"
                assert got.properties.response_topic == f"{CTRL_TOPIC}/r"
                assert got.properties.content_type == "application/vnd.bbf.usp.msg"
                broker.set_scenario(publish_content_type="")
                await binding.send(b"bare", to_id=AGENT)
                bare = await raw.expect(Publish)
                await raw.send(Puback(bare.packet_id))
                assert bare.properties.content_type is None
                answer = Publish(f"{CTRL_TOPIC}/r", usp_record(), qos=0,
                                 properties=Properties.of(response_topic="usp/agent/x"))
            else:
                assert got.topic == "new-11-9/reply-to=usp%2Fcontroller%2Fr"
                answer = Publish(f"{CTRL_TOPIC}/r/reply-to=usp%2Fagent%2Fx", usp_record(), qos=0)
            await raw.send(answer)                          # the answer on the reply-to topic
            await raw.send(Pingreq())
            await raw.expect(Pingresp)
            assert [r.reply_to for r in inbound] == ["usp/agent/x"]
            broker.scenario = MQTTScenario()
            await binding.send(b"again", to_id=AGENT)
            plain = await raw.expect(Publish)
            assert plain.topic.startswith("usp/agent/x")
            await raw.close()
        assert_clean(tl)
    asyncio.run(main())


def test_new_scenario_fields_validated():
    for bad in ({"refuse_next_connections": -1}, {"disconnect_reason_code": 256},
                {"disconnect_reason_code": 2}, {"agent_topic": "a/+"},
                {"controller_reply_suffix": "no-slash"}, {"controller_reply_suffix": "/a/#"}):
        with pytest.raises(ValueError):
            MQTTScenario(**bad)
    data = MQTTScenario(agent_topic="t", controller_reply_suffix="/r").to_json()
    assert data["agent_topic"] == "t" and data["controller_reply_suffix"] == "/r"


@pytest.mark.parametrize("version", [5, 4])
def test_inbound_packets_carry_protocol_level_and_connect_records_are_checked(version):
    """TP-469 11.12/11.14 (version-specific checks need the connection's version) and
    11.17 (the MQTTConnectRecord's version and the Topic Filters covering its topic)."""
    async def main():
        tl = Timeline()
        async with running(tl) as broker:
            binding = broker.attach_controller(CTRL, CTRL_TOPIC)
            binding.set_sink(lambda _r: None)
            raw, _ = await raw_connect(broker, AGENT, version=version)
            await raw_subscribe(raw, "usp/agent/x/#")
            for topic in ("usp/agent/x", "usp/other", "usp/agent/+"):
                rec = records.mqtt_connect_record(to_id=CTRL, from_id=AGENT,
                                                  mqtt_version=1 if version == 5 else 0,
                                                  subscribed_topic=topic)
                await raw.send(Publish(CTRL_TOPIC, records.serialize(rec), qos=0))
            await raw.send(Publish(CTRL_TOPIC, b"not a record", qos=0))
            await raw.send(Pingreq())
            await raw.expect(Pingresp)
            inbound = [e for e in tl.entries if e.direction == "in" and e.kind.startswith(
                "mqtt.") and e.kind not in ("mqtt.connect_record",)]
            assert inbound and all(e.decoded["protocol_level"] == version for e in inbound)
            seen = [e.decoded for e in tl.filter("mqtt.connect_record")]
            assert [d["subscribed_topic"] for d in seen] == ["usp/agent/x", "usp/other",
                                                             "usp/agent/+"]
            # a filter is no Topic Name: nothing "covers" usp/agent/+
            assert [d["subscribed_by"] for d in seen] == [["usp/agent/x/#"], [], []]
            assert [d["wildcard"] for d in seen] == [False, False, True]
            assert {d["version"] for d in seen} == {"V5" if version == 5 else "V3_1_1"}
            assert {d["protocol_level"] for d in seen} == {version}
            assert {d["from_id"] for d in seen} == {AGENT}
            json.dumps(seen)
            await raw.close()
        assert_clean(tl)
    asyncio.run(main())
