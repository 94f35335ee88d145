"""The suite's MQTT broker (asyncio, MQTT 3.1.1 and 5.0) that USP Agents under test connect to.

It plays the MQTT server of the TR-369 MQTT binding (R-MQTT.39..R-MQTT.47)
and gives test cases what TP-469 section 11 needs to see and to provoke:

* a working broker for both versions: CONNECT/CONNACK with Session Present,
  Assigned Client Identifier for an empty ClientID on 5.0 (R-MQTT.8,
  R-MQTT.9, TP-469 11.4), Response Information on request (R-MQTT.12), the
  ``subscribe-topic`` User Property (R-MQTT.44, R-MQTT.15), Server Keep
  Alive (TP-469 11.7); User Name / Password checked when credentials are
  configured, or a TLS client certificate (R-MQTT.42, R-MQTT.43); Keep
  Alive enforced at 1.5 times; SUBSCRIBE / UNSUBSCRIBE with wildcard
  filters (R-MQTT.45); PUBLISH routing with QoS 0, 1 and 2 both ways
  (R-MQTT.46), retained messages, Will Messages (with Will Delay), session
  takeover and persistent sessions, inbound Topic Aliases, DISCONNECT both
  ways with 5.0 Reason Codes; Response Topic, Content Type, Correlation
  Data and User Properties forwarded as received;
* every packet both ways in the timeline as ``mqtt.<TYPE>`` with the raw
  bytes and a summary (:mod:`~conformance.mtp.mqtt.summary`), every client
  packet checked once with :func:`~conformance.mtp.mqtt.validate.validate`;
* in-process controller endpoints (:meth:`MQTTBroker.attach_controller`,
  :class:`~conformance.mtp.mqtt.binding.MQTTBinding`);
* :class:`MQTTScenario` hooks, each action taken recorded as ``mqtt.scenario``.

Errors follow MQTT 5.0 §4.13 / MQTT 3.1.1 §4.8: a packet that cannot be
decoded is recorded as ``mqtt.decode_error`` and the connection is closed
(5.0: after a DISCONNECT, or a CONNACK when the CONNECT itself is broken);
a client packet that breaks a MUST is recorded as ``mqtt.violation`` and,
unless ``MQTTScenario.close_on_violation`` is False, answered the same way.

Timeline kinds (mtp ``mqtt``): ``mqtt.<TYPE>``, ``mqtt.violation``
(decoded: list of :func:`~conformance.mtp.mqtt.summary.violation_summary`),
``mqtt.decode_error``, ``mqtt.scenario`` (decoded ``{action, ...}``),
``mqtt.keepalive_timeout``, ``mqtt.connect_timeout``,
``mqtt.session_taken_over``, ``mqtt.will``, ``mqtt.unrouted``,
``mqtt.dropped``, ``mqtt.controller_attached``, ``mqtt.sink_error``,
``mqtt.read_error`` and ``mqtt.connect_record`` (an agent's MQTTConnectRecord:
its version, ``subscribed_topic`` and the agent's Topic Filters covering it).
Every inbound packet's decoded form carries the connection's ``protocol_level``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import itertools
import logging
import math
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self

from conformance.mtp.binding import BindingClosed, InboundRecord
from conformance.mtp.mqtt.binding import USP_CONTENT_TYPE, MQTTBinding
from conformance.mtp.mqtt.codec import MQTTDecoder, encode
from conformance.mtp.mqtt.constants import PacketType, ProtocolVersion
from conformance.mtp.mqtt.errors import (
    MQTTDecodeError,
    MQTTEncodeError,
    Severity,
    Violation,
)
from conformance.mtp.mqtt.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)
from conformance.mtp.mqtt.properties import Properties, PropertyId
from conformance.mtp.mqtt.reason_codes import REASON_CODES
from conformance.mtp.mqtt.session import (
    NEVER_EXPIRES,
    ClientSubscription,
    Inflight,
    Message,
    MQTTClient,
    MQTTSession,
    Queued,
)
from conformance.mtp.mqtt.summary import (
    KINDS,
    packet_summary,
    properties_summary,
    violation_summary,
)
from conformance.mtp.mqtt.topics import (
    topic_filter_problems,
    topic_matches,
    topic_name_problems,
)
from conformance.mtp.mqtt.validate import Role, validate
from conformance.mtp.timeline import Timeline
from conformance.mtp.scenario import ScenarioHost, ServerHost
from conformance.mtp.waiting import StateChanges
from conformance.mtp.transport import Connection, Server
from conformance.usp.records import RecordDecodeError, parse_record, record_kind
from conformance.usp.schema import MQTTConnectRecord, Record

__all__ = ["DEFAULT_AGENT_TOPIC", "MTP", "MQTTBroker", "MQTTScenario"]

_log = logging.getLogger(__name__)

MTP: Final = "mqtt"
P = PropertyId
V5: Final = ProtocolVersion.V5
#: Default Response Information / ``subscribe-topic`` template: ``{endpoint_id}``
#: is the CONNECT's ``usp-endpoint-id`` (else the Client Identifier), and
#: ``{client_id}`` the Client Identifier in use.
DEFAULT_AGENT_TOPIC: Final = "usp/agent/{endpoint_id}"
#: Largest packet the broker reads (a bigger one is a 0x95 decode error).
DEFAULT_MAX_PACKET_SIZE: Final = 16 * 1024 * 1024
_READ_SIZE: Final = 65_536
_NO_PROPS: Final = Properties()   # shared, never mutated
_STRIPPED: Final = frozenset({P.TOPIC_ALIAS, P.SUBSCRIPTION_IDENTIFIER})
_REPLY_TO: Final = "/reply-to="   # R-MQTT.24 / R-MQTT.25
# CONNACK codes across versions: 3.1.1 return code <-> 5.0 Reason Code.
_V3_TO_V5: Final = {1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}
_V5_TO_V3: Final = {0x84: 1, 0x85: 2, 0x88: 3, 0x89: 3, 0x86: 4, 0x8C: 4, 0x87: 5, 0x8A: 5}
# Violations that make a 3.1.1 server answer CONNECT with a return code.
_V3_CONNECT_CODES: Final = {"protocol-level": 1, "protocol-name": 1,
                            "client-id-empty-without-clean-session": 2}


# --------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class MQTTScenario:
    """How the broker behaves for the next connections and packets.

    Set it with ``broker.scenario = MQTTScenario(...)`` or
    ``broker.set_scenario(field=value)``; it is read at each decision point,
    so a change applies to open connections too.  CONNACK fields apply to
    MQTT 5.0 clients only (3.1.1 has no properties).
    """

    #: Refuse every CONNECT with this code: a 5.0 Reason Code (0x80..) or a
    #: 3.1.1 return code (1..5); each is mapped for the other version.
    connack_reason_code: int | None = None
    #: Client Identifier given to a client whose CONNECT had none (None: generated).
    assigned_client_identifier: str | None = None
    #: False leaves the Assigned Client Identifier out of the CONNACK (negative test).
    send_assigned_client_identifier: bool = True
    #: Response Information template (None: never sent), sent when the client
    #: set Request Response Information to 1 (R-MQTT.12).
    response_information: str | None = DEFAULT_AGENT_TOPIC
    #: Send Response Information even when it was not requested (breaks MQTT-3.1.2-28).
    response_information_unrequested: bool = False
    #: ``subscribe-topic`` User Property templates for the CONNACK (R-MQTT.44); () omits it.
    subscribe_topics: tuple[str, ...] = (DEFAULT_AGENT_TOPIC,)
    #: Further CONNACK User Properties, appended in order.
    connack_user_properties: tuple[tuple[str, str], ...] = ()
    #: Server Keep Alive for the CONNACK, which then governs keep-alive enforcement.
    server_keep_alive: int | None = None
    #: Maximum QoS for the CONNACK (0 or 1) and the highest QoS granted in SUBACK.
    maximum_qos: int | None = None
    #: Maximum Packet Size for the CONNACK, enforced on PUBLISH (0x95).
    maximum_packet_size: int | None = None
    #: Topic Alias Maximum for the CONNACK (0: the client may not use aliases).
    topic_alias_maximum: int = 0
    #: SUBACK code for every Topic Filter (e.g. 0x80 failure; 3.1.1 gets 0x80 for any failure).
    suback_reason_code: int | None = None
    #: SUBACK code per Topic Filter, taking precedence over ``suback_reason_code``.
    suback_reason_codes: tuple[tuple[str, int], ...] = ()
    #: Do not send PUBACK for QoS 1 PUBLISHes (the message is still routed).
    withhold_puback: bool = False
    #: Do not send PUBREC for QoS 2 PUBLISHes (the message is still routed).
    withhold_pubrec: bool = False
    #: Do not answer PINGREQ.
    withhold_pingresp: bool = False
    #: Close every new connection at accept, before TLS (attempts are still counted).
    refuse_connections: bool = False
    #: Close the connection after this many client packets (the last one is handled).
    close_after_packets: int | None = None
    #: Close (5.0: after CONNACK / DISCONNECT with the Reason Code) on a MUST violation.
    close_on_violation: bool = True
    #: A client is disconnected after ``keep_alive * keep_alive_tolerance`` of silence.
    keep_alive_tolerance: float = 1.5
    #: Close this many new connections at accept (before TLS), counted from the moment
    #: the field is set, then accept again: a server that is down for a while (TP-469 11.6).
    refuse_next_connections: int = 0
    #: One-shot: when set, every connected client is sent DISCONNECT with this 5.0 Reason
    #: Code at once (a 3.1.1 client's connection is just closed: 3.1.1 servers send no
    #: DISCONNECT), then the field goes back to None (TP-469 11.16).
    disconnect_reason_code: int | None = None
    #: Topic the controllers PUBLISH to agents on (3.1.1: followed by ``/reply-to=``);
    #: None: the agent's learned or configured topic (TP-469 11.9 and 11.13).
    agent_topic: str | None = None
    #: Content Type of the controllers' PUBLISHes to 5.0 agents: None keeps each
    #: controller's own (``usp.msg``), "" leaves the property out (TP-469 11.15).
    publish_content_type: str | None = None
    #: Appended to a controller's topic to form the "reply to" topic its PUBLISHes carry
    #: (5.0 Response Topic, 3.1.1 ``/reply-to=``); PUBLISHes to that topic reach the same
    #: controller. "" (default): the controller's own topic (TP-469 11.14).
    controller_reply_suffix: str = ""

    def __post_init__(self) -> None:
        for name in ("subscribe_topics", "connack_user_properties", "suback_reason_codes"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"{name} must be a sequence, not a string")
            object.__setattr__(self, name, tuple(tuple(v) if isinstance(v, list) else v
                                                 for v in value))
        code = self.connack_reason_code
        if code is not None and not (0 <= code <= 5 or 0x80 <= code <= 0xFF):
            raise ValueError("connack_reason_code must be 0..5 (3.1.1) or 0x80..0xFF (5.0)")
        for value in [self.suback_reason_code, *(c for _, c in self.suback_reason_codes)]:
            if value is not None and not 0 <= value <= 0xFF:
                raise ValueError(f"SUBACK code {value!r} does not fit in a byte")
        if self.maximum_qos not in (None, 0, 1):
            raise ValueError("maximum_qos must be None, 0 or 1")
        if self.server_keep_alive is not None and not 0 <= self.server_keep_alive <= 0xFFFF:
            raise ValueError("server_keep_alive must be 0..65535")
        if not 0 <= self.topic_alias_maximum <= 0xFFFF:
            raise ValueError("topic_alias_maximum must be 0..65535")
        if self.maximum_packet_size is not None and self.maximum_packet_size < 2:
            raise ValueError("maximum_packet_size must be >= 2")
        if self.close_after_packets is not None and self.close_after_packets < 1:
            raise ValueError("close_after_packets must be >= 1")
        if not self.keep_alive_tolerance > 0:
            raise ValueError("keep_alive_tolerance must be > 0")
        if self.refuse_next_connections < 0:
            raise ValueError("refuse_next_connections must be >= 0")
        if self.disconnect_reason_code is not None and not (
                self.disconnect_reason_code == 0 or 0x04 <= self.disconnect_reason_code <= 0xFF):
            raise ValueError("disconnect_reason_code must be a DISCONNECT Reason Code (0..255)")
        if self.agent_topic is not None and topic_name_problems(self.agent_topic):
            raise ValueError(f"agent_topic {self.agent_topic!r} is not a valid Topic Name")
        suffix = self.controller_reply_suffix
        if suffix and (not suffix.startswith("/") or any(c in suffix for c in "+#\0")):
            raise ValueError("controller_reply_suffix must start with '/' and hold no wildcards")

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        out = dataclasses.asdict(self)
        for name in ("subscribe_topics", "connack_user_properties", "suback_reason_codes"):
            out[name] = [list(v) if isinstance(v, tuple) else v for v in getattr(self, name)]
        return out


class _Close(Exception):
    """Internal: stop serving this connection (the transport then closes it)."""


def _connack_code(code: int, v5: bool) -> int:
    if v5:
        return _V3_TO_V5.get(code, code)
    return code if code < 6 else _V5_TO_V3.get(code, 3)


def _connect_level(raw: bytes | None) -> int:
    """Protocol Level of a (possibly broken) CONNECT's bytes, or 0."""
    try:
        assert raw is not None
        pos = 1
        while raw[pos] & 0x80:
            pos += 1
        pos += 1
        name_len = raw[pos] << 8 | raw[pos + 1]
        return raw[pos + 2 + name_len] & 0x7F
    except (AssertionError, IndexError):
        return 0


