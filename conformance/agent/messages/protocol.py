"""GetSupportedProtocol (TR-369 "GetSupportedProtocol"; TP-469 1.80)."""

from __future__ import annotations

from conformance.agent.context import AgentState, RequestContext
from conformance.agent.faults import register
from conformance.usp import messages
from conformance.usp.schema import Msg

register("gsp.bad_version_list", "TP-469 1.80",
         "lists its USP versions separated by ';' instead of a comma-separated list")


def handle_get_supported_protocol(state: AgentState, ctx: RequestContext) -> Msg:
    """Answer with every USP version the agent supports, comma separated."""
    sep = ";" if state.faults.on("gsp.bad_version_list") else ","
    return messages.response("get_supported_protocol_resp",
                             {"agent_supported_protocol_versions": sep.join(state.supported_versions)},
                             msg_id=ctx.msg_id)
