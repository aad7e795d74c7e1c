"""Writes one batch of events into the read models, in one transaction with its offsets.

Per batch: lock the offset rows of the batch's partitions and drop records below the stored
offsets (applied before, by us or by another instance); COPY the audit rows; fold the events into
per-table deltas and send every upsert in one pipeline; store the offsets; commit. Nothing is
committed per event: a batch costs about ten round trips to the database, whatever its size.

The audit rows are COPYed straight into ``agent_events``. If one of them was stored before (the
processor re-emits identical events after a crash, with the same event_id), the unique key stops
the COPY, the transaction rolls back, and the batch is written again through a staging table
that keeps only the new events: the read models count every event exactly once.

A row PostgreSQL refuses (a DataError or IntegrityError) does not stop the projector: the batch
is retried in halves until the refused events are isolated; they are handed to ``on_unwritable``
(which dead-letters them) inside the transaction, so they are never both lost and committed past.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import psycopg
from psycopg.errors import UniqueViolation

from agentstream.projections import statements as q
from agentstream.projections.audit import SourcedEvent
from agentstream.projections.database import connect, offsets_of
from agentstream.projections.erasure import Erasure, redact
from agentstream.projections.rows import BatchRows, Erase, first_of_each_event
from agentstream.schemas.errors import AgentStreamError
from agentstream.streams.runtime.logs import get_logger

__all__ = [
    "PROJECTION",
    "ROW_ERRORS",
    "ApplyResult",
    "Batch",
    "BatchWriter",
    "Connection",
    "Cursor",
    "OffsetsMoved",
    "OnUnwritable",
    "TopicPartition",
    "Unwritable",
]

log = get_logger(__name__)

#: The name the read models' offsets are stored under in ``projection_offsets``.
PROJECTION = "read_models"

TopicPartition = tuple[str, int]
Connection = psycopg.Connection[tuple[object, ...]]
Cursor = psycopg.Cursor[tuple[object, ...]]
#: Errors that mean "this row cannot be stored", as opposed to "the database is unusable".
ROW_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    UnicodeError,
)


@dataclass(frozen=True)
class Batch:
    """Decoded events in consumption order, and the offset after the last record of each
    partition in the batch (dead-lettered records included). ``rows`` may carry the rows of its
    events computed ahead (see :meth:`with_rows`); the writer uses them when every event is new."""

    events: list[SourcedEvent]
    positions: dict[TopicPartition, int]
    rows: BatchRows | None = None

    def with_rows(self) -> Batch:
        """The batch with its rows computed: the projector does this on its consuming thread,
        so the writer thread, which waits on PostgreSQL, holds the interpreter lock briefly."""
        return Batch(self.events, self.positions, BatchRows.of(first_of_each_event(self.events)))


@dataclass(frozen=True)
class Unwritable:
    event: SourcedEvent
    error_class: str
    reason: str


OnUnwritable = Callable[[list[Unwritable]], None]


@dataclass
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    skipped: int = 0
    unwritable: list[Unwritable] = field(default_factory=list)
    #: the stored offsets after the commit, for every partition of the batch
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    #: what the batch's MemoryErased events erased (for a rebuild to apply again at its end)
    erasures: list[Erasure] = field(default_factory=list)


class OffsetsMoved(AgentStreamError):
    """The stored offsets are behind what the caller expected (a swapped-in rebuild, a restored
    database) or the caller had no expectation: it must seek to ``stored`` and consume again."""

    def __init__(self, stored: dict[TopicPartition, int]) -> None:
        super().__init__(
            f"stored offsets moved: {sorted(stored.items())[:6]}",
            hint="another projector or a swapped-in rebuild wrote these read models",
        )
        self.stored = stored


class _Mode(Enum):
    DIRECT = "direct"  # COPY into agent_events; fails on an event stored before
    DEDUPE = "dedupe"  # through a staging table, keeping only new events
    ISOLATE = "isolate"  # dedupe, in halves, to single out rows PostgreSQL refuses


class BatchWriter:
    """Owns one connection; not thread-safe (the projector calls it from one writer thread)."""

    def __init__(self, database_url: str, schema: str, *, projection: str = PROJECTION) -> None:
        self.database_url = database_url
        self.schema = schema
        self.projection = projection
        self._conn: Connection | None = None

    # -- connection --------------------------------------------------------------------------

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            conn = connect(self.database_url, self.schema)
            try:
                conn.execute(q.CREATE_STAGING)
                conn.commit()
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def reset(self) -> None:
        """Drop the connection after a failure; the next call opens a fresh one."""
        self.close()

    # -- offsets -----------------------------------------------------------------------------

    def stored_offsets(self) -> dict[TopicPartition, int]:
        conn = self._connection()
        with conn.transaction():
            rows = conn.execute(q.READ_OFFSETS, (self.projection,)).fetchall()
        return offsets_of(rows)

    def _lock_offsets(
        self, conn: Connection, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        ordered = sorted(partitions)
        keys = (self.projection, [t for t, _ in ordered], [p for _, p in ordered])
        with conn.pipeline(), conn.cursor() as cur:
            cur.execute(q.CREATE_OFFSETS, keys)
            cur.execute(q.LOCK_OFFSETS, keys)
            rows = cur.fetchall()
        return offsets_of(rows)

    # -- the batch ---------------------------------------------------------------------------

    def apply(
        self,
        batch: Batch,
        expected: Mapping[TopicPartition, int],
        on_unwritable: OnUnwritable | None = None,
    ) -> ApplyResult:
        """Apply ``batch`` in one transaction; ``expected`` is what the caller believes is stored
        (the positions it consumed from). ``on_unwritable`` receives the events PostgreSQL refused
        before the commit; if it raises, nothing is committed. Raises OffsetsMoved, or psycopg
        errors for a database that is unreachable or unusable (the transaction is rolled back)."""
        mode = _Mode.DIRECT
        while True:
            try:
                return self._transaction(batch, expected, on_unwritable, mode)
            except UniqueViolation:
                if mode is not _Mode.DIRECT:
                    raise
                mode = _Mode.DEDUPE
            except ROW_ERRORS as exc:
                if mode is _Mode.ISOLATE:
                    raise
                log.warning("batch_refused_isolating_rows", error=_first_line(exc))
                mode = _Mode.ISOLATE

    def _transaction(
        self,
        batch: Batch,
        expected: Mapping[TopicPartition, int],
        on_unwritable: OnUnwritable | None,
        mode: _Mode,
    ) -> ApplyResult:
        conn = self._connection()
        with conn.transaction():
            stored = self._lock_offsets(conn, batch.positions)
            moved = {
                tp
                for tp in batch.positions
                if tp not in expected or stored.get(tp, 0) < expected[tp]
            }
            if moved:
                raise OffsetsMoved(stored)
            fresh = [e for e in batch.events if e.offset >= stored[(e.topic, e.partition)]]
            result = ApplyResult(skipped=len(batch.events) - len(fresh))
            unique = first_of_each_event(fresh)
            if mode is _Mode.ISOLATE:
                self._write_isolating(conn, unique, result)
            elif mode is _Mode.DEDUPE:
                result.applied = self._write(conn, unique, result.erasures, dedupe=True)
            else:
                ahead = batch.rows if batch.rows is not None and not result.skipped else None
                result.applied = self._write(
                    conn, unique, result.erasures, dedupe=False, rows=ahead
                )
            result.duplicates = len(fresh) - result.applied - len(result.unwritable)
            if result.unwritable and on_unwritable is not None:
                on_unwritable(result.unwritable)
            result.positions = {
                tp: max(stored[tp], position) for tp, position in batch.positions.items()
            }
            ordered = sorted(result.positions.items())
            conn.execute(
                q.STORE_OFFSETS,
                (
                    [t for (t, _), _ in ordered],
                    [p for (_, p), _ in ordered],
                    [o for _, o in ordered],
                    self.projection,
                ),
            )
        return result

    def _write_isolating(
        self, conn: Connection, events: list[SourcedEvent], result: ApplyResult
    ) -> None:
        """Write in halves inside savepoints until every refused event stands alone; consumption
        order is kept, so the tables equal what writing the good events in one go gives."""
        if not events:
            return
        erasures: list[Erasure] = []
        try:
            with conn.transaction():
                result.applied += self._write(conn, events, erasures, dedupe=True)
            result.erasures += erasures
        except ROW_ERRORS as exc:
            if len(events) == 1:
                result.unwritable.append(Unwritable(events[0], type(exc).__name__, _describe(exc)))
                return
            middle = len(events) // 2
            self._write_isolating(conn, events[:middle], result)
            self._write_isolating(conn, events[middle:], result)

    def _write(
        self,
        conn: Connection,
        events: list[SourcedEvent],
        erasures: list[Erasure],
        *,
        dedupe: bool,
        rows: BatchRows | None = None,
    ) -> int:
        """Store the audit rows and fold the new ones into the read models; returns how many
        were new, and adds what they erased to ``erasures``. ``rows`` are the rows of
        ``events`` if computed ahead."""
        if not events:
            return 0
        with conn.cursor() as cur:
            if dedupe:
                cur.execute(q.CLEAR_STAGING)
                _copy(cur, q.COPY["incoming_events"], [e.audit_row() for e in events])
                cur.execute(q.INSERT_STAGED_EVENTS)
                new_ids = {row[0] for row in cur.fetchall()}
                events = [e for e in events if e.event.envelope.event_id in new_ids]
                if events:
                    self._upsert(conn, cur, BatchRows.of(events, audit=False), erasures)
                return len(events)
            rows = rows or BatchRows.of(events)
            _copy(cur, q.COPY_EVENTS, rows.audit)
            self._upsert(conn, cur, rows, erasures)
        return rows.events

    def _upsert(
        self, conn: Connection, cur: Cursor, rows: BatchRows, erasures: list[Erasure]
    ) -> None:
        """Stage the deltas (COPY), then send every read-model statement of the batch at once.
        Erasures delete their facts before the batch's own facts are stored, and scrub the
        agent's rows once everything else of the batch is written."""
        for table, staged in (
            ("incoming_agents", rows.agents),
            ("incoming_runs", rows.runs),
            ("incoming_tool_calls", rows.tool_calls),
            ("incoming_approvals", rows.approvals),
            ("incoming_inputs", rows.inputs),
            ("incoming_waits", rows.waits),
            ("incoming_timers", rows.timers),
            ("incoming_facts", rows.facts),
            ("incoming_refresh", rows.refresh),
        ):
            if staged:
                _copy(cur, q.COPY[table], staged)
        erased = [_erase_facts(cur, erase) for erase in rows.erasures]
        with conn.pipeline():
            _statements(cur, rows)
        for erasure in erased:
            redact(conn, erasure)
        erasures += erased

    def redact(self, erasures: list[Erasure]) -> None:
        """Apply ``erasures`` again, in one transaction: a rebuild does this after replaying,
        for the rows of events that were replayed after the erasure that reaches them."""
        if not erasures:
            return
        conn = self._connection()
        with conn.transaction():
            for erasure in erasures:
                redact(conn, erasure)


