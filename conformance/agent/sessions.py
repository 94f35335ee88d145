"""The reference Agent's E2E Session Contexts, one per Controller (TR-369 R-E2E.*).

:class:`SessionManager` keeps one :class:`conformance.usp.session.SessionContext`
per Controller Endpoint ID and drives it with the settings of that
Controller's ``Device.LocalAgent.Controller.{i}.E2ESession.`` object:

* ``SessionMode`` decides whether session contexts are used at all:

  - ``Forbid``: a session_context Record is answered with a DisconnectRecord
    carrying 7106 (R-E2E.6a); switching to Forbid ends a running session with
    a DisconnectRecord carrying 7105 (R-E2E.6b, TR-181 "immediate
    termination");
  - ``Allow``: the agent joins a session the Controller starts (R-E2E.4) and
    answers in it (R-MSG.0a); Notify messages travel inside the session while
    the Controller's latest Record came in it. The agent never starts a
    session of its own, except the restarts the session rules demand
    (R-E2E.7 after expiry, R-E2E.21 after a failure); an unanswered restart is
    dropped as soon as the Controller talks outside a session again;
  - ``Require``: every message to the Controller travels in a session; the
    agent starts one when the mode is set (TR-181) and ignores Messages the
    Controller sends outside a session, starting a session instead.

  An unset ``SessionMode`` falls back to the deprecated ``Enable``:
  ``true`` behaves as ``Require``, ``false`` as ``Allow``.
* ``SessionExpiration``, ``SessionRetryMinimumWaitInterval``,
  ``SessionRetryIntervalMultiplier``, ``MaxUSPRecordSize`` (or the deprecated
  ``SegmentedPayloadChunkSize``) and ``MaxRetransmitTries`` become the
  context's :class:`~conformance.usp.session.SessionConfig`; a change applies at
  once, also to the running session (SessionExpiration counts "the current
  Session Context", TP-469 3.10; MaxRetransmitTries the next retransmit
  request, TP-469 3.14).
* ``Status`` and ``CurrentRetryCount`` are read from the context.

The reference Agent exchanges PLAINTEXT payloads here; ``PayloadSecurity`` is
left to the E2E security layer.

The faults registered here are the session violations TP-469 section 3
checks; each one is an adjustment around the shared, correct
:class:`~conformance.usp.session.SessionContext`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conformance.agent.context import AgentState
from conformance.agent.datamodel.store import StoreError
from conformance.agent.faults import register
from conformance.usp import records, session
from conformance.usp.schema import Msg, Record

_log = logging.getLogger(__name__)

CONTROLLER_TABLE = "Device.LocalAgent.Controller."
E2E_OBJECT = "E2ESession."
MODE_REQUIRE, MODE_ALLOW, MODE_FORBID = "Require", "Allow", "Forbid"
#: USP Record error codes of DisconnectRecords (TR-369 "USP Record Errors")
SESSION_TERMINATED = 7105
SESSION_NOT_ALLOWED = 7106

#: The agent's local session policy (knobs the data model does not have).
#: A missing Record is asked for only after 10 s: MTPs deliver in order, so
#: a gap usually means the Controller sent Records out of order on purpose
#: (TP-469 3.11 buffers one for a while and then fills the gap).
AGENT_POLICY = session.SessionConfig(retransmit_request_after=10.0)
#: TR-181 defaults of the E2ESession parameters that shape a SessionConfig (used for
#: a Controller not in the table, and for values left empty)
TR181_DEFAULTS = {"SessionExpiration": "0", "SessionRetryMinimumWaitInterval": "5",
                  "SessionRetryIntervalMultiplier": "2000", "MaxUSPRecordSize": "0",
                  "SegmentedPayloadChunkSize": "0", "MaxRetransmitTries": "0"}
#: the SessionConfig fields those parameters set (the others are agent policy)
_DM_FIELDS = frozenset({"session_expiration", "retry_minimum_wait_interval",
                        "retry_interval_multiplier", "max_record_size", "max_retransmit_tries"})

register("session.sequence_starts_at_0", "R-E2E.14 / TP-469 3.8",
         "numbers the Records it sends in a session context from 0 instead of 1")
register("session.ignores_new_session_id", "R-E2E.6 / TP-469 3.9",
         "keeps stamping its first session_id with a controller on every session Record, "
         "also after the controller started a new session")
register("session.ignores_expiration", "R-E2E.7 / TP-469 3.10",
         "never lets a session context expire (ignores E2ESession.SessionExpiration)")
register("session.no_reordering", "R-E2E.20 / TP-469 3.11",
         "processes session Records in arrival order: one ahead of expected_id is answered "
         "at once")
register("session.no_retransmit_buffer", "R-E2E.16 / TP-469 3.12",
         "keeps no outgoing buffer: a retransmit request is not answered")
register("session.ignores_max_retransmit", "R-E2E.21 / TP-469 3.14",
         "retransmits a Record as often as asked (ignores E2ESession.MaxRetransmitTries)")
register("session.answers_duplicates", "R-E2E.25 / TP-469 3.15",
         "processes a duplicate session Record again and answers it once more")


@dataclass(frozen=True)
class SessionSettings:
    """What a Controller's E2ESession object asks for."""

    mode: str                      # MODE_REQUIRE / MODE_ALLOW / MODE_FORBID
    config: session.SessionConfig
    controller: str | None = None  # its Controller.{i}. instance, None when unknown


