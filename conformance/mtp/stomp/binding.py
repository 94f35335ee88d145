"""The reference Controller's endpoint inside the suite's STOMP broker.

A :class:`STOMPBinding` is an in-process STOMP "client" that never touches a
socket: Records an agent SENDs to the binding's destination reach the
Controller's sink with the agent's ``reply-to-dest`` (R-STOMP.21, R-STOMP.23),
and :meth:`STOMPBinding.send` makes the broker deliver a MESSAGE to the
destination the agent subscribed to (R-STOMP.12..R-STOMP.15), carrying the
binding's destination as ``reply-to-dest``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from conformance.mtp.binding import Binding, BindingClosed

if TYPE_CHECKING:
    from conformance.mtp.stomp.broker import STOMPBroker


class STOMPBinding(Binding):
    """One controller endpoint attached to a :class:`STOMPBroker` destination."""

    mtp = "stomp"

    def __init__(self, broker: STOMPBroker, endpoint_id: str, destination: str) -> None:
        super().__init__()
        self.broker = broker
        self.endpoint_id = endpoint_id
        self.destination = destination
        #: agent Endpoint ID -> destination to use instead of the agent's subscription.
        self.agent_destinations: dict[str, str] = {}
        self._closed = False

    @property
    def address(self) -> str:
        """The destination agents SEND to (their ``Controller.{i}.MTP.{i}.STOMP.Destination``)."""
        return self.destination

    @property
    def closed(self) -> bool:
        return self._closed

    def set_agent_destination(self, agent_id: str, destination: str | None) -> None:
        """Send to ``destination`` for ``agent_id`` (None: follow the agent's subscription)."""
        if destination is None:
            self.agent_destinations.pop(agent_id, None)
        else:
            self.agent_destinations[agent_id] = destination

    async def send(self, data: bytes, *, to_id: str,
                   headers: Mapping[str, str] | None = None) -> None:
        """Deliver ``data`` to agent ``to_id`` as a MESSAGE.

        ``headers`` add to or override the MESSAGE headers (negative tests).
        Raises :class:`BindingClosed` when the binding is closed or the agent
        is not connected and subscribed.
        """
        if self._closed:
            raise BindingClosed(f"STOMP binding {self.destination!r} is closed")
        await self.broker.send_to_agent(
            data, to_id=to_id, reply_to=self.destination,
            destination=self.agent_destinations.get(to_id), headers=headers)

    async def close(self) -> None:
        """Detach from the broker; later sends raise :class:`BindingClosed`."""
        if not self._closed:
            self._closed = True
            self.broker.detach_controller(self)
