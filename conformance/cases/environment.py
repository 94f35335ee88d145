"""Set up what cases run against: the suite's MTP server, the controller
identities and, for the built-in EUT, the reference Agent itself.

Two async context managers, started once per run, share one base
(:class:`_SuiteSide`) for everything that does not depend on who runs the
EUT: the suite's server for an MTP with the controller identities on it
(:func:`start_server`), dialing an agent's WebSocket server, waiting for the
EUT's connect Record (R-MTP.8), ``close_connection`` and ``scenario``; in TLS
runs the ``tls_certificate`` scenario field (``mtp: any``) makes the suite
present a good or broken certificate to the EUT (TP-469 2.6, 2.8, 4.1).

* :class:`RunEnvironment`: the built-in reference Agent in-process over any
  MTP; its data model is pointed at the suite's server (run configuration
  ``values``). ``reboot()`` sends Device.Reboot() and starts the agent's
  next life on the same persisted state, as the agent process would.
* :class:`ExternalEnvironment`: a device the suite does not start, described
  by its EUT profile, over any profile MTP: the suite's MQTT or STOMP broker,
  its WebSocket server (the agent connects) or client (the suite dials the
  agent's ``url``), its UDS server, or an operator's MQTT broker that the
  controllers join as clients. ``reboot()`` follows the profile's method.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from conformance.agent.config import AgentConfig
from conformance.agent.runtime import AgentRuntime
from conformance.cases.runner import Environment, EUTNotBack, SuiteError
from conformance.controller.controller import Controller, ControllerTimeout, Received
from conformance.controller.e2e_session import E2EPki
from conformance.controller.external_broker import BrokerAccount, ExternalBrokerBinding
from conformance.eut import (
    EUTProfile,
    MQTTConfig,
    STOMPConfig,
    UDSConfig,
    WebSocketConfig,
)
from conformance.mtp.binding import NOT_APPLICABLE_EXTERNAL, Binding, BindingClosed
from conformance.mtp.mqtt.binding import MQTTBinding
from conformance.mtp.mqtt.broker import MQTTBroker
from conformance.mtp.scenario import ServerHost
from conformance.mtp.stomp.binding import STOMPBinding
from conformance.mtp.stomp.broker import STOMPBroker, STOMPScenario
from conformance.mtp.timeline import Timeline
from conformance.mtp.uds.server import UDSServer
from conformance.mtp.websocket.client import WSClient, WSHandshakeError
from conformance.mtp.websocket.server import WSServer
from conformance.usp import messages, records

#: The connect Record each MTP's agent sends on a new channel (R-MTP.8).
CONNECT_RECORDS = {"mqtt": "mqtt_connect", "stomp": "stomp_connect",
                   "websocket": "websocket_connect", "uds": "uds_connect"}
#: MTPs the built-in agent can be tested over, with the connect Record each sends.
#: ``websocket``: the agent dials the suite's WebSocket server; ``websocket-server``: the
#: agent is the WebSocket server (LocalAgent.MTP.3) and the suite's controller dials it.
BUILTIN_MTPS = {"mqtt": "mqtt_connect", "mqtt311": "mqtt_connect", "stomp": "stomp_connect",
                "websocket": "websocket_connect", "websocket-server": "websocket_connect",
                "uds": "uds_connect"}
IDENTITIES = {"primary": "proto::controller-1", "secondary": "proto::controller-2",
              "unknown": "proto::controller-unknown"}
AGENT_ID = "os::012345-0001"
#: The MQTT login the built-in agent is configured with (TP-469 11.2 looks for it in the
#: CONNECT; the suite's broker does not check it, so an agent that omits it still runs).
MQTT_LOGIN = ("usp-agent", "usp-agent-secret")
#: What the suite Gets to learn that an EUT on an operator's broker is there.
PROBE_PATH = "Device.LocalAgent.EndpointID"
#: The ``scenario`` field every TLS run offers on any MTP (``mtp: any``): which certificate
#: the suite presents to the EUT (conformance.mtp.pki.PRESENTABLE; TP-469 2.6, 2.8, 4.1).
TLS_CERTIFICATE_FIELD = "tls_certificate"
#: How a TLS connection's handshake ended, by the timeline event that says so.
_TLS_OUTCOMES = {"tls.handshake_done": "done", "tls.handshake_failed": "failed",
                 "conn.close": "closed"}
#: Seconds between attempts while waiting for an EUT that is (re)starting: dialing its
#: WebSocket server, or probing it on an operator's broker while its old life answers.
RETRY_PAUSE = 0.5


@dataclass
class BuiltinSettings:
    """How to run the built-in reference agent."""

    mtp: str = "mqtt"
    faults: Sequence[str] = ()
    state_dir: Path | None = None
    alternates: Mapping[str, Any] = field(default_factory=dict)
    response_timeout: float = 10.0
    notification_timeout: float = 30.0
    #: the MTP over TLS (mutual, with a test PKI made for the run): the suite's server and
    #: the agent each present a certificate of one test CA (TP-469 6.11, 7.9, 11.3)
    tls: bool = False
    #: False: the agent boots without an absolute time reference (TP-469 2.6)
    absolute_time: bool = True
    #: False: the agent does not count its MTP as protecting Record integrity, so every
    #: Record must be signed (R-E2E.28-30, TP-469 3.2)
    mtp_protects_integrity: bool = True

    def offers(self) -> frozenset[str]:
        """The ``requires:`` conditions (beyond tls) a run with these settings meets."""
        return frozenset({*(() if self.absolute_time else ("no-absolute-time",)),
                          *(() if self.mtp_protects_integrity else ("no-mtp-integrity",))})


@dataclass(frozen=True)
class RunPKI:
    """The test PKI of a TLS run of the built-in agent."""

    ca: Any
    agent: Any        # the agent's credential (SAN urn:bbf:usp:id:<its Endpoint ID>)
    suite: Any        # what the suite's server/client presents ("good")
    #: the other certificates the suite can present (pki.PRESENTABLE), made when first used
    others: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def make(cls) -> RunPKI:
        from conformance.mtp import pki

        ca = pki.make_ca("usp-conformance run CA")
        return cls(ca, pki.issue(ca, endpoint_id=AGENT_ID, ips=["127.0.0.1"]),
                   pki.issue(ca, endpoint_id=IDENTITIES["primary"], ips=["127.0.0.1"]))

    def agent_material(self, *, absolute_time: bool = True) -> Any:
        """The agent's TLS: its credential, this run's CA as its only anchor, and whether
        it knows the absolute time (conformance.agent.mtp.tls)."""
        from conformance.agent.mtp import tls as agent_tls

        return agent_tls.material(self.agent, [self.ca.cert], absolute_time=absolute_time)

    def credential(self, certificate: str = "good") -> Any:
        """What the suite presents as ``certificate`` (pki.PRESENTABLE; PKIError otherwise):
        the suite's own credential, or one broken like it (TP-469 2.6, 2.8, 4.1)."""
        from conformance.mtp import pki

        if certificate not in self.others:
            self.others[certificate] = pki.presentable(
                certificate, ca=self.ca, good=self.suite, endpoint_id=IDENTITIES["primary"],
                ips=["127.0.0.1"])
        return self.others[certificate]

    def suite_context(self, role: str, certificate: str = "good") -> ssl.SSLContext:
        from conformance.mtp import pki

        return pki.ssl_context(role, self.credential(certificate),  # type: ignore[arg-type]
                               trust=[self.ca.cert])


