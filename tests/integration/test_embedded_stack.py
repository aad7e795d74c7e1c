"""The embedded stack on its own: real broker, real PostgreSQL, and nothing left behind."""

from __future__ import annotations

import contextlib
import time
import uuid

import psutil
import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from agentstream.tools.devstack.stack import EmbeddedStack

pytestmark = pytest.mark.integration


def _process_tree(pids: list[int]) -> list[psutil.Process]:
    """The stack's processes and all their descendants (PostgreSQL forks a dozen)."""
    tree = []
    for pid in pids:
        root = psutil.Process(pid)
        tree += [root, *root.children(recursive=True)]
    return tree


def _survivors(tree: list[psutil.Process]) -> list[psutil.Process]:
    # is_running() also compares creation times, so a recycled pid does not count.
    alive = []
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def test_stack_serves_kafka_groups_and_postgres_then_leaves_nothing() -> None:
    stack = EmbeddedStack()
    try:
        endpoints = stack.start()
        tree = _process_tree(stack.pids())
        assert len(tree) > 2  # broker, postmaster and the postmaster's workers
        topic = f"stack-test-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": endpoints.bootstrap_servers})
        admin.create_topics([NewTopic(topic, num_partitions=3)])[topic].result(15)

        producer = Producer({"bootstrap.servers": endpoints.bootstrap_servers, "acks": "all"})
        sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(30)}
        for key, value in sent.items():
            producer.produce(topic, key=key, value=value)
        assert producer.flush(15) == 0

        consumer = Consumer(
            {
                "bootstrap.servers": endpoints.bootstrap_servers,
                "group.id": f"g-{topic}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
            }
        )
        received: dict[bytes, bytes] = {}
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 30
            while len(received) < len(sent) and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    received[msg.key()] = msg.value()
                    consumer.commit(msg, asynchronous=False)
            committed = consumer.committed([tp for tp in consumer.assignment()], timeout=10)
        finally:
            consumer.close()
        assert received == sent
        assert sum(tp.offset for tp in committed) == len(sent)

        with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE smoke (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO smoke VALUES (1, 'écrit')")
            assert conn.execute("SELECT note FROM smoke WHERE id = 1").fetchone() == ("écrit",)
    finally:
        stack.stop()
    assert _survivors(tree) == []
    assert not stack.workdir.exists()
