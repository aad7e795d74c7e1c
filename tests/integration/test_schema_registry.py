"""The embedded schema registry, driven by confluent-kafka's own client and serializers.

Everything here holds for Confluent's registry too, so the module also runs against one named by
AGENTSTREAM_SCHEMA_REGISTRY_URL; only the two-process test starts registries of its own.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from agentstream.tools.devstack.stack_registry import EmbeddedRegistry

pytestmark = pytest.mark.integration

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def avro_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def record_schema(name: str, *fields: dict[str, Any]) -> Schema:
    """A record in its own namespace, so ids never collide with another test's schemas."""
    body = {"type": "record", "name": name, "namespace": "t.registry", "fields": list(fields)}
    return Schema(json.dumps(body), "AVRO")


ID = {"name": "id", "type": "string"}
NOTE_DEFAULT = {"name": "note", "type": "string", "default": ""}
NOTE_REQUIRED = {"name": "note", "type": "string"}
ID_AS_LONG = {"name": "id", "type": "long"}


@pytest.fixture
def client(schema_registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": schema_registry_url})


def refused(call: Any, *args: Any, **kwargs: Any) -> SchemaRegistryError:
    with pytest.raises(SchemaRegistryError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_register_lookup_read_evolve_and_delete(client: SchemaRegistryClient) -> None:
    subject = unique("orders-value")
    v1 = record_schema(avro_name("Order"), ID)

    schema_id = client.register_schema(subject, v1)
    # A fresh client, so nothing below is answered from the first one's cache.
    fresh = SchemaRegistryClient({"url": client.config()["url"]})
    assert fresh.register_schema(subject, v1) == schema_id
    assert fresh.get_versions(subject) == [1]

    found = fresh.lookup_schema(subject, v1)
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, subject)
    assert json.loads(fresh.get_schema(schema_id).schema_str) == json.loads(v1.schema_str)
    assert subject in fresh.get_subjects()

    v2 = record_schema(json.loads(v1.schema_str)["name"], ID, NOTE_DEFAULT)
    assert fresh.test_compatibility(subject, v2) is True
    v2_id = fresh.register_schema(subject, v2)
    assert v2_id != schema_id
    latest = fresh.get_latest_version(subject)
    assert (latest.version, latest.schema_id) == (2, v2_id)
    assert fresh.get_version(subject, 1).schema_id == schema_id
    assert fresh.get_versions(subject) == [1, 2]

    assert fresh.delete_version(subject, 2) == 2
    assert fresh.get_versions(subject) == [1]
    assert fresh.delete_subject(subject) == [1]
    assert subject not in fresh.get_subjects()
    assert fresh.delete_subject(subject, permanent=True) == [1, 2]
    gone = refused(fresh.get_versions, subject)
    assert (gone.http_status_code, gone.error_code) == (404, 40401)
    # Ids outlive their subjects: data written with them must stay readable.
    assert fresh.get_schema(v2_id).schema_str is not None


def test_incompatible_changes_are_refused_with_409(client: SchemaRegistryClient) -> None:
    subject = unique("payments-value")
    name = avro_name("Payment")
    client.register_schema(subject, record_schema(name, ID))

    for breaking in (record_schema(name, ID, NOTE_REQUIRED), record_schema(name, ID_AS_LONG)):
        assert client.test_compatibility(subject, breaking) is False
        error = refused(client.register_schema, subject, breaking)
        assert (error.http_status_code, error.error_code) == (409, 409)
        assert "incompatible" in error.error_message

    assert client.register_schema(subject, record_schema(name, ID, NOTE_DEFAULT)) > 0
    assert client.get_latest_version(subject).version == 2


def test_same_schema_gets_one_id_across_subjects(client: SchemaRegistryClient) -> None:
    schema = record_schema(avro_name("Shared"), ID)
    # The same schema written differently (spacing, key order) is still the same schema.
    respelled = Schema(json.dumps(json.loads(schema.schema_str), indent=2, sort_keys=True), "AVRO")
    first, second = unique("a-value"), unique("b-value")
    schema_id = client.register_schema(first, schema)
    assert client.register_schema(second, respelled) == schema_id
    assert client.lookup_schema(second, schema).version == 1
    assert sorted(client.get_subjects_by_schema_id(schema_id)) == sorted([first, second])


def test_compatibility_levels_global_and_per_subject(client: SchemaRegistryClient) -> None:
    subject = unique("levels-value")
    name = avro_name("Level")
    client.register_schema(subject, record_schema(name, ID))
    missing = refused(client.get_compatibility, subject)
    assert (missing.http_status_code, missing.error_code) == (404, 40408)

    client.set_compatibility(subject, "NONE")
    assert client.get_compatibility(subject) == "NONE"
    client.register_schema(subject, record_schema(name, ID_AS_LONG))

    client.set_compatibility(subject, "FORWARD")
    assert client.get_compatibility(subject) == "FORWARD"
    # Dropping a required field: readers of v2 can no longer read what v3 writes.
    client.set_compatibility(subject, "backward")
    with_note = record_schema(name, ID_AS_LONG, NOTE_REQUIRED)
    assert refused(client.register_schema, subject, with_note).http_status_code == 409

    before = client.get_compatibility()
    try:
        client.set_compatibility(level="FULL_TRANSITIVE")
        assert client.get_compatibility() == "FULL_TRANSITIVE"
        bad = refused(client.set_compatibility, level="SIDEWAYS")
        assert (bad.http_status_code, bad.error_code) == (422, 42203)
    finally:
        client.set_compatibility(level=before)
    assert client.get_compatibility() == before


def test_avro_serializer_and_deserializer_round_trip(client: SchemaRegistryClient) -> None:
    topic = unique("events")
    schema = record_schema(avro_name("Event"), ID, {"name": "count", "type": "int"})
    serializer = AvroSerializer(client, schema.schema_str, conf={"auto.register.schemas": True})
    value = {"id": "e-1", "count": 7}
    data = serializer(value, SerializationContext(topic, MessageField.VALUE))
    assert data is not None
    schema_id = int.from_bytes(data[1:5], "big")
    assert client.get_latest_version(f"{topic}-value").schema_id == schema_id

    # A separate client: the reader must fetch the writer schema by the id in the frame.
    reader = AvroDeserializer(SchemaRegistryClient({"url": client.config()["url"]}))
    assert reader(data, SerializationContext(topic, MessageField.VALUE)) == value

    latest_only = AvroSerializer(
        client,
        schema.schema_str,
        conf={"auto.register.schemas": False, "use.latest.version": True},
    )
    again = latest_only(value, SerializationContext(topic, MessageField.VALUE))
    assert again is not None and int.from_bytes(again[1:5], "big") == schema_id


def test_errors_use_confluent_codes_and_content_type(schema_registry_url: str) -> None:
    subject = unique("errors-value")
    with httpx.Client(base_url=schema_registry_url, timeout=10) as http:
        health = http.get("/")
        assert (health.status_code, health.json()) == (200, {})
        assert health.headers["content-type"].startswith(CONTENT_TYPE)

        def post(path: str, content: str) -> httpx.Response:
            headers = {"Content-Type": CONTENT_TYPE}
            return http.post(path, content=content, headers=headers)

        def code(response: httpx.Response) -> tuple[int, int]:
            assert response.headers["content-type"].startswith(CONTENT_TYPE)
            return response.status_code, response.json()["error_code"]

        # Confluent answers unparsable JSON with 400/400 and a bad schema with 422/42201.
        assert code(post(f"/subjects/{subject}/versions", "{not json")) == (400, 400)
        invalid = json.dumps({"schema": '{"type": "record", "name": "R"}'})
        assert code(post(f"/subjects/{subject}/versions", invalid)) == (422, 42201)
        not_json_schema = json.dumps({"schema": "{nope"})
        assert code(post(f"/subjects/{subject}/versions", not_json_schema)) == (422, 42201)

        assert code(http.get(f"/subjects/{subject}/versions")) == (404, 40401)
        assert code(http.get(f"/subjects/{subject}/versions/latest")) == (404, 40401)
        assert code(http.get("/schemas/ids/2147483000")) == (404, 40403)

        valid = json.dumps({"schema": record_schema(avro_name("E"), ID).schema_str})
        assert post(f"/subjects/{subject}/versions", valid).status_code == 200
        assert code(http.get(f"/subjects/{subject}/versions/9")) == (404, 40402)
        assert code(http.get(f"/subjects/{subject}/versions/zero")) == (422, 42202)
        other = json.dumps({"schema": record_schema(avro_name("F"), ID).schema_str})
        assert code(post(f"/subjects/{subject}", other)) == (404, 40403)


def test_client_errors_carry_status_and_code(client: SchemaRegistryClient) -> None:
    subject = unique("client-errors-value")
    unknown = refused(client.get_latest_version, subject)
    assert (unknown.http_status_code, unknown.error_code) == (404, 40401)
    invalid = refused(client.register_schema, subject, Schema('{"type": "nope"}', "AVRO"))
    assert (invalid.http_status_code, invalid.error_code) == (422, 42201)


# -- two registry processes on one database --------------------------------------------------


@pytest.fixture(scope="module")
def two_registries(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[EmbeddedRegistry]]:
    workdir: Path = tmp_path_factory.mktemp("registries")
    registries = [EmbeddedRegistry(workdir, database_url) for _ in range(2)]
    try:
        # Started from this thread: the parent-death signal fires when the spawning *thread*
        # ends, so a child started from a pool thread would die with that thread.
        for registry in registries:
            registry.start()
        yield registries
    finally:
        for registry in registries:
            registry.stop()


def test_concurrent_registrations_agree_on_ids_and_versions(
    two_registries: list[EmbeddedRegistry], database_url: str
) -> None:
    workers = 12
    name = avro_name("Race")
    shared = record_schema(avro_name("Everywhere"), ID)
    same_subject, variants_subject = unique("same-value"), unique("variants-value")
    same_schema = record_schema(name, ID)
    base = record_schema(name + "V", ID)
    # Pairwise compatible: each adds its own defaulted field, so any order is BACKWARD.
    variants = [
        record_schema(name + "V", ID, {"name": f"f{i}", "type": "int", "default": i})
        for i in range(workers)
    ]
    setup = SchemaRegistryClient({"url": two_registries[0].url})
    setup.register_schema(variants_subject, base)
    barrier = threading.Barrier(workers)

    def race(i: int) -> tuple[int, int, int]:
        client = SchemaRegistryClient({"url": two_registries[i % 2].url})
        barrier.wait()
        return (
            client.register_schema(unique("everywhere-value"), shared),
            client.register_schema(same_subject, same_schema),
            client.register_schema(variants_subject, variants[i]),
        )

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(race, range(workers)))

    shared_ids, same_ids, variant_ids = (set(column) for column in zip(*results, strict=True))
    assert len(shared_ids) == 1
    assert len(same_ids) == 1
    assert len(variant_ids) == workers
    check = SchemaRegistryClient({"url": two_registries[1].url})
    assert check.get_versions(same_subject) == [1]
    assert check.get_versions(variants_subject) == list(range(1, workers + 2))

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT schema_id) FROM schema_registry_versions"
            " WHERE subject = %s",
            (variants_subject,),
        ).fetchone()
    assert rows == (workers + 1, workers + 1)
