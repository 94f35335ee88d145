"""GetSupportedDM handler of the reference Agent (TR-369 "The GetSupportedDM Message").

Each requested path gets its own ``RequestedObjectResult`` (TP-469 1.72-1.77,
1.97-1.99, 1.105-1.107):

* paths may be in supported form (``...Subscription.{i}.``, or without the
  final ``{i}.``), or instantiated (``...Controller.1.MTP.``, wildcards,
  expressions, reference following); an instantiated address must exist
  (``7016``), anything the supported data model lacks is ``7026`` and an
  unparsable path ``7008``. An object path written without its final dot
  (``Device.LocalAgent.Subscription``, as TP-469 1.99 sends it) is read as
  that object;
* an object path reports the object and, with ``first_level_only`` false,
  every object below it (``Device.`` reports the whole model), each with the
  parameters, commands, events and unique key sets the ``return_*`` flags
  ask for. With ``first_level_only`` true only the immediate child objects
  follow, without parameters, commands or events (their unique key sets are
  still given when asked for, as in the TR-369 example);
* a parameter, command or event path reports its owning object with just
  that element; the flags do not apply;
* ``supported_obj_path`` is in supported form; ``writeOnceReadOnly`` is
  ``PARAM_READ_WRITE``; argument names are relative, in supported form;
  there are no divergent paths in this agent.

Permissions (R-GSP.0): an object without ``Obj`` read, a parameter without
``Param`` read, and a command or event without ``CommandEvent`` read are
treated as absent: ``7026`` when the path names them, left out otherwise (a
unique key set is left out when one of its parameters is unreadable).
Checks use supported-form paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.agent.context import Access, AgentState, RequestContext
from conformance.agent.datamodel.defs import (
    CommandDef,
    DataModel,
    EventDef,
    ObjectDef,
    ParamDef,
    cmd_type,
    obj_access_type,
    param_access_type,
    param_value_type,
    value_change_type,
)
from conformance.agent.datamodel.resolve import ResolveError, resolve
from conformance.agent.faults import register
from conformance.agent.messages.get import resolve_search
from conformance.usp import errors, messages, paths
from conformance.usp.paths import Expression, InstanceNumber, PathKind
from conformance.usp.schema import Msg, msg_pb2

__all__ = ["DATA_MODEL_URI", "Flags", "Target", "find_target", "handle_get_supported_dm",
           "supported_objects"]

#: ``data_model_inst_uri`` of every result: the TR-181 release the model is built on.
DATA_MODEL_URI = "urn:broadband-forum-org:tr-181-2-16-0-usp"

_GSDM = msg_pb2.GetSupportedDMResp

register("gsdm.async_as_sync", "TP-469 1.72/1.97 (CmdType)",
         "reports asynchronous commands as CMD_SYNC")
register("gsdm.no_unique_key_sets", "TP-469 1.99/1.72",
         "leaves out unique_key_sets even when return_unique_key_sets is true")
register("gsdm.wrong_access", "TP-469 1.72 (ObjAccessType)",
         "reports every object as OBJ_READ_ONLY, add/delete tables included")
register("gsdm.ignore_first_level_only", "TP-469 1.73/1.74",
         "reports the whole sub-tree even when first_level_only is true")
register("gsdm.child_details", "TP-469 1.73/1.75",
         "gives child objects parameters, commands and events when first_level_only is true")
register("gsdm.ignore_return_flags", "TP-469 1.74",
         "returns parameters, commands, events and unique key sets whatever the return_* flags say")
register("gsdm.absolute_arg_names", "TP-469 1.97/1.98",
         "reports command and event argument names as absolute paths instead of relative ones")
register("gsdm.no_placeholder", "TP-469 1.72/1.76 (supported_obj_path)",
         "reports supported_obj_path without the {i} placeholders")
register("gsdm.error_message", "TP-469 1.77",
         "answers an unsupported path with an Error message instead of a GetSupportedDMResp")
register("gsdm.leaf_returns_object", "TP-469 1.105-1.107",
         "answers a parameter, command or event path with everything its object supports")
register("gsdm.param_unknown_type", "TP-469 1.72/1.73/1.75/1.76 (SupportedParamResult)",
         "leaves value_type and value_change at PARAM_UNKNOWN / VALUE_CHANGE_UNKNOWN, "
         "as an agent older than USP 1.2 would")
register("gsdm.event_no_args", "TP-469 1.98/1.72 (SupportedEventResult arg_names)",
         "reports every event without its arguments (empty arg_names)")
register("gsdm.merged_unique_key_sets", "TP-469 1.99/1.72/1.75 (SupportedUniqueKeySet)",
         "reports one unique key set holding every unique key parameter instead of one set "
         "per unique key")


@dataclass(frozen=True)
class Flags:
    """The request's ``first_level_only`` and ``return_*`` fields."""

    first_level_only: bool = False
    commands: bool = False
    events: bool = False
    params: bool = False
    unique_key_sets: bool = False

    @classmethod
    def everything(cls, first_level_only: bool = False) -> Flags:
        return cls(first_level_only, True, True, True, True)


