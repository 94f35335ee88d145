"""Shared pieces of the suite's scriptable MTP servers.

* :class:`ScenarioHost`: a server whose behaviour a test sets through a
  frozen scenario dataclass (``broker.scenario = ...`` or
  ``broker.set_scenario(field=value)``), with every scripted action written
  to the timeline as ``<mtp>.scenario``;
* :class:`ServerHost`: start/host/port/tls of a server on ``transport.Server``;
* :class:`ConnectionView`: the per-client state objects of the brokers
  expose their transport connection's identity (conn_id, peer, TLS, the
  Endpoint IDs of the client certificate) the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from conformance.mtp.timeline import Timeline
from conformance.mtp.transport import Connection, Server


class _Scenario(Protocol):
    def to_json(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=_Scenario)


class ScenarioHost(Generic[S]):
    """Mixin: holds ``_scenario`` and records scenario actions in ``timeline``."""

    #: MTP name, also the prefix of the timeline kind (``mqtt.scenario``).
    MTP_NAME: ClassVar[str] = ""
    timeline: Timeline | None
    _scenario: S

    @property
    def scenario(self) -> S:
        return self._scenario

    @scenario.setter
    def scenario(self, scenario: S) -> None:
        self.set_scenario(scenario)

    def set_scenario(self, scenario: S | None = None, **changes: Any) -> S:
        """Replace the scenario, or change fields of the current one; returns it."""
        new = dataclasses.replace(scenario or self._scenario, **changes)  # type: ignore[type-var]
        self._scenario = new
        self._action(None, "set", scenario=new.to_json())
        return new

    def _action(self, conn_id: str | None, action: str, **details: Any) -> None:
        """Record a scripted action (``<mtp>.scenario``)."""
        if self.timeline is not None:
            self.timeline.record(f"{self.MTP_NAME}.scenario", direction="local",
                                 mtp=self.MTP_NAME, conn_id=conn_id,
                                 decoded={"action": action, **details}, note=action)

    def _local(self, kind: str, conn_id: str | None, decoded: Any, note: str | None = None) -> None:
        """Record something the server itself observed or decided."""
        if self.timeline is not None:
            self.timeline.record(kind, direction="local", mtp=self.MTP_NAME, conn_id=conn_id,
                                 decoded=decoded, note=note)


class ServerHost:
    """Mixin for a broker/server listening through ``self._server``."""

    _server: Server

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Any:
        """Listen on ``host:port`` (port 0: the OS picks; see :attr:`port`); returns self."""
        await self._server.start_tcp(host, port)
        return self

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def tls(self) -> bool:
        return self._server.ssl_context is not None


class ConnectionView:
    """Mixin for per-client state that has a transport ``conn``."""

    conn: Connection

    @property
    def conn_id(self) -> str:
        return self.conn.conn_id

    @property
    def peer(self) -> str:
        return self.conn.peer

    @property
    def tls(self) -> bool:
        return self.conn.tls

    @property
    def peer_endpoint_ids(self) -> list[str]:
        """Endpoint IDs of the TLS client certificate (empty without mutual TLS)."""
        return list(self.conn.peer_endpoint_ids)
