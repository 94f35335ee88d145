"""State the suite's MQTT broker keeps per network connection and per MQTT Session.

* :class:`MQTTClient` is one network connection: what its CONNECT said, what
  the CONNACK told it, its limits (Receive Maximum, Maximum Packet Size),
  inbound Topic Aliases, and :meth:`MQTTClient.send` which encodes, records
  (``mqtt.<TYPE>`` out) and writes one packet.
* :class:`MQTTSession` is the MQTT Session of one Client Identifier, which
  may outlive a connection (MQTT 5.0 §4.1, MQTT 3.1.1 §4.1): subscriptions,
  QoS 1/2 messages in flight both ways, messages queued while the client is
  away or its Receive Maximum is reached, and the expiry interval.
* :class:`Message` is an Application Message inside the broker and
  :class:`ClientSubscription` one granted subscription.

Nothing here decides protocol behaviour; :mod:`conformance.mtp.mqtt.broker` does.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from conformance.mtp.mqtt.codec import encode
from conformance.mtp.mqtt.constants import ProtocolVersion
from conformance.mtp.mqtt.packets import Connect, Packet, Publish, Will
from conformance.mtp.mqtt.summary import KINDS, packet_summary
from conformance.mtp.scenario import ConnectionView
from conformance.mtp.transport import Connection

__all__ = ["NEVER_EXPIRES", "ClientSubscription", "Inflight", "MQTTClient", "MQTTSession",
           "Message", "Queued"]

#: Session Expiry Interval meaning "the session does not expire" (MQTT 5.0 §3.1.2.11.2).
NEVER_EXPIRES: Final = 0xFFFFFFFF
#: Default Receive Maximum when a client announces none (MQTT 5.0 §3.1.2.11.3).
DEFAULT_RECEIVE_MAXIMUM: Final = 65_535


@dataclass(slots=True)
class Message:
    """An Application Message: what a PUBLISH (or a Will, or the broker) carried.

    ``properties`` are the ones forwarded to subscribers (no Topic Alias, no
    Subscription Identifier); ``expires_at`` is the monotonic deadline from
    the Message Expiry Interval, if any.  ``origin`` is the publisher's
    Client Identifier (None for the broker and controller endpoints).
    """

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Any = None          # Properties (None: none)
    received_at: float = 0.0
    origin: str | None = None
    expires_at: float | None = None


@dataclass(slots=True)
class ClientSubscription:
    """One granted Topic Filter of a session and its options (MQTT 5.0 §3.8.3.1)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"topic_filter": self.topic_filter, "qos": self.qos, "no_local": self.no_local,
                "retain_as_published": self.retain_as_published,
                "retain_handling": self.retain_handling, "identifier": self.identifier}


@dataclass(slots=True)
class Inflight:
    """A QoS 1/2 PUBLISH the broker sent and the client has not finished.

    ``state`` is ``"publish"`` (waiting for PUBACK or PUBREC) or ``"pubrel"``
    (PUBREL sent, waiting for PUBCOMP).
    """

    packet: Publish
    state: str = "publish"


@dataclass(slots=True)
class Queued:
    """A delivery waiting for the client to come back or for a free Receive Maximum slot."""

    message: Message
    qos: int
    subscription_ids: tuple[int, ...] = ()
    retain: bool = False


@dataclass(eq=False)
class MQTTSession:
    """The MQTT Session of one Client Identifier."""

    client_id: str
    created_at: float = field(default_factory=time.monotonic)
    #: Seconds the session survives a disconnect (0: ends with the connection;
    #: ``NEVER_EXPIRES``: 3.1.1 Clean Session 0 or 5.0 0xFFFFFFFF).
    expiry_interval: int = 0
    disconnected_at: float | None = None
    subscriptions: dict[str, ClientSubscription] = field(default_factory=dict)
    #: Broker -> client QoS 1/2 messages not yet completed, by Packet Identifier.
    inflight: dict[int, Inflight] = field(default_factory=dict)
    #: Client -> broker QoS 2 Packet Identifiers waiting for PUBREL.
    inbound_qos2: set[int] = field(default_factory=set)
    queue: deque[Queued] = field(default_factory=deque)
    client: MQTTClient | None = field(default=None, repr=False)
    _next_id: int = 0

    def next_packet_id(self) -> int | None:
        """A free Packet Identifier (1..65535), or None when all are in flight."""
        if len(self.inflight) >= 65_535:
            return None
        pid = self._next_id
        while True:
            pid = pid % 65_535 + 1
            if pid not in self.inflight:
                self._next_id = pid
                return pid

    def expired(self, now: float) -> bool:
        """True when the session is offline longer than its expiry interval."""
        if self.client is not None or self.disconnected_at is None:
            return False
        if self.expiry_interval >= NEVER_EXPIRES:
            return False
        return now - self.disconnected_at >= self.expiry_interval

    def to_json(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "expiry_interval": self.expiry_interval,
                "connected": self.client is not None,
                "subscriptions": [s.to_json() for s in self.subscriptions.values()],
                "inflight": sorted(self.inflight), "inbound_qos2": sorted(self.inbound_qos2),
                "queued": len(self.queue)}