def profile_alternates(profile: Any) -> dict[str, Any]:
    """The alternate elements of an EUT profile (defaults filled in), by name: a path
    or value, or for ``arguments`` alternates a mapping of input arguments (a whole
    ``"{alt.async_command_args}"`` string in a case becomes that mapping)."""
    from conformance.eut import ALTERNATES

    return {name: (dict(profile.arguments(name)) if alt.kind == "arguments"
                   else profile.alternate(name))
            for name, alt in ALTERNATES.items()}


def load_actions() -> dict[str, Any]:
    """Python actions for ``python:`` steps (entry point group ``usp_conformance.actions``)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.load() for ep in entry_points(group="usp_conformance.actions")}


# --- the suite's server for one MTP ------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """Where and how the suite's server for one MTP (``mqtt``, ``stomp``,
    ``websocket`` or ``uds``) listens."""

    kind: str
    host: str = "127.0.0.1"
    port: int = 0                                   # 0: the OS picks
    ssl_context: ssl.SSLContext | None = None
    credentials: Mapping[str, str] | None = None   # MQTT/STOMP: login -> password
    path: str = "/usp"                              # WebSocket URL path
    socket: str = ""                                # UDS socket path
    heart_beat: tuple[int, int] = (0, 0)            # STOMP: the broker's offer (ms)
    virtual_host: str | None = None                 # STOMP: checked on CONNECT (R-STOMP.5)

    def where(self) -> str:
        return self.socket if self.kind == "uds" else f"{self.host}:{self.port}"


async def start_server(spec: ServerSpec, addresses: Mapping[str, tuple[str, str]], *,
                       timeline: Timeline) -> tuple[Any, dict[str, Binding]]:
    """Start the suite's server for ``spec.kind`` and attach the controller identities.

    ``addresses`` maps a role to (Endpoint ID, topic or destination). On the brokers
    every role gets a binding; on WebSocket and UDS the EUT opens one connection, for
    the primary identity only. A server that cannot listen is a one-line SuiteError.
    """
    kind = spec.kind
    try:
        if kind == "mqtt":
            mqtt = await MQTTBroker(timeline=timeline, ssl_context=spec.ssl_context,
                                    credentials=spec.credentials).start(spec.host, spec.port)
            return mqtt, {role: mqtt.attach_controller(eid, topic)
                          for role, (eid, topic) in addresses.items()}
        if kind == "stomp":
            scenario = STOMPScenario(heart_beat=spec.heart_beat, expected_host=spec.virtual_host)
            stomp = await STOMPBroker(timeline=timeline, ssl_context=spec.ssl_context,
                                      credentials=spec.credentials,
                                      scenario=scenario).start(spec.host, spec.port)
            return stomp, {role: stomp.attach_controller(eid, dest)
                           for role, (eid, dest) in addresses.items()}
        primary = addresses["primary"][0]
        if kind == "websocket":
            ws = await WSServer(primary, timeline=timeline, ssl_context=spec.ssl_context,
                                path=spec.path).start(spec.host, spec.port)
            return ws, {"primary": ws.binding}
        if kind == "uds":
            uds = await UDSServer(spec.socket, primary, timeline=timeline).start()
            return uds, {"primary": uds.binding}
    except OSError as exc:
        fix = ("use a socket path in an existing, writable directory" if kind == "uds" else
               "choose a free port in the profile, or stop what uses it")
        raise SuiteError(f"the suite's {kind} server cannot listen on {spec.where()} "
                         f"({exc.strerror or exc}); fix: {fix}") from None
    raise SuiteError(f"unknown MTP {kind!r}; choose one of {', '.join(CONNECT_RECORDS)}")


# --- what both environments share -------------------------------------------------------


class _Started:
    """Async context manager shape of both environments: ``_start`` or clean up."""

    async def _start(self) -> None:
        raise NotImplementedError

    async def __aexit__(self, *exc: object) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__()
            raise
        return self


class _SuiteSide(_Started):
    """The suite's end of a run: timeline, controller identities, the MTP server (or
    WebSocket client) holding the EUT's connection, and the actions on it."""

    def __init__(self, mtp: str, agent_id: str, response_timeout: float) -> None:
        #: The run's MTP: mqtt (mqtt311 for the built-in agent), stomp, websocket,
        #: websocket-server (the suite dials the agent's server) or uds.
        self.mtp = mtp
        self.agent_id = agent_id
        self.response_timeout = response_timeout
        self.timeline = Timeline()
        self.controllers: dict[str, Controller] = {}
        self.server: Any = None
        #: each server's own scenario, kept when a case first scripts it (reset_scenarios)
        self._base_scenarios: dict[int, Any] = {}
        #: the certificate the suite presents to the EUT (scenario ``tls_certificate``)
        self.presenting = "good"
        #: how long the EUT may take to connect again after the suite changed something
        self.reconnect_timeout = 60.0

    @property
    def kind(self) -> str:
        """The MTP family: mqtt, stomp, websocket or uds."""
        return self.mtp.removesuffix("311").removesuffix("-server")

    def _bind(self, bindings: Mapping[str, Binding], identities: Mapping[str, str]) -> None:
        """A Controller for each bound role (``identities``: role -> Endpoint ID)."""
        for role, binding in bindings.items():
            ctrl = Controller(identities[role], timeline=self.timeline,
                              default_timeout=self.response_timeout)
            ctrl.attach(binding, agent_id=self.agent_id)
            self.controllers[role] = ctrl

    def _primary_unbound(self, endpoint_id: str) -> None:
        """The primary identity before its first WebSocket session to the agent."""
        self.controllers["primary"] = Controller(endpoint_id, timeline=self.timeline,
                                                 default_timeout=self.response_timeout)

    async def _connect_record(self, *, since: int, timeout: float) -> Received:
        """The EUT's connect Record for this MTP (R-MTP.8); ControllerTimeout otherwise."""
        return await self.controllers["primary"].connect_record(
            CONNECT_RECORDS[self.kind], since=since, timeout=timeout)

    async def _dial(self, host: str, port: int, path: str, *,
                    ssl_context: ssl.SSLContext | None = None,
                    server_hostname: str | None = None) -> None:
        """Open the primary controller's WebSocket session to the agent's server (R-WS.3);
        ConnectionError (WSHandshakeError when the agent refuses) on failure."""
        primary = self.controllers["primary"]
        client = WSClient(host, port, path, eid=primary.endpoint_id, ssl_context=ssl_context,
                          server_hostname=server_hostname, timeline=self.timeline)
        await client.connect()
        if isinstance(self.server, WSClient):
            await self.server.close()
        self.server = client
        primary.attach(client.binding, agent_id=self.agent_id)

    async def _redial(self) -> None:
        """Open a new WebSocket session to the agent's server (websocket-server runs)."""
        raise SuiteError("no WebSocket server of the EUT to dial in this run")

    async def _close_all(self) -> None:
        for ctrl in self.controllers.values():
            await ctrl.close()
        if self.server is not None:
            await self.server.close()
            self.server = None

    # --- actions the cases use -------------------------------------------------------------

    async def close_connection(self, _runner: Any = None) -> None:
        """Drop the EUT's MTP connection without any protocol goodbye (the
        ``close_connection`` python action); the agent reconnects on its own, or
        (websocket-server) the suite dials it again."""
        server = self.server
        if isinstance(server, MQTTBroker):
            await server.drop_client(self.agent_id)
        elif isinstance(server, STOMPBroker):
            await server.drop(self.agent_id)
        elif isinstance(server, WSServer):
            await server.abort_agent(self.agent_id)
        elif isinstance(server, UDSServer):
            await server.close_peers("closed by the case")
        elif isinstance(server, WSClient):  # the agent is the server: the suite dials again
            await server.abort()
            mark = self.controllers["primary"].mark
            await self._redial()
            await self._connect_record(since=mark, timeout=self.response_timeout)
        else:
            raise SuiteError("no suite server holds the EUT's connection")

    async def reset_scenarios(self) -> None:
        """Put the suite's server back on the scenario it had before the case scripted it
        (and on its own certificate, once the EUT is connected with it again)."""
        if self.presenting != "good":
            await self._restore_certificate()
        server = self.server
        if server is not None and hasattr(server, "set_scenario"):
            base = self._base_scenarios.get(id(server))
            if base is not None:
                server.set_scenario(base)

    async def scenario(self, mtp: str, changes: Mapping[str, Any]) -> None:
        """Script the run's server (``mtp`` names its MTP, or ``any``: whichever the run
        uses). ``tls_certificate`` (every MTP over TLS) is the environment's own field:
        see :meth:`present_certificate`."""
        changes = dict(changes)
        certificate = changes.pop(TLS_CERTIFICATE_FIELD, None)
        if mtp != "any" and mtp.removesuffix("311") != self.kind:
            raise SuiteError(f"the case scripts the {mtp} server but this run is over "
                             f"{self.mtp}")
        if changes:
            server = self.server
            if server is None or not hasattr(server, "set_scenario"):
                raise SuiteError(f"the {self.mtp} server of this run has no scenario hooks")
            if hasattr(server, "scenario") and id(server) not in self._base_scenarios:
                self._base_scenarios[id(server)] = server.scenario
            server.set_scenario(**changes)
        if certificate is not None:
            await self.present_certificate(str(certificate))

    # --- the certificate the suite presents (TP-469 2.6, 2.8, 4.1) -------------------------

    def _tls_context(self, role: str, certificate: str) -> ssl.SSLContext:
        """The suite's TLS context presenting ``certificate`` as ``role`` (server: the
        suite's server; client: the suite dialling the EUT's server)."""
        raise SuiteError(f"the suite cannot present a {certificate!r} certificate in this "
                         "run: broken certificates are made with the suite's own test CA, "
                         "which the EUT trusts in TLS runs of the built-in agent only")

    async def present_certificate(self, certificate: str) -> None:
        """Make the suite present ``certificate`` (pki.PRESENTABLE) to the EUT on the
        MTP and wait until the EUT meets it on a new connection.

        The suite's TLS server presents it from now on and closes the EUT's connection,
        and the EUT connects again; on websocket-server runs the suite dials the EUT's
        server with it as client certificate. The moment the TLS handshake of that
        connection ends, the timeline gets ``tls.presented`` (direction local):
        ``certificate``, ``role`` (the suite's), ``conn_id``, ``handshake`` (done,
        failed or closed, as the suite saw it: a TLS 1.3 server's verdict on the
        client certificate comes after the client's handshake), ``reason``,
        ``version``, ``peer_endpoint_ids`` and ``peer_certificate`` (the EUT's).
        Whether the EUT then uses the connection is for the case to check (e.g. its
        connect Record, R-MTP.8). SuiteError when the EUT does not connect again in time.
        """
        from conformance.mtp import pki

        if certificate not in pki.PRESENTABLE:
            raise SuiteError(f"tls_certificate {certificate!r} is not one the suite makes; "
                             f"choose one of {', '.join(pki.PRESENTABLE)}")
        role = "client" if self.mtp == "websocket-server" else "server"
        server = self.server
        if role == "server" and (not isinstance(server, ServerHost) or not server.tls):
            raise SuiteError(f"the suite's {self.kind} server of this run does not use TLS: it "
                             "has no certificate to change")
        context = self._tls_context(role, certificate)
        met: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        remove = self.timeline.add_listener(
            self._attempt_watch(certificate, role, self.timeline.next_seq, met))
        try:
            if isinstance(server, ServerHost):
                closed = await server.present_tls(context)
            else:  # websocket-server: end the session, dial with the certificate
                closed = 0
                if isinstance(server, WSClient) and server.is_open:
                    await server.abort()
                    closed = 1
            self.presenting = certificate
            self.timeline.record("tls.scenario", direction="local", mtp=self.kind, decoded={
                "action": "present", "certificate": certificate, "closed": closed},
                note=f"the suite presents the {certificate} certificate")
            wait = self.reconnect_timeout
            if role == "client":
                with contextlib.suppress(SuiteError):   # refused: the outcome is recorded
                    await self._redial()
                wait = 1.0
            from conformance.mtp.transport import TLS_HANDSHAKE_TIMEOUT

            try:
                await asyncio.wait_for(met, wait + TLS_HANDSHAKE_TIMEOUT + 2.0)
            except TimeoutError:
                what = ("the suite could not open a TLS connection to the EUT's WebSocket "
                        "server" if role == "client" else
                        f"the EUT did not connect again within {wait:g}s after the suite "
                        "closed its connection")
                raise SuiteError(f"{what} to present the {certificate} certificate") from None
        finally:
            remove()

    def _attempt_watch(self, certificate: str, role: str, mark: int,
                       met: asyncio.Future[None]) -> Callable[[Any], None]:
        """A timeline listener: the first connection opened from ``mark`` on (by the EUT
        when the suite is the ``server``) and, the moment its TLS handshake ends, the
        ``tls.presented`` event (recorded there, before anything the EUT sends on it)."""
        direction = "out" if role == "client" else "in"
        conn_id: str | None = None

        def watch(entry: Any) -> None:
            nonlocal conn_id
            if met.done() or entry.seq < mark:
                return
            if conn_id is None:
                if entry.kind == "conn.open" and entry.direction == direction:
                    conn_id = entry.conn_id
                return
            if entry.conn_id != conn_id or entry.kind not in _TLS_OUTCOMES:
                return
            met.set_result(None)
            found = dict(entry.decoded) if isinstance(entry.decoded, Mapping) else {}
            handshake = _TLS_OUTCOMES[entry.kind]
            self.timeline.record(
                "tls.presented", direction="local", mtp=self.kind, conn_id=conn_id,
                decoded={"certificate": certificate, "role": role, "conn_id": conn_id,
                         "handshake": handshake, "reason": found.get("reason"),
                         "version": found.get("version"),
                         "peer_endpoint_ids": found.get("peer_endpoint_ids", []),
                         "peer_certificate": found.get("peer_certificate")},
                note=f"{certificate} certificate presented: handshake {handshake}")

        return watch

    async def _restore_certificate(self) -> None:
        """After a case: present the suite's own certificate again and wait until the EUT
        is connected with it (its connect Record, R-MTP.8)."""
        primary = self.controllers["primary"]
        mark = primary.mark
        deadline = time.monotonic() + self.reconnect_timeout
        if self.mtp == "websocket-server":
            if isinstance(self.server, WSClient) and self.server.is_open:
                await self.server.abort()   # a session the EUT accepted with a bad certificate
            self.presenting = "good"
            while True:
                try:
                    await self._redial()
                    break
                except SuiteError:
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(RETRY_PAUSE)
        else:
            server = self.server
            assert isinstance(server, ServerHost)
            await server.present_tls(self._tls_context("server", "good"))
            self.presenting = "good"
            self.timeline.record("tls.scenario", direction="local", mtp=self.kind, decoded={
                "action": "present", "certificate": "good"}, note="the suite's own certificate again")
        try:
            await self._connect_record(since=mark,
                                       timeout=max(deadline - time.monotonic(), 0.1))
        except ControllerTimeout:
            raise SuiteError(f"the EUT did not connect again within {self.reconnect_timeout:g}s "
                             "once the suite presented its own certificate again") from None


