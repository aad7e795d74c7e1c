"""A small OpenAI-compatible chat completions server for tests, on a free loopback port.

It answers from a queue of scripted replies (status code and JSON body) and records every
request it got, so a test can check what the client sent."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from console_support import ServedApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class StubState:
    replies: deque[tuple[int, dict[str, Any]]] = field(default_factory=deque)
    default: tuple[int, dict[str, Any]] | None = None
    received: list[Received] = field(default_factory=list)


def completion(
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": "server_error"}}


class OpenAIStub:
    def __init__(self) -> None:
        self.state = StubState()
        self._served = ServedApp(
            Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])
        )

    @property
    def base_url(self) -> str:
        return f"{self._served.url}/v1"

    def reply(self, status: int, body: dict[str, Any]) -> None:
        self.state.replies.append((status, body))

    async def _complete(self, request: Request) -> JSONResponse:
        self.state.received.append(Received(await request.json(), dict(request.headers)))
        if self.state.replies:
            status, body = self.state.replies.popleft()
        elif self.state.default is not None:
            status, body = self.state.default
        else:
            status, body = error(500, "no reply scripted")
        return JSONResponse(body, status_code=status)

    def __enter__(self) -> Self:
        self._served.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._served.__exit__(exc_type, exc, tb)
