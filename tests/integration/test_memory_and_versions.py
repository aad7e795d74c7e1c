"""Memory across runs and pinned spec versions, with the real processor on each broker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import agent_input
from harness import FakeWorkers, ServiceProcess, TopicCollector
from world import respond

from agentstream.schemas.events import (
    ApprovalRequested,
    Event,
    ModelCallRequested,
    RunCompleted,
    RunFailed,
)
from agentstream.schemas.reasons import RunFailure
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import (
    APPROVAL_REQUESTS,
    MODEL_CALLS,
    OUTCOMES,
    ensure_topics,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def isolated(settings: Settings) -> Settings:
    isolated = settings.model_copy(update={"topic_prefix": f"m{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    return isolated


def processor(settings: Settings, tmp_path: Path, *specs: str) -> ServiceProcess:
    spec_args = [arg for spec in specs for arg in ("--spec", f"versions_world:{spec}")]
    return ServiceProcess(
        [
            "processor",
            "run",
            *spec_args,
            "--batch-size",
            "100",
            # its own group, and static: a restart after a kill resumes without a rebalance
            "--group",
            f"{settings.topic_prefix}processor",
            "--instance-id",
            "versions-1",
        ],
        settings,
        tmp_path,
        "processor",
    )


def send(settings: Settings, *events: Event) -> None:
    with AgentStreamProducer(settings) as producer:
        for event in events:
            producer.send(event)


def of_agent(records: list[object], kind: type[Event], agent: str) -> list[Event]:
    return [r for r in records if isinstance(r, kind) and r.envelope.agent_id == agent]


def test_a_second_input_reaches_the_model_with_the_first_runs_question_and_answer(
    isolated: Settings, tmp_path: Path
) -> None:
    first, second = agent_input("ana", "where is order o-1?"), agent_input("ana", "and when?")
    with (
        processor(isolated, tmp_path, "remembering") as proc,
        FakeWorkers(isolated),
        TopicCollector(isolated, [MODEL_CALLS, OUTCOMES]) as seen,
    ):
        proc.wait_for_log("partitions_restored")
        send(isolated, first)
        records = seen.wait_for(lambda r: len(of_agent(r, RunCompleted, "ana")) == 1, 60)
        [answer] = of_agent(records, RunCompleted, "ana")
        send(isolated, second)
        records = seen.wait_for(lambda r: len(of_agent(r, RunCompleted, "ana")) == 2, 60)
    [opening] = [
        r
        for r in of_agent(records, ModelCallRequested, "ana")
        if isinstance(r, ModelCallRequested)
        and r.step == 1
        and r.envelope.correlation_id == second.event_id
    ]
    assert isinstance(answer, RunCompleted)
    assert json.loads(opening.messages_json) == [
        {"role": "user", "content": "where is order o-1?"},
        {"role": "assistant", "content": answer.output},
        {"role": "user", "content": "and when?"},
    ]


def _holding_approvals(request: Event) -> Event | None:
    """The scripted world, except that nobody decides: gated runs stay in flight."""
    return None if isinstance(request, ApprovalRequested) else respond(request)


@pytest.fixture
def held(isolated: Settings) -> Iterator[TopicCollector]:
    with (
        FakeWorkers(isolated, _holding_approvals),
        TopicCollector(isolated, [MODEL_CALLS, APPROVAL_REQUESTS, OUTCOMES]) as seen,
    ):
        yield seen


def _approval_of(seen: TopicCollector, agent: str) -> ApprovalRequested:
    records = seen.wait_for(lambda r: bool(of_agent(r, ApprovalRequested, agent)), 60)
    [request] = of_agent(records, ApprovalRequested, agent)
    assert isinstance(request, ApprovalRequested)
    return request


def _outcome(seen: TopicCollector, agent: str) -> RunCompleted | RunFailed:
    records = seen.wait_for(
        lambda r: bool(of_agent(r, RunCompleted, agent) + of_agent(r, RunFailed, agent)), 60
    )
    [outcome] = of_agent(records, RunCompleted, agent) + of_agent(records, RunFailed, agent)
    assert isinstance(outcome, RunCompleted | RunFailed)
    return outcome


def test_a_run_finishes_on_the_version_it_started_on_and_new_runs_take_the_newest(
    isolated: Settings, tmp_path: Path, held: TopicCollector
) -> None:
    old_run, unserved = agent_input("old", "refund please"), agent_input("gone", "refund please")
    with processor(isolated, tmp_path, "v1") as proc:
        proc.wait_for_log("partitions_restored")
        send(isolated, old_run, unserved)
        old_request, gone_request = _approval_of(held, "old"), _approval_of(held, "gone")
        proc.kill()  # mid-run, as a crash or a rolling deploy would

    # Restarted with versions 1 and 2: the decision of the v1 run is applied on v1.
    with processor(isolated, tmp_path, "v1_and_v2") as proc:
        proc.wait_for_log("partitions_restored")
        grant = respond(old_request)
        assert grant is not None
        new_run = agent_input("new", "where is it")
        send(isolated, grant, new_run)
        finished, started_new = _outcome(held, "old"), _outcome(held, "new")
        proc.terminate()

    # Restarted with version 2 alone: a run of version 1 cannot go on, and says why.
    with processor(isolated, tmp_path, "v2") as proc:
        proc.wait_for_log("partitions_restored")
        grant = respond(gone_request)
        assert grant is not None
        send(isolated, grant)
        failed = _outcome(held, "gone")

    assert isinstance(finished, RunCompleted) and finished.spec_version == 1
    assert isinstance(started_new, RunCompleted) and started_new.spec_version == 2
    prompts = {
        (r.envelope.agent_id, r.spec_version, r.system_prompt)
        for r in held.snapshot()
        if isinstance(r, ModelCallRequested)
    }
    assert prompts == {
        ("old", 1, "Be helpful (v1)."),
        ("gone", 1, "Be helpful (v1)."),
        ("new", 2, "Be brief (v2)."),
    }
    assert isinstance(failed, RunFailed)
    assert failed.error_class == RunFailure.SPEC_VERSION_UNAVAILABLE
    assert "v1" in failed.reason and "serves support v2" in failed.reason
    assert failed.spec_version == 1
