"""Firmware management of the reference Agent: ``Device.DeviceInfo.FirmwareImage.{i}.``
Download() and Activate(), and what happens to the images at boot.

TR-181 Device:2 FirmwareImage, TR-369 "Firmware Management of Devices with
USP Agents"; TP-469 9.3 to 9.8.

Download() (asynchronous) fetches the file (:mod:`.transfer`: ``file://``
or loopback ``http(s)://``), moves the image's Status through
``Downloading`` -> ``Validating`` -> ``Available`` (or ``DownloadFailed`` /
``ValidationFailed``), verifies ``CheckSum`` with ``CheckSumAlgorithm`` when
given (TP-469 9.6), installs the image (Name, Version, Available=true,
BootFailureLog cleared) and raises ``Device.LocalAgent.TransferComplete!``
with the outcome. ``FileSize`` is only a hint (TR-181: an inaccurate value
must not fail the download) but a size beyond :data:`MAX_IMAGE_SIZE` is
refused up front. With ``AutoActivate`` the image is activated as soon as it
is installed. While other images exist, the active one is not overwritten
(TP-469 9.7 lets a multi-bank agent refuse).

The reference firmware image format: a file whose first lines may be
``key=value`` headers; ``version=`` gives the Version and ``name=`` the
Name. Without a ``version`` header the version is taken from the file name
(``fw-2.1.0.bin`` -> ``2.1.0``); a file with neither fails validation.

Activate() (asynchronous) takes one to five ``TimeWindow.{i}.`` (Start/End
offsets in seconds from the Operate, Mode) and activates at the start of the
first usable window (``ConfirmationNeeded`` windows are never usable: the
reference agent has no user to ask). Activating means pointing
``DeviceInfo.BootFirmwareImage`` at the image and rebooting through
``services.reboot(cause="RemoteReboot", command_key=...)`` once the
OperationComplete is out.

At boot the runtime calls :func:`boot_firmware`, which "boots" the image
``BootFirmwareImage`` names: ``ActiveFirmwareImage``, ``SoftwareVersion``
and the images' Status follow, and the return value is the Boot! event's
``FirmwareUpdated`` argument. :func:`install_factory_images` creates the
static image table (one active image, empty banks) when it is empty.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from conformance.agent.commands import base, transfer
from conformance.agent.commands.base import (
    CommandFailed,
    Implementation,
    Invocation,
    Outputs,
)
from conformance.agent.context import AgentState
from conformance.agent.datamodel.store import Store, StoreError
from conformance.agent.faults import register
from conformance.usp import errors

__all__ = [
    "ACTIVATE",
    "DOWNLOAD",
    "IMAGE_TABLE",
    "MAX_IMAGE_SIZE",
    "TimeWindow",
    "boot_firmware",
    "image_identity",
    "install_factory_images",
    "time_windows",
    "verify_checksum",
]

IMAGE_TABLE = "Device.DeviceInfo.FirmwareImage."
DEVICE_INFO = "Device.DeviceInfo."
#: Largest image the agent accepts (bytes).
MAX_IMAGE_SIZE = 64 * 1024 * 1024
#: Seconds a Download() transfer may take.
DOWNLOAD_TIMEOUT = 120.0
MAX_TIME_WINDOWS = 5

_HASHES = {"SHA-1": "sha1", "SHA-224": "sha224", "SHA-256": "sha256", "SHA-384": "sha384",
           "SHA-512": "sha512"}
_HASH_BY_OCTETS = {20: "SHA-1", 28: "SHA-224", 32: "SHA-256", 48: "SHA-384", 64: "SHA-512"}
_HEADER = re.compile(r"([A-Za-z][A-Za-z0-9_-]{0,31})[ \t]*=[ \t]*(.*)")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+~-]{0,63}")
_VERSION_IN_NAME = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_INSTALLED = ("Available", "Active")
_UNKNOWN_TIME = "0001-01-01T00:00:00Z"

register("firmware.checksum_ignored", "TP-469 9.6",
         "installs a downloaded image without checking its CheckSum")
register("firmware.no_transfer_complete", "TP-469 9.3",
         "never raises TransferComplete! after a firmware Download()")
register("firmware.auto_activate_ignored", "TP-469 9.3",
         "does not activate a downloaded image although AutoActivate is true")
register("firmware.activate_no_reboot", "TP-469 9.4",
         "completes Activate() (and AutoActivate) without rebooting into the image")
register("firmware.boot_ignores_boot_image", "TP-469 9.3",
         "boots the previous image instead of the one BootFirmwareImage names")


# --- pure helpers ----------------------------------------------------------------------


def image_identity(data: bytes, file_name: str = "") -> tuple[str, str]:
    """(Name, Version) of a reference firmware image; ``ValueError`` when there is no version."""
    head = data[:4096].decode("utf-8", "replace")
    fields: dict[str, str] = {}
    for line in head.splitlines()[:32]:
        match = _HEADER.fullmatch(line.strip())
        if match is None:
            break
        fields.setdefault(match[1].lower(), match[2].strip())
    version = fields.get("version", "")
    if not version:
        found = _VERSION_IN_NAME.search(file_name)
        version = found.group(0) if found else ""
    if not _VERSION.fullmatch(version):
        raise ValueError("the image carries no usable version (version= header or file name)")
    name = fields.get("name") or file_name or "firmware"
    name = "".join(c for c in name if c.isprintable())[:64] or "firmware"
    return name, version


def verify_checksum(data: bytes, algorithm: str, checksum: str) -> str | None:
    """``None`` when ``data`` matches ``checksum`` (or none is given), else the problem."""
    if not checksum:
        return None  # TR-181: an empty CheckSum means no validation
    if not algorithm:
        algorithm = _HASH_BY_OCTETS.get(len(checksum) // 2, "")
    name = _HASHES.get(algorithm)
    if name is None:
        return f"unsupported checksum algorithm {algorithm!r}"
    digest = hashlib.new(name, data).hexdigest()
    if digest != checksum.strip().lower():
        return f"{algorithm} checksum mismatch"
    return None


@dataclass(frozen=True)
class TimeWindow:
    """One ``TimeWindow.{i}.`` of Activate()."""

    start: int
    end: int
    mode: str
    user_message: str = ""
    max_retries: int = 0


def time_windows(args: Mapping[str, str], max_windows: int = MAX_TIME_WINDOWS) -> list[TimeWindow]:
    """The time windows in instance order; ``CommandFailed`` (7027) when inconsistent."""
    numbers: set[int] = set()
    for key in args:
        head, _, rest = key.partition(".")
        number, _, _leaf = rest.partition(".")
        if head == "TimeWindow" and number.isdigit():
            numbers.add(int(number))
    windows: list[TimeWindow] = []
    for n in sorted(numbers):
        prefix = f"TimeWindow.{n}."
        try:
            start, end = int(args[prefix + "Start"]), int(args[prefix + "End"])
            mode = args[prefix + "Mode"]
            retries = int(args.get(prefix + "MaxRetries", "0") or "0")
        except (KeyError, ValueError) as exc:
            raise CommandFailed(errors.INVALID_COMMAND_ARGUMENTS,
                                f"{prefix} is incomplete or invalid ({exc})") from None
        if end < start:
            raise CommandFailed(errors.INVALID_COMMAND_ARGUMENTS, f"{prefix}End is before its Start")
        if windows and start < windows[-1].end:
            raise CommandFailed(errors.INVALID_COMMAND_ARGUMENTS,
                                f"{prefix} overlaps the previous time window")
        windows.append(TimeWindow(start, end, mode, args.get(prefix + "UserMessage", ""), retries))
    if not windows:
        raise CommandFailed(errors.INVALID_COMMAND_ARGUMENTS, "Activate() needs a TimeWindow")
    if len(windows) > max_windows:
        raise CommandFailed(errors.INVALID_COMMAND_ARGUMENTS,
                            f"at most {max_windows} time windows are supported")
    return windows


def _timestamp(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ref(path: str) -> str:
    """Reference value of an instance (no trailing dot)."""
    return path.rstrip(".")


def _inst(ref: str) -> str:
    return ref.strip().rstrip(".") + "." if ref.strip() else ""


# --- data model helpers --------------------------------------------------------------


def _get(store: Store, path: str, default: str = "") -> str:
    try:
        return store.get(path)
    except StoreError:
        return default


def _update(store: Store, image: str, **values: str) -> None:
    for name, value in values.items():
        store.set(image + name, value)


def _is_active(store: Store, image: str) -> bool:
    return _inst(_get(store, DEVICE_INFO + "ActiveFirmwareImage")) == image or \
        _get(store, image + "Status") == "Active"


# --- Download() ------------------------------------------------------------------------


def _download_precheck(inv: Invocation) -> None:
    store, image = inv.store, inv.obj_path
    inv.services  # noqa: B018 - fails the command early when the agent has no runtime
    try:
        transfer.parse_source_url(inv.arg("URL"), allow_remote=True)
    except transfer.TransferError as exc:
        raise CommandFailed(errors.INVALID_COMMAND_ARGUMENTS, exc.message) from None
    if _get(store, image + "Status") in ("Downloading", "Validating"):
        raise CommandFailed(errors.RESOURCES_EXCEEDED, f"{image} is already being downloaded")
    if len(store.instances(IMAGE_TABLE)) > 1 and _is_active(store, image):
        raise CommandFailed(errors.COMMAND_FAILURE,
                            f"{image} is the active firmware image; download into an inactive one")
    if inv.int_arg("FileSize") > MAX_IMAGE_SIZE:
        raise CommandFailed(errors.RESOURCES_EXCEEDED,
                            f"not enough space for {inv.int_arg('FileSize')} bytes")


def _transfer_complete(inv: Invocation, started: float, completed: float | None,
                       fault: tuple[int, str] | None = None) -> None:
    """Raise Device.LocalAgent.TransferComplete! (TR-181) for this Download()."""
    notes = inv.notifications
    if notes is None or inv.fault("firmware.no_transfer_complete"):
        return
    code, text = fault or (0, "")
    notes.event("Device.LocalAgent.", "TransferComplete!", {
        "Command": inv.executed_command, "CommandKey": inv.command_key,
        "Requestor": inv.originator, "TransferType": "Download", "Affected": inv.obj_path,
        "TransferURL": inv.arg("URL"), "StartTime": _timestamp(started),
        "CompleteTime": _UNKNOWN_TIME if completed is None else _timestamp(completed),
        "FaultCode": str(code), "FaultString": text[:256]})


async def download(inv: Invocation) -> Outputs:
    """FirmwareImage.{i}.Download()."""
    store, image = inv.store, inv.obj_path
    started = inv.state.clock()
    before = {n: _get(store, image + n) for n in ("Status", "Name", "Version")}
    _update(store, image, Status="Downloading", Name="", Version="")
    try:
        source = transfer.parse_source_url(inv.arg("URL"))
        data = await transfer.fetch(source, username=inv.arg("Username"),
                                    password=inv.arg("Password"), timeout=DOWNLOAD_TIMEOUT,
                                    max_size=MAX_IMAGE_SIZE)
    except transfer.TransferError as exc:
        _update(store, image, Status="DownloadFailed")
        _transfer_complete(inv, started, None, (errors.COMMAND_FAILURE, exc.message))
        raise CommandFailed(errors.COMMAND_FAILURE, f"download failed: {exc.message}") from None
    except asyncio.CancelledError:  # canceled: the previous image was never overwritten
        _update(store, image, **before)
        _transfer_complete(inv, started, None, (errors.COMMAND_CANCELED, "transfer canceled"))
        raise
    received = inv.state.clock()
    _update(store, image, Status="Validating")
    problem = None
    if not inv.fault("firmware.checksum_ignored"):
        problem = verify_checksum(data, inv.arg("CheckSumAlgorithm"), inv.arg("CheckSum"))
    try:
        name, version = image_identity(data, source.file_name)
    except ValueError as exc:
        problem = problem or str(exc)
        name = version = ""
    if problem:
        _update(store, image, Status="ValidationFailed")
        _transfer_complete(inv, started, received, (errors.COMMAND_FAILURE, problem))
        raise CommandFailed(errors.COMMAND_FAILURE, f"validation failed: {problem}")
    _update(store, image, Name=name, Version=version, Available="true", BootFailureLog="",
            Status="Available")
    _transfer_complete(inv, started, received)
    if inv.bool_arg("AutoActivate") and not inv.fault("firmware.auto_activate_ignored"):
        _activate(inv)
    return {}


# --- Activate() ------------------------------------------------------------------------


def _max_windows(store: Store) -> int:
    try:
        advertised = int(_get(store, DEVICE_INFO + "MaxNumberOfActivateTimeWindows", "0"))
    except ValueError:
        advertised = 0
    return min(advertised, MAX_TIME_WINDOWS) if advertised > 0 else MAX_TIME_WINDOWS


def _activate_precheck(inv: Invocation) -> None:
    inv.services  # noqa: B018 - fails the command early when the agent has no runtime
    time_windows(inv.args, _max_windows(inv.store))
    status = _get(inv.store, inv.obj_path + "Status")
    if status not in _INSTALLED or _get(inv.store, inv.obj_path + "Available") not in ("true", "1"):
        raise CommandFailed(errors.COMMAND_FAILURE,
                            f"{inv.obj_path} holds no available image (Status {status})")


def _activate(inv: Invocation) -> None:
    """Make the image the boot image and reboot after the OperationComplete."""
    store, image = inv.store, inv.obj_path
    status = _get(store, image + "Status")
    if status not in _INSTALLED or _get(store, image + "Available") not in ("true", "1"):
        store.set(image + "BootFailureLog", f"activation refused: image Status is {status}")
        raise CommandFailed(errors.COMMAND_FAILURE, f"{image} cannot be activated ({status})")
    services = inv.services
    store.set(DEVICE_INFO + "BootFirmwareImage", _ref(image))
    if not inv.fault("firmware.activate_no_reboot"):
        inv.defer(lambda: services.reboot(cause="RemoteReboot", command_key=inv.command_key))


async def activate(inv: Invocation) -> Outputs:
    """FirmwareImage.{i}.Activate(): activate at the start of the first usable window."""
    windows = time_windows(inv.args, _max_windows(inv.store))
    for window in windows:
        if window.mode == "ConfirmationNeeded":
            continue  # no way to ask a user: this window must not be used
        elapsed = inv.state.clock() - inv.started_at
        if elapsed > window.end:
            continue
        await base.sleep(window.start - elapsed)
        _activate(inv)
        return {}
    raise CommandFailed(errors.COMMAND_FAILURE, "no time window allowed the activation")


# --- boot ------------------------------------------------------------------------------


def boot_firmware(state: AgentState) -> bool:
    """Boot the image BootFirmwareImage names; return Boot!'s FirmwareUpdated.

    Called by the runtime when the agent starts. An image that is not
    installed and available is not booted: the agent stays on its current
    image and records why in that image's BootFailureLog (TR-369 firmware
    appendix: BootFirmwareImage itself is left unchanged).
    """
    store = state.store
    if state.faults.on("firmware.boot_ignores_boot_image"):
        return False
    target = _inst(_get(store, DEVICE_INFO + "BootFirmwareImage"))
    active = _inst(_get(store, DEVICE_INFO + "ActiveFirmwareImage"))
    if not target or target == active or not target.startswith(IMAGE_TABLE) \
            or not store.exists(target):
        return False
    status = _get(store, target + "Status")
    if status not in _INSTALLED or _get(store, target + "Available") not in ("true", "1"):
        store.set(target + "BootFailureLog", f"not bootable: Status {status}")
        return False
    if active and store.exists(active) and _get(store, active + "Status") == "Active":
        store.set(active + "Status", "Available")
    _update(store, target, Status="Active", BootFailureLog="")
    store.set(DEVICE_INFO + "ActiveFirmwareImage", _ref(target))
    store.set(DEVICE_INFO + "SoftwareVersion", _get(store, target + "Version"))
    return True


def install_factory_images(store: Store, *, version: str, name: str = "factory",
                           banks: int = 2) -> list[str]:
    """Create the image table when empty: bank 1 active with ``version``, others empty."""
    if store.instances(IMAGE_TABLE):
        return store.instances(IMAGE_TABLE)
    created: list[str] = []
    for bank in range(1, max(1, banks) + 1):
        values = {"Alias": f"cpe-{bank}", "Available": "false", "Status": "NoImage"}
        if bank == 1:
            values.update(Name=name, Version=version, Available="true", Status="Active")
        created.append(store.add(IMAGE_TABLE, values))
    store.set(DEVICE_INFO + "ActiveFirmwareImage", _ref(created[0]))
    store.set(DEVICE_INFO + "BootFirmwareImage", _ref(created[0]))
    store.set(DEVICE_INFO + "SoftwareVersion", version)
    store.set(DEVICE_INFO + "MaxNumberOfActivateTimeWindows", str(MAX_TIME_WINDOWS))
    return created


DOWNLOAD = Implementation(download, precheck=_download_precheck,
                          notes="file:// and loopback http(s) sources")
ACTIVATE = Implementation(activate, precheck=_activate_precheck,
                          notes="time windows; reboots into the image")
