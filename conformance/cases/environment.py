"""Set up what cases run against: the suite's MTP server, the controller
identities and, for the built-in EUT, the reference Agent itself.

:class:`RunEnvironment` is an async context manager started once per run.
For the built-in agent it starts the suite's broker/server for the chosen
MTP, points the agent's data model at it (its run configuration's
``values``), starts the agent in-process, and waits for its connect Record.
``reboot()`` reboots the EUT (Device.Reboot() through the primary controller)
and waits for it to reconnect; for the in-process agent a reboot starts a
new agent life on the same persisted state, as the agent process would.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.agent.config import AgentConfig
from conformance.agent.runtime import AgentRuntime
from conformance.cases.runner import Environment, EUTNotBack, SuiteError
from conformance.controller.controller import Controller, ControllerTimeout
from conformance.mtp.binding import Binding
from conformance.mtp.mqtt.broker import MQTTBroker
from conformance.mtp.stomp.broker import STOMPBroker
from conformance.mtp.timeline import Timeline
from conformance.mtp.uds.server import UDSServer
from conformance.mtp.websocket.client import WSClient
from conformance.mtp.websocket.server import WSServer
from conformance.usp import messages

#: MTPs the built-in agent can be tested over, with the connect Record each sends.
#: ``websocket``: the agent dials the suite's WebSocket server; ``websocket-server``: the
#: agent is the WebSocket server (LocalAgent.MTP.3) and the suite's controller dials it.
BUILTIN_MTPS = {"mqtt": "mqtt_connect", "mqtt311": "mqtt_connect", "stomp": "stomp_connect",
                "websocket": "websocket_connect", "websocket-server": "websocket_connect",
                "uds": "uds_connect"}
IDENTITIES = {"primary": "proto::controller-1", "secondary": "proto::controller-2",
              "unknown": "proto::controller-unknown"}
AGENT_ID = "os::012345-0001"


@dataclass
class BuiltinSettings:
    """How to run the built-in reference agent."""

    mtp: str = "mqtt"
    faults: Sequence[str] = ()
    state_dir: Path | None = None
    alternates: Mapping[str, Any] = field(default_factory=dict)
    response_timeout: float = 10.0
    notification_timeout: float = 30.0


def profile_alternates(profile: Any) -> dict[str, Any]:
    """The alternate elements of an EUT profile (defaults filled in), by name: a path
    or value, or for ``arguments`` alternates a mapping of input arguments (a whole
    ``"{alt.async_command_args}"`` string in a case becomes that mapping)."""
    from conformance.eut import ALTERNATES

    return {name: (dict(profile.arguments(name)) if alt.kind == "arguments"
                   else profile.alternate(name))
            for name, alt in ALTERNATES.items()}


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


def load_actions() -> dict[str, Any]:
    """Python actions for ``python:`` steps (entry point group ``usp_conformance.actions``)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.load() for ep in entry_points(group="usp_conformance.actions")}


