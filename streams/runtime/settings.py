"""One configuration object, read from ``AGENTSTREAM_*`` environment variables.

When no endpoint is named, the endpoints of a running ``agentstream dev up`` are used: that
command records them in a small JSON file (see :func:`dev_stack_file`), so other shells and
commands find the embedded stack without exporting anything.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import psutil
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentstream.schemas.errors import ConfigurationError
from agentstream.streams.runtime.logs import KAFKA_LOGGER

__all__ = [
    "DevStackRecord",
    "KafkaConfig",
    "Settings",
    "agentstream_home",
    "clear_dev_stack",
    "dev_stack_file",
    "load_settings",
    "read_dev_stack",
    "write_dev_stack",
]

#: librdkafka configuration, as confluent-kafka's clients take it (``logger`` is a Python logger).
KafkaConfig = dict[str, str | int | float | bool | logging.Logger]

_HOST_PORT = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}$")
_DEV_HINT = "start the embedded stack with `agentstream dev up` or set {var}"
_SECURITY_FIELDS = (
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_ca_location",
    "ssl_certificate_location",
    "ssl_key_location",
    "ssl_key_password",
)


class Settings(BaseSettings):
    """Connection and runtime settings shared by every agentstream command and service."""

    model_config = SettingsConfigDict(env_prefix="AGENTSTREAM_", extra="ignore", frozen=True)

    bootstrap_servers: str | None = Field(
        default=None, description="Kafka bootstrap servers, host:port[,host:port...]"
    )
    schema_registry_url: str | None = Field(
        default=None, description="Confluent-compatible schema registry base URL"
    )
    database_url: str | None = Field(default=None, description="PostgreSQL URL (postgresql://...)")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None

    client_id: str = "agentstream"
    processor_transactions: bool = Field(
        default=False,
        description="Wrap each processor batch in a Kafka transaction. For Apache Kafka: on the "
        "embedded broker, read_committed readers never see transactional writes. Correctness "
        "never depends on it",
    )
    fetch_wait_ms: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Longest a processor or worker fetch waits for records. The embedded broker "
        "answers a waiting fetch only at this deadline, even when records arrive (measured), so "
        "it adds up to this much to every hop of a run; shorter costs idle fetches (on Apache "
        "Kafka a fetch returns as soon as records arrive, and only the idle cost remains)",
    )
    group_session_timeout_ms: int = Field(
        default=6000,
        ge=1000,
        le=300_000,
        description="How long a silent consumer-group member keeps its partitions, so how long "
        "a crashed one's partitions wait for a new owner. 6000 is the least Apache Kafka accepts "
        "unless its group.min.session.timeout.ms says less. The embedded broker holds every "
        "join of a member without an instance id for half of it (measured), so the development "
        "stack, whose brokers accept less, sets less",
    )
    partitions: int = Field(default=6, ge=1, le=10000, description="Partitions per agent topic")
    replication_factor: int = Field(default=1, ge=1, le=7)
    topic_prefix: str = ""
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of a service's /metrics, /healthz and /readyz; unset: off, 0: a free "
        "port (logged as metrics_listening)",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the metrics port binds")
    metrics_agent_label: bool = Field(
        default=False, description="Label token counters by agent too (one series per agent)"
    )
    console_token: SecretStr | None = Field(
        default=None, description="Bearer token of the operator console and its HTTP ingress"
    )
    console_username: str | None = Field(default=None, description="Console basic-auth user")
    console_password: SecretStr | None = Field(
        default=None, description="Console basic-auth password"
    )
    # Room for the longest input text (128 KiB in UTF-8) even with every character escaped in
    # the JSON: a body that fits is then judged by the contract's own limit, with its message.
    ingress_max_bytes: int = Field(
        default=1024 * 1024,
        ge=256,
        le=16 * 1024 * 1024,
        description="Largest accepted ingress body",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str | None) -> str | None:
        if value is None:
            return None
        servers = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in servers if not _HOST_PORT.match(s)]
        if not servers or bad:
            raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return ",".join(servers)

    @field_validator("schema_registry_url")
    @classmethod
    def _check_registry(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http(s):// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^postgres(ql)?://", value):
            raise ValueError(f"expected a postgresql:// URL, got {value!r}")
        return value

    def require_bootstrap_servers(self) -> str:
        if self.bootstrap_servers is None:
            raise _missing("AGENTSTREAM_BOOTSTRAP_SERVERS", "no Kafka broker is configured")
        return self.bootstrap_servers

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise _missing("AGENTSTREAM_DATABASE_URL", "no PostgreSQL database is configured")
        return self.database_url

    def require_schema_registry_url(self) -> str:
        if self.schema_registry_url is None:
            raise _missing("AGENTSTREAM_SCHEMA_REGISTRY_URL", "no schema registry is configured")
        return self.schema_registry_url

    def kafka_config(self) -> KafkaConfig:
        """librdkafka client settings, security included; callers add their role's own keys."""
        config: KafkaConfig = {
            "bootstrap.servers": self.require_bootstrap_servers(),
            "client.id": self.client_id,
            "logger": KAFKA_LOGGER,
        }
        for name in _SECURITY_FIELDS:  # each field is named after its librdkafka key
            plain = _plain(getattr(self, name))
            if plain is not None:
                config[name.replace("_", ".")] = plain
        return config

    def security_environment(self) -> dict[str, str]:
        """The Kafka security settings that are set, as the ``AGENTSTREAM_*`` variables that
        configure them, for the services a command starts."""
        found = {name: _plain(getattr(self, name)) for name in _SECURITY_FIELDS}
        return {f"AGENTSTREAM_{name.upper()}": v for name, v in found.items() if v is not None}

    def topic(self, name: str) -> str:
        """The physical topic name for a logical one (a prefix isolates tests and copies)."""
        return f"{self.topic_prefix}{name}"