def _statements(cur: Cursor, rows: BatchRows) -> None:
    """Every read-model statement a batch needs, in order (sent as one pipeline)."""
    cur.execute(q.UPSERT_AGENTS)
    if rows.refresh:
        cur.execute(q.SET_PAUSED)
    if rows.facts:
        cur.execute(q.UPSERT_FACTS)
    if rows.timers:
        cur.execute(q.UPSERT_TIMERS)
    if rows.waits:
        cur.execute(q.UPSERT_WAITS)
    if rows.inputs:  # before the runs: a run new in this batch may be an input's
        cur.execute(q.UPSERT_INPUTS)
        cur.execute(q.FILL_LATE_RUN_INPUTS)
    if rows.runs:
        cur.execute(q.UPSERT_RUNS)
        cur.execute(q.FILL_NEW_RUN_INPUTS)
    if rows.tool_calls:
        cur.execute(q.UPSERT_TOOL_CALLS)
    if rows.approvals:
        cur.execute(q.UPSERT_APPROVALS)
    if rows.approvals or rows.runs:  # a run that ended closes its undecided approvals
        cur.execute(q.DECIDE_APPROVALS)
    if rows.tool_calls or rows.approvals or rows.runs:
        cur.execute(q.SYNC_TOOL_CALL_APPROVALS)
    if rows.waits or rows.refresh or rows.runs:
        cur.execute(q.REFRESH_WAITS)
    if rows.runs or rows.approvals or rows.refresh:
        cur.execute(q.REFRESH_AGENTS)


def _erase_facts(cur: Cursor, erase: Erase) -> Erasure:
    """Delete the stored facts ``erase`` removes; the erasure of their values and of the
    batch's own erased facts."""
    keys = None if erase.stored_keys is None else list(erase.stored_keys)
    params = {"agent_id": erase.agent_id, "keys": keys, "keeps": list(erase.keeps)}
    stored = [str(row[0]) for row in cur.execute(q.ERASE_FACTS, params).fetchall()]
    return Erasure(erase.agent_id, (*stored, *erase.values), erase.occurred_at)


def _copy(cur: Cursor, statement: str, rows: list[tuple[Any, ...]]) -> None:
    with cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _describe(exc: BaseException) -> str:
    """PostgreSQL's message and its detail, which says which value it refused."""
    detail = exc.diag.message_detail if isinstance(exc, psycopg.Error) else None
    return f"{_first_line(exc)}: {detail}" if detail else _first_line(exc)
