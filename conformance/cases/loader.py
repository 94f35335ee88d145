"""Read and validate case files (see :mod:`conformance.cases.schema`).

Errors are one line: ``<file>:<line>: <what is wrong>; <how to fix it>``.
Every expectation is compiled here (matchers), so a mistake in a case file
shows up at collection, before anything is sent to an EUT.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from conformance.cases.matchers import MatcherSyntaxError, compile_matcher
from conformance.cases.schema import (
    CONTROLLER_SETTINGS,
    FUNCTIONALITY,
    IDENTITIES,
    MTP_TOKENS,
    REQUIREMENTS,
    SECTIONS,
    STEP_ACTIONS,
    Case,
    CaseSchemaError,
    Step,
)
from conformance.usp import messages, schema

CASE_KEYS = ("id", "title", "purpose", "functionality", "requirements", "metrics", "setup",
             "steps", "cleanup", "mtps", "requires", "notes", "killed_by")
REQUIRED_KEYS = ("id", "title", "purpose", "functionality", "metrics", "steps")
SEND_OPTIONS = ("as", "expect", "capture", "note", "capture_time", "poll", "msg_id_as")
SEND_RECORD_OPTIONS = ("as", "expect", "capture", "note", "capture_time", "msg_id_as")
RECORD_KEYS = ("to_id", "from_id", "version", "payload_security", "mac_signature", "sender_cert",
               "session_context", "payload", "payload_hex", "raw")
SESSION_KEYS = ("session_id", "sequence_id", "expected_id", "retransmit_id", "payload_sar",
                "payloadrec_sar")
RECORD_EXPECT_KEYS = ("match", "from", "within", "metrics", "capture", "capture_time", "as")
NO_RECORD_KEYS = ("match", "for", "from", "metrics", "as")
NOTIFY_KEYS = ("match", "metrics", "within", "as", "capture", "capture_time", "timing", "respond")
NO_NOTIFY_KEYS = ("match", "metrics", "for", "as", "ignore_before")
REBOOT_KEYS = ("triggered", "metrics", "within", "capture_time")
TIMING_KEYS = ("since", "min", "max", "tolerance", "metrics")
MTP_KEYS = ("event", "direction", "match", "from", "within", "metrics", "capture", "capture_time",
            "timing")
NO_MTP_KEYS = ("event", "direction", "match", "for", "from", "metrics")
_FROM_WORDS = ("last", "case", "run", "now")
POLL_KEYS = ("within", "interval", "since")
EXPECT_KEYS = ("response", "error", "none", "metrics", "received", "within")
_CASE_ID = re.compile(r"^(?:\d{1,2}\.\d{1,3}|X-[A-Za-z0-9][A-Za-z0-9.-]*)$")
_REQ_ID = re.compile(r"^R-[A-Z0-9-]+\.\d+[a-z]?$")


class _LineDict(dict[str, Any]):
    """A mapping that remembers the line of itself and of each key."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> _LineDict:  # type: ignore[override]
        out = _LineDict(super().construct_mapping(node, deep=deep))
        out.line = node.start_mark.line + 1
        out.key_lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value}
        return out


# SafeLoader builds mappings through its own constructor: route them to ours.
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                        lambda loader, node: loader.construct_mapping(node, deep=True))


def _line(obj: Any, key: str | None = None) -> int:
    if isinstance(obj, _LineDict):
        if key is not None and key in obj.key_lines:
            return obj.key_lines[key]
        return obj.line
    return 0


def iter_case_files(root: Path) -> Iterator[Path]:
    """Every case file below ``root`` (``*.yaml`` not starting with ``_``), sorted by case id."""
    files = [p for p in root.rglob("*.yaml") if not p.name.startswith("_")]
    yield from sorted(files, key=lambda p: (p.parent.name, _sort_key(p.stem)))


def _sort_key(stem: str) -> tuple[Any, ...]:
    head = stem.split("-", 1)[0]
    parts = head.split(".")
    return tuple(int(x) if x.isdigit() else 10**6 for x in parts) + (stem,)


def case_sort_key(case_id: str) -> tuple[Any, ...]:
    """TP-469 order for case ids (1.2 before 1.10); project ``X-...`` ids after them."""
    def natural(parts: list[str]) -> tuple[tuple[int, int | str], ...]:
        return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)

    if case_id.startswith("X-"):
        return ((1, 0), *natural(re.split(r"[-.]", case_id[2:])))
    return ((0, 0), *natural(case_id.split(".")))


