"""Service fixtures, chosen per service in this order: environment variables naming an external
service, testcontainers when a Docker engine answers, the development stack's own parts.
Session-scoped, so the suite starts each service once; every process a fixture starts is stopped
by it, also on failure.

Every test that needs a broker runs once per broker of ``--brokers`` (default: the embedded
Tansu and Apache Kafka, from its jars on Maven Central): ``pytest --brokers kafka`` runs them on
Apache Kafka alone. A broker named by ``AGENTSTREAM_BOOTSTRAP_SERVERS`` replaces both.

A test that needs a service it cannot get errors loudly; nothing is skipped for lack of one.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from agentstream.streams.runtime.settings import Settings, load_settings
from agentstream.tools.devstack.stack import Broker

#: every broker kind, in the order the suite runs them
ALL_BROKERS = ("embedded", "kafka")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--brokers",
        default=os.environ.get("AGENTSTREAM_TEST_BROKERS", ",".join(ALL_BROKERS)),
        help=(
            "comma-separated brokers the integration tests run on: embedded, kafka "
            "(default: both; or AGENTSTREAM_TEST_BROKERS)"
        ),
    )


def brokers_asked(config: pytest.Config) -> list[str]:
    if os.environ.get("AGENTSTREAM_BOOTSTRAP_SERVERS"):
        return ["configured"]
    asked = [b.strip() for b in str(config.getoption("--brokers")).split(",") if b.strip()]
    unknown = sorted(set(asked) - set(ALL_BROKERS))
    if unknown or not asked:
        raise pytest.UsageError(f"--brokers takes {', '.join(ALL_BROKERS)}; got {asked}")
    return asked


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test that reaches a broker, directly or through another fixture, runs per broker;
    # one marked ``brokers(...)`` only on those (what only one broker can show).
    if "broker_kind" not in metafunc.fixturenames:
        return
    kinds = brokers_asked(metafunc.config)
    marker = metafunc.definition.get_closest_marker("brokers")
    if marker is not None:
        # Never an empty parameter set (pytest would count a skip): the kinds not asked for are
        # deselected below instead.
        kinds = [k for k in kinds if k in marker.args] or list(marker.args)
    metafunc.parametrize("broker_kind", kinds, indirect=True, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    asked = set(brokers_asked(config))
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("broker_kind") if callspec is not None else None
        (drop if kind is not None and kind not in asked else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def broker_kind(request: pytest.FixtureRequest) -> str:
    """The broker this test runs on: ``embedded``, ``kafka`` or ``configured``."""
    kind: str = request.param
    return kind


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped with SIGTERM (a CI time limit, a closed terminal) unwinds like Ctrl-C: every
    # fixture and context manager stops the processes it started, and subprocess.run kills its
    # child, instead of leaving brokers, databases and services running.
    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def _docker_answers() -> bool:
    if os.environ.get("AGENTSTREAM_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def env_settings() -> Settings:
    return load_settings(use_dev_stack=False)


@pytest.fixture(scope="session")
def stack_workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="agentstream-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def broker(broker_kind: str, stack_workdir: Path) -> Iterator[Broker | None]:
    """The broker process this session started (None when the environment or a container
    provides the broker): tests of broker crashes kill and restart it."""
    if broker_kind == "configured" or (broker_kind == "kafka" and _docker_answers()):
        yield None
        return
    from agentstream.tools.devstack.stack import BrokerKind, make_broker

    workdir = stack_workdir / broker_kind
    workdir.mkdir()
    started = make_broker(BrokerKind(broker_kind), workdir)
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def bootstrap_servers(
    env_settings: Settings, broker_kind: str, broker: Broker | None
) -> Iterator[str]:
    if broker is not None:
        yield broker.bootstrap_servers
    elif broker_kind == "configured":
        assert env_settings.bootstrap_servers
        yield env_settings.bootstrap_servers
    else:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()


@pytest.fixture(scope="session")
def database_url(env_settings: Settings, stack_workdir: Path) -> Iterator[str]:
    if env_settings.database_url:
        yield env_settings.database_url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18", driver=None) as pg:
            yield pg.get_connection_url()
        return
    from agentstream.tools.devstack.stack_postgres import EmbeddedPostgres

    postgres = EmbeddedPostgres(stack_workdir)
    try:
        postgres.start()
        yield postgres.url
    finally:
        postgres.stop()


@pytest.fixture(scope="session")
def schema_registry_url(
    env_settings: Settings, stack_workdir: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """The registry named by the environment, else the embedded one on the session's database.

    No testcontainers step: a Confluent registry container would need the Kafka container's
    internal listener and network, and the embedded registry runs wherever the database does.
    """
    if env_settings.schema_registry_url:
        yield env_settings.schema_registry_url
        return
    from agentstream.tools.devstack.stack_registry import EmbeddedRegistry

    # Asked for only here, so a registry from the environment needs no database.
    database_url: str = request.getfixturevalue("database_url")
    registry = EmbeddedRegistry(stack_workdir, database_url)
    try:
        registry.start()
        yield registry.url
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def settings(
    env_settings: Settings,
    broker: Broker | None,
    bootstrap_servers: str,
    database_url: str,
    schema_registry_url: str,
) -> Settings:
    """Settings pointing at the session's broker, database and schema registry; with the short
    session timeout of a broker the session started (it accepts it), so groups form faster."""
    session = {"group_session_timeout_ms": broker.group_session_timeout_ms} if broker else {}
    return env_settings.model_copy(
        update={
            "bootstrap_servers": bootstrap_servers,
            "database_url": database_url,
            "schema_registry_url": schema_registry_url,
            **session,
        }
    )


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    """A projection schema of its own for one test, dropped afterwards."""
    from projection_support import drop_schemas, fresh_schema

    name = fresh_schema(database_url)
    yield name
    drop_schemas(database_url, name)
