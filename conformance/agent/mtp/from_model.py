"""Build the Agent's MTP objects from its own data model, as a real device does.

Every enabled ``Device.LocalAgent.MTP.{i}`` becomes one :class:`AgentMTP`,
configured from the objects TR-181 links to it (``Device.MQTT.Client.{i}``,
``Device.STOMP.Connection.{i}``, ``Device.UnixDomainSockets.UnixDomainSocket.{i}``)
and serving every enabled ``Device.LocalAgent.Controller.{i}.MTP.{i}`` of the
same protocol (its topic, destination or WebSocket URL).

TLS: MQTT with ``TransportProtocol`` ``TLS``, STOMP and WebSocket with
``EnableEncryption`` true use the agent's :class:`~conformance.agent.mtp.tls.TLSMaterial`
(its own certificate, the CAs it trusts and whether it has absolute time; see
:mod:`conformance.agent.mtp.tls`).
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable

from conformance.agent.datamodel.store import Store
from conformance.agent.mtp.backoff import (
    MQTTRetry,
    STOMPRetry,
    UDSRetry,
    WebSocketRetry,
)
from conformance.agent.mtp.base import AgentMTP, ControllerRoute
from conformance.agent.mtp.mqtt import MQTTMTP, MQTTClientConfig, MQTTSubscription
from conformance.agent.mtp.stomp import STOMPMTP, STOMPConnectionConfig
from conformance.agent.mtp.tls import TLSMaterial
from conformance.agent.mtp.uds import UDSMTP
from conformance.agent.mtp.websocket import WebSocketMTP, WSController, WSServerConfig
from conformance.mtp.timeline import Timeline

MTP_TABLE = "Device.LocalAgent.MTP."
CONTROLLER_TABLE = "Device.LocalAgent.Controller."


class ModelError(ValueError):
    """The data model describes an MTP the agent cannot set up (names the path)."""


def build_mtps(store: Store, endpoint_id: str, *, tls: TLSMaterial | None = None,
               timeline: Timeline | None = None,
               rng: random.Random | None = None) -> list[AgentMTP]:
    """One AgentMTP per enabled ``Device.LocalAgent.MTP.{i}`` (ModelError if unusable)."""
    tls = tls or TLSMaterial()
    out: list[AgentMTP] = []
    for mtp in store.instances(MTP_TABLE):
        if not _true(store.get(mtp + "Enable")):
            continue
        protocol = store.get(mtp + "Protocol")
        builder = _BUILDERS.get(protocol)
        if builder is None:
            raise ModelError(f"{mtp}Protocol {protocol!r} is not supported by the reference agent")
        built = builder(store, mtp, endpoint_id, tls, timeline, rng)
        if built is not None:
            out.append(built)
    return out


def controller_routes(store: Store, protocol: str,
                      address: Callable[[str], str | None]) -> list[ControllerRoute]:
    """Enabled controllers with an enabled MTP of ``protocol``; ``address`` reads the
    route's address from the Controller MTP instance (None: not served here)."""
    routes: list[ControllerRoute] = []
    for ctrl in store.instances(CONTROLLER_TABLE):
        if not _true(store.get(ctrl + "Enable")):
            continue
        eid = store.get(ctrl + "EndpointID")
        mtps = sorted(store.instances(ctrl + "MTP."), key=lambda m: _int(store.get(m + "Order")))
        for cmtp in mtps:
            if _true(store.get(cmtp + "Enable")) and store.get(cmtp + "Protocol") == protocol:
                where = address(cmtp)
                if where is not None:
                    routes.append(ControllerRoute(eid, where))
                    break
    return routes


# --- one builder per protocol ------------------------------------------------------


