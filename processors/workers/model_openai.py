"""An OpenAI-compatible chat completions client over httpx: works with any server speaking
``POST {base_url}/chat/completions`` (OpenAI, vLLM, llama.cpp, Ollama, LM Studio, ...)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from agentstream.processors.errors import ProviderError
from agentstream.processors.workers.model_adapters import ModelRequest, ModelResponse
from agentstream.schemas.events import TokenUsage, ToolCallIntent

__all__ = [
    "OpenAICompatibleModel",
    "parse_completion",
]

#: Statuses another attempt may get past: rate limits, overload, gateway trouble.
_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
#: Our parameters that mean something to the worker, not to the provider.
_LOCAL_PARAMETERS = {"script"}


class OpenAICompatibleModel:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def body(self, request: ModelRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        for message in request.messages:
            wire = dict(message)
            if wire.get("role") == "tool":
                wire.pop("name", None)  # not part of the tool message in the protocol
            messages.append(wire)
        body: dict[str, Any] = {
            k: v for k, v in request.parameters.items() if k not in _LOCAL_PARAMETERS
        }
        body.update({"model": request.model, "messages": messages})
        if request.tools:
            body["tools"] = request.tools
        return body

    async def complete(self, request: ModelRequest) -> ModelResponse:
        try:
            response = await self._client.post(
                "/chat/completions",
                json=self.body(request),
                # Ignored by most servers, honoured by some gateways: a retried call with the
                # same key is not billed twice.
                headers={"Idempotency-Key": request.call_id},
            )
        except httpx.TimeoutException as exc:
            raise ProviderError(f"no answer from {self.base_url}: {exc!r}", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(f"cannot reach {self.base_url}: {exc!r}", retryable=True) from exc
        if response.status_code >= 400:
            raise ProviderError(
                f"HTTP {response.status_code} from {self.base_url}: {_error_text(response)}",
                retryable=response.status_code in _RETRYABLE_STATUS,
                status=response.status_code,
            )
        try:
            return parse_completion(response.json())
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ProviderError(f"malformed completion: {exc!r}", retryable=False) from exc


def parse_completion(data: dict[str, Any]) -> ModelResponse:
    message = data["choices"][0]["message"]
    intents = []
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        arguments = function.get("arguments") or "{}"
        if not isinstance(arguments, str):  # some servers send an object
            arguments = json.dumps(arguments)
        intents.append(
            ToolCallIntent(
                tool_call_id=str(call.get("id") or f"call-{index}"),
                tool=str(function["name"]),
                arguments_json=arguments,
            )
        )
    usage = data.get("usage") or {}
    return ModelResponse(
        content=message.get("content"),
        tool_calls=intents,
        usage=TokenUsage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        ),
    )


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except ValueError:
        return response.text[:300]
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error)[:300]