class RunEnvironment(_Started):
    """The servers, identities and EUT of one run (async context manager)."""

    def __init__(self, settings: BuiltinSettings) -> None:
        if settings.mtp not in BUILTIN_MTPS:
            raise SuiteError(f"unknown MTP {settings.mtp!r}; choose one of "
                             f"{', '.join(BUILTIN_MTPS)}")
        self.settings = settings
        self.timeline = Timeline()
        self.controllers: dict[str, Controller] = {}
        self.server: Any = None
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
                           reboot=self.reboot, scenario=self.scenario, mtp=self.settings.mtp)

    async def __aexit__(self, *exc: object) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None
        for ctrl in self.controllers.values():
            await ctrl.close()
        if self.server is not None:
            await self.server.close()
            self.server = None
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
        values, bindings = await self._serve(s.mtp, state_dir)
        for name, binding in bindings.items():
            ctrl = Controller(IDENTITIES[name], timeline=self.timeline,
                              default_timeout=s.response_timeout)
            ctrl.attach(binding, agent_id=AGENT_ID)
            self.controllers[name] = ctrl
        if s.mtp == "websocket-server":
            self.controllers["primary"] = Controller(IDENTITIES["primary"], timeline=self.timeline,
                                                     default_timeout=s.response_timeout)
        self._config = AgentConfig(state_dir=state_dir, faults=tuple(s.faults),
                                   extra_values=values)
        await self._boot_agent(since=0)

    async def _serve(self, mtp: str, state_dir: Path) -> tuple[dict[str, str], dict[str, Binding]]:
        """Start the suite's server for ``mtp``; the agent values and the bindings."""
        tl = self.timeline
        if mtp in ("mqtt", "mqtt311"):
            broker = self.server = await MQTTBroker(timeline=tl).start()
            bindings: dict[str, Binding] = {
                name: broker.attach_controller(eid, f"usp/controller/{name}")
                for name, eid in IDENTITIES.items()}
            return {"Device.MQTT.Client.1.BrokerPort": str(broker.port),
                    "Device.MQTT.Client.1.Enable": "true",
                    "Device.MQTT.Client.1.ProtocolVersion": "3.1.1" if mtp == "mqtt311" else "5.0",
                    "Device.MQTT.Client.1.ConnectRetryTime": "1",  # quick reconnects in runs
                    "Device.LocalAgent.MTP.1.Enable": "true",
                    "Device.LocalAgent.Controller.1.MTP.1.MQTT.Topic": "usp/controller/primary",
                    }, bindings
        if mtp == "stomp":
            broker = self.server = await STOMPBroker(timeline=tl).start()
            bindings = {name: broker.attach_controller(eid, f"/queue/controller-{name}")
                        for name, eid in IDENTITIES.items()}
            return {"Device.STOMP.Connection.1.Port": str(broker.port),
                    "Device.STOMP.Connection.1.Enable": "true",
                    "Device.STOMP.Connection.1.ServerRetryInitialInterval": "1",
                    "Device.LocalAgent.MTP.2.Enable": "true",
                    "Device.LocalAgent.Controller.1.MTP.1.Enable": "false",
                    "Device.LocalAgent.Controller.1.MTP.2.Enable": "true",
                    "Device.LocalAgent.Controller.1.MTP.2.STOMP.Destination":
                        "/queue/controller-primary"}, bindings
        if mtp == "websocket-server":
            # The agent listens (port 0: the OS picks); the suite dials it after each boot.
            return {"Device.LocalAgent.MTP.3.Enable": "true",
                    "Device.LocalAgent.MTP.3.WebSocket.Port": "0",
                    "Device.LocalAgent.Controller.1.MTP.1.Enable": "false",
                    "Device.LocalAgent.Controller.1.MTP.3.Enable": "false"}, {}
        if mtp == "websocket":
            # One identity per connection-oriented MTP: the agent dials the primary only.
            server = self.server = await WSServer(IDENTITIES["primary"], timeline=tl).start()
            bindings = {"primary": server.binding}
            return {"Device.LocalAgent.MTP.3.Enable": "true",
                    "Device.LocalAgent.MTP.3.WebSocket.Port": "0",
                    "Device.LocalAgent.Controller.1.MTP.1.Enable": "false",
                    "Device.LocalAgent.Controller.1.MTP.3.Enable": "true",
                    "Device.LocalAgent.Controller.1.MTP.3.WebSocket.SessionRetryMinimumWaitInterval":
                        "1",
                    "Device.LocalAgent.Controller.1.MTP.3.WebSocket.Port": str(server.port)}, bindings
        path = str(state_dir / "usp.sock")
        server = self.server = await UDSServer(path, IDENTITIES["primary"], timeline=tl).start()
        bindings = {"primary": server.binding}
        return {"Device.UnixDomainSockets.UnixDomainSocket.1.Path": path,
                "Device.LocalAgent.MTP.4.Enable": "true",
                "Device.LocalAgent.Controller.1.MTP.1.Enable": "false",
                "Device.LocalAgent.Controller.1.MTP.4.Enable": "true"}, bindings

    async def _boot_agent(self, *, since: int) -> None:
        assert self._config is not None
        self.runtime = await AgentRuntime(self._config).start()
        primary = self.controllers["primary"]
        if self.settings.mtp == "websocket-server":
            await self._dial_agent()
        try:
            await primary.connect_record(BUILTIN_MTPS[self.settings.mtp], since=since,
                                         timeout=max(self.settings.response_timeout, 15.0))
        except ControllerTimeout as exc:
            raise SuiteError(f"the built-in agent did not connect over {self.settings.mtp}: "
                             f"{exc}") from None

    async def _dial_agent(self) -> None:
        """Open the primary controller's WebSocket session to the agent's server (R-WS.3)."""
        assert self.runtime is not None
        servers = [m for m in self.runtime.mtps if getattr(m, "server_config", None) is not None
                   and getattr(m, "port", 0)]
        if not servers:
            raise SuiteError("the built-in agent has no WebSocket server listening "
                             "(Device.LocalAgent.MTP.3)")
        client = WSClient("127.0.0.1", servers[0].port, servers[0].server_config.path,
                          eid=IDENTITIES["primary"], timeline=self.timeline)
        try:
            await client.connect()
        except OSError as exc:  # refused, or a WSHandshakeError
            raise SuiteError(f"cannot open a WebSocket session to the built-in agent: {exc}") \
                from None
        if isinstance(self.server, WSClient):
            await self.server.close()
        self.server = client
        self.controllers["primary"].attach(client.binding, agent_id=AGENT_ID)

    # --- actions the cases use -------------------------------------------------------------

    async def reboot(self, *, triggered: bool = False, since: int | None = None,
                     timeout: float | None = None) -> None:
        """Device.Reboot() through the primary controller (unless the case ``triggered`` the
        reboot itself, ``since`` its send), then wait for the agent's next life to connect."""
        primary = self.controllers["primary"]
        mark = primary.mark if since is None else since
        if not triggered:
            await primary.send(messages.request("operate", {"command": "Device.Reboot()",
                                                            "command_key": "suite-reboot",
                                                            "send_resp": True}))
        if self.runtime is None:
            raise SuiteError("the built-in agent is not running")
        limit = 30.0 if timeout is None else timeout
        try:  # the in-process agent: this life ends, the next one boots on the same state
            await asyncio.wait_for(self.runtime.run(), limit)
        except asyncio.TimeoutError:
            raise EUTNotBack(f"the EUT did not reboot within {limit:g}s") from None
        try:
            await self._boot_agent(since=mark)
        except SuiteError as exc:
            raise EUTNotBack(str(exc)) from None

    async def close_connection(self, _runner: Any = None) -> None:
        """Drop the EUT's MTP connection without any protocol goodbye (the
        ``close_connection`` python action); the agent reconnects on its own."""
        server = self.server
        if isinstance(server, MQTTBroker):
            await server.drop_client(AGENT_ID)
        elif isinstance(server, STOMPBroker):
            await server.drop(AGENT_ID)
        elif isinstance(server, WSServer):
            await server.abort_agent(AGENT_ID)
        elif isinstance(server, UDSServer):
            await server.close_peers("closed by the case")
        elif isinstance(server, WSClient):  # the agent is the server: the suite dials again
            await server.abort()
            mark = self.controllers["primary"].mark
            await self._dial_agent()
            await self.controllers["primary"].connect_record("websocket_connect", since=mark,
                                                             timeout=self.settings.response_timeout)
        else:
            raise SuiteError("no suite server holds the EUT's connection")

    async def scenario(self, mtp: str, changes: Mapping[str, Any]) -> None:
        if mtp.removesuffix("311") != self.settings.mtp.removesuffix("311").removesuffix("-server"):
            raise SuiteError(f"the case scripts the {mtp} server but this run is over "
                             f"{self.settings.mtp}")
        if self.server is None or not hasattr(self.server, "set_scenario"):
            raise SuiteError(f"the {self.settings.mtp} server of this run has no scenario hooks")
        self.server.set_scenario(**dict(changes))


