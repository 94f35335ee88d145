"""The reference Controller's endpoint inside the suite's MQTT broker.

An :class:`MQTTBinding` is an in-process MQTT "client" that never touches a
socket.  Records an agent PUBLISHes to the binding's topic reach the
Controller's sink with the agent's "reply to" Topic: the Response Topic
property on MQTT 5.0 (R-MQTT.23, R-MQTT.26) or the ``/reply-to=`` suffix of
the Topic Name on 3.1.1 (R-MQTT.24, R-MQTT.25).  :meth:`MQTTBinding.send`
PUBLISHes a Record to the agent with the binding's topic as Response Topic
and Content Type ``usp.msg`` on 5.0 (R-MQTT.23, R-MQTT.27), or with the
``/reply-to=`` suffix on 3.1.1.

The agent's topic is, in this order: set with :meth:`set_agent_topic`;
learned from the Response Topic of the agent's last PUBLISH whose Record
``from_id`` is that agent; the Response Information the broker gave the
agent, when the agent subscribed to it (R-MQTT.21); the agent's only
subscription (a 3.1.1 ``topic/#`` filter gives ``topic``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conformance.mtp.binding import Binding, BindingClosed
from conformance.mtp.mqtt.properties import Properties

if TYPE_CHECKING:
    from conformance.mtp.mqtt.broker import MQTTBroker

__all__ = ["USP_CONTENT_TYPE", "MQTTBinding"]

#: Content Type of a PUBLISH carrying a USP Record (R-MQTT.27).
USP_CONTENT_TYPE = "usp.msg"


class MQTTBinding(Binding):
    """One controller endpoint attached to an :class:`MQTTBroker` topic."""

    mtp = "mqtt"

    def __init__(self, broker: MQTTBroker, endpoint_id: str, topic: str, *, qos: int = 1,
                 content_type: str | None = USP_CONTENT_TYPE) -> None:
        super().__init__()
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        self.broker = broker
        self.endpoint_id = endpoint_id
        self.topic = topic
        #: QoS of the PUBLISHes :meth:`send` makes.
        self.qos = qos
        #: Content Type on 5.0 PUBLISHes (TP-469 11.15 also uses the MIME type;
        #: None omits the property for negative tests).
        self.content_type = content_type
        #: agent Endpoint ID -> topic set with :meth:`set_agent_topic`.
        self.agent_topics: dict[str, str] = {}
        self._closed = False

    @property
    def address(self) -> str:
        """The topic agents PUBLISH to (their ``Controller.{i}.MTP.{i}.MQTT.Topic``)."""
        return self.topic

    @property
    def closed(self) -> bool:
        return self._closed

    def set_agent_topic(self, agent_id: str, topic: str | None) -> None:
        """Send to ``topic`` for ``agent_id`` (None: back to learned / subscribed topics)."""
        if topic is None:
            self.agent_topics.pop(agent_id, None)
        else:
            self.agent_topics[agent_id] = topic

    def agent_topic(self, agent_id: str) -> str | None:
        """The topic :meth:`send` would use for ``agent_id`` now (None: unknown)."""
        return self.broker.agent_topic(agent_id, self)

    async def send(self, data: bytes, *, to_id: str, qos: int | None = None,
                   properties: Properties | None = None) -> None:
        """PUBLISH Record ``data`` to agent ``to_id``.

        ``qos`` overrides :attr:`qos` for this message; ``properties`` are
        appended to the 5.0 PUBLISH properties (e.g. Correlation Data, User
        Properties).  Raises :class:`BindingClosed` when the binding is
        closed, the agent is not connected, its topic is unknown or it is
        not subscribed to that topic, or the write fails.
        """
        if self._closed:
            raise BindingClosed(f"MQTT binding {self.topic!r} is closed")
        await self.broker.send_to_agent(self, bytes(data), to_id=to_id,
                                        qos=self.qos if qos is None else qos,
                                        properties=properties)

    async def close(self) -> None:
        """Detach from the broker; later sends raise :class:`BindingClosed`."""
        if not self._closed:
            self._closed = True
            self.broker.detach_controller(self)
