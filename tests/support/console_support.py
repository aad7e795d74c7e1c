"""For the console, ingress, metrics, tracing and steering tests: an ASGI app served by uvicorn in
a thread on a free loopback port, and readers that return records with their headers or keys."""

from __future__ import annotations

import threading
import time
from html.parser import HTMLParser
from types import TracebackType
from typing import Any, Self

import httpx
import uvicorn

from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topic_scan import scan_topics
from agentstream.streams.topics import TopicSpec
from agentstream.tools.devstack.stack_process import free_loopback_port


class ServedApp:
    """``app`` on http://127.0.0.1:<free port> until the ``with`` block ends."""

    def __init__(self, app: Any) -> None:
        self.port = free_loopback_port()
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
    return [(s.record, list(s.headers)) for s in scan_topics(settings, serde, specs)]


def read_keyed(settings: Settings, specs: list[TopicSpec]) -> list[tuple[object, str | None]]:
    """Every decodable record of ``specs`` with its Kafka key (decoded), read to the current
    end."""
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    return [
        (s.record, None if s.key is None else s.key.decode())
        for s in scan_topics(settings, serde, specs)
    ]


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


#: elements without an end tag
_VOID = frozenset({"meta", "br", "img", "input", "hr", "link"})


class RunTree(HTMLParser):
    """The runs of a page's conversation trees: each ``<li data-run>`` with how many such items
    it is nested in, its agent and status, in document order (one list per ``ul.tree`` at the
    top)."""

    def __init__(self) -> None:
        super().__init__()
        self.trees: list[list[tuple[int, str, str]]] = []
        self._open: list[bool] = []  # per open element: is it a run's item

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        is_run = tag == "li" and "data-run" in found
        if is_run:
            depth = sum(self._open)
            if depth == 0:
                self.trees.append([])
            self.trees[-1].append((depth, found["data-agent"] or "", found["data-status"] or ""))
        if tag not in _VOID:
            self._open.append(is_run)

    def handle_endtag(self, tag: str) -> None:
        self._open.pop()

    @classmethod
    def of(cls, page: str) -> list[list[tuple[int, str, str]]]:
        parser = cls()
        parser.feed(page)
        return parser.trees
