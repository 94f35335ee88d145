"""External-broker mode: the Controller joins an operator's MQTT broker as a client.

Where an EUT can only reach a broker the operator runs, the suite cannot
own the broker, so packet-level MQTT checks (CONNECT properties, SUBSCRIBE,
CONNACK scenarios) are not applicable; USP-level cases still run. This
module is the :class:`~conformance.mtp.binding.Binding` for that mode,
built on paho-mqtt (its network loop runs in paho's own thread; inbound
messages are handed to the asyncio loop thread-safely).

Publishing follows TR-369's MQTT binding: the Record is the PUBLISH payload,
and on MQTT 5.0 the Response Topic property names the controller's topic
and Content Type is ``usp.msg`` (R-MQTT.*); on 3.1.1 the agent learns the
reply topic from its own configuration.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conformance.mtp.binding import Binding, BindingClosed, InboundRecord
from conformance.mtp.timeline import Timeline
from conformance.usp.records import RecordDecodeError, parse_record

MTP = "mqtt"
USP_CONTENT_TYPE = "usp.msg"
_ids = itertools.count(1)


@dataclass(frozen=True)
class BrokerAccount:
    """How to reach the operator's broker."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    client_id: str = ""
    mqtt_version: int = 5          # 5 or 4 (3.1.1)
    keepalive: int = 60
    ssl_context: ssl.SSLContext | None = None


class ExternalBrokerBinding(Binding):
    """A controller endpoint on an external MQTT broker (paho-mqtt client)."""

    mtp = MTP
    owns_transport = False  # the operator's broker: packets are not observable

    def __init__(self, account: BrokerAccount, *, controller_topic: str,
                 agent_topics: dict[str, str] | None = None,
                 timeline: Timeline | None = None) -> None:
        super().__init__()
        self.account = account
        self.controller_topic = controller_topic
        self.agent_topics: dict[str, str] = dict(agent_topics or {})
        self.timeline = timeline
        self.conn_id = f"mqtt-ext-{next(_ids)}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[int] | None = None
        self._subscribed: asyncio.Future[None] | None = None
        self._client: mqtt.Client | None = None
        self._closed = False

    @property
    def address(self) -> str:
        return self.controller_topic

    async def start(self, *, timeout: float = 10.0) -> ExternalBrokerBinding:
        """Connect, subscribe to the controller topic; ConnectionError on failure."""
        loop = self._loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self._subscribed = loop.create_future()
        acct = self.account
        protocol = mqtt.MQTTv5 if acct.mqtt_version == 5 else mqtt.MQTTv311
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=acct.client_id,
                             protocol=protocol)
        if acct.username is not None:
            client.username_pw_set(acct.username, acct.password)
        if acct.ssl_context is not None:
            client.tls_set_context(acct.ssl_context)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        self._client = client
        try:
            await loop.run_in_executor(None, lambda: client.connect(acct.host, acct.port,
                                                                    acct.keepalive))
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionError(f"external MQTT broker {acct.host}:{acct.port} unreachable: "
                                  f"{exc}") from None
        sock = client.socket()
        if sock is not None:  # paho leaves Nagle on: ~44 ms per round trip (interop notes)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.loop_start()
        try:
            code = await asyncio.wait_for(self._connected, timeout)
            if code != 0:
                raise ConnectionError(f"external MQTT broker refused the controller: "
                                      f"{mqtt.connack_string(code) if code < 6 else code}")
            client.subscribe(self.controller_topic, qos=1)
            await asyncio.wait_for(self._subscribed, timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise ConnectionError(f"external MQTT broker {acct.host}:{acct.port}: no CONNACK/SUBACK "
                                  f"within {timeout:g}s") from None
        except ConnectionError:
            await self.close()
            raise
        self._record("conn.open", "local", {"broker": f"{acct.host}:{acct.port}",
                                            "topic": self.controller_topic})
        return self

    # paho callbacks run on paho's thread: hop to the loop.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        code = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        self._call(self._resolve, self._connected, code)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        self._call(self._resolve, self._subscribed, None)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if not self._closed:
            self._call(self._record, "conn.close", "in", {"reason": str(reason_code)})

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        props = getattr(message, "properties", None)
        reply_to = getattr(props, "ResponseTopic", None) if props is not None else None
        inbound = InboundRecord(bytes(message.payload), MTP, self.conn_id, time.monotonic(),
                                reply_to=reply_to, meta={"topic": message.topic})
        self._call(self._inbound, inbound)

    def _call(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    @staticmethod
    def _resolve(fut: asyncio.Future | None, value: object) -> None:  # type: ignore[type-arg]
        if fut is not None and not fut.done():
            fut.set_result(value)

    def _inbound(self, inbound: InboundRecord) -> None:
        self._record("mqtt.PUBLISH", "in", {"topic": inbound.meta.get("topic"),
                                            "response_topic": inbound.reply_to}, inbound.data)
        if inbound.reply_to:
            try:
                self.agent_topics.setdefault(parse_record(inbound.data).from_id, inbound.reply_to)
            except RecordDecodeError:
                pass
        self.deliver(inbound)

    async def send(self, data: bytes, *, to_id: str) -> None:
        topic = self.agent_topics.get(to_id)
        if topic is None:
            raise BindingClosed(f"no MQTT topic known for agent {to_id}: set it in the EUT profile "
                                "(mtp topic) or wait for a message carrying a Response Topic")
        if self._client is None or self._closed:
            raise BindingClosed("external MQTT binding is closed")
        props = None
        if self.account.mqtt_version == 5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = self.controller_topic
            props.ContentType = USP_CONTENT_TYPE
        info = self._client.publish(topic, data, qos=1, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BindingClosed(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        self._record("mqtt.PUBLISH", "out", {"topic": topic,
                                             "response_topic": self.controller_topic}, data)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.run_in_executor(None, client.loop_stop), 10.0)

    def _record(self, kind: str, direction: str, decoded: object, raw: bytes | None = None) -> None:
        if self.timeline is not None:
            self.timeline.record(kind, direction=direction, mtp=MTP, conn_id=self.conn_id,
                                 raw=raw, decoded=decoded, note="external broker")
