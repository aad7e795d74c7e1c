"""The sample support agent of the demo: three tools, one of them gated by a human approval,
and a memory of the last five questions and answers of each customer."""

from __future__ import annotations

from agentstream.processors.core.spec import AgentSpec, Budgets, Memory, ModelSpec, tool

__all__ = [
    "issue_refund",
    "lookup_order",
    "search_faq",
    "support_agent",
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