# --- the built-in reference agent -------------------------------------------------------


class RunEnvironment(_SuiteSide):
    """The servers, identities and EUT of one run (async context manager)."""

    def __init__(self, settings: BuiltinSettings) -> None:
        if settings.mtp not in BUILTIN_MTPS:
            raise SuiteError(f"unknown MTP {settings.mtp!r}; choose one of "
                             f"{', '.join(BUILTIN_MTPS)}")
        super().__init__(settings.mtp, AGENT_ID, settings.response_timeout)
        self.settings = settings
        #: TLS runs (not over UDS, whose TLS R-UDS.23a leaves optional)
        self.pki = RunPKI.make() if settings.tls and self.kind != "uds" else None
        #: the E2E PKI of the run (TP-469 Feature 23): the agent's and controllers' credentials
        self.e2e_pki = E2EPki.make(AGENT_ID)
        self.runtime: AgentRuntime | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._config: AgentConfig | None = None

    @property
    def environment(self) -> Environment:
        return Environment(controllers=self.controllers, agent_id=AGENT_ID,
                           timeline=self.timeline, alternates=self._alternates(),
                           actions={"close_connection": self.close_connection,
                                    **load_actions()},
                           response_timeout=self.settings.response_timeout,
                           notification_timeout=self.settings.notification_timeout,
                           reboot=self.reboot, scenario=self.scenario,
                           reset_scenarios=self.reset_scenarios, ready=self.ready,
                           mtp=self.settings.mtp, tls=self.pki is not None,
                           offers=self.settings.offers())

    async def __aexit__(self, *exc: object) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None
        await self._close_all()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _alternates(self) -> dict[str, Any]:
        """The reference agent profile's alternate elements, overridden by the settings."""
        from conformance.eut import default_profile

        return {**profile_alternates(default_profile()), **dict(self.settings.alternates)}

    # --- start -----------------------------------------------------------------------------

    async def _start(self) -> None:
        s = self.settings
        state_dir = s.state_dir
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="usp-agent-")
            state_dir = Path(self._tmp.name)
        values = await self._serve(s.mtp, state_dir)
        self._config = AgentConfig(state_dir=state_dir, faults=tuple(s.faults),
                                   extra_values=values, absolute_time=s.absolute_time)
        await self._boot_agent(since=0)

    async def _serve(self, mtp: str, state_dir: Path) -> dict[str, str]:
        """Start the suite's server for ``mtp`` with the identities on it; the agent values."""
        tls = "true" if self.pki else "false"
        if mtp == "websocket-server":
            # The agent listens (port 0: the OS picks); the suite dials it after each boot.
            self._primary_unbound(IDENTITIES["primary"])
            return {"Device.LocalAgent.MTP.3.Enable": "true",
                    "Device.LocalAgent.MTP.3.WebSocket.Port": "0",
                    "Device.LocalAgent.MTP.3.WebSocket.EnableEncryption": tls,
                    "Device.LocalAgent.Controller.1.MTP.1.Enable": "false",
                    "Device.LocalAgent.Controller.1.MTP.3.Enable": "false"}
        address = {"mqtt": "usp/controller/{}", "stomp": "/queue/controller-{}"}.get(self.kind, "")
        spec = ServerSpec(self.kind, socket=str(state_dir / "usp.sock"),
                          ssl_context=self.pki.suite_context("server") if self.pki else None)
        self.server, bindings = await start_server(
            spec, {name: (eid, address.format(name)) for name, eid in IDENTITIES.items()},
            timeline=self.timeline)
        self._bind(bindings, IDENTITIES)
        server = self.server
        if self.kind == "mqtt":
            return {"Device.MQTT.Client.1.BrokerPort": str(server.port),
                    "Device.MQTT.Client.1.Enable": "true",
                    "Device.MQTT.Client.1.ProtocolVersion": "3.1.1" if mtp == "mqtt311" else "5.0",
                    "Device.MQTT.Client.1.ConnectRetryTime": "1",  # quick reconnects in runs
                    "Device.MQTT.Client.1.TransportProtocol": "TLS" if self.pki else "TCP/IP",
                    "Device.MQTT.Client.1.Username": MQTT_LOGIN[0],
                    "Device.MQTT.Client.1.Password": MQTT_LOGIN[1],
                    "Device.LocalAgent.MTP.1.Enable": "true",
                    "Device.LocalAgent.Controller.1.MTP.1.MQTT.Topic": "usp/controller/primary",
                    }
        if self.kind == "stomp":
            return {"Device.STOMP.Connection.1.Port": str(server.port),
                    "Device.STOMP.Connection.1.Enable": "true",
                    "Device.STOMP.Connection.1.ServerRetryInitialInterval": "1",
                    "Device.STOMP.Connection.1.EnableEncryption": tls,
                    "Device.LocalAgent.MTP.2.Enable": "true",
                    "Device.LocalAgent.Controller.1.MTP.1.Enable": "false",
                    "Device.LocalAgent.Controller.1.MTP.2.Enable": "true",
                    "Device.LocalAgent.Controller.1.MTP.2.STOMP.Destination":
                        "/queue/controller-primary"}
        if self.kind == "websocket":
            # One identity per connection-oriented MTP: the agent dials the primary only.
            return {"Device.LocalAgent.MTP.3.Enable": "true",
                    "Device.LocalAgent.MTP.3.WebSocket.Port": "0",
                    "Device.LocalAgent.Controller.1.MTP.1.Enable": "false",
                    "Device.LocalAgent.Controller.1.MTP.3.Enable": "true",
                    "Device.LocalAgent.Controller.1.MTP.3.WebSocket.SessionRetryMinimumWaitInterval":
                        "1",
                    "Device.LocalAgent.Controller.1.MTP.3.WebSocket.Port": str(server.port),
                    "Device.LocalAgent.Controller.1.MTP.3.WebSocket.EnableEncryption": tls}
        return {"Device.UnixDomainSockets.UnixDomainSocket.1.Path": spec.socket,
                "Device.LocalAgent.MTP.4.Enable": "true",
                "Device.LocalAgent.Controller.1.MTP.1.Enable": "false",
                "Device.LocalAgent.Controller.1.MTP.4.Enable": "true"}

    async def _boot_agent(self, *, since: int) -> None:
        assert self._config is not None
        for ctrl in self.controllers.values():  # E2E TLS sessions the cases ask for
            ctrl.e2e_pki = self.e2e_pki
        self.runtime = await AgentRuntime(
            self._config, tls=self.pki.agent_material(absolute_time=self.settings.absolute_time)
            if self.pki else None,
            e2e=self.e2e_pki.agent_material(
                mtp_protects_integrity=self.settings.mtp_protects_integrity)).start()
        if self.settings.mtp == "websocket-server":
            await self._redial()
        try:
            await self._connect_record(since=since,
                                       timeout=max(self.settings.response_timeout, 15.0))
        except ControllerTimeout as exc:
            raise SuiteError(f"the built-in agent did not connect over {self.settings.mtp}: "
                             f"{exc}") from None

    async def _redial(self) -> None:
        """Dial the agent's own WebSocket server (Device.LocalAgent.MTP.3)."""
        assert self.runtime is not None
        servers: list[Any] = [m for m in self.runtime.mtps
                              if getattr(m, "server_config", None) is not None
                              and getattr(m, "port", None)]
        if not servers:
            raise SuiteError("the built-in agent has no WebSocket server listening "
                             "(Device.LocalAgent.MTP.3)")
        try:
            await self._dial("127.0.0.1", servers[0].port, servers[0].server_config.path,
                             ssl_context=self._tls_context("client", self.presenting)
                             if self.pki else None)
        except OSError as exc:  # refused, or a WSHandshakeError
            raise SuiteError(f"cannot open a WebSocket session to the built-in agent: {exc}") \
                from None

    def _tls_context(self, role: str, certificate: str) -> ssl.SSLContext:
        if self.pki is None:
            raise SuiteError("this run of the built-in agent has no TLS: the suite presents "
                             "no certificate")
        return self.pki.suite_context(role, certificate)

    # --- actions the cases use -------------------------------------------------------------

    async def ready(self) -> None:
        """Before a case: if an earlier case made the agent reboot and stopped before waiting
        for it (e.g. it failed on the OperateResp), boot its next life now."""
        if self.runtime is not None and self.runtime.stopped:
            await self._boot_agent(since=self.controllers["primary"].mark)

    async def reboot(self, *, triggered: bool = False, since: int | None = None,
                     timeout: float | None = None) -> None:
        """Device.Reboot() through the primary controller (unless the case ``triggered`` the
        reboot itself, ``since`` its send), then wait for the agent's next life to connect."""
        primary = self.controllers["primary"]
        mark = primary.mark if since is None else since
        if self.runtime is None:
            raise SuiteError("the built-in agent is not running")
        if not triggered:
            try:
                await primary.send(_reboot_request())
            except ConnectionError:  # no MTP up (e.g. a case disabled it): power-cycle it
                await self.runtime.stop("reboot")
        limit = 30.0 if timeout is None else timeout
        try:  # the in-process agent: this life ends, the next one boots on the same state
            # shielded: a timeout must not cancel the life's end (a later reboot awaits it)
            await asyncio.wait_for(asyncio.shield(self.runtime.run()), limit)
        except TimeoutError:
            raise EUTNotBack(f"the EUT did not reboot within {limit:g}s") from None
        try:
            await self._boot_agent(since=mark)
        except SuiteError as exc:
            raise EUTNotBack(str(exc)) from None


