"""The reference Agent's MQTT client (MQTT 3.1.1 and 5.0) for the TR-369 MQTT binding.

It drives a paho-mqtt client (``CallbackAPIVersion.VERSION2``): paho's
network loop runs in its own thread; every paho callback is handed to the
asyncio loop with ``loop.call_soon_threadsafe`` and handled there, so the
Agent runtime only ever sees the event loop thread. The blocking TCP/TLS
connect runs in an executor; the broker's certificate is judged as
:mod:`conformance.agent.mtp.tls` says (chain, host name, dates). One :class:`MQTTMTP` is one
``Device.MQTT.Client.{i}`` (:class:`MQTTClientConfig`) used by one
``Device.LocalAgent.MTP.{i}.MQTT`` (``response_topic_configured``,
``publish_qos``).

Per connection (R-MQTT.6):

* CONNECT with the ClientID (configured; empty on 5.0 so the server assigns
  one; the Endpoint ID on 3.1.1, R-MQTT.8), User Name / Password (R-MQTT.7),
  Keep Alive (R-MQTT.14) and, on 5.0, the ``usp-endpoint-id`` User Property
  (R-MQTT.13) and Request Response Information = 1 (R-MQTT.12). An Assigned
  Client Identifier is kept as the ClientID for later connections (R-MQTT.9,
  R-MQTT.11).
* SUBSCRIBE (R-MQTT.15) to the configured Subscription topics, the CONNACK
  ``subscribe-topic`` User Properties (5.0), the Response Information when
  not already covered, else ``ResponseTopicConfigured`` when not covered
  (exact on 5.0, ``<topic>/#`` on 3.1.1 so that ``/reply-to=`` names
  arrive). With neither a ``subscribe-topic`` nor a configured Subscription
  the client sends DISCONNECT and the MTP is disabled (R-MQTT.16, TP-469
  11.10); when every Topic Filter is refused it sends DISCONNECT, publishes
  nothing and retries (R-MQTT.17, TP-469 11.11).
* The "reply to" topic is the Response Information (R-MQTT.21), else
  ``ResponseTopicConfigured``. Every PUBLISH carries it (R-MQTT.22): as
  Response Topic with Content Type ``usp.msg`` on 5.0 (R-MQTT.23,
  R-MQTT.27), after ``/reply-to=`` with ``/`` as ``%2F`` on 3.1.1
  (R-MQTT.24). QoS is PublishQoS, lowered to the CONNACK Maximum QoS.
* The MQTTConnect Record goes to every configured Controller topic right
  after the SUBACK (R-MTP.6, TP-469 11.17).
* Received PUBLISHes: the answer topic is the Response Topic (R-MQTT.26) or
  the part after the last ``/reply-to=`` with ``%2F`` as ``/`` (R-MQTT.25);
  other Content Types than ``usp.msg`` / ``application/vnd.bbf.usp.msg``
  (R-MQTT.27a) and payloads that are not USP Records are dropped silently.
* A failed connection or one the server ended enters the retry state with
  the ConnectRetry* back-off (R-MQTT.10, R-MQTT.33, TP-469 11.6 / 11.16);
  stopping sends DISCONNECT (R-MQTT.35).

Hooks for the owner of the data model (TP-469 11.4, 11.5, 11.9, 11.13):
:attr:`MQTTMTP.on_client_id` is called with the ClientID a connection used
when it differs from the configured one (an Assigned Client Identifier,
R-MQTT.9, or the 3.1.1 Endpoint ID fallback), so that it is saved in
``Device.MQTT.Client.{i}.ClientID`` and reused (R-MQTT.11);
:meth:`MQTTMTP.set_subscriptions` applies a changed Subscription table on the
live connection: SUBSCRIBE for new or re-enabled Topic Filters, UNSUBSCRIBE
for removed or disabled ones (R-MQTT.15, R-MQTT.34).

Named faults (``mqtt.*``, see :data:`FAULTS`) break one rule each at the one
place the rule is kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import ssl
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conformance.agent.faults import register
from conformance.agent.mtp import tls as agent_tls
from conformance.agent.mtp.backoff import Backoff, MQTTRetry, RetryPolicy
from conformance.agent.mtp.base import (
    AgentMTP,
    ControllerRoute,
    MTPNotConnected,
    NoRoute,
    Route,
)
from conformance.mtp.mqtt.topics import topic_matches
from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import new_conn_id
from conformance.usp.schema import MQTTConnectRecord

__all__ = [
    "CONTENT_TYPES",
    "FAULTS",
    "MQTTMTP",
    "USP_CONTENT_TYPE",
    "MQTTClientConfig",
    "MQTTSubscription",
    "subscription_plan",
]

_log = logging.getLogger(__name__)

#: Content Type of a PUBLISH carrying a USP Record (R-MQTT.27).
USP_CONTENT_TYPE = "usp.msg"
#: Content Types meaning "USP Record" on receipt (R-MQTT.27a).
CONTENT_TYPES = frozenset({USP_CONTENT_TYPE, "application/vnd.bbf.usp.msg"})
_REPLY_TO = "/reply-to="
_VERSIONS = {"5.0": 5, "3.1.1": 4}

#: The client's named faults: (name, requirement it breaks, what the client does wrong).
FAULTS: tuple[tuple[str, str, str], ...] = (
    ("mqtt.no_credentials", "R-MQTT.7, TP-469 11.2",
     "leaves the configured User Name and Password out of CONNECT"),
    ("mqtt.client_id_changes", "R-MQTT.11, TP-469 11.5",
     "connects with a new random ClientID every time instead of the configured one"),
    ("mqtt.assigned_client_id_not_saved", "R-MQTT.9, TP-469 11.4",
     ("does not save the ClientID it connected with (the Assigned Client Identifier) "
      "in Device.MQTT.Client.{i}.ClientID")),
    ("mqtt.retry_immediately", "R-MQTT.10, R-MQTT.33, TP-469 11.6/11.16",
     "reconnects at once after a failed or lost connection (no ConnectRetryTime wait)"),
    ("mqtt.retry_no_multiplier", "R-MQTT.10, TP-469 11.6",
     "waits exactly ConnectRetryTime before every retry (ignores the interval multiplier)"),
    ("mqtt.no_keep_alive", "R-MQTT.14, TP-469 11.7",
     "sends Keep Alive 0 in CONNECT whatever KeepAliveTime says"),
    ("mqtt.ignore_server_keep_alive", "MQTT 5.0 §3.2.2.3.14, TP-469 11.7",
     "keeps its own Keep Alive when the CONNACK gives a Server Keep Alive"),
    ("mqtt.no_request_response_information", "R-MQTT.12, TP-469 11.8",
     "does not set Request Response Information to 1 in a 5.0 CONNECT"),
    ("mqtt.ignore_subscribe_topic", "R-MQTT.15, TP-469 11.8",
     "leaves the CONNACK subscribe-topic User Properties out of its SUBSCRIBE"),
    ("mqtt.response_information_not_subscribed", "R-MQTT.15, TP-469 11.8",
     "does not SUBSCRIBE to the CONNACK Response Information"),
    ("mqtt.ignore_new_subscriptions", "R-MQTT.15, TP-469 11.9/11.13",
     "sends no SUBSCRIBE for a Subscription added or enabled while connected"),
    ("mqtt.no_unsubscribe", "R-MQTT.34, TP-469 11.9",
     "sends no UNSUBSCRIBE when a Subscription is disabled or deleted while connected"),
    ("mqtt.stay_without_subscribe_topic", "R-MQTT.16, TP-469 11.10",
     ("stays connected (on ResponseTopicConfigured) with neither a subscribe-topic nor a "
      "configured Subscription")),
    ("mqtt.ignore_suback_failure", "R-MQTT.17, TP-469 11.11",
     "treats refused Topic Filters as granted: no DISCONNECT, Records published"),
    ("mqtt.no_reply_to", "R-MQTT.22..R-MQTT.24, TP-469 11.12",
     ("publishes Records without its reply-to topic (no 5.0 Response Topic, no 3.1.1 "
      "/reply-to= part)")),
    ("mqtt.drop_qos0", "R-MQTT.20, TP-469 11.13",
     "drops PUBLISHes delivered at QoS 0"),
    ("mqtt.ignore_reply_to", "R-MQTT.25, R-MQTT.26, TP-469 11.14",
     ("answers on the Controller's configured topic instead of the reply-to topic of the "
      "PUBLISH it answers")),
    ("mqtt.usp_msg_content_type_only", "R-MQTT.27a, TP-469 11.15",
     "drops 5.0 PUBLISHes whose Content Type is application/vnd.bbf.usp.msg"),
    ("mqtt.connect_record_wrong_topic", "R-MTP.6, TP-469 11.17",
     "puts the Controller's topic, which it is not subscribed to, in the MQTTConnectRecord"),
    ("mqtt.connect_record_wrong_version", "R-MTP.6, TP-469 11.17",
     "puts the other MQTT version in the MQTTConnectRecord"),
    ("mqtt.tls_disabled", "R-MQTT.48, TP-469 11.3",
     "connects without TLS even when TransportProtocol is TLS"),
)
for _name, _requirement, _text in FAULTS:
    register(_name, _requirement, _text)


@dataclass(frozen=True)
class _FixedRetry:
    """A broken retry policy for faults: the same wait before every retry."""

    seconds: float

    def bounds(self, retry: int) -> tuple[float, float]:
        return self.seconds, self.seconds

    def delay(self, retry: int, rng: random.Random) -> float:
        return self.seconds


@dataclass(frozen=True)
class MQTTSubscription:
    """An enabled ``Device.MQTT.Client.{i}.Subscription.{i}`` (Topic, QoS)."""

    topic: str
    qos: int = 1


@dataclass(frozen=True)
class MQTTClientConfig:
    """The ``Device.MQTT.Client.{i}`` parameters the client uses.

    ``protocol_version`` is "5.0" or "3.1.1"; ``clean_start`` is CleanStart
    (5.0) / CleanSession (3.1.1); ``retry`` carries ConnectRetryTime,
    ConnectRetryIntervalMultiplier and ConnectRetryMaxInterval. TLS is on
    when the MTP gets an ``ssl_context`` (TransportProtocol TLS).
    """

    broker_address: str = "127.0.0.1"
    broker_port: int = 1883
    protocol_version: str = "5.0"
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    keep_alive_time: int = 60
    clean_start: bool = True
    session_expiry_interval: int | None = None
    request_response_information: bool = True
    subscriptions: tuple[MQTTSubscription, ...] = ()
    retry: MQTTRetry = field(default_factory=MQTTRetry)

    def __post_init__(self) -> None:
        if self.protocol_version not in _VERSIONS:
            raise ValueError(f"ProtocolVersion must be one of {sorted(_VERSIONS)}, "
                             f"not {self.protocol_version!r}")
        if not 0 < self.broker_port < 65536:
            raise ValueError(f"BrokerPort must be 1..65535, not {self.broker_port!r}")
        if not 0 <= self.keep_alive_time <= 65535:
            raise ValueError("KeepAliveTime must be 0..65535")
        object.__setattr__(self, "subscriptions", tuple(self.subscriptions))

    @property
    def level(self) -> int:
        """MQTT Protocol Level: 5 or 4 (3.1.1)."""
        return _VERSIONS[self.protocol_version]


def _covered(topic: str, filters: Sequence[str]) -> bool:
    return any(f == topic or topic_matches(f, topic) for f in filters)


def _reachable(topic_filter: str) -> str | None:
    """An exact topic a filter receives: itself without wildcards, or the prefix of ``x/#``."""
    base = topic_filter.removesuffix("/#")
    return base if base and "+" not in base and "#" not in base else None


