"""Apache Kafka for development and tests: its own jars from Maven Central, one combined
broker+controller in KRaft mode on loopback, no Docker.

The jars are resolved once by Maven from ``infra/kafka/pom.xml`` into a cache under
``AGENTSTREAM_HOME`` keyed by that file's content, so a second start downloads nothing. Unlike
the embedded broker, the log is on disk: a restart (or a SIGKILL and a restart) keeps every
topic, committed offset and transaction, which the broker-crash tests rely on.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from agentstream.schemas.errors import EmbeddedStackError
from agentstream.streams.runtime.settings import agentstream_home
from agentstream.tools.devstack import stack_process
from agentstream.tools.devstack.stack_broker import serves_metadata

#: A bounded heap: the broker shares a small machine with PostgreSQL and the services.
HEAP = "-Xmx768m"
#: The least session timeout the broker accepts of a group member (Kafka's default: 6000).
MIN_SESSION_TIMEOUT_MS = 1000
#: Read here from the Maven project so the version is declared in one place.
POM_NAME = "pom.xml"
_INSTALL_HINT = (
    "install Java 17+ and Maven (Debian: apt-get install -y openjdk-17-jdk-headless maven)"
)
_COMPLETE = ".complete"


def pom_path() -> Path:
    """``infra/kafka/pom.xml`` of the source tree (or ``AGENTSTREAM_KAFKA_POM``)."""
    named = os.environ.get("AGENTSTREAM_KAFKA_POM")
    if named:
        return Path(named)
    return Path(__file__).resolve().parents[2] / "infra" / "kafka" / POM_NAME


def require_java_and_maven() -> tuple[str, str]:
    java, mvn = shutil.which("java"), shutil.which("mvn")
    missing = [name for name, path in (("java", java), ("mvn", mvn)) if path is None]
    if missing:
        raise EmbeddedStackError(
            f"the Apache Kafka broker needs {' and '.join(missing)}, not found on PATH",
            hint=_INSTALL_HINT,
        )
    assert java is not None and mvn is not None
    return java, mvn


def kafka_jars(*, progress: bool = False) -> Path:
    """The directory of Apache Kafka's jars, resolved by Maven on first use."""
    _java, mvn = require_java_and_maven()
    pom = pom_path()
    if not pom.is_file():
        raise EmbeddedStackError(
            f"the Maven project of the Apache Kafka broker is missing ({pom.name})",
            hint="run from a source checkout of agentstream, or set AGENTSTREAM_KAFKA_POM",
        )
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    libs = agentstream_home() / "kafka" / digest / "libs"
    if (libs / _COMPLETE).exists():
        return libs
    # A half-copied directory from an interrupted run is thrown away, never used.
    shutil.rmtree(libs, ignore_errors=True)
    libs.mkdir(parents=True)
    argv = [
        mvn,
        "-B",
        *([] if progress else ["-q"]),
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(libs, ignore_errors=True)
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise EmbeddedStackError(f"Maven could not resolve Apache Kafka's jars:\n{tail}")
    (libs / _COMPLETE).touch()
    return libs


def _cluster_id() -> str:
    # Kafka's cluster ids are a UUID in URL-safe base64 without padding (22 characters).
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


_LOG4J = """\
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""


class ApacheKafkaBroker:
    """One Apache Kafka node (broker and controller) on free loopback ports.

    ``data_dir`` keeps the log across runs; without it the log lives in the stack's work
    directory and goes with it. ``kill`` and ``start`` again keep the same ports and log, so
    clients reconnect to the same bootstrap address after a broker crash.
    """

    kind = "kafka"
    #: what the stack's clients use: a crashed member's partitions move within 2 s
    group_session_timeout_ms = 2000

    def __init__(self, workdir: Path, *, data_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.port = stack_process.free_loopback_port()
        self.controller_port = stack_process.free_loopback_port()
        self.data_dir = data_dir or workdir / "kafka-data"
        self.log_path = workdir / "kafka.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        config = self.workdir / "kafka-server.properties"
        values = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # One node: every internal topic with one replica, and few partitions, so the first
            # group join and the first transaction do not wait for 50 partitions to be created.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # A development broker: groups form at once instead of after 3 s of waiting.
            "group.initial.rebalance.delay.ms": "0",
            # Lets its clients take the short session timeout of the development stack.
            "group.min.session.timeout.ms": str(MIN_SESSION_TIMEOUT_MS),
            # A crashed transactional producer's open transaction is aborted within seconds, so
            # read_committed readers do not wait out a long timeout behind it.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "2000",
            "log.cleaner.backoff.ms": "1000",
            # A restart after a SIGKILL is refused registration (DUPLICATE_BROKER_REGISTRATION)
            # until the controller's session of the killed incarnation ends: 9 s by default,
            # which made such a restart take 13 s instead of 8 (measured). The heartbeats keep
            # eight chances to miss before the node would fence itself.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
        }
        config.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        return config

    def _java(self, main: str, *args: str, heap: str = HEAP) -> list[str]:
        java, _mvn = require_java_and_maven()
        libs = kafka_jars()
        log4j = self.workdir / "kafka-log4j2.properties"
        if not log4j.exists():
            log4j.write_text(_LOG4J.format(log=self.log_path))
        return [
            java,
            heap,
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _format(self, config: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return  # a kept log directory: already formatted
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The formatter is a short-lived JVM: a small heap and no optimizing JIT start it faster.
        argv = self._java(
            "kafka.tools.StorageTool",
            "format",
            # One argument: an id may start with "-", which argparse would take for an option.
            f"--cluster-id={_cluster_id()}",
            "--config",
            str(config),
            "--ignore-formatted",
            heap="-Xmx256m",
        )
        argv.insert(2, "-XX:TieredStopAtLevel=1")
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise EmbeddedStackError(
                f"formatting the Apache Kafka log directory failed:\n{done.stdout}{done.stderr}"
            )

    def start(self, timeout: float = 60.0) -> None:
        config = self._write_config()
        self._format(config)
        self.proc = stack_process.spawn(
            self._java("kafka.Kafka", str(config)),
            log_path=self.workdir / "kafka.stdout.log",
        )
        stack_process.wait_until(
            lambda: serves_metadata(self.port),
            proc=self.proc,
            what="the Apache Kafka broker",
            log_path=self.log_path,
            timeout=timeout,
        )

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; its log stays on disk."""
        if self.proc is not None:
            stack_process.kill(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            # A controlled shutdown of one node takes a few seconds; past 30 it is killed.
            stack_process.stop(self.proc, timeout=30)
            self.proc = None
