"""What must hold after a chaos run, read back from the topics and PostgreSQL.

- every run reached exactly one outcome (re-sent copies share the outcome's event id);
- every agent's last snapshot equals the fold of the events it recorded as applied, none twice,
  and those are exactly the agent's decodable events on the processor's input topics;
- the read models equal a from-scratch rebuild from the topics (table checksums);
- the DLQ holds exactly the records sent there on purpose, from each of their readers.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from agentstream.processors.core.machine import fold
from agentstream.processors.core.spec import AgentSpec
from agentstream.processors.core.state import AgentState
from agentstream.processors.engine.loop import PROCESSOR_INPUTS
from agentstream.projections.database import connect
from agentstream.projections.projector import PROJECTED_TOPICS
from agentstream.projections.queries import projection_position
from agentstream.projections.rebuild import rebuild
from agentstream.schemas.events import (
    AgentInput,
    AgentStateSnapshot,
    DeadLetter,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
)
from agentstream.schemas.reasons import DeadLetterReason
from agentstream.streams.consumer import reader_config
from agentstream.streams.log_end import places_with_records
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topic_scan import scan_topics
from agentstream.streams.topics import DLQ, OUTCOMES, STATE
from agentstream.tools.harness.chaos_workload import BadRecord


def serde_for(settings: Settings) -> EventSerde:
    return EventSerde(registry_client(settings.require_schema_registry_url()))


def outcomes_by_run(settings: Settings, serde: EventSerde) -> dict[str, set[str]]:
    """run id -> the distinct event ids of its outcomes."""
    found: dict[str, set[str]] = defaultdict(set)
    for scanned in scan_topics(settings, serde, [OUTCOMES]):
        record = scanned.record
        if isinstance(record, RunCompleted | RunFailed | RunCancelled):
            found[record.envelope.run_id or ""].add(record.envelope.event_id)
    return found


def wait_for_outcomes(
    settings: Settings, runs: int, timeout: float, tick: float = 0.5
) -> dict[str, set[str]]:
    """Poll the outcomes topic until ``runs`` runs have an outcome (or the time is up)."""
    serde = serde_for(settings)
    deadline = time.monotonic() + timeout
    while True:
        found = outcomes_by_run(settings, serde)
        if len(found) >= runs or time.monotonic() > deadline:
            return found
        time.sleep(tick)


def topic_ends(settings: Settings) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(reader_config(settings, "ends", eof=False))
    try:
        metadata = consumer.list_topics(timeout=10)
        ends = {}
        for spec in PROJECTED_TOPICS:
            topic = settings.topic(spec.name)
            for partition in metadata.topics[topic].partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
                ends[(topic, partition)] = high
        return ends
    finally:
        consumer.close()


def wait_projection_caught_up(settings: Settings, schema: str, timeout: float) -> bool:
    """Until the projector's stored offsets reach the last record of every topic twice in a
    row (past them there may be transaction markers only)."""
    from confluent_kafka import Consumer

    database_url = settings.require_database_url()
    deadline = time.monotonic() + timeout
    previous: dict[tuple[str, int], int] | None = None
    reader = Consumer(reader_config(settings, "ends"))
    try:
        while time.monotonic() < deadline:
            ends = topic_ends(settings)
            with connect(database_url, schema, autocommit=True) as conn:
                stored = projection_position(conn)
            short = {key: (stored.get(key, 0), end) for key, end in ends.items()}
            caught_up = not places_with_records(reader, short, timeout=10)
            if caught_up and ends == previous:
                return True
            previous = ends if caught_up else None
            time.sleep(0.3)
    finally:
        reader.close()
    return False


@dataclass
class Verdict:
    """The figures of a run and every broken promise found."""

    events: int = 0
    runs: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    outcome_records: int = 0
    lost: int = 0
    duplicated: int = 0
    applied_checked: int = 0
    dead_letters: int = 0
    dead_letters_expected: int = 0
    projection_equal: bool | None = None
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


def check_outcomes(settings: Settings, inputs: Sequence[AgentInput], verdict: Verdict) -> None:
    serde = serde_for(settings)
    distinct: dict[str, set[str]] = defaultdict(set)
    kinds: dict[str, str] = {}
    for scanned in scan_topics(settings, serde, [OUTCOMES]):
        record = scanned.record
        if not isinstance(record, RunCompleted | RunFailed | RunCancelled):
            verdict.problem(f"a {type(record).__name__} on the outcomes topic")
            continue
        verdict.outcome_records += 1
        run = record.envelope.run_id or ""
        distinct[run].add(record.envelope.event_id)
        kinds[run] = type(record).__name__
    verdict.runs = len(inputs)
    verdict.lost = max(0, len(inputs) - len(distinct))
    twice = [run for run, ids in distinct.items() if len(ids) > 1]
    verdict.duplicated += len(twice)
    verdict.completed = sum(1 for k in kinds.values() if k == "RunCompleted")
    verdict.failed = sum(1 for k in kinds.values() if k == "RunFailed")
    verdict.cancelled = sum(1 for k in kinds.values() if k == "RunCancelled")
    if verdict.lost:
        verdict.problem(f"{verdict.lost} run(s) of {len(inputs)} have no outcome")
    if len(distinct) > len(inputs):
        verdict.problem(f"{len(distinct)} runs ended, but only {len(inputs)} were started")
    for run in twice[:5]:
        verdict.problem(f"run {run} has {len(distinct[run])} different outcomes")


def latest_states(settings: Settings, serde: EventSerde) -> dict[str, AgentState]:
    snapshots: dict[str, AgentStateSnapshot] = {}
    for scanned in scan_topics(settings, serde, [STATE]):
        record = scanned.record
        if isinstance(record, AgentStateSnapshot):
            current = snapshots.get(record.agent_id)
            if current is None or record.version >= current.version:
                snapshots[record.agent_id] = record
    return {
        agent: AgentState.from_json(s.state_json, s.state_format) for agent, s in snapshots.items()
    }


def check_states_fold(
    settings: Settings,
    spec: AgentSpec,
    inputs: Sequence[AgentInput],
    verdict: Verdict,
    *,
    may_refuse: Set[str] = frozenset(),
) -> None:
    """Every agent's state is the fold of the events on its topics, each applied once; those of
    ``may_refuse`` (cancels that may come before their run) may be refused instead."""
    serde = serde_for(settings)
    states = latest_states(settings, serde)
    events: dict[str, Event] = {}
    per_agent: dict[str, set[str]] = defaultdict(set)
    for scanned in scan_topics(settings, serde, list(PROCESSOR_INPUTS)):
        if isinstance(scanned.record, Event):
            # A worker that re-runs a call (its partition moved, it was killed) sends the same
            # event id again, with its own timings: the processor applied the first copy on the
            # partition and ignored the rest, so the fold must take the first one too.
            events.setdefault(scanned.record.envelope.event_id, scanned.record)
            per_agent[scanned.record.envelope.agent_id].add(scanned.record.envelope.event_id)
    runs_per_agent: dict[str, int] = defaultdict(int)
    for event in inputs:
        runs_per_agent[event.envelope.agent_id] += 1
    for agent, runs in sorted(runs_per_agent.items()):
        state = states.get(agent)
        if state is None:
            verdict.problem(f"{agent}: no state snapshot")
            continue
        refused = (may_refuse & per_agent[agent]) - set(state.recent_event_ids)
        _check_one_state(
            agent,
            state,
            on_topics=per_agent[agent] - refused,
            events=events,
            spec=spec,
            verdict=verdict,
        )
        ended = state.runs_completed + state.runs_failed + state.runs_cancelled
        if state.run is not None or state.queue or state.paused or ended != runs:
            verdict.problem(
                f"{agent}: {state.runs_completed} completed + {state.runs_failed} failed + "
                f"{state.runs_cancelled} cancelled runs of {runs}, status {state.status}"
            )


def _check_one_state(
    agent: str,
    state: AgentState,
    *,
    on_topics: set[str],
    events: dict[str, Event],
    spec: AgentSpec,
    verdict: Verdict,
) -> None:
    applied = state.recent_event_ids
    verdict.applied_checked += len(applied)
    if len(set(applied)) != len(applied):
        verdict.duplicated += len(applied) - len(set(applied))
        verdict.problem(f"{agent}: an event was applied twice")
    if len(applied) != state.version:
        verdict.problem(f"{agent}: the dedupe window lost part of the history")
    if set(applied) != on_topics:
        verdict.problem(
            f"{agent}: {len(on_topics - set(applied))} event(s) never applied, "
            f"{len(set(applied) - on_topics)} applied but not on the topics"
        )
    elif fold([events[i] for i in applied], spec) != state:
        verdict.problem(f"{agent}: the snapshot is not the fold of its applied events")


def check_projection(settings: Settings, schema: str, verdict: Verdict) -> None:
    report = rebuild(settings, schema=schema, swap=False)
    verdict.projection_equal = report.equal
    if not report.comparable:
        verdict.problem(f"the projection is behind the topics in {len(report.live_behind)} places")
    elif not report.equal:
        verdict.problem(f"the read models differ from a rebuild in {report.differing()}")


def check_dead_letters(
    settings: Settings,
    bad: Sequence[BadRecord],
    verdict: Verdict,
    *,
    may_refuse: Set[str] = frozenset(),
) -> None:
    """Every bad record dead-lettered by each of its readers, and nothing else, but for the
    events of ``may_refuse``: cancels that may reach the processor before their run."""
    expected = {
        (reader, record.topic, record.partition, record.offset)
        for record in bad
        for reader in record.readers
    }
    found: set[tuple[str, str, int, int]] = set()
    for scanned in scan_topics(settings, serde_for(settings), [DLQ]):
        letter = scanned.record
        if not isinstance(letter, DeadLetter):
            continue
        verdict.dead_letters += 1
        found.add(
            (
                letter.source,
                letter.original_topic,
                letter.original_partition,
                letter.original_offset,
            )
        )
        key = (
            letter.source,
            letter.original_topic,
            letter.original_partition,
            letter.original_offset,
        )
        refused_cancel = (
            letter.event_id in may_refuse and letter.error_class == DeadLetterReason.UNKNOWN_RUN
        )
        if key not in expected and not refused_cancel:
            verdict.problem(
                f"unexpected dead letter from {letter.source} of {letter.original_topic}: "
                f"{letter.error_class}: {letter.reason[:200]}"
            )
    verdict.dead_letters_expected = len(expected)
    for reader, topic, partition, offset in sorted(expected - found):
        verdict.problem(f"{reader} did not dead-letter {topic}[{partition}]@{offset}")


def count_events(settings: Settings) -> int:
    return len(scan_topics(settings, serde_for(settings), list(PROJECTED_TOPICS)))