@dataclass(eq=False)
class MQTTClient(ConnectionView):
    """One client network connection and what was negotiated on it."""

    conn: Connection = field(repr=False)
    opened_at: float = field(default_factory=time.monotonic)
    #: Protocol version of the connection (known once CONNECT arrived).
    version: ProtocolVersion | None = None
    connect: Connect | None = field(default=None, repr=False)
    #: Client Identifier in use (the assigned one when the CONNECT had none).
    client_id: str = ""
    #: What the CONNACK carried as Assigned Client Identifier (None: nothing).
    assigned_client_id: str | None = None
    #: The ``usp-endpoint-id`` User Property of the CONNECT (R-MQTT.13).
    endpoint_id: str | None = None
    username: str | None = None
    #: Keep Alive in force (the Server Keep Alive when the CONNACK sent one).
    keep_alive: int = 0
    connected: bool = False
    closed: bool = False
    session: MQTTSession | None = field(default=None, repr=False)
    will: Will | None = field(default=None, repr=False)
    #: What the CONNACK told the client (R-MQTT.12, R-MQTT.15, R-MQTT.44).
    response_information: str | None = None
    subscribe_topics: list[str] = field(default_factory=list)
    topic_alias_maximum: int = 0          # what the broker granted
    receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM   # what the client announced
    maximum_packet_size: int | None = None           # what the client announced
    aliases: dict[int, str] = field(default_factory=dict, repr=False)
    #: Reason Code of the client's DISCONNECT (None: none received).
    disconnect_reason: int | None = None
    packets_in: int = 0
    packets_out: int = 0
    last_rx: float = 0.0
    #: (Response Topic, Record from_id) of the last Record learned from.
    learned: tuple[str, str] | None = field(default=None, repr=False)
    watchdog: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def v5(self) -> bool:
        return self.version == ProtocolVersion.V5

    @property
    def subscriptions(self) -> list[str]:
        """Subscribed Topic Filters, oldest first."""
        return list(self.session.subscriptions) if self.session is not None else []

    def matches(self, endpoint_id: str) -> bool:
        """Whether this client is the USP Endpoint ``endpoint_id``: by its
        ``usp-endpoint-id`` (R-MQTT.13), its Client Identifier (R-MQTT.8 for
        3.1.1) or its TLS certificate."""
        return (endpoint_id == self.endpoint_id or endpoint_id == self.client_id
                or endpoint_id in self.conn.peer_endpoint_ids)

    async def send(self, packet: Packet, *, raw: bytes | None = None,
                   note: str | None = None) -> None:
        """Encode (unless ``raw`` is given), record ``mqtt.<TYPE>`` out and write.

        Raises ConnectionError when the connection is closed or fails.
        """
        conn = self.conn
        writer = conn.writer
        if self.closed or writer.is_closing():
            raise ConnectionError(f"{conn.conn_id} is closed")
        if raw is None:
            raw = encode(packet, self.version)
        if conn.timeline is not None:
            conn.record(KINDS[packet.TYPE], direction="out", raw=raw,
                        decoded=packet_summary(packet, self.version), note=note)
        self.packets_out += 1
        writer.write(raw)
        try:
            await writer.drain()
        except OSError as exc:  # TLS errors are OSErrors but not ConnectionErrors
            self.closed = True
            raise ConnectionError(f"{conn.conn_id}: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary for reports."""
        return {
            "conn_id": self.conn_id, "peer": self.peer, "tls": self.tls,
            "peer_endpoint_ids": self.peer_endpoint_ids,
            "version": None if self.version is None else int(self.version),
            "client_id": self.client_id, "assigned_client_id": self.assigned_client_id,
            "endpoint_id": self.endpoint_id, "username": self.username,
            "keep_alive": self.keep_alive, "connected": self.connected,
            "response_information": self.response_information,
            "subscribe_topics": list(self.subscribe_topics),
            "subscriptions": self.subscriptions, "packets_in": self.packets_in,
            "packets_out": self.packets_out,
        }
