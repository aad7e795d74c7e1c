"""Deterministic ids: everything the state machine names is derived from the causing event.

Replaying the same event therefore yields the same run ids, call ids and event ids, which is
what lets every consumer dedupe a re-emission after a crash.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

__all__ = [
    "arguments_hash",
    "canonical_json",
    "derived_id",
]

_NAMESPACE = uuid.UUID("0b6f3c1e-8a53-4c1f-9a49-2f4f0d1e7c55")
_SEEDED = hashlib.sha1(_NAMESPACE.bytes, usedforsecurity=False)
#: the RFC 4122 variant bits over the top hex digit of byte 8
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def derived_id(cause_event_id: str, purpose: str, index: int = 0) -> str:
    """``str(uuid.uuid5(_NAMESPACE, "cause/purpose/index"))``, computed without the UUID object:
    a run start derives three ids, and uuid5 took about a fifth of its transition."""
    digest = _SEEDED.copy()
    digest.update(f"{cause_event_id}/{purpose}/{index}".encode())
    h = digest.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def canonical_json(value: Any) -> str:
    """One spelling per JSON value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def arguments_hash(arguments_json: str) -> str:
    """sha256 of the canonical form of a tool call's arguments; approvals bind to it."""
    try:
        canonical = canonical_json(json.loads(arguments_json))
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
        canonical = arguments_json
    # surrogatepass: a JSON escape like "\ud800" decodes to a lone surrogate, which strict
    # UTF-8 refuses; a hostile model's arguments must not crash the processor.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