def subscription_plan(*, level: int, configured: Sequence[MQTTSubscription],
                      subscribe_topics: Sequence[str], response_information: str | None,
                      response_topic_configured: str, qos: int = 1
                      ) -> tuple[list[tuple[str, int]], str | None]:
    """The Topic Filters to SUBSCRIBE (with QoS) and the "reply to" topic.

    Implements R-MQTT.15 (which filters), R-MQTT.21 (Response Information
    first) and the ResponseTopicConfigured rule; ``level`` is 5 or 4.  On
    3.1.1 coverage is checked for ``<topic>/reply-to=...`` names, since that
    is what the Agent receives (R-MQTT.24).  Pure; R-MQTT.16 is the caller's.
    """
    plan: list[tuple[str, int]] = []
    for sub in configured:
        plan.append((sub.topic, sub.qos))
    if level == 5:
        plan += [(t, qos) for t in subscribe_topics]
    names = [t for t, _ in plan]
    reply: str | None = None
    if level == 5 and response_information:
        reply = response_information
        if not _covered(reply, names):
            plan.append((reply, qos))
    elif response_topic_configured:
        reply = response_topic_configured
        probe = reply if level == 5 else f"{reply}{_REPLY_TO}x"
        if not _covered(probe, names):
            plan.append((reply if level == 5 else f"{reply}/#", qos))
    if reply is None:
        reply = next((r for r in map(_reachable, names) if r), None)
    unique: dict[str, int] = {}
    for topic, topic_qos in plan:
        unique.setdefault(topic, topic_qos)
    return list(unique.items()), reply


