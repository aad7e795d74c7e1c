"""Errors of the workers that run side effects (tools, models) and of the approvals SDK."""

from __future__ import annotations

from agentstream.schemas.errors import AgentStreamError

__all__ = [
    "ApprovalError",
    "CallTimeoutError",
    "CircuitOpenError",
    "ProviderError",
    "RetryableError",
    "WorkerError",
]


class WorkerError(AgentStreamError):
    """A tool or model call did not produce a result."""

    #: Whether another attempt may succeed (a timeout, a dropped connection, an overload).
    retryable: bool = False


class RetryableError(WorkerError):
    """Raise from a tool for a transient failure: the worker backs off and tries again."""

    retryable = True


class CallTimeoutError(RetryableError):
    """One attempt took longer than the call's timeout."""


class CircuitOpenError(WorkerError):
    """The circuit breaker of the tool or provider is open: the call fails fast."""


class ProviderError(WorkerError):
    """A model provider answered with an error, or not at all."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class ApprovalError(AgentStreamError):
    """An approval decision cannot be made: unknown call, already decided, hash mismatch."""