def load_case(path: Path) -> Case:
    """Parse and validate one case file; CaseSchemaError with file:line on any mistake."""
    where = str(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader
    except OSError as exc:
        raise CaseSchemaError(f"{where}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise CaseSchemaError(f"{where}:{line}: not valid YAML ({getattr(exc, 'problem', exc)}); "
                              "check indentation and quoting") from None
    if not isinstance(data, Mapping):
        raise CaseSchemaError(f"{where}:1: a case file is a mapping with {', '.join(REQUIRED_KEYS)}")
    _check_keys(data, CASE_KEYS, where, "case")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise CaseSchemaError(f"{where}:{_line(data)}: '{key}' is missing; every case needs "
                                  f"{', '.join(REQUIRED_KEYS)}")
    case_id = str(data["id"])
    if not _CASE_ID.match(case_id):
        raise CaseSchemaError(f"{where}:{_line(data, 'id')}: id {case_id!r} is neither a TP-469 "
                              "case number like \"1.12\" nor a project id like \"X-SMM-1\"")
    if not path.name.startswith(case_id + "-") and path.stem != case_id:
        raise CaseSchemaError(f"{where}:{_line(data, 'id')}: the file name must start with the "
                              f"case id: rename it to {case_id}-<slug>.yaml")
    functionality, features = _functionality(data, where)
    requirements = data.get("requirements") or []
    if not isinstance(requirements, list) or not all(
            isinstance(r, str) and _REQ_ID.match(r) for r in requirements):
        raise CaseSchemaError(f"{where}:{_line(data, 'requirements')}: requirements must be a list "
                              "of TR-369 ids like R-ADD.1")
    metrics = _metrics(data, where)
    mtps = data.get("mtps") or []
    if not isinstance(mtps, list) or any(str(m) not in MTP_TOKENS for m in mtps):
        raise CaseSchemaError(f"{where}:{_line(data, 'mtps')}: mtps is a list of "
                              f"{', '.join(MTP_TOKENS)}")
    requires = data.get("requires") or []
    if not isinstance(requires, list) or any(str(r) not in REQUIREMENTS for r in requires):
        raise CaseSchemaError(f"{where}:{_line(data, 'requires')}: requires is a list of "
                              f"{', '.join(REQUIREMENTS)}")
    sections = (SECTIONS.get(case_id.split(".")[0], "") if not case_id.startswith("X-")
                else f"{case_id.split('-')[1]} (project cases)")
    case = Case(
        case_id=case_id, title=str(data["title"]).strip(), purpose=str(data["purpose"]).strip(),
        functionality=functionality, feature_ids=features,
        requirements=tuple(requirements), metrics=metrics,
        setup=_steps(data, "setup", where, metrics),
        steps=_steps(data, "steps", where, metrics),
        cleanup=_steps(data, "cleanup", where, metrics),
        path=where, section=sections, mtps=tuple(str(m) for m in mtps),
        requires=tuple(str(r) for r in requires),
        killed_by=_killed_by(data, where, metrics),
    )
    _check_times(case, where)
    proven = {m for step in case.steps for m in _step_metrics(step)}
    missing = sorted(set(metrics) - proven)
    if missing and functionality in ("mandatory", "conditional"):
        raise CaseSchemaError(f"{where}:{_line(data, 'metrics')}: metric(s) {missing} are not "
                              "proved by any step; add them to an expect's 'metrics'")
    return case


def _killed_by(data: Mapping[str, Any], where: str, metrics: Mapping[int, str]) -> dict[str, int]:
    """``killed_by: {fault: metric}``: faults of the reference agent that must fail the case."""
    raw = data.get("killed_by") or {}
    line = _line(data, "killed_by")
    if not isinstance(raw, Mapping):
        raise CaseSchemaError(f"{where}:{line}: killed_by maps reference-agent fault names to "
                              "the metric number each breaks")
    from conformance.agent.faults import catalogue

    known = catalogue()
    out: dict[str, int] = {}
    for fault, metric in raw.items():
        if fault not in known:
            hint = difflib.get_close_matches(str(fault), known, n=1)
            raise CaseSchemaError(f"{where}:{_line(raw, str(fault)) or line}: unknown fault "
                                  f"'{fault}'" + (f"; did you mean '{hint[0]}'?" if hint else
                                                  "; see usp-conformance agent --list-faults"))
        if not isinstance(metric, int) or (metric not in metrics and not 901 <= metric <= 904):
            raise CaseSchemaError(f"{where}:{_line(raw, str(fault)) or line}: killed_by "
                                  f"{fault}: {metric!r} is not a metric of this case")
        out[str(fault)] = metric
    return out


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], where: str, what: str) -> None:
    for key in data:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            fix = f"did you mean '{hint[0]}'?" if hint else f"allowed: {', '.join(allowed)}"
            raise CaseSchemaError(f"{where}:{_line(data, str(key))}: unknown {what} key "
                                  f"'{key}'; {fix}")


