"""The physical limits of this machine for the benchmark's own bytes: confluent-kafka producing
and consuming them with no processing, and fastavro encoding and decoding them alone."""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.cimpl import NewTopic
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from agentstream.schemas.contract import avro_schema
from agentstream.schemas.errors import DeliveryError
from agentstream.schemas.events import AvroRecord
from agentstream.streams.consumer import reader_config
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import admin_client
from agentstream.tools.harness.bench_workload import Progress, produce_raw, producer


@dataclass
class RawLimits:
    produce_per_s: float
    consume_per_s: float
    encode_per_s: float
    decode_per_s: float
    records: int
    mean_value_bytes: float


def codec(records: list[AvroRecord], rounds: int = 5) -> tuple[float, float]:
    """fastavro alone: records/s encoding prepared dicts and decoding their bytes, the best of
    ``rounds`` passes (a limit: other work on the machine only ever slows a pass down)."""
    names = {r.avro_name for r in records}
    schemas = {n: parse_schema(avro_schema(n), named_schemas={}) for n in names}
    dicts = [(schemas[r.avro_name], r.to_avro()) for r in records]
    blobs: list[tuple[Any, bytes]] = []
    encode = decode = 0.0
    for _ in range(rounds):
        began = time.perf_counter()
        blobs = []
        for schema, data in dicts:
            out = io.BytesIO()
            schemaless_writer(out, schema, data)
            blobs.append((schema, out.getvalue()))
        encode = max(encode, len(dicts) / (time.perf_counter() - began))
        began = time.perf_counter()
        for schema, blob in blobs:
            schemaless_reader(io.BytesIO(blob), schema, None)
        decode = max(decode, len(blobs) / (time.perf_counter() - began))
    return encode, decode


def kafka(
    settings: Settings, values: list[tuple[bytes, bytes]], on_progress: Progress | None = None
) -> tuple[float, float]:
    """Records/s producing ``values`` (key, value) to a fresh topic and consuming them back."""
    topic = f"{settings.topic_prefix}bench-raw-{uuid.uuid4().hex[:8]}"
    admin = admin_client(settings)
    for future in admin.create_topics(
        [NewTopic(topic, num_partitions=settings.partitions, replication_factor=1)]
    ).values():
        future.result(30)
    sender = producer(settings)
    produced = produce_raw(sender, ((topic, k, v) for k, v in values), on_progress)
    produce_rate = produced.records / produced.seconds
    reader = Consumer(reader_config(settings, "bench-raw"))
    try:
        reader.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.partitions)]
        )
        got = 0
        began = ended = 0.0
        first = 0
        deadline = time.monotonic() + 120
        while got < len(values):
            if time.monotonic() > deadline:
                raise DeliveryError(f"consumed {got} of {len(values)} raw records in 120 s")
            # Small batches and a short wait: a batch call waits out its timeout unless full,
            # which would be counted against the consumer.
            batch = reader.consume(1000, 0.05)
            for msg in batch:
                error = msg.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise DeliveryError(f"raw consume failed: {error}")
                if error is None:
                    got += 1
            if got and not began:
                began, first = time.perf_counter(), got
            ended = time.perf_counter()
        # Counted from the first batch on: connection setup is not the consumer's rate.
        consume_rate = (got - first) / max(ended - began, 1e-9)
    finally:
        reader.close()
    return produce_rate, consume_rate


def measure(
    settings: Settings,
    records: list[AvroRecord],
    values: list[tuple[bytes, bytes]],
    on_progress: Progress | None = None,
) -> RawLimits:
    produce_rate, consume_rate = kafka(settings, values, on_progress)
    encode, decode = codec(records)
    return RawLimits(
        produce_per_s=produce_rate,
        consume_per_s=consume_rate,
        encode_per_s=encode,
        decode_per_s=decode,
        records=len(values),
        mean_value_bytes=sum(len(v) for _, v in values) / max(len(values), 1),
    )
