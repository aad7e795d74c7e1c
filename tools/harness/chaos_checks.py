"""What must hold after a chaos run, read back from the topics and PostgreSQL.

- every run reached exactly one outcome (re-sent copies share the outcome's event id), the runs
  that other runs started too (delegated, handed off: found on the inputs topic), and a handoff
  counts as its run's outcome;
- every delegating call got exactly one answer (distinct DelegationReturned), from its child;
- every agent's last snapshot equals the fold of the events it recorded as applied, none twice,
  and those are exactly the agent's decodable events on the processor's input topics;
- the read models equal a from-scratch rebuild from the topics (table checksums);
- the DLQ holds exactly the records sent there on purpose, from each of their readers.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from agentstream.processors.core.machine import fold, run_id_of
from agentstream.processors.core.spec import AgentSpec, Catalog, SpecVersions
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
    DelegationReturned,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunHandedOff,
    RunRelation,
)
from agentstream.schemas.reasons import DeadLetterReason
from agentstream.streams.consumer import reader_config
from agentstream.streams.log_end import places_with_records
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topic_scan import scan_topics
from agentstream.streams.topics import DLQ, INPUTS, OUTCOMES, STATE, TOOL_RESULTS
from agentstream.tools.harness.chaos_workload import BadRecord

#: how a run can end (a handoff ends it too: another run takes over)
_OUTCOMES = (RunCompleted, RunFailed, RunCancelled, RunHandedOff)


def serde_for(settings: Settings) -> EventSerde:
    return EventSerde(registry_client(settings.require_schema_registry_url()))


def outcomes_by_run(settings: Settings, serde: EventSerde) -> dict[str, set[str]]:
    """run id -> the distinct event ids of its outcomes."""
    found: dict[str, set[str]] = defaultdict(set)
    for scanned in scan_topics(settings, serde, [OUTCOMES]):
        record = scanned.record
        if isinstance(record, _OUTCOMES):
            found[record.envelope.run_id or ""].add(record.envelope.event_id)
    return found


@dataclass
class Runs:
    """What the topics tell of runs: their outcomes, the runs that other runs started, and the
    answers of the delegated ones."""

    #: run id -> the distinct event ids of its outcomes, and the type of the first
    outcomes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    ended_as: dict[str, str] = field(default_factory=dict)
    outcome_records: int = 0
    #: delegating call id -> the run its input started
    delegated: dict[str, str] = field(default_factory=dict)
    #: the runs that handoffs started (their inputs), and what each handing run names
    handed_to: set[str] = field(default_factory=set)
    handoffs: dict[str, str] = field(default_factory=dict)
    #: delegating call id -> the distinct answers' event ids, and the runs they came from
    answers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    answered_by: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    misplaced: list[str] = field(default_factory=list)

    def started(self, workload: Set[str]) -> set[str]:
        """The workload's runs and every run another run started."""
        return {*workload, *self.delegated.values(), *self.handed_to}

    def take(self, record: object) -> None:
        if isinstance(record, AgentInput):
            self._input(record)
        elif isinstance(record, _OUTCOMES):
            self._outcome(record)
        elif isinstance(record, DelegationReturned):
            self.answers[record.call_id].add(record.event_id)
            self.answered_by[record.call_id].add(record.child_run_id)

    def _input(self, event: AgentInput) -> None:
        origin = event.origin
        if origin is None:
            return
        run = run_id_of(event.event_id)
        if origin.relation is RunRelation.HANDED_OFF:
            self.handed_to.add(run)
        elif origin.reply_call_id is not None:
            self.delegated[origin.reply_call_id] = run

    def _outcome(self, record: RunCompleted | RunFailed | RunCancelled | RunHandedOff) -> None:
        self.outcome_records += 1
        run = record.envelope.run_id or ""
        self.outcomes[run].add(record.event_id)
        self.ended_as.setdefault(run, type(record).__name__)
        if isinstance(record, RunHandedOff):
            self.handoffs[run] = record.to_run_id


def read_runs(settings: Settings, serde: EventSerde, *, answers: bool = True) -> Runs:
    """What the topics tell of runs (without ``answers``, not the delegated runs' answers)."""
    runs = Runs()
    topics = [INPUTS, OUTCOMES, *([TOOL_RESULTS] if answers else [])]
    for scanned in scan_topics(settings, serde, topics):
        record = scanned.record
        if scanned.topic == settings.topic(OUTCOMES.name) and not isinstance(record, _OUTCOMES):
            runs.misplaced.append(f"a {type(record).__name__} on the outcomes topic")
        runs.take(record)
    return runs


