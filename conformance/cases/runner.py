"""Run one case against an EUT and give its TP-469 verdict with evidence.

:class:`CaseRunner` executes setup, steps and cleanup (cleanup always runs)
through an :class:`Environment` (controller identities, the EUT's reboot
method, the suite's MTP servers, the timeline) and returns a
:class:`~conformance.report.model.CaseResult`:

* ``fail``: the EUT broke a metric (a mismatch, no answer in time, or a
  universal-metric violation in what it sent); the failed metric shows
  expected vs observed;
* ``error``: the suite or the setup broke (never shown as an EUT failure);
* ``warn``: passed, with SHOULD-level observations;
* ``pass`` otherwise. Applicability (``skip``) is decided before running.

After the first failed check the procedure stops and cleanup runs.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from conformance.cases.matchers import UnknownVariable, compile_matcher, substitute
from conformance.cases.schema import Case, Step
from conformance.controller.controller import Controller, ControllerTimeout, Received
from conformance.mtp.timeline import Timeline, TimelineTimeout, UnexpectedEntry
from conformance.report.model import CaseResult, MetricResult
from conformance.usp import messages, records
from conformance.usp.render import render_msg, summary
from conformance.usp.schema import (
    Msg,
    PayloadSARState,
    PayloadSecurity,
    Record,
    body_kind,
)

UNIVERSAL_BASE = 900  # metric numbers 901..904: TP-469 universal test metrics
UNIVERSAL_TEXT = {
    1: "Universal metric 1: the EUT's Endpoint ID is valid",
    2: "Universal metric 2: Records and Msgs follow the USP schemas",
    3: "Universal metric 3: paths follow the path grammar",
    4: "Universal metric 4: reported paths use instance number addressing",
}


class StepFailed(Exception):
    """An EUT failure: a metric was not met (already recorded)."""


class SuiteError(Exception):
    """The suite or the setup could not do what the case asked."""


class EUTNotBack(SuiteError):
    """The EUT did not reboot or reconnect in time (an EUT failure where a metric
    says it must come back, TP-469 1.61/1.62; a suite error otherwise)."""


@dataclass
class Environment:
    """What a case runs against."""

    controllers: Mapping[str, Controller]          # identity -> Controller
    agent_id: str
    timeline: Timeline
    alternates: Mapping[str, Any] = field(default_factory=dict)
    response_timeout: float = 10.0
    notification_timeout: float = 30.0
    #: ``reboot(triggered=, since=, timeout=)``: reboot the EUT (unless the case already
    #: ``triggered`` it), then wait until it is connected again; raises :class:`EUTNotBack`
    reboot: Callable[..., Awaitable[None]] | None = None
    scenario: Callable[[str, Mapping[str, Any]], Awaitable[None]] | None = None
    #: put every suite server back on the run's own scenario (after a case scripted one)
    reset_scenarios: Callable[[], Awaitable[None]] | None = None
    #: make sure the EUT is up before a case (e.g. after an earlier case rebooted it and
    #: failed before waiting for the reconnect); raises SuiteError when it does not come back
    ready: Callable[[], Awaitable[None]] | None = None
    actions: Mapping[str, Callable[..., Awaitable[None]]] = field(default_factory=dict)
    mtp: str = ""
    tls: bool = False            # the run's MTP is protected by TLS
    #: what the run offers beyond TLS for ``requires:`` (e.g. ``no-absolute-time``)
    offers: frozenset[str] = frozenset()


class CaseRunner:
    """One run of one case."""

    def __init__(self, case: Case, env: Environment) -> None:
        self.case = case
        self.env = env
        self.variables: dict[str, Any] = {
            "alt": dict(env.alternates),
            # {controller.primary}: the Endpoint ID of each identity the suite plays
            "controller": {name: c.endpoint_id for name, c in env.controllers.items()},
            "agent": {"endpoint_id": env.agent_id},
            # {session.id}, {session.other_id}: fresh session ids for Records a case writes
            "session": dict(zip(("id", "other_id"), random.sample(range(2, 2**31), 2))),
        }
        self.metrics = {n: MetricResult(n, text) for n, text in case.metrics.items()}
        self.result = CaseResult(
            case_id=case.case_id, title=case.title, section=case.section,
            functionality=case.functionality, verdict="pass",
            feature_ids=list(case.feature_ids), requirements=list(case.requirements),
            alternates={k: v if isinstance(v, str) else json.dumps(v, sort_keys=True)
                        for k, v in env.alternates.items()}, mtp=env.mtp)
        self._marks = {name: c.mark for name, c in env.controllers.items()}
        self._start_entry = len(env.timeline)
        #: ``capture_time`` names -> monotonic seconds (for ``timing`` and ``since``)
        self.times: dict[str, float] = {}
        #: controller settings a ``controller`` step changed, restored when the case ends
        self._saved_settings: dict[tuple[str, str], Any] = {}
        #: each identity's mark just before its last send (a triggered reboot waits from there)
        self._sent_marks: dict[str, int] = {}
        self._quiet = False
        self._scripted = False   # a scenario step changed a suite server
        #: timeline cursors for ``expect_mtp``: the case's first entry, after the last match
        self._case_seq = env.timeline.next_seq
        self._mtp_seq: int | None = None
        #: ``expect_record`` cursors: each identity's first index of the case, after the last match
        self._case_marks = dict(self._marks)
        self._record_marks: dict[str, int] = {}
        #: each identity's last Msg sent (``resend`` repeats its Record)
        self._last_msg: dict[str, Msg] = {}

    def not_applicable(self) -> str | None:
        """Why this run cannot carry the case (its MTP, TLS, a controller identity), or None."""
        case, env = self.case, self.env
        over = f"over {env.mtp} " if env.mtp else ""
        if env.mtp and not case.applies_to(env.mtp):
            return f"not applicable over {env.mtp}: the case is about {', '.join(case.mtps)}"
        if "tls" in case.requires and not env.tls:
            return f"not applicable: the case needs the MTP over TLS and this run {over}has none"
        lacking = [r for r in case.requires if r != "tls" and r not in env.offers]
        if lacking:
            return f"not applicable: the case needs a run with {', '.join(lacking)}"
        uses_e2e = any(step.action == "controller" and isinstance(step.body, Mapping)
                       and "e2e_security" in step.body
                       for step in (*case.setup, *case.steps, *case.cleanup))
        if uses_e2e and any(getattr(c, "e2e_pki", None) is None
                            for c in env.controllers.values()):
            return ("not applicable in this run: it has no E2E credentials for the EUT "
                    "(the EUT's E2E trust anchors and the controllers' E2E certificates)")
        missing = [i for i in case.identities if i not in env.controllers]
        if missing:  # e.g. a second controller over an MTP where the run has one connection
            return (f"not applicable in this run: the case acts as the {', '.join(missing)} "
                    f"controller, which this run {over}does not provide")
        return None

    async def run(self) -> CaseResult:
        reason = self.not_applicable()
        if reason is not None:
            self.result.verdict = "skip"
            self.result.reason = reason
            return self.result
        started = time.monotonic()
        try:
            try:
                if self.env.ready is not None:
                    await self.env.ready()
                for step in self.case.setup:
                    await self._step(step, phase="setup")
            except (StepFailed, SuiteError, ControllerTimeout) as exc:
                self._error(f"setup step failed: {exc}")
            else:
                try:
                    for step in self.case.steps:
                        await self._step(step, phase="steps")
                except StepFailed:
                    pass
                except (SuiteError, UnknownVariable) as exc:
                    self._error(str(exc))
        except Exception as exc:  # a suite bug: an error, never an EUT failure
            self._error(f"suite error: {type(exc).__name__}: {exc}")
        finally:
            self._restore_controllers()
            await self._reset_scenarios()
            await self._cleanup()
            self.result.duration = round(time.monotonic() - started, 3)
            self._finish()
        return self.result

    # --- steps ---------------------------------------------------------------------------

    async def _step(self, step: Step, *, phase: str) -> None:
        handler = getattr(self, f"_do_{step.action}")
        await handler(step, phase)

    async def _do_send(self, step: Step, phase: str) -> None:
        if step.options.get("poll") is not None:
            await self._poll(step, phase)
            return
        await self._send_once(step, phase)

    async def _poll(self, step: Step, phase: str) -> None:
        """Re-send until the expectation holds or ``within`` seconds have passed."""
        spec = step.options["poll"]
        start = self._time(spec["since"]) if "since" in spec else time.monotonic()
        deadline = start + float(spec["within"])
        interval = float(spec.get("interval", 1.0))
        while True:
            final = time.monotonic() + interval >= deadline
            try:
                await self._send_once(step, phase, quiet=not final)
                return
            except _Unmet:
                await asyncio.sleep(interval)

    async def _send_once(self, step: Step, phase: str, *, quiet: bool = False) -> None:
        """One send; with ``quiet`` a mismatch raises :class:`_Unmet` instead of failing."""
        ctrl = self._controller(step.identity)
        msg = self._build(step.body)
        expect = step.options.get("expect")
        mark = ctrl.mark
        self._sent_marks[step.identity] = mark
        msg_id = await ctrl.send(msg)
        self._sent(step, ctrl, msg)
        self.result.messages.append(f"-> {step.identity}: {render_msg(msg)}")
        if expect is None:
            if phase == "cleanup":  # let the EUT finish restoring before the next case
                try:
                    await ctrl.response(msg_id, timeout=self.env.response_timeout)
                except ControllerTimeout:
                    self.result.warnings.append(f"cleanup step {step.index}: no answer to "
                                                f"{msg_id!r}")
            return
        if quiet:
            self._quiet = True
        try:
            await self._expect_reply(step, phase, ctrl, msg, msg_id, expect, mark)
        finally:
            self._quiet = False

    def _sent(self, step: Step, ctrl: Controller, msg: Msg | None) -> None:
        """After a send: ``capture_time``, ``msg_id_as`` and the ``{sent...}`` variables."""
        if step.options.get("capture_time"):
            self.times[str(step.options["capture_time"])] = time.monotonic()
        rec: dict[str, Any] = {}
        if ctrl.last_sent is not None:
            try:
                rec = records.to_mapping(records.parse_record(ctrl.last_sent))
            except records.RecordDecodeError:
                rec = {}
        msg_id = msg.header.msg_id if msg is not None else ""
        self.variables["sent"] = {"msg_id": msg_id, "record": rec}
        if msg is not None:
            self._last_msg[step.identity] = msg
        if step.options.get("msg_id_as"):
            self.variables[str(step.options["msg_id_as"])] = msg_id

    async def _do_send_record(self, step: Step, phase: str) -> None:
        """A Record the case writes field by field (addressing, security fields, session
        fields, or raw bytes), sent as it is on the identity's MTP binding."""
        ctrl = self._controller(step.identity)
        body = substitute(dict(step.body), self.variables)
        msg: Msg | None = None
        mark = ctrl.mark
        self._sent_marks[step.identity] = mark
        if "raw" in body:
            data = bytes.fromhex(re.sub(r"\s+", "", str(body["raw"])))
            await ctrl.send_raw(data, decoded=f"{len(data)} raw bytes (malformed Record)")
            self.result.messages.append(f"-> {step.identity}: {len(data)} raw bytes")
        else:
            payload = body.get("payload")
            if payload is not None and payload != "none":
                msg = self._build(payload)
                messages.complete_header(msg, allocator=ctrl.allocator)
            rec = self._record(body, ctrl, msg)
            if "payload_hex" in body:  # payload bytes as given (e.g. not a Msg at all)
                raw = _field_bytes({"hex": body["payload_hex"]})
                if rec.WhichOneof("record_type") == "session_context":
                    rec.session_context.payload[:] = [raw]
                else:
                    rec.no_session_context.payload = raw
            await ctrl.send_record(rec, to=ctrl.default_agent, msg=msg)
            self.result.messages.append(f"-> {step.identity}: {summary(rec)}"
                                        + (f" {render_msg(msg)}" if msg is not None else ""))
        self._sent(step, ctrl, msg)
        expect = step.options.get("expect")
        if expect is not None and msg is not None:
            await self._expect_reply(step, phase, ctrl, msg, msg.header.msg_id, expect, mark)

    def _record(self, body: Mapping[str, Any], ctrl: Controller, msg: Msg | None) -> Record:
        """The Record a ``send_record`` step describes (defaults: the identity's own
        addressing, PLAINTEXT, the case's ``{session.id}``)."""
        try:
            security = records.Security(
                payload_security=PayloadSecurity.Value(str(body.get("payload_security",
                                                                    "PLAINTEXT"))),
                mac_signature=_field_bytes(body.get("mac_signature")),
                sender_cert=_field_bytes(body.get("sender_cert")))
            common = {"to_id": str(body.get("to_id", self.env.agent_id)),
                      "from_id": str(body.get("from_id", ctrl.endpoint_id)),
                      "version": str(body.get("version", ctrl.usp_version)),
                      "security": security}
            payload = msg.SerializeToString() if msg is not None else None
            sc = body.get("session_context")
            if sc is None:
                return records.no_session_record(payload or b"", **common)
            sc = dict(sc)
            return records.session_record(
                session_id=int(sc.get("session_id", self.variables["session"]["id"])),
                sequence_id=int(sc.get("sequence_id", 1)),
                expected_id=int(sc.get("expected_id", 1)),
                retransmit_id=int(sc.get("retransmit_id", 0)),
                payloads=[payload] if payload is not None else [],
                payload_sar_state=PayloadSARState.Value(str(sc.get("payload_sar", "NONE"))),
                payloadrec_sar_state=PayloadSARState.Value(str(sc.get("payloadrec_sar", "NONE"))),
                **common)
        except (ValueError, TypeError) as exc:
            raise SuiteError(f"cannot build the Record: {exc}") from None

    async def _do_resend(self, step: Step, phase: str) -> None:
        """The identity's last Record again, byte for byte, ``times`` times (duplicates)."""
        ctrl = self._controller(step.identity)
        if ctrl.last_sent is None:
            raise SuiteError("resend: this controller has sent no Record yet")
        mark = ctrl.mark
        self._sent_marks[step.identity] = mark
        times = int((step.body or {}).get("times", 1))
        for _ in range(times):
            await ctrl.send_raw(ctrl.last_sent, decoded="the previous Record again")
        self.result.messages.append(f"-> {step.identity}: the previous Record {times} more time(s)")
        msg = self._last_msg.get(step.identity)
        expect = step.options.get("expect")
        if expect is not None and msg is not None:
            await self._expect_reply(step, phase, ctrl, msg, msg.header.msg_id, expect, mark)

    def _record_view(self, item: Received) -> dict[str, Any]:
        """What ``expect_record`` matches: the Record's fields plus its decoded ``msg``."""
        view: dict[str, Any] = records.to_mapping(item.record) if item.record is not None else {}
        if item.msg is not None:
            view["msg"] = messages.to_mapping(item.msg)
        return view

    def _record_since(self, where: Any, identity: str, ctrl: Controller) -> int:
        """``from`` of the record steps: ``send`` (after the identity's last send; the
        default), ``last`` (after the previous expect_record match), ``case``, ``now``."""
        case_start = self._case_marks.get(identity, 0)
        if where in (None, "send"):
            return self._sent_marks.get(identity, case_start)
        if where == "last":
            return self._record_marks.get(identity, self._sent_marks.get(identity, case_start))
        if where == "now":
            return ctrl.mark
        return case_start

    async def _do_expect_record(self, step: Step, phase: str) -> None:
        """A Record from the EUT whose fields (and decoded Msg) match (TP-469 sections 2, 3)."""
        body = step.body
        identity = str(body.get("as", "primary"))
        ctrl = self._controller(identity)
        matcher = compile_matcher(substitute(body["match"], self.variables))
        metrics = list(body.get("metrics", []))
        within = float(body.get("within", self.env.response_timeout))
        since = self._record_since(body.get("from"), identity, ctrl)
        try:
            item = await ctrl.wait_for(
                lambda r: r.record is not None
                and matcher.match(self._record_view(r), context={}).ok,
                what=f"Record matching step {step.index}", timeout=within, since=since)
        except ControllerTimeout:
            seen = [self._record_view(r) for r in ctrl.received[since:] if r.record is not None]
            self._fail(metrics, f"no matching Record within {within:g}s ({len(seen)} other "
                       "Records received)", expected=matcher.describe(),
                       observed=seen[-3:] or "nothing", phase=phase)
            return
        view = self._record_view(item)
        assert item.record is not None
        self.result.messages.append(f"<- {identity}: {summary(item.record)}")
        self._universal(item)
        self._record_marks[identity] = item.index + 1
        self.variables.update(matcher.match(view, context={}).captures)
        if body.get("capture_time"):
            self.times[str(body["capture_time"])] = item.inbound.received_at
        self._pass(metrics)
        self._capture(body.get("capture"), view)

    async def _do_expect_no_record(self, step: Step, phase: str) -> None:
        """No matching Record from the EUT during ``for`` seconds."""
        body = step.body
        identity = str(body.get("as", "primary"))
        ctrl = self._controller(identity)
        matcher = compile_matcher(substitute(body["match"], self.variables))
        metrics = list(body.get("metrics", []))
        since = self._record_since(body.get("from"), identity, ctrl)
        try:
            item = await ctrl.wait_for(
                lambda r: r.record is not None
                and matcher.match(self._record_view(r), context={}).ok,
                what="unwanted Record", timeout=float(body["for"]), since=since)
        except ControllerTimeout:
            self._pass(metrics)
            return
        self._fail(metrics, "the EUT sent a Record although none is due",
                   expected=f"no Record matching {matcher.describe()} for {body['for']}s",
                   observed=self._record_view(item), phase=phase)

    async def _expect_reply(self, step: Step, phase: str, ctrl: Controller, msg: Msg,
                            msg_id: str, expect: Mapping[str, Any], mark: int) -> None:
        metrics = list(expect.get("metrics", []))
        received = list(expect.get("received", []))
        within = float(expect.get("within", self.env.response_timeout))
        if "none" in expect:
            await self._expect_none(ctrl, msg_id, expect["none"], metrics, within, mark)
            return
        try:
            reply = await ctrl.response(msg_id, timeout=within)
        except ControllerTimeout:
            self._fail(received + metrics, f"no response to {msg_id!r} within {within:g}s",
                       expected=self._describe(expect), observed="nothing", phase=phase)
            return
        item = self._item_for(ctrl, reply)
        self.result.messages.append(f"<- {step.identity}: {render_msg(reply)}")
        self._universal(item)
        outer, inner = body_kind(reply)
        want = "response" if "response" in expect else "error"
        observed = messages.to_mapping(reply)["body"].get(outer or "", {})
        if outer != want:
            self._fail(received + metrics, f"expected {'a response' if want == 'response' else 'an Error'}, "
                       f"got {outer or 'an empty body'} ({inner or ''})",
                       expected=expect[want], observed=observed, phase=phase)
            return
        self._pass(received)
        self._check(expect[want], observed, metrics, phase, kind=self._request_kind(msg))
        self._capture(step.options.get("capture"), observed)

    async def _expect_none(self, ctrl: Controller, msg_id: str, spec: Any, metrics: list[int],
                           within: float, mark: int) -> None:
        """No answer to ``msg_id``: proved by a probe answered first, else by waiting."""
        probe = spec.get("probe") if isinstance(spec, Mapping) else None
        if probe is not None:
            probe_id = await ctrl.send(self._build(probe))
            try:
                await ctrl.response(probe_id, timeout=within)
            except ControllerTimeout:
                raise SuiteError(f"the probe sent to prove 'no response' got no answer within "
                                 f"{within:g}s") from None
        else:
            await asyncio.sleep(within)  # only when TP-469 gives nothing to probe with
        answered = [r for r in ctrl.received[mark:]
                    if r.msg is not None and r.msg.header.msg_id == msg_id
                    and body_kind(r.msg)[0] in ("response", "error")]
        if answered:
            self._fail(metrics, f"the EUT answered {msg_id!r} although no response is due",
                       expected="no response", observed=messages.to_mapping(answered[0].msg),
                       phase="steps")
        else:
            self._pass(metrics)

    async def _do_expect_notification(self, step: Step, phase: str) -> None:
        body = step.body
        identity = str(body.get("as", "primary"))
        ctrl = self._controller(identity)
        matcher = compile_matcher(substitute(body["match"], self.variables))
        metrics = list(body.get("metrics", []))
        timing = body.get("timing")
        timing_metrics = list(timing.get("metrics", [])) if timing else []
        within = float(body.get("within", self.env.notification_timeout))
        if timing:
            # Wait only until the window closes: later is a failure anyway.
            _, hi, tol, since = self._window(timing)
            within = max(0.0, since + hi + tol - time.monotonic())

        def wanted(msg: Msg) -> bool:
            notify = messages.to_mapping(msg)["body"]["request"]["notify"]
            return matcher.match(notify, context={"message_kind": "notify"}).ok

        try:
            item = await ctrl.notification(wanted, since=self._marks.get(identity, 0),
                                           timeout=within,
                                           what=f"Notify matching step {step.index}")
        except ControllerTimeout:
            seen = [messages.to_mapping(r.msg)["body"]["request"]["notify"]
                    for r in ctrl.received[self._marks.get(identity, 0):]
                    if r.kind == ("request", "notify") and r.msg is not None]
            window = f" (the timing window closed {self._describe_window(timing)})" if timing else ""
            self._fail(metrics + timing_metrics,
                       f"no matching Notify within {within:g}s{window} "
                       f"({len(seen)} other Notify received)", expected=matcher.describe(),
                       observed=seen[-3:] or "nothing", phase=phase)
            return
        assert item.msg is not None
        self.result.messages.append(f"<- notify: {render_msg(item.msg)}")
        self._universal(item)
        notify = messages.to_mapping(item.msg)["body"]["request"]["notify"]
        # $capture operators inside the match
        self.variables.update(matcher.match(notify, context={"message_kind": "notify"}).captures)
        # Later notification steps look only at what came after this one.
        self._marks[identity] = item.index + 1
        if body.get("capture_time"):
            self.times[str(body["capture_time"])] = item.inbound.received_at
        if body.get("respond"):
            resp = await ctrl.notify_resp(item)
            self.result.messages.append(f"-> notify_resp: {render_msg(resp)}")
        self._pass(metrics)
        self._capture(body.get("capture"), notify)
        if timing:
            self._check_window(timing, item.inbound.received_at, "the Notify arrived", phase)

    async def _do_expect_no_notification(self, step: Step, phase: str) -> None:
        """No matching Notify during ``for`` seconds (from this step's start)."""
        body = step.body
        identity = str(body.get("as", "primary"))
        ctrl = self._controller(identity)
        matcher = compile_matcher(substitute(body["match"], self.variables))
        metrics = list(body.get("metrics", []))
        duration = float(body["for"])
        ignore = body.get("ignore_before")
        not_before = (self._time(ignore["since"]) + float(ignore["seconds"])) if ignore else None

        def unwanted(msg: Msg, at: float) -> bool:
            if not_before is not None and at < not_before:
                return False
            notify = messages.to_mapping(msg)["body"]["request"]["notify"]
            return matcher.match(notify, context={"message_kind": "notify"}).ok

        try:
            item = await ctrl.wait_for(
                lambda r: r.kind == ("request", "notify") and r.msg is not None
                and unwanted(r.msg, r.inbound.received_at),
                what="unwanted Notify", timeout=duration, since=self._marks.get(identity, 0))
        except ControllerTimeout:
            self._pass(metrics)
            return
        assert item.msg is not None
        self.result.messages.append(f"<- notify: {render_msg(item.msg)}")
        self._fail(metrics, "the EUT sent a Notify although none is due",
                   expected=f"no Notify matching {matcher.describe()} for {duration:g}s",
                   observed=messages.to_mapping(item.msg)["body"]["request"]["notify"],
                   phase=phase)

    async def _do_expect_mtp(self, step: Step, phase: str) -> None:
        """An MTP-level event on the timeline (a CONNECT, a SUBSCRIBE, a STOMP frame, a
        WebSocket handshake...) whose decoded form matches (TP-469 sections 6, 7, 11)."""
        body = step.body
        kind = str(body["event"])
        direction = body.get("direction", "in")
        matcher = compile_matcher(substitute(body.get("match", {}), self.variables))
        metrics = list(body.get("metrics", []))
        timing = body.get("timing")
        timing_metrics = list(timing.get("metrics", [])) if timing else []
        within = float(body.get("within", self.env.response_timeout))
        if timing:
            _, hi, tol, since = self._window(timing)
            within = max(0.0, since + hi + tol - time.monotonic())
        starts = self._mtp_from(body.get("from"))

        def wanted(e: Any) -> bool:
            return starts(e) and matcher.match(_decoded(e), context={}).ok

        try:
            entry = await self.env.timeline.expect(kind, within=within, where=wanted,
                                                   direction=direction)
        except TimelineTimeout:
            seen = [_decoded(e) for e in self.env.timeline.filter(kind, direction=direction)
                    if starts(e)]
            window = f" (the timing window closed {self._describe_window(timing)})" if timing else ""
            self._fail(metrics + timing_metrics,
                       f"no {kind} ({direction}) matching within {within:g}s{window} "
                       f"({len(seen)} other {kind} seen)", expected=matcher.describe(),
                       observed=seen[-3:] or "nothing", phase=phase)
            return
        self._mtp_seq = entry.seq + 1
        decoded = _decoded(entry)
        self.variables.update(matcher.match(decoded, context={}).captures)
        if body.get("capture_time"):
            self.times[str(body["capture_time"])] = entry.t
        self._pass(metrics)
        self._capture(body.get("capture"), decoded)
        if timing:
            self._check_window(timing, entry.t, f"the {kind} came", phase)

    async def _do_expect_no_mtp(self, step: Step, phase: str) -> None:
        """No matching MTP event during ``for`` seconds (from the step's start, or ``from``)."""
        body = step.body
        kind = str(body["event"])
        direction = body.get("direction", "in")
        matcher = compile_matcher(substitute(body.get("match", {}), self.variables))
        metrics = list(body.get("metrics", []))
        starts = self._mtp_from(body.get("from", "now"))
        try:
            await self.env.timeline.expect_none(
                kind, during=float(body["for"]), direction=direction, since=0.0,
                where=lambda e: starts(e) and matcher.match(_decoded(e), context={}).ok)
        except UnexpectedEntry as exc:
            self._fail(metrics, f"the EUT sent a {kind} although none is due",
                       expected=f"no {kind} matching {matcher.describe()}",
                       observed=_decoded(exc.entry), phase=phase)
        self._pass(metrics)

    def _mtp_from(self, where: Any) -> Callable[[Any], bool]:
        """Which timeline entries an MTP step looks at: ``run`` (all), ``case`` (this case's),
        ``now`` (from this step on), ``last`` (after the previous match; the default) or a
        ``capture_time`` name (at/after that moment)."""
        if where in (None, "last"):
            seq = self._mtp_seq if self._mtp_seq is not None else self._case_seq
        elif where == "case":
            seq = self._case_seq
        elif where == "run":
            seq = 0
        elif where == "now":
            seq = self.env.timeline.next_seq
        else:
            at = self._time(str(where))
            return lambda e: e.t >= at
        return lambda e: e.seq >= seq

    async def _do_controller(self, step: Step, phase: str) -> None:
        """Change how a suite controller behaves (restored when the case ends)."""
        ctrl = self._controller(step.identity)
        for name, value in dict(step.body).items():
            self._saved_settings.setdefault((step.identity, name), getattr(ctrl, name))
            setattr(ctrl, name, value)

    def _restore_controllers(self) -> None:
        for (identity, name), value in self._saved_settings.items():
            setattr(self.env.controllers[identity], name, value)
        self._saved_settings.clear()

    async def _do_reboot(self, step: Step, phase: str) -> None:
        if self.env.reboot is None:
            raise SuiteError("the EUT profile gives no way to reboot the EUT")
        body = step.body or {}
        metrics = list(body.get("metrics", []))
        triggered = bool(body.get("triggered", False))
        timeout = float(body["within"]) if "within" in body else None
        identity = "primary"
        since = self._sent_marks.get(identity) if triggered else None
        try:
            await self.env.reboot(triggered=triggered, since=since, timeout=timeout)
        except EUTNotBack as exc:
            if not metrics:
                raise
            self._fail(metrics, str(exc), expected="the EUT reboots and reconnects",
                       observed="no reconnect", phase=phase)
        if body.get("capture_time"):
            self.times[str(body["capture_time"])] = time.monotonic()
        # What the EUT sends from its new life on (Boot!, OnBoardRequest) is after the
        # marks of earlier steps anyway; nothing to move.
        self._pass(metrics)

    async def _do_wait(self, step: Step, phase: str) -> None:
        # Waits that TP-469's procedure itself prescribes (e.g. "wait 60 seconds").
        await asyncio.sleep(float(step.body["seconds"]))

    async def _do_scenario(self, step: Step, phase: str) -> None:
        if self.env.scenario is None:
            raise SuiteError(f"no scriptable {step.body['mtp']} server in this run")
        self._scripted = True
        await self.env.scenario(str(step.body["mtp"]), substitute(step.body["set"],
                                                                  self.variables))

    async def _reset_scenarios(self) -> None:
        """Scenario changes last for the case only (cleanup runs on the run's own)."""
        if self._scripted and self.env.reset_scenarios is not None:
            self._scripted = False
            try:
                await self.env.reset_scenarios()
            except Exception as exc:  # reported; the next case may be affected
                self.result.warnings.append(f"could not reset the suite's servers: {exc}")

    async def _do_python(self, step: Step, phase: str) -> None:
        action = self.env.actions.get(str(step.body["action"]))
        if action is None:
            known = ", ".join(sorted(self.env.actions)) or "none registered"
            raise SuiteError(f"python action {step.body['action']!r} is not registered "
                             f"(usp_conformance.actions entry points: {known})")
        await action(self, **dict(step.body.get("args") or {}))

    async def _cleanup(self) -> None:
        for step in self.case.cleanup:
            try:
                await self._step(step, phase="cleanup")
            except Exception as exc:  # cleanup goes on; the problem is reported
                self.result.warnings.append(f"cleanup step {step.index} failed: {exc}")
                eut_failed = any(m.verdict == "fail" for m in self.metrics.values())
                if self.result.verdict == "pass" and not eut_failed:
                    self._error(f"cleanup step {step.index} failed: the EUT may not be restored "
                                f"({exc})")

    # --- checks ----------------------------------------------------------------------------

    def _check(self, expected: Any, observed: Any, metrics: list[int], phase: str, *,
               kind: str) -> None:
        matcher = compile_matcher(substitute(expected, self.variables))
        outcome = matcher.match(observed, context={"message_kind": kind})
        self.variables.update(outcome.captures)
        if outcome.ok:
            self._pass(metrics)
        else:
            first = outcome.mismatches[0]
            self._fail(metrics, str(first), expected=matcher.describe(), observed=observed,
                       phase=phase)

    def _pass(self, metrics: list[int]) -> None:
        for n in metrics:
            if self.metrics[n].verdict != "fail":
                self.metrics[n].verdict = "pass"

    def _fail(self, metrics: list[int], message: str, *, expected: Any, observed: Any,
              phase: str) -> None:
        if self._quiet:  # a poll attempt: the caller tries again
            raise _Unmet(message)
        if phase == "setup":
            raise SuiteError(message)
        if phase == "cleanup":
            raise SuiteError(message)
        for n in metrics or [0]:
            target = self.metrics.get(n)
            if target is None:  # a check that proves no numbered metric
                target = self.metrics.setdefault(0, MetricResult(0, "procedure step"))
            target.verdict = "fail"
            target.expected = expected
            target.observed = observed
            target.message = message
        raise StepFailed(message)

    def _universal(self, item: Received) -> None:
        for v in item.violations:
            if v.severity != "error":
                self.result.warnings.append(str(v))
                continue
            number = UNIVERSAL_BASE + v.metric
            metric = self.metrics.setdefault(number, MetricResult(number, UNIVERSAL_TEXT[v.metric]))
            metric.verdict = "fail"
            metric.observed = f"{v.location}: {v.message}"
            metric.expected = v.requirement
            metric.message = str(v)

    def _error(self, reason: str) -> None:
        self.result.verdict = "error"
        self.result.reason = reason

    def _finish(self) -> None:
        self.result.metrics = [self.metrics[n] for n in sorted(self.metrics)]
        failed = self.result.failed_metrics
        if self.result.verdict == "error":
            pass
        elif failed:
            self.result.verdict = "fail"
            self.result.reason = f"metric {failed[0].number}: {failed[0].message}"
        elif self.result.warnings:
            self.result.verdict = "warn"
            self.result.reason = self.result.warnings[0]
        entries = self.env.timeline.entries[self._start_entry:]
        self.result.timeline = [e.to_json() for e in entries[-200:]]

    # --- helpers ---------------------------------------------------------------------------

    def _time(self, name: str) -> float:
        try:
            return self.times[name]
        except KeyError:
            raise SuiteError(f"no time captured as {name!r} (add capture_time: {name} to the "
                             "step it refers to)") from None

    def _window(self, timing: Mapping[str, Any]) -> tuple[float, float, float, float]:
        """(min, max, tolerance, the 'since' time) of a ``timing`` spec."""
        return (float(timing.get("min", 0.0)), float(timing["max"]),
                float(timing.get("tolerance", 0.0)), self._time(str(timing["since"])))

    def _check_window(self, timing: Mapping[str, Any], at: float, what: str, phase: str) -> None:
        """``timing``'s metrics: the moment ``at`` lies in the window (tolerance included)."""
        lo, hi, tol, since = self._window(timing)
        elapsed = at - since
        metrics = list(timing.get("metrics", []))
        if not lo - tol <= elapsed <= hi + tol:
            self._fail(metrics, f"{what} {elapsed:.2f}s after '{timing['since']}', outside "
                       f"{self._describe_window(timing)}", expected=self._describe_window(timing),
                       observed=f"{elapsed:.2f}s", phase=phase)
        self._pass(metrics)

    @staticmethod
    def _describe_window(timing: Mapping[str, Any]) -> str:
        tol = float(timing.get("tolerance", 0.0))
        return (f"{float(timing.get('min', 0.0)):g}-{float(timing['max']):g}s after "
                f"'{timing['since']}'" + (f" (±{tol:g}s tolerance)" if tol else ""))

    def _controller(self, identity: str) -> Controller:
        try:
            return self.env.controllers[identity]
        except KeyError:
            raise SuiteError(f"the EUT profile defines no '{identity}' controller identity") from None

    def _build(self, body: Mapping[str, Any]) -> Msg:
        resolved = substitute(dict(body), self.variables)
        (kind, fields), = resolved.items()
        try:
            if kind in ("text", "msg"):
                msg = (messages.msg_from_text(str(fields), msg_id="pending") if kind == "text"
                       else messages.msg_from_mapping(fields, msg_id="pending"))
                msg.header.msg_id = ""  # the controller allocates a fresh one
                return msg
            return messages.request(kind, fields)
        except messages.MsgBuildError as exc:
            raise SuiteError(f"cannot build the message: {exc}") from None

    @staticmethod
    def _request_kind(msg: Msg) -> str:
        outer, inner = body_kind(msg)
        return inner or ""

    def _item_for(self, ctrl: Controller, reply: Msg) -> Received:
        for item in reversed(ctrl.received):
            if item.msg is reply:
                return item
        raise SuiteError("response not found in the controller's history")

    @staticmethod
    def _describe(expect: Mapping[str, Any]) -> Any:
        for key in ("response", "error"):
            if key in expect:
                return {key: expect[key]}
        return expect

    def _capture(self, spec: Any, observed: Any) -> None:
        if not spec:
            return
        for name, path in dict(spec).items():
            try:
                self.variables[str(name)] = dig(observed, str(path))
            except (KeyError, IndexError, TypeError) as exc:
                raise SuiteError(f"capture {name!r}: {path!r} not found in the answer ({exc})") \
                    from None


def _field_bytes(value: Any) -> bytes:
    """A bytes field of a ``send_record`` step: ``{hex: "..."}`` or text (UTF-8)."""
    if value is None:
        return b""
    if isinstance(value, Mapping):
        return bytes.fromhex(re.sub(r"\s+", "", str(value["hex"])))
    return str(value).encode()


def _decoded(entry: Any) -> Any:
    """What an MTP step matches: the entry's decoded form ({} when there is none)."""
    return entry.decoded if entry.decoded is not None else {}


class _Unmet(Exception):
    """A poll attempt did not meet the expectation (not yet a failure)."""


_INDEX = re.compile(r"^(?P<name>[^\[\]]+)?(?P<idx>(\[\d+\])*)$")


def dig(data: Any, path: str) -> Any:
    """``a.b[0].c`` into nested mappings/lists (KeyError/IndexError when absent)."""
    cur = data
    for part in path.split("."):
        m = _INDEX.match(part)
        if m is None:
            raise KeyError(part)
        if m["name"]:
            cur = cur[m["name"]]
        for idx in re.findall(r"\[(\d+)\]", m["idx"] or ""):
            cur = cur[int(idx)]
    return cur
