"""For the console, ingress, metrics and tracing tests: an ASGI app served by uvicorn in a thread
on a free loopback port, and a reader that returns records with their headers."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from types import TracebackType
from typing import Any, Self

import httpx
import uvicorn
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from agentstream.streams.health import free_port
from agentstream.streams.producer import message_headers
from agentstream.streams.serde import DecodeError, EventSerde, registry_client
from agentstream.streams.settings import Settings
from agentstream.streams.topics import TopicSpec


class ServedApp:
    """``app`` on http://127.0.0.1:<free port> until the ``with`` block ends."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="served-app")

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert self._thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start in 20 s"
            time.sleep(0.05)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(15)


def read_with_headers(
    settings: Settings, specs: list[TopicSpec]
) -> list[tuple[object, list[tuple[str, bytes | None]]]]:
    """Every decodable record of ``specs`` with its headers, read to the current end."""
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    consumer = Consumer(
        {
            **settings.kafka_config(),
            "group.id": f"read-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    found: list[tuple[object, list[tuple[str, bytes | None]]]] = []
    try:
        ends: dict[tuple[str, int], int] = {}
        for spec in specs:
            topic = settings.topic(spec.name)
            for partition in range(settings.partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                if high > low:
                    ends[(topic, partition)] = high
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        deadline = time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                key = (msg.topic() or "", msg.partition() or 0)
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        ends.pop(key, None)
                    continue
                with contextlib.suppress(DecodeError):  # the DLQ's business, not ours
                    found.append((serde.decode(key[0], msg.value()), message_headers(msg)))
                if (msg.offset() or 0) + 1 >= ends.get(key, 0):
                    ends.pop(key, None)
        assert not ends, f"could not read to the end of {sorted(ends)}"
    finally:
        consumer.close()
    return found


def wait_until(what: str, check: Any, timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {value!r})")
        time.sleep(every)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=10, **kwargs)
