"""The schema registry's subjects of agentstream's topics, registered up front with the
compatibility each needs, so that a producer outside agentstream finds the contract (and its
guard) in place before agentstream itself has written anything.

Subjects follow TopicRecordNameStrategy: ``<topic>-agentstream.v1.<Record>``. Who writes and who
reads decides the level:

- agent event topics (inputs and decisions written by anyone, outputs read by anyone, all of
  them replayed from the start): ``FULL_TRANSITIVE``. A new schema must let every reader read
  records written with it (forward: agentstream reads an outsider's new inputs with its own
  schema) and read every record written before (backward: replays of history).
- the state changelog and the dead-letter topic, written and read by agentstream only, read
  back from the start: ``BACKWARD_TRANSITIVE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from confluent_kafka.schema_registry import Schema, SchemaRegistryError

from agentstream.schemas.contract import avro_schema_str
from agentstream.schemas.errors import ServiceUnavailableError
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import registry_client
from agentstream.streams.topics import DLQ, STATE, TOPICS, TopicSpec

__all__ = ["Compatibility", "SubjectStatus", "compatibility_of", "ensure_subjects", "subject_of"]


class Compatibility(StrEnum):
    """The Schema Registry's compatibility levels agentstream sets."""

    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"


@dataclass(frozen=True)
class SubjectStatus:
    subject: str
    version: int
    compatibility: Compatibility


def subject_of(settings: Settings, spec: TopicSpec, record_name: str) -> str:
    return f"{settings.topic(spec.name)}-{record_name}"


def compatibility_of(spec: TopicSpec) -> Compatibility:
    if spec in (STATE, DLQ):
        return Compatibility.BACKWARD_TRANSITIVE
    return Compatibility.FULL_TRANSITIVE


def ensure_subjects(settings: Settings) -> list[SubjectStatus]:
    """Register the contract's schema under every subject of every topic (a no-op for one
    registered already) and set each subject's compatibility level."""
    client = registry_client(settings.require_schema_registry_url())
    done = []
    try:
        for spec in TOPICS:
            level = compatibility_of(spec)
            for record_type in spec.value_types:
                subject = subject_of(settings, spec, record_type.avro_name)
                schema = Schema(avro_schema_str(record_type.avro_name), "AVRO")
                client.set_compatibility(subject_name=subject, level=level.value)
                client.register_schema(subject, schema)
                version = client.lookup_schema(subject, schema).version
                done.append(SubjectStatus(subject, int(version or 0), level))
    except SchemaRegistryError as exc:
        raise ServiceUnavailableError(
            f"the schema registry refused agentstream's own subjects: {exc}",
            hint="check AGENTSTREAM_SCHEMA_REGISTRY_URL; a subject with an incompatible schema "
            "registered by someone else must be fixed in the registry",
        ) from exc
    return done
