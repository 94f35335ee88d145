"""Short names of the TP-469 Feature IDs, for reports.

TP-469 numbers the optional capabilities an EUT may declare (the Feature
IDs, 1..42 in TP-469 1.4); a conditional case applies only when the EUT
declares the Feature ID(s) it needs. The names below are our own short
descriptions of each ID; the numbering is TP-469's. Withdrawn IDs keep their
number so that old EUT profiles still render.
"""

from __future__ import annotations

#: Feature ID -> our short name of the capability it stands for.
FEATURE_NAMES: dict[int, str] = {
    1: "Supports a command",
    2: "Supports a command taking input arguments",
    3: "Supports an asynchronous command",
    4: "Subscription NotifExpiration parameter",
    5: "Controller:1 profile",
    6: "Subscription TimeToLive parameter",
    7: "Controller:1 profile with creatable Controller instances",
    8: "Controller SendOnBoardRequest() command",
    9: "Device.ScheduleTimer() command",
    10: "Reboot:1 profile",
    11: "(withdrawn)",
    12: "ControllerTrust:1 profile",
    13: "ControllerTrust:1 profile with writable roles or permissions",
    14: "(withdrawn)",
    15: "TLS on the MTP",
    16: "CoAP MTP (deprecated)",
    17: "STOMP MTP",
    18: "STOMPHeartbeat:1 profile",
    19: "WebSocket MTP",
    20: "(withdrawn)",
    21: "Discovery through DHCP options",
    22: "Discovery through mDNS",
    23: "Secure Message Exchange (TLS over USP Records)",
    24: "USP session context",
    25: "LocalAgent AddCertificate() command",
    26: "Firmware:1 profile",
    27: "Firmware:1 profile with the Activate() command",
    28: "Request Cancel() command",
    29: "(withdrawn)",
    30: "DeviceInfo BootFirmwareImage parameter",
    31: "At least one nested multi-instance object",
    32: "Bulk data over HTTP, JSON encoding",
    33: "Bulk data over HTTP, CSV encoding",
    34: "Bulk data through the Push! event",
    35: "MQTT 3.1.1 MTP",
    36: "MQTT 5.0 MTP",
    37: "Subscription TriggerAction and TriggerConfigSettings",
    38: "A command with input arguments",
    39: "An event with arguments",
    40: "ControllerTrust SecuredRoles",
    41: "Bulk data over MQTT",
    42: "Controller OnBoardingComplete and OnBoardingRestartTime",
}


def feature_name(feature_id: object) -> str:
    """Our name of ``feature_id``; ``"unknown Feature ID"`` for anything else."""
    if isinstance(feature_id, bool) or not isinstance(feature_id, int):
        return "unknown Feature ID"
    return FEATURE_NAMES.get(feature_id, "unknown Feature ID")