def _functionality(data: Mapping[str, Any], where: str) -> tuple[str, tuple[int, ...]]:
    value = data["functionality"]
    line = _line(data, "functionality")
    if isinstance(value, str) and value in FUNCTIONALITY and value != "conditional":
        return value, ()
    if isinstance(value, Mapping) and set(value) == {"conditional"}:
        ids = value["conditional"]
        if isinstance(ids, list) and ids and all(isinstance(i, int) and 1 <= i <= 42 for i in ids):
            return "conditional", tuple(ids)
    raise CaseSchemaError(f"{where}:{line}: functionality must be mandatory, deprecated, future "
                          "or {conditional: [<TP-469 Feature IDs>]}")


def _metrics(data: Mapping[str, Any], where: str) -> dict[int, str]:
    raw = data["metrics"]
    line = _line(data, "metrics")
    if isinstance(raw, list):
        raw = {i: text for i, text in enumerate(raw, 1)}
    if not isinstance(raw, Mapping) or not raw or not all(
            isinstance(k, int) and k > 0 and isinstance(v, str) for k, v in raw.items()):
        raise CaseSchemaError(f"{where}:{line}: metrics must map numbers (1, 2, ...) to the "
                              "metric text")
    return {int(k): str(v).strip() for k, v in raw.items()}


def _steps(data: Mapping[str, Any], key: str, where: str,
           metrics: Mapping[int, str]) -> tuple[Step, ...]:
    raw = data.get(key) or []
    if not isinstance(raw, list):
        raise CaseSchemaError(f"{where}:{_line(data, key)}: '{key}' must be a list of steps")
    out = []
    for index, item in enumerate(raw, 1):
        line = _line(item) or _line(data, key)
        if not isinstance(item, Mapping):
            raise CaseSchemaError(f"{where}:{line}: {key} step {index} must be a mapping with one "
                                  f"of {', '.join(STEP_ACTIONS)}")
        actions = [k for k in item if k in STEP_ACTIONS]
        if len(actions) != 1:
            unknown = [k for k in item if k not in STEP_ACTIONS and k not in SEND_OPTIONS]
            hint = ""
            if unknown:
                close = difflib.get_close_matches(str(unknown[0]), STEP_ACTIONS, n=1)
                hint = f" ('{unknown[0]}': did you mean '{close[0]}'?)" if close else \
                    f" (unknown key '{unknown[0]}')"
            raise CaseSchemaError(f"{where}:{line}: {key} step {index} needs exactly one action "
                                  f"of {', '.join(STEP_ACTIONS)}{hint}")
        action = actions[0]
        options = {k: v for k, v in item.items() if k != action}
        step = Step(action, item[action], options, line, index)
        _validate_step(step, where, key, metrics)
        out.append(step)
    return tuple(out)