def _mqtt(store: Store, mtp: str, eid: str, tls: TLSMaterial, timeline: Timeline | None,
          rng: random.Random | None) -> AgentMTP | None:
    client = _ref(store, mtp + "MQTT.Reference")
    if client is None:
        raise ModelError(f"{mtp}MQTT.Reference does not name a Device.MQTT.Client instance")
    if not _true(store.get(client + "Enable")):
        return None
    subs = _mqtt_subscriptions(store, client)
    cfg = MQTTClientConfig(
        broker_address=store.get(client + "BrokerAddress"),
        broker_port=_int(store.get(client + "BrokerPort"), 1883),
        protocol_version=store.get(client + "ProtocolVersion") or "5.0",
        client_id=store.get(client + "ClientID"),
        username=store.get(client + "Username") or None,
        password=store.get(client + "Password") or None,
        keep_alive_time=_int(store.get(client + "KeepAliveTime"), 60),
        clean_start=_true(store.get(client + "CleanStart")),
        request_response_information=_true(store.get(client + "RequestResponseInfo")),
        subscriptions=subs,
        retry=MQTTRetry(_int(store.get(client + "ConnectRetryTime"), 5),
                        _int(store.get(client + "ConnectRetryIntervalMultiplier"), 2000),
                        _int(store.get(client + "ConnectRetryMaxInterval"), 30720)),
    )
    mine = mtp.rstrip(".")
    routes = controller_routes(store, "MQTT", lambda c: (
        store.get(c + "MQTT.Topic")
        if store.get(c + "MQTT.AgentMTPReference").rstrip(".") in ("", mine) else None))
    use_tls = store.get(client + "TransportProtocol") == "TLS"
    built = MQTTMTP(eid, cfg, response_topic_configured=store.get(mtp + "MQTT.ResponseTopicConfigured"),
                    publish_qos=_int(store.get(mtp + "MQTT.PublishQoS"), 1), controllers=routes,
                    ssl_context=_ctx(tls.client, use_tls, mtp), timeline=timeline, rng=rng)
    # R-MQTT.9 / R-MQTT.11: the ClientID in use is saved; R-MQTT.15 / R-MQTT.34: the
    # Subscription table is followed while connected (TP-469 11.4, 11.5, 11.9, 11.13).
    built.on_client_id = lambda cid: store.set(client + "ClientID", cid)
    table = client + "Subscription."

    def follow(change: object) -> None:
        if getattr(change, "path", "").startswith(table):
            built.set_subscriptions(_mqtt_subscriptions(store, client))

    store.listen(follow)
    return built


def _mqtt_subscriptions(store: Store, client: str) -> tuple[MQTTSubscription, ...]:
    """The enabled ``Device.MQTT.Client.{i}.Subscription.{i}`` Topic Filters and QoS."""
    return tuple(MQTTSubscription(store.get(s + "Topic"), _int(store.get(s + "QoS"), 1))
                 for s in store.instances(client + "Subscription.")
                 if _true(store.get(s + "Enable")))


def _stomp(store: Store, mtp: str, eid: str, tls: TLSMaterial, timeline: Timeline | None,
           rng: random.Random | None) -> AgentMTP | None:
    conn = _ref(store, mtp + "STOMP.Reference")
    if conn is None:
        raise ModelError(f"{mtp}STOMP.Reference does not name a Device.STOMP.Connection instance")
    if not _true(store.get(conn + "Enable")):
        return None
    cfg = STOMPConnectionConfig(
        host=store.get(conn + "Host"), port=_int(store.get(conn + "Port"), 61613),
        username=store.get(conn + "Username") or None,
        password=store.get(conn + "Password") or None,
        virtual_host=store.get(conn + "VirtualHost"),
        enable_heartbeats=_true(store.get(conn + "EnableHeartbeats")),
        outgoing_heartbeat=_int(store.get(conn + "OutgoingHeartbeat")),
        incoming_heartbeat=_int(store.get(conn + "IncomingHeartbeat")),
        retry=STOMPRetry(_int(store.get(conn + "ServerRetryInitialInterval"), 60),
                         _int(store.get(conn + "ServerRetryIntervalMultiplier"), 2000),
                         _int(store.get(conn + "ServerRetryMaxInterval"), 30720)),
    )
    mine = conn.rstrip(".")
    routes = controller_routes(store, "STOMP", lambda c: (
        store.get(c + "STOMP.Destination")
        if store.get(c + "STOMP.Reference").rstrip(".") in ("", mine) else None))
    stomp = STOMPMTP(eid, cfg, destination=store.get(mtp + "STOMP.Destination"),
                     controllers=routes,
                     ssl_context=_ctx(tls.client, _true(store.get(conn + "EnableEncryption")), mtp),
                     timeline=timeline, rng=rng)
    stomp.follow_destination(store, mtp + "STOMP.Destination")  # TP-469 6.10
    return stomp