class DevStackRecord(BaseModel):
    """What ``agentstream dev up`` writes so other shells can find it."""

    pid: int
    bootstrap_servers: str
    database_url: str
    schema_registry_url: str | None = None

    def is_alive(self) -> bool:
        return psutil.pid_exists(self.pid)


def agentstream_home() -> Path:
    """Where agentstream keeps its own files: ``AGENTSTREAM_HOME``, else ``~/.agentstream``."""
    home = os.environ.get("AGENTSTREAM_HOME")
    return Path(home) if home else Path.home() / ".agentstream"


def dev_stack_file() -> Path:
    return agentstream_home() / "dev-stack.json"


def read_dev_stack() -> DevStackRecord | None:
    """The running dev stack's endpoints, or None when none is running."""
    path = dev_stack_file()
    try:
        record = DevStackRecord.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
    return record if record.is_alive() else None


def write_dev_stack(record: DevStackRecord) -> Path:
    path = dev_stack_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(record.model_dump_json(indent=2))
    tmp.replace(path)
    return path


def clear_dev_stack(pid: int) -> None:
    """Remove the record if it is ours (another dev stack may have replaced it)."""
    path = dev_stack_file()
    try:
        current = DevStackRecord.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError):
        return
    if current.pid == pid:
        path.unlink(missing_ok=True)


def load_settings(*, use_dev_stack: bool = True, **overrides: Any) -> Settings:
    """Settings from the environment; endpoints left unset come from a running dev stack."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise _translate(exc) from exc
    if not use_dev_stack:
        return settings
    unset = {
        name
        for name in ("bootstrap_servers", "database_url", "schema_registry_url")
        if getattr(settings, name) is None
    }
    record = read_dev_stack() if unset else None
    if record is None:
        return settings
    fill = {name: getattr(record, name) for name in unset if getattr(record, name) is not None}
    return settings.model_copy(update=fill)


def _plain(value: object) -> str | None:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return None if value is None else str(value)


def _missing(var: str, what: str) -> ConfigurationError:
    return ConfigurationError(f"{what}", hint=_DEV_HINT.format(var=var))


def _translate(exc: ValidationError) -> ConfigurationError:
    problems = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"])
        problems.append(f"AGENTSTREAM_{field.upper()}: {error['msg']}")
    return ConfigurationError(
        "invalid setting " + "; ".join(problems),
        hint="fix or unset the environment variable named above",
    )
