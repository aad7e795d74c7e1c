"""Derived ids must never change: recorded histories and every consumer's dedupe rely on them."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from agentstream.processors.core.ids import derived_id

NAMESPACE = uuid.UUID("0b6f3c1e-8a53-4c1f-9a49-2f4f0d1e7c55")
# text that UTF-8 can encode (uuid5 refuses lone surrogates too)
encodable = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)


@given(cause=encodable, purpose=encodable, index=st.integers(min_value=0, max_value=10**6))
def test_a_derived_id_is_the_uuid5_of_cause_purpose_and_index(
    cause: str, purpose: str, index: int
) -> None:
    expected = str(uuid.uuid5(NAMESPACE, f"{cause}/{purpose}/{index}"))
    assert derived_id(cause, purpose, index) == expected


def test_a_recorded_id_stays_the_same() -> None:
    assert derived_id("evt-1", "run") == "f20875b2-69f0-5c59-9ca0-6614091f0027"
    assert uuid.UUID(derived_id("evt-1", "call", 2)).version == 5