@dataclass(frozen=True)
class Target:
    """What one requested path names: an object, or one element of it."""

    obj: ObjectDef
    member: ParamDef | CommandDef | EventDef | None = None


def _parse(text: str) -> paths.Path:
    try:
        return paths.parse_path(text)
    except paths.PathError as exc:
        raise ResolveError(errors.INVALID_PATH_SYNTAX, f"{text!r}: {exc.reason}") from None


def _lookup(dm: DataModel, path: paths.Path, text: str) -> Target:
    found = dm.find(str(paths.to_supported_path(path)))
    if found is None:
        raise ResolveError(errors.INVALID_PATH, f"{text!r} is not in the supported data model")
    if isinstance(found, ObjectDef):
        return Target(found)
    owner = dm.find_object(found.path)
    assert owner is not None
    return Target(owner, found)


def find_target(state: AgentState, access: Access, text: str) -> Target:
    """The definition a GetSupportedDM path names; :class:`ResolveError` with the USP code."""
    dm = state.dm
    path = _parse(text)
    if path.kind is PathKind.PARAMETER and not path.has_reference_following \
            and dm.find(text) is None and isinstance(dm.find(text + "."), ObjectDef):
        path = _parse(text + ".")  # an object path missing its final dot (TP-469 1.99)
    if path.has_reference_following:
        res = resolve(state.store, text)
        if res.object_def is None or not res.objects:
            raise ResolveError(errors.OBJECT_DOES_NOT_EXIST, f"{text!r} references no object")
        obj = res.object_def
        member: ParamDef | CommandDef | EventDef | None = None
        if res.leaf is not None:
            member = obj.params.get(res.leaf) or obj.commands.get(res.leaf) \
                or obj.events.get(res.leaf)
        target = Target(obj, member)
    else:
        target = _lookup(dm, path, text)
        if any(isinstance(s, (InstanceNumber, Expression)) for s in path.segments):
            # a numbered instance must exist (7016); an expression is a search, as in Get
            resolve_search(state.store, str(path), path)
    if not access.allows("Obj", target.obj.path, "r") or (
            target.member is not None and not _member_readable(access, target.member)):
        raise ResolveError(errors.INVALID_PATH, f"{text!r} is not in the supported data model")
    return target


def _member_readable(access: Access, member: ParamDef | CommandDef | EventDef) -> bool:
    if isinstance(member, ParamDef):
        return access.allows("Param", member.path, "r")
    return access.allows("CommandEvent", member.path, "r")


def supported_objects(state: AgentState, access: Access, target: Target,
                      flags: Flags) -> list[msg_pb2.GetSupportedDMResp.SupportedObjectResult]:
    """The ``supported_objs`` of one RequestedObjectResult."""
    faults = state.faults
    if target.member is not None and not faults.on("gsdm.leaf_returns_object"):
        result = _object_result(state, target.obj)
        member = target.member
        if isinstance(member, ParamDef):
            _add_param(state, result, member)
        elif isinstance(member, CommandDef):
            _add_command(state, result, member)
        else:
            _add_event(state, result, member)
        return [result]
    if target.member is not None:
        flags = Flags.everything(first_level_only=True)
    if faults.on("gsdm.ignore_return_flags"):
        flags = Flags.everything(flags.first_level_only)
    first_level_only = flags.first_level_only and not faults.on("gsdm.ignore_first_level_only")
    children = state.dm.children(target.obj.path, first_level_only=first_level_only)
    out = []
    for obj in (target.obj, *children):
        if obj is not target.obj and not access.allows("Obj", obj.path, "r"):
            continue  # R-GSP.0
        detailed = obj is target.obj or not first_level_only or faults.on("gsdm.child_details")
        out.append(_describe(state, access, obj, flags, detailed))
    return out


