"""Message handlers of the reference Agent, one module per USP request kind.

Each handler is ``handle_<kind>(state: AgentState, ctx: RequestContext) -> Msg``
returning the response or Error Msg; :mod:`conformance.agent.core` dispatches
to them (see ``core.HANDLERS``).
"""
