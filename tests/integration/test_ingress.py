"""The HTTP ingress and the console's authentication, against the real broker: only
authenticated, valid, small enough bodies become AgentInput events (or, from the steering
endpoints, events on agent.control), and each answer comes once the broker acknowledged the
record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_support import ServedApp, read_keyed, read_with_headers
from pydantic import SecretStr

from agentstream.schemas.errors import ConfigurationError
from agentstream.schemas.events import (
    AgentInput,
    AgentPaused,
    AgentResumed,
    CallbackCompleted,
    Event,
    MemoryErased,
    MemoryRecorded,
    RunCancelRequested,
)
from agentstream.schemas.limits import MAX_RESULT_BYTES
from agentstream.streams.runtime import tracing
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import CONTROL, INPUTS, ensure_topics
from agentstream.tools.console.app import Console, check_exposure, create_console_app

pytestmark = pytest.mark.integration

TOKEN = "ingress-token-" + uuid.uuid4().hex
MAX_BYTES = 1024
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def ingress(settings: Settings) -> Iterator[tuple[Settings, str]]:
    isolated = settings.model_copy(
        update={
            "topic_prefix": f"i{uuid.uuid4().hex[:6]}.",
            "console_token": SecretStr(TOKEN),
            "ingress_max_bytes": MAX_BYTES,
        }
    )
    ensure_topics(isolated)
    with ServedApp(create_console_app(Console(isolated))) as served:
        yield isolated, served.url


def _post(url: str, body: object, *, token: str | None = TOKEN, **headers: str) -> httpx.Response:
    sent = {"Content-Type": "application/json", **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/api/inputs", content=data, headers=sent, timeout=30)


def test_ingress_refuses_bad_requests_and_produces_only_the_valid_ones(
    ingress: tuple[Settings, str],
) -> None:
    settings, url = ingress
    good = {"agent_id": "ingress-1", "text": "Where is order o-1001?", "tenant_id": "acme"}

    unauthenticated = _post(url, good, token=None)
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    assert _post(url, good, token="wrong-" + TOKEN).status_code == 401
    basic = httpx.post(f"{url}/api/inputs", json=good, auth=("operator", TOKEN), timeout=10)
    assert basic.status_code == 401  # no basic credentials are configured
    assert httpx.get(f"{url}/approvals", timeout=10).status_code == 401
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200

    oversized = _post(url, {**good, "text": "x" * MAX_BYTES})
    assert oversized.status_code == 413
    assert "larger than 1024 bytes" in oversized.json()["error"]
    # Without a Content-Length (chunked) the limit holds while reading.
    chunks = iter([b'{"agent_id": "ingress-1", "text": "', b"y" * MAX_BYTES, b'"}'])
    streamed = httpx.post(
        f"{url}/api/inputs",
        content=chunks,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert streamed.status_code == 413

    not_json = _post(url, b"{not json")
    assert not_json.status_code == 400
    assert "not JSON" in not_json.json()["error"]
    assert _post(url, good, **{"Content-Type": "text/plain"}).status_code == 415
    missing = _post(url, {"agent_id": "ingress-1"})
    assert missing.status_code == 422
    assert {"field": "text", "problem": "Field required"} in missing.json()["problems"]
    assert _post(url, {**good, "surprise": 1}).status_code == 422
    assert _post(url, {**good, "agent_id": ""}).status_code == 422
    assert _post(url, {**good, "metadata": {"k": ["not", "a", "string"]}}).status_code == 422

    accepted = _post(url, good, traceparent=TRACEPARENT)
    assert accepted.status_code == 202, accepted.text
    answer = accepted.json()
    assert answer["topic"] == settings.topic(INPUTS.name)
    assert answer["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"

    records = read_with_headers(settings, [INPUTS])
    assert len(records) == 1, records  # nothing of the refused requests reached the topic
    [(record, headers)] = records
    assert isinstance(record, AgentInput)
    assert record.envelope.event_id == answer["event_id"]
    assert (record.envelope.agent_id, record.envelope.tenant_id) == ("ingress-1", "acme")
    assert (record.text, record.envelope.source) == ("Where is order o-1001?", "http-ingress")
    assert tracing.trace_id_of(tracing.traceparent_of(headers)) == answer["trace_id"]


def test_the_console_refuses_a_public_address_without_credentials(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="without authentication"):
        check_exposure("0.0.0.0", settings)
    check_exposure("127.0.0.1", settings)
    check_exposure("::1", settings)
    check_exposure("0.0.0.0", settings.model_copy(update={"console_token": SecretStr("t")}))

    exe = shutil.which("agentstream", path=str(Path(sys.executable).parent))
    assert exe
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_CONSOLE")}
    env["AGENTSTREAM_DATABASE_URL"] = settings.require_database_url()
    done = subprocess.run(
        [exe, "console", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "without authentication" in done.stderr
    assert "AGENTSTREAM_CONSOLE_TOKEN" in done.stderr


# -- steering ------------------------------------------------------------------------------------

OPERATOR, PASSWORD = "alice", "pw-" + uuid.uuid4().hex
STEERING_MAX_BYTES = 200_000  # room for a result at the contract's limit, to see that limit
AGENT = "support-9"


@pytest.fixture
def steering(settings: Settings) -> Iterator[tuple[Settings, str]]:
    isolated = settings.model_copy(
        update={
            "topic_prefix": f"s{uuid.uuid4().hex[:6]}.",
            "console_token": SecretStr(TOKEN),
            "console_username": OPERATOR,
            "console_password": SecretStr(PASSWORD),
            "ingress_max_bytes": STEERING_MAX_BYTES,
        }
    )
    ensure_topics(isolated)
    with ServedApp(create_console_app(Console(isolated))) as served:
        yield isolated, served.url


def _steer(
    method: str,
    url: str,
    body: object = None,
    *,
    auth: httpx.Auth | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """An operator's request (basic credentials unless ``auth`` or an Authorization header is
    given); ``body`` None sends no body, bytes go as they are."""
    sent = dict(headers or {})
    if "Authorization" not in sent:
        auth = auth or httpx.BasicAuth(OPERATOR, PASSWORD)
    content = None
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.request(
        method,
        url,
        content=content,
        headers=sent,
        auth=auth,
        timeout=30,
    )


def _control(settings: Settings) -> list[tuple[Event, str | None]]:
    records = read_keyed(settings, [CONTROL])
    assert all(isinstance(r, Event) for r, _ in records), records
    return [(r, k) for r, k in records if isinstance(r, Event)]


def test_steering_endpoints_put_their_events_on_agent_control(
    steering: tuple[Settings, str],
) -> None:
    settings, url = steering
    api = f"{url}/api"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    answers = [
        _steer("POST", f"{api}/runs/run-1/cancel", {"agent_id": AGENT, "reason": "wrong order"}),
        _steer("POST", f"{api}/agents/{AGENT}/pause", {"reason": "incident", "tenant_id": "acme"}),
        _steer("POST", f"{api}/agents/{AGENT}/resume"),  # no body at all
        _steer("POST", f"{api}/agents/{AGENT}/memory", {"key": "language", "value": "Dutch"}),
        _steer("DELETE", f"{api}/agents/{AGENT}/memory/prefs/language", {"reason": "asked"}),
        _steer("DELETE", f"{api}/agents/{AGENT}/memory"),
        _steer("POST", f"{api}/callbacks/cb-1", {"agent_id": AGENT, "result": {"ok": [1, None]}}),
        _steer("POST", f"{api}/callbacks/cb-2", {"agent_id": AGENT, "result": None}),
        httpx.post(f"{api}/agents/{AGENT}/pause", headers=bearer, timeout=30),
    ]
    for answer in answers:
        assert answer.status_code == 202, answer.text
    assert [a.json()["requested_by"] for a in answers] == [OPERATOR] * 8 + ["token"]

    records = _control(settings)
    assert len(records) == len(answers)
    for (event, key), answer in zip(records, answers, strict=True):
        assert key == AGENT
        assert event.envelope.agent_id == AGENT
        assert event.envelope.source == "http-ingress"
        assert event.envelope.event_id == answer.json()["event_id"]
        assert type(event).__name__ == answer.json()["type"]
        assert answer.json()["topic"] == settings.topic(CONTROL.name)
    cancel, pause, resume, remember, erase_one, erase_all, cb1, cb2, paused = [
        event for event, _ in records
    ]
    assert isinstance(cancel, RunCancelRequested)
    assert (cancel.envelope.run_id, cancel.requested_by, cancel.reason) == (
        "run-1",
        OPERATOR,
        "wrong order",
    )
    assert isinstance(pause, AgentPaused)
    assert (pause.requested_by, pause.reason, pause.envelope.tenant_id) == (
        OPERATOR,
        "incident",
        "acme",
    )
    assert isinstance(resume, AgentResumed)
    assert (resume.requested_by, resume.envelope.tenant_id) == (OPERATOR, "default")
    assert isinstance(remember, MemoryRecorded)
    assert (remember.key, remember.value, remember.recorded_by) == ("language", "Dutch", OPERATOR)
    assert isinstance(erase_one, MemoryErased)
    assert (erase_one.key, erase_one.reason, erase_one.requested_by) == (
        "prefs/language",
        "asked",
        OPERATOR,
    )
    assert isinstance(erase_all, MemoryErased)
    assert erase_all.key is None
    assert isinstance(cb1, CallbackCompleted)
    assert (cb1.callback_id, cb1.completed_by) == ("cb-1", OPERATOR)
    assert json.loads(cb1.result_json) == {"ok": [1, None]}
    assert isinstance(cb2, CallbackCompleted)
    assert cb2.result_json == "null"
    assert isinstance(paused, AgentPaused)
    assert paused.requested_by == "token"


def test_steering_endpoints_refuse_bad_requests_and_produce_nothing(
    steering: tuple[Settings, str],
) -> None:
    settings, url = steering
    api = f"{url}/api"
    cancel = f"{api}/runs/run-1/cancel"
    callback = f"{api}/callbacks/cb-1"
    endpoints = [
        ("POST", cancel, {"agent_id": AGENT}),
        ("POST", f"{api}/agents/{AGENT}/pause", {}),
        ("POST", f"{api}/agents/{AGENT}/resume", {}),
        ("POST", f"{api}/agents/{AGENT}/memory", {"key": "k", "value": "v"}),
        ("DELETE", f"{api}/agents/{AGENT}/memory", {}),
        ("DELETE", f"{api}/agents/{AGENT}/memory/k", {}),
        ("POST", callback, {"agent_id": AGENT, "result": 1}),
    ]
    for method, where, body in endpoints:
        nobody = httpx.request(method, where, json=body, timeout=10)
        assert nobody.status_code == 401, (method, where)
        wrong = _steer(method, where, body, auth=httpx.BasicAuth(OPERATOR, "wrong"))
        assert wrong.status_code == 401, (method, where)
        bad_token = _steer(method, where, body, headers={"Authorization": f"Bearer wrong-{TOKEN}"})
        assert bad_token.status_code == 401, (method, where)

    def refused(
        status: int, method: str, where: str, body: object, headers: dict[str, str] | None = None
    ) -> Any:
        answer = _steer(method, where, body, headers=headers)
        assert answer.status_code == status, (where, body, answer.text)
        return answer.json()

    big = refused(413, "POST", cancel, {"agent_id": AGENT, "reason": "x" * STEERING_MAX_BYTES})
    assert f"larger than {STEERING_MAX_BYTES} bytes" in big["error"]
    assert "not JSON" in refused(400, "POST", cancel, b"{nope")["error"]
    refused(415, "POST", cancel, {"agent_id": AGENT}, {"Content-Type": "text/plain"})
    missing = refused(422, "POST", cancel, {"reason": "no agent"})
    assert {"field": "agent_id", "problem": "Field required"} in missing["problems"]
    refused(422, "POST", cancel, {"agent_id": AGENT, "surprise": 1})
    refused(422, "POST", cancel, {"agent_id": ""})
    refused(422, "POST", cancel, {"agent_id": "not fine"})
    refused(422, "POST", f"{api}/agents/not%20fine/pause", {})
    refused(422, "POST", f"{api}/agents/{AGENT}/memory", {"key": "", "value": "v"})
    refused(422, "POST", f"{api}/agents/{AGENT}/memory", {"key": "k"})
    refused(422, "DELETE", f"{api}/agents/{AGENT}/memory", {"key": "k"})
    refused(422, "POST", callback, {"agent_id": AGENT})  # a result is required (null is one)
    nan = refused(422, "POST", callback, b'{"agent_id": "support-9", "result": NaN}')
    assert "not JSON" in nan["error"]
    large = refused(422, "POST", callback, {"agent_id": AGENT, "result": "x" * MAX_RESULT_BYTES})
    assert large["problems"][0]["field"] == "result"
    assert f"over the {MAX_RESULT_BYTES:,}-byte limit" in large["problems"][0]["problem"]

    assert _control(settings) == []