def _reboot_request() -> Any:
    return messages.request("operate", {"command": "Device.Reboot()",
                                        "command_key": "suite-reboot", "send_resp": True})


# --- a device described by its profile ---------------------------------------------------


class ExternalEnvironment(_SuiteSide):
    """An EUT the suite does not start, described by its profile (async context manager).

    Every profile MTP: MQTT with the suite as broker (``broker: suite``) or on an
    operator's broker (``broker: external``), STOMP through the suite's broker,
    WebSocket with the suite as server (``agent-connects``) or client
    (``controller-connects``), UDS with the suite listening. The profile's
    controller identities sit on their topics / destinations on the brokers; on
    WebSocket and UDS only the primary has a connection (cases acting as another
    identity are then not applicable). Reboot by ``usp``, ``command`` or ``operator``.
    """

    def __init__(self, profile: EUTProfile, mtp: str | None = None) -> None:
        try:
            config = profile.mtp(mtp or None)
        except LookupError as exc:
            raise SuiteError(str(exc)) from None
        self.profile = profile
        self.config: Any = config  # the profile entry: MQTTConfig, STOMPConfig, ...
        self.external_broker = isinstance(config, MQTTConfig) and config.external
        if isinstance(config, MQTTConfig) and config.external and not config.agent_topic:
            raise SuiteError(f"{profile.source or '<profile>'}: {config.describe()} has no "
                             "agent_topic, which an external broker needs (the suite cannot see "
                             "the EUT's SUBSCRIBE there); fix: add agent_topic: the topic the EUT "
                             "subscribes to (its Device.LocalAgent.MTP.{i}.MQTT."
                             "ResponseTopicConfigured)")
        controller_connects = config.mtp == "websocket" and not config.suite_is_server
        run_mtp = config.mtp
        if controller_connects:
            run_mtp = "websocket-server"
        elif isinstance(config, MQTTConfig) and config.version == "3.1.1":
            run_mtp = "mqtt311"  # MQTT 5.0-only cases are then not applicable
        super().__init__(run_mtp, profile.eut.endpoint_id, profile.timeouts.response)
        self.reconnect_timeout = profile.timeouts.reconnect
        self.identities = {ident.role: ident.endpoint_id for ident in profile.controllers}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def environment(self) -> Environment:
        t = self.profile.timeouts
        return Environment(
            controllers=self.controllers, agent_id=self.agent_id, timeline=self.timeline,
            alternates=profile_alternates(self.profile),
            response_timeout=t.response, notification_timeout=t.notification,
            reboot=self.reboot, scenario=self.scenario, mtp=self.mtp,
            actions={"close_connection": self.close_connection, **load_actions()})

    async def __aexit__(self, *exc: object) -> None:
        await self._close_all()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --- start -----------------------------------------------------------------------------

    async def _start(self) -> None:
        timeout = self.profile.timeouts.reconnect
        if self.external_broker:
            await self._join_broker()
            try:
                await self._probe(since=0, timeout=timeout, after_reboot=False)
            except ControllerTimeout:
                primary = self.profile.controllers.primary
                raise SuiteError(f"the EUT {self.agent_id} did not answer on "
                                 f"{self.config.describe()} within {timeout:g}s (a Get of "
                                 f"{PROBE_PATH} sent to {self.config.agent_topic}); fix: check "
                                 "agent_topic, the EUT's broker connection and that it knows "
                                 f"controller {primary.endpoint_id} on "
                                 f"{self._address('primary', primary.topic)}") from None
        elif self.mtp == "websocket-server":
            self._primary_unbound(self.identities["primary"])
            await self._dial_eut(deadline=time.monotonic() + timeout)
            await self._wait_connected(since=0, timeout=timeout)
        else:
            await self._serve()
            await self._wait_connected(since=0, timeout=timeout)

    def _address(self, role: str, topic: str | None) -> str:
        """An identity's MQTT topic / STOMP destination: its own, else derived from the
        MTP's controller topic or destination ("" on WebSocket and UDS)."""
        base = getattr(self.config, "controller_topic", None) or getattr(
            self.config, "controller_destination", "")
        if topic or not base:
            return topic or ""
        return base if role == "primary" else f"{base}/{role}"

    async def _serve(self) -> None:
        """The suite's broker or server on the profile's address, identities attached."""
        cfg = self.config
        if isinstance(cfg, UDSConfig):
            spec = ServerSpec("uds", socket=self._socket_path(cfg))
        else:
            login = getattr(cfg, "username", None)
            spec = ServerSpec(cfg.mtp, host=cfg.host, port=cfg.port, ssl_context=self._server_tls(),
                              credentials={login: cfg.password or ""} if login else None)
            if isinstance(cfg, WebSocketConfig):
                spec = dataclasses.replace(spec, path=cfg.path)
            elif isinstance(cfg, STOMPConfig):
                spec = dataclasses.replace(spec, heart_beat=cfg.heart_beat,
                                           virtual_host=cfg.virtual_host)
        self.server, bindings = await start_server(
            spec, {i.role: (i.endpoint_id, self._address(i.role, i.topic))
                   for i in self.profile.controllers}, timeline=self.timeline)
        for binding in bindings.values():
            if isinstance(binding, MQTTBinding) and cfg.agent_topic:
                binding.set_agent_topic(self.agent_id, cfg.agent_topic)
            if isinstance(binding, STOMPBinding) and cfg.agent_destination:
                binding.set_agent_destination(self.agent_id, cfg.agent_destination)
        self._bind(bindings, self.identities)

    def _socket_path(self, cfg: UDSConfig) -> str:
        """The profile's socket path, else one in a temporary directory."""
        if cfg.socket is not None:
            return str(cfg.socket)
        self._tmp = tempfile.TemporaryDirectory(prefix="usp-")
        return str(Path(self._tmp.name) / "usp.sock")

    def _where(self) -> str:
        """Where the suite waits for the EUT, for messages."""
        server = self.server
        if isinstance(server, WSServer):
            return f"the suite's WebSocket server {server.url}"
        if isinstance(server, UDSServer):
            return f"the suite's UDS socket {server.path}"
        if isinstance(server, (MQTTBroker, STOMPBroker)):
            return f"the suite's {self.kind.upper()} broker on {server.host}:{server.port}"
        return f"the EUT's WebSocket server {self.config.url}"

    async def _wait_connected(self, *, since: int, timeout: float) -> None:
        try:
            await self._connect_record(since=since, timeout=timeout)
        except ControllerTimeout:
            check = {"mqtt": "its Device.MQTT.Client settings",
                     "stomp": "its Device.STOMP.Connection and controller destination settings",
                     "websocket": "its Device.LocalAgent.Controller.{i}.MTP.{i}.WebSocket "
                                  "settings",
                     "websocket-server": "that it knows controller "
                                         f"{self.identities['primary']}",
                     "uds": "its Device.UnixDomainSockets settings"}[self.mtp]
            raise SuiteError(f"the EUT {self.agent_id} sent no {CONNECT_RECORDS[self.kind]} "
                             f"Record through {self._where()} within {timeout:g}s; fix: check "
                             f"{check}") from None

    # --- TLS from the profile --------------------------------------------------------------

    def _server_tls(self) -> ssl.SSLContext | None:
        """What the suite's server presents (and, with ``ca``, how it checks the EUT)."""
        tls = self.config.tls
        if not tls.enabled:
            return None
        from conformance.mtp import pki

        if tls.certificate is None or tls.key is None:
            raise SuiteError(f"{self.config.describe()}: TLS needs the server certificate and "
                             "key the suite presents; fix: add tls.certificate and tls.key "
                             "(make them with: usp-conformance certs DIR)")
        try:
            cred = pki.load_credential(tls.certificate, tls.key)
            anchors = pki.load_certs(tls.ca.read_bytes()) if tls.ca is not None else []
            return pki.ssl_context("server", cred, trust=anchors,
                                   require_client_cert=bool(tls.require_client_cert and anchors))
        except (pki.PKIError, OSError) as exc:
            raise SuiteError(self._tls_problem(exc)) from None

    def _client_tls(self, certificate: Path | None = None,
                    key: Path | None = None) -> ssl.SSLContext | None:
        """How the suite's client (external broker, controller-connects) checks the server
        (``ca``, else the system's CAs) and the client certificate it presents (an
        identity's own, else the MTP's)."""
        tls = self.config.tls
        if not tls.enabled:
            return None
        from conformance.mtp import pki

        if certificate is None or key is None:
            certificate, key = tls.certificate, tls.key
        try:
            cred = pki.load_credential(certificate, key) if certificate and key else None
            if tls.ca is not None:
                return pki.ssl_context("client", cred, trust=pki.load_certs(tls.ca.read_bytes()))
            ctx = ssl.create_default_context()
            if certificate and key:
                ctx.load_cert_chain(certificate, key)
            return ctx
        except (pki.PKIError, OSError) as exc:  # ssl.SSLError is an OSError
            raise SuiteError(self._tls_problem(exc)) from None

    def _tls_problem(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        return (f"{self.config.describe()}: cannot use the profile's TLS files ({text}); fix: "
                "give PEM files for tls.ca, tls.certificate and tls.key (make them with: "
                "usp-conformance certs DIR)")

    # --- the EUT's WebSocket server (controller-connects) -----------------------------------

    async def _dial_eut(self, *, deadline: float) -> None:
        """Dial the profile's ``url`` until the EUT's server accepts or ``deadline`` passes."""
        url = str(self.config.url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        ctx = self._client_tls(self.profile.controllers.primary.certificate,
                               self.profile.controllers.primary.key)
        while True:
            try:
                await self._dial(host, port, path, ssl_context=ctx, server_hostname=host)
                return
            except WSHandshakeError as exc:
                if exc.result is not None:  # an answer, not a dropped connection: final
                    raise SuiteError(f"the EUT's WebSocket server {url} refused the session "
                                     f"({exc}); fix: check the url's path and that the EUT "
                                     f"accepts controller {self.identities['primary']}") from None
                last: OSError = exc
            except OSError as exc:  # refused, unreachable, TLS failed: the EUT may be starting
                last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SuiteError(f"cannot reach the EUT's WebSocket server {url} ({last}); "
                                 "fix: check the profile's url and tls (a server that closes "
                                 "at once may want a client certificate: tls.certificate, "
                                 "tls.key), and that the EUT's WebSocket server is up") from None
            await asyncio.sleep(min(RETRY_PAUSE, remaining))

    async def _redial(self) -> None:
        await self._dial_eut(deadline=time.monotonic() + self.response_timeout)

    async def _dial_after_reboot(self, *, since: int, timeout: float) -> None:
        """The old life's session ends with the EUT's server; dial the new one."""
        deadline = time.monotonic() + timeout
        client = self.server
        if isinstance(client, WSClient) and client.peer is not None:
            try:
                await asyncio.wait_for(client.peer.closed.wait(), timeout)
            except TimeoutError:
                raise SuiteError(f"the WebSocket session to {self.config.url} stayed open for "
                                 f"{timeout:g}s: the EUT did not reboot") from None
        await self._dial_eut(deadline=deadline)
        await self._wait_connected(since=since, timeout=max(deadline - time.monotonic(), 0.1))

    # --- an operator's MQTT broker ----------------------------------------------------------

    async def _join_broker(self) -> None:
        """Each identity joins the operator's broker as a client on its own topic."""
        cfg = self.config
        for ident in self.profile.controllers:
            client_id = cfg.client_id or ""
            if client_id and ident.role != "primary":
                client_id = f"{client_id}-{ident.role}"
            account = BrokerAccount(
                cfg.host, cfg.port, username=cfg.username, password=cfg.password,
                client_id=client_id, mqtt_version=5 if cfg.version == "5.0" else 4,
                ssl_context=self._client_tls(ident.certificate, ident.key))
            binding = ExternalBrokerBinding(
                account, controller_topic=self._address(ident.role, ident.topic),
                agent_topics={self.agent_id: cfg.agent_topic}, timeline=self.timeline)
            try:
                await binding.start(timeout=self.response_timeout)
            except ConnectionError as exc:
                raise SuiteError(f"{cfg.describe()}: the {ident.role} controller cannot join "
                                 f"the broker ({exc}); fix: check host, port, username, "
                                 "password, client_id and tls in the profile") from None
            self._bind({ident.role: binding}, self.identities)

    async def _probe(self, *, since: int, timeout: float, after_reboot: bool) -> None:
        """Wait until the EUT answers on the operator's broker.

        No connect Record can be awaited at the start there (the EUT may have
        connected long before the suite subscribed), so the primary Gets
        :data:`PROBE_PATH` and any answer means "connected". After a reboot an
        answer only counts once the old life is seen to have ended (its
        DisconnectRecord, R-MTP.7, or a probe left unanswered); the new life's
        connect Record (R-MTP.8) ends the wait at once. ControllerTimeout at the end.
        """
        primary = self.controllers["primary"]
        deadline = time.monotonic() + timeout
        gone = not after_reboot
        sent: set[str] = set()
        counted: set[str] = set()       # probes whose answer proves the EUT is (back) up

        def record_kind(r: Received) -> str | None:
            return records.record_kind(r.record) if r.record is not None else None

        def answer(r: Received) -> bool:
            return (r.msg is not None and r.kind[0] in ("response", "error")
                    and r.msg.header.msg_id in sent)

        def news(r: Received) -> bool:
            return record_kind(r) in records.CONNECT_KINDS or record_kind(r) == "disconnect"

        seen = since
        probe_due = True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ControllerTimeout(f"no answer to a Get of {PROBE_PATH} within {timeout:g}s")
            waiting_for = news
            if probe_due:
                try:
                    msg_id = await primary.send(messages.request("get",
                                                                 {"param_paths": [PROBE_PATH]}))
                except (BindingClosed, ConnectionError):  # the suite's client is reconnecting
                    msg_id = ""
                else:
                    sent.add(msg_id)
                    if gone:
                        counted.add(msg_id)
                waiting_for = lambda r: news(r) or answer(r)
            wait = min(self.response_timeout if probe_due else RETRY_PAUSE, remaining)
            try:
                item = await primary.wait_for(waiting_for, what="answer to the probe",
                                              since=seen, timeout=wait)
            except ControllerTimeout:
                if probe_due:   # unanswered: the EUT is away; its late answer counts
                    gone = True
                    if msg_id:
                        counted.add(msg_id)
                probe_due = True
                continue
            seen = item.index + 1
            kind = record_kind(item)
            if kind in records.CONNECT_KINDS:
                return
            if kind == "disconnect":
                gone, probe_due = True, True
                continue
            assert item.msg is not None
            if item.msg.header.msg_id in counted:
                return
            probe_due = False       # the old life answered: look again after a pause

    # --- actions the cases use -------------------------------------------------------------

    async def reboot(self, *, triggered: bool = False, since: int | None = None,
                     timeout: float | None = None) -> None:
        """Reboot as the profile says (unless the case ``triggered`` it, ``since`` its send),
        then wait until the EUT is back on this MTP (EUTNotBack otherwise)."""
        primary = self.controllers["primary"]
        mark = primary.mark if since is None else since
        method = self.profile.reboot
        limit = method.reconnect_timeout if timeout is None else timeout
        if triggered:
            pass
        elif method.method == "usp":
            await primary.send(_reboot_request())
        elif method.method == "command":
            proc = await asyncio.create_subprocess_shell(str(method.command))
            try:
                code = await asyncio.wait_for(proc.wait(), method.reconnect_timeout)
            except TimeoutError:
                proc.kill()
                raise SuiteError(f"reboot command did not finish within "
                                 f"{method.reconnect_timeout:g}s: {method.command}") from None
            if code != 0:
                raise SuiteError(f"reboot command failed (exit status {code}): {method.command}")
        else:
            print(f"\nusp-conformance: reboot the EUT {self.agent_id} now; waiting up to "
                  f"{limit:g}s for it to come back", flush=True)
        try:
            if self.external_broker:
                await self._probe(since=mark, timeout=limit, after_reboot=True)
            elif self.mtp == "websocket-server":
                await self._dial_after_reboot(since=mark, timeout=limit)
            else:
                await self._wait_connected(since=mark, timeout=limit)
        except ControllerTimeout as exc:
            raise EUTNotBack(f"the EUT did not come back on {self.config.describe()}: "
                             f"{exc}") from None
        except SuiteError as exc:
            raise EUTNotBack(str(exc)) from None

    async def scenario(self, mtp: str, changes: Mapping[str, Any]) -> None:
        if self.external_broker:
            raise SuiteError(f"scripting the MQTT broker is {NOT_APPLICABLE_EXTERNAL} (the "
                             "operator's broker is not the suite's)")
        await super().scenario(mtp, changes)

    async def close_connection(self, _runner: Any = None) -> None:
        if self.external_broker:
            raise SuiteError(f"close_connection is {NOT_APPLICABLE_EXTERNAL} (the operator's "
                             "broker holds the EUT's connection)")
        await super().close_connection(_runner)
