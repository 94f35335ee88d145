"""The reference USP Controller: one Controller endpoint identity.

A :class:`Controller` owns an Endpoint ID and reaches agents through MTP
:class:`~conformance.mtp.binding.Binding` objects (one per agent it talks
to). It sends Msgs wrapped in Records, matches responses to ``msg_id``,
queues notifications (answering ``send_resp`` ones with NotifyResp unless
told not to), keeps every connect/disconnect Record, and checks everything
the agent sends against the TP-469 universal metrics.

Several identities (primary, secondary, an unknown controller) are several
Controller objects, each on its own bindings. Messages go either without a
session (no_session_context Records) or inside an E2E session context driven
by :class:`conformance.usp.session.SessionContext`.

Every wait has a timeout and fails with :class:`ControllerTimeout` naming
what was awaited; there are no fixed sleeps.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.mtp.binding import Binding, BindingClosed, InboundRecord
from conformance.mtp.timeline import Timeline
from conformance.usp import messages, records, session
from conformance.usp.metrics import Violation, check_msg, check_record_bytes
from conformance.usp.render import summary
from conformance.usp.schema import USP_VERSION, Msg, Record, body_kind

DEFAULT_TIMEOUT = 10.0


def _single_msg(rec: Record) -> Msg | None:
    """The Msg of a single-payload Record, or None (no payload, segmented, undecodable)."""
    try:
        return records.unwrap_msg(rec)
    except records.MsgDecodeError:
        return None


class ControllerTimeout(TimeoutError):
    """Nothing matching arrived in time; the message names what was awaited."""


class NoRoute(LookupError):
    """The Controller has no binding to the agent it was asked to reach."""


@dataclass
class Received:
    """One Msg (or bare Record) the Controller received, with its judgement."""

    record: Record | None
    msg: Msg | None
    inbound: InboundRecord
    violations: list[Violation] = field(default_factory=list)
    index: int = 0

    @property
    def kind(self) -> tuple[str | None, str | None]:
        """(``request``/``response``/``error``, inner oneof) of the Msg."""
        return body_kind(self.msg) if self.msg is not None else (None, None)


MsgFilter = Callable[[Msg], bool]


class Controller:
    """A reference Controller identity bound to one or more agents."""

    def __init__(
        self,
        endpoint_id: str,
        *,
        timeline: Timeline | None = None,
        allocator: messages.MsgIdAllocator | None = None,
        usp_version: str = USP_VERSION,
        auto_notify_resp: bool = True,
        default_timeout: float = DEFAULT_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoint_id = endpoint_id
        self.timeline = timeline
        self.allocator = allocator or messages.MsgIdAllocator(f"uspc-{random.randrange(16**6):06x}")
        self.usp_version = usp_version
        self.auto_notify_resp = auto_notify_resp
        self.default_timeout = default_timeout
        self._rng = rng or random.Random()
        self._routes: dict[str, Binding] = {}
        self._sessions: dict[str, session.SessionContext] = {}
        self._session_tasks: dict[str, asyncio.Task[None]] = {}
        self._session_wake = asyncio.Event()
        self.received: list[Received] = []
        self._changed = asyncio.Event()
        self._waiters = 0
        self._pending_send_errors: list[BaseException] = []
        #: the bytes of the last Record sent (``resend`` sends them again)
        self.last_sent: bytes | None = None
        #: E2E TLS12 session (conformance.controller.e2e_session), the run's E2E PKI
        self.e2e: Any = None
        self.e2e_pki: Any = None
        #: E2E sessions being closed (their DisconnectRecord goes before anything else)
        self.e2e_closing: set[asyncio.Task[None]] = set()

    # --- wiring ------------------------------------------------------------

    def attach(self, binding: Binding, *, agent_id: str) -> None:
        """Reach ``agent_id`` through ``binding``; Records arriving on it come here."""
        self._routes[agent_id] = binding
        binding.set_sink(self._on_inbound)

    def binding_for(self, agent_id: str | None = None) -> Binding:
        agent = agent_id or self.default_agent
        try:
            return self._routes[agent]
        except KeyError:
            raise NoRoute(f"controller {self.endpoint_id} has no MTP binding to {agent}") from None

    @property
    def default_agent(self) -> str:
        if len(self._routes) != 1:
            raise NoRoute(f"controller {self.endpoint_id} is bound to {len(self._routes)} agents; "
                          "name the agent")
        return next(iter(self._routes))

    def use_session_context(self, agent_id: str, config: session.SessionConfig | None = None,
                            ) -> session.SessionContext:
        """From now on talk to ``agent_id`` inside an E2E session context (R-E2E.*)."""
        ctx = session.SessionContext(self.endpoint_id, agent_id, config or session.SessionConfig(),
                                     rng=self._rng)
        self.drop_session_context(agent_id)
        self._sessions[agent_id] = ctx
        self._session_tasks[agent_id] = asyncio.get_running_loop().create_task(
            self._session_timer(agent_id, ctx))
        return ctx

    @property
    def session_context(self) -> bool:
        """Whether the controller talks to its (single) agent inside a session context;
        settable (a case's ``controller: {session_context: true}`` step)."""
        return bool(self._routes) and self.default_agent in self._sessions

    @session_context.setter
    def session_context(self, on: bool) -> None:
        if on and not self.session_context:
            self.use_session_context(self.default_agent)
        elif not on and self._routes:
            self.drop_session_context(self.default_agent)

    @property
    def e2e_security(self) -> Any:
        """A case's ``controller: {e2e_security: {...}}`` (conformance.controller.e2e_session)."""
        return dict(self.e2e.settings) if self.e2e is not None else None

    @e2e_security.setter
    def e2e_security(self, value: Any) -> None:
        from conformance.controller import e2e_session
        e2e_session.apply(self, value)

    @property
    def e2e_renegotiate(self) -> bool:
        return False

    @e2e_renegotiate.setter
    def e2e_renegotiate(self, value: bool) -> None:
        if value:  # TP-469 3.6: a renegotiation request in place of a payload
            from conformance.controller import e2e_session
            e2e_session.renegotiate(self)

    def drop_session_context(self, agent_id: str) -> None:
        """Go back to no_session_context Records for ``agent_id``."""
        self._sessions.pop(agent_id, None)
        task = self._session_tasks.pop(agent_id, None)
        if task is not None:
            task.cancel()

    async def _session_timer(self, agent_id: str, ctx: session.SessionContext) -> None:
        """Time-driven session work: retransmit requests, expiry, retries (R-E2E.10, .16)."""
        while self._sessions.get(agent_id) is ctx:
            deadline = ctx.next_deadline()
            self._session_wake.clear()
            if deadline is None or deadline > time.monotonic():
                wait = None if deadline is None else deadline - time.monotonic()
                try:
                    await asyncio.wait_for(self._session_wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            for rec in session.outgoing_records(ctx.poll(time.monotonic())):
                try:
                    await self.send_record(rec, to=agent_id)
                except (BindingClosed, ConnectionError, NoRoute):
                    pass  # the MTP is down; the session retries on its own schedule

    # --- sending -------------------------------------------------------------

    async def send(self, msg: Msg, *, to: str | None = None) -> str:
        """Send a Msg (header completed if needed); return its msg_id."""
        messages.complete_header(msg, allocator=self.allocator)
        agent = to or self.default_agent
        if self.e2e is not None and agent == self.e2e.agent_id:  # TLS12 session (Feature 23)
            await self.e2e.send(msg)
            return msg.header.msg_id
        ctx = self._sessions.get(agent)
        if ctx is None:
            recs = [records.no_session_record(msg, to_id=agent, from_id=self.endpoint_id,
                                              version=self.usp_version)]
        else:
            recs = ctx.send(msg.SerializeToString(), now=time.monotonic())
        for rec in recs:
            await self.send_record(rec, to=agent, msg=msg)
        if ctx is not None:
            self._session_wake.set()
        return msg.header.msg_id

    async def send_record(self, rec: Record, *, to: str | None = None, msg: Msg | None = None) -> None:
        """Send any Record as it is (also deliberately malformed ones)."""
        await self.send_raw(records.serialize(rec), to=to or rec.to_id or None,
                            decoded=summary(msg) if msg is not None else summary(rec))

    async def send_raw(self, data: bytes, *, to: str | None = None, decoded: str | None = None) -> None:
        """Send raw bytes as a Record payload on the MTP (for negative tests)."""
        if self.e2e_closing:  # a closed E2E session's DisconnectRecord goes first
            from conformance.controller import e2e_session
            await e2e_session.settle(self)
        agent = to or self.default_agent
        binding = self.binding_for(agent)
        self._record("usp.record", "out", binding.mtp, data, decoded or f"{len(data)} raw bytes")
        self.last_sent = data
        await binding.send(data, to_id=agent)

    async def request(self, msg: Msg, *, to: str | None = None,
                      timeout: float | None = None) -> Msg:
        """Send a request and return its response or Error Msg."""
        msg_id = await self.send(msg, to=to)
        return await self.response(msg_id, timeout=timeout)

    # --- receiving -------------------------------------------------------------

    def _on_inbound(self, inbound: InboundRecord) -> None:
        check = check_record_bytes(inbound.data, suite_endpoint_id=self.endpoint_id)
        rec = check.record
        self._record("usp.record", "in", inbound.mtp, inbound.data,
                     summary(rec) if rec is not None else "undecodable Record",
                     conn_id=inbound.conn_id)
        if rec is not None and self.e2e is not None and self.e2e.claims(rec):
            self.e2e.on_record(rec, inbound, check.violations)  # TLS12 session (Feature 23)
            return
        if rec is not None and records.record_kind(rec) == "session_context":
            self._on_session_record(rec, inbound, check.violations)
            return
        self._store(Received(rec, check.msg, inbound, check.violations))

    def _on_session_record(self, rec: Record, inbound: InboundRecord,
                           violations: list[Violation]) -> None:
        ctx = self._sessions.get(rec.from_id)
        if ctx is None:
            # No SessionContext of ours: a case writing session fields itself, or an agent
            # originating a session (allowed, e.g. SessionMode Require). A complete payload is
            # still decoded.
            msg = _single_msg(rec)
            self._store(Received(rec, msg, inbound,
                                 [*violations, *(check_msg(msg) if msg is not None else [])]))
            return
        events = ctx.receive(rec, now=time.monotonic())
        stored = False
        for event in events:
            if isinstance(event, session.MessageReceived):
                try:
                    msg = records.parse_msg(event.payload)
                except records.MsgDecodeError as exc:
                    self._store(Received(rec, None, inbound, [
                        *violations, Violation(2, "R-ENC.0", "record.payload", str(exc))]))
                else:
                    self._store(Received(rec, msg, inbound,
                                         [*violations, *check_msg(msg)]))
                stored = True
            elif isinstance(event, session.ProtocolViolation):
                violations = [*violations, Violation(2, event.requirement or "R-E2E.20",
                                                     "record.session_context", event.reason)]
        if not stored:
            self._store(Received(rec, None, inbound, violations))
        for out in session.outgoing_records(events):
            self._spawn(self.send_record(out, to=rec.from_id))
        self._session_wake.set()

    def _store(self, item: Received) -> None:
        item.index = len(self.received)
        self.received.append(item)
        outer, inner = item.kind
        if (self.auto_notify_resp and outer == "request" and inner == "notify"
                and item.msg is not None and item.msg.body.request.notify.send_resp):
            self._spawn(self.notify_resp(item))
        self._changed.set()

    async def notify_resp(self, item: Received) -> Msg:
        """Answer a received Notify with its NotifyResp (same msg_id, R-NOT.*); the sent Msg."""
        assert item.msg is not None
        resp = messages.response(
            "notify_resp", {"subscription_id": item.msg.body.request.notify.subscription_id},
            msg_id=item.msg.header.msg_id)
        agent = item.record.from_id if item.record is not None else None
        await self.send(resp, to=agent if agent in self._routes else None)
        return resp

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]

        def done(t: asyncio.Future[object]) -> None:
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                assert exc is not None
                if not isinstance(exc, (BindingClosed, ConnectionError)):
                    self._pending_send_errors.append(exc)

        task.add_done_callback(done)

    async def wait_for(self, predicate: Callable[[Received], bool], *, what: str,
                       timeout: float | None = None, since: int = 0) -> Received:
        """The first received item at or after index ``since`` matching ``predicate``."""
        limit = self.default_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        checked = since
        while True:
            for item in self.received[checked:]:
                if predicate(item):
                    return item
            checked = max(checked, len(self.received))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ControllerTimeout(
                    f"controller {self.endpoint_id}: no {what} within {limit:g}s "
                    f"({len(self.received)} messages received in all)")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def response(self, msg_id: str, *, timeout: float | None = None) -> Msg:
        """The response or Error Msg answering ``msg_id`` (R-MSG.9)."""
        item = await self.wait_for(
            lambda r: r.msg is not None and r.kind[0] in ("response", "error")
            and r.msg.header.msg_id == msg_id,
            what=f"response to msg_id {msg_id!r}", timeout=timeout)
        assert item.msg is not None
        return item.msg

    async def notification(self, where: MsgFilter | None = None, *, since: int = 0,
                           timeout: float | None = None, what: str = "Notify") -> Received:
        """The next Notify request (optionally matching ``where``) received at/after ``since``."""
        return await self.wait_for(
            lambda r: r.kind == ("request", "notify") and r.msg is not None
            and (where is None or where(r.msg)),
            what=what, timeout=timeout, since=since)

    async def connect_record(self, kind: str | None = None, *, since: int = 0,
                             timeout: float | None = None) -> Received:
        """The next MTP connect Record (``mqtt_connect``...; any when ``kind`` is None)."""
        def match(r: Received) -> bool:
            rk = records.record_kind(r.record) if r.record is not None else None
            return rk in records.CONNECT_KINDS and (kind is None or rk == kind)
        return await self.wait_for(match, what=f"{kind or 'connect'} Record", timeout=timeout,
                                   since=since)

    @property
    def mark(self) -> int:
        """Index for ``since=``: only what arrives after this point."""
        return len(self.received)

    def raise_background_errors(self) -> None:
        """Re-raise an unexpected failure of a background send (e.g. an auto NotifyResp)."""
        if self._pending_send_errors:
            raise self._pending_send_errors.pop(0)

    def _record(self, kind: str, direction: str, mtp: str, raw: bytes, decoded: str,
                conn_id: str | None = None) -> None:
        if self.timeline is not None:
            self.timeline.record(kind, direction=direction, mtp=mtp, conn_id=conn_id, raw=raw,
                                 decoded=decoded, note=self.endpoint_id)

    async def close(self) -> None:
        """Stop session timers and detach from every binding."""
        if self.e2e is not None or self.e2e_closing:  # E2E session timer and closing
            from conformance.controller import e2e_session
            await e2e_session.shutdown(self)
        for agent_id in list(self._session_tasks):
            self.drop_session_context(agent_id)
        for binding in set(self._routes.values()):
            await binding.close()
        self._routes.clear()
