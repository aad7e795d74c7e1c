"""Project a window of the topics (offsets or record timestamps) into a schema of its own, to
look at what happened in that window with the read models' SQL, beside the live projection.

The target schema is made fresh each time, with the projector's migrations and its writer;
it is marked as a window replay, and only a schema so marked is ever dropped, so a typo cannot
destroy the live read models. Records that cannot be decoded are counted, not dead-lettered:
a replay touches nothing but its own schema.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from psycopg import sql

from agentstream.projections.audit import SourcedEvent
from agentstream.projections.checksums import TableChecksum, table_checksums
from agentstream.projections.database import check_schema_name, connect, schema_exists
from agentstream.projections.migrate import migrate
from agentstream.projections.projector import projected_topics
from agentstream.projections.writer import Batch, BatchWriter
from agentstream.schemas.errors import ConfigurationError
from agentstream.schemas.events import Event
from agentstream.streams.replay_reader import NoTracker, TopicReader, Tracker, Window
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import DecodeError, EventSerde, registry_client

__all__ = [
    "MARK",
    "WindowReport",
    "prepare_schema",
    "project_window",
]

MARK = "agentstream replay window"


@dataclass
class WindowReport:
    schema: str
    records: int = 0
    applied: int = 0
    undecodable: int = 0
    unwritable: int = 0
    seconds: float = 0.0
    tables: dict[str, TableChecksum] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def prepare_schema(database_url: str, schema: str) -> None:
    """Drop a previous window replay in ``schema`` and migrate it afresh."""
    check_schema_name(schema)
    with connect(database_url, "public", autocommit=True) as conn:
        if schema_exists(conn, schema):
            row = conn.execute(
                "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
                (schema,),
            ).fetchone()
            if row is None or row[0] != MARK:
                raise ConfigurationError(
                    f"schema {schema} exists and is not a window replay; it is left alone",
                    hint="choose another --into schema",
                )
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    migrate(database_url, schema)
    with connect(database_url, schema, autocommit=True) as conn:
        conn.execute(
            sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(schema), sql.Literal(MARK))
        )


def project_window(
    settings: Settings,
    window: Window,
    *,
    schema: str,
    batch_size: int = 5000,
    tracker: Tracker | None = None,
) -> WindowReport:
    """Project the records ``window`` selects from every projected topic into ``schema``."""
    tracker = tracker or NoTracker()
    database_url = settings.require_database_url()
    began = time.monotonic()
    prepare_schema(database_url, schema)
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    report = WindowReport(schema)
    writer = BatchWriter(database_url, schema)
    stored: dict[tuple[str, int], int] = {}
    try:
        with TopicReader(settings) as reader:
            spans = reader.spans(list(projected_topics(settings)), window)
            progress = tracker.start(f"projecting into {schema}", sum(s.size for s in spans))
            events: list[SourcedEvent] = []
            positions: dict[tuple[str, int], int] = {}

            def flush() -> None:
                if not positions:
                    return
                expected = {key: stored.get(key, 0) for key in positions}
                result = writer.apply(Batch(list(events), dict(positions)), expected)
                stored.update(result.positions)
                report.applied += result.applied
                report.unwritable += len(result.unwritable)
                events.clear()
                positions.clear()

            for msg in reader.read(spans, window, on_progress=progress):
                topic, partition, offset = (
                    msg.topic() or "",
                    msg.partition() or 0,
                    msg.offset() or 0,
                )
                report.records += 1
                positions[(topic, partition)] = offset + 1
                try:
                    event = serde.decode(topic, msg.value())
                except DecodeError:
                    report.undecodable += 1
                    continue
                if not isinstance(event, Event):
                    report.undecodable += 1
                    continue
                events.append(SourcedEvent.of(event, topic, partition, offset))
                if len(events) >= batch_size:
                    flush()
            flush()
    finally:
        writer.close()
    with connect(database_url, schema) as conn:
        report.tables = table_checksums(conn, schema)
    report.seconds = time.monotonic() - began
    return report
