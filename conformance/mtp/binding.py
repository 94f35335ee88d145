"""The seam between the reference Controller and the MTP servers and peers.

A :class:`Binding` is one controller endpoint's attachment to one MTP: it
sends USP Record bytes towards an agent and hands every Record that arrives
for the controller to a sink as an :class:`InboundRecord`. The Controller
only knows this interface; each MTP (the MQTT and STOMP brokers' in-process
endpoints, the WebSocket server and client, the UDS server) implements it.

Framing, broker routing, TLS and the timeline are the MTP's business; the
Controller's business is Records and Msgs.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class InboundRecord:
    """Record bytes received for a controller endpoint, with where they came from."""

    data: bytes
    mtp: str                       # "mqtt", "stomp", "websocket", "uds"
    conn_id: str                   # the MTP connection (as in the timeline)
    received_at: float             # time.monotonic() at arrival
    reply_to: str | None = None    # MQTT Response Topic / STOMP reply-to-dest, if any
    meta: dict[str, object] = field(default_factory=dict)  # MTP details (properties, headers)


RecordSink = Callable[[InboundRecord], None]

#: The verdict reason for packet-level MTP checks on an operator's broker.
NOT_APPLICABLE_EXTERNAL = "not applicable in external-broker mode"


class BindingClosed(ConnectionError):
    """A send was attempted on a binding whose MTP connection is gone."""


class Binding(abc.ABC):
    """One controller endpoint on one MTP."""

    #: MTP name: "mqtt", "stomp", "websocket" or "uds".
    mtp: str = ""
    #: True when the suite is the server end of the MTP and sees every packet;
    #: False in external-broker mode, where packet-level MTP checks are not
    #: applicable (see :data:`NOT_APPLICABLE_EXTERNAL`).
    owns_transport: bool = True

    def __init__(self) -> None:
        self._sink: RecordSink | None = None

    def set_sink(self, sink: RecordSink | None) -> None:
        """Where inbound Records go; called on the event loop thread."""
        self._sink = sink

    def deliver(self, record: InboundRecord) -> None:
        """Used by the MTP implementation to pass an inbound Record on."""
        if self._sink is not None:
            self._sink(record)

    @abc.abstractmethod
    async def send(self, data: bytes, *, to_id: str) -> None:
        """Send Record bytes to the agent ``to_id``; raise :class:`BindingClosed` if unreachable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Detach the controller endpoint from the MTP (idempotent)."""

    @property
    def address(self) -> str:
        """Where agents reach this controller (topic, destination, URL, path)."""
        return ""