def _props_json(props: Properties | None) -> dict[str, Any]:
    if props is None:
        return {}
    try:
        out = props.json()
    except Exception:  # noqa: BLE001 - a summary must never break the client
        return {"unprintable": True}
    return {k: (list(map(list, v)) if k == "UserProperty" else v) for k, v in out.items()}


@dataclass
class _Connack:
    session_present: bool
    failure: bool
    reason: str
    code: int
    properties: dict[str, Any]
    user_properties: list[tuple[str, str]]


class MQTTMTP(AgentMTP):
    """One MQTT client of the Agent and the MTP instance using it."""

    name = "mqtt"

    def __init__(self, endpoint_id: str, client: MQTTClientConfig, *,
                 response_topic_configured: str = "", publish_qos: int = 1,
                 subscribe_qos: int = 1, controllers: Sequence[ControllerRoute] = (),
                 ssl_context: ssl.SSLContext | None = None, timeline: Timeline | None = None,
                 rng: random.Random | None = None, connect_timeout: float = 10.0) -> None:
        super().__init__(endpoint_id, controllers=controllers, timeline=timeline, rng=rng)
        if publish_qos not in (0, 1, 2) or subscribe_qos not in (0, 1, 2):
            raise ValueError("QoS must be 0, 1 or 2")
        if any(c in response_topic_configured for c in "+#"):
            raise ValueError("ResponseTopicConfigured must not contain wildcards")
        self.config = client
        self.response_topic_configured = response_topic_configured
        self.publish_qos = publish_qos
        self.subscribe_qos = subscribe_qos
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        # R-MQTT.8: an unconfigured 3.1.1 ClientID becomes the Endpoint ID.
        self._client_id = client.client_id or ("" if client.level == 5 else endpoint_id)
        #: The last CONNACK Assigned Client Identifier (5.0), if any (R-MQTT.9).
        self.assigned_client_id: str | None = None
        #: ``ResponseTopicDiscovered``: the last CONNACK Response Information.
        self.response_information: str | None = None
        #: Topic Filters granted on the current connection.
        self.subscribed_topics: list[str] = []
        #: The "reply to" topic of the current connection (R-MQTT.21, R-MQTT.22).
        self.reply_topic: str | None = None
        #: CONNACK Maximum QoS (5.0), if the server limited it.
        self.maximum_qos: int | None = None
        #: True once R-MQTT.16 disabled the MTP.
        self.disabled = False
        self.conn_id: str | None = None
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._connack: asyncio.Future[_Connack] | None = None
        self._lost: asyncio.Future[str] | None = None
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._said_bye: weakref.WeakSet[paho.Client] = weakref.WeakSet()
        #: Called with the ClientID a connection used when it differs from the configured
        #: one, to be saved as ``ClientID`` (R-MQTT.9, R-MQTT.11); set by the owner.
        self.on_client_id: Callable[[str], None] | None = None
        #: Topic Filters of the current connection that do not come from the
        #: Subscription table (subscribe-topic, Response Information, ...).
        self._extra_filters: list[str] = []
        self._updates: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ properties

    @property
    def connected(self) -> bool:
        return self._connected and self._client is not None

    @property
    def client_id(self) -> str:
        """The ClientID used for the next CONNECT (the assigned one once known)."""
        return self._client_id

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    @property
    def level(self) -> int:
        return self.config.level

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is None:
            if self.ssl_context is not None:  # how the broker's certificate is judged
                agent_tls.apply_faults(self.ssl_context, self.faults, server_side=False)
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run())

    async def stop(self, disconnect_record: bytes | Sequence[bytes] | None = None) -> None:
        if not self._begin_stop():
            return
        if self.connected:
            await self._send_disconnects(disconnect_record)
            await self._drain_acks(2.0)  # DISCONNECT only once the Records are acknowledged
        client = self._client
        if client is not None and client.is_connected():
            self._disconnect(client, "stop")  # R-MQTT.35
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except TimeoutError:
                await self._cancel(task)

    async def _drain_acks(self, timeout: float) -> None:
        """Wait until every PUBLISH sent so far is acknowledged (or written, QoS 0)."""
        pending = [f for f in self._acks.values() if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    @property
    def running(self) -> bool:
        """Whether the connect / retry loop is still going (False once stopped or disabled)."""
        return self._task is not None and not self._task.done()

    def _retry_policy(self) -> RetryPolicy:
        """ConnectRetry* (R-MQTT.10, R-MQTT.33), unless a fault breaks it."""
        if self.faults.on("mqtt.retry_immediately"):
            return _FixedRetry(0.0)
        if self.faults.on("mqtt.retry_no_multiplier"):
            return _FixedRetry(self.config.retry.connect_retry_time)
        return self.config.retry

    async def _run(self) -> None:
        backoff = Backoff(self._retry_policy(), self.rng)
        first = True
        try:
            while not self.stopping and not self.disabled:
                if not first and not await self._retry_wait(backoff, self.conn_id):
                    break
                first = False
                try:
                    await self._session(backoff)
                except Exception as exc:  # noqa: BLE001 - keep retrying whatever went wrong
                    _log.exception("mqtt: connection failed")
                    self._record("mqtt.state", direction="local", conn_id=self.conn_id,
                                 decoded={"state": "error", "error": repr(exc)[:300]})
        finally:
            asyncio.get_running_loop().call_soon(self._changed)  # `running` is False by then

    # ------------------------------------------------------------------ one connection

    def _new_client(self) -> paho.Client:
        cfg = self.config
        v5 = cfg.level == 5
        if self.faults.on("mqtt.client_id_changes"):
            self._client_id = f"cid-{uuid.uuid4().hex[:12]}"
        kwargs: dict[str, Any] = {"client_id": self._client_id,
                                  "protocol": paho.MQTTv5 if v5 else paho.MQTTv311,
                                  "reconnect_on_failure": False}
        if not v5:
            kwargs["clean_session"] = cfg.clean_start
        client = paho.Client(CallbackAPIVersion.VERSION2, **kwargs)
        client.connect_timeout = self.connect_timeout
        if cfg.username is not None and not self.faults.on("mqtt.no_credentials"):
            client.username_pw_set(cfg.username, cfg.password)  # R-MQTT.7
        if self.ssl_context is not None and not self.faults.on("mqtt.tls_disabled"):
            client.tls_set_context(self.ssl_context)
        client.on_connect = self._cb_connect
        client.on_subscribe = self._cb_subscribe
        client.on_unsubscribe = self._cb_unsubscribe
        client.on_message = self._cb_message
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        return client

    def _connect_properties(self) -> Properties | None:
        cfg = self.config
        if cfg.level != 5:
            return None
        props = Properties(PacketTypes.CONNECT)
        props.UserProperty = ("usp-endpoint-id", self.endpoint_id)  # R-MQTT.13
        if cfg.request_response_information and not self.faults.on(
                "mqtt.no_request_response_information"):
            props.RequestResponseInformation = 1  # R-MQTT.12
        if cfg.session_expiry_interval is not None:
            props.SessionExpiryInterval = cfg.session_expiry_interval
        return props

    def _keep_alive(self) -> int:
        """The CONNECT Keep Alive: KeepAliveTime (R-MQTT.14)."""
        return 0 if self.faults.on("mqtt.no_keep_alive") else self.config.keep_alive_time

    def _blocking_connect(self, client: paho.Client, props: Properties | None) -> None:
        cfg = self.config
        if cfg.level == 5:
            client.connect(cfg.broker_address, cfg.broker_port, self._keep_alive(),
                           clean_start=cfg.clean_start, properties=props)
        else:
            client.connect(cfg.broker_address, cfg.broker_port, self._keep_alive())

    async def _session(self, backoff: Backoff) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        client = self._new_client()
        props = self._connect_properties()
        self.conn_id = conn_id = new_conn_id(self.name)
        self._client = client
        self._connack = loop.create_future()
        self._lost = loop.create_future()
        self._record("mqtt.CONNECT", direction="out", conn_id=conn_id, decoded={
            "protocol_level": cfg.level, "client_id": self._client_id,
            "clean_start": cfg.clean_start, "keep_alive": self._keep_alive(),
            "username": cfg.username, "password": cfg.password is not None,
            "properties": _props_json(props), "tls": self.tls,
            "broker": f"{cfg.broker_address}:{cfg.broker_port}"})
        connect = loop.run_in_executor(None, self._blocking_connect, client, props)
        try:
            await asyncio.shield(connect)
        except asyncio.CancelledError:
            connect.add_done_callback(lambda _f: self._disconnect(client, "cancelled"))
            raise
        except (OSError, ValueError) as exc:
            self._record("mqtt.state", direction="local", conn_id=conn_id,
                         decoded={"state": "connect_failed", "error": str(exc)[:300]})
            self._client = None
            return
        if self.stopping:  # stopped while connecting: say goodbye without a network loop
            self._client = None
            client.disconnect()
            return
        client.loop_start()
        was_connected = False
        try:
            connack = await self._wait(self._connack)
            if connack is None or connack.failure:
                self._record("mqtt.state", direction="local", conn_id=conn_id,
                             decoded={"state": "refused" if connack else "no_connack"})
                return
            backoff.reset()
            self._save_client_id()
            if not await self._subscribe(client, connack):
                return
            self._connected = was_connected = True
            await self._send_connect_records()
            self._notify_connected()
            await asyncio.shield(self._lost)
        finally:
            self._connected = False
            for fut in self._acks.values():
                fut.cancel()
            self._acks.clear()
            self._disconnect(client, "teardown")
            await loop.run_in_executor(None, self._join, client)
            self._client = None
            if was_connected:
                self._notify_disconnected()

    def _save_client_id(self) -> None:
        """R-MQTT.9 / R-MQTT.11: the ClientID this connection used becomes the configured
        one (an Assigned Client Identifier, or the 3.1.1 Endpoint ID fallback)."""
        used = self._client_id
        if not used or used == self.config.client_id:
            return
        if self.faults.on("mqtt.assigned_client_id_not_saved") or self.faults.on(
                "mqtt.client_id_changes"):
            return
        self.config = dataclasses.replace(self.config, client_id=used)
        if self.on_client_id is not None:
            try:
                self.on_client_id(used)
            except Exception:  # noqa: BLE001 - the owner's bug must not drop the connection
                _log.exception("mqtt: on_client_id handler failed")

    @staticmethod
    def _join(client: paho.Client) -> None:
        """Wait for paho's network thread to end (it may already have)."""
        try:
            client.loop_stop()
        except AttributeError:  # the thread cleared itself between the checks
            pass

    async def _wait(self, fut: asyncio.Future[Any]) -> Any:
        """``fut``'s result, or None when the connection is lost, the MTP stops or
        ``connect_timeout`` passes first."""
        assert self._lost is not None
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({fut, self._lost, stop}, timeout=self.connect_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        return fut.result() if fut in done and not self.stopping else None

    def _disconnect(self, client: paho.Client, why: str) -> None:
        """Send DISCONNECT once per connection (paho then ends its network thread)."""
        if client in self._said_bye:
            return
        self._said_bye.add(client)
        if client.is_connected():
            self._record("mqtt.DISCONNECT", direction="out", conn_id=self.conn_id,
                         decoded={"reason_code": 0, "why": why})
        client.disconnect()  # without a socket this only ends paho's loop

    async def _subscribe(self, client: paho.Client, connack: _Connack) -> bool:
        """R-MQTT.15..R-MQTT.17; True when subscribed and a reply-to topic is known."""
        cfg = self.config
        subscribe_topics = [v for k, v in connack.user_properties if k == "subscribe-topic"]
        if not subscribe_topics and not cfg.subscriptions and not self.faults.on(
                "mqtt.stay_without_subscribe_topic"):  # R-MQTT.16
            self.disabled = True
            self._record("mqtt.state", direction="local", conn_id=self.conn_id,
                         decoded={"state": "disabled", "rule": "R-MQTT.16"},
                         note="no subscribe-topic and no configured Subscription")
            self._disconnect(client, "R-MQTT.16")
            return False
        if self.faults.on("mqtt.ignore_subscribe_topic"):
            subscribe_topics = []
        plan, reply = subscription_plan(
            level=cfg.level, configured=cfg.subscriptions, subscribe_topics=subscribe_topics,
            response_information=self.response_information,
            response_topic_configured=self.response_topic_configured, qos=self.subscribe_qos)
        configured = {sub.topic for sub in cfg.subscriptions}
        if self.faults.on("mqtt.response_information_not_subscribed"):
            kept = configured | set(subscribe_topics)
            plan = [(t, q) for t, q in plan if t != self.response_information or t in kept]
        if not plan:
            return False
        rc, mid = client.subscribe(plan)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return False
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._subacks[mid] = fut
        self._record("mqtt.SUBSCRIBE", direction="out", conn_id=self.conn_id,
                     decoded={"packet_id": mid, "subscriptions": [list(p) for p in plan]})
        try:
            codes = await self._wait(fut)
        finally:
            self._subacks.pop(mid, None)
        if codes is None:
            return False
        granted = [topic for (topic, _), code in zip(plan, codes, strict=False) if code < 0x80]
        if self.faults.on("mqtt.ignore_suback_failure"):
            granted = [topic for topic, _ in plan]
        if not granted:  # R-MQTT.17
            self._record("mqtt.state", direction="local", conn_id=self.conn_id,
                         decoded={"state": "subscribe_failed", "rule": "R-MQTT.17",
                                  "codes": codes})
            self._disconnect(client, "R-MQTT.17")
            return False
        if reply is None:  # R-MQTT.22 cannot be met
            self.disabled = True
            self._record("mqtt.state", direction="local", conn_id=self.conn_id,
                         decoded={"state": "disabled", "rule": "R-MQTT.22"},
                         note="no reply-to topic (no Response Information or "
                              "ResponseTopicConfigured)")
            self._disconnect(client, "R-MQTT.22")
            return False
        self.subscribed_topics = granted
        needed = {*subscribe_topics, self.response_information}
        self._extra_filters = [t for t, _ in plan if t not in configured or t in needed]
        self.reply_topic = reply
        return True

    async def _send_connect_records(self) -> None:
        v5 = (self.level == 5) != self.faults.on("mqtt.connect_record_wrong_version")
        version = MQTTConnectRecord.V5 if v5 else MQTTConnectRecord.V3_1_1
        for route in self.controllers.values():
            if not route.address:
                continue
            topic = self.reply_topic or ""
            if self.faults.on("mqtt.connect_record_wrong_topic"):
                topic = route.address
            data = self._connect_record(route.endpoint_id, mqtt_version=version,
                                        subscribed_topic=topic)
            try:
                await self.send(data, to_id=route.endpoint_id)
            except ConnectionError:
                return
            self._record("mqtt.connect_record", direction="out", conn_id=self.conn_id,
                         decoded={"to_id": route.endpoint_id, "topic": route.address,
                                  "subscribed_topic": self.reply_topic})

    # ------------------------------------------------------------------ configuration changes

    def set_subscriptions(self, subscriptions: Sequence[MQTTSubscription]) -> None:
        """The enabled ``Subscription`` table changed: use it for later connections and,
        when connected, SUBSCRIBE to new Topic Filters (R-MQTT.15) and UNSUBSCRIBE from
        ones no longer configured (R-MQTT.34). Call it on the event loop thread."""
        new = tuple(subscriptions)
        old = self.config.subscriptions
        if new == old:
            return
        self.config = dataclasses.replace(self.config, subscriptions=new)
        client = self._client
        if not self.connected or client is None:
            return  # the next connection subscribes to the new table
        before = {sub.topic: sub.qos for sub in old}
        after = {sub.topic: sub.qos for sub in new}
        added = [(t, q) for t, q in after.items() if before.get(t) != q]
        removed = [t for t in before if t not in after and t not in self._extra_filters]
        if self.faults.on("mqtt.ignore_new_subscriptions"):
            added = []
        if self.faults.on("mqtt.no_unsubscribe"):
            removed = []
        if added or removed:
            task = asyncio.get_running_loop().create_task(
                self._resubscribe(client, added, removed))
            self._updates.add(task)
            task.add_done_callback(self._updates.discard)

    async def _resubscribe(self, client: paho.Client, added: list[tuple[str, int]],
                           removed: list[str]) -> None:
        """SUBSCRIBE / UNSUBSCRIBE on the current connection (its SUBACK updates
        :attr:`subscribed_topics`)."""
        if removed:
            rc, mid = client.unsubscribe(removed)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._record("mqtt.UNSUBSCRIBE", direction="out", conn_id=self.conn_id,
                             decoded={"packet_id": mid, "topic_filters": removed})
                self.subscribed_topics = [t for t in self.subscribed_topics if t not in removed]
                self._changed()
        if not added:
            return
        rc, mid = client.subscribe(added)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._subacks[mid] = fut
        self._record("mqtt.SUBSCRIBE", direction="out", conn_id=self.conn_id,
                     decoded={"packet_id": mid, "subscriptions": [list(p) for p in added]})
        try:
            codes = await self._wait(fut)
        finally:
            self._subacks.pop(mid, None)
        for (topic, _), code in zip(added, codes or [], strict=False):
            if code < 0x80 and topic not in self.subscribed_topics:
                self.subscribed_topics.append(topic)
        self._changed()

    # ------------------------------------------------------------------ paho thread -> loop

    def _bridge(self, client: paho.Client, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._dispatch, client, fn, args)
        except RuntimeError:  # the event loop is closed
            pass

    def _dispatch(self, client: paho.Client, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if client is self._client:  # ignore late callbacks of an old connection
            fn(*args)

    def _cb_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Properties | None) -> None:
        user = [tuple(p) for p in getattr(properties, "UserProperty", None) or []]
        info = _Connack(bool(flags.session_present), bool(reason.is_failure), str(reason),
                        int(reason.value), _props_json(properties), user)
        extra = (getattr(properties, "AssignedClientIdentifier", None),
                 getattr(properties, "ResponseInformation", None),
                 getattr(properties, "MaximumQoS", None))
        if self.faults.on("mqtt.ignore_server_keep_alive"):
            # paho adopted the Server Keep Alive before this callback; undo it (paho thread)
            client._keepalive = self._keep_alive()
        self._bridge(client, self._on_connack, info, *extra)

    def _cb_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: list[Any],
                      properties: Properties | None) -> None:
        self._bridge(client, self._on_suback, mid, [int(r.value) for r in reasons])

    def _cb_unsubscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: list[Any],
                        properties: Properties | None) -> None:
        self._bridge(client, self._on_unsuback, mid, [int(r.value) for r in reasons])

    def _cb_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        self._bridge(client, self._on_publish, message.topic, bytes(message.payload),
                     message.qos, getattr(props, "ResponseTopic", None),
                     getattr(props, "ContentType", None), _props_json(props))

    def _cb_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any,
                    properties: Properties | None) -> None:
        self._bridge(client, self._on_puback, mid)

    def _cb_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Properties | None) -> None:
        self._bridge(client, self._on_disconnect, bool(flags.is_disconnect_packet_from_server),
                     int(reason.value), str(reason))

    # ------------------------------------------------------------------ handlers (loop thread)

    def _on_connack(self, info: _Connack, assigned: str | None, response_info: str | None,
                    maximum_qos: int | None) -> None:
        self._record("mqtt.CONNACK", direction="in", conn_id=self.conn_id, decoded={
            "session_present": info.session_present, "reason_code": info.code,
            "reason": info.reason, "properties": info.properties})
        if not info.failure:
            if assigned:  # R-MQTT.9 / R-MQTT.11: keep it for later connections
                self.assigned_client_id = self._client_id = assigned
            self.response_information = response_info or None
            self.maximum_qos = maximum_qos
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(info)

    def _on_suback(self, mid: int, codes: list[int]) -> None:
        self._record("mqtt.SUBACK", direction="in", conn_id=self.conn_id,
                     decoded={"packet_id": mid, "reason_codes": codes})
        fut = self._subacks.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(codes)

    def _on_unsuback(self, mid: int, codes: list[int]) -> None:
        self._record("mqtt.UNSUBACK", direction="in", conn_id=self.conn_id,
                     decoded={"packet_id": mid, "reason_codes": codes})

    def _on_puback(self, mid: int) -> None:
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_publish(self, topic: str, payload: bytes, qos: int, response_topic: str | None,
                    content_type: str | None, properties: dict[str, Any]) -> None:
        conn_id = self.conn_id or ""
        self._record("mqtt.PUBLISH", direction="in", conn_id=conn_id, raw=payload, decoded={
            "topic": topic, "qos": qos, "properties": properties, "payload_length": len(payload)})
        if qos == 0 and self.faults.on("mqtt.drop_qos0"):
            return
        if self.level == 5:
            reply_to = response_topic  # R-MQTT.26
            accepted = CONTENT_TYPES
            if self.faults.on("mqtt.usp_msg_content_type_only"):
                accepted = frozenset({USP_CONTENT_TYPE})
            if content_type is not None and content_type not in accepted:  # R-MQTT.27a
                self._record("mqtt.dropped", direction="local", conn_id=conn_id,
                             decoded={"reason": f"Content Type {content_type[:80]!r}"})
                return
        else:  # R-MQTT.25
            _, sep, tail = topic.rpartition(_REPLY_TO)
            reply_to = tail.replace("%2F", "/") if sep else None
        if not self.decodable(payload):
            self._record("mqtt.dropped", direction="local", conn_id=conn_id,
                         decoded={"reason": "payload is not a USP Record"})
            return
        if self.faults.on("mqtt.ignore_reply_to"):
            reply_to = None  # the answer goes to the configured Controller topic
        hint = next((c.endpoint_id for c in self.controllers.values()
                     if reply_to and c.address == reply_to), None)
        self._deliver(payload, Route(self.name, conn_id, reply_to or None, hint))

    def _on_disconnect(self, from_server: bool, code: int, reason: str) -> None:
        self._record("mqtt.DISCONNECT" if from_server else "mqtt.state",
                     direction="in" if from_server else "local", conn_id=self.conn_id,
                     decoded={"reason_code": code, "reason": reason, "state": "closed"})
        self._connected = False
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)
        self._changed()

    # ------------------------------------------------------------------ sending

    async def send(self, data: bytes, *, to_id: str, reply_to: str | None = None) -> None:
        client = self._client
        if not self.connected or client is None or self.reply_topic is None:
            raise MTPNotConnected("mqtt: not connected and subscribed")
        topic = reply_to
        if not topic:
            route = self.controllers.get(to_id)
            if route is None or not route.address:
                raise NoRoute(f"mqtt: no topic known for {to_id!r}")
            topic = route.address
        qos = self.publish_qos if self.maximum_qos is None else min(self.publish_qos,
                                                                    self.maximum_qos)
        props: Properties | None = None
        bare = self.faults.on("mqtt.no_reply_to")
        if self.level == 5:  # R-MQTT.23 / R-MQTT.27
            props = Properties(PacketTypes.PUBLISH)
            if not bare:
                props.ResponseTopic = self.reply_topic
            props.ContentType = USP_CONTENT_TYPE
            name = topic
        elif bare:
            name = topic
        else:  # R-MQTT.24
            name = f"{topic}{_REPLY_TO}{self.reply_topic.replace('/', '%2F')}"
        try:
            info = client.publish(name, bytes(data), qos=qos, properties=props)
        except ValueError as exc:  # e.g. wildcards in the topic
            raise NoRoute(f"mqtt: cannot publish to {name!r}: {exc}") from None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MTPNotConnected(f"mqtt: publish failed: {paho.error_string(info.rc)}")
        if not info.is_published():
            self._acks[info.mid] = asyncio.get_running_loop().create_future()
        self._record("mqtt.PUBLISH", direction="out", conn_id=self.conn_id, raw=bytes(data),
                     decoded={"topic": name, "qos": qos, "properties": _props_json(props),
                              "payload_length": len(data)})

