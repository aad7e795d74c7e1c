"""The Faust baseline: the same transition, as a faust-streaming agent keeping each agent's state
in a Table, over the same input backlog as the processor.

It runs in a process of its own (``python -m agentstream.tools.harness.bench_faust``), like the
processor's one worker process, and prints its figures as one JSON line. The rate counts from the
first processed event to the last (the group join and table recovery are reported apart).
Settings come from the AGENTSTREAM_* environment, topic prefix included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka.cimpl import NewTopic

from agentstream.processors.core.machine import transition
from agentstream.processors.core.state import AgentState
from agentstream.processors.workers.faust_config import quiet_faust_logging, worker_app
from agentstream.schemas.events import Event
from agentstream.streams.runtime.gc_tuning import collect_rarely
from agentstream.streams.runtime.settings import Settings, load_settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topics import INPUTS, MODEL_CALLS, admin_client
from agentstream.tools.harness.bench_workload import SPEC, BenchmarkError

TABLE = "states"


@dataclass
class FaustFigures:
    events: int
    seconds: float
    startup_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def measure(settings: Settings, backlog: int, *, timeout: float = 300.0) -> FaustFigures:
    """Run the baseline in a child process over ``settings``' input topic."""
    env = {
        **os.environ,
        "AGENTSTREAM_BOOTSTRAP_SERVERS": settings.require_bootstrap_servers(),
        "AGENTSTREAM_SCHEMA_REGISTRY_URL": settings.require_schema_registry_url(),
        "AGENTSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "AGENTSTREAM_LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "agentstream.tools.harness.bench_faust", "--events", str(backlog)]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"the Faust baseline did not finish in {timeout:.0f} s") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
        raise BenchmarkError(f"the Faust baseline failed (exit {done.returncode}):\n{tail}")
    figures = json.loads(lines[-1])
    return FaustFigures(
        events=int(figures["events"]),
        seconds=float(figures["seconds"]),
        startup_seconds=float(figures["startup_seconds"]),
    )


def _create_changelog(settings: Settings, name: str) -> None:
    """The table's changelog, created up front (the worker apps never declare topics)."""
    admin = admin_client(settings)
    topic = NewTopic(
        name,
        num_partitions=settings.partitions,
        replication_factor=1,
        config={"cleanup.policy": "compact"},
    )
    for future in admin.create_topics([topic]).values():
        future.result(30)


async def _run(settings: Settings, backlog: int, timeout: float) -> dict[str, Any]:
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    app_id = f"bench-faust-{uuid.uuid4().hex[:6]}"
    _create_changelog(settings, f"{app_id}-{TABLE}-changelog")
    app = worker_app(settings, app_id)
    source_name = settings.topic(INPUTS.name)
    out_name = settings.topic(MODEL_CALLS.name)
    source = app.topic(source_name, key_type=bytes, value_type=bytes)
    out = app.topic(out_name, key_type=bytes, value_type=bytes)
    table = app.Table(
        TABLE,
        default=None,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
    )
    finished = asyncio.Event()
    marks: dict[str, float] = {}
    count = [0]

    async def process(stream: Any) -> None:
        async for record in stream.events():
            event = serde.decode(source_name, record.value)
            assert isinstance(event, Event)
            key = record.key
            stored = table.get(key)
            state = AgentState.from_json(stored) if stored else None
            decision = transition(state, event, SPEC)
            table[key] = decision.state.to_json().encode()
            for emitted in decision.emits:
                await out.send(key=key, value=serde.encode(out_name, emitted))
            count[0] += 1
            if count[0] == 1:
                marks["first"] = time.perf_counter()
            if count[0] >= backlog:
                marks["last"] = time.perf_counter()
                finished.set()

    app.agent(source, name=f"{app_id}.transition")(process)
    app.finalize()
    began = time.perf_counter()
    starting = asyncio.ensure_future(app.start())
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), timeout)
    finally:
        starting.cancel()
        await app.stop()
    if "last" not in marks:
        raise BenchmarkError(f"Faust processed {count[0]} of {backlog} events in {timeout:.0f} s")
    return {
        "events": backlog - 1,
        "seconds": max(marks["last"] - marks["first"], 1e-9),
        "startup_seconds": marks["first"] - began,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="The Faust baseline of agentstream bench.")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=280.0)
    args = parser.parse_args()
    quiet_faust_logging()
    settings = load_settings(use_dev_stack=False)
    collect_rarely()  # as the processor's process does, so the two compare like with like
    figures = asyncio.run(_run(settings, args.events, args.timeout))
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
