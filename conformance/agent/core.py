"""The transport-independent heart of the reference Agent: Records in, Records out.

:class:`AgentCore` takes the bytes of a Record an MTP delivered and returns
the Records to send back on the same MTP. On the way it applies the Record
rules (R-E2E.1 addressing, R-ENC.4 discarding records without a type,
R-MTP.5 error-or-ignore, R-MSG.0a answering in the same record type, E2E
session contexts via :class:`conformance.usp.session.SessionContext`), finds
the controller's permissions, and dispatches each request Msg to its
handler module in :mod:`conformance.agent.messages` (``get``, ``set``, ...).

Handlers are registered by request kind in :data:`HANDLERS` as
``"module:function"`` and imported on first use.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from conformance.agent.context import FULL_ACCESS, Access, AgentState, Handler, RequestContext
from conformance.agent.faults import register
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
register("msg.no_response", "R-MSG.0",
         "drops the response to every request (sends nothing back)")
register("msg.wrong_msg_id", "R-MSG.9",
         "answers with a msg_id different from the request's")


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
    session_config: session.SessionConfig = field(default_factory=session.SessionConfig)
    handlers: Mapping[str, str] = field(default_factory=lambda: dict(HANDLERS))
    on_event: Callable[[CoreEvent], None] = lambda _event: None
    _sessions: dict[str, session.SessionContext] = field(default_factory=dict)
    _loaded: dict[str, Handler] = field(default_factory=dict)

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
        kind = records.record_kind(rec)
        if kind == "no_session_context":
            return self._no_session(rec)
        if kind == "session_context":
            return self._in_session(rec, now)
        if kind == "disconnect":
            self._sessions.pop(rec.from_id, None)  # R-MTP.7: forget the session context
            self._event("disconnect", rec.from_id, rec.disconnect.reason)
            return []
        if kind is None:
            self._event("ignored", rec.from_id, "Record without record_type (R-ENC.4)")
            return []
        self._event("ignored", rec.from_id, f"{kind} Record from a controller")
        return []

    def _no_session(self, rec: Record) -> list[Record]:
        try:
            msg = records.parse_msg(rec.no_session_context.payload)
        except records.MsgDecodeError as exc:
            self._event("ignored", rec.from_id, f"undecodable Msg: {exc} (R-MTP.5)")
            return []
        reply = self.handle_msg(rec.from_id, msg)
        if reply is None:
            return []
        return [records.no_session_record(reply, to_id=rec.from_id, from_id=self.state.endpoint_id,
                                          version=rec.version or "1.4")]  # R-MSG.0a

    def _in_session(self, rec: Record, now: float) -> list[Record]:
        ctx = self._sessions.get(rec.from_id)
        if ctx is None:  # R-E2E.4: the controller starts the session
            ctx = session.SessionContext(self.state.endpoint_id, rec.from_id, self.session_config)
            self._sessions[rec.from_id] = ctx
        events = ctx.receive(rec, now=now)
        out = list(session.outgoing_records(events))
        for event in events:
            if isinstance(event, session.MessageReceived):
                try:
                    msg = records.parse_msg(event.payload)
                except records.MsgDecodeError as exc:
                    self._event("ignored", rec.from_id, f"undecodable Msg in session: {exc}")
                    continue
                reply = self.handle_msg(rec.from_id, msg)
                if reply is not None:
                    out += ctx.send(reply.SerializeToString(), now=now)  # R-MSG.0a
            elif isinstance(event, session.ProtocolViolation):
                self._event("session_violation", rec.from_id, event.reason)
        return out

    def session_poll(self, now: float) -> dict[str, list[Record]]:
        """Time-driven session work for every controller: Records to send, by controller."""
        return {cid: session.outgoing_records(ctx.poll(now)) for cid, ctx in self._sessions.items()}

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
