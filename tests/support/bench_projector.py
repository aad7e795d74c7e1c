"""Measure the projector: events/s from the topics into PostgreSQL, and the rebuild's rate.

    python tests/support/bench_projector.py --events 200000

Uses the services named by AGENTSTREAM_* (or a running ``agentstream dev up``); with none, it
starts the embedded stack. Produces complete agent histories (the state machine driven by the
scripted world) to fresh topics, then runs one in-process projector from empty tables until it
has caught up. The rate counts from the first committed batch (the consumer group join, about
3 s on the embedded broker, is reported apart) to the last.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

import psycopg
from histories import histories

from agentstream.projections.database import connect
from agentstream.projections.migrate import migrate
from agentstream.projections.projector import Projector, tune_for_batches
from agentstream.projections.queries import projection_position
from agentstream.projections.rebuild import rebuild
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings, load_settings
from agentstream.streams.topics import ensure_topics
from agentstream.tools.devstack.stack import EmbeddedStack


def produce(settings: Settings, events: int) -> int:
    agents = max(1, events // 9)
    placed = histories(agents, partitions=settings.partitions)
    with AgentStreamProducer(settings, extra_config={"linger.ms": 20}) as producer:
        for item in placed:
            producer.send_async(item.event)
        producer.flush(120)
    return len(placed)


def measure(settings: Settings, events: int, batch_size: int) -> None:
    settings = settings.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:6]}."})
    ensure_topics(settings)
    began = time.monotonic()
    total = produce(settings, events)
    print(f"produced {total} events in {time.monotonic() - began:.1f}s")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    database_url = settings.require_database_url()
    migrate(database_url, schema)
    projector = Projector(
        settings, schema=schema, group_id=f"bench-{uuid.uuid4().hex[:6]}", batch_size=batch_size
    )
    thread = threading.Thread(target=projector.run, name="projector")
    started = time.monotonic()
    thread.start()
    first_batch = None
    with connect(database_url, schema, autocommit=True) as conn:
        while True:
            done = sum(projection_position(conn).values())
            if first_batch is None and done:
                first_batch, first_done = time.monotonic(), done
            if done >= total:
                break
            time.sleep(0.25)
        finished = time.monotonic()
        rows = conn.execute("SELECT count(*) FROM agent_events").fetchone()
    projector.stop()
    thread.join()
    assert first_batch is not None
    rate = (total - first_done) / (finished - first_batch)
    print(
        f"projector: {total} events ({rows[0] if rows else '?'} audit rows) in "
        f"{finished - started:.1f}s including {first_batch - started:.1f}s to join the group "
        f"and commit the first batch; steady rate {rate:,.0f} events/s"
    )
    report = rebuild(settings, schema=schema, swap=False, batch_size=batch_size)
    print(
        f"rebuild: {report.records} records in {report.seconds:.1f}s "
        f"({report.rate:,.0f} events/s end to end, checksums included); "
        f"live equals rebuild: {report.equal}"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in (schema, report.shadow):
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    tune_for_batches()
    settings = load_settings()
    if settings.bootstrap_servers and settings.database_url and settings.schema_registry_url:
        measure(settings, args.events, args.batch_size)
        return
    with EmbeddedStack() as endpoints:
        settings = settings.model_copy(update=endpoints.__dict__)
        measure(settings, args.events, args.batch_size)


if __name__ == "__main__":
    main()
