"""Delete (TR-369 "The Delete Message"; TP-469 1.24-1.35, 1.90).

Each ``obj_paths`` entry is an Object Instance Path or a Search Path. An
entry that is valid but matches no instance -- a search that finds nothing,
or an instance number or unique key that addresses nothing -- succeeds with
no ``affected_paths`` (R-DEL.2a, R-MSG.4a; TP-469 1.25, 1.29, 1.32 and 1.90
expect an empty ``oper_success`` even with ``allow_partial: false``, which
is how the fixed DeleteResp logic reads R-DEL.1's "instance that does not
exist").

``affected_paths`` lists the matched instances that were deleted (their
sub-objects go with them and get ObjectDeletion events, but are not listed:
TP-469 1.24 expects one path per deleted object). An instance that exists
but cannot be deleted goes to ``unaffected_path_errs`` (R-DEL.3) when
``allow_partial`` is true; an entry that is not a deletable path at all is
an ``oper_failure``. With ``allow_partial: false`` any failure undoes the
whole message and is answered with an Error whose ``param_errs`` name the
failing path (R-DEL.1; TP-469 1.26, 1.28). Paths the controller may not
read are left out of both lists (R-DEL.2, R-DEL.4).

Codes: 7008/7026 from path resolution, 7026 also for a table path without
an instance (the resolver's rule for a table where instances are needed),
7018 for a path that is not a multi-instance object, 7006 no InstantiatedObj
write permission, 7024 the table is not deletable (readOnly), the deletion
would go below minEntries, or the store failed to delete.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from conformance.agent.context import AgentState, RequestContext
from conformance.agent.datamodel.resolve import ResolveError, resolve
from conformance.agent.datamodel.store import StoreError
from conformance.agent.faults import register
from conformance.agent.messages.write import (
    Batch,
    Failure,
    Rollback,
    atomic,
    error_msg,
    table_of,
)
from conformance.usp import errors, messages
from conformance.usp.paths import Expression, PathError, PathKind, parse_path
from conformance.usp.schema import Msg, msg_pb2

register("delete.error_on_missing", "TP-469 1.25",
         "answers the deletion of an instance that does not exist with error 7016 (R-DEL.2a)")
register("delete.no_affected_paths", "TP-469 1.24",
         "leaves affected_paths empty although instances were deleted")
register("delete.partial_commit", "TP-469 1.28",
         "keeps the deletions made before a failing entry although allow_partial is false (R-DEL.1)")
register("delete.search_no_match_error", "TP-469 1.90",
         "answers a search path that matches no instance with 7016 instead of an empty "
         "oper_success (R-MSG.4a)")
register("delete.ignore_invalid_path", "TP-469 1.26",
         "treats a path outside the supported data model as matching nothing (empty oper_success)")
register("delete.reports_without_deleting", "TP-469 1.24 / R-DEL.1",
         "reports the matched instances as affected_paths but leaves them in the data model")
register("delete.first_path_only", "TP-469 1.27/1.32 / R-DEL.0",
         "handles only the first obj_paths entry and answers nothing for the others")
register("delete.ignore_allow_partial", "TP-469 1.30/1.31 / R-DEL.0",
         "treats allow_partial true as false: one failing entry fails the whole message")
register("delete.affected_paths_as_requested", "TP-469 1.33 / R-MSG.3",
         "lists the requested path (search or key form) in affected_paths instead of the "
         "deleted instances")
register("delete.search_first_match_only", "TP-469 1.34 / R-ARC.10",
         "deletes only the first instance a wildcard or search expression matches")
register("delete.search_ignores_expression", "TP-469 1.35/1.90 / R-ARC.9",
         "evaluates a search expression as a wildcard: every instance of the table is deleted")

_DeleteResp = msg_pb2.DeleteResp
#: A path ending in a search expression (quoted strings may hold ``]``).
_LAST_EXPRESSION = re.compile(r'(?P<table>.*\.)\[(?:[^\]"]|"[^"]*")*\]\.')


@dataclass
class _Deleted:
    """One DeletedObjectResult."""

    requested_path: str
    affected: list[str] = field(default_factory=list)
    unaffected: list[tuple[str, int, str]] = field(default_factory=list)
    failure: Failure | None = None

    def as_failure(self) -> Failure | None:
        """The Error this result turns into when allow_partial is false."""
        if self.failure is not None:
            return self.failure
        if self.unaffected:
            path, code, text = self.unaffected[0]
            return Failure(code, f"{path}: {text}", list(self.unaffected))
        return None


def handle_delete(state: AgentState, ctx: RequestContext) -> Msg:
    """Answer a Delete with a DeleteResp, or an Error when allow_partial is false and it fails."""
    req = ctx.msg.body.request.delete
    obj_paths = list(req.obj_paths)
    if state.faults.on("delete.first_path_only"):
        obj_paths = obj_paths[:1]
    if req.allow_partial and not state.faults.on("delete.ignore_allow_partial"):
        results = []
        for path in obj_paths:  # R-DEL.0: each entry on its own
            with atomic(state.store) as batch:
                results.append(_delete_path(state, ctx, path, batch))
        return _response(state, ctx, results)
    results = []
    failed: Failure | None = None
    try:
        with atomic(state.store) as batch:
            for path in obj_paths:
                result = _delete_path(state, ctx, path, batch)
                failed = result.as_failure()
                if failed is not None:
                    if state.faults.on("delete.partial_commit"):
                        break  # keep the deletions made so far
                    raise Rollback(failed)
                results.append(result)
    except Rollback as rb:
        failed = rb.failure
    if failed is not None:
        return error_msg(failed, ctx.msg_id)
    return _response(state, ctx, results)


def _delete_path(state: AgentState, ctx: RequestContext, requested: str, batch: Batch) -> _Deleted:
    result = _Deleted(requested)
    try:
        res = resolve(state.store, requested)
        if state.faults.on("delete.search_ignores_expression"):
            widened = _widened(state, requested)
            if widened is not None:
                res = resolve(state.store, widened)
    except ResolveError as exc:
        missing = exc.code == errors.OBJECT_DOES_NOT_EXIST
        invalid = exc.code == errors.INVALID_PATH
        if (missing and not state.faults.on("delete.error_on_missing")) or (
                invalid and state.faults.on("delete.ignore_invalid_path")):
            return result  # R-DEL.2a: a valid path that addresses no instance
        result.failure = Failure.for_path(requested, exc.code, exc.message)
        return result
    odef = res.object_def
    if res.table and res.kind is PathKind.OBJECT:
        result.failure = Failure.for_path(
            requested, errors.INVALID_PATH,
            f"{requested!r} is a table; Delete needs Object Instance Paths or Search Paths")
        return result
    if res.kind not in (PathKind.OBJECT, PathKind.OBJECT_INSTANCE) or odef is None \
            or not odef.multi_instance:
        result.failure = Failure.for_path(requested, errors.OBJECT_IS_NOT_A_TABLE,
                                          f"{requested!r} is not an instance of a table")
        return result
    if not res.objects:
        if res.is_search and state.faults.on("delete.search_no_match_error"):
            result.failure = Failure.for_path(requested, errors.OBJECT_DOES_NOT_EXIST,
                                              f"{requested!r} matches no instance")
        return result
    matched = list(res.objects)
    if res.is_search and state.faults.on("delete.search_first_match_only"):
        matched = matched[:1]
    for inst in matched:
        problem = _cannot_delete(state, ctx, inst)
        if problem is not None:
            result.unaffected.append((inst, *problem))
            continue
        if not state.store.exists(inst):  # taken along by an earlier match
            continue
        try:
            if not state.faults.on("delete.reports_without_deleting"):
                batch.delete(inst)
        except StoreError as exc:
            result.unaffected.append((inst, errors.DELETE_FAILURE, str(exc)))
            continue
        result.affected.append(inst)
    return result


def _widened(state: AgentState, path: str) -> str | None:
    """``path`` with its final search expression turned into ``*`` (fault support only).

    None when the path does not end in a search expression, or ends in a unique
    key address (a complete unique key compared with ``==``), which is not a search.
    """
    found = _LAST_EXPRESSION.fullmatch(path)
    if found is None:
        return None
    try:
        last = parse_path(path).segments[-1]
    except PathError:
        return None
    table = state.dm.find_object(found["table"])
    if not isinstance(last, Expression) or table is None:
        return None
    names = {c.parameter_path for c in last.components}
    if last.is_equality_only and any(set(key) == names for key in table.unique_keys):
        return None
    return found["table"] + "*."


def _cannot_delete(state: AgentState, ctx: RequestContext, inst: str) -> tuple[int, str] | None:
    odef = state.store.object_def(inst)
    if odef is None or not odef.multi_instance:
        return errors.OBJECT_IS_NOT_A_TABLE, "not an instance of a table"
    if odef.access != "readWrite":
        return errors.DELETE_FAILURE, f"{odef.path} instances cannot be deleted"
    if not ctx.access.allows("InstantiatedObj", inst, "w"):
        return errors.PERMISSION_DENIED, "no permission to delete this instance"
    if len(state.store.instances(table_of(inst))) - 1 < odef.min_entries:
        return errors.DELETE_FAILURE, f"{odef.path} needs at least {odef.min_entries} entries"
    return None


def _response(state: AgentState, ctx: RequestContext, results: list[_Deleted]) -> Msg:
    resp = _DeleteResp()
    readable = _readable(ctx)
    for result in results:
        item = resp.deleted_obj_results.add(requested_path=result.requested_path)
        status = item.oper_status
        if result.failure is not None:
            status.oper_failure.err_code = result.failure.code
            status.oper_failure.err_msg = result.failure.message
            continue
        success = status.oper_success
        success.SetInParent()
        affected = result.affected
        if affected and state.faults.on("delete.affected_paths_as_requested"):
            affected = [result.requested_path]
        if not state.faults.on("delete.no_affected_paths"):
            success.affected_paths.extend(p for p in affected if readable(p))  # R-DEL.2
        for path, code, text in result.unaffected:
            if readable(path):  # R-DEL.4
                success.unaffected_path_errs.add(unaffected_path=path, err_code=code, err_msg=text)
    return messages.response("delete_resp", resp, msg_id=ctx.msg_id)


def _readable(ctx: RequestContext) -> Callable[[str], bool]:
    return lambda path: ctx.access.allows("InstantiatedObj", path, "r")
