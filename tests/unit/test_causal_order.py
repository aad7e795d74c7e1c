"""Causes before effects when they share a moment (pure: no I/O)."""

from __future__ import annotations

from agentstream.processors.core.ordering import causal_order

Item = tuple[str, str | None]  # (event id, the id of its cause)


def _order(items: list[Item]) -> list[str]:
    return [i for i, _ in causal_order(items, event_id=lambda t: t[0], cause=lambda t: t[1])]


def test_an_effect_listed_before_its_cause_moves_after_it() -> None:
    # same millisecond, sorted by topic: the model call above the tool result that caused it
    items: list[Item] = [
        ("model-call-2", "tool-result"),
        ("tool-result", "tool-call"),
        ("tool-call", None),
    ]
    assert _order(items) == ["tool-call", "tool-result", "model-call-2"]


def test_an_order_that_is_causal_already_is_kept_as_it_is() -> None:
    items: list[Item] = [("input", None), ("call", "input"), ("other", None), ("result", "call")]
    assert _order(items) == ["input", "call", "other", "result"]


def test_causes_outside_the_list_and_cycles_lose_nothing() -> None:
    items: list[Item] = [("b", "a"), ("c", "missing"), ("x", "y"), ("y", "x")]
    assert sorted(_order(items)) == ["b", "c", "x", "y"]
    assert _order(items)[:2] == ["b", "c"]
