"""The one exception tree of agentstream.

Every error the product raises on purpose derives from :class:`AgentStreamError`, so callers can
catch the whole family at an edge (CLI, service loop) and let everything else surface as a bug.
Infrastructure errors (librdkafka, psycopg, HTTP) are translated into these at the edge that
meets them, keeping the original as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "AgentStreamError",
    "ConfigurationError",
    "DeliveryError",
    "EmbeddedStackError",
    "SerializationError",
    "ServiceUnavailableError",
]


class AgentStreamError(Exception):
    """Root of every error agentstream raises deliberately."""

    #: One line telling the user what to do about it; the CLI prints it under the message.
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigurationError(AgentStreamError):
    """A setting is missing, malformed, or names something that cannot be used."""


class ServiceUnavailableError(AgentStreamError):
    """A broker, registry or database did not answer in time."""


class EmbeddedStackError(AgentStreamError):
    """The embedded broker or PostgreSQL could not be started, or died."""


class SerializationError(AgentStreamError):
    """A record could not be encoded or decoded against its schema."""


class DeliveryError(AgentStreamError):
    """The broker refused or failed to acknowledge a produced record."""
