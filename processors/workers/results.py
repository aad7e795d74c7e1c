"""Envelopes of the events workers send back, with ids derived from the request.

A request delivered twice (a worker crash before its offset was committed, a processor re-sending
its outbox) yields a result with the same event id, which the processor then dedupes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from agentstream.processors.core.ids import derived_id
from agentstream.schemas.events import Envelope, Event

__all__ = [
    "E",
    "encodable",
    "result_envelope",
    "result_event_id",
]

E = TypeVar("E", bound=Event)
_REPLACEMENT = "\ufffd"


def result_event_id(call_id: str, purpose: str) -> str:
    return derived_id(call_id, purpose)


def result_envelope(
    request: Event, *, call_id: str, purpose: str, source: str, now: datetime | None = None
) -> Envelope:
    return request.envelope.caused(
        event_id=result_event_id(call_id, purpose),
        # The worker's clock, not the request's: the state machine checks run deadlines and
        # approval expiries against it.
        occurred_at=now or datetime.now(UTC),
        source=source,
    )


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "".join(_REPLACEMENT if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
        return value
    if isinstance(value, dict):
        return {k: _replace_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    return value


def encodable(result: E) -> E:
    """``result`` with every lone surrogate replaced by U+FFFD. A model or tool can produce one
    (from a JSON escape such as "\\ud800"), and UTF-8, so Avro, cannot carry it: sent as it
    is, the result would stop the worker on every redelivery."""
    return type(result).model_validate(_replace_surrogates(result.model_dump()))