def _websocket(store: Store, mtp: str, eid: str, tls: TLSMaterial, timeline: Timeline | None,
               rng: random.Random | None) -> AgentMTP | None:
    def url(cmtp: str) -> str:
        scheme = "wss" if _true(store.get(cmtp + "WebSocket.EnableEncryption")) else "ws"
        host = store.get(cmtp + "WebSocket.Host")
        host = f"[{host}]" if ":" in host else host
        path = store.get(cmtp + "WebSocket.Path") or "/"
        return f"{scheme}://{host}:{store.get(cmtp + 'WebSocket.Port')}/{path.lstrip('/')}"

    controllers: list[ControllerRoute] = []
    for route in controller_routes(store, "WebSocket", url):
        cmtp = _controller_mtp(store, route.endpoint_id, "WebSocket")
        keep = _int(store.get(cmtp + "WebSocket.KeepAliveInterval")) if cmtp else 0
        retry = WebSocketRetry(
            _int(store.get(cmtp + "WebSocket.SessionRetryMinimumWaitInterval"), 5) if cmtp else 5,
            _int(store.get(cmtp + "WebSocket.SessionRetryIntervalMultiplier"), 2000) if cmtp else 2000)
        controllers.append(WSController(route.endpoint_id, route.address,
                                        keep_alive_interval=float(keep) or None, retry=retry))
    server = WSServerConfig(host="127.0.0.1", port=_int(store.get(mtp + "WebSocket.Port")),
                            path=store.get(mtp + "WebSocket.Path") or "/usp",
                            keep_alive_interval=float(_int(store.get(mtp + "WebSocket.KeepAliveInterval"), 60)) or None)
    encrypted = _true(store.get(mtp + "WebSocket.EnableEncryption"))
    needs_client_tls = any(c.address.startswith("wss:") for c in controllers)
    return WebSocketMTP(eid, controllers=controllers, server=server,
                        client_ssl_context=_ctx(tls.client, needs_client_tls, mtp),
                        server_ssl_context=_ctx(tls.server, encrypted, mtp),
                        timeline=timeline, rng=rng)


def _uds(store: Store, mtp: str, eid: str, tls: TLSMaterial, timeline: Timeline | None,
         rng: random.Random | None) -> AgentMTP | None:
    sock = _ref(store, mtp + "UDS.UnixDomainSocketRef")
    if sock is None:
        raise ModelError(f"{mtp}UDS.UnixDomainSocketRef does not name a UnixDomainSocket instance")
    routes = controller_routes(store, "UDS", lambda c: "")
    return UDSMTP(eid, store.get(sock + "Path"), controllers=routes, retry=UDSRetry(),
                  timeline=timeline, rng=rng)


_BUILDERS = {"MQTT": _mqtt, "STOMP": _stomp, "WebSocket": _websocket, "UDS": _uds}


# --- helpers -------------------------------------------------------------------------


def _controller_mtp(store: Store, endpoint_id: str, protocol: str) -> str | None:
    for ctrl in store.instances(CONTROLLER_TABLE):
        if store.get(ctrl + "EndpointID") == endpoint_id:
            for cmtp in store.instances(ctrl + "MTP."):
                if store.get(cmtp + "Protocol") == protocol and _true(store.get(cmtp + "Enable")):
                    return cmtp
    return None


def _ref(store: Store, param: str) -> str | None:
    """The instance a reference parameter names (with its final dot), if it exists."""
    value = store.get(param).strip()
    if not value:
        return None
    inst = value if value.endswith(".") else value + "."
    return inst if store.exists(inst) else None


def _ctx(factory: Callable[[], ssl.SSLContext] | None, wanted: bool,
         where: str) -> ssl.SSLContext | None:
    if not wanted:
        return None
    if factory is None:
        raise ModelError(f"{where} needs TLS but the agent has no certificate configured "
                         "(set tls.certificate, tls.private_key and tls.trust in its config)")
    return factory()


def _true(text: str) -> bool:
    return text.strip().lower() in ("true", "1")


def _int(text: str, default: int = 0) -> int:
    try:
        return int(text)
    except ValueError:
        return default