def _object_result(state: AgentState, obj: ObjectDef) -> msg_pb2.GetSupportedDMResp.SupportedObjectResult:
    path = obj.path.replace("{i}.", "") if state.faults.on("gsdm.no_placeholder") else obj.path
    result = _GSDM.SupportedObjectResult(supported_obj_path=path,
                                         is_multi_instance=obj.multi_instance)
    if not state.faults.on("gsdm.wrong_access"):  # the fault leaves OBJ_READ_ONLY (0)
        result.access = obj_access_type(obj)  # type: ignore[assignment]
    return result


def _describe(state: AgentState, access: Access, obj: ObjectDef, flags: Flags,
              detailed: bool) -> msg_pb2.GetSupportedDMResp.SupportedObjectResult:
    result = _object_result(state, obj)
    if detailed and flags.params:
        for param in obj.params.values():
            if access.allows("Param", param.path, "r"):
                _add_param(state, result, param)
    if detailed and flags.commands:
        for command in obj.commands.values():
            if access.allows("CommandEvent", command.path, "r"):
                _add_command(state, result, command)
    if detailed and flags.events:
        for event in obj.events.values():
            if access.allows("CommandEvent", event.path, "r"):
                _add_event(state, result, event)
    if flags.unique_key_sets and not state.faults.on("gsdm.no_unique_key_sets"):
        keys = [key for key in obj.unique_keys
                if all(access.allows("Param", obj.path + name, "r") for name in key)]
        if keys and state.faults.on("gsdm.merged_unique_key_sets"):
            keys = [tuple(name for key in keys for name in key)]
        for key in keys:
            result.unique_key_sets.add(key_names=key)
    return result


def _add_param(state: AgentState, result: msg_pb2.GetSupportedDMResp.SupportedObjectResult,
               param: ParamDef) -> None:
    entry = result.supported_params.add(param_name=param.name, access=param_access_type(param))
    if not state.faults.on("gsdm.param_unknown_type"):  # the fault leaves both at 0 (UNKNOWN)
        entry.value_type = param_value_type(param)  # type: ignore[assignment]
        entry.value_change = value_change_type(param)  # type: ignore[assignment]


def _arg_names(state: AgentState, owner: str, names: tuple[str, ...]) -> list[str]:
    if state.faults.on("gsdm.absolute_arg_names"):
        return [f"{owner}.{name}" for name in names]
    return list(names)


def _add_command(state: AgentState, result: msg_pb2.GetSupportedDMResp.SupportedObjectResult,
                 command: CommandDef) -> None:
    kind = _GSDM.CMD_SYNC if state.faults.on("gsdm.async_as_sync") else cmd_type(command)
    result.supported_commands.add(
        command_name=command.name, command_type=kind,
        input_arg_names=_arg_names(state, command.path, command.input_arg_names),
        output_arg_names=_arg_names(state, command.path, command.output_arg_names))


def _add_event(state: AgentState, result: msg_pb2.GetSupportedDMResp.SupportedObjectResult,
               event: EventDef) -> None:
    names = () if state.faults.on("gsdm.event_no_args") else event.arg_names
    result.supported_events.add(event_name=event.name,
                                arg_names=_arg_names(state, event.path, names))


def handle_get_supported_dm(state: AgentState, ctx: RequestContext) -> Msg:
    """Answer a GetSupportedDM with one RequestedObjectResult per requested path."""
    req = ctx.msg.body.request.get_supported_dm
    flags = Flags(req.first_level_only, req.return_commands, req.return_events,
                  req.return_params, req.return_unique_key_sets)
    resp = _GSDM()
    for text in req.obj_paths:
        result = resp.req_obj_results.add(req_obj_path=text)
        try:
            target = find_target(state, ctx.access, text)
        except ResolveError as exc:
            if state.faults.on("gsdm.error_message"):
                return messages.error(exc.code, exc.message, msg_id=ctx.msg_id,
                                      param_errs=[(text, exc.code, exc.message)])
            result.err_code, result.err_msg = exc.code, exc.message
            continue
        result.data_model_inst_uri = DATA_MODEL_URI
        result.supported_objs.extend(supported_objects(state, ctx.access, target, flags))
    return messages.response("get_supported_dm_resp", resp, msg_id=ctx.msg_id)
