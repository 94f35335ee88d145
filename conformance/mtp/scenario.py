"""Shared pieces of the suite's scriptable MTP servers.

* :class:`ScenarioHost`: a server whose behaviour a test sets through a
  frozen scenario dataclass (``broker.scenario = ...`` or
  ``broker.set_scenario(field=value)``), with every scripted action written
  to the timeline as ``<mtp>.scenario``;
* :class:`ServerHost`: start/host/port/tls of a server on ``transport.Server``,
  and :meth:`ServerHost.present_tls`, which makes a TLS server present another
  certificate to the EUT (TP-469 2.6, 2.8, 4.1);
* :class:`ConnectionView`: the per-client state objects of the brokers
  expose their transport connection's identity (conn_id, peer, TLS, the
  Endpoint IDs of the client certificate) the same way.
"""

from __future__ import annotations

import dataclasses
import ssl
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

    async def present_tls(self, ssl_context: ssl.SSLContext) -> int:
        """Present ``ssl_context``'s certificate to every new connection from now on and
        close the open ones, which met the old certificate (a handshake still running
        with it is closed when it ends, see :class:`~conformance.mtp.transport.Server`).

        Returns how many connections were closed; ValueError on a server without TLS
        (its peers would not expect a handshake).
        """
        if self._server.ssl_context is None:
            raise ValueError("this server does not use TLS; it cannot present a certificate")
        self._server.ssl_context = ssl_context
        open_now = list(self._server.connections.values())
        for conn in open_now:
            await conn.close()
        return len(open_now)


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
