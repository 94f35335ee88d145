"""Notify request Msgs (TR-369 "The Notify Message") and the data they carry.

Builders for each ``Notify.notification`` kind, plus what the agent reads to
fill them: the unique keys of a new instance (ObjectCreation), the Boot!
``ParameterMap`` of one Controller (TR-181 ``Controller.{i}.BootParameter.{i}.``)
and the OnBoardRequest device identity (``Device.DeviceInfo.``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

from conformance.agent.datamodel.resolve import ResolveError, resolve
from conformance.agent.datamodel.store import Store, StoreError
from conformance.agent.notify.model import parse_bool
from conformance.usp import messages
from conformance.usp.schema import Msg, msg_pb2

Notify = msg_pb2.Notify


def to_msg(notify: Notify, msg_id: str) -> Msg:
    """Wrap a Notify in a request Msg (header.msg_type NOTIFY)."""
    return messages.request("notify", notify, msg_id=msg_id)


def _base(subscription_id: str, send_resp: bool) -> Notify:
    return Notify(subscription_id=subscription_id, send_resp=send_resp)


def value_change(subscription_id: str, send_resp: bool, param_path: str, value: str) -> Notify:
    """ValueChange: the changed parameter and its new value."""
    n = _base(subscription_id, send_resp)
    n.value_change.param_path = param_path
    n.value_change.param_value = value
    return n


def object_creation(subscription_id: str, send_resp: bool, obj_path: str,
                    unique_keys: Mapping[str, str]) -> Notify:
    """ObjectCreation: the new instance and its unique key values."""
    n = _base(subscription_id, send_resp)
    n.obj_creation.obj_path = obj_path
    n.obj_creation.unique_keys.update(unique_keys)
    n.obj_creation.SetInParent()
    return n


def object_deletion(subscription_id: str, send_resp: bool, obj_path: str) -> Notify:
    """ObjectDeletion: the deleted instance."""
    n = _base(subscription_id, send_resp)
    n.obj_deletion.obj_path = obj_path
    return n


def event(subscription_id: str, send_resp: bool, obj_path: str, event_name: str,
          params: Mapping[str, str]) -> Notify:
    """Event: the object, the event name (``Boot!``) and its arguments."""
    n = _base(subscription_id, send_resp)
    n.event.obj_path = obj_path
    n.event.event_name = event_name
    n.event.params.update(params)
    return n


def operation_complete(subscription_id: str, send_resp: bool, obj_path: str, command_name: str,
                       command_key: str, *, output_args: Mapping[str, str] | None = None,
                       failure: tuple[int, str] | None = None) -> Notify:
    """OperationComplete: output arguments on success, err_code/err_msg on failure."""
    n = _base(subscription_id, send_resp)
    oc = n.oper_complete
    oc.obj_path = obj_path
    oc.command_name = command_name
    oc.command_key = command_key
    if failure is not None:
        oc.cmd_failure.err_code = failure[0]
        oc.cmd_failure.err_msg = failure[1]
    else:
        oc.req_output_args.output_args.update(output_args or {})
        oc.req_output_args.SetInParent()
    return n


def on_board_request(subscription_id: str, send_resp: bool, *, oui: str, product_class: str,
                     serial_number: str, versions: Iterable[str]) -> Notify:
    """OnBoardRequest: the device identity and the USP versions the agent supports."""
    n = _base(subscription_id, send_resp)
    ob = n.on_board_req
    ob.oui = oui
    ob.product_class = product_class
    ob.serial_number = serial_number
    ob.agent_supported_protocol_versions = ",".join(versions)
    return n


# --- data read from the store ----------------------------------------------------------


def _value(store: Store, path: str) -> str | None:
    try:
        value = store.get(path)
    except StoreError:
        return None
    pdef = store.param_def(path)
    return "" if pdef is not None and pdef.secured else value  # secured: never disclosed


def unique_keys(store: Store, inst_path: str) -> dict[str, str]:
    """Every unique key parameter of the instance with its value (TR-369 ObjectCreation)."""
    odef = store.object_def(inst_path)
    out: dict[str, str] = {}
    if odef is None:
        return out
    for key in odef.unique_keys:
        for name in key:
            value = _value(store, inst_path + name)
            if value is not None:
                out[name] = value
    return out


def device_identity(store: Store) -> tuple[str, str, str]:
    """(ManufacturerOUI, ProductClass, SerialNumber) from ``Device.DeviceInfo.``."""
    return tuple(_value(store, f"Device.DeviceInfo.{name}") or ""  # type: ignore[return-value]
                 for name in ("ManufacturerOUI", "ProductClass", "SerialNumber"))


def boot_parameter_names(store: Store, controller_path: str) -> list[str]:
    """ParameterName of each enabled BootParameter entry of one Controller."""
    names = []
    for entry in store.instances(controller_path + "BootParameter."):
        try:
            if parse_bool(store.get(entry + "Enable")):
                name = store.get(entry + "ParameterName").strip()
                if name:
                    names.append(name)
        except StoreError:
            continue
    return names


def _param_names(store: Store, obj_path: str) -> list[str]:
    odef = store.object_def(obj_path)
    return list(odef.params) if odef is not None else []


def parameter_map(store: Store, patterns: Iterable[str],
                  can_read: Callable[[str], bool] = lambda _path: True) -> str:
    """Boot! ``ParameterMap``: a JSON object of parameter path -> value.

    Each pattern may hold wildcards or search expressions in place of
    instance identifiers; an Object Path stands for the parameters of the
    objects it resolves to. Patterns that match nothing are left out
    (TR-181 BootParameter.{i}.ParameterName), as are parameters ``can_read``
    refuses.
    """
    values: dict[str, str] = {}
    for pattern in patterns:
        try:
            res = resolve(store, pattern)
        except (ResolveError, RecursionError):
            continue
        if res.leaf is not None:
            candidates = res.leaves if not res.leaf.endswith(("()", "!")) else []
        elif res.table:
            candidates = []
        else:
            candidates = [obj + name for obj in res.objects for name in _param_names(store, obj)]
        for path in candidates:
            value = _value(store, path)
            if value is not None and can_read(path):
                values[path] = value
    return json.dumps(values, separators=(",", ":"))