class ExternalEnvironment(_Started):
    """An EUT the suite does not start, described by its profile (async context manager).

    Supported now: MQTT with the suite as the broker (``broker: suite``) on the
    profile's host/port, credentials and TLS; the controller identities of the
    profile on their topics; reboot by ``usp``, ``command`` or ``operator``.
    """

    def __init__(self, profile: Any, mtp: str | None = None) -> None:
        self.profile = profile
        try:
            self.config = profile.mtp(mtp or None)
        except LookupError as exc:
            raise SuiteError(str(exc)) from None
        if self.config.mtp != "mqtt" or getattr(self.config, "external", False):
            raise SuiteError(f"{self.config.describe()}: external EUTs run over MQTT with the "
                             "suite as broker for now; other MTPs are not supported yet")
        self.timeline = Timeline()
        self.controllers: dict[str, Controller] = {}
        self.server: MQTTBroker | None = None
        self.agent_id = profile.eut.endpoint_id

    @property
    def environment(self) -> Environment:
        t = self.profile.timeouts
        return Environment(
            controllers=self.controllers, agent_id=self.agent_id, timeline=self.timeline,
            alternates=profile_alternates(self.profile),
            response_timeout=t.response, notification_timeout=t.notification,
            reboot=self.reboot, scenario=self.scenario, mtp="mqtt",
            actions={"close_connection": self.close_connection, **load_actions()})

    async def __aexit__(self, *exc: object) -> None:
        for ctrl in self.controllers.values():
            await ctrl.close()
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def _start(self) -> None:
        cfg = self.config
        credentials = {cfg.username: cfg.password or ""} if cfg.username else None
        self.server = await MQTTBroker(timeline=self.timeline, ssl_context=self._tls(),
                                       credentials=credentials).start(cfg.host, cfg.port)
        for ident in self.profile.controllers:
            topic = ident.topic or (cfg.controller_topic if ident.role == "primary"
                                    else f"{cfg.controller_topic}/{ident.role}")
            binding = self.server.attach_controller(ident.endpoint_id, topic)
            if cfg.agent_topic:
                binding.set_agent_topic(self.agent_id, cfg.agent_topic)
            ctrl = Controller(ident.endpoint_id, timeline=self.timeline,
                              default_timeout=self.profile.timeouts.response)
            ctrl.attach(binding, agent_id=self.agent_id)
            self.controllers[ident.role] = ctrl
        await self._wait_connected(since=0)

    def _tls(self) -> Any:
        tls = self.config.tls
        if not tls.enabled:
            return None
        from conformance.mtp import pki

        if tls.certificate is None or tls.key is None:
            raise SuiteError(f"{self.config.describe()}: TLS needs the broker's certificate and "
                             "key in the profile (make them with: usp-conformance certs DIR)")
        cred = pki.load_credential(tls.certificate, tls.key)
        anchors = pki.load_certs(tls.ca.read_bytes()) if tls.ca is not None else []
        return pki.ssl_context("server", cred, trust=anchors,
                               require_client_cert=bool(tls.require_client_cert and anchors))

    async def _wait_connected(self, *, since: int, timeout: float | None = None) -> None:
        timeout = self.profile.timeouts.reconnect if timeout is None else timeout
        try:
            await self.controllers["primary"].connect_record("mqtt_connect", since=since,
                                                             timeout=timeout)
        except ControllerTimeout:
            raise SuiteError(f"the EUT {self.agent_id} did not connect to the suite's MQTT broker "
                             f"on {self.config.host}:{self.config.port} within {timeout:g}s; "
                             "check its Device.MQTT.Client settings") from None

    async def reboot(self, *, triggered: bool = False, since: int | None = None,
                     timeout: float | None = None) -> None:
        """Reboot as the profile says (unless the case ``triggered`` it, ``since`` its send),
        then wait for the MQTTConnect Record."""
        primary = self.controllers["primary"]
        mark = primary.mark if since is None else since
        method = self.profile.reboot
        if triggered:
            pass
        elif method.method == "usp":
            await primary.send(messages.request("operate", {
                "command": "Device.Reboot()", "command_key": "suite-reboot", "send_resp": True}))
        elif method.method == "command":
            proc = await asyncio.create_subprocess_shell(str(method.command))
            if await asyncio.wait_for(proc.wait(), method.reconnect_timeout) != 0:
                raise SuiteError(f"reboot command failed: {method.command}")
        else:
            print(f"\nusp-conformance: reboot the EUT {self.agent_id} now; waiting up to "
                  f"{method.reconnect_timeout:g}s for it to reconnect", flush=True)
        try:
            await self._wait_connected(since=mark, timeout=timeout)
        except SuiteError as exc:
            raise EUTNotBack(str(exc)) from None

    async def scenario(self, mtp: str, changes: Mapping[str, Any]) -> None:
        if mtp != "mqtt" or self.server is None:
            raise SuiteError(f"no scriptable {mtp} server in this run")
        self.server.set_scenario(**dict(changes))

    async def close_connection(self, _runner: Any = None) -> None:
        assert self.server is not None
        await self.server.drop_client(self.agent_id)