# --------------------------------------------------------------------------- broker


ClientPredicate = Callable[[MQTTClient], bool]
SubscriptionPredicate = Callable[[MQTTClient, ClientSubscription], bool]


class MQTTBroker(ServerHost, ScenarioHost[MQTTScenario]):
    """An MQTT 3.1.1 + 5.0 server on :class:`~conformance.mtp.transport.Server`.

    ``credentials`` maps User Name -> Password; when given, clients must
    present a matching pair unless they authenticated with a TLS client
    certificate and sent no User Name.  ``ssl_context`` makes it an
    MQTT-over-TLS server (R-MQTT.48, TP-469 11.3).
    """

    MTP_NAME = MTP

    def __init__(self, timeline: Timeline | None = None, ssl_context: ssl.SSLContext | None = None,
                 credentials: Mapping[str, str] | None = None, *,
                 scenario: MQTTScenario | None = None,
                 max_packet_size: int = DEFAULT_MAX_PACKET_SIZE, connect_timeout: float = 10.0,
                 max_queued: int = 1000) -> None:
        self.timeline = timeline
        self.credentials = dict(credentials) if credentials is not None else None
        self.max_packet_size = max_packet_size
        #: Seconds a new connection may take to send its CONNECT.
        self.connect_timeout = connect_timeout
        #: Deliveries kept per offline session (the oldest is dropped beyond this).
        self.max_queued = max_queued
        self._scenario = scenario or MQTTScenario()
        self._server = Server(MTP, self._handle, ssl_context=ssl_context, timeline=timeline,
                              accept_filter=self._accept)
        self._connections: dict[str, MQTTClient] = {}      # conn_id -> every open connection
        self._by_client_id: dict[str, MQTTClient] = {}     # connected clients
        self._by_endpoint: dict[str, MQTTClient] = {}      # usp-endpoint-id / certificate ids
        self._sessions: dict[str, MQTTSession] = {}
        # Subscription index: exact filters by topic, wildcard filters scanned.
        self._exact: dict[str, dict[str, ClientSubscription]] = {}
        self._wild: dict[str, dict[str, ClientSubscription]] = {}
        self._retained: dict[str, Message] = {}
        self._controllers: dict[str, MQTTBinding] = {}
        self._learned_topics: dict[str, str] = {}    # agent Endpoint ID -> its reply-to topic
        self._learned_clients: dict[str, str] = {}   # agent Endpoint ID -> Client Identifier
        self._wills: dict[str, asyncio.TimerHandle] = {}
        self._changes = StateChanges()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._ids = itertools.count(1)
        #: ``time.monotonic()`` of every connection attempt, refused ones included.
        self.connection_attempts: list[float] = []
        #: How many connections ``refuse_connections`` / ``refuse_next_connections`` closed.
        self.refused = 0
        self._refuse_left = self._scenario.refuse_next_connections

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Stop listening and drop every connection (idempotent); no Will is sent."""
        self._closing = True
        for handle in self._wills.values():
            handle.cancel()
        self._wills.clear()
        await self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        self._changes.close(ConnectionError("MQTT broker closed"))

    async def __aenter__(self) -> Self:
        if not self.port:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ scenario

    def set_scenario(self, scenario: MQTTScenario | None = None, **changes: Any) -> MQTTScenario:
        """Replace the scenario or change fields of it (see :class:`ScenarioHost`).

        ``refuse_next_connections`` starts counting when it is given;
        ``disconnect_reason_code`` acts at once (needs a running event loop) and is
        cleared again.
        """
        new = super().set_scenario(scenario, **changes)
        given = set(changes) if scenario is None else {f.name for f in dataclasses.fields(new)}
        if "refuse_next_connections" in given:
            self._refuse_left = new.refuse_next_connections
        code = new.disconnect_reason_code
        if code is not None:
            self._scenario = new = dataclasses.replace(new, disconnect_reason_code=None)
            if "disconnect_reason_code" in given:
                for client in list(self._by_client_id.values()):
                    self._spawn(self._disconnect_quietly(client.client_id, code))
        return new

    async def _disconnect_quietly(self, client_id: str, code: int) -> None:
        with contextlib.suppress(LookupError):
            await self.disconnect_client(client_id, code)

    # ------------------------------------------------------------------ inspection

    @property
    def clients(self) -> dict[str, MQTTClient]:
        """Connected clients by Client Identifier (a copy)."""
        return dict(self._by_client_id)

    @property
    def connections(self) -> dict[str, MQTTClient]:
        """Every open connection by ``conn_id``, connected or not (a copy)."""
        return dict(self._connections)

    @property
    def sessions(self) -> dict[str, MQTTSession]:
        """MQTT Sessions by Client Identifier, including offline ones (a copy)."""
        return dict(self._sessions)

    @property
    def retained(self) -> dict[str, Message]:
        """Retained messages by topic (a copy)."""
        return dict(self._retained)

    def find_client(self, client_id: str) -> MQTTClient | None:
        """The connected client with this Client Identifier or USP Endpoint ID."""
        return self._by_client_id.get(client_id) or self._by_endpoint.get(client_id)

    def find_agent(self, endpoint_id: str) -> MQTTClient | None:
        """The connected client of agent ``endpoint_id``: the one its Records came
        from, else by ``usp-endpoint-id``, TLS certificate or Client Identifier."""
        client_id = self._learned_clients.get(endpoint_id)
        if client_id is not None:
            client = self._by_client_id.get(client_id)
            if client is not None:
                return client
        return self._by_endpoint.get(endpoint_id) or self._by_client_id.get(endpoint_id)

    async def wait_for_client(self, which: str | ClientPredicate, timeout: float = 10.0
                              ) -> MQTTClient:
        """Wait until a client is connected (CONNACK sent): ``which`` is a Client
        Identifier or USP Endpoint ID, or a predicate on :class:`MQTTClient`.

        Raises ``TimeoutError`` after ``timeout`` seconds, ``ConnectionError``
        if the broker is closed meanwhile.
        """
        pred: ClientPredicate = which if callable(which) else (lambda c: c.matches(which))

        def connected() -> MQTTClient | None:
            return next((c for c in list(self._by_client_id.values()) if pred(c)), None)

        return await self._changes.wait_until(connected, timeout=timeout,
                                              what=f"no MQTT client {which!r} connected")

    async def wait_for_subscription(self, which: str | SubscriptionPredicate,
                                    timeout: float = 10.0
                                    ) -> tuple[MQTTClient, ClientSubscription]:
        """Wait until a connected client holds a subscription: ``which`` is the
        exact Topic Filter, or a predicate on (client, subscription).

        Returns the client and the subscription.  Raises ``TimeoutError`` or
        ``ConnectionError`` as :meth:`wait_for_client`.
        """
        pred: SubscriptionPredicate = which if callable(which) else (
            lambda c, s: s.topic_filter == which)

        def subscribed() -> tuple[MQTTClient, ClientSubscription] | None:
            for client in list(self._by_client_id.values()):
                if client.session is not None:
                    for sub in list(client.session.subscriptions.values()):
                        if pred(client, sub):
                            return client, sub
            return None

        return await self._changes.wait_until(subscribed, timeout=timeout,
                                              what=f"no MQTT subscription {which!r}")

    # ------------------------------------------------------------------ controllers

    def attach_controller(self, endpoint_id: str, topic: str, *, qos: int = 1,
                          content_type: str | None = USP_CONTENT_TYPE) -> MQTTBinding:
        """An in-process controller endpoint receiving every PUBLISH to ``topic``
        (and, from 3.1.1 agents, to ``topic/reply-to=...``, R-MQTT.24)."""
        problems = topic_name_problems(topic)
        if problems:
            raise ValueError(f"controller topic {topic!r} is not a valid Topic Name: {problems}")
        current = self._controllers.get(topic)
        if current is not None and not current.closed:
            raise ValueError(f"topic {topic!r} already has a controller attached")
        binding = MQTTBinding(self, endpoint_id, topic, qos=qos, content_type=content_type)
        self._controllers[topic] = binding
        self._local("mqtt.controller_attached", None, {"endpoint_id": endpoint_id, "topic": topic})
        return binding

    def detach_controller(self, binding: MQTTBinding) -> None:
        """Used by :meth:`MQTTBinding.close`."""
        if self._controllers.get(binding.topic) is binding:
            del self._controllers[binding.topic]

    def agent_topic(self, agent_id: str, binding: MQTTBinding | None = None) -> str | None:
        """The topic to reach agent ``agent_id`` (see :mod:`~conformance.mtp.mqtt.binding`)."""
        if binding is not None:
            topic = binding.agent_topics.get(agent_id)
            if topic is not None:
                return topic
        topic = self._learned_topics.get(agent_id)
        if topic is not None:
            return topic
        client = self.find_agent(agent_id)
        if client is None or client.session is None:
            return None
        filters = list(client.session.subscriptions)
        info = client.response_information
        if info and any(topic_matches(f, info) for f in filters):
            return info
        if len(filters) == 1:
            only = filters[0]
            only = only.removesuffix("/#")
            if only and "+" not in only and "#" not in only:
                return only
        return None

    async def send_to_agent(self, binding: MQTTBinding, data: bytes, *, to_id: str, qos: int = 1,
                            properties: Properties | None = None) -> None:
        """PUBLISH ``data`` from ``binding`` to agent ``to_id`` (see :meth:`MQTTBinding.send`)."""
        client = self.find_agent(to_id)
        if client is None or client.session is None:
            raise BindingClosed(f"MQTT agent {to_id!r} is not connected")
        scenario = self._scenario
        topic = scenario.agent_topic or self.agent_topic(to_id, binding)
        if topic is None:
            raise BindingClosed(f"no MQTT topic known for agent {to_id!r}: set it with "
                                "set_agent_topic() or wait for a PUBLISH with a reply-to topic")
        reply_to = binding.topic + scenario.controller_reply_suffix
        if client.v5:
            items: list[tuple[int, Any]] = [(P.RESPONSE_TOPIC, reply_to)]
            content_type = binding.content_type if scenario.publish_content_type is None \
                else scenario.publish_content_type or None
            if content_type is not None:
                items.append((P.CONTENT_TYPE, content_type))
            if properties is not None:
                items.extend(properties.items)
            props: Properties | None = Properties(items)
            name = topic
        else:  # R-MQTT.24: the reply-to topic rides at the end of the Topic Name
            props = None
            name = f"{topic}{_REPLY_TO}{reply_to.replace('/', '%2F')}"
        filters = client.session.subscriptions
        if name not in filters and not any(topic_matches(f, name) for f in filters):
            raise BindingClosed(f"MQTT agent {to_id!r} is not subscribed to {name!r}")
        await self._route(self._message(name, data, qos, False, props, None), None, binding)
        if client.closed:
            raise BindingClosed(f"MQTT agent {to_id!r}: connection closed while sending")

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
                      properties: Properties | None = None) -> int:
        """PUBLISH from the broker itself to every matching subscriber (and
        controller endpoint); returns how many were reached."""
        message = self._message(topic, bytes(payload), qos, retain, properties, None)
        count = await self._route(message, None)
        if retain:
            self._retain(message)
        return count

    # ------------------------------------------------------------------ on-demand actions

    def _target(self, client_id: str) -> MQTTClient:
        client = self.find_client(client_id)
        if client is None:
            raise LookupError(f"no connected MQTT client {client_id!r}")
        return client

    async def disconnect_client(self, client_id: str, reason_code: int = 0, *,
                                reason_string: str | None = None,
                                server_reference: str | None = None) -> MQTTClient:
        """Send DISCONNECT now (5.0; 3.1.1 has no server DISCONNECT, so the
        connection is just closed), then close (TP-469 11.16).

        ``client_id`` is a Client Identifier or USP Endpoint ID; ``LookupError``
        if no such client is connected.  The client's Will is published.
        """
        client = self._target(client_id)
        self._action(client.conn_id, "disconnect", client_id=client.client_id,
                     reason_code=reason_code, version=int(client.version or 0))
        if client.v5:
            props = Properties()
            if reason_string is not None:
                props.add(P.REASON_STRING, reason_string)
            if server_reference is not None:
                props.add(P.SERVER_REFERENCE, server_reference)
            with contextlib.suppress(ConnectionError):
                await client.send(Disconnect(reason_code, props), note="on demand")
        self._drop(client)
        return client

    async def drop_client(self, client_id: str) -> MQTTClient:
        """Close a client's network connection without any MQTT packet."""
        client = self._target(client_id)
        self._action(client.conn_id, "drop_connection", client_id=client.client_id)
        self._drop(client)
        return client

    def _drop(self, client: MQTTClient) -> None:
        client.closed = True
        writer = client.conn.writer
        if not writer.is_closing():
            writer.close()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ connection handling

    def _accept(self, conn_id: str, peer: str) -> bool:
        """Count every attempt before TLS; refuse it when the scenario says so."""
        now = time.monotonic()
        self.connection_attempts.append(now)
        counted = self._refuse_left > 0
        if self._scenario.refuse_connections or counted:
            self.refused += 1
            if counted:
                self._refuse_left -= 1
            self._action(conn_id, "refuse_connection", attempt=len(self.connection_attempts),
                         t=now, peer=peer, left=self._refuse_left)
            return False
        return True

    async def _handle(self, conn: Connection) -> None:
        now = time.monotonic()
        client = MQTTClient(conn, opened_at=now, last_rx=now)
        self._connections[conn.conn_id] = client
        self._arm(client, self.connect_timeout)
        try:
            await self._serve(client)
        except _Close:
            pass
        finally:
            self._detach(client)

    async def _serve(self, client: MQTTClient) -> None:
        conn = client.conn
        reader = conn.reader
        decoder = MQTTDecoder(learn_version=True, max_packet_size=self.max_packet_size)
        on_packet = self._on_packet
        while not client.closed:
            try:
                data = await reader.read(_READ_SIZE)
            except OSError as exc:  # reset, or a TLS error such as data after close_notify
                if not client.closed:
                    conn.record("mqtt.read_error", direction="in",
                                decoded={"error": f"{type(exc).__name__}: {exc}"[:300]})
                return
            if not data:
                return
            try:
                for packet in decoder.feed(data):
                    if client.closed:
                        return
                    await on_packet(client, packet)
            except MQTTDecodeError as exc:
                await self._decode_error(client, exc)
                return

    def _detach(self, client: MQTTClient) -> None:
        """The connection is gone: release the session, handle the Will."""
        client.closed = True
        if client.watchdog is not None:
            client.watchdog.cancel()
            client.watchdog = None
        self._connections.pop(client.conn_id, None)
        if not client.connected:
            return
        client.connected = False
        self._unregister(client)
        session = client.session
        ends = True
        if session is not None and session.client is client:
            session.client = None
            session.disconnected_at = time.monotonic()
            ends = session.expiry_interval == 0
            if ends:
                self._discard_session(session)
        will, client.will = client.will, None
        if will is not None and client.disconnect_reason != 0 and not self._closing:
            self._schedule_will(client, will, session_ends=ends)

    def _unregister(self, client: MQTTClient) -> None:
        if self._by_client_id.get(client.client_id) is client:
            del self._by_client_id[client.client_id]
        for eid in [client.endpoint_id, *client.conn.peer_endpoint_ids]:
            if eid and self._by_endpoint.get(eid) is client:
                del self._by_endpoint[eid]

    # ------------------------------------------------------------------ keep alive

    def _arm(self, client: MQTTClient, delay: float) -> None:
        if client.watchdog is not None:
            client.watchdog.cancel()
        client.watchdog = asyncio.get_running_loop().call_later(delay, self._watch, client)

    def _watch(self, client: MQTTClient) -> None:
        client.watchdog = None
        if client.closed:
            return
        now = time.monotonic()
        if not client.connected:
            if client.connect is None:
                self._local("mqtt.connect_timeout", client.conn_id,
                            {"seconds": self.connect_timeout},
                            note="no CONNECT received in time")
                self._drop(client)
            return
        if client.keep_alive <= 0:
            return
        due = client.last_rx + client.keep_alive * self._scenario.keep_alive_tolerance
        if now >= due:
            self._spawn(self._keepalive_expired(client, now - client.last_rx))
        else:
            self._arm(client, due - now)

    async def _keepalive_expired(self, client: MQTTClient, silence: float) -> None:
        """MQTT-3.1.2-22 (5.0) / MQTT-3.1.2-24 (3.1.1): disconnect after 1.5 x Keep Alive."""
        tolerance = self._scenario.keep_alive_tolerance
        client.conn.record(
            "mqtt.keepalive_timeout", direction="local",
            decoded={"keep_alive": client.keep_alive, "tolerance": tolerance,
                     "silence_s": round(silence, 3)},
            note=f"no packet for {silence:.1f} s (Keep Alive {client.keep_alive} s)")
        if client.v5:
            with contextlib.suppress(ConnectionError):
                await client.send(Disconnect(0x8D), note="keep alive timeout")
        self._drop(client)

    # ------------------------------------------------------------------ inbound packets

    async def _on_packet(self, client: MQTTClient, packet: Packet) -> None:
        client.packets_in += 1
        client.last_rx = time.monotonic()
        conn = client.conn
        ptype = packet.TYPE
        version = packet.version if isinstance(packet, Connect) else client.version
        if conn.timeline is not None:
            decoded = packet_summary(packet, version)
            # every EUT packet says which MQTT version it came in (cases check
            # version-specific rules on it, TP-469 11.12 and 11.14)
            decoded.setdefault("protocol_level", int(version or 0))
            conn.record(KINDS[ptype], direction="in", raw=packet.raw, decoded=decoded)
        scenario = self._scenario
        violations = validate(packet, version, sender=Role.CLIENT)
        if violations:
            self._record_violations(client, packet, violations)
            if scenario.close_on_violation:
                for v in violations:
                    if v.severity == Severity.ERROR:
                        await self._protocol_error(client, packet, v)
        if ptype != PacketType.CONNECT and not client.connected:
            v = Violation("MQTT-3.1.0-1", f"{ptype.name} before a successful CONNECT",
                          "connect-first", reason_code=0x82)
            self._record_violations(client, packet, [v])
            await self._protocol_error(client, packet, v)
        await self._HANDLERS[ptype](self, client, packet)
        limit = scenario.close_after_packets
        if limit is not None and client.packets_in >= limit:
            self._action(client.conn_id, "close_after_packets", packets=client.packets_in)
            raise _Close

    def _record_violations(self, client: MQTTClient, packet: Packet | None,
                           violations: list[Violation]) -> None:
        name = packet.TYPE.name if packet is not None else "stream"
        client.conn.record(
            "mqtt.violation", direction="in", raw=packet.raw if packet is not None else None,
            decoded=[violation_summary(v) for v in violations],
            note=f"{name}: " + ", ".join(sorted({v.rule for v in violations})))

    def _broker_violation(self, client: MQTTClient, packet: Packet, rule: str, message: str,
                          code: str, *, reason_code: int | None = None,
                          severity: Severity = Severity.ERROR) -> Violation:
        """Record a rule broken that only connection state reveals; returns it."""
        v = Violation(rule, message, code, None, severity, reason_code if client.v5 else None)
        self._record_violations(client, packet, [v])
        return v

    async def _protocol_error(self, client: MQTTClient, packet: Packet | None,
                              v: Violation) -> None:
        """Answer a MUST violation (MQTT 5.0 §4.13, 3.1.1 §4.8) and close."""
        code = v.reason_code
        if isinstance(packet, Connect) and not client.connected:
            client.version = packet.version
            if packet.version == V5:
                if v.code in ("protocol-level", "protocol-name"):
                    code = 0x84
                elif code is None or code not in REASON_CODES[PacketType.CONNACK]:
                    code = 0x82
                await self._refuse(client, code, f"[{v.rule}] {v.message}")
            v3_code = _V3_CONNECT_CODES.get(v.code)
            if v3_code is not None:
                await self._refuse(client, v3_code, v.message)
        elif client.connected and client.v5:
            if code is None or code not in REASON_CODES[PacketType.DISCONNECT]:
                code = 0x82
            props = Properties([(P.REASON_STRING, f"[{v.rule}] {v.message}"[:200])])
            with contextlib.suppress(ConnectionError):
                await client.send(Disconnect(code, props), note=f"protocol error: {v.rule}")
        raise _Close

    async def _decode_error(self, client: MQTTClient, exc: MQTTDecodeError) -> None:
        """A Malformed Packet (or one over the size limit): record it, answer, close."""
        ptype = exc.packet_type
        client.conn.record(
            "mqtt.decode_error", direction="in", raw=exc.raw,
            decoded={"reason": exc.reason, "offset": exc.offset, "packet_type": ptype,
                     "packet": PacketType(ptype).name
                     if ptype is not None and 1 <= ptype <= 15 else None,
                     "reason_code": exc.reason_code},
            note=exc.reason[:120])
        with contextlib.suppress(ConnectionError):
            if client.connected:
                if client.v5:
                    await client.send(Disconnect(exc.reason_code), note="malformed packet")
            elif ptype == PacketType.CONNECT and _connect_level(exc.raw) >= 5:
                client.version = V5
                await client.send(Connack(False, exc.reason_code), note="malformed CONNECT")

    async def _refuse(self, client: MQTTClient, code: int, reason: str) -> None:
        """CONNACK with a failure code, then close."""
        props = Properties()
        if client.v5 and reason:
            props.add(P.REASON_STRING, reason[:200])
        with contextlib.suppress(ConnectionError):
            await client.send(Connack(False, code, props), note=f"refused: {reason}"[:200])
        raise _Close

    # ---- CONNECT

    async def _on_connect(self, client: MQTTClient, p: Connect) -> None:
        if client.connected:
            v = self._broker_violation(client, p, "MQTT-3.1.0-2",
                                       "a second CONNECT on the same connection",
                                       "second-connect", reason_code=0x82)
            await self._protocol_error(client, p, v)
        scenario = self._scenario
        version = p.version
        v5 = version == V5
        client.version = version
        client.connect = p
        props = p.properties
        client.username = p.username
        if v5:
            client.endpoint_id = props.user_property("usp-endpoint-id")
            if props.authentication_method is not None:
                await self._refuse(client, 0x8C, "enhanced authentication is not supported")
        refusal = self._authenticate(client, p)
        if refusal is not None:
            await self._refuse(client, 0x86 if v5 else 4, refusal)
        if scenario.connack_reason_code:
            code = _connack_code(scenario.connack_reason_code, v5)
            self._action(client.conn_id, "connack_reason_code", reason_code=code,
                         version=int(version))
            await self._refuse(client, code, "refused by the test scenario")
        client_id = p.client_id
        assigned = None
        if not client_id:
            if not v5 and not p.clean_start:   # MQTT-3.1.3-8
                await self._refuse(client, 2, "zero-byte ClientId needs Clean Session")
            client_id = scenario.assigned_client_identifier or f"auto-{uuid.uuid4().hex[:16]}"
            if v5 and scenario.send_assigned_client_identifier:
                assigned = client_id
        client.client_id = client_id
        client.assigned_client_id = assigned
        old = self._by_client_id.get(client_id)
        if old is not None and old is not client:
            await self._take_over(old, client, p.clean_start)
        delayed = self._wills.pop(client_id, None)
        if delayed is not None:   # MQTT-3.1.3-9: the session came back in time
            delayed.cancel()
        now = time.monotonic()
        session = self._sessions.get(client_id)
        if session is not None and (p.clean_start or session.expired(now)):
            self._discard_session(session)
            session = None
        present = session is not None
        if session is None:
            session = self._sessions[client_id] = MQTTSession(client_id, created_at=now)
        if v5:
            session.expiry_interval = props.session_expiry_interval or 0
            client.receive_maximum = props.receive_maximum or client.receive_maximum
            client.maximum_packet_size = props.maximum_packet_size
        else:
            session.expiry_interval = 0 if p.clean_start else NEVER_EXPIRES
        session.client = client
        session.disconnected_at = None
        client.session = session
        client.will = p.will
        connack_props, decisions = self._connack_properties(client, p)
        self._action(client.conn_id, "connack", session_present=present, **decisions)
        client.connected = True
        self._by_client_id[client_id] = client
        for eid in [client.endpoint_id, *client.conn.peer_endpoint_ids]:
            if eid:
                self._by_endpoint[eid] = client
        await client.send(Connack(present, 0, connack_props))
        if client.keep_alive > 0:
            self._arm(client, client.keep_alive * scenario.keep_alive_tolerance)
        elif client.watchdog is not None:
            client.watchdog.cancel()
            client.watchdog = None
        if present:
            await self._resume(client, session)
        self._changes.changed()

    def _connack_properties(self, client: MQTTClient, p: Connect
                            ) -> tuple[Properties, dict[str, Any]]:
        """The CONNACK properties the scenario asks for, and what was decided."""
        scenario = self._scenario
        client.keep_alive = p.keep_alive
        if not client.v5:
            return _NO_PROPS, {"version": 4, "keep_alive": p.keep_alive}
        props = Properties()
        if client.assigned_client_id is not None:
            props.add(P.ASSIGNED_CLIENT_IDENTIFIER, client.assigned_client_id)
        if scenario.server_keep_alive is not None:
            client.keep_alive = scenario.server_keep_alive
            props.add(P.SERVER_KEEP_ALIVE, scenario.server_keep_alive)
        requested = p.properties.request_response_information == 1
        if scenario.response_information is not None and (
                requested or scenario.response_information_unrequested):
            client.response_information = self._expand(scenario.response_information, client)
            props.add(P.RESPONSE_INFORMATION, client.response_information)
        if scenario.maximum_qos is not None:
            props.add(P.MAXIMUM_QOS, scenario.maximum_qos)
        if scenario.maximum_packet_size is not None:
            props.add(P.MAXIMUM_PACKET_SIZE, scenario.maximum_packet_size)
        if scenario.topic_alias_maximum:
            client.topic_alias_maximum = scenario.topic_alias_maximum
            props.add(P.TOPIC_ALIAS_MAXIMUM, scenario.topic_alias_maximum)
        props.add(P.SHARED_SUBSCRIPTION_AVAILABLE, 0)
        client.subscribe_topics = [self._expand(t, client) for t in scenario.subscribe_topics]
        for topic in client.subscribe_topics:
            props.add(P.USER_PROPERTY, ("subscribe-topic", topic))
        for pair in scenario.connack_user_properties:
            props.add(P.USER_PROPERTY, (pair[0], pair[1]))
        return props, {
            "version": 5, "assigned_client_identifier": client.assigned_client_id,
            "response_information_requested": requested,
            "response_information": client.response_information,
            "subscribe_topics": list(client.subscribe_topics),
            "server_keep_alive": scenario.server_keep_alive, "keep_alive": client.keep_alive}

    @staticmethod
    def _expand(template: str, client: MQTTClient) -> str:
        return (template.replace("{client_id}", client.client_id)
                .replace("{endpoint_id}", client.endpoint_id or client.client_id))

    def _authenticate(self, client: MQTTClient, p: Connect) -> str | None:
        """None when accepted, else why not (R-MQTT.42, R-MQTT.43)."""
        if self.credentials is None:
            return None
        if p.username is None:
            if client.conn.peer_endpoint_ids:
                return None  # authenticated by its TLS client certificate
            return "no User Name"
        expected = self.credentials.get(p.username)
        password = p.password if p.password is not None else b""
        if expected is None or not hmac.compare_digest(expected.encode(), password):
            return f"bad User Name or Password for {p.username[:60]!r}"
        return None

    async def _take_over(self, old: MQTTClient, new: MQTTClient, clean_start: bool) -> None:
        """MQTT-3.1.4-3: a new connection with the same ClientID replaces the old one."""
        self._local("mqtt.session_taken_over", old.conn_id,
                    {"client_id": old.client_id, "by": new.conn_id},
                    note=f"taken over by {new.conn_id}")
        old.connected = False
        self._unregister(old)
        session = old.session
        if session is not None and session.client is old:
            session.client = None
            session.disconnected_at = time.monotonic()
        will, old.will = old.will, None
        if will is not None:
            delay = (will.properties.will_delay_interval or 0) if old.v5 else 0
            if delay == 0 or clean_start:   # else the session goes on: no Will (MQTT-3.1.3-9)
                self._spawn(self._publish_will(old, will))
        if old.v5:
            with contextlib.suppress(ConnectionError):
                await old.send(Disconnect(0x8E), note="session taken over")
        self._drop(old)

    def _schedule_will(self, client: MQTTClient, will: Will, *, session_ends: bool) -> None:
        delay = (will.properties.will_delay_interval or 0) if client.v5 else 0
        session = client.session
        if session is not None and not session_ends:
            delay = min(delay, session.expiry_interval)
        if delay <= 0 or session_ends:
            self._spawn(self._publish_will(client, will))
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._wills.pop(client.client_id, None)
            self._spawn(self._publish_will(client, will))

        self._wills[client.client_id] = loop.call_later(delay, fire)

    async def _publish_will(self, client: MQTTClient, will: Will) -> None:
        """Publish a Will Message (MQTT 5.0 §3.1.2.5)."""
        props = None
        if client.v5 and will.properties.items:
            props = Properties([(k, v) for k, v in will.properties.items
                                if k != P.WILL_DELAY_INTERVAL])
        self._local("mqtt.will", client.conn_id,
                    {"client_id": client.client_id, "topic": will.topic, "qos": will.qos,
                     "retain": will.retain, "payload_length": len(will.payload)},
                    note=f"Will of {client.client_id} to {will.topic}")
        message = self._message(will.topic, will.payload, min(will.qos, 2), will.retain, props,
                                client.client_id)
        await self._route(message, None)
        if will.retain:
            self._retain(message)

    async def _resume(self, client: MQTTClient, session: MQTTSession) -> None:
        """MQTT-4.4.0-1: resend unacknowledged PUBLISH (DUP) and PUBREL, then the queue."""
        for pid, item in list(session.inflight.items()):
            if client.closed:
                return
            if item.state == "publish":
                packet = dataclasses.replace(item.packet, dup=True)
                if not client.v5:
                    packet.properties = _NO_PROPS
                item.packet = packet
                await client.send(packet, note="resent on session resume")
            else:
                await client.send(Pubrel(pid), note="resent on session resume")
        await self._drain_queue(client, session)

    # ---- PUBLISH and its acknowledgements

    async def _on_publish(self, client: MQTTClient, p: Publish) -> None:
        v5 = client.v5
        topic = p.topic
        props = p.properties
        scenario = self._scenario
        session = client.session
        assert session is not None
        if p.qos > 2:
            return  # QoS 3 (only reached with close_on_violation=False): nothing to deliver
        if v5 and props.items:
            alias = props.topic_alias
            if alias is not None:
                if not 0 < alias <= client.topic_alias_maximum:
                    v = self._broker_violation(
                        client, p, "MQTT-3.3.2-9",
                        f"Topic Alias {alias} is above the Topic Alias Maximum "
                        f"{client.topic_alias_maximum}", "topic-alias-invalid", reason_code=0x94)
                    await self._protocol_error(client, p, v)
                if topic:
                    client.aliases[alias] = topic
                else:
                    known = client.aliases.get(alias)
                    if known is None:
                        v = self._broker_violation(
                            client, p, "MQTT-5.0 §3.3.2.3.4",
                            f"Topic Alias {alias} was never mapped on this connection",
                            "topic-alias-unknown", reason_code=0x82)
                        await self._protocol_error(client, p, v)
                        return
                    topic = known
            if alias is not None or P.SUBSCRIPTION_IDENTIFIER in props:
                props = Properties([(k, v) for k, v in props.items if k not in _STRIPPED])
        limit = scenario.maximum_packet_size
        if limit is not None and v5 and p.raw is not None and len(p.raw) > limit:
            v = self._broker_violation(client, p, "MQTT-3.2.2-15",
                                       f"PUBLISH of {len(p.raw)} bytes exceeds the Maximum "
                                       f"Packet Size {limit}", "packet-too-large",
                                       reason_code=0x95)
            await self._protocol_error(client, p, v)
        if scenario.maximum_qos is not None and p.qos > scenario.maximum_qos:
            v = self._broker_violation(client, p, "MQTT-3.2.2-11",
                                       f"QoS {p.qos} is above the Maximum QoS "
                                       f"{scenario.maximum_qos}", "qos-not-supported",
                                       reason_code=0x9B)
            if scenario.close_on_violation:
                await self._protocol_error(client, p, v)
        pid = p.packet_id
        if p.qos == 2 and pid in session.inbound_qos2:
            # a re-sent QoS 2 PUBLISH: acknowledge again, deliver once (MQTT-4.3.3-10)
            if not scenario.withhold_pubrec:
                await client.send(Pubrec(pid))
            return
        message = self._message(topic, p.payload, p.qos, p.retain,
                                props if v5 and props.items else None, client.client_id)
        matched = await self._route(message, client)
        if p.retain:
            self._retain(message)
        if not matched and self.timeline is not None:
            self._local("mqtt.unrouted", client.conn_id, {"topic": topic},
                        note="PUBLISH that no subscriber or controller receives")
        if p.qos == 1:
            if scenario.withhold_puback:
                self._action(client.conn_id, "withhold_puback", packet_id=pid)
            else:
                await client.send(Puback(pid, 0x10 if v5 and not matched else 0))
        elif p.qos == 2:
            session.inbound_qos2.add(pid)
            if scenario.withhold_pubrec:
                self._action(client.conn_id, "withhold_pubrec", packet_id=pid)
            else:
                await client.send(Pubrec(pid, 0x10 if v5 and not matched else 0))

    def _unknown_id(self, client: MQTTClient, p: Packet, expected: str) -> None:
        pid = getattr(p, "packet_id", 0)
        self._broker_violation(
            client, p, "MQTT-5.0 §4.3" if client.v5 else "MQTT-3.1.1 §4.3",
            f"{p.TYPE.name} for Packet Identifier {pid}, which has no {expected} in flight",
            "packet-id-unknown", severity=Severity.WARNING, reason_code=0x92)

    async def _on_puback(self, client: MQTTClient, p: Puback) -> None:
        session = client.session
        assert session is not None
        item = session.inflight.get(p.packet_id)
        if item is None or item.state != "publish" or item.packet.qos != 1:
            self._unknown_id(client, p, "QoS 1 PUBLISH")
            return
        del session.inflight[p.packet_id]
        if session.queue:
            await self._drain_queue(client, session)

    async def _on_pubrec(self, client: MQTTClient, p: Pubrec) -> None:
        session = client.session
        assert session is not None
        pid = p.packet_id
        item = session.inflight.get(pid)
        if item is None or item.packet.qos != 2:
            self._unknown_id(client, p, "QoS 2 PUBLISH")
            await client.send(Pubrel(pid, 0x92 if client.v5 else 0))
            return
        if client.v5 and p.reason_code >= 0x80:   # the flow ends here (MQTT 5.0 §4.3.3)
            del session.inflight[pid]
            if session.queue:
                await self._drain_queue(client, session)
            return
        item.state = "pubrel"
        await client.send(Pubrel(pid))

    async def _on_pubrel(self, client: MQTTClient, p: Pubrel) -> None:
        session = client.session
        assert session is not None
        pid = p.packet_id
        if pid in session.inbound_qos2:
            session.inbound_qos2.discard(pid)
            await client.send(Pubcomp(pid))
        else:
            self._unknown_id(client, p, "QoS 2 PUBLISH awaiting PUBREL")
            await client.send(Pubcomp(pid, 0x92 if client.v5 else 0))

    async def _on_pubcomp(self, client: MQTTClient, p: Pubcomp) -> None:
        session = client.session
        assert session is not None
        item = session.inflight.get(p.packet_id)
        if item is None or item.state != "pubrel":
            self._unknown_id(client, p, "PUBREL")
            return
        del session.inflight[p.packet_id]
        if session.queue:
            await self._drain_queue(client, session)

    # ---- SUBSCRIBE / UNSUBSCRIBE / PINGREQ / DISCONNECT / AUTH

    async def _on_subscribe(self, client: MQTTClient, p: Subscribe) -> None:
        session = client.session
        assert session is not None
        v5 = client.v5
        scenario = self._scenario
        sub_id = p.properties.subscription_identifier if v5 else None
        by_filter = dict(scenario.suback_reason_codes)
        top_qos = 2 if scenario.maximum_qos is None else scenario.maximum_qos
        codes: list[int] = []
        added: list[ClientSubscription] = []
        retained_for: list[ClientSubscription] = []
        for s in p.subscriptions:
            f = s.topic_filter
            code = by_filter.get(f, scenario.suback_reason_code)
            if code is not None:
                if not v5 and code >= 0x80:
                    code = 0x80
                self._action(client.conn_id, "suback_reason_code", topic_filter=f,
                             reason_code=code)
                granted = code
            elif topic_filter_problems(f, shared=v5):
                code = 0x8F if v5 else 0x80
            elif v5 and f.startswith("$share/"):
                code = 0x9E   # Shared Subscriptions are not offered (CONNACK says so)
            else:
                code = granted = min(s.qos, top_qos)
            if code < 0x80:
                existed = f in session.subscriptions
                sub = ClientSubscription(f, min(granted, 2), s.no_local and v5,
                                         s.retain_as_published and v5,
                                         s.retain_handling if v5 else 0, sub_id)
                session.subscriptions[f] = sub
                self._index(client.client_id, sub)
                added.append(sub)
                if sub.retain_handling == 0 or (sub.retain_handling == 1 and not existed):
                    retained_for.append(sub)
            codes.append(code)
        await client.send(Suback(p.packet_id, codes))
        for sub in retained_for:
            await self._send_retained(client, session, sub)
        if added:
            self._changes.changed()

    async def _on_unsubscribe(self, client: MQTTClient, p: Unsubscribe) -> None:
        session = client.session
        assert session is not None
        codes = []
        for f in p.topic_filters:
            sub = session.subscriptions.pop(f, None)
            if sub is not None:
                self._unindex(session.client_id, f)
            codes.append(0 if sub is not None else 0x11)
        await client.send(Unsuback(p.packet_id, codes if client.v5 else []))

    async def _on_pingreq(self, client: MQTTClient, p: Pingreq) -> None:
        if self._scenario.withhold_pingresp:
            self._action(client.conn_id, "withhold_pingresp")
            return
        await client.send(Pingresp())

    async def _on_disconnect(self, client: MQTTClient, p: Disconnect) -> None:
        client.disconnect_reason = p.reason_code if client.v5 else 0
        session = client.session
        if client.v5 and session is not None:
            expiry = p.properties.session_expiry_interval
            if expiry is not None:
                if session.expiry_interval == 0 and expiry != 0:
                    v = self._broker_violation(
                        client, p, "MQTT-5.0 §3.14.2.2.2",
                        "non-zero Session Expiry Interval in DISCONNECT after 0 in CONNECT",
                        "session-expiry-after-zero", reason_code=0x82)
                    if self._scenario.close_on_violation:
                        await self._protocol_error(client, p, v)
                else:
                    session.expiry_interval = expiry
        raise _Close

    async def _on_auth(self, client: MQTTClient, p: Auth) -> None:
        v = self._broker_violation(client, p, "MQTT-5.0 §4.12",
                                   "AUTH without an Authentication Method in the CONNECT",
                                   "auth-not-negotiated", reason_code=0x82)
        await self._protocol_error(client, p, v)

    async def _ignore(self, client: MQTTClient, p: Packet) -> None:
        """Server-to-client packets from a client (already a violation)."""

    _HANDLERS: ClassVar[Mapping[int, Callable[[MQTTBroker, MQTTClient, Any], Awaitable[None]]]] = {
        PacketType.CONNECT: _on_connect, PacketType.PUBLISH: _on_publish,
        PacketType.PUBACK: _on_puback, PacketType.PUBREC: _on_pubrec,
        PacketType.PUBREL: _on_pubrel, PacketType.PUBCOMP: _on_pubcomp,
        PacketType.SUBSCRIBE: _on_subscribe, PacketType.UNSUBSCRIBE: _on_unsubscribe,
        PacketType.PINGREQ: _on_pingreq, PacketType.DISCONNECT: _on_disconnect,
        PacketType.AUTH: _on_auth, PacketType.CONNACK: _ignore, PacketType.SUBACK: _ignore,
        PacketType.UNSUBACK: _ignore, PacketType.PINGRESP: _ignore,
    }

    # ------------------------------------------------------------------ sessions and routing

    def _index(self, client_id: str, sub: ClientSubscription) -> None:
        f = sub.topic_filter
        table = self._wild if ("+" in f or "#" in f) else self._exact
        table.setdefault(f, {})[client_id] = sub

    def _unindex(self, client_id: str, topic_filter: str) -> None:
        table = self._wild if ("+" in topic_filter or "#" in topic_filter) else self._exact
        subs = table.get(topic_filter)
        if subs is not None:
            subs.pop(client_id, None)
            if not subs:
                del table[topic_filter]

    def _discard_session(self, session: MQTTSession) -> None:
        if self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]
        for f in session.subscriptions:
            self._unindex(session.client_id, f)
        session.subscriptions.clear()
        session.queue.clear()

    @staticmethod
    def _message(topic: str, payload: bytes, qos: int, retain: bool,
                 props: Properties | None, origin: str | None) -> Message:
        now = time.monotonic()
        expiry = props.message_expiry_interval if props is not None else None
        return Message(topic, payload, qos, retain, props, now, origin,
                       None if expiry is None else now + expiry)

    def _retain(self, message: Message) -> None:
        """Keep (or with an empty payload, delete) the topic's retained message."""
        if message.payload:
            self._retained[message.topic] = dataclasses.replace(message, retain=True)
        else:
            self._retained.pop(message.topic, None)

    async def _route(self, message: Message, publisher: MQTTClient | None,
                     origin_binding: MQTTBinding | None = None) -> int:
        """Deliver to the controller endpoint and every matching subscription;
        returns how many receivers there were."""
        topic = message.topic
        count = 0
        if self._controllers:
            binding = self._controller_at(topic)
            reply_to = None
            if binding is not None:
                if message.properties is not None:
                    reply_to = message.properties.response_topic
            elif _REPLY_TO in topic:
                base, _, tail = topic.rpartition(_REPLY_TO)
                binding = self._controller_at(base)
                reply_to = tail.replace("%2F", "/")
            if binding is not None and binding is not origin_binding:
                self._to_controller(binding, message, publisher, reply_to)
                count += 1
        matches: list[tuple[str, ClientSubscription]] = []
        exact = self._exact.get(topic)
        if exact:
            matches.extend(exact.items())
        if self._wild:
            for f, subs in self._wild.items():
                if topic_matches(f, topic):
                    matches.extend(subs.items())
        if not matches:
            return count
        origin = message.origin
        targets: dict[str, tuple[int, list[int], bool]] = {}
        for client_id, sub in matches:
            if sub.no_local and client_id == origin:   # MQTT-3.8.3-3
                continue
            seen = targets.get(client_id)
            ids = [sub.identifier] if sub.identifier is not None else []
            if seen is None:
                targets[client_id] = (sub.qos, ids, sub.retain_as_published)
            else:   # overlapping subscriptions: one delivery at the highest QoS (§3.3.4)
                targets[client_id] = (max(seen[0], sub.qos), seen[1] + ids,
                                      seen[2] or sub.retain_as_published)
        now = time.monotonic()
        for client_id, (sub_qos, ids, as_published) in targets.items():
            session = self._sessions.get(client_id)
            if session is None:
                continue
            if session.expired(now):
                self._discard_session(session)
                continue
            await self._deliver(session, message, min(message.qos, sub_qos), tuple(ids),
                                message.retain and as_published)
            count += 1
        return count

    def _controller_at(self, topic: str) -> MQTTBinding | None:
        """The controller endpoint a PUBLISH to ``topic`` reaches: the one on that topic,
        or the one whose reply-to topic it is (``controller_reply_suffix``)."""
        binding = self._controllers.get(topic)
        suffix = self._scenario.controller_reply_suffix
        if binding is None and suffix and topic.endswith(suffix):
            binding = self._controllers.get(topic[:-len(suffix)])
        return binding

    def _to_controller(self, binding: MQTTBinding, message: Message,
                       publisher: MQTTClient | None, reply_to: str | None) -> None:
        rec = None
        if publisher is not None:
            try:
                rec = parse_record(message.payload)
            except RecordDecodeError:
                rec = None
        if publisher is not None and reply_to:
            learned = publisher.learned
            if learned is None or learned[0] != reply_to:
                from_id = rec.from_id if rec is not None else ""
                if from_id:
                    publisher.learned = learned = (reply_to, from_id)
            if learned is not None and learned[0] == reply_to:
                self._learned_topics[learned[1]] = reply_to
                self._learned_clients[learned[1]] = publisher.client_id
        if publisher is not None and rec is not None and record_kind(rec) == "mqtt_connect":
            self._connect_record(publisher, rec)
        props = message.properties
        record = InboundRecord(
            data=message.payload, mtp=MTP,
            conn_id=publisher.conn_id if publisher is not None else "",
            received_at=message.received_at, reply_to=reply_to,
            meta={"topic": message.topic, "qos": message.qos, "retain": message.retain,
                  "properties": properties_summary(props) if props is not None else {},
                  "content_type": props.content_type if props is not None else None,
                  "client_id": publisher.client_id if publisher is not None else None,
                  "endpoint_id": publisher.endpoint_id if publisher is not None else None,
                  "peer_endpoint_ids": publisher.peer_endpoint_ids if publisher else [],
                  "version": int(publisher.version or 0) if publisher is not None else None})
        try:
            binding.deliver(record)
        except Exception as exc:  # noqa: BLE001 - a broken sink must not drop the agent
            _log.exception("MQTT controller sink failed")
            self._local("mqtt.sink_error", record.conn_id, {"error": repr(exc)[:300]})

    @staticmethod
    def _connect_record(publisher: MQTTClient, rec: Record) -> None:
        """Record an agent's MQTTConnectRecord with what only the broker knows: which of
        the publisher's Topic Filters cover its ``subscribed_topic`` (R-MTP.6, TP-469 11.17)."""
        connect = rec.mqtt_connect
        topic = connect.subscribed_topic
        session = publisher.session
        filters = list(session.subscriptions) if session is not None else []
        publisher.conn.record("mqtt.connect_record", direction="in", decoded={
            "from_id": rec.from_id, "to_id": rec.to_id,
            "version": MQTTConnectRecord.MQTTVersion.Name(connect.version)
            if connect.version in MQTTConnectRecord.MQTTVersion.values() else connect.version,
            "subscribed_topic": topic,
            "wildcard": "+" in topic or "#" in topic,
            "subscribed_by": [f for f in filters if topic and topic_matches(f, topic)],
            "protocol_level": int(publisher.version or 0)})

    async def _deliver(self, session: MQTTSession, message: Message, qos: int,
                       sub_ids: tuple[int, ...], retain: bool) -> None:
        client = session.client
        if client is None or client.closed:
            if qos:
                self._enqueue(session, Queued(message, qos, sub_ids, retain))
            return
        if qos and (session.queue or len(session.inflight) >= client.receive_maximum):
            self._enqueue(session, Queued(message, qos, sub_ids, retain))
            return
        with contextlib.suppress(ConnectionError):
            await self._send_publish(client, session, message, qos, sub_ids, retain)

    def _enqueue(self, session: MQTTSession, item: Queued) -> None:
        queue = session.queue
        if len(queue) >= self.max_queued:
            dropped = queue.popleft()
            self._local("mqtt.dropped", None,
                        {"client_id": session.client_id, "topic": dropped.message.topic,
                         "reason": "session queue full"})
        queue.append(item)

    async def _drain_queue(self, client: MQTTClient, session: MQTTSession) -> None:
        queue = session.queue
        while queue and not client.closed and len(session.inflight) < client.receive_maximum:
            item = queue.popleft()
            await self._send_publish(client, session, item.message, item.qos,
                                     item.subscription_ids, item.retain)

    async def _send_publish(self, client: MQTTClient, session: MQTTSession, message: Message,
                            qos: int, sub_ids: tuple[int, ...], retain: bool) -> bool:
        props = _NO_PROPS
        if client.v5:
            props = message.properties or _NO_PROPS
            if message.expires_at is not None or sub_ids:
                items = list(props.items)
                if message.expires_at is not None:
                    remaining = message.expires_at - time.monotonic()
                    if remaining <= 0:   # MQTT-3.3.2-5: expired messages are not sent
                        self._local("mqtt.dropped", client.conn_id,
                                    {"topic": message.topic, "reason": "message expired"})
                        return False
                    items = [(k, v) for k, v in items if k != P.MESSAGE_EXPIRY_INTERVAL]
                    items.append((P.MESSAGE_EXPIRY_INTERVAL, math.ceil(remaining)))  # MQTT-3.3.2-6
                items.extend((P.SUBSCRIPTION_IDENTIFIER, i) for i in sub_ids)
                props = Properties(items)
        pid = 0
        if qos:
            found = session.next_packet_id()
            if found is None:
                self._enqueue(session, Queued(message, qos, sub_ids, retain))
                return False
            pid = found
        packet = Publish(message.topic, message.payload, qos, retain, False, pid, props)
        try:
            raw = encode(packet, client.version)
        except MQTTEncodeError as exc:   # e.g. a Topic Name too long for this client's version
            self._local("mqtt.dropped", client.conn_id,
                        {"topic": message.topic[:200], "reason": f"cannot encode: {exc}"[:300]})
            return False
        limit = client.maximum_packet_size
        if limit is not None and len(raw) > limit:   # MQTT-3.1.2-25
            self._local("mqtt.dropped", client.conn_id,
                        {"topic": message.topic, "size": len(raw),
                         "reason": f"larger than the client's Maximum Packet Size {limit}"})
            return False
        if qos:
            session.inflight[pid] = Inflight(packet)
        await client.send(packet, raw=raw)
        return True

    async def _send_retained(self, client: MQTTClient, session: MQTTSession,
                             sub: ClientSubscription) -> None:
        """Retained messages for a new subscription (MQTT-3.3.1-9 / 5.0 §3.3.1.3)."""
        f = sub.topic_filter
        if "+" in f or "#" in f:
            found = [m for t, m in list(self._retained.items()) if topic_matches(f, t)]
        else:
            found = [m for m in (self._retained.get(f),) if m is not None]
        ids = (sub.identifier,) if sub.identifier is not None else ()
        for message in found:
            await self._deliver(session, message, min(message.qos, sub.qos), ids, True)
