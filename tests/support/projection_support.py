"""Helpers for the projection tests: schemas of their own, applying histories straight to the
writer, waiting for a projector to catch up with the topics, and snapshots of what it shows."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from histories import Placed
from psycopg import sql

from agentstream.processors.core.state import AgentState
from agentstream.projections.audit import SourcedEvent
from agentstream.projections.checksums import TableChecksum, table_checksums
from agentstream.projections.database import connect
from agentstream.projections.migrate import migrate
from agentstream.projections.queries import AgentRow, get_agent, projection_position
from agentstream.projections.writer import ApplyResult, Batch, BatchWriter
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.tools.harness.chaos_checks import wait_projection_caught_up

Position = dict[tuple[str, int], int]


def fresh_schema(database_url: str) -> str:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(database_url, schema)
    return schema


def drop_schemas(database_url: str, *schemas: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for schema in schemas:
            for name in (schema, f"{schema}_rebuild", f"{schema}_retired"):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )


def checksums(database_url: str, schema: str) -> dict[str, TableChecksum]:
    with connect(database_url, schema) as conn:
        return table_checksums(conn, schema)


class DirectFeed:
    """Applies events to a schema through the projector's writer, giving them Kafka-like
    positions (each topic partition numbered from 0 in the order events arrive)."""

    def __init__(self, database_url: str, schema: str, prefix: str = "w.") -> None:
        self.writer = BatchWriter(database_url, schema)
        self.prefix = prefix
        self.next: dict[tuple[str, int], int] = {}
        self.stored: dict[tuple[str, int], int] = {}

    def sourced(self, placed: Iterable[Placed]) -> list[SourcedEvent]:
        out = []
        for item in placed:
            key = (self.prefix + item.topic, item.partition)
            offset = self.next.get(key, 0)
            self.next[key] = offset + 1
            out.append(SourcedEvent.of(item.event, key[0], key[1], offset))
        return out

    def apply(self, events: list[SourcedEvent], batch_size: int = 5000) -> list[ApplyResult]:
        results = []
        for start in range(0, len(events), batch_size):
            chunk = events[start : start + batch_size]
            positions: dict[tuple[str, int], int] = {}
            for event in chunk:
                positions[(event.topic, event.partition)] = event.offset + 1
            expected = {key: self.stored.get(key, 0) for key in positions}
            result = self.writer.apply(Batch(chunk, positions), expected)
            self.stored.update(result.positions)
            results.append(result)
        return results

    def feed(self, placed: Iterable[Placed], batch_size: int = 5000) -> list[ApplyResult]:
        return self.apply(self.sourced(placed), batch_size)

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True)
class Snapshot:
    """What the read models showed at one moment, and the offsets they stood at."""

    agents: dict[str, AgentRow]
    position: Position


def snapshot(database_url: str, schema: str, agent_ids: Iterable[str]) -> Snapshot:
    with connect(database_url, schema) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        agents = {}
        for agent_id in agent_ids:
            row = get_agent(conn, agent_id)
            assert row is not None, f"{agent_id} is not projected"
            agents[agent_id] = row
        return Snapshot(agents, projection_position(conn))


def assert_row_matches_state(row: AgentRow, state: AgentState | None) -> None:
    """The agents row shows what the folded state says."""
    assert state is not None, f"{row.agent_id}: no state folded"
    expected = {
        "status": state.status,
        "active_run_id": state.run.run_id if state.run else None,
        "runs_completed": state.runs_completed,
        "runs_failed": state.runs_failed,
        "prompt_tokens": state.usage.prompt_tokens,
        "completion_tokens": state.usage.completion_tokens,
    }
    shown = {key: getattr(row, key) for key in expected}
    assert shown == expected, f"{row.agent_id}: agents row {shown} != folded state {expected}"


def wait_caught_up(settings: Settings, database_url: str, schema: str, timeout: float = 90) -> None:
    """Wait until the projection's offsets reach the end of every topic (twice in a row, so a
    stream still flowing does not count)."""
    at = settings.model_copy(update={"database_url": database_url})
    if not wait_projection_caught_up(at, schema, timeout):
        raise AssertionError(f"the projection of {schema} did not catch up in {timeout}s")


def produce(settings: Settings, placed: Iterable[Placed]) -> int:
    count = 0
    with AgentStreamProducer(settings) as producer:
        for item in placed:
            producer.send_async(item.event)
            count += 1
        producer.flush()
    return count
