"""Set (TR-369 "The Set Message"; TP-469 1.11-1.23, 1.96, 1.104).

Each ``update_objs`` entry resolves to objects (addresses or searches) and is
one unit: if any matched object fails (a ``required`` parameter failed, or a
unique key clashes) every change of that entry is undone (R-SET.2a). Then:

* ``allow_partial: true``: the entry reports ``oper_failure`` with one
  UpdatedInstanceFailure per failed object, the others go on (R-SET.0);
* ``allow_partial: false``: the whole message is undone and answered with an
  Error whose ``param_errs`` name the failed parameters (R-SET.1).

Parameters that fail without ``required`` are reported in the instance's
``param_errs`` while the object is still updated (the allow_partial/required
table). A search that matches nothing is an empty ``oper_success``
(R-MSG.4a, TP-469 1.23). Unique keys are checked after the unit for
``allow_partial: true`` and after the whole message for ``false`` (keys only
need to be unique once the message is processed); a clash is 7025.
Non-functional keys cannot change after creation (R-KEY.1: 7013).

Codes: 7016 missing object, 7026 path outside the supported model or a table
path (Set needs objects), 7021 for an object failed by required parameters
(its definition in the error table), 7020 for an object the store could not
update (it vanished while being written); per parameter 7010/7006/7013/7011/7012/
7014 (see :mod:`conformance.agent.messages.write`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from conformance.agent.context import AgentState, RequestContext
from conformance.agent.datamodel.resolve import ResolveError, resolve
from conformance.agent.datamodel.store import StoreError
from conformance.agent.faults import register
from conformance.agent.messages.write import (
    Batch,
    Failure,
    ParamFailure,
    Rollback,
    atomic,
    check_settings,
    conflict_failure,
    describe,
    error_msg,
    key_params,
    required_failed,
)
from conformance.usp import errors, messages, paths
from conformance.usp.paths import PathKind
from conformance.usp.schema import Msg, msg_pb2

register("set.partial_commit", "TP-469 1.15",
         "keeps the updates made before a failing object although allow_partial is false (R-SET.1)")
register("set.ignore_required", "TP-469 1.14",
         "updates the object although a required parameter failed (R-SET.2)")
register("set.no_updated_params", "TP-469 1.11",
         "leaves updated_params empty in UpdatedInstanceResult")
register("set.no_instance_failures", "TP-469 1.16",
         "reports oper_failure without its UpdatedInstanceFailure elements (R-SET.2a)")
register("set.search_no_match_error", "TP-469 1.23",
         "answers a search path that matches no object with 7016 instead of an empty "
         "oper_success (R-MSG.4a)")
register("set.mutable_nonfunctional_key", "TP-469 1.96",
         "lets a Set change a non-functional unique key such as Alias or ID (R-KEY.1)")
register("set.mutable_alias", "TP-469 1.104 / R-KEY.1",
         "lets a Set change an instance's Alias after creation (other non-functional keys stay "
         "immutable)")
register("set.not_applied", "TP-469 1.11 / R-SET.1",
         "answers a Set with success and lists the new values but never writes them")
register("set.updated_params_absolute", "TP-469 1.12",
         "uses full parameter paths instead of relative ones as updated_params keys")
register("set.first_update_only", "TP-469 1.13 / R-SET.1",
         "processes and reports only the first UpdateObject of a Set; the others are dropped")
register("set.error_param_path_relative", "TP-469 1.14/1.15/1.20",
         "names failed parameters in the Error's param_errs by their relative name instead of "
         "their full path")
register("set.nonrequired_fails_object", "TP-469 1.17 / R-SET.0",
         "fails the whole object when a parameter fails although its required flag is false")
register("set.affected_path_not_number", "TP-469 1.18 / R-MSG.3",
         "reports affected_path as the requested path (e.g. a unique key address) instead of "
         "the instance number path")
register("set.search_first_match_only", "TP-469 1.19 / R-ARC.10",
         "updates only the first object a wildcard or search path matches")
register("set.search_matches_all", "TP-469 1.22 / R-ARC.9",
         "ignores search expressions in obj_path: every instance of the table is updated")
register("set.ignore_allow_partial", "TP-469 1.16/1.21 / R-SET.0",
         "answers with an Error when an object fails although allow_partial is true")

_SetResp = msg_pb2.SetResp


@dataclass
class _Instance:
    """What happened to one matched object."""

    path: str
    updated: dict[str, str] = field(default_factory=dict)        # relative name -> value
    param_errs: list[ParamFailure] = field(default_factory=list)


@dataclass
class _Outcome:
    """The result of one UpdateObject: success (instances) or failure."""

    requested_path: str
    instances: list[_Instance] = field(default_factory=list)
    failure: Failure | None = None
    failed_instances: list[_Instance] = field(default_factory=list)


def handle_set(state: AgentState, ctx: RequestContext) -> Msg:
    """Answer a Set with a SetResp, or an Error when allow_partial is false and it fails."""
    req = ctx.msg.body.request.set
    updates = list(req.update_objs)
    if len(updates) > 1 and state.faults.on("set.first_update_only"):
        updates = updates[:1]
    if req.allow_partial and not state.faults.on("set.ignore_allow_partial"):
        outcomes = [_update_object(state, ctx, upd, None, defer_keys=False) for upd in updates]
        return _response(state, ctx, outcomes)
    outcomes = []
    failed: _Outcome | None = None
    try:
        with atomic(state.store) as batch:
            for upd in updates:
                outcome = _update_object(state, ctx, upd, batch, defer_keys=True)
                if outcome.failure is not None:
                    failed = outcome
                    if state.faults.on("set.partial_commit"):
                        break  # commit what was done before the failure
                    raise Rollback(outcome.failure)
                outcomes.append(outcome)
            else:
                clash = conflict_failure(state.store, batch.touched)
                if clash is not None:
                    raise Rollback(clash)
    except Rollback as rb:
        return _error(state, rb.failure, ctx.msg_id)
    if failed is not None and failed.failure is not None:
        return _error(state, failed.failure, ctx.msg_id)
    return _response(state, ctx, outcomes)


def _error(state: AgentState, failure: Failure, msg_id: str) -> Msg:
    """The Error for a failed allow_partial false Set (param_errs carry full paths)."""
    if state.faults.on("set.error_param_path_relative"):
        failure = Failure(failure.code, failure.message,
                          [(_relative(path), code, text) for path, code, text in failure.param_errs])
    return error_msg(failure, msg_id)


def _relative(path: str) -> str:
    """``Device.X.1.Name`` -> ``Name`` (an object path is kept)."""
    return path if path.endswith(".") else path.rpartition(".")[2]


def _without_expressions(text: str) -> str:
    """``text`` with every search expression replaced by ``*`` (unparsable text as is)."""
    try:
        path = paths.parse_path(text)
    except paths.PathError:
        return text
    segs = tuple(paths.Wildcard() if isinstance(s, paths.Expression) else s
                 for s in path.segments)
    return str(paths.Path(segs, path.kind))


def _update_object(state: AgentState, ctx: RequestContext, upd: msg_pb2.Set.UpdateObject,
                   parent: Batch | None, *, defer_keys: bool) -> _Outcome:
    """Apply one UpdateObject as a unit (R-SET.2a)."""
    requested = upd.obj_path
    outcome = _Outcome(requested)
    target = requested
    if state.faults.on("set.search_matches_all"):
        target = _without_expressions(requested)
    try:
        res = resolve(state.store, target)
    except ResolveError as exc:
        outcome.failure = Failure.for_path(requested, exc.code, exc.message)
        return outcome
    if res.kind not in (PathKind.OBJECT, PathKind.OBJECT_INSTANCE) or res.table:
        outcome.failure = Failure.for_path(
            requested, errors.INVALID_PATH,
            f"{requested!r} does not name objects whose parameters can be set")
        return outcome
    if not res.objects:  # R-MSG.4a: a search matching nothing
        if state.faults.on("set.search_no_match_error"):
            outcome.failure = Failure.for_path(requested, errors.OBJECT_DOES_NOT_EXIST,
                                               f"{requested!r} matches no object")
        return outcome
    objects = list(res.objects)
    if res.is_search and len(objects) > 1 and state.faults.on("set.search_first_match_only"):
        objects = objects[:1]
    ignore_required = state.faults.on("set.ignore_required")
    mutable_keys = state.faults.on("set.mutable_nonfunctional_key")
    try:
        with atomic(state.store, parent) as batch:
            for obj in objects:
                try:
                    inst = _update_instance(state, ctx, obj, upd, batch,
                                            ignore_required=ignore_required,
                                            immutable_keys=not mutable_keys)
                except StoreError as exc:  # the object went away under us
                    raise Rollback(Failure.for_path(obj, errors.OBJECT_COULD_NOT_BE_UPDATED,
                                                    str(exc))) from None
                if required_failed(inst.param_errs) and not ignore_required:
                    outcome.failed_instances.append(inst)
                else:
                    outcome.instances.append(inst)
            if outcome.failed_instances:
                raise Rollback(_required_failure(outcome.failed_instances))
            if not defer_keys:
                clash = conflict_failure(state.store, batch.touched)
                if clash is not None:
                    raise Rollback(clash)
    except Rollback as rb:
        outcome.failure = rb.failure
        if not outcome.failed_instances:  # a key clash or a store error: name the objects
            outcome.failed_instances = _clash_instances(rb.failure)
        outcome.instances = []
    return outcome


def _update_instance(state: AgentState, ctx: RequestContext, obj: str,
                     upd: msg_pb2.Set.UpdateObject, batch: Batch, *,
                     ignore_required: bool, immutable_keys: bool) -> _Instance:
    store = state.store
    odef = store.object_def(obj)
    if odef is None:
        raise StoreError(f"{obj} has no definition")
    mutable = ("Alias",) if state.faults.on("set.mutable_alias") else ()
    accepted, failures = check_settings(store, ctx, obj, list(upd.param_settings), creating=False,
                                        immutable_keys=immutable_keys, mutable_params=mutable)
    if state.faults.on("set.nonrequired_fails_object"):
        failures = [dataclasses.replace(f, required=True) for f in failures]
    inst = _Instance(obj, param_errs=failures)
    if required_failed(failures) and not ignore_required:
        return inst  # R-SET.2: nothing of this object is written
    keys = set(key_params(odef))
    for path, value in accepted.items():
        relative = path[len(obj):]
        if state.faults.on("set.not_applied"):
            inst.updated[relative] = value  # reported, never written
            continue
        batch.set(path, value)
        inst.updated[relative] = store.get(path)
        if relative in keys:
            batch.touched[obj] = odef
    return inst


def _required_failure(failed: list[_Instance]) -> Failure:
    errs = [(inst.path + f.param, f.code, f.message)
            for inst in failed for f in inst.param_errs]
    detail = "; ".join(f"{inst.path}: {describe(required_failed(inst.param_errs))}"
                       for inst in failed)
    return Failure(errors.REQUIRED_PARAMETER_FAILED, f"required parameter failed: {detail}", errs)


def _clash_instances(failure: Failure) -> list[_Instance]:
    by_obj: dict[str, _Instance] = {}
    for path, code, text in failure.param_errs:
        obj, _, name = path.rpartition(".")
        inst = by_obj.setdefault(obj + ".", _Instance(obj + "."))
        if name:  # a parameter path; an object path names just the object
            inst.param_errs.append(ParamFailure(name, code, text, True))
    return list(by_obj.values())


def _response(state: AgentState, ctx: RequestContext, outcomes: list[_Outcome]) -> Msg:
    resp = _SetResp()
    absolute = state.faults.on("set.updated_params_absolute")
    for outcome in outcomes:
        result = resp.updated_obj_results.add(requested_path=outcome.requested_path)
        status = result.oper_status
        if outcome.failure is not None:
            fail = status.oper_failure
            fail.err_code = outcome.failure.code
            fail.err_msg = outcome.failure.message
            if not state.faults.on("set.no_instance_failures"):
                for inst in outcome.failed_instances:
                    failed = fail.updated_inst_failures.add(affected_path=inst.path)
                    for f in inst.param_errs:
                        failed.param_errs.add(param=f.param, err_code=f.code, err_msg=f.message)
            continue
        success = status.oper_success
        success.SetInParent()
        echo = len(outcome.instances) == 1 and state.faults.on("set.affected_path_not_number")
        for inst in outcome.instances:
            item = success.updated_inst_results.add(
                affected_path=outcome.requested_path if echo else inst.path)
            for f in inst.param_errs:
                item.param_errs.add(param=f.param, err_code=f.code, err_msg=f.message)
            if state.faults.on("set.no_updated_params"):
                continue
            for name, value in inst.updated.items():
                if ctx.access.allows("Param", inst.path + name, "r"):  # R-SET.3
                    key = inst.path + name if absolute else name
                    item.updated_params[key] = value
    return messages.response("set_resp", resp, msg_id=ctx.msg_id)
