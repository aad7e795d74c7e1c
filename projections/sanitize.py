"""What PostgreSQL cannot store, made storable: NUL characters and JSON it refuses.

PostgreSQL text and jsonb cannot hold NUL characters (U+0000). They are replaced by U+FFFD (the
Unicode replacement character) in the event, so in its payload and in every column derived from
it, and the audit row is flagged ``sanitized``: the replacement is visible, never silent.
"""

from __future__ import annotations

import json
from typing import Any

from agentstream.schemas.events import Event

__all__ = [
    "NUL",
    "REPLACEMENT",
    "jsonb_text",
    "sanitize",
    "strip_nul",
]

NUL = "\x00"
REPLACEMENT = "\ufffd"
_NUL_ESCAPE = "\\u0000"


def strip_nul(value: Any) -> Any:
    """``value`` with every NUL in its strings (and dict keys) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT) if NUL in value else value
    if isinstance(value, dict):
        return {strip_nul(k): strip_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strip_nul(v) for v in value]
    return value


def sanitize(event: Event) -> tuple[Event, str, bool]:
    """The event as PostgreSQL can store it, its JSON payload, and whether anything changed."""
    payload = event.model_dump_json()
    # A raw NUL is always escaped in JSON text, so this finds every one (and, rarely, an escaped
    # backslash followed by "u0000", which the strip below leaves unchanged).
    if _NUL_ESCAPE not in payload:
        return event, payload, False
    cleaned = type(event).model_validate(strip_nul(event.model_dump()))
    if cleaned == event:
        return event, payload, False
    return cleaned, cleaned.model_dump_json(), True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def jsonb_text(raw: str | None) -> str | None:
    """JSON text for a jsonb column from a ``*_json`` field: kept as is when it is valid JSON that
    PostgreSQL accepts, re-encoded without NULs when it escapes one, and stored as a JSON string
    when it is not JSON at all (a tool may return anything)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        return json.dumps(strip_nul(raw))
    if _NUL_ESCAPE in raw:
        return json.dumps(strip_nul(value))
    return raw