def _validate_step(step: Step, where: str, key: str, metrics: Mapping[int, str]) -> None:
    loc = f"{where}:{step.line}: {key} step {step.index} ({step.action})"
    if step.identity not in IDENTITIES:
        raise CaseSchemaError(f"{loc}: 'as' must be one of {', '.join(IDENTITIES)}")
    if step.action == "send":
        _check_keys(step.options, SEND_OPTIONS, where, "send option")
        _check_request(step.body, loc)
        expect = step.options.get("expect")
        if expect is not None:
            _check_expect(expect, loc, metrics)
        poll = step.options.get("poll")
        if poll is not None:
            if not isinstance(poll, Mapping) or not _number(poll.get("within")):
                raise CaseSchemaError(f"{loc}: poll needs 'within' (seconds), e.g. "
                                      "{within: 25, interval: 1}")
            _check_keys(poll, POLL_KEYS, where, "poll key")
            if expect is None or "none" in expect:
                raise CaseSchemaError(f"{loc}: poll repeats until a response or error matches; "
                                      "add expect: {response: ...}")
    elif step.action == "send_record":
        _check_send_record(step, where, loc, metrics)
    elif step.action == "resend":
        if not isinstance(step.body, Mapping) or not isinstance(step.body.get("times", 1), int):
            raise CaseSchemaError(f"{loc}: resend takes {{times: n}}")
        _check_keys(step.body, ("times",), where, "resend key")
        _check_keys(step.options, ("as", "expect", "note"), where, "resend option")
        if step.options.get("expect") is not None:
            _check_expect(step.options["expect"], loc, metrics)
    elif step.action in ("expect_record", "expect_no_record"):
        body = step.body
        no = step.action == "expect_no_record"
        if not isinstance(body, Mapping) or "match" not in body or (
                no and not _number(body.get("for"))):
            raise CaseSchemaError(f"{loc}: needs 'match' (a matcher on the Record)"
                                  + (" and 'for' (seconds to watch)" if no else ""))
        _check_keys(body, NO_RECORD_KEYS if no else RECORD_EXPECT_KEYS, where,
                    f"{step.action} key")
        if body.get("from", "send") not in ("send", "last", "case", "now"):
            raise CaseSchemaError(f"{loc}: 'from' is send, last, case or now")
        _check_identity(body, loc)
        _compile(body["match"], loc)
        _check_metric_refs(body.get("metrics", []), loc, metrics)
    elif step.action == "expect_notification":
        body = step.body
        if not isinstance(body, Mapping) or "match" not in body:
            raise CaseSchemaError(f"{loc}: needs 'match' (a matcher on the Notify body)")
        _check_keys(body, NOTIFY_KEYS, where, "notification key")
        _check_identity(body, loc)
        _compile(body["match"], loc)
        _check_metric_refs(body.get("metrics", []), loc, metrics)
        _check_timing(body.get("timing"), where, loc, metrics)
    elif step.action == "expect_no_notification":
        body = step.body
        if not isinstance(body, Mapping) or "match" not in body or not _number(body.get("for")):
            raise CaseSchemaError(f"{loc}: needs 'match' (a matcher on the Notify body) and 'for' "
                                  "(seconds to watch)")
        _check_keys(body, NO_NOTIFY_KEYS, where, "no-notification key")
        _check_identity(body, loc)
        _compile(body["match"], loc)
        _check_metric_refs(body.get("metrics", []), loc, metrics)
        ignore = body.get("ignore_before")
        if ignore is not None and (not isinstance(ignore, Mapping) or "since" not in ignore
                                   or not _number(ignore.get("seconds"))):
            raise CaseSchemaError(f"{loc}: ignore_before needs 'since' (a capture_time name) and "
                                  "'seconds'")
    elif step.action in ("expect_mtp", "expect_no_mtp"):
        body = step.body
        keys = MTP_KEYS if step.action == "expect_mtp" else NO_MTP_KEYS
        if not isinstance(body, Mapping) or not isinstance(body.get("event"), str):
            raise CaseSchemaError(f"{loc}: needs 'event' (a timeline event such as mqtt.CONNECT, "
                                  "stomp.SUBSCRIBE, ws.handshake_request)")
        _check_keys(body, keys, where, f"{step.action} key")
        if body.get("direction", "in") not in ("in", "out", "local"):
            raise CaseSchemaError(f"{loc}: direction is in (from the EUT), out (from the suite) "
                                  "or local")
        if step.action == "expect_no_mtp" and not _number(body.get("for")):
            raise CaseSchemaError(f"{loc}: needs 'for' (seconds to watch)")
        _compile(body.get("match", {}), loc)
        _check_metric_refs(body.get("metrics", []), loc, metrics)
        _check_timing(body.get("timing"), where, loc, metrics)
    elif step.action == "reboot":
        body = step.body if step.body is not None else {}
        if not isinstance(body, Mapping):
            raise CaseSchemaError(f"{loc}: reboot takes {{}} or {{triggered: true, metrics: [..]}}")
        _check_keys(body, REBOOT_KEYS, where, "reboot key")
        _check_metric_refs(body.get("metrics", []), loc, metrics)
    elif step.action == "controller":
        if not isinstance(step.body, Mapping) or not step.body:
            raise CaseSchemaError(f"{loc}: controller takes settings such as "
                                  "{auto_notify_resp: false}")
        _check_keys(step.body, CONTROLLER_SETTINGS, where, "controller setting")
    elif step.action == "wait":
        if not isinstance(step.body, Mapping) or not isinstance(step.body.get("seconds"), (int, float)):
            raise CaseSchemaError(f"{loc}: wait needs 'seconds' (and a 'reason')")
    elif step.action == "scenario":
        if not isinstance(step.body, Mapping) or "mtp" not in step.body or "set" not in step.body:
            raise CaseSchemaError(f"{loc}: scenario needs 'mtp' and 'set'")
    elif step.action == "python":
        if not isinstance(step.body, Mapping) or "action" not in step.body:
            raise CaseSchemaError(f"{loc}: python needs 'action' (an entry point name)")


