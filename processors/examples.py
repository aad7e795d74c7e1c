"""The sample agents of the demo.

``support_agent``: three tools, one of them gated by a human approval, and a memory of the last
five questions and answers of each customer. ``team``: the same work shared by four kinds of
agent (``agentstream demo --team``): triage asks the orders and policy agents at once and hands
refund requests over to the refunds agent, whose refunds a person approves."""

from __future__ import annotations

from agentstream.processors.core.spec import (
    AgentSpec,
    Budgets,
    Catalog,
    Memory,
    ModelSpec,
    delegate,
    handoff,
    tool,
)

__all__ = [
    "issue_refund",
    "lookup_order",
    "orders_agent",
    "policy_agent",
    "refunds_agent",
    "search_faq",
    "support_agent",
    "team",
    "triage_agent",
]

_ORDERS: dict[str, dict[str, object]] = {
    "o-1001": {"status": "shipped", "carrier": "DHL", "total_cents": 4599},
    "o-1002": {"status": "processing", "carrier": None, "total_cents": 1250},
    "o-1003": {"status": "delivered", "carrier": "UPS", "total_cents": 9900},
}


@tool(timeout_s=5)
def lookup_order(order_id: str) -> dict[str, object]:
    """Look up an order's status, carrier and total by its id (like o-1001)."""
    order = _ORDERS.get(order_id)
    if order is None:
        return {"order_id": order_id, "found": False}
    return {"order_id": order_id, "found": True, **order}


@tool(timeout_s=5)
def search_faq(query: str) -> dict[str, str]:
    """Search the help center for an answer."""
    if "return" in query.lower():
        return {"answer": "Items can be returned within 30 days with the receipt."}
    return {"answer": "Our support team answers within one business day."}


@tool(requires_approval=True, timeout_s=10)
def issue_refund(order_id: str, amount_cents: int, reason: str) -> dict[str, object]:
    """Refund part or all of an order. A person must approve every refund."""
    return {"order_id": order_id, "refunded_cents": amount_cents, "reason": reason}


support_agent = AgentSpec(
    name="support",
    system_prompt="You are a support agent. Look orders up first; refunds need approval.",
    model=ModelSpec(provider="scripted", name="support-script"),
    tools=(lookup_order, search_faq, issue_refund),
    budgets=Budgets(max_steps=6, max_tool_calls=6, run_deadline_s=600, approval_timeout_s=300),
    # the last five questions and answers, so a follow-up needs no repeating
    memory=Memory(turns=5),
)


triage_agent = AgentSpec(
    name="triage",
    system_prompt=(
        "You are the first agent a customer reaches. Ask the orders and policy agents what the "
        "answer needs, both at once; hand refund requests to the refunds agent."
    ),
    model=ModelSpec(provider="scripted", name="triage-script"),
    tools=(
        delegate("orders", "Ask the orders agent about an order: status, carrier, total."),
        delegate("policy", "Ask the policy agent what the help center says."),
        handoff("refunds", "Hand the customer to the refunds agent, with a note of the request."),
    ),
    # its delegated runs' steps count against its own
    budgets=Budgets(max_steps=8, max_tool_calls=6, run_deadline_s=600),
    memory=Memory(turns=5),
)

orders_agent = AgentSpec(
    name="orders",
    system_prompt="You answer questions about orders. Look the order up first.",
    model=ModelSpec(provider="scripted", name="orders-script"),
    tools=(lookup_order,),
    budgets=Budgets(max_steps=4, max_tool_calls=4, run_deadline_s=300),
)

policy_agent = AgentSpec(
    name="policy",
    system_prompt="You answer from the help center only.",
    model=ModelSpec(provider="scripted", name="policy-script"),
    tools=(search_faq,),
    budgets=Budgets(max_steps=4, max_tool_calls=4, run_deadline_s=300),
)

refunds_agent = AgentSpec(
    name="refunds",
    system_prompt="You refund orders. Look the order up first; a person approves each refund.",
    model=ModelSpec(provider="scripted", name="refunds-script"),
    tools=(lookup_order, issue_refund),
    budgets=Budgets(max_steps=6, max_tool_calls=6, run_deadline_s=600, approval_timeout_s=300),
    memory=Memory(turns=5),
)

#: ``--spec agentstream.processors.examples:team``: triage first, so inputs naming no kind
#: reach it
team = Catalog.of([triage_agent, orders_agent, policy_agent, refunds_agent])
