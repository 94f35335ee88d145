"""EUT profiles: what the Endpoint Under Test is and how the suite reaches it.

A profile is one YAML file (documented field by field in
``fixtures/eut/README.md``) that the suite reads once per run. It supplies
TP-469's "Required EUT Information" (firmware version, firmware banks,
supported Feature IDs, alternate elements) plus what the suite needs to
drive the EUT: its MTPs, the controller identities the suite plays, how to
reboot it, timeouts, and, for the built-in reference Agent, how to start it.

Entry points:

* :func:`load_profile` / :func:`parse_profile`: read and validate a
  profile into a frozen :class:`EUTProfile`. Every mistake raises
  :class:`ProfileError` (and nothing else): a one-line message
  ``FILE:LINE: problem; fix: what to write instead``.
* :func:`default_profile`: the reference Agent's profile (the packaged
  ``conformance/eut_reference.yaml``, a copy of
  ``fixtures/eut/reference-agent.yaml``; built in code when the package
  data is missing).
* :func:`builtin_agent_values`: the ``values:`` overrides that point the
  reference Agent's data model at the servers the suite started.

Pure apart from reading the profile file (and checking that the files it
names exist); no sockets, threads or clocks.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, NoReturn
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from conformance.usp.endpoint import validate_endpoint_id
from conformance.usp.paths import PathError, PathKind, parse_path

if TYPE_CHECKING:
    from conformance.report.model import EUTInfo as ReportEUTInfo

__all__ = [
    "ALTERNATES",
    "DEPRECATED_FEATURES",
    "FEATURES",
    "MTP_KINDS",
    "REMOVED_FEATURES",
    "AgentSettings",
    "Alternate",
    "ControllerIdentity",
    "Controllers",
    "EUTInfo",
    "EUTProfile",
    "FirmwareSettings",
    "MQTTConfig",
    "MTPConfig",
    "ProfileError",
    "RebootMethod",
    "STOMPConfig",
    "TLSFiles",
    "Timeouts",
    "UDSConfig",
    "WebSocketConfig",
    "builtin_agent_values",
    "default_profile",
    "load_profile",
    "parse_profile",
]

# --- TP-469 facts ------------------------------------------------------------------------

#: TP-469 Feature IDs (Introduction, "Test Cases Required by Profile and Option Support").
FEATURES: Mapping[int, str] = MappingProxyType({
    1: "At least one command",
    2: "At least one command with input arguments",
    3: "At least one asynchronous command",
    4: "Subscription.{i}.NotifExpiration",
    5: "Controller:1 profile",
    6: "Subscription.{i}.TimeToLive",
    7: "Controller:1 profile (writeable)",
    8: "Controller.{i}.SendOnBoardRequest()",
    9: "Device.ScheduleTimer()",
    10: "Reboot:1 profile",
    11: "(Removed)",
    12: "ControllerTrust:1 profile",
    13: "ControllerTrust:1 profile (writeable)",
    14: "(Removed)",
    15: "TLS at the MTP layer",
    16: "CoAP MTP (deprecated)",
    17: "STOMP MTP",
    18: "STOMPHeartbeat:1 profile",
    19: "WebSocket MTP",
    20: "(Removed)",
    21: "Discovery via DHCP options",
    22: "Discovery via mDNS",
    23: "Secure message exchange (TLS for USP Record integrity)",
    24: "USP session context",
    25: "Device.LocalAgent.AddCertificate()",
    26: "Firmware:1 profile",
    27: "Firmware:1 profile (Activate)",
    28: "Device.LocalAgent.Request.{i}.Cancel()",
    29: "(Removed)",
    30: "Device.DeviceInfo.BootFirmwareImage",
    31: "At least one nested multi-instance object",
    32: "HTTP bulk data collection, JSON encoding",
    33: "HTTP bulk data collection, CSV encoding",
    34: "Bulk data collection via the Push! event",
    35: "MQTT MTP, version 3.1.1",
    36: "MQTT MTP, version 5.0",
    37: "Subscription TriggerAction",
    38: "Command with input arguments",
    39: "Event with arguments",
    40: "ControllerTrust.SecuredRoles",
    41: "Bulk data collection over MQTT",
    42: "Controller OnBoardingComplete and OnBoardingRestartTime",
})
REMOVED_FEATURES: frozenset[int] = frozenset({11, 14, 20, 29})
DEPRECATED_FEATURES: frozenset[int] = frozenset({16})
#: Feature -> the feature it extends (listing the first without the second is a mistake).
_IMPLIES: Mapping[int, int] = MappingProxyType({7: 5, 13: 12, 18: 17, 27: 26, 28: 26})
#: Feature -> MTP kind (and MQTT version) its cases need.
_FEATURE_MTP: Mapping[int, tuple[str, str | None]] = MappingProxyType({
    17: ("stomp", None), 19: ("websocket", None), 35: ("mqtt", "3.1.1"), 36: ("mqtt", "5.0")})

MTP_KINDS: tuple[str, ...] = ("mqtt", "stomp", "websocket", "uds")
MQTT_VERSIONS: tuple[str, ...] = ("5.0", "3.1.1")
BROKER_MODES: tuple[str, ...] = ("suite", "external")
WS_ROLES: tuple[str, ...] = ("agent-connects", "controller-connects")
REBOOT_METHODS: tuple[str, ...] = ("usp", "command", "operator")
CONTROLLER_ROLES: tuple[str, ...] = ("primary", "secondary", "unknown")
DEFAULT_USP_VERSION = "1.4"
DEFAULT_CONTROLLER_TOPIC = "usp/controller"
DEFAULT_CONTROLLER_DESTINATION = "/queue/controller"
DEFAULT_SECONDARY = "proto::usp-conformance-secondary"
DEFAULT_UNKNOWN = "proto::usp-conformance-unknown"
REFERENCE_RESOURCE = "eut_reference.yaml"


@dataclass(frozen=True)
class Alternate:
    """One substitutable element (TP-469 "Elements Specified in the Test Procedure").

    ``kind``: ``object`` / ``parameter`` / ``command`` / ``event`` (absolute
    paths, ``{i}`` allowed), ``relative-parameter`` (a parameter name inside
    an instance of ``multi_instance_object``), ``value`` (any text) or
    ``arguments`` (a mapping of input argument names to values).
    """

    name: str
    default: str | Mapping[str, str]
    kind: str
    cases: str          # the TP-469 cases that use it
    meaning: str


def _alt(name: str, default: str | Mapping[str, str], kind: str, cases: str,
         meaning: str) -> tuple[str, Alternate]:
    if isinstance(default, Mapping):
        default = MappingProxyType(dict(default))
    return name, Alternate(name, default, kind, cases, meaning)


#: Every alternate element name the cases use, with the reference Agent's value as default.
ALTERNATES: Mapping[str, Alternate] = MappingProxyType(dict([
    _alt("single_instance_object", "Device.LocalAgent.", "object",
         "1.39, 1.72-1.76, 1.89", "a single-instance object to Get and GetSupportedDM"),
    _alt("multi_instance_object", "Device.LocalAgent.Subscription.", "object",
         "1.1-1.35, 1.43-1.51, 1.66-1.71, 1.81, 1.82, 1.84, 1.86-1.88, 1.90, 1.95, 1.96",
         "a table the primary controller may Add to, Set and Delete"),
    _alt("nested_multi_instance_object", "Device.LocalAgent.Controller.{i}.MTP.", "object",
         "1.10, 1.71, 1.83", "a table inside another table's instance (Feature 31)"),
    _alt("readonly_parameter", "Device.LocalAgent.EndpointID", "parameter",
         "1.36-1.38, 1.107", "a parameter every controller can read"),
    _alt("writable_parameter", "NotifRetry", "relative-parameter",
         "1.11-1.22", "a writable parameter of multi_instance_object instances"),
    _alt("writable_parameter_value", "true", "value",
         "1.11-1.22", "a valid value for writable_parameter"),
    _alt("write_once_parameter", "Alias", "relative-parameter",
         "1.104", "a WriteOnceReadOnly parameter of multi_instance_object instances"),
    _alt("value_change_parameter", "Device.LocalAgent.Controller.{i}.ProvisioningCode",
         "parameter", "1.52-1.56",
         "a writable parameter watched with ValueChange ({i}: the primary controller's instance)"),
    _alt("sync_command", "Device.Reboot()", "command",
         "1.61, 1.62, 1.105", "a synchronous command (Feature 1)"),
    _alt("async_command", "Device.ScheduleTimer()", "command",
         "1.64, 1.65, 1.92", "an asynchronous command (Feature 3)"),
    _alt("async_command_args", {"DelaySeconds": "1"}, "arguments",
         "1.64, 1.65, 1.92", "input arguments that make async_command succeed"),
    _alt("command_with_input_args", "Device.ScheduleTimer()", "command",
         "1.79, 1.91, 1.97, 1.100", "a command with input arguments (Features 2, 38)"),
    _alt("command_input_args", {"DelaySeconds": "1"}, "arguments",
         "1.79, 1.91, 1.100", "valid input arguments of command_with_input_args"),
    _alt("event_with_args", "Device.Boot!", "event",
         "1.98, 1.106", "an event with arguments (Feature 39)"),
    _alt("secured_object", "Device.MQTT.Client.", "object",
         "2.27", "a table the primary may Add to whose instances have a writable secured "
         "parameter (Feature 40)"),
    _alt("secured_parameter", "Password", "relative-parameter",
         "2.27", "a writable parameter with the secured attribute in secured_object instances"),
]))

_PATH_KINDS = {"object": PathKind.OBJECT, "parameter": PathKind.PARAMETER,
               "relative-parameter": PathKind.PARAMETER, "command": PathKind.COMMAND,
               "event": PathKind.EVENT}


# --- the error ---------------------------------------------------------------------------


class ProfileError(ValueError):
    """A mistake in an EUT profile.

    The message is one line, ``FILE:LINE: problem; fix: remedy``; the parts
    are also attributes (``line`` is 0 when no line applies).
    """

    def __init__(self, file: str, line: int, problem: str, fix: str) -> None:
        self.file = file
        self.line = line
        self.problem = _one_line(problem)
        self.fix = _one_line(fix)
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {self.problem}; fix: {self.fix}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- the profile -------------------------------------------------------------------------


@dataclass(frozen=True)
class EUTInfo:
    """TP-469 "Required EUT Information" and identity (``eut:``)."""

    name: str
    endpoint_id: str
    firmware_version: str
    manufacturer: str = ""
    model: str = ""
    firmware_banks: int | None = None
    usp_version: str = DEFAULT_USP_VERSION


@dataclass(frozen=True)
class TLSFiles:
    """TLS on one MTP. Files are PEM, absolute after loading.

    On MTPs where the suite is the server, ``certificate``/``key`` are what it
    presents (generated by the suite's test PKI when absent), ``ca`` verifies
    client certificates and ``require_client_cert`` asks for one (mutual TLS).
    Where the suite is the client, ``ca`` verifies the server and
    ``certificate``/``key`` are its client certificate.
    """

    enabled: bool = False
    ca: Path | None = None
    certificate: Path | None = None
    key: Path | None = None
    require_client_cert: bool = False


@dataclass(frozen=True, kw_only=True)
class MTPConfig:
    """One way to reach the EUT (``mtps:`` entry). See the subclasses."""

    kind: ClassVar[str] = ""
    name: str
    tls: TLSFiles = TLSFiles()

    @property
    def mtp(self) -> str:
        """``mqtt``, ``stomp``, ``websocket`` or ``uds``."""
        return self.kind

    @property
    def suite_is_server(self) -> bool:
        """True when the EUT connects to a server the suite runs."""
        return True

    def describe(self) -> str:
        """One line for reports and logs."""
        return f"{self.name}: {self.kind}"


@dataclass(frozen=True, kw_only=True)
class MQTTConfig(MTPConfig):
    """MQTT: the suite's broker (``broker: suite``) or an operator's (``external``)."""

    kind: ClassVar[str] = "mqtt"
    version: str = "5.0"
    broker: str = "suite"
    host: str = "127.0.0.1"
    port: int = 0                       # 0: any free port (suite broker only)
    username: str | None = None
    password: str | None = None
    client_id: str | None = None        # the suite's client id on an external broker
    agent_topic: str | None = None      # None: learned from its SUBSCRIBE (R-MQTT.15, R-MQTT.16)
    controller_topic: str = DEFAULT_CONTROLLER_TOPIC

    @property
    def external(self) -> bool:
        return self.broker == "external"

    @property
    def suite_is_server(self) -> bool:
        return not self.external

    def describe(self) -> str:
        where = "external broker" if self.external else "suite broker"
        return f"{self.name}: MQTT {self.version} via {where} {self.host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class STOMPConfig(MTPConfig):
    """STOMP 1.2 through the suite's broker."""

    kind: ClassVar[str] = "stomp"
    host: str = "127.0.0.1"
    port: int = 0
    virtual_host: str | None = None
    username: str | None = None
    password: str | None = None
    agent_destination: str | None = None   # None: the EUT's own (or subscribe-dest)
    controller_destination: str = DEFAULT_CONTROLLER_DESTINATION
    heart_beat: tuple[int, int] = (0, 0)   # the broker's offer (sx, sy) in ms

    def describe(self) -> str:
        return f"{self.name}: STOMP via suite broker {self.host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class WebSocketConfig(MTPConfig):
    """WebSocket: the agent connects to the suite's server, or the suite to the agent's."""

    kind: ClassVar[str] = "websocket"
    role: str = "agent-connects"
    host: str = "127.0.0.1"             # agent-connects: where the suite listens
    port: int = 0
    path: str = "/usp"
    url: str | None = None              # controller-connects: the agent's server

    @property
    def suite_is_server(self) -> bool:
        return self.role == "agent-connects"

    def describe(self) -> str:
        if self.suite_is_server:
            return f"{self.name}: WebSocket, agent connects to {self.host}:{self.port}{self.path}"
        return f"{self.name}: WebSocket, suite connects to {self.url}"


@dataclass(frozen=True, kw_only=True)
class UDSConfig(MTPConfig):
    """Unix domain socket: the suite listens, the agent connects."""

    kind: ClassVar[str] = "uds"
    socket: Path | None = None          # None: the suite picks a temporary path

    def describe(self) -> str:
        return f"{self.name}: UDS at {self.socket or '(temporary path)'}"


_MTP_CLASSES: Mapping[str, type[MTPConfig]] = MappingProxyType({
    "mqtt": MQTTConfig, "stomp": STOMPConfig, "websocket": WebSocketConfig, "uds": UDSConfig})


@dataclass(frozen=True)
class ControllerIdentity:
    """A controller the suite plays. ``topic``: its MQTT topic / STOMP destination
    (None: derived from the MTP's controller topic)."""

    role: str
    endpoint_id: str
    certificate: Path | None = None
    key: Path | None = None
    topic: str | None = None


@dataclass(frozen=True)
class Controllers:
    """``primary`` (known to the EUT, writable Role), ``secondary`` (TP-469 2.9,
    2.23...) and ``unknown`` (never configured on the EUT)."""

    primary: ControllerIdentity
    secondary: ControllerIdentity = ControllerIdentity("secondary", DEFAULT_SECONDARY)
    unknown: ControllerIdentity = ControllerIdentity("unknown", DEFAULT_UNKNOWN)

    def __iter__(self) -> Iterator[ControllerIdentity]:
        return iter((self.primary, self.secondary, self.unknown))


@dataclass(frozen=True)
class RebootMethod:
    """How the suite reboots the EUT: ``usp`` (Device.Reboot()), ``command``
    (a shell command line) or ``operator`` (asks the person running the suite)."""

    method: str = "usp"
    command: str | None = None
    reconnect_timeout: float = 120.0


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``tolerance`` is the slack allowed on timing metrics."""

    response: float = 10.0
    notification: float = 30.0
    reconnect: float = 120.0
    tolerance: float = 2.0


@dataclass(frozen=True)
class AgentSettings:
    """``agent:``; ``builtin`` means the suite starts the reference Agent itself."""

    builtin: bool = False
    faults: tuple[str, ...] = ()
    values: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    factory_defaults: Path | None = None


@dataclass(frozen=True)
class FirmwareSettings:
    """The image TP-469 9.3-9.8 download: a file the suite serves or a URL."""

    image: Path | None = None
    url: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class EUTProfile:
    """A validated EUT profile (see the module docstring)."""

    eut: EUTInfo
    features: tuple[int, ...]
    mtps: tuple[MTPConfig, ...]
    controllers: Controllers
    default_mtp: str
    alternates: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    alternate_args: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: MappingProxyType({}))
    reboot: RebootMethod = RebootMethod()
    timeouts: Timeouts = Timeouts()
    agent: AgentSettings = AgentSettings()
    firmware: FirmwareSettings = FirmwareSettings()
    source: Path | None = field(default=None, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_builtin_agent(self) -> bool:
        return self.agent.builtin

    def supports(self, feature_id: int) -> bool:
        """Whether the EUT declares TP-469 Feature ``feature_id``.

        ``ValueError`` for a number outside the Feature ID table (a bug in the caller).
        """
        if isinstance(feature_id, bool) or feature_id not in FEATURES:
            raise ValueError(f"{feature_id!r} is not a TP-469 Feature ID (1-{max(FEATURES)})")
        return feature_id in self.features

    def alternate(self, name: str) -> str:
        """The element to use for ``name`` (the profile's, else the default)."""
        alt = _known_alternate(name)
        if alt.kind == "arguments":
            raise LookupError(f"alternate {name!r} is a set of arguments: use arguments({name!r})")
        return self.alternates.get(name, str(alt.default))

    def arguments(self, name: str) -> Mapping[str, str]:
        """The input arguments for an ``*_args`` alternate (profile's, else default)."""
        alt = _known_alternate(name)
        if alt.kind != "arguments":
            raise LookupError(f"alternate {name!r} is an element, not arguments: use alternate()")
        default = alt.default
        assert isinstance(default, Mapping)
        return self.alternate_args.get(name, default)

    def changed_alternates(self) -> dict[str, str]:
        """Alternates whose value differs from the default, for the report (TP-469
        requires the report to list substituted elements); arguments as ``k=v,...``."""
        out: dict[str, str] = {}
        for name, alt in ALTERNATES.items():
            if alt.kind == "arguments":
                args = self.alternate_args.get(name)
                if args is not None and dict(args) != dict(alt.default):  # type: ignore[arg-type]
                    out[name] = ",".join(f"{k}={v}" for k, v in args.items())
            elif name in self.alternates and self.alternates[name] != alt.default:
                out[name] = self.alternates[name]
        return out

    def mtp(self, name: str | None = None) -> MTPConfig:
        """The default MTP, or the one named ``name`` (an entry name, or a kind
        such as ``mqtt`` when exactly one entry has it). ``LookupError`` otherwise."""
        wanted = self.default_mtp if name is None else name
        for entry in self.mtps:
            if entry.name == wanted:
                return entry
        of_kind = [m for m in self.mtps if m.kind == wanted]
        if len(of_kind) == 1:
            return of_kind[0]
        names = ", ".join(m.name for m in self.mtps)
        if of_kind:
            raise LookupError(f"{len(of_kind)} MTPs of kind {wanted!r}: name one of {names}")
        raise LookupError(f"the profile has no MTP {wanted!r} (it has: {names})")

    def report_info(self) -> ReportEUTInfo:
        """The report's EUT section (conformance.report.model.EUTInfo)."""
        from conformance.report.model import EUTInfo as ReportEUTInfo

        return ReportEUTInfo(
            name=self.eut.name, endpoint_id=self.eut.endpoint_id,
            manufacturer=self.eut.manufacturer, model=self.eut.model,
            firmware_version=self.eut.firmware_version, firmware_banks=self.eut.firmware_banks,
            feature_ids=list(self.features), alternates=self.changed_alternates(),
            mtps=[m.describe() for m in self.mtps])


def _known_alternate(name: str) -> Alternate:
    alt = ALTERNATES.get(name)
    if alt is None:
        hint = _did_you_mean(name, ALTERNATES)
        raise LookupError(f"unknown alternate {name!r}{hint}; known: {', '.join(ALTERNATES)}")
    return alt


# --- public loaders ----------------------------------------------------------------------


def load_profile(path: str | Path, *, check_files: bool = True) -> EUTProfile:
    """Read and validate the profile at ``path``; :class:`ProfileError` on any mistake.

    Relative file names in the profile are resolved against its directory;
    with ``check_files`` (the default) each must name an existing file.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ProfileError(str(path), 0, f"cannot read the profile ({exc.strerror or exc})",
                           "check the profile's path and permissions") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(str(path), 0, f"not UTF-8 text (byte {exc.start})",
                           "save the profile as UTF-8") from None
    return parse_profile(text, path=path, check_files=check_files)


def parse_profile(text: str, *, path: str | Path = "<profile>",
                  check_files: bool = True) -> EUTProfile:
    """Validate profile ``text``; ``path`` names it in errors and anchors relative files."""
    file = str(path)
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:
        line = text[:exc.position].count("\n") + 1
        raise ProfileError(file, line, f"not valid YAML text ({exc.reason})",
                           "remove control characters from that line") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or exc.context or "syntax error"
        raise ProfileError(file, line, f"not valid YAML ({problem})",
                           "correct the YAML syntax at that line") from None
    except yaml.YAMLError as exc:
        raise ProfileError(file, 0, f"not valid YAML ({_one_line(str(exc))[:120]})",
                           "correct the YAML syntax") from None
    except RecursionError:
        raise ProfileError(file, 0, "nesting too deep", "flatten the profile") from None
    if root is None:
        raise ProfileError(file, 1, "the profile is empty",
                           "start from fixtures/eut/example-cpe-mqtt.yaml") from None
    base = Path(path).parent if file != "<profile>" else Path.cwd()
    reader = _Reader(file, base.resolve(), check_files)
    try:
        profile = reader.profile(root)
    except RecursionError:
        raise ProfileError(file, 0, "nesting too deep", "flatten the profile") from None
    src = Path(path).resolve() if file != "<profile>" else None
    return _with(profile, source=src, warnings=tuple(reader.warnings))


def default_profile() -> EUTProfile:
    """The reference Agent's profile: the packaged YAML, else the same built in code."""
    try:
        text = resources.files("conformance").joinpath(REFERENCE_RESOURCE).read_text("utf-8")
    except (OSError, ModuleNotFoundError):
        return _reference_in_code()
    return parse_profile(text, path=Path(__file__).with_name(REFERENCE_RESOURCE), check_files=False)


def _with(profile: EUTProfile, **changes: object) -> EUTProfile:
    return dataclasses.replace(profile, **changes)  # type: ignore[arg-type]


def _reference_in_code() -> EUTProfile:
    """The content of ``conformance/eut_reference.yaml`` (kept equal by a test)."""
    eid = "os::012345-0001"
    return EUTProfile(
        eut=EUTInfo(name="usp-conformance reference Agent", endpoint_id=eid,
                    firmware_version="1.0.0", manufacturer="usp-conformance",
                    model="Reference Agent", firmware_banks=2, usp_version="1.4"),
        features=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 15, 17, 18, 19, 23, 24, 25, 26, 27,
                  28, 30, 31, 35, 36, 37, 38, 39, 40, 42),
        mtps=(MQTTConfig(name="mqtt", version="5.0", broker="suite", host="127.0.0.1", port=0,
                         agent_topic=f"usp/agent/{eid}", controller_topic="usp/controller"),
              STOMPConfig(name="stomp", agent_destination=f"/queue/agent-{eid}",
                          controller_destination="/queue/controller"),
              WebSocketConfig(name="websocket", role="agent-connects"),
              UDSConfig(name="uds")),
        controllers=Controllers(ControllerIdentity("primary", "proto::controller-1"),
                                ControllerIdentity("secondary", "proto::controller-2"),
                                ControllerIdentity("unknown", "proto::controller-unknown")),
        default_mtp="mqtt",
        reboot=RebootMethod("usp", None, 60.0),
        timeouts=Timeouts(response=10.0, notification=30.0, reconnect=60.0, tolerance=2.0),
        agent=AgentSettings(builtin=True),
    )


# --- the built-in agent --------------------------------------------------------------------

#: Instance numbers in the packaged factory defaults (conformance/agent/factory-default.yaml):
#: LocalAgent.MTP.N and Controller.1.MTP.N per kind.
_AGENT_MTP_SLOT: Mapping[str, int] = MappingProxyType(
    {"mqtt": 1, "stomp": 2, "websocket": 3, "uds": 4})


def builtin_agent_values(profile: EUTProfile, *, ports: Mapping[str, int] | None = None,
                         sockets: Mapping[str, str] | None = None) -> dict[str, str]:
    """Data model values that point the reference Agent at the suite's servers.

    ``ports`` maps an MTP name to the port its server actually bound (needed
    where the profile says port 0); ``sockets`` likewise for UDS socket paths
    the suite chose. The profile's ``agent.values`` are applied last.
    ``ValueError`` when a needed port or socket path is unknown.
    """
    if not profile.is_builtin_agent:
        raise ValueError("the profile does not describe the built-in agent (agent.builtin)")
    ports = ports or {}
    sockets = sockets or {}
    out: dict[str, str] = {
        "Device.LocalAgent.EndpointID": profile.eut.endpoint_id,
        "Device.LocalAgent.Controller.1.EndpointID": profile.controllers.primary.endpoint_id,
    }
    ctrl = "Device.LocalAgent.Controller.1.MTP."

    def port_of(m: MTPConfig, configured: int) -> str:
        port = ports.get(m.name, configured)
        if not port:
            raise ValueError(f"MTP {m.name!r} has port 0: pass the port its server bound")
        return str(port)

    for m in profile.mtps:
        n = _AGENT_MTP_SLOT[m.kind]
        mtp = f"Device.LocalAgent.MTP.{n}."
        if isinstance(m, MQTTConfig):
            client = "Device.MQTT.Client.1."
            topic = m.agent_topic or f"usp/agent/{profile.eut.endpoint_id}"
            out.update({
                client + "Enable": "true", client + "ProtocolVersion": m.version,
                client + "BrokerAddress": _reachable(m.host),
                client + "BrokerPort": port_of(m, m.port),
                client + "TransportProtocol": "TLS" if m.tls.enabled else "TCP/IP",
                client + "Subscription.1.Topic": f"{topic}/#",
                mtp + "Enable": "true", mtp + "MQTT.ResponseTopicConfigured": topic,
                f"{ctrl}{n}.Enable": "true", f"{ctrl}{n}.MQTT.Topic": m.controller_topic,
            })
            if m.username is not None:
                out[client + "Username"] = m.username
            if m.password is not None:
                out[client + "Password"] = m.password
        elif isinstance(m, STOMPConfig):
            conn = "Device.STOMP.Connection.1."
            out.update({
                conn + "Enable": "true", conn + "Host": _reachable(m.host),
                conn + "Port": port_of(m, m.port),
                conn + "EnableEncryption": "true" if m.tls.enabled else "false",
                mtp + "Enable": "true", mtp + "STOMP.Destination": m.agent_destination or "",
                f"{ctrl}{n}.Enable": "true",
                f"{ctrl}{n}.STOMP.Destination": m.controller_destination,
            })
            for key, value in (("VirtualHost", m.virtual_host), ("Username", m.username),
                               ("Password", m.password)):
                if value is not None:
                    out[conn + key] = value
        elif isinstance(m, WebSocketConfig):
            out[mtp + "Enable"] = "true"
            if m.suite_is_server:
                out.update({
                    f"{ctrl}{n}.Enable": "true", f"{ctrl}{n}.WebSocket.Host": _reachable(m.host),
                    f"{ctrl}{n}.WebSocket.Port": port_of(m, m.port),
                    f"{ctrl}{n}.WebSocket.Path": m.path,
                    f"{ctrl}{n}.WebSocket.EnableEncryption": "true" if m.tls.enabled else "false",
                })
            else:
                url = urlsplit(m.url or "")
                default_port = 443 if url.scheme == "wss" else 80
                out.update({
                    mtp + "WebSocket.Port": port_of(m, url.port or default_port),
                    mtp + "WebSocket.Path": url.path or "/",
                    mtp + "WebSocket.EnableEncryption": "true" if url.scheme == "wss" else "false",
                })
        elif isinstance(m, UDSConfig):
            sock = sockets.get(m.name) or (str(m.socket) if m.socket else "")
            if not sock:
                raise ValueError(f"MTP {m.name!r} has no socket path: pass the one the suite chose")
            out.update({
                "Device.UnixDomainSockets.UnixDomainSocket.1.Path": sock,
                mtp + "Enable": "true", f"{ctrl}{n}.Enable": "true",
            })
    out.update(profile.agent.values)
    return out


def _reachable(host: str) -> str:
    """Where a local agent connects to a server listening on ``host`` (wildcards -> loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


# --- validation ----------------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_VERSION = re.compile(r"\d+\.\d+")
_MAX_PORT = 65535
_MAX_SECONDS = 7 * 86400


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _show(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    text = str(node.value)
    shown = repr(text if len(text) <= 40 else text[:37] + "...")
    kind = node.tag.removeprefix(_TAG) if node.tag.startswith(_TAG) else node.tag
    return f"{kind} {shown}" if kind not in ("str",) else shown


def _line(node: Node) -> int:
    return node.start_mark.line + 1 if node.start_mark is not None else 0


def _keys_of(node: Node) -> list[str]:
    """The plain keys of a mapping node (empty for anything else)."""
    if not isinstance(node, MappingNode):
        return []
    return [str(k.value) for k, _ in node.value if isinstance(k, ScalarNode)]


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


class _Map:
    """A YAML mapping node, checked for duplicate and unknown keys."""

    def __init__(self, r: _Reader, node: Node, where: str, allowed: Iterable[str], *,
                 hint: str, anchor: Node | None = None) -> None:
        self.r = r
        self.node = node
        self.where = where
        #: What errors about the mapping as a whole point at: its key in the parent.
        self.anchor = anchor if anchor is not None else node
        allowed = tuple(allowed)
        if not isinstance(node, MappingNode):
            r.fail(node, f"{where} must be a mapping, got {_show(node)}", hint)
        self.values: dict[str, Node] = {}
        self.keys: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                r.fail(key_node, f"{where} has a key that is {_show(key_node)}",
                       "use plain names as keys")
            key = str(key_node.value)
            if key in self.values:
                r.fail(key_node, f"{where}: key {key!r} given twice "
                                 f"(first at line {_line(self.keys[key])})", "keep only one")
            if key not in allowed:
                r.fail(key_node, f"unknown key {key!r} in {where}{_did_you_mean(key, allowed)}",
                       f"remove it or use one of: {', '.join(allowed)}")
            self.values[key] = value_node
            self.keys[key] = key_node

    def child(self, key: str, node: Node, allowed: Iterable[str], *, hint: str) -> _Map:
        """The mapping under ``key`` (``node``), anchored at the key's line."""
        return _Map(self.r, node, self.sub(key), allowed, hint=hint, anchor=self.keys[key])

    def sub(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where != "the profile" else key

    def get(self, key: str) -> Node | None:
        """The value node, or None when the key is absent or null."""
        node = self.values.get(key)
        return None if node is None or _is_null(node) else node

    def need(self, key: str, fix: str) -> Node:
        node = self.get(key)
        if node is None:
            at = self.keys.get(key, self.anchor)
            missing = "has no value" if key in self.values else "is missing"
            self.r.fail(at, f"{self.sub(key)} {missing}", fix)
        return node

    # typed readers ------------------------------------------------------------------

    def text(self, key: str, fix: str, *, required: bool = False,
             default: str | None = None) -> str | None:
        node = self.need(key, fix) if required else self.get(key)
        if node is None:
            return default
        if not isinstance(node, ScalarNode):
            self.r.fail(node, f"{self.sub(key)} must be text, got {_show(node)}", fix)
        value = str(node.value)
        if not value.strip():
            self.r.fail(node, f"{self.sub(key)} is empty", fix)
        return value

    def integer(self, key: str, lo: int, hi: int, fix: str, *,
                default: int | None = None) -> int | None:
        node = self.get(key)
        if node is None:
            return default
        value = self.r.construct(node)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.r.fail(node, f"{self.sub(key)} must be a whole number from {lo} to {hi}, "
                              f"got {_show(node)}", fix)
        return value

    def number(self, key: str, fix: str, *, default: float, positive: bool = True) -> float:
        node = self.get(key)
        if node is None:
            return default
        value = self.r.construct(node)
        seconds = float(value) if isinstance(value, (int, float)) and not isinstance(
            value, bool) and abs(value) < 1e300 else math.nan
        if not (math.isfinite(seconds) and (seconds > 0 if positive else seconds >= 0)
                and seconds <= _MAX_SECONDS):
            bound = "more than 0" if positive else "0 or more"
            self.r.fail(node, f"{self.sub(key)} must be a number of seconds, {bound} "
                              f"(at most a week), got {_show(node)}", fix)
        return seconds

    def boolean(self, key: str, fix: str, *, default: bool = False) -> bool:
        node = self.get(key)
        if node is None:
            return default
        value = self.r.construct(node)
        if not isinstance(value, bool):
            self.r.fail(node, f"{self.sub(key)} must be true or false, got {_show(node)}", fix)
        return value

    def choice(self, key: str, choices: tuple[str, ...], fix: str, *,
               default: str | None = None) -> str:
        node = self.need(key, fix) if default is None else self.get(key)
        if node is None:
            assert default is not None
            return default
        value = str(node.value) if isinstance(node, ScalarNode) else None
        if value not in choices:
            shown = _show(node)
            hint = _did_you_mean(value, choices) if value is not None else ""
            self.r.fail(node, f"{self.sub(key)} must be one of {', '.join(choices)}, "
                              f"got {shown}{hint}", fix)
        assert value is not None
        return value

    def file(self, key: str, fix: str) -> Path | None:
        node = self.get(key)
        if node is None:
            return None
        if not isinstance(node, ScalarNode) or not str(node.value).strip():
            self.r.fail(node, f"{self.sub(key)} must be a file name, got {_show(node)}", fix)
        path = (self.r.base / Path(str(node.value)).expanduser())
        if self.r.check_files:
            try:
                found = path.is_file()
            except (OSError, ValueError):
                found = False
            if not found:
                self.r.fail(node, f"{self.sub(key)}: no file {str(path)!r} "
                                  "(relative names start at the profile's directory)", fix)
        return path.resolve() if _safe_resolve(path) else path

    def sequence(self, key: str, fix: str) -> list[Node] | None:
        node = self.get(key)
        if node is None:
            return None
        if not isinstance(node, SequenceNode):
            self.r.fail(node, f"{self.sub(key)} must be a list, got {_show(node)}", fix)
        return list(node.value)


def _safe_resolve(path: Path) -> bool:
    try:
        path.resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return True


class _Reader:
    """Turns the composed YAML node tree into an :class:`EUTProfile`."""

    def __init__(self, file: str, base: Path, check_files: bool) -> None:
        self.file = file
        self.base = base
        self.check_files = check_files
        self.warnings: list[str] = []
        self._constructor = yaml.SafeLoader("")

    def fail(self, node: Node | None, problem: str, fix: str) -> NoReturn:
        raise ProfileError(self.file, _line(node) if node is not None else 0, problem, fix)

    def warn(self, node: Node, text: str) -> None:
        self.warnings.append(f"{self.file}:{_line(node)}: {_one_line(text)}")

    def construct(self, node: Node) -> object:
        """The Python value of a scalar node (None for collections or bad scalars)."""
        if not isinstance(node, ScalarNode):
            return None
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            return None

    # --- sections -----------------------------------------------------------------

    def profile(self, root: Node) -> EUTProfile:
        top = _Map(self, root, "the profile",
                   ("eut", "features", "alternates", "mtps", "default_mtp", "controllers",
                    "reboot", "timeouts", "agent", "firmware"),
                   hint="a profile is a mapping with eut, features, mtps, controllers, ...")
        eut = self.eut(top)
        features = self.features(top, eut)
        alternates, alternate_args = self.alternates(top)
        agent = self.agent(top)
        mtps = self.mtps(top, agent)
        default_mtp = self.default_mtp(top, mtps)
        controllers = self.controllers(top, eut)
        timeouts = self.timeouts(top)
        reboot = self.reboot(top, timeouts, agent)
        firmware = self.firmware(top)
        self.feature_checks(top, features, mtps, builtin=agent.builtin)
        return EUTProfile(
            eut=eut, features=features, mtps=mtps, controllers=controllers,
            default_mtp=default_mtp, alternates=MappingProxyType(alternates),
            alternate_args=MappingProxyType(alternate_args), reboot=reboot, timeouts=timeouts,
            agent=agent, firmware=firmware)

    def endpoint_id(self, m: _Map, key: str, fix: str) -> str:
        value = m.text(key, fix, required=True)
        assert value is not None
        node = m.values[key]
        problems = validate_endpoint_id(value)
        errors = [v for v in problems if v.severity == "error"]
        if errors:
            first = errors[0]
            self.fail(node, f"{m.sub(key)} {value!r} is not a valid Endpoint ID: "
                            f"{first.message} [{first.requirement}]", fix)
        for v in problems:
            self.warn(node, f"{m.sub(key)} {value!r}: {v.message} [{v.requirement}]")
        return value

    def eut(self, top: _Map) -> EUTInfo:
        node = top.need("eut", "add an 'eut:' section with name, endpoint_id and firmware_version")
        m = top.child("eut", node, ("name", "endpoint_id", "manufacturer", "model",
                                    "firmware_version", "firmware_banks", "usp_version"),
                      hint="write eut: with name, endpoint_id, firmware_version, ...")
        name = m.text("name", "give the EUT a name, e.g. name: Example CPE", required=True)
        eid = self.endpoint_id(m, "endpoint_id",
                               "write the EUT's Device.LocalAgent.EndpointID, e.g. os::00D09E-1234")
        fw = m.text("firmware_version", "write the EUT's software/firmware version "
                                        "(TP-469 Required EUT Information)", required=True)
        banks = m.integer("firmware_banks", 1, 255, "write the number of firmware banks, e.g. 2")
        usp = m.text("usp_version", "write the USP version as major.minor, e.g. \"1.4\"",
                     default=DEFAULT_USP_VERSION)
        assert usp is not None
        if not _VERSION.fullmatch(usp):
            self.fail(m.values["usp_version"], f"eut.usp_version {usp!r} is not major.minor",
                      "write it quoted, e.g. usp_version: \"1.4\"")
        assert name is not None and fw is not None
        return EUTInfo(name=name, endpoint_id=eid, firmware_version=fw,
                       manufacturer=m.text("manufacturer", "write the manufacturer's name") or "",
                       model=m.text("model", "write the model name") or "",
                       firmware_banks=banks, usp_version=usp)

    def features(self, top: _Map, eut: EUTInfo) -> tuple[int, ...]:
        fix = "list the supported TP-469 Feature IDs, e.g. features: [1, 5, 36] (or [])"
        top.need("features", fix)
        items = top.sequence("features", fix)
        assert items is not None
        seen: dict[int, Node] = {}
        for item in items:
            value = self.construct(item)
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(item, f"features: {_show(item)} is not a Feature ID number", fix)
            if value in REMOVED_FEATURES:
                self.fail(item, f"feature {value} was removed from TP-469",
                          f"delete {value} from features")
            if value not in FEATURES:
                self.fail(item, f"feature {value} is not in the TP-469 Feature ID table "
                                f"(1-{max(FEATURES)})", "delete it or correct the number")
            if value in seen:
                self.fail(item, f"feature {value} is listed twice (first at line "
                                f"{_line(seen[value])})", "keep one")
            if value in DEPRECATED_FEATURES:
                self.warn(item, f"feature {value} ({FEATURES[value]}) is deprecated; "
                                "this suite has no CoAP MTP, its cases are not run")
            seen[value] = item
        for feat, base in _IMPLIES.items():
            if feat in seen and base not in seen:
                self.fail(seen[feat], f"feature {feat} ({FEATURES[feat]}) extends feature "
                                      f"{base} ({FEATURES[base]}), which is not listed",
                          f"add {base} to features or delete {feat}")
        if 26 in seen and eut.firmware_banks is None:
            self.fail(seen[26], "feature 26 (Firmware:1) needs the number of firmware banks",
                      "add eut.firmware_banks (TP-469 Required EUT Information)")
        return tuple(sorted(seen))

    def alternates(self, top: _Map) -> tuple[dict[str, str], dict[str, Mapping[str, str]]]:
        node = top.get("alternates")
        if node is None:
            return {}, {}
        m = top.child("alternates", node, ALTERNATES,
                      hint="map alternate names to elements, e.g. sync_command: Device.X.Y()")
        plain: dict[str, str] = {}
        args: dict[str, Mapping[str, str]] = {}
        for name in m.values:
            alt = ALTERNATES[name]
            value_node = m.need(name, f"give a value for {name} or delete the line")
            if alt.kind == "arguments":
                am = m.child(name, value_node,
                             _keys_of(value_node),
                             hint=f"map argument names to values, e.g. {name}: {{DelaySeconds: 1}}")
                got: dict[str, str] = {}
                for arg, arg_node in am.values.items():
                    if not isinstance(arg_node, ScalarNode):
                        self.fail(arg_node, f"alternates.{name}.{arg} must be a value, "
                                            f"got {_show(arg_node)}", "write a plain value")
                    self._check_relative_name(am.keys[arg], arg, f"alternates.{name}")
                    got[arg] = "" if _is_null(arg_node) else _usp_text(self.construct(arg_node),
                                                                       str(arg_node.value))
                args[name] = MappingProxyType(got)
                continue
            value = m.text(name, f"write the element to use, e.g. {alt.default}")
            assert value is not None
            if alt.kind in _PATH_KINDS:
                self._check_path(value_node, name, value, alt)
            plain[name] = value
        return plain, args

    def _check_relative_name(self, node: Node, name: str, where: str) -> None:
        try:
            parse_path(name, allow_relative=True)
        except PathError as exc:
            self.fail(node, f"{where}: {name!r} is not an argument name ({exc.reason})",
                      "use the argument's name as the command defines it")

    def _check_path(self, node: Node, name: str, value: str, alt: Alternate) -> None:
        relative = alt.kind == "relative-parameter"
        wanted = "a parameter name" if relative else f"an absolute {alt.kind} path"
        example = f"e.g. {alt.default}"
        try:
            path = parse_path(value, allow_relative=relative)
        except PathError as exc:
            self.fail(node, f"alternates.{name} {value!r} is not a path ({exc.reason})",
                      f"write {wanted}, {example}")
        if path.kind is not _PATH_KINDS[alt.kind] or path.is_absolute == relative:
            self.fail(node, f"alternates.{name} {value!r} is not {wanted}",
                      f"write one, {example}")

    def agent(self, top: _Map) -> AgentSettings:
        node = top.get("agent")
        if node is None:
            return AgentSettings()
        m = top.child("agent", node, ("builtin", "faults", "values", "factory_defaults"),
                      hint="write agent: {builtin: true} for the reference Agent")
        builtin = m.boolean("builtin", "write builtin: true or builtin: false")
        fix_faults = ("list fault names (usp-conformance agent --list-faults), "
                      "e.g. [msg.no_response]")
        fault_nodes = m.sequence("faults", fix_faults) or []
        values_node = m.get("values")
        factory = m.file("factory_defaults", "name an existing factory-default YAML file")
        if not builtin:
            for key in ("faults", "values", "factory_defaults"):
                if m.get(key) is not None:
                    self.fail(m.keys[key], f"agent.{key} applies only to the built-in agent",
                              "set agent.builtin: true or delete it")
        faults: list[str] = []
        for item in fault_nodes:
            if not isinstance(item, ScalarNode) or _is_null(item):
                self.fail(item, f"agent.faults: {_show(item)} is not a fault name", fix_faults)
            faults.append(str(item.value))
        if faults:
            self._check_faults(fault_nodes, faults, fix_faults)
        values: dict[str, str] = {}
        if values_node is not None:
            vm = m.child("values", values_node,
                         _keys_of(values_node),
                         hint="map parameter paths to values, e.g. "
                                   "Device.MQTT.Client.1.KeepAliveTime: 30")
            for param, vnode in vm.values.items():
                try:
                    ok = parse_path(param).kind is PathKind.PARAMETER
                except PathError:
                    ok = False
                if not ok:
                    self.fail(vm.keys[param], f"agent.values: {param!r} is not a parameter path",
                              "write an absolute path such as "
                              "Device.LocalAgent.Controller.1.Enable")
                if not isinstance(vnode, ScalarNode):
                    self.fail(vnode, f"agent.values.{param} must be a value, got {_show(vnode)}",
                              "write a plain value")
                values[param] = "" if _is_null(vnode) else _usp_text(self.construct(vnode),
                                                                     str(vnode.value))
            self._check_values(vm, values)
        return AgentSettings(builtin=builtin, faults=tuple(faults),
                             values=MappingProxyType(values), factory_defaults=factory)

    def _check_values(self, vm: _Map, values: Mapping[str, str]) -> None:
        """Each value names a parameter of the agent's data model and suits its type."""
        from conformance.agent.datamodel import load_definitions, validate_value
        from conformance.agent.datamodel.store import Store

        store = Store(load_definitions())
        for param, value in values.items():
            definition = store.param_def(param)
            if definition is None:
                self.fail(vm.keys[param], f"agent.values: {param} is not a parameter of the "
                                          "reference Agent's data model",
                          "check the path against conformance/agent/datamodel (tr181.json)")
            problem = validate_value(definition, value)
            if problem is not None:
                self.fail(vm.values[param], f"agent.values.{param}: {value!r} is not valid "
                                            f"({problem})", "write a value of the parameter's type")

    def _check_faults(self, nodes: list[Node], names: list[str], fix: str) -> None:
        from conformance.agent.faults import catalogue

        known = catalogue()
        for node, name in zip(nodes, names, strict=True):
            if name not in known:
                self.fail(node, f"agent.faults: unknown fault {name!r}{_did_you_mean(name, known)}",
                          fix)

    def mtps(self, top: _Map, agent: AgentSettings) -> tuple[MTPConfig, ...]:
        fix = "list at least one MTP, e.g. mtps: [{mtp: mqtt, broker: suite}]"
        top.need("mtps", fix)
        items = top.sequence("mtps", fix)
        assert items is not None
        if not items:
            self.fail(top.values["mtps"], "mtps is empty", fix)
        out: list[MTPConfig] = []
        names: dict[str, Node] = {}
        kinds: dict[str, Node] = {}
        for number, item in enumerate(items, 1):
            entry = self.mtp(item, f"mtps[{number}]")
            if entry.name in names:
                self.fail(item, f"mtps[{number}]: the name {entry.name!r} is already used at line "
                                f"{_line(names[entry.name])}",
                          "give each entry its own name: (needed when two entries share a kind)")
            if agent.builtin and entry.kind in kinds:
                self.fail(item, f"mtps[{number}]: the built-in agent has one {entry.kind} MTP "
                                f"(already at line {_line(kinds[entry.kind])})",
                          "keep one entry per MTP kind")
            names[entry.name] = item
            kinds[entry.kind] = item
            out.append(entry)
        return tuple(out)

    def mtp(self, node: Node, where: str) -> MTPConfig:
        common = ("mtp", "name", "tls")
        specific = {
            "mqtt": ("version", "broker", "host", "port", "username", "password", "client_id",
                     "agent_topic", "controller_topic"),
            "stomp": ("broker", "host", "port", "virtual_host", "username", "password",
                      "agent_destination", "controller_destination", "heart_beat"),
            "websocket": ("role", "host", "port", "path", "url"),
            "uds": ("socket",),
        }
        fix_kind = f"write mtp: one of {', '.join(MTP_KINDS)}"
        # Find the kind first so that unknown keys are judged against its own set.
        pre = _Map(self, node, where, _keys_of(node),
                   hint="each MTP is a mapping starting with mtp: mqtt|stomp|websocket|uds")
        kind_node = pre.need("mtp", fix_kind)
        kind = str(kind_node.value) if isinstance(kind_node, ScalarNode) else ""
        if kind == "coap":
            self.fail(kind_node, f"{where}.mtp: CoAP is deprecated (TP-469 Feature 16) and "
                                 "not supported by this suite", fix_kind)
        if kind not in MTP_KINDS:
            self.fail(kind_node, f"{where}.mtp: unknown MTP {_show(kind_node)}"
                                 f"{_did_you_mean(kind, MTP_KINDS)}", fix_kind)
        allowed = common + specific[kind]
        if kind == "uds":
            allowed = ("mtp", "name") + specific[kind]
            if "tls" in pre.values:
                self.fail(pre.keys["tls"], f"{where}: UDS connections do not use TLS",
                          "remove tls from this entry")
        m = _Map(self, node, where, allowed, hint="")
        name = m.text("name", "use lower-case letters, digits, '-' or '_'", default=kind)
        assert name is not None
        if not _NAME.fullmatch(name):
            self.fail(m.values["name"], f"{where}.name {name!r} is not a short lower-case name",
                      "use up to 32 lower-case letters, digits, '-' or '_'")
        if kind == "mqtt":
            return self.mqtt(m, name)
        if kind == "stomp":
            return self.stomp(m, name)
        if kind == "websocket":
            return self.websocket(m, name)
        return UDSConfig(name=name, socket=self.socket_path(m))

    def tls(self, m: _Map, *, server: bool) -> TLSFiles:
        node = m.get("tls")
        if node is None:
            return TLSFiles()
        where = m.sub("tls")
        t = m.child("tls", node, ("enabled", "ca", "certificate", "key", "require_client_cert"),
                    hint="write tls: {enabled: true, ca: ca.pem, certificate: c.pem, key: c.key}")
        fix_file = "name an existing PEM file (relative to the profile)"
        files = TLSFiles(
            enabled=t.boolean("enabled", "write enabled: true or false"),
            ca=t.file("ca", fix_file), certificate=t.file("certificate", fix_file),
            key=t.file("key", fix_file),
            require_client_cert=t.boolean("require_client_cert", "write true or false"))
        if (files.certificate is None) != (files.key is None):
            self.fail(t.anchor, f"{where} needs both certificate and key, or neither",
                      "add the missing one (omit both to let the suite generate them)")
        if not files.enabled and (files.ca or files.certificate or files.require_client_cert):
            self.fail(t.anchor, f"{where} names TLS settings but enabled is not true",
                      "add enabled: true or remove the TLS settings")
        if files.require_client_cert and not server:
            self.fail(t.keys["require_client_cert"], f"{where}.require_client_cert applies only "
                      "where the suite is the server", "remove it (present a client certificate "
                                                         "with certificate/key instead)")
        return files

    def host_port(self, m: _Map, *, default_port: int = 0, need_host: bool = False,
                  min_port: int = 0) -> tuple[str, int]:
        host = m.text("host", "write a host name or IP address, e.g. host: 192.0.2.10",
                      required=need_host, default="127.0.0.1")
        port = m.integer("port", min_port, _MAX_PORT,
                         f"write a TCP port from {min_port} to {_MAX_PORT}"
                         + (" (0: any free port)" if min_port == 0 else ""),
                         default=default_port)
        assert host is not None and port is not None
        return host, port

    def mqtt(self, m: _Map, name: str) -> MQTTConfig:
        vnode = m.get("version")
        version = "5.0"
        if vnode is not None:
            raw = str(vnode.value) if isinstance(vnode, ScalarNode) else ""
            version = {"5": "5.0", "5.0": "5.0", "3.1.1": "3.1.1"}.get(raw, "")
            if not version:
                self.fail(vnode, f"{m.sub('version')} must be 5.0 or 3.1.1, got {_show(vnode)}",
                          'write version: "5.0" or version: "3.1.1"')
        broker = m.choice("broker", BROKER_MODES, "write broker: suite (the suite runs it) or "
                                                  "broker: external (an operator's broker)",
                          default="suite")
        external = broker == "external"
        tls = self.tls(m, server=not external)
        host, port = self.host_port(m, need_host=external, min_port=1 if external else 0,
                                    default_port=(8883 if tls.enabled else 1883) if external else 0)
        if not external and m.get("client_id") is not None:
            self.fail(m.keys["client_id"], f"{m.sub('client_id')} applies to external brokers",
                      "remove it (the suite's broker needs no client id from the suite)")
        topic_fix = "write an MQTT topic without wildcards, e.g. usp/controller"
        agent_topic = m.text("agent_topic", topic_fix)
        controller_topic = m.text("controller_topic", topic_fix, default=DEFAULT_CONTROLLER_TOPIC)
        assert controller_topic is not None
        for key, topic in (("agent_topic", agent_topic), ("controller_topic", controller_topic)):
            if topic is not None and ("+" in topic or "#" in topic or "\0" in topic):
                self.fail(m.values.get(key, m.anchor), f"{m.sub(key)} {topic!r} has a wildcard",
                          topic_fix)
        if external and version == "3.1.1" and agent_topic is None:
            self.fail(m.anchor, f"{m.where}: MQTT 3.1.1 on an external broker needs agent_topic",
                      "add agent_topic: the topic the EUT subscribes to")
        return MQTTConfig(
            name=name, tls=tls, version=version, broker=broker, host=host, port=port,
            username=m.text("username", "write the user name"),
            password=m.text("password", "write the password"),
            client_id=m.text("client_id", "write the MQTT client id"),
            agent_topic=agent_topic, controller_topic=controller_topic)

    def stomp(self, m: _Map, name: str) -> STOMPConfig:
        m.choice("broker", ("suite",), "remove broker: (only MQTT has an external-broker mode)",
                 default="suite")
        tls = self.tls(m, server=True)
        host, port = self.host_port(m)
        dest_fix = "write a STOMP destination, e.g. /queue/controller"
        hb = (0, 0)
        hb_node = m.get("heart_beat")
        if hb_node is not None:
            hm = m.child("heart_beat", hb_node, ("outgoing", "incoming"),
                         hint="write heart_beat: {outgoing: 5000, incoming: 5000} (milliseconds)")
            fix = "write milliseconds, 0 for none"
            hb = (hm.integer("outgoing", 0, 3_600_000, fix, default=0) or 0,
                  hm.integer("incoming", 0, 3_600_000, fix, default=0) or 0)
        controller_destination = m.text("controller_destination", dest_fix,
                                        default=DEFAULT_CONTROLLER_DESTINATION)
        assert controller_destination is not None
        return STOMPConfig(
            name=name, tls=tls, host=host, port=port,
            virtual_host=m.text("virtual_host", "write the virtual host name"),
            username=m.text("username", "write the user name the EUT logs in with"),
            password=m.text("password", "write the password the EUT logs in with"),
            agent_destination=m.text("agent_destination", dest_fix),
            controller_destination=controller_destination, heart_beat=hb)

    def websocket(self, m: _Map, name: str) -> WebSocketConfig:
        role = m.choice("role", WS_ROLES, "write role: agent-connects (the suite is the server) "
                                          "or role: controller-connects (the EUT is)",
                        default="agent-connects")
        if role == "agent-connects":
            if m.get("url") is not None:
                self.fail(m.keys["url"], f"{m.sub('url')} applies to role controller-connects",
                          "remove url (use host, port and path) or change the role")
            tls = self.tls(m, server=True)
            host, port = self.host_port(m)
            path = m.text("path", "write the URL path, e.g. /usp", default="/usp")
            assert path is not None
            if not path.startswith("/"):
                self.fail(m.values["path"], f"{m.sub('path')} {path!r} does not start with '/'",
                          f"write /{path}")
            return WebSocketConfig(name=name, tls=tls, role=role, host=host, port=port, path=path)
        for key in ("host", "port", "path"):
            if key in m.values:
                self.fail(m.keys[key], f"{m.sub(key)} does not apply to role controller-connects",
                          "put host, port and path into url: ws://host:port/path")
        fix = "write the agent's WebSocket server, e.g. url: ws://192.0.2.1:8080/usp"
        url = m.text("url", fix, required=True)
        assert url is not None
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            self.fail(m.values["url"], f"{m.sub('url')} {url!r} is not a URL", fix)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            self.fail(m.values["url"], f"{m.sub('url')} {url!r} is not a ws:// or wss:// URL", fix)
        tls = self.tls(m, server=False)
        if (parts.scheme == "wss") != tls.enabled:
            self.fail(m.values["url"], f"{m.sub('url')} uses {parts.scheme}:// but tls.enabled is "
                                       f"{str(tls.enabled).lower()}",
                      "use wss:// with tls.enabled: true, ws:// without TLS")
        return WebSocketConfig(name=name, tls=tls, role=role, url=url)

    def socket_path(self, m: _Map) -> Path | None:
        text = m.text("socket", "write a socket path, e.g. /tmp/usp-conformance/agent.sock")
        if text is None:
            return None
        path = self.base / Path(text).expanduser()
        if len(str(path).encode()) > 107:
            self.fail(m.values["socket"], f"{m.sub('socket')} {str(path)!r} is longer than a "
                                          "Unix socket path may be (107 bytes)",
                      "use a shorter path, e.g. under /tmp")
        return path

    def default_mtp(self, top: _Map, mtps: tuple[MTPConfig, ...]) -> str:
        names = [m.name for m in mtps]
        value = top.text("default_mtp", f"write the name of an mtps entry: {', '.join(names)}")
        if value is None:
            return names[0]
        if value not in names:
            self.fail(top.values["default_mtp"], f"default_mtp {value!r} names no mtps entry"
                                                 f"{_did_you_mean(value, names)}",
                      f"use one of: {', '.join(names)}")
        return value

    def controllers(self, top: _Map, eut: EUTInfo) -> Controllers:
        node = top.need("controllers", "add controllers: {primary: {endpoint_id: ...}} naming "
                                       "a controller the EUT trusts")
        m = top.child("controllers", node, CONTROLLER_ROLES,
                      hint="write controllers: with primary, secondary, unknown")
        ids: dict[str, tuple[str, Node]] = {}
        found: dict[str, ControllerIdentity] = {}
        for role in CONTROLLER_ROLES:
            if role == "primary":
                cnode = m.need(role, "add primary: {endpoint_id: <a controller the EUT knows>}")
            else:
                cnode = m.get(role)
                if cnode is None:
                    continue
            c = m.child(role, cnode, ("endpoint_id", "certificate", "key", "topic"),
                        hint=f"write {role}: {{endpoint_id: proto::controller-x}}")
            eid = self.endpoint_id(c, "endpoint_id", "write a controller Endpoint ID, "
                                                     "e.g. proto::controller-1")
            if eid == eut.endpoint_id:
                self.fail(c.values["endpoint_id"], f"controllers.{role}.endpoint_id is the EUT's "
                                                   "own Endpoint ID", "use a controller's id")
            if eid in ids:
                self.fail(c.values["endpoint_id"], f"controllers.{role}.endpoint_id {eid!r} is "
                                                   f"also the {ids[eid][0]} controller's",
                          "give every identity its own Endpoint ID")
            ids[eid] = (role, c.values["endpoint_id"])
            fix_file = "name an existing PEM file (relative to the profile)"
            cert, key = c.file("certificate", fix_file), c.file("key", fix_file)
            if (cert is None) != (key is None):
                self.fail(c.anchor,
                          f"controllers.{role} needs both certificate and key, or neither",
                          "add the missing one")
            topic = c.text("topic", "write the MQTT topic / STOMP destination of this identity")
            found[role] = ControllerIdentity(role, eid, cert, key, topic)
        for role, default in (("secondary", DEFAULT_SECONDARY), ("unknown", DEFAULT_UNKNOWN)):
            if role not in found:
                if default in ids or default == eut.endpoint_id:
                    self.fail(m.anchor, f"controllers.{role} is missing and its default "
                                      f"{default!r} is taken", f"add controllers.{role}")
                found[role] = ControllerIdentity(role, default)
        return Controllers(found["primary"], found["secondary"], found["unknown"])

    def timeouts(self, top: _Map) -> Timeouts:
        node = top.get("timeouts")
        if node is None:
            return Timeouts()
        m = top.child("timeouts", node, ("response", "notification", "reconnect", "tolerance"),
                      hint="write timeouts: {response: 10, notification: 30, reconnect: 120}")
        d = Timeouts()
        fix = "write seconds, e.g. 10"
        return Timeouts(response=m.number("response", fix, default=d.response),
                        notification=m.number("notification", fix, default=d.notification),
                        reconnect=m.number("reconnect", fix, default=d.reconnect),
                        tolerance=m.number("tolerance", fix, default=d.tolerance, positive=False))

    def reboot(self, top: _Map, timeouts: Timeouts, agent: AgentSettings) -> RebootMethod:
        node = top.get("reboot")
        if node is None:
            return RebootMethod(reconnect_timeout=timeouts.reconnect)
        m = top.child("reboot", node, ("method", "command", "reconnect_timeout"),
                      hint="write reboot: {method: usp|command|operator}")
        method = m.choice("method", REBOOT_METHODS, "write method: usp (Device.Reboot()), command "
                                                    "(a shell command) or operator (ask a person)",
                          default="usp")
        command = m.text("command", "write the shell command that reboots the EUT, "
                                    "e.g. ssh root@192.0.2.1 reboot",
                         required=method == "command")
        if command is not None:
            if method != "command":
                self.fail(m.keys["command"], "reboot.command is only used with method: command",
                          "add method: command or remove command")
            try:
                shlex.split(command)
            except ValueError as exc:
                self.fail(m.values["command"], f"reboot.command cannot be split into words ({exc})",
                          "balance the quotes")
        if agent.builtin and method != "usp":
            self.fail(m.values.get("method", m.anchor), "the built-in agent reboots through "
                                                    "Device.Reboot()", "write method: usp")
        timeout = m.number("reconnect_timeout", "write seconds, e.g. 180",
                           default=timeouts.reconnect)
        return RebootMethod(method, command, timeout)

    def firmware(self, top: _Map) -> FirmwareSettings:
        node = top.get("firmware")
        if node is None:
            return FirmwareSettings()
        m = top.child("firmware", node, ("image", "url", "version"),
                      hint="write firmware: {image: fw.bin, version: 2.0.0} or {url: http://...}")
        image = m.file("image", "name the firmware file the suite should serve")
        url = m.text("url", "write an http://, https:// or ftp:// URL the EUT can download")
        if url is not None and urlsplit(url).scheme not in ("http", "https", "ftp", "ftps", "file"):
            self.fail(m.values["url"], f"firmware.url {url!r} is not a download URL",
                      "write an http://, https:// or ftp:// URL")
        if image is not None and url is not None:
            self.fail(m.anchor, "firmware names both image and url", "keep one of them")
        return FirmwareSettings(image=image, url=url,
                                version=m.text("version", "write the image's version, e.g. 2.0.0"))

    def feature_checks(self, top: _Map, features: tuple[int, ...],
                       mtps: tuple[MTPConfig, ...], *, builtin: bool) -> None:
        for feat, (kind, version) in _FEATURE_MTP.items():
            if feat not in features or (builtin and kind == "mqtt"):
                continue  # the built-in agent's version is a data model value the runner sets
            ok = any(m.kind == kind and (version is None or getattr(m, "version", None) == version)
                     for m in mtps)
            if not ok:
                what = f"{kind} {version}" if version else kind
                self.warn(top.values["features"], f"feature {feat} ({FEATURES[feat]}) is listed "
                                                  f"but no {what} MTP is configured; its cases "
                                                  "cannot run")


def _usp_text(value: object, raw: str) -> str:
    """A YAML scalar as USP text: booleans lower-case, other scalars as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return raw
