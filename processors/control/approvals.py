"""The approvals SDK: what is waiting for a person, and their decisions as events.

A decision names the call id and the arguments hash the approver saw, and who decided. The
processor applies it only to that call, while it is pending, and only if the hash matches;
anything else goes to the DLQ. Decision event ids are derived from (call, decision, approver):
repeating the same decision is a duplicate the processor ignores, a different one is rejected.

Pending approvals are read from the ``agent.approval-requests`` and ``agent.approval-decisions``
topics for now; the PostgreSQL projections will serve them once they exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from agentstream.processors.core.ids import derived_id
from agentstream.processors.errors import ApprovalError
from agentstream.schemas.events import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    Envelope,
    Event,
    RunOutcome,
)
from agentstream.streams.producer import AgentStreamProducer, Delivery
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topic_scan import scan_topics
from agentstream.streams.topics import APPROVAL_DECISIONS, APPROVAL_REQUESTS, OUTCOMES

__all__ = [
    "MIN_HASH_PREFIX",
    "TIMER_SOURCE",
    "ApprovalStatus",
    "ApprovalsClient",
    "Decision",
    "decide",
    "expire",
    "resolve_hash",
    "takes_effect",
]

Decision = ApprovalGranted | ApprovalDenied
TIMER_SOURCE = "approval-timer"
MIN_HASH_PREFIX = 8


def _envelope(request: ApprovalRequested, event_id: str, at: datetime, source: str) -> Envelope:
    return request.envelope.caused(event_id=event_id, occurred_at=at, source=source)


def decide(
    request: ApprovalRequested,
    *,
    approve: bool,
    approver: str,
    arguments_hash: str | None = None,
    comment: str | None = None,
    now: datetime | None = None,
    source: str = "approvals",
) -> Decision:
    """The decision event for ``request`` (``arguments_hash`` defaults to the request's)."""
    if not approver.strip():
        raise ApprovalError("a decision needs the approver's identity")
    kind = "granted" if approve else "denied"
    envelope = _envelope(
        request,
        derived_id(request.call_id, f"approval/{kind}/{approver}"),
        now or datetime.now(UTC),
        source,
    )
    decision_type: type[Decision] = ApprovalGranted if approve else ApprovalDenied
    return decision_type(
        envelope=envelope,
        call_id=request.call_id,
        arguments_hash=arguments_hash or request.arguments_hash,
        approver=approver,
        comment=comment,
    )


def expire(request: ApprovalRequested) -> ApprovalExpired:
    """The expiry of ``request``. It is stamped with the deadline itself, so every emission of
    it (a timer restarted, two timers) is the same event with the same id."""
    return ApprovalExpired(
        envelope=_envelope(
            request,
            derived_id(request.call_id, "approval/expired"),
            request.expires_at,
            TIMER_SOURCE,
        ),
        call_id=request.call_id,
        arguments_hash=request.arguments_hash,
    )


def resolve_hash(request: ApprovalRequested, given: str) -> str:
    """The full hash for what the approver typed: the whole hash, or a prefix of at least
    MIN_HASH_PREFIX characters. A hash of other arguments is refused here, before sending."""
    given = given.strip().lower()
    full = request.arguments_hash
    if given == full or (len(given) >= MIN_HASH_PREFIX and full.startswith(given)):
        return full
    raise ApprovalError(
        f"hash {given[:16]}… does not match the arguments of call {request.call_id} ({full[:16]}…)",
        hint="run `agentstream approvals list` and check the arguments again",
    )


@dataclass(frozen=True)
class ApprovalStatus:
    request: ApprovalRequested
    decision: Event | None = None
    run_ended: bool = False

    @property
    def call_id(self) -> str:
        return self.request.call_id

    def state(self, now: datetime | None = None) -> str:
        if isinstance(self.decision, ApprovalGranted):
            return "granted"
        if isinstance(self.decision, ApprovalDenied):
            return "denied"
        if isinstance(self.decision, ApprovalExpired):
            return "expired"
        if self.run_ended:
            return "run_ended"
        if (now or datetime.now(UTC)) >= self.request.expires_at:
            return "overdue"
        return "pending"


class ApprovalsClient:
    """Lists approvals and sends decisions (for the CLI, a UI backend, or a test)."""

    def __init__(self, settings: Settings, producer: AgentStreamProducer | None = None) -> None:
        self.settings = settings
        self._producer = producer
        self._serde = (
            producer.serde
            if producer is not None
            else EventSerde(registry_client(settings.require_schema_registry_url()))
        )

    def statuses(self) -> list[ApprovalStatus]:
        """Every approval request, oldest first, with the decision that took effect, if any."""
        requests: dict[str, ApprovalRequested] = {}
        decisions: dict[str, list[Event]] = {}
        ended: set[str] = set()
        for scanned in scan_topics(
            self.settings, self._serde, [APPROVAL_REQUESTS, APPROVAL_DECISIONS, OUTCOMES]
        ):
            record = scanned.record
            if isinstance(record, ApprovalRequested):
                requests.setdefault(record.call_id, record)
            elif isinstance(record, ApprovalGranted | ApprovalDenied | ApprovalExpired):
                # The processor drops a record keyed by another agent; so does the inbox.
                if scanned.key == record.envelope.agent_id.encode():
                    decisions.setdefault(record.call_id, []).append(record)
            elif isinstance(record, RunOutcome) and (record.envelope.run_id):
                ended.add(record.envelope.run_id)
        ordered = sorted(requests.values(), key=lambda r: r.envelope.occurred_at)
        return [
            ApprovalStatus(
                r,
                _effective(r, decisions.get(r.call_id, [])),
                r.envelope.run_id in ended,
            )
            for r in ordered
        ]

    def pending(self) -> list[ApprovalStatus]:
        return [s for s in self.statuses() if s.state() == "pending"]

    def find(self, call_id: str) -> ApprovalStatus:
        for status in self.statuses():
            if status.call_id == call_id:
                return status
        raise ApprovalError(
            f"no approval request for call {call_id}",
            hint="`agentstream approvals list` shows the pending ones",
        )

    def decide(
        self,
        call_id: str,
        *,
        approve: bool,
        approver: str,
        arguments_hash: str,
        comment: str | None = None,
    ) -> Decision:
        """Check the call is pending and the hash is its arguments', then send the decision."""
        status = self.find(call_id)
        state = status.state()
        if state != "pending":
            raise ApprovalError(f"call {call_id} is not pending: {state}")
        event = decide(
            status.request,
            approve=approve,
            approver=approver,
            arguments_hash=resolve_hash(status.request, arguments_hash),
            comment=comment,
            source="cli",
        )
        self.send(event)
        return event

    def send(self, event: Event) -> Delivery:
        """Send a decision as it is, unchecked (the processor is the judge)."""
        if self._producer is not None:
            return self._producer.send(event)
        with AgentStreamProducer(self.settings, self._serde) as producer:
            return producer.send(event)


def takes_effect(request: ApprovalRequested, decision: Event) -> bool:
    """Whether the processor applies ``decision`` to ``request`` when the call is still
    pending: the call's arguments, agent and tenant, and a grant or denial by the deadline, an
    expiry at it or later (the processor's DLQ holds the others)."""
    if not isinstance(decision, ApprovalGranted | ApprovalDenied | ApprovalExpired):
        return False
    if decision.call_id != request.call_id or decision.arguments_hash != request.arguments_hash:
        return False
    ours, theirs = request.envelope, decision.envelope
    if (ours.agent_id, ours.tenant_id) != (theirs.agent_id, theirs.tenant_id):
        return False
    at = theirs.occurred_at
    if isinstance(decision, ApprovalExpired):
        return at >= request.expires_at
    return at <= request.expires_at


def _effective(request: ApprovalRequested, decisions: list[Event]) -> Event | None:
    """The decision the processor applied: the first one that takes effect."""
    return next((d for d in decisions if takes_effect(request, d)), None)
