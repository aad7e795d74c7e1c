"""The registry as a guard of the contract: agentstream's subjects exist before anyone writes,
and each refuses the schema changes that would break its readers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema

from agentstream.schemas.contract import avro_schema
from agentstream.schemas.events import AgentInput, AgentStateSnapshot
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import registry_client
from agentstream.streams.subjects import Compatibility, ensure_subjects, subject_of
from agentstream.streams.topics import INPUTS, STATE, TOPICS

pytestmark = pytest.mark.integration


@pytest.fixture
def isolated(settings: Settings) -> Settings:
    return settings.model_copy(update={"topic_prefix": f"sj{uuid.uuid4().hex[:6]}."})


def _changed(name: str, change: str) -> dict[str, Any]:
    schema = avro_schema(name)
    fields: list[dict[str, Any]] = schema["fields"]
    if change == "add a field with a default":
        fields.append({"name": "channel", "type": "string", "default": "web"})
    elif change == "add a required field":
        fields.append({"name": "channel", "type": "string"})
    elif change == "remove a field with a default":
        schema["fields"] = [f for f in fields if f["name"] != "metadata"]
    elif change == "remove a required field":
        schema["fields"] = [f for f in fields if f["name"] != "text"]
    elif change == "change a field's type":
        schema["fields"] = [{**f, "type": "int"} if f["name"] == "text" else f for f in fields]
    return schema


#: change -> whether FULL_TRANSITIVE (inputs) and BACKWARD_TRANSITIVE (state) accept it
CHANGES = {
    "add a field with a default": (True, True),
    "add a required field": (False, False),
    "remove a field with a default": (True, True),
    "remove a required field": (False, True),
    "change a field's type": (False, False),
}


def test_every_subject_exists_up_front_with_its_level(isolated: Settings) -> None:
    statuses = ensure_subjects(isolated)
    wanted = {subject_of(isolated, spec, t.avro_name) for spec in TOPICS for t in spec.value_types}
    assert {s.subject for s in statuses} == wanted
    client = registry_client(isolated.require_schema_registry_url())
    inputs = subject_of(isolated, INPUTS, AgentInput.avro_name)
    state = subject_of(isolated, STATE, AgentStateSnapshot.avro_name)
    assert client.get_compatibility(inputs) == Compatibility.FULL_TRANSITIVE
    assert client.get_compatibility(state) == Compatibility.BACKWARD_TRANSITIVE
    # Idempotent: a second run registers nothing new.
    assert ensure_subjects(isolated) == statuses


@pytest.mark.parametrize("change", list(CHANGES))
def test_the_registry_answers_each_kind_of_schema_change(isolated: Settings, change: str) -> None:
    ensure_subjects(isolated)
    client = registry_client(isolated.require_schema_registry_url())
    answers = []
    for spec, record in ((INPUTS, AgentInput), (STATE, AgentStateSnapshot)):
        name = record.avro_name
        if record is AgentStateSnapshot and change in ("remove a required field",):
            # the snapshot's own required field, for the same kind of change
            schema = avro_schema(name)
            schema["fields"] = [f for f in schema["fields"] if f["name"] != "state_json"]
        elif record is AgentStateSnapshot and change == "change a field's type":
            schema = avro_schema(name)
            schema["fields"] = [
                {**f, "type": "int"} if f["name"] == "state_json" else f for f in schema["fields"]
            ]
        elif record is AgentStateSnapshot and change == "remove a field with a default":
            schema = avro_schema(name)
            optional = next(f for f in schema["fields"] if "default" in f)
            schema["fields"] = [f for f in schema["fields"] if f is not optional]
        else:
            schema = _changed(name, change)
        subject = subject_of(isolated, spec, name)
        answers.append(client.test_compatibility(subject, Schema(json.dumps(schema), "AVRO")))
    assert tuple(answers) == CHANGES[change], (change, answers)