def wait_for_runs(
    settings: Settings, workload: Set[str], timeout: float, tick: float = 0.5
) -> Runs:
    """Poll until the runs of ``workload``, and every run they started, have an outcome (or
    the time is up)."""
    serde = serde_for(settings)
    deadline = time.monotonic() + timeout
    while True:
        runs = read_runs(settings, serde, answers=False)
        if runs.started(workload) <= runs.outcomes.keys() or time.monotonic() > deadline:
            return runs
        time.sleep(tick)


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
    handed_off: int = 0
    #: delegating calls (each started one run), and their distinct answers
    delegations: int = 0
    delegation_answers: int = 0
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
    runs = read_runs(settings, serde_for(settings))
    for problem in runs.misplaced[:5]:
        verdict.problem(problem)
    started = runs.started({run_id_of(event.event_id) for event in inputs})
    ended = set(runs.outcomes)
    verdict.runs = len(started)
    verdict.outcome_records = runs.outcome_records
    verdict.lost = len(started - ended)
    twice = [run for run, ids in runs.outcomes.items() if len(ids) > 1]
    verdict.duplicated += len(twice)
    kinds = Counter(runs.ended_as.values())
    verdict.completed = kinds["RunCompleted"]
    verdict.failed = kinds["RunFailed"]
    verdict.cancelled = kinds["RunCancelled"]
    verdict.handed_off = kinds["RunHandedOff"]
    if verdict.lost:
        verdict.problem(f"{verdict.lost} run(s) of {len(started)} have no outcome")
    if ended - started:
        verdict.problem(f"{len(ended - started)} run(s) ended that were never started")
    for run in twice[:5]:
        verdict.problem(f"run {run} has {len(runs.outcomes[run])} different outcomes")
    _check_handoffs(runs, verdict)
    _check_delegations(runs, verdict)


def _check_handoffs(runs: Runs, verdict: Verdict) -> None:
    """Every handoff's input, starting the run it names, reached the inputs topic."""
    for run, to_run in sorted(runs.handoffs.items()):
        if to_run not in runs.handed_to:
            verdict.lost += 1
            verdict.problem(f"run {run} handed off to run {to_run}, whose input never came")


def _check_delegations(runs: Runs, verdict: Verdict) -> None:
    """Every delegating call got exactly one answer, from the run it started."""
    verdict.delegations = len(runs.delegated)
    verdict.delegation_answers = sum(len(ids) for ids in runs.answers.values())
    for call, child in sorted(runs.delegated.items()):
        answers = runs.answers.get(call, set())
        if len(answers) != 1:
            verdict.duplicated += max(0, len(answers) - 1)
            verdict.problem(f"delegating call {call} got {len(answers)} distinct answers")
        elif runs.answered_by[call] != {child}:
            verdict.problem(f"call {call} was answered by {runs.answered_by[call]}, not {child}")
    for call in sorted(runs.answers.keys() - runs.delegated.keys())[:5]:
        verdict.problem(f"an answer to call {call}, which delegated nothing")


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
    spec: AgentSpec | SpecVersions | Catalog,
    inputs: Sequence[AgentInput],
    verdict: Verdict,
    *,
    may_refuse: Set[str] = frozenset(),
) -> None:
    """Every agent's state is the fold of the events on its topics, each applied once, with
    every kind served (``spec``, a catalog); those of ``may_refuse`` (cancels that may come
    before their run) may be refused instead. The agents are the workload's and those that
    other runs started runs of; each ran one run per input."""
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
    runs_per_agent: dict[str, set[str]] = defaultdict(set)
    for event in [*inputs, *(e for e in events.values() if isinstance(e, AgentInput))]:
        runs_per_agent[event.envelope.agent_id].add(event.event_id)
    for agent, runs in sorted((agent, len(ids)) for agent, ids in runs_per_agent.items()):
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
        if state.run is not None or state.queue or state.paused or state.runs_total != runs:
            verdict.problem(
                f"{agent}: {state.runs_completed} completed + {state.runs_failed} failed + "
                f"{state.runs_cancelled} cancelled + {state.runs_handed_off} handed off runs "
                f"of {runs}, status {state.status}"
            )


def _check_one_state(
    agent: str,
    state: AgentState,
    *,
    on_topics: set[str],
    events: dict[str, Event],
    spec: AgentSpec | SpecVersions | Catalog,
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