def _check_send_record(step: Step, where: str, loc: str, metrics: Mapping[int, str]) -> None:
    """A ``send_record`` step: known Record fields, a valid payload request, an expect
    only where a Msg is carried."""
    body = step.body
    if not isinstance(body, Mapping):
        raise CaseSchemaError(f"{loc}: send_record takes Record fields, e.g. "
                              "{from_id: ..., payload: {get: {...}}}")
    _check_keys(body, RECORD_KEYS, where, "Record field")
    _check_keys(step.options, SEND_RECORD_OPTIONS, where, "send_record option")
    if "raw" in body and len(body) > 1:
        raise CaseSchemaError(f"{loc}: 'raw' gives the whole Record; drop the other fields")
    for key in ("raw", "payload_hex"):
        if key in body:
            try:
                bytes.fromhex(re.sub(r"\s+", "", str(body[key])))
            except ValueError:
                raise CaseSchemaError(f"{loc}: '{key}' must be hexadecimal bytes") from None
    sc = body.get("session_context")
    if sc is not None:
        if not isinstance(sc, Mapping):
            raise CaseSchemaError(f"{loc}: session_context takes {{session_id, sequence_id, "
                                  "expected_id, retransmit_id, payload_sar, payloadrec_sar}")
        _check_keys(sc, SESSION_KEYS, where, "session_context field")
    if body.get("payload_security", "PLAINTEXT") not in ("PLAINTEXT", "TLS12"):
        raise CaseSchemaError(f"{loc}: payload_security is PLAINTEXT or TLS12")
    payload = body.get("payload")
    if payload is not None and "payload_hex" in body:
        raise CaseSchemaError(f"{loc}: give either payload (a request) or payload_hex (bytes)")
    if payload is not None and payload != "none":
        _check_request(payload, loc)
    expect = step.options.get("expect")
    if expect is not None:
        if payload is None or payload == "none":
            raise CaseSchemaError(f"{loc}: expect needs a payload request to be answered; use "
                                  "expect_record / expect_no_record for Records without one")
        _check_expect(expect, loc, metrics)


def _check_timing(timing: Any, where: str, loc: str, metrics: Mapping[int, str]) -> None:
    """A ``timing`` window: ``since`` (a capture_time name), ``max`` and its metrics."""
    if timing is None:
        return
    if not isinstance(timing, Mapping) or "since" not in timing or not _number(timing.get("max")):
        raise CaseSchemaError(f"{loc}: timing needs 'since' (a capture_time name) and "
                              "'max' (seconds), e.g. {since: first, min: 5, max: 10}")
    _check_keys(timing, TIMING_KEYS, where, "timing key")
    _check_metric_refs(timing.get("metrics", []), loc, metrics)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _check_identity(body: Mapping[str, Any], loc: str) -> None:
    if str(body.get("as", "primary")) not in IDENTITIES:
        raise CaseSchemaError(f"{loc}: 'as' must be one of {', '.join(IDENTITIES)}")


def _check_times(case: Case, where: str) -> None:
    """Every ``since`` names a ``capture_time`` of an earlier step (setup, then steps)."""
    known: set[str] = set()
    for step in (*case.setup, *case.steps, *case.cleanup):
        body = step.body if isinstance(step.body, Mapping) else {}
        refs = []
        if step.action in ("expect_notification", "expect_mtp") and isinstance(
                body.get("timing"), Mapping):
            refs.append(body["timing"].get("since"))
        if step.action in ("expect_mtp", "expect_no_mtp") and body.get("from") is not None \
                and body["from"] not in _FROM_WORDS:
            refs.append(body["from"])
        if step.action == "expect_no_notification" and isinstance(body.get("ignore_before"),
                                                                  Mapping):
            refs.append(body["ignore_before"].get("since"))
        poll = step.options.get("poll")
        if isinstance(poll, Mapping) and "since" in poll:
            refs.append(poll["since"])
        for ref in refs:
            if str(ref) not in known:
                raise CaseSchemaError(
                    f"{where}:{step.line}: step {step.index} ({step.action}) refers to the time "
                    f"{ref!r}, which no earlier step captures; add capture_time: {ref} to the step "
                    "it measures from")
        name = step.options.get("capture_time") or body.get("capture_time")
        if name:
            known.add(str(name))


