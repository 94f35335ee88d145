"""Get and GetInstances handlers of the reference Agent (TR-369 "Reading an Agent's State").

Get (R-GET.0 .. R-GET.5, TP-469 1.36-1.51, 1.82, 1.86, 1.87, 1.89):

* every requested path is answered in its own ``RequestedPathResult``; a path
  that cannot be read carries ``err_code``/``err_msg`` there and never fails
  the other paths (TP-469 1.42);
* a path that is not a search and matches nothing in the instantiated data
  model, a search that names something the supported data model lacks, and a
  command or event path are all ``7026 Invalid path`` (R-GET.0); a syntax
  error stays ``7008``;
* a search (or a table path) that matches no instance is a success with no
  ``resolved_path_results`` (R-GET.1a, R-MSG.4a);
* a parameter path gives one ``ResolvedPathResult`` per owning object, with
  just that parameter (R-GET.2, R-GET.3); an object path gives one
  ``ResolvedPathResult`` per object of the tree below it, each with its own
  parameters under names relative to it (the USP 1.2 grouping); objects
  that define no parameters are not reported (R-GET.1b);
* ``max_depth`` (R-GET.5): 0 is the whole tree; otherwise the requested
  object is level 1, its sub-objects level 2, and so on. A table and one of
  its instances make one level, so a table path (``...Subscription.``) puts
  its instances at level 1, like ``...Subscription.*.``;
* paths are reported with instance numbers (R-MSG.3).

Permissions (TR-181 ControllerTrust, ``ctx.access``): an object needs ``Obj``
read and a parameter ``Param`` read, otherwise it is treated as absent
(R-GET.1: ``7026`` when it is what the path names, silently left out when it
is found by a search or below a requested object; R-GET.4); instances
matched by a wildcard or an expression also need ``InstantiatedObj`` read,
and the parameters a search expression tests need ``Param`` read.

``secured`` parameters read as the empty string unless the controller holds
a secured role: the access object may offer ``reads_secured(param_path) ->
bool`` (see :func:`reads_secured`); ``hidden`` parameters always read empty
(TR-369 security "SecuredRoles", TR-106).

GetInstances (R-GIN.0, R-GIN.1, TP-469 1.66-1.71, 1.83): each path must name
a multi-instance object (a table, a search over one, or its instances;
otherwise ``7018 Object is not a table``); every matched instance is listed
with every parameter of its unique keys, and with ``first_level_only`` false
also every instance of every table below it, depth first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from conformance.agent.context import Access, AgentState, RequestContext
from conformance.agent.datamodel.defs import ParamDef
from conformance.agent.datamodel.resolve import Resolution, ResolveError, resolve
from conformance.agent.datamodel.store import Store, StoreError
from conformance.agent.faults import FaultSet, register
from conformance.usp import errors, messages, paths
from conformance.usp.paths import (
    Expression,
    ExpressionComponent,
    Operator,
    PathKind,
    ReferenceFollow,
    Wildcard,
)
from conformance.usp.schema import Msg, msg_pb2

__all__ = [
    "SecuredReader",
    "get_instances_path",
    "get_path",
    "handle_get",
    "handle_get_instances",
    "read_value",
    "reads_secured",
    "resolve_search",
    "search_params_readable",
    "unique_key_address",
]

# --- faults ----------------------------------------------------------------------------

register("get.wrong_error_code", "R-GET.0, TP-469 1.41/1.42",
         "reports an invalid path with 7016 Object does not exist instead of 7026 Invalid path")
register("get.invalid_path_fails_message", "TP-469 1.41/1.42",
         "answers a Get containing an invalid path with an Error message instead of a GetResp")
register("get.instance_not_number", "R-MSG.3, TP-469 1.43",
         "reports resolved_path instances by unique key ([Alias==\"...\"]) instead of number")
register("get.ignore_max_depth", "R-GET.5, TP-469 1.89",
         "ignores max_depth and always returns the whole tree")
register("get.missing_param", "TP-469 1.39/1.40/1.45",
         "drops the last parameter of every object reported for an object path")
register("get.absolute_param_keys", "TP-469 1.39/1.40/1.45",
         "uses absolute parameter paths as result_params keys instead of relative ones")
register("get.flatten_subobjects", "TP-469 1.39/1.89",
         "folds sub-object parameters into the requested object's result (pre-1.2 style) "
         "instead of one resolved_path_results entry per sub-object")
register("get.unmatched_search_error", "R-GET.1a, TP-469 1.82/1.86",
         "answers a search that matches no instance with err_code 7016")
register("get.empty_table_error", "R-GET.1a, TP-469 1.87",
         "answers a table path without instances with err_code 7016")
register("get.search_returns_all", "TP-469 1.46-1.51",
         "ignores search expressions: every instance of the table matches")
register("get.extra_params", "R-GET.3, TP-469 1.36/1.38",
         "returns every parameter of the owning object for a parameter path")
register("get.empty_table_reports_table", "R-GET.1b, TP-469 1.87",
         "reports a table path without instances as a resolved_path_results entry of its own")
register("get.first_path_only", "TP-469 1.37 (one RequestedPathResult per requested path)",
         "answers only the first of several param_paths")
register("get.param_resolved_path_full", "R-GET.2, TP-469 1.38",
         "reports a parameter path's resolved_path as the parameter itself, not its object")
register("get.invalid_path_no_error", "R-GET.0, TP-469 1.41/1.42",
         "answers a path naming nothing in the data model with err_code 0 and no results")
register("get.wildcard_first_only", "R-ARC.10, TP-469 1.44/1.45",
         "a wildcard matches only the first instance of the table")
# One fault per search operator: it is evaluated as another operator (R-ARC.9).
register("get.search_eq_as_ne", "R-ARC.9, TP-469 1.46",
         "evaluates == in a search expression as !=")
register("get.search_ne_as_eq", "R-ARC.9, TP-469 1.47",
         "evaluates != in a search expression as ==")
register("get.search_gt_inclusive", "R-ARC.9, TP-469 1.48",
         "evaluates > in a search expression as >= (the boundary value matches)")
register("get.search_lt_inclusive", "R-ARC.9, TP-469 1.49",
         "evaluates < in a search expression as <= (the boundary value matches)")
register("get.search_ge_exclusive", "R-ARC.9, TP-469 1.50",
         "evaluates >= in a search expression as > (the boundary value is missed)")
register("get.search_le_exclusive", "R-ARC.9, TP-469 1.51",
         "evaluates <= in a search expression as < (the boundary value is missed)")
register("gin.no_unique_keys", "TP-469 1.66 (CurrInstance unique_keys)",
         "lists instances without their unique_keys")
register("gin.ignore_first_level_only", "TP-469 1.66",
         "lists nested instances even when first_level_only is true")
register("gin.no_nested_instances", "TP-469 1.67/1.71",
         "lists only the first level even when first_level_only is false")
register("gin.unmatched_search_error", "R-MSG.4a, TP-469 1.83",
         "answers a search that matches no instance with err_code 7016")
register("gin.first_path_only", "TP-469 1.68",
         "answers only the first of several obj_paths")
register("gin.no_search_paths", "R-MSG.1, TP-469 1.70/1.71",
         "answers an obj_path holding a wildcard or a search expression with err_code 7026")

_LEAF_KINDS = (PathKind.PARAMETER, PathKind.COMMAND, PathKind.EVENT)

#: fault name -> (the operator it breaks, the operator evaluated instead)
_OPERATOR_FAULTS: dict[str, tuple[Operator, Operator]] = {
    "get.search_eq_as_ne": (Operator.EQ, Operator.NE),
    "get.search_ne_as_eq": (Operator.NE, Operator.EQ),
    "get.search_gt_inclusive": (Operator.GT, Operator.GE),
    "get.search_lt_inclusive": (Operator.LT, Operator.LE),
    "get.search_ge_exclusive": (Operator.GE, Operator.GT),
    "get.search_le_exclusive": (Operator.LE, Operator.LT),
}


# --- reading values ----------------------------------------------------------------------


@runtime_checkable
class SecuredReader(Protocol):
    """Optional extension of :class:`~conformance.agent.context.Access`: the SecuredRoles check."""

    def reads_secured(self, param_path: str) -> bool:
        """Whether the controller holds a secured role covering ``param_path``."""
        ...


def reads_secured(access: Access, param_path: str) -> bool:
    """Whether ``access`` may see the real value of the secured parameter ``param_path``.

    False unless the access object implements ``reads_secured`` and it says
    so: without SecuredRoles, secured parameters are hidden (TR-369 security).
    """
    hook = getattr(access, "reads_secured", None)
    return bool(hook(param_path)) if callable(hook) else False


def read_value(store: Store, access: Access, pdef: ParamDef, param_path: str) -> str:
    """The value a controller gets for a parameter: empty for hidden and unprivileged secured."""
    if pdef.hidden or (pdef.secured and not reads_secured(access, param_path)):
        return ""
    return store.get(param_path)


def search_params_readable(access: Access, path: paths.Path) -> bool:
    """Whether every parameter a search expression of ``path`` tests is readable (R-GIN.0).

    Parameters are checked in supported-path form; parts after a followed
    reference cannot be named statically and are not checked here.
    """
    prefix = ""
    for seg in path.segments:
        if isinstance(seg, ReferenceFollow):
            return True
        if isinstance(seg, Expression):
            for comp in seg.components:
                if any(isinstance(p, ReferenceFollow) for p in comp.parameter):
                    continue
                if not access.allows("Param", f"{prefix}{{i}}.{comp.parameter_path}", "r"):
                    return False
            prefix += "{i}."
        elif isinstance(seg, paths.Name):
            prefix += seg.name + "."
        else:
            prefix += "{i}."
    return True


def unique_key_address(store: Store, obj_path: str) -> str:
    """``obj_path`` with every instance number replaced by a unique-key expression.

    Used only by the ``get.instance_not_number`` fault (the form R-MSG.3 forbids).
    """
    numbered = out = ""
    for part in obj_path.rstrip(".").split("."):
        numbered += part + "."
        if part.isdigit():
            odef = store.object_def(numbered)
            keys = odef.unique_keys[0] if odef is not None and odef.unique_keys else ()
            try:
                expr = "&&".join(f'{k}=="{_quote(store.get(numbered + k))}"' for k in keys)
            except StoreError:
                expr = ""
            part = f"[{expr}]" if expr else part
        out += part + "."
    return out


def _quote(value: str) -> str:
    return value.replace("%", "%25").replace('"', "%22")


def _is_instance(obj_path: str) -> bool:
    return obj_path.rstrip(".").rpartition(".")[2].isdigit()


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _parse(text: str) -> paths.Path:
    try:
        return paths.parse_path(text)
    except paths.PathError as exc:
        raise ResolveError(errors.INVALID_PATH_SYNTAX, f"{text!r}: {exc.reason}") from None


def _without_expressions(path: paths.Path) -> str:
    """The path with every expression replaced by ``*``."""
    segs = tuple(Wildcard() if isinstance(s, Expression) else s for s in path.segments)
    return str(paths.Path(segs, path.kind))


def _swap_operators(path: paths.Path, faults: FaultSet) -> paths.Path:
    """``path`` with each operator an active ``get.search_*`` fault breaks replaced.

    Only the operator faults use this: the resolver itself stays correct.
    """
    swaps = dict(pair for name, pair in _OPERATOR_FAULTS.items() if faults.on(name))
    if not swaps or not path.has_expression:
        return path

    def swap(comp: ExpressionComponent) -> ExpressionComponent:
        return ExpressionComponent(comp.parameter, swaps.get(comp.operator, comp.operator),
                                   comp.value)

    segs = tuple(Expression(tuple(swap(c) for c in s.components)) if isinstance(s, Expression)
                 else s for s in path.segments)
    return paths.Path(segs, path.kind)


def resolve_search(store: Store, text: str, path: paths.Path) -> Resolution:
    """:func:`resolve`, except that an expression matching no instance is an empty search.

    The resolver reports a complete unique key that matches nothing as 7016
    (an address); Get and GetInstances answer such a path like any other
    search that matches nothing (R-MSG.4a; TP-469 1.83 expects exactly that
    for ``Controller.[Alias=="<none>"].BootParameter.``). An instance number
    elsewhere in the path that does not exist stays 7016.
    """
    try:
        return resolve(store, text)
    except ResolveError as exc:
        if exc.code != errors.OBJECT_DOES_NOT_EXIST or not path.has_expression:
            raise
        try:
            widened = resolve(store, _without_expressions(path))
        except ResolveError:
            raise exc from None
        return Resolution(text, widened.kind, [], widened.leaf, widened.table, True,
                          widened.object_def)


# --- Get ---------------------------------------------------------------------------------

ResolvedObject = tuple[str, dict[str, str]]


def get_path(state: AgentState, access: Access, text: str, max_depth: int = 0) -> list[ResolvedObject]:
    """The ``(resolved_path, result_params)`` pairs a Get reports for one requested path.

    Raises :class:`ResolveError` with the code for this path's ``err_code``.
    """
    store, faults = state.store, state.faults
    path = _parse(text)
    target = text
    if path.has_expression and faults.on("get.search_returns_all"):
        target = _without_expressions(path)
    elif path.has_expression:
        faulty = _swap_operators(path, faults)
        if faulty != path:
            target, path = str(faulty), faulty
    try:
        res = resolve_search(store, target, path)
    except ResolveError as exc:
        if exc.code == errors.OBJECT_DOES_NOT_EXIST:  # R-GET.0: not in the instantiated model
            raise ResolveError(errors.INVALID_PATH, exc.message) from None
        raise
    if res.kind in (PathKind.COMMAND, PathKind.EVENT):
        raise ResolveError(errors.INVALID_PATH,
                           f"{text!r} is a {res.kind.name.lower()} path; Get reads objects and parameters")
    if res.is_search and not search_params_readable(access, path):
        raise ResolveError(errors.INVALID_PATH, f"{text!r}: the search tests an unreadable parameter")
    if path.has_wildcard and faults.on("get.wildcard_first_only"):
        res.objects = res.objects[:1]
    if res.leaf is not None:
        found = _get_leaf(state, access, res)
        if faults.on("get.param_resolved_path_full"):
            found = [(obj + res.leaf, params) for obj, params in found]
    else:
        found = _get_objects(state, access, res, max_depth)
    if not found:
        if res.is_search and faults.on("get.unmatched_search_error"):
            raise ResolveError(errors.OBJECT_DOES_NOT_EXIST, f"{text!r} matched no instance")
        if res.table and not res.is_search and faults.on("get.empty_table_error"):
            raise ResolveError(errors.OBJECT_DOES_NOT_EXIST, f"{text!r} has no instances")
        if res.table and not res.is_search and faults.on("get.empty_table_reports_table"):
            found = [(obj, {}) for obj in _dedupe(res.objects)]
    if faults.on("get.absolute_param_keys"):
        found = [(obj, {obj + k: v for k, v in params.items()}) for obj, params in found]
    if faults.on("get.instance_not_number"):
        found = [(unique_key_address(store, obj), params) for obj, params in found]
    return found


def _get_leaf(state: AgentState, access: Access, res: Resolution) -> list[ResolvedObject]:
    """R-GET.2/3: one result per owning object, holding only the requested parameter."""
    store = state.store
    leaf = res.leaf
    assert leaf is not None
    out: list[ResolvedObject] = []
    for obj in _dedupe(res.objects):
        pdef = store.param_def(obj + leaf)
        readable = (pdef is not None and access.allows("Obj", obj, "r")
                    and access.allows("Param", obj + leaf, "r")
                    and (not res.is_search or access.allows("InstantiatedObj", obj, "r")))
        if not readable:
            if not res.is_search:  # R-GET.1: treated as absent from the supported model
                raise ResolveError(errors.INVALID_PATH, f"{res.requested!r}: no readable parameter")
            continue
        assert pdef is not None
        if state.faults.on("get.extra_params"):
            params = _object_params(state, access, obj, full=True)
        else:
            params = {leaf: read_value(store, access, pdef, obj + leaf)}
        out.append((obj, params))
    return out


def _get_objects(state: AgentState, access: Access, res: Resolution,
                 max_depth: int) -> list[ResolvedObject]:
    store = state.store
    objects = _dedupe(res.objects)
    if res.table:
        roots = [inst for table in objects for inst in store.instances(table)]
    else:
        roots = objects
    if not res.is_search:
        for obj in objects:  # the object the path names must itself be readable (R-GET.1)
            if not access.allows("Obj", obj, "r"):
                raise ResolveError(errors.INVALID_PATH, f"{res.requested!r}: not readable")
    else:
        roots = [r for r in roots if access.allows("InstantiatedObj", r, "r")]
    if state.faults.on("get.ignore_max_depth"):
        max_depth = 0
    flatten = state.faults.on("get.flatten_subobjects")
    out: list[ResolvedObject] = []
    for root in roots:
        if flatten:
            merged: dict[str, str] = {}
            for obj, params in _walk(state, access, root, max_depth):
                rel = obj[len(root):]
                merged.update({rel + name: value for name, value in params.items()})
            out.append((root, merged))
        else:
            out += _walk(state, access, root, max_depth)
    return out


def _walk(state: AgentState, access: Access, root: str, max_depth: int) -> Iterator[ResolvedObject]:
    """Depth-first: ``root`` (level 1) and its sub-objects down to ``max_depth`` (0: all)."""
    stack = [(root, 1)]
    while stack:
        obj, depth = stack.pop()
        odef = state.store.object_def(obj)
        if odef is not None and odef.params and access.allows("Obj", obj, "r"):
            yield obj, _object_params(state, access, obj)
        if max_depth == 0 or depth < max_depth:
            children = state.store.child_objects(obj)
            stack.extend((child, depth + 1) for child in reversed(children))


def _object_params(state: AgentState, access: Access, obj: str, *, full: bool = False) -> dict[str, str]:
    """Readable parameters of one object by relative name (R-GET.4 leaves out the rest)."""
    store = state.store
    odef = store.object_def(obj)
    if odef is None:
        return {}
    out: dict[str, str] = {}
    for name, pdef in odef.params.items():
        path = obj + name
        if not access.allows("Param", path, "r"):
            continue
        try:
            out[name] = read_value(store, access, pdef, path)
        except StoreError:
            continue
    if not full and out and state.faults.on("get.missing_param"):
        out.pop(next(reversed(out)))
    return out


def handle_get(state: AgentState, ctx: RequestContext) -> Msg:
    """Answer a Get with one RequestedPathResult per requested path."""
    req = ctx.msg.body.request.get
    resp = msg_pb2.GetResp()
    requested = list(req.param_paths)
    if state.faults.on("get.first_path_only"):
        requested = requested[:1]
    for text in requested:
        result = resp.req_path_results.add(requested_path=text)
        try:
            found = get_path(state, ctx.access, text, req.max_depth)
        except ResolveError as exc:
            if exc.code == errors.INVALID_PATH and state.faults.on("get.invalid_path_no_error"):
                continue  # R-GET.0 broken: reported like a search that matched nothing
            code = _error_code(state.faults, exc.code)
            if state.faults.on("get.invalid_path_fails_message"):
                return messages.error(code, exc.message, msg_id=ctx.msg_id,
                                      param_errs=[(text, code, exc.message)])
            result.err_code, result.err_msg = code, exc.message
            continue
        for obj, params in found:
            resolved = result.resolved_path_results.add(resolved_path=obj)
            resolved.result_params.update(params)
    return messages.response("get_resp", resp, msg_id=ctx.msg_id)


def _error_code(faults: FaultSet, code: int) -> int:
    if code == errors.INVALID_PATH and faults.on("get.wrong_error_code"):
        return errors.OBJECT_DOES_NOT_EXIST
    return code


# --- GetInstances ----------------------------------------------------------------------


def get_instances_path(state: AgentState, access: Access, text: str,
                       first_level_only: bool) -> list[tuple[str, dict[str, str]]]:
    """``(instantiated_obj_path, unique_keys)`` for every instance one GetInstances path matches.

    Raises :class:`ResolveError` with the code for this path's ``err_code``.
    """
    store, faults = state.store, state.faults
    path = _parse(text)
    res = resolve_search(store, text, path)
    odef = res.object_def
    if res.kind in _LEAF_KINDS or odef is None or not odef.multi_instance:
        raise ResolveError(errors.OBJECT_IS_NOT_A_TABLE, f"{text!r} is not a multi-instance object")
    if res.is_search and faults.on("gin.no_search_paths"):
        raise ResolveError(errors.INVALID_PATH, f"{text!r}: search paths are not supported")
    objects = _dedupe(res.objects)
    roots = [i for t in objects for i in store.instances(t)] if res.table else objects
    if res.is_search and not search_params_readable(access, path):
        roots = []  # R-GIN.0: treated as not present
    if faults.on("gin.ignore_first_level_only"):
        first_level_only = False
    elif faults.on("gin.no_nested_instances"):
        first_level_only = True
    found: list[str] = []
    for root in roots:
        if not access.allows("InstantiatedObj", root, "r"):  # R-GIN.0
            continue
        found.append(root)
        if not first_level_only:
            found += _nested_instances(store, access, root)
    if not found and res.is_search and faults.on("gin.unmatched_search_error"):
        raise ResolveError(errors.OBJECT_DOES_NOT_EXIST, f"{text!r} matched no instance")
    no_keys = faults.on("gin.no_unique_keys")
    return [(inst, {} if no_keys else _unique_keys(store, access, inst)) for inst in found]


def _nested_instances(store: Store, access: Access, obj: str) -> list[str]:
    """Every instance of every table below ``obj``, depth first."""
    out: list[str] = []
    for child in store.child_objects(obj):
        if _is_instance(child):
            if not access.allows("InstantiatedObj", child, "r"):
                continue
            out.append(child)
        out += _nested_instances(store, access, child)
    return out


def _unique_keys(store: Store, access: Access, inst: str) -> dict[str, str]:
    """Every unique-key parameter of an instance with its value (R-GIN.1 drops unreadable ones)."""
    odef = store.object_def(inst)
    if odef is None:
        return {}
    names = _dedupe(name for key in odef.unique_keys for name in key)
    out: dict[str, str] = {}
    for name in names:
        pdef = odef.params.get(name)
        if pdef is None or not access.allows("Param", inst + name, "r"):
            continue
        try:
            out[name] = read_value(store, access, pdef, inst + name)
        except StoreError:
            continue
    return out


def handle_get_instances(state: AgentState, ctx: RequestContext) -> Msg:
    """Answer a GetInstances with one RequestedPathResult per requested path."""
    req = ctx.msg.body.request.get_instances
    resp = msg_pb2.GetInstancesResp()
    requested = list(req.obj_paths)
    if state.faults.on("gin.first_path_only"):
        requested = requested[:1]
    for text in requested:
        result = resp.req_path_results.add(requested_path=text)
        try:
            found = get_instances_path(state, ctx.access, text, req.first_level_only)
        except ResolveError as exc:
            result.err_code, result.err_msg = exc.code, exc.message
            continue
        for inst, keys in found:
            curr = result.curr_insts.add(instantiated_obj_path=inst)
            curr.unique_keys.update(keys)
    return messages.response("get_instances_resp", resp, msg_id=ctx.msg_id)
