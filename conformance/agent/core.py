"""The transport-independent heart of the reference Agent: Records in, Records out.

:class:`AgentCore` takes the bytes of a Record an MTP delivered and returns
the Records to send back on the same MTP. On the way it applies the Record
rules (R-E2E.1 addressing, Records from its own Endpoint ID ignored (TP-469
2.1), R-ENC.4 discarding records without a type, R-MTP.5 error-or-ignore,
R-MSG.0a answering in the same record type, E2E session contexts via
:class:`conformance.usp.session.SessionContext`), finds the controller's
permissions, and dispatches each request Msg to its
handler module in :mod:`conformance.agent.messages` (``get``, ``set``, ...).

Handlers are registered by request kind in :data:`HANDLERS` as
``"module:function"`` and imported on first use.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from conformance.agent.context import FULL_ACCESS, Access, AgentState, Handler, RequestContext
from conformance.agent.faults import register
from conformance.agent.sessions import AGENT_POLICY, SessionManager
from conformance.usp import errors, messages, records, session
from conformance.usp.schema import Msg, Record, body_kind

_log = logging.getLogger(__name__)

#: Request kind (Request oneof name) -> "module:function" of its handler.
HANDLERS: dict[str, str] = {
    "get": "conformance.agent.messages.get:handle_get",
    "get_instances": "conformance.agent.messages.get:handle_get_instances",
    "get_supported_dm": "conformance.agent.messages.supported_dm:handle_get_supported_dm",
    "get_supported_protocol": "conformance.agent.messages.protocol:handle_get_supported_protocol",
    "set": "conformance.agent.messages.set:handle_set",
    "add": "conformance.agent.messages.add:handle_add",
    "delete": "conformance.agent.messages.delete:handle_delete",
    "operate": "conformance.agent.messages.operate:handle_operate",
}

register("record.ignore_to_id", "R-E2E.1",
         "answers Records addressed to another Endpoint ID instead of ignoring them")
register("record.accept_own_endpoint_id", "TP-469 2.1",
         "processes and answers Records whose from_id is the agent's own Endpoint ID")
register("msg.no_response", "R-MSG.0",
         "drops the response to every request (sends nothing back)")
register("msg.wrong_msg_id", "R-MSG.9",
         "answers with a msg_id different from the request's")
register("record.malformed_answered", "R-MTP.5 / TP-469 3.1",
         "answers a Record whose Msg cannot be decoded with a DisconnectRecord (the deprecated "
         "R-E2E.27 behaviour) instead of ignoring it")


@dataclass
class CoreEvent:
    """Something the core observed that the runtime may log or act on."""

    kind: str          # "ignored", "notify_resp", "error_from_controller", "disconnect", ...
    controller_id: str
    detail: str = ""
    msg: Msg | None = None


@dataclass
class AgentCore:
    """Records in, Records out for one agent."""

    state: AgentState
    access_for: Callable[[str], Access] = lambda _controller_id: FULL_ACCESS
    #: the agent's local session policy; each Controller's E2ESession values apply on top
    session_config: session.SessionConfig = AGENT_POLICY
    handlers: Mapping[str, str] = field(default_factory=lambda: dict(HANDLERS))
    on_event: Callable[[CoreEvent], None] = lambda _event: None
    _loaded: dict[str, Handler] = field(default_factory=dict)
    sessions: SessionManager = field(init=False)
    #: E2E integrity / TLS12 payload security (conformance.agent.e2e_security.E2ESecurity);
    #: None: the agent handles PLAINTEXT Records only
    e2e: Any = None

    def __post_init__(self) -> None:
        self.sessions = SessionManager(self.state, handle=self.handle_msg,
                                       base=self.session_config, on_event=self._event)

    @property
    def _sessions(self) -> dict[str, session.SessionContext]:
        """The session context of each controller (R-E2E.5: at most one)."""
        return self.sessions.contexts

    # --- records -------------------------------------------------------------------

    def handle_record(self, data: bytes, *, now: float) -> list[Record]:
        """Process one inbound Record; return the Records to send back."""
        try:
            rec = records.parse_record(data)
        except records.RecordDecodeError as exc:
            self._event("ignored", "", f"undecodable Record: {exc}")  # R-MTP.5: no msg_id
            return []
        if rec.to_id != self.state.endpoint_id and not self.state.faults.on("record.ignore_to_id"):
            self._event("ignored", rec.from_id, f"Record for {rec.to_id!r} (R-E2E.1)")
            return []
        if rec.from_id == self.state.endpoint_id \
                and not self.state.faults.on("record.accept_own_endpoint_id"):
            # no controller can use the agent's own Endpoint ID (TP-469 2.1)
            self._event("ignored", rec.from_id, "Record from the agent's own Endpoint ID")
            return []
        if self.e2e is not None:  # integrity checks and TLS12 sessions (TP-469 Feature 23)
            secured = self.e2e.handle(rec, now, self)
            if secured is not None:
                return secured
        kind = records.record_kind(rec)
        if kind == "no_session_context":
            if not self.sessions.no_session(rec.from_id, now=now):  # SessionMode Require
                return []
            return self._no_session(rec)
        if kind == "session_context":
            return self._in_session(rec, now)
        if kind == "disconnect":
            self.sessions.forget(rec.from_id)  # R-MTP.7: forget the session context
            self._event("disconnect", rec.from_id, rec.disconnect.reason)
            return []
        if kind is None:
            self._event("ignored", rec.from_id, "Record without record_type (R-ENC.4)")
            return []
        self._event("ignored", rec.from_id, f"{kind} Record from a controller")
        return []

    def _no_session(self, rec: Record) -> list[Record]:
        try:
            if not rec.no_session_context.payload:  # R-E2E.26: the payload is mandatory
                raise records.MsgDecodeError("no_session_context Record without payload")
            msg = records.parse_msg(rec.no_session_context.payload)
        except records.MsgDecodeError as exc:
            self._event("ignored", rec.from_id, f"undecodable Msg: {exc} (R-MTP.5)")
            if self.state.faults.on("record.malformed_answered"):
                return [records.disconnect_record(to_id=rec.from_id,
                                                  from_id=self.state.endpoint_id,
                                                  reason="Record could not be parsed",
                                                  reason_code=7100)]
            return []
        reply = self.handle_msg(rec.from_id, msg)
        if reply is None:
            return []
        return [records.no_session_record(reply, to_id=rec.from_id, from_id=self.state.endpoint_id,
                                          version=rec.version or "1.4")]  # R-MSG.0a

    def _in_session(self, rec: Record, now: float) -> list[Record]:
        """A session_context Record: the controller's session context digests it
        (R-E2E.4, .6, .20, .25) and answers go back inside it (R-MSG.0a)."""
        return self.sessions.receive(rec, now=now)

    def session_poll(self, now: float) -> dict[str, list[Record]]:
        """Time-driven session work for every controller: Records to send, by controller."""
        out = self.sessions.poll(now)
        if self.e2e is not None:  # TLS12 session contexts (conformance.agent.e2e_security)
            for cid, recs in self.e2e.poll(now).items():
                out[cid] = [*out.get(cid, []), *recs]
        return out

    def session_deadline(self) -> float | None:
        """When :meth:`session_poll` has work next (None: nothing scheduled)."""
        times = [self.sessions.next_deadline(),
                 self.e2e.next_deadline() if self.e2e is not None else None]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def outgoing(self, controller_id: str, msg: Msg, *, now: float) -> list[Record]:
        """The Record(s) carrying a Msg the agent originates (Notify): in the controller's
        session context when its E2ESession settings call for one, else no_session_context."""
        return self.sessions.outgoing(controller_id, msg, now=now)

    # --- messages ------------------------------------------------------------------

    def handle_msg(self, controller_id: str, msg: Msg) -> Msg | None:
        """The response or Error to a Msg from ``controller_id``; None when none is due."""
        outer, inner = body_kind(msg)
        if outer == "response":
            self._event("response", controller_id, inner or "", msg)  # e.g. NotifyResp
            return None
        if outer == "error":
            self._event("error_from_controller", controller_id, msg.body.error.err_msg, msg)
            return None
        msg_id = msg.header.msg_id
        if outer is None or inner is None:  # R-ENC.5: a oneof left empty
            return self._answer(messages.error(errors.INVALID_ARGUMENTS, "message has no body",
                                               msg_id=msg_id))
        handler = self._handler(inner)
        if handler is None:  # R-MSG.1
            return self._answer(messages.error(errors.MESSAGE_NOT_SUPPORTED,
                                               f"{inner} is not supported by this agent",
                                               msg_id=msg_id))
        ctx = RequestContext(controller_id, msg, self.access_for(controller_id))
        try:
            reply = handler(self.state, ctx)
        except Exception as exc:  # a bug in a handler: report, don't die
            _log.exception("handler for %s failed", inner)
            reply = messages.error(errors.INTERNAL_ERROR, f"internal error: {type(exc).__name__}",
                                   msg_id=msg_id)
        return self._answer(reply)

    def _answer(self, reply: Msg | None) -> Msg | None:
        if reply is None or self.state.faults.on("msg.no_response"):
            return None
        if self.state.faults.on("msg.wrong_msg_id"):
            reply.header.msg_id = reply.header.msg_id + "-x"
        return reply

    def _handler(self, kind: str) -> Handler | None:
        if kind in self._loaded:
            return self._loaded[kind]
        target = self.handlers.get(kind)
        if target is None:
            return None
        module, _, func = target.partition(":")
        handler: Handler = getattr(importlib.import_module(module), func)
        self._loaded[kind] = handler
        return handler

    def _event(self, kind: str, controller_id: str, detail: str, msg: Msg | None = None) -> None:
        self.on_event(CoreEvent(kind, controller_id, detail, msg))