def _with_default_alternates(value: Any) -> Any:
    """``value`` with every whole-string ``{alt.name}`` replaced by that alternate's default,
    so that a mapping alternate (``input_args: "{alt.async_command_args}"``) can be checked."""
    from conformance.eut import ALTERNATES

    if isinstance(value, str):
        m = re.fullmatch(r"\{alt\.([A-Za-z_][A-Za-z0-9_]*)\}", value)
        alt = ALTERNATES.get(m.group(1)) if m else None
        return value if alt is None else (dict(alt.default) if isinstance(alt.default, Mapping)
                                           else str(alt.default))
    if isinstance(value, Mapping):
        return {k: _with_default_alternates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_default_alternates(v) for v in value]
    return value


def _check_request(body: Any, loc: str) -> None:
    body = _with_default_alternates(body)
    if isinstance(body, Mapping) and len(body) == 1:
        (kind, fields), = body.items()
        try:
            if kind == "text":
                messages.msg_from_text(str(fields), msg_id="check")
                return
            if kind == "msg":
                messages.msg_from_mapping(fields, msg_id="check")
                return
            if kind in schema.REQUEST_KINDS:
                messages.request(kind, fields, msg_id="check")
                return
        except messages.MsgBuildError as exc:
            raise CaseSchemaError(f"{loc}: {exc}") from None
    raise CaseSchemaError(f"{loc}: send takes {{<request kind>: {{fields}}}} (kinds: "
                          f"{', '.join(sorted(schema.REQUEST_KINDS))}), {{msg: ...}} or {{text: ...}}")


def _check_expect(expect: Any, loc: str, metrics: Mapping[int, str]) -> None:
    if not isinstance(expect, Mapping):
        raise CaseSchemaError(f"{loc}: expect must be a mapping with response, error or none")
    for k in expect:
        if k not in EXPECT_KEYS:
            hint = difflib.get_close_matches(str(k), EXPECT_KEYS, n=1)
            raise CaseSchemaError(f"{loc}: unknown expect key '{k}'" +
                                  (f"; did you mean '{hint[0]}'?" if hint else ""))
    kinds = [k for k in ("response", "error", "none") if k in expect]
    if len(kinds) != 1:
        raise CaseSchemaError(f"{loc}: expect needs exactly one of response, error, none")
    if kinds[0] in ("response", "error"):
        _compile(expect[kinds[0]], loc)
    _check_metric_refs(expect.get("metrics", []), loc, metrics)
    _check_metric_refs(expect.get("received", []), loc, metrics)


def _check_metric_refs(refs: Any, loc: str, metrics: Mapping[int, str]) -> None:
    if not isinstance(refs, list) or not all(isinstance(m, int) for m in refs):
        raise CaseSchemaError(f"{loc}: 'metrics' must be a list of metric numbers")
    unknown = [m for m in refs if m not in metrics]
    if unknown:
        raise CaseSchemaError(f"{loc}: metric(s) {unknown} are not defined under 'metrics'")


def _compile(expected: Any, loc: str) -> None:
    try:
        compile_matcher(expected, where=loc)
    except MatcherSyntaxError as exc:
        raise CaseSchemaError(f"{loc}: {exc}") from None


def _step_metrics(step: Step) -> list[int]:
    if step.action in ("send", "send_record", "resend"):
        expect = step.options.get("expect") or {}
        return list(expect.get("metrics", [])) + list(expect.get("received", []))
    body = step.body if isinstance(step.body, Mapping) else {}
    if step.action in ("expect_notification", "expect_mtp"):
        timing = body.get("timing") or {}
        return list(body.get("metrics", [])) + list(timing.get("metrics", []))
    if step.action in ("expect_no_notification", "expect_no_mtp", "reboot", "expect_record",
                       "expect_no_record"):
        return list(body.get("metrics", []))
    return []
