"""Rebuild every read model from the topics, check it against the live tables, swap it in.

1. Migrate a fresh shadow schema (``<schema>_rebuild``) and project every agent topic into it,
   from the beginning to the end offsets taken at the start, with the projector's own writer.
2. Lock the live offsets table (a running projector waits at its next batch), read the live
   offsets, and bring the shadow up to them exactly. Where the live projection is further, the
   shadow catches up; where it is behind, the two cannot be compared (the report says which).
3. Compare the tables' checksums, then (unless told not to) swap by renaming: the live schema
   goes away, the shadow takes its name, in the same transaction. A running projector continues
   on the new tables from their stored offsets: its batch checks them under lock and rewinds if
   they are behind what it consumed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from psycopg import sql

from agentstream.projections.checksums import TableChecksum, table_checksums
from agentstream.projections.database import (
    DEFAULT_SCHEMA,
    check_schema_name,
    connect,
    offsets_of,
    schema_exists,
)
from agentstream.projections.erasure import Erasure
from agentstream.projections.intake import Intake, Prepared, left_to_consumers
from agentstream.projections.migrate import migrate
from agentstream.projections.projector import SOURCE, projected_topics
from agentstream.projections.writer import PROJECTION, ApplyResult, BatchWriter, Unwritable
from agentstream.schemas.errors import ConfigurationError
from agentstream.streams.consumer import reader_config
from agentstream.streams.dlq import DeadLetterSink
from agentstream.streams.log_end import places_with_records
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client

__all__ = [
    "Key",
    "Progress",
    "RebuildReport",
    "rebuild",
]

log = get_logger(__name__)

Key = tuple[str, int]
#: (records done, records to do), after every batch
Progress = Callable[[int, int], None]


@dataclass
class RebuildReport:
    schema: str
    shadow: str
    records: int = 0
    applied: int = 0
    seconds: float = 0.0
    rebuilt: dict[str, TableChecksum] = field(default_factory=dict)
    #: the live tables' checksums; None when there was no live projection
    live: dict[str, TableChecksum] | None = None
    #: partitions where the live projection was behind the topics, so not comparable
    live_behind: list[Key] = field(default_factory=list)
    swapped: bool = False

    @property
    def comparable(self) -> bool:
        return self.live is not None and not self.live_behind

    @property
    def equal(self) -> bool | None:
        """Whether the live tables equal the rebuilt ones; None if they cannot be compared."""
        if not self.comparable:
            return None
        return self.live == self.rebuilt

    def differing(self) -> list[str]:
        if self.live is None:
            return []
        return [t for t, c in self.rebuilt.items() if self.live.get(t) != c]

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


class _Shadow:
    """Consumes the topics by explicit assignment and writes into the shadow schema."""

    def __init__(self, settings: Settings, shadow: str, batch_size: int) -> None:
        database_url = settings.require_database_url()
        serde = EventSerde(registry_client(settings.require_schema_registry_url()))
        self.producer = AgentStreamProducer(settings, serde)
        self.specs = projected_topics(settings)
        self.intake = Intake(
            serde, DeadLetterSink(self.producer, SOURCE), self.specs, left_to_consumers(settings)
        )
        self.writer = BatchWriter(database_url, shadow)
        # the writer's connection is used from this one thread only
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rebuild-db")
        self.batch_size = batch_size
        self.stored: dict[Key, int] = {}
        self.records = 0
        self.applied = 0
        #: every erasure replayed, to apply again once everything is (see ``redact_again``)
        self.erasures: list[Erasure] = []
        self.consumer = Consumer(reader_config(settings, "rebuild"))

    def _unwritable(self, prepared: Prepared, refused: list[Unwritable]) -> None:
        self.intake.dead_letter_unwritable(refused, prepared)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            try:
                self.pool.submit(self.writer.close).result()
            finally:
                self.pool.shutdown()
                self.producer.close()

    def ends(self) -> dict[Key, tuple[int, int]]:
        """(low, high) watermarks of every partition of every projected topic."""
        metadata = self.consumer.list_topics(timeout=15)
        found: dict[Key, tuple[int, int]] = {}
        for topic in self.specs:
            described = metadata.topics.get(topic)
            if described is None or described.error is not None:
                raise ConfigurationError(
                    f"topic {topic} does not exist", hint="run `agentstream topics ensure`"
                )
            for partition in described.partitions:
                low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=15
                )
                found[(topic, partition)] = (low, high)
        return found

    def project(
        self,
        targets: dict[Key, int],
        on_progress: Progress | None,
        total: int,
        *,
        through_log_end: bool = False,
    ) -> None:
        """Apply every record below ``targets`` (from the shadow's stored offsets on), and store
        exactly the targets as the next offsets, also where the log ends in a gap.

        With ``through_log_end`` the targets are high watermarks, and a partition is finished at
        the end of its log (partition EOF) once its target is reached: the embedded broker
        reports a high watermark that stops short of the last records of a multi-record batch,
        and stopping there would leave them out of the rebuild. The stored next offset is then
        the one after the last record applied, if that is past the target."""
        todo = {key: end for key, end in targets.items() if end > self.stored.get(key, 0)}
        beyond: dict[Key, int] = {}
        for key in targets:
            self.stored.setdefault(key, 0)
        if not todo:
            return
        self.consumer.assign(
            [
                TopicPartition(t, p, self.stored[(t, p)] or OFFSET_BEGINNING)
                for (t, p) in sorted(todo)
            ]
        )
        pending: Future[ApplyResult] | None = None
        while todo:
            prepared = Prepared()
            done: set[Key] = set()
            for msg in self.consumer.consume(self.batch_size, 1.0):
                key = (msg.topic() or "", msg.partition() or 0)
                if key not in todo or key in done:
                    continue
                apply, finished = _verdict(msg, todo[key], through_log_end)
                if apply:
                    self.records += 1
                    prepared.add(msg, self.intake.take(msg))
                    if (msg.offset() or 0) >= todo[key]:
                        beyond[key] = (msg.offset() or 0) + 1
                if finished:
                    done.add(key)
            for key in done:
                prepared.batch.positions[key] = max(todo.pop(key), beyond.pop(key, 0))
            # as in the projector: the next batch is decoded while this one is written
            batch = prepared.batch.with_rows() if prepared.batch.events else prepared.batch
            self._finish(pending)
            pending = None
            if batch.positions:
                unwritable = partial(self._unwritable, prepared)
                pending = self.pool.submit(self.writer.apply, batch, dict(self.stored), unwritable)
            if on_progress is not None:
                on_progress(self.records, total)
        self._finish(pending)
        self.consumer.assign([])

    def _finish(self, pending: Future[ApplyResult] | None) -> None:
        if pending is not None:
            result = pending.result()
            self.stored.update(result.positions)
            self.applied += result.applied
            self.erasures += result.erasures

    def redact_again(self) -> None:
        """Apply every erasure again. The replay interleaves the topics as it reads them, so an
        event quoting an erased fact may be replayed after the erasure that reaches it; the live
        projector, caught up when the erasure came, had it before."""
        self.pool.submit(self.writer.redact, self.erasures).result()


def _verdict(msg: Message, end: int, through_log_end: bool) -> tuple[bool, bool]:
    """For one consumed message of a partition to project up to ``end``: (apply the record,
    the partition is finished)."""
    offset = msg.offset() or 0
    error = msg.error()
    if error is not None:
        eof = error.code() == KafkaError._PARTITION_EOF
        return False, eof and (not through_log_end or offset >= end)
    if through_log_end:
        return True, False
    return offset < end, offset + 1 >= end


def rebuild(
    settings: Settings,
    *,
    schema: str = DEFAULT_SCHEMA,
    swap: bool = True,
    batch_size: int = 5000,
    on_progress: Progress | None = None,
) -> RebuildReport:
    """Rebuild the read models of ``schema`` from the topics; see the module docstring."""
    check_schema_name(schema)
    if schema == "public":
        raise ConfigurationError("the projection schema must not be public (it is swapped)")
    database_url = settings.require_database_url()
    shadow = f"{schema}_rebuild"
    report = RebuildReport(schema, shadow)
    began = time.monotonic()
    with connect(database_url, schema, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(shadow)))
    migrate(database_url, shadow)
    worker = _Shadow(settings, shadow, batch_size)
    try:
        ends = worker.ends()
        total = sum(high - low for low, high in ends.values())
        worker.project(
            {key: high for key, (_, high) in ends.items()},
            on_progress,
            total,
            through_log_end=True,
        )
        with connect(database_url, schema) as conn:
            live = _live_offsets(conn, schema)
            if live is not None:
                short = {
                    key: (live.get(key, 0), offset)
                    for key, offset in worker.stored.items()
                    if live.get(key, 0) < offset
                }
                report.live_behind = sorted(places_with_records(worker.consumer, short, timeout=30))
                catch_up = {k: o for k, o in live.items() if o > worker.stored.get(k, 0)}
                worker.project(catch_up, on_progress, total)
            worker.redact_again()
            # The shadow is summed on a second connection while this one sums the live tables:
            # each sum is one PostgreSQL backend busy on one core, so the two take the time of one.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rebuild-sum") as pool:
                rebuilt = pool.submit(_checksums_of, database_url, shadow)
                if live is not None:
                    report.live = table_checksums(conn, schema)
                report.rebuilt = rebuilt.result()
            if swap:
                _swap(conn, schema, shadow, live is not None)
                report.swapped = True
            conn.commit()  # releases the live offsets lock
        report.records, report.applied = worker.records, worker.applied
    finally:
        worker.close()
    report.seconds = time.monotonic() - began
    log.info(
        "rebuild_finished",
        schema=schema,
        records=report.records,
        seconds=round(report.seconds, 2),
        equal=report.equal,
        differing=report.differing(),
        live_behind=len(report.live_behind),
        swapped=report.swapped,
    )
    return report


def _checksums_of(database_url: str, schema: str) -> dict[str, TableChecksum]:
    with connect(database_url, schema, autocommit=True) as conn:
        return table_checksums(conn, schema)


def _live_offsets(
    conn: psycopg.Connection[tuple[object, ...]], schema: str
) -> dict[Key, int] | None:
    """The live projection's offsets, locked against its projector until the transaction ends;
    None if the schema was never migrated."""
    if not schema_exists(conn, schema):
        return None
    found = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'projection_offsets'",
        (schema,),
    ).fetchone()
    if found is None:
        return None
    conn.execute(
        sql.SQL("LOCK TABLE {}.projection_offsets IN EXCLUSIVE MODE").format(sql.Identifier(schema))
    )
    rows = conn.execute(
        sql.SQL(
            'SELECT topic, "partition", next_offset FROM {}.projection_offsets'
            " WHERE projection = %s"
        ).format(sql.Identifier(schema)),
        (PROJECTION,),
    ).fetchall()
    return offsets_of(rows)


def _swap(
    conn: psycopg.Connection[tuple[object, ...]], schema: str, shadow: str, live: bool
) -> None:
    if live:
        retired = f"{schema}_retired"
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(retired)))
        conn.execute(
            sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                sql.Identifier(schema), sql.Identifier(retired)
            )
        )
    conn.execute(
        sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
            sql.Identifier(shadow), sql.Identifier(schema)
        )
    )
    if live:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(f"{schema}_retired")))