#: Answers one request Msg from a Controller (the core's dispatcher).
MsgHandler = Callable[[str, Msg], "Msg | None"]
#: Reports something worth logging: (kind, controller id, detail).
EventSink = Callable[[str, str, str], None]


class SessionManager:
    """Every session context of one agent, with the data model's settings applied."""

    def __init__(self, state: AgentState, *, handle: MsgHandler,
                 base: session.SessionConfig = AGENT_POLICY,
                 on_event: EventSink = lambda _kind, _cid, _detail: None,
                 rng: random.Random | None = None) -> None:
        self.state = state
        self.base = base
        self._handle = handle
        self._on_event = on_event
        self._rng = rng
        self.contexts: dict[str, session.SessionContext] = {}
        #: each controller's mode as last applied (mode changes trigger TR-181 actions)
        self._modes: dict[str, str] = {}
        #: whether the controller's latest Record to the agent was a session_context one
        self._in_session: dict[str, bool] = {}
        #: Records to deliver by controller id, outside any reply (poll hands them out)
        self._queued: dict[str, list[Record]] = {}
        #: first session id used with each controller (fault session.ignores_new_session_id)
        self._first_sid: dict[str, int] = {}
        state.store.provide(CONTROLLER_TABLE + "{i}." + E2E_OBJECT + "Status", self._status)
        state.store.provide(CONTROLLER_TABLE + "{i}." + E2E_OBJECT + "CurrentRetryCount",
                            self._retry_count)

    # --- settings from the data model ---------------------------------------------------

    def _controller_path(self, controller_id: str) -> str | None:
        store = self.state.store
        for inst in store.instances(CONTROLLER_TABLE):
            try:
                if store.get(inst + "EndpointID") == controller_id:
                    return inst
            except StoreError:
                continue
        return None

    def settings(self, controller_id: str) -> SessionSettings:
        """The mode and SessionConfig ``controller_id``'s E2ESession object gives."""
        faults = self.state.faults
        overrides: dict[str, Any] = {}
        if faults.on("session.ignores_expiration"):
            overrides["session_expiration"] = 0.0
        if faults.on("session.ignores_max_retransmit"):
            overrides["max_retransmit_tries"] = -1
        inst = self._controller_path(controller_id)
        values: dict[str, str] = {}
        if inst is not None:
            try:
                values = self.state.store.params(inst + E2E_OBJECT)
            except StoreError:
                values = {}
        mode = values.get("SessionMode", "")
        if mode not in (MODE_REQUIRE, MODE_ALLOW, MODE_FORBID):
            mode = MODE_REQUIRE if values.get("Enable", "").lower() in ("true", "1") else MODE_ALLOW
        dm = {**TR181_DEFAULTS, **{name: values[name] for name in TR181_DEFAULTS
                                   if values.get(name, "") != ""}}
        policy = {f.name: getattr(self.base, f.name) for f in dataclasses.fields(self.base)
                  if f.name not in _DM_FIELDS}
        try:
            config = dataclasses.replace(session.SessionConfig.from_e2e_session(dm),
                                         **policy, **overrides)
        except ValueError as exc:
            _log.warning("E2ESession of %s unusable (%s): TR-181 defaults apply", inst, exc)
            config = dataclasses.replace(session.SessionConfig.from_e2e_session(TR181_DEFAULTS),
                                         **policy, **overrides)
        return SessionSettings(mode, config, inst)

    def _status(self, owner: str) -> str:
        ctx = self.contexts.get(self._endpoint_of(owner))
        return ctx.status if ctx is not None else session.STATUS_DOWN

    def _retry_count(self, owner: str) -> str:
        ctx = self.contexts.get(self._endpoint_of(owner))
        return str(ctx.current_retry_count if ctx is not None else 0)

    def _endpoint_of(self, e2e_owner: str) -> str:
        inst = e2e_owner.removesuffix(E2E_OBJECT)
        try:
            return self.state.store.get(inst + "EndpointID")
        except StoreError:
            return ""

    # --- contexts -------------------------------------------------------------------------

    def _context(self, controller_id: str, settings: SessionSettings) -> session.SessionContext:
        ctx = self.contexts.get(controller_id)
        if ctx is None:
            ctx = session.SessionContext(self.state.endpoint_id, controller_id, settings.config,
                                         rng=self._rng)
            self.contexts[controller_id] = ctx
        elif ctx.config != settings.config:
            try:
                ctx.reconfigure(settings.config)
            except ValueError as exc:
                _log.warning("E2ESession of %s: %s; keeping the previous settings",
                             controller_id, exc)
        return ctx

    def _apply(self, controller_id: str, settings: SessionSettings, now: float, *,
               establish: bool = True) -> None:
        """Act on a mode change (TR-181 SessionMode) and on changed parameters;
        ``establish=False`` when what is under way starts or joins a session anyway."""
        previous = self._modes.get(controller_id)
        self._modes[controller_id] = settings.mode
        ctx = self.contexts.get(controller_id)
        if settings.mode == MODE_FORBID:
            if ctx is not None:  # R-E2E.6b: end the running session, keep the MTP
                del self.contexts[controller_id]
                if ctx.status != session.STATUS_DOWN:
                    self._queue(controller_id, self._disconnect(
                        controller_id, SESSION_TERMINATED, "Session Context terminated: "
                        "E2ESession.SessionMode is Forbid"))
            return
        if ctx is not None:
            self._context(controller_id, settings)
        if settings.mode == MODE_REQUIRE and previous != MODE_REQUIRE and establish:
            self._establish(controller_id, settings, now)

    def _establish(self, controller_id: str, settings: SessionSettings, now: float) -> None:
        ctx = self._context(controller_id, settings)
        if ctx.status == session.STATUS_DOWN:
            for rec in ctx.establish(now=now):
                self._queue(controller_id, rec)

    def _queue(self, controller_id: str, rec: Record) -> None:
        self._queued.setdefault(controller_id, []).append(rec)

    def _disconnect(self, controller_id: str, code: int, reason: str) -> Record:
        return records.disconnect_record(to_id=controller_id, from_id=self.state.endpoint_id,
                                         reason=reason, reason_code=code)

    # --- Records from a controller --------------------------------------------------------

    def receive(self, rec: Record, *, now: float) -> list[Record]:
        """A session_context Record addressed to this agent; the Records to send back."""
        cid = rec.from_id
        settings = self.settings(cid)
        self._apply(cid, settings, now, establish=False)
        if settings.mode == MODE_FORBID:  # R-E2E.6a
            self._on_event("session_refused", cid, "SessionMode is Forbid (R-E2E.6a)")
            return [self._disconnect(cid, SESSION_NOT_ALLOWED,
                                     "Session Context not allowed: E2ESession.SessionMode is "
                                     "Forbid")]
        self._in_session[cid] = True
        ctx = self._context(cid, settings)
        out: list[Record] = []
        rec = self._faulty_arrival(ctx, rec, out, now)
        events = ctx.receive(rec, now=now)
        if ctx.session_id is not None:
            self._first_sid.setdefault(cid, ctx.session_id)
        out += self._records_of(events)
        for event in events:
            if isinstance(event, session.MessageReceived):
                out += self._deliver(ctx, event.payload, now)
            elif isinstance(event, session.ProtocolViolation):
                self._on_event("session_violation", cid, event.reason)
        return [self._stamp(cid, r) for r in out]

    def _deliver(self, ctx: session.SessionContext, payload: bytes, now: float) -> list[Record]:
        """Hand one reassembled payload to the dispatcher; its answer goes in the session."""
        cid = ctx.peer_id
        try:
            msg = records.parse_msg(payload)
        except records.MsgDecodeError as exc:
            # R-E2E.21: a payload that cannot be decoded fails the Record.
            self._on_event("session_violation", cid, f"undecodable Msg in session: {exc}")
            event = ctx.restart(now=now, reason="undecodable payload", requirement="R-E2E.21",
                                failure=True)
            return session.outgoing_records([event])
        reply = self._handle(cid, msg)
        if reply is None:
            return []
        return ctx.send(reply.SerializeToString(), now=now)  # R-MSG.0a

    def _faulty_arrival(self, ctx: session.SessionContext, rec: Record, out: list[Record],
                        now: float) -> Record:
        """The faults that mishandle an arriving Record (the clean agent passes it on)."""
        faults = self.state.faults
        sc = rec.session_context
        ours = ctx.session_id is not None and sc.session_id == ctx.session_id
        if not ours:
            return rec
        if faults.on("session.answers_duplicates") and 0 < sc.sequence_id < ctx.expected_id \
                and len(sc.payload) == 1 and sc.payload_sar_state == 0:
            out += self._deliver(ctx, bytes(sc.payload[0]), now)  # R-E2E.25 broken
            return rec
        if faults.on("session.no_reordering") and sc.sequence_id > ctx.expected_id:
            moved = Record()
            moved.CopyFrom(rec)
            moved.session_context.sequence_id = ctx.expected_id  # R-E2E.20 broken
            return moved
        return rec

    def _records_of(self, events: list[session.Event]) -> list[Record]:
        if self.state.faults.on("session.no_retransmit_buffer"):  # R-E2E.16 broken
            events = [e for e in events if not isinstance(e, session.RetransmitRequested)]
        return session.outgoing_records(events)

    def _stamp(self, controller_id: str, rec: Record) -> Record:
        """The faults that misnumber outgoing session Records."""
        if records.record_kind(rec) != "session_context":
            return rec
        faults = self.state.faults
        if faults.on("session.sequence_starts_at_0") and rec.session_context.sequence_id > 0:
            rec.session_context.sequence_id -= 1  # R-E2E.14 broken
        first = self._first_sid.setdefault(controller_id, rec.session_context.session_id)
        if faults.on("session.ignores_new_session_id"):
            rec.session_context.session_id = first  # R-E2E.6 broken
        return rec

    def no_session(self, controller_id: str, *, now: float) -> bool:
        """A no_session_context Record arrived: whether its Msg may be processed.

        In Require mode it may not; a session is started instead. In Allow
        mode a session restart of ours the Controller never answered is
        dropped: the Controller has chosen to talk outside a session.
        """
        settings = self.settings(controller_id)
        self._apply(controller_id, settings, now)
        self._in_session[controller_id] = False
        if settings.mode == MODE_REQUIRE:
            self._on_event("ignored", controller_id,
                           "Msg outside a session context while SessionMode is Require")
            self._establish(controller_id, settings, now)
            return False
        ctx = self.contexts.get(controller_id)
        if settings.mode == MODE_ALLOW and ctx is not None \
                and ctx.status == session.STATUS_NEGOTIATING:
            del self.contexts[controller_id]
        return True

    def forget(self, controller_id: str) -> None:
        """The Controller sent a DisconnectRecord: its session context is gone (R-MTP.7)."""
        self.contexts.pop(controller_id, None)
        self._in_session.pop(controller_id, None)

    # --- Records to a controller ----------------------------------------------------------

    def uses_session(self, controller_id: str, *, now: float) -> bool:
        """Whether a Msg the agent originates for ``controller_id`` goes in a session."""
        settings = self.settings(controller_id)
        self._apply(controller_id, settings, now, establish=False)
        if settings.mode == MODE_REQUIRE:
            return True
        if settings.mode == MODE_FORBID:
            return False
        return self._in_session.get(controller_id, False) and controller_id in self.contexts

    def outgoing(self, controller_id: str, msg: Msg, *, now: float) -> list[Record]:
        """The Record(s) carrying a Msg the agent originates (a Notify): inside the
        controller's session context when :meth:`uses_session`, else one
        no_session_context Record."""
        if not self.uses_session(controller_id, now=now):
            return [records.no_session_record(msg, to_id=controller_id,
                                              from_id=self.state.endpoint_id)]
        ctx = self._context(controller_id, self.settings(controller_id))
        recs = ctx.send(msg.SerializeToString(), now=now)
        # A session this send started (R-E2E.7 after expiry) is reported by the next poll.
        return [self._stamp(controller_id, r) for r in recs]

    # --- time ---------------------------------------------------------------------------

    def poll(self, now: float) -> dict[str, list[Record]]:
        """Apply data model changes and run every context's timers; Records by controller."""
        for cid in self._known_controllers():
            self._apply(cid, self.settings(cid), now)
        out: dict[str, list[Record]] = {}
        for cid, ctx in list(self.contexts.items()):
            recs = self._records_of(ctx.poll(now))
            if recs:
                out[cid] = [self._stamp(cid, r) for r in recs]
        for cid, recs in self._queued.items():
            out[cid] = [*recs, *out.get(cid, [])]
        self._queued = {}
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has timed work next (None: nothing scheduled)."""
        if self._queued:
            return float("-inf")
        times = [d for d in (ctx.next_deadline() for ctx in self.contexts.values())
                 if d is not None]
        return min(times) if times else None

    def _known_controllers(self) -> list[str]:
        store = self.state.store
        found = list(self.contexts)
        for inst in store.instances(CONTROLLER_TABLE):
            try:
                cid = store.get(inst + "EndpointID")
            except StoreError:
                continue
            if cid and cid not in found:
                found.append(cid)
        return found
