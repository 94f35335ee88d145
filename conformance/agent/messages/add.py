"""Add (TR-369 "The Add Message"; TP-469 1.1-1.10, 1.81, 1.88, 1.95).

``obj_path`` names a writeable table; a search or unique key in its parent
part (``Device.LocalAgent.Controller.*.BootParameter.``) creates one
instance per matched table, each reported in its own CreatedObjectResult
with the same ``requested_path`` (R-ADD.2 deprecated in USP 1.3). Every
created instance is a unit: a failed ``required`` parameter (R-ADD.3; unique
key parameters given in the request always count as required, TP-469 1.88)
or a clashing unique key undoes it. With ``allow_partial: true`` the failure
is an ``oper_failure`` and the rest goes on (R-ADD.0); with ``false`` the
whole message is undone and answered with an Error (R-ADD.1, R-ADD.2a).

A successful creation reports the instance in instance-number form, the
parameters that failed without being required (R-ADD.4) and every unique key
parameter with its value (R-ADD.5), the ones the controller may read only
(R-ADD.6). Keys the controller left out are assigned by the agent: Alias and
other non-functional keys get ``cpe-<n>`` values. A new Subscription gets
``Recipient`` (the controller's ``Device.LocalAgent.Controller.{i}`` row,
found by EndpointID; empty if there is none) and ``CreationDate`` (now, UTC).

Codes: 7026/7008/7016 from path resolution, 7018 the path is not a table,
7019 the table is not creatable (readOnly), 7017 maxEntries reached or the
store could not create the instance, 7006 no
Obj write permission on the table, 7021 a required parameter failed (the
error table's definition), 7025 duplicate unique key.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

from conformance.agent.context import AgentState, RequestContext
from conformance.agent.datamodel.defs import ObjectDef
from conformance.agent.datamodel.resolve import ResolveError, resolve
from conformance.agent.datamodel.store import StoreError
from conformance.agent.faults import register
from conformance.agent.messages.write import (
    Batch,
    Failure,
    ParamFailure,
    Rollback,
    assign_missing_keys,
    atomic,
    check_settings,
    conflict_failure,
    describe,
    error_msg,
    key_params,
    required_failed,
)
from conformance.usp import errors, messages
from conformance.usp.paths import PathKind
from conformance.usp.schema import Msg, msg_pb2

register("add.no_unique_keys", "TP-469 1.1",
         "omits the unique_keys map from OperationSuccess (R-ADD.5)")
register("add.ignore_required", "TP-469 1.3",
         "creates the object although a required parameter failed (R-ADD.3)")
register("add.partial_commit", "TP-469 1.6",
         "keeps the objects created before a failing one although allow_partial is false (R-ADD.1)")
register("add.wrong_error_code", "TP-469 1.4",
         "reports failures with 7027 (an Operate-only code) instead of an Add error code")
register("add.no_key_generation", "TP-469 1.81",
         "does not assign the unique keys (Alias, ID) the controller left out (R-ADD.5)")
register("add.unique_key_not_required", "TP-469 1.88",
         "treats a unique key parameter as optional when its required flag is false")
register("add.no_search_paths", "TP-469 1.95",
         "rejects an Add whose obj_path has a search or unique key in its parent part (7026)")

SUBSCRIPTION = "Device.LocalAgent.Subscription.{i}."
CONTROLLER_TABLE = "Device.LocalAgent.Controller."

_AddResp = msg_pb2.AddResp


@dataclass
class _Created:
    """One CreatedObjectResult: an instance, a failure, or an empty success (R-MSG.4a)."""

    requested_path: str
    instantiated_path: str = ""
    param_errs: list[ParamFailure] = field(default_factory=list)
    unique_keys: dict[str, str] = field(default_factory=dict)
    failure: Failure | None = None


def handle_add(state: AgentState, ctx: RequestContext) -> Msg:
    """Answer an Add with an AddResp, or an Error when allow_partial is false and it fails."""
    req = ctx.msg.body.request.add
    results: list[_Created] = []
    if req.allow_partial:
        for create in req.create_objs:
            results += _create_objects(state, ctx, create, None, defer_keys=False)
        return _response(state, ctx, results)
    failed: Failure | None = None
    try:
        with atomic(state.store) as batch:
            for create in req.create_objs:
                created = _create_objects(state, ctx, create, batch, defer_keys=True)
                bad = next((c.failure for c in created if c.failure is not None), None)
                if bad is not None:
                    failed = bad
                    if state.faults.on("add.partial_commit"):
                        break  # keep what was created so far
                    raise Rollback(bad)
                results += created
            else:
                clash = conflict_failure(state.store, batch.touched)
                if clash is not None:
                    raise Rollback(clash)
    except Rollback as rb:
        failed = rb.failure
    if failed is not None:
        return error_msg(_reported(state, failed), ctx.msg_id)
    return _response(state, ctx, results)


def _reported(state: AgentState, failure: Failure) -> Failure:
    if not state.faults.on("add.wrong_error_code"):
        return failure
    code = errors.INVALID_COMMAND_ARGUMENTS
    return Failure(code, failure.message, [(p, code, m) for p, _, m in failure.param_errs])


def _create_objects(state: AgentState, ctx: RequestContext, create: msg_pb2.Add.CreateObject,
                    parent: Batch | None, *, defer_keys: bool) -> list[_Created]:
    """The results of one CreateObject: one per matched table."""
    requested = create.obj_path
    try:
        res = resolve(state.store, requested)
    except ResolveError as exc:
        return [_Created(requested, failure=Failure.for_path(requested, exc.code, exc.message))]
    problem = _table_problem(state, res.kind, res.table, res.is_search, res.object_def, requested)
    if problem is not None:
        return [_Created(requested, failure=problem)]
    assert res.object_def is not None
    if not res.objects:  # a search matching no parent: R-MSG.4a
        return [_Created(requested)]
    return [_create_one(state, ctx, requested, table, res.object_def, create, parent,
                        defer_keys=defer_keys)
            for table in res.objects]


def _table_problem(state: AgentState, kind: PathKind, table: bool, is_search: bool,
                   odef: ObjectDef | None, requested: str) -> Failure | None:
    if state.faults.on("add.no_search_paths") and is_search:
        return Failure.for_path(requested, errors.INVALID_PATH, "search paths are not supported")
    if kind is not PathKind.OBJECT or not table or odef is None or not odef.multi_instance:
        return Failure.for_path(requested, errors.OBJECT_IS_NOT_A_TABLE,
                                f"{requested!r} is not a multi-instance object (table)")
    if odef.access != "readWrite":
        return Failure.for_path(requested, errors.ATTEMPT_TO_CREATE_NON_CREATABLE_OBJECT,
                                f"{odef.path} instances cannot be created")
    return None


def _create_one(state: AgentState, ctx: RequestContext, requested: str, table: str,
                odef: ObjectDef, create: msg_pb2.Add.CreateObject, parent: Batch | None, *,
                defer_keys: bool) -> _Created:
    """Create one instance in ``table`` as a unit (R-ADD.0: each matched object on its own)."""
    store = state.store
    result = _Created(requested)
    if not ctx.access.allows("Obj", table, "w"):
        result.failure = Failure.for_path(table, errors.PERMISSION_DENIED,
                                          f"no permission to add to {table}")
        return result
    if odef.max_entries is not None and len(store.instances(table)) >= odef.max_entries:
        result.failure = Failure.for_path(table, errors.OBJECT_COULD_NOT_BE_CREATED,
                                          f"{table} already has {odef.max_entries} entries")
        return result
    keys = key_params(odef)
    forced = () if state.faults.on("add.unique_key_not_required") else keys
    ignore_required = state.faults.on("add.ignore_required")
    try:
        with atomic(store, parent) as batch:
            try:
                inst = batch.add(table)
            except StoreError as exc:  # e.g. the parent went away
                raise Rollback(Failure.for_path(table, errors.OBJECT_COULD_NOT_BE_CREATED,
                                                str(exc))) from None
            accepted, failures = check_settings(store, ctx, inst, list(create.param_settings),
                                                creating=True, forced_required=forced)
            failed = required_failed(failures)
            if failed and not ignore_required:
                raise Rollback(_required_failure(table, failures, failed))
            for path, value in accepted.items():
                batch.set(path, value, notify=False)  # initial values: no ValueChange
            given = {path[len(inst):] for path in accepted}
            given |= _agent_assigned(state, ctx, batch, inst, odef)
            if not state.faults.on("add.no_key_generation"):
                assign_missing_keys(batch, inst, odef, given)
            batch.touched[inst] = odef
            if not defer_keys:
                clash = conflict_failure(store, {inst: odef})
                if clash is not None:
                    raise Rollback(clash)
    except Rollback as rb:
        result.failure = rb.failure
        return result
    result.instantiated_path = inst
    result.param_errs = failures
    if not state.faults.on("add.no_unique_keys"):
        result.unique_keys = {p: store.get(inst + p) for p in keys
                              if ctx.access.allows("Param", inst + p, "r")}  # R-ADD.6
    return result


def _required_failure(table: str, failures: list[ParamFailure],
                      failed: list[ParamFailure]) -> Failure:
    # The instance was undone, so parameters are named under the table path. When every
    # failed required parameter was refused for lack of permission, the creation itself
    # was not permitted: 7006 rather than 7021 (R-SEC.1; TP-469 2.23, 2.24, 2.26).
    errs = [(table + f.param, f.code, f.message) for f in failures]
    code = (errors.PERMISSION_DENIED if failed and all(f.code == errors.PERMISSION_DENIED
                                                       for f in failed)
            else errors.REQUIRED_PARAMETER_FAILED)
    return Failure(code, f"{table}: required parameter failed: {describe(failed)}", errs)


def _agent_assigned(state: AgentState, ctx: RequestContext, batch: Batch, inst: str,
                    odef: ObjectDef) -> set[str]:
    """Values the agent itself sets on creation; returns their names."""
    if odef.path != SUBSCRIPTION:
        return set()
    now = _dt.datetime.fromtimestamp(state.clock(), _dt.UTC)
    batch.set(inst + "CreationDate", now.strftime("%Y-%m-%dT%H:%M:%SZ"), notify=False)
    batch.set(inst + "Recipient", controller_row(state, ctx.controller_id), notify=False)
    return {"Recipient", "CreationDate"}


def controller_row(state: AgentState, endpoint_id: str) -> str:
    """``Device.LocalAgent.Controller.{i}`` (reference form, no final dot) of a controller."""
    for row in state.store.instances(CONTROLLER_TABLE):
        try:
            if state.store.get(row + "EndpointID") == endpoint_id:
                return row[:-1]
        except StoreError:
            continue
    return ""


def _response(state: AgentState, ctx: RequestContext, results: list[_Created]) -> Msg:
    resp = _AddResp()
    for created in results:
        item = resp.created_obj_results.add(requested_path=created.requested_path)
        status = item.oper_status
        if created.failure is not None:
            failure = _reported(state, created.failure)
            status.oper_failure.err_code = failure.code
            status.oper_failure.err_msg = failure.message
            continue
        success = status.oper_success
        success.SetInParent()
        success.instantiated_path = created.instantiated_path
        for f in created.param_errs:
            success.param_errs.add(param=f.param, err_code=f.code, err_msg=f.message)
        for name, value in created.unique_keys.items():
            success.unique_keys[name] = value
    return messages.response("add_resp", resp, msg_id=ctx.msg_id)
