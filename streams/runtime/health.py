"""``/metrics``, ``/healthz`` and ``/readyz`` of a long-running service, on its own port.

A small threaded HTTP server from the standard library, not the console's ASGI stack: it runs
beside a blocking confluent-kafka loop or a Faust event loop alike, owns no event loop that
could fight theirs over signals, and keeps answering ``/healthz`` while the service's own
thread is busy (a liveness probe must not fail because a batch is long).

``/healthz`` is 200 while the process runs. ``/readyz`` is 200 once every readiness condition
the service declared holds (for a consumer: partitions assigned, state restored, caught up to
within ``max_lag`` records), else 503 with the conditions as JSON.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentstream.streams.runtime import metrics, tracing
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.settings import Settings

__all__ = [
    "ASSIGNED",
    "CAUGHT_UP",
    "RESTORED",
    "HealthServer",
    "Readiness",
    "observability",
    "start_health_server",
]

ASSIGNED = "assigned"
RESTORED = "restored"
CAUGHT_UP = "caught_up"


class Readiness:
    """Named conditions a service sets as it starts; ready when all hold."""

    def __init__(self, *conditions: str, max_lag: int = 1000) -> None:
        self.max_lag = max_lag
        self._lock = threading.Lock()
        self._conditions = dict.fromkeys(conditions, False)

    def set(self, condition: str, value: bool = True) -> None:
        with self._lock:
            self._conditions[condition] = value

    def update_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """A ``metrics.lag_from_statistics`` listener: caught up when every assigned partition
        is within ``max_lag`` records of its end."""
        self.set(CAUGHT_UP, bool(lags) and max(lags.values()) <= self.max_lag)

    def snapshot(self) -> dict[str, bool]:
        with self._lock:
            return dict(self._conditions)


class HealthServer:
    """Serves the three endpoints until ``stop()``; ``port`` 0 picks a free one."""

    def __init__(
        self, service: str, readiness: Readiness, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.service = service
        self.readiness = readiness
        self._server = ThreadingHTTPServer((host, port), _handler_for(service, readiness))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"{service}-health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> HealthServer:
        self._thread.start()
        get_logger(__name__).info("metrics_listening", service=self.service, url=self.url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def start_health_server(
    service: str, readiness: Readiness, port: int | None, host: str = "127.0.0.1"
) -> HealthServer | None:
    """The server when ``port`` is set (0: a free port, logged in ``metrics_listening``)."""
    if port is None:
        return None
    return HealthServer(service, readiness, host=host, port=port).start()


def _handler_for(service: str, readiness: Readiness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._json(200, {"service": service, "alive": True})
            elif path == "/readyz":
                checks = readiness.snapshot()
                ready = all(checks.values())
                self._json(200 if ready else 503, {"service": service, "ready": ready, **checks})
            else:
                self._json(
                    404, {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]}
                )

        def _json(self, status: int, body: dict[str, object]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the service's own log

    return Handler


@contextmanager
def observability(
    service: str, readiness: Readiness, settings: Settings, port: int | None = None
) -> Iterator[HealthServer | None]:
    """Around a service's run: tracing as ``OTEL_*`` asks, and the health server on ``port``
    (else the ``metrics_port`` setting; neither: no server)."""
    metrics.use_agent_label(settings.metrics_agent_label)
    tracing.setup_tracing(service)
    chosen = port if port is not None else settings.metrics_port
    server = start_health_server(service, readiness, chosen, settings.metrics_host)
    try:
        yield server
    finally:
        if server is not None:
            server.stop()
        tracing.shutdown_tracing()
