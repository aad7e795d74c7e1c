"""The HTTP ingress and the console's authentication, against the real broker: only
authenticated, valid, small enough bodies become AgentInput events, and each answer comes once
the broker acknowledged the record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from console_support import ServedApp, read_with_headers
from pydantic import SecretStr

from agentstream.schemas.errors import ConfigurationError
from agentstream.schemas.events import AgentInput
from agentstream.streams.runtime import tracing
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import INPUTS, ensure_topics
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
