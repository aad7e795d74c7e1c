from __future__ import annotations

from pathlib import Path

import pytest

from agentstream.schemas.errors import AgentStreamError, ConfigurationError
from agentstream.streams.runtime.settings import (
    DevStackRecord,
    Settings,
    clear_dev_stack,
    dev_stack_file,
    load_settings,
    read_dev_stack,
    write_dev_stack,
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("BOOTSTRAP_SERVERS", "DATABASE_URL", "SCHEMA_REGISTRY_URL", "SECURITY_PROTOCOL"):
        monkeypatch.delenv(f"AGENTSTREAM_{var}", raising=False)
    monkeypatch.setenv("AGENTSTREAM_HOME", str(tmp_path))


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_BOOTSTRAP_SERVERS", " k1:9092 , k2:9093 ")
    monkeypatch.setenv("AGENTSTREAM_DATABASE_URL", "postgresql://u@db:5432/x")
    monkeypatch.setenv("AGENTSTREAM_SCHEMA_REGISTRY_URL", "http://sr:8081/")
    settings = load_settings()
    assert settings.bootstrap_servers == "k1:9092,k2:9093"
    assert settings.database_url == "postgresql://u@db:5432/x"
    assert settings.schema_registry_url == "http://sr:8081"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("BOOTSTRAP_SERVERS", "no-port-here"),
        ("DATABASE_URL", "mysql://nope"),
        ("SCHEMA_REGISTRY_URL", "ftp://x"),
        ("SECURITY_PROTOCOL", "CARRIER_PIGEON"),
    ],
)
def test_malformed_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(f"AGENTSTREAM_{var}", value)
    with pytest.raises(ConfigurationError, match=f"AGENTSTREAM_{var}"):
        load_settings()


def test_missing_setting_says_what_to_do() -> None:
    settings = load_settings()
    with pytest.raises(ConfigurationError) as caught:
        settings.require_bootstrap_servers()
    assert isinstance(caught.value, AgentStreamError)
    assert caught.value.hint is not None
    assert "AGENTSTREAM_BOOTSTRAP_SERVERS" in caught.value.hint
    assert "agentstream dev up" in caught.value.hint


def test_security_settings_pass_through_to_kafka_clients() -> None:
    settings = Settings(
        bootstrap_servers="b:9092",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password="s3cret",  # type: ignore[arg-type]
        ssl_ca_location=Path("/etc/ca.pem"),
    )
    config = settings.kafka_config()
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "alice"
    assert config["sasl.password"] == "s3cret"
    assert config["ssl.ca.location"] == "/etc/ca.pem"
    assert "ssl.key.location" not in config
    assert "s3cret" not in repr(settings)


def test_services_started_for_a_run_get_the_same_kafka_security(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentstream.tools.devstack.services import service_environment

    settings = Settings(
        bootstrap_servers="b:9092",
        schema_registry_url="http://r:8081",
        database_url="postgresql://u@d/agentstream",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="alice",
        sasl_password="s3cret",  # type: ignore[arg-type]
        ssl_ca_location=Path("/etc/ca.pem"),
    )
    for name, value in service_environment(settings).items():
        monkeypatch.setenv(name, value)
    child = load_settings(use_dev_stack=False)
    assert child.kafka_config() == settings.kafka_config()
    assert child.database_url == settings.database_url


def test_running_dev_stack_fills_unset_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    write_dev_stack(
        DevStackRecord(
            pid=os.getpid(), bootstrap_servers="127.0.0.1:1", database_url="postgresql://x@h/d"
        )
    )
    monkeypatch.setenv("AGENTSTREAM_DATABASE_URL", "postgresql://mine@h/d")
    settings = load_settings()
    assert settings.bootstrap_servers == "127.0.0.1:1"
    assert settings.database_url == "postgresql://mine@h/d"  # the environment wins
    assert load_settings(use_dev_stack=False).bootstrap_servers is None


def test_dead_dev_stack_is_ignored_and_only_its_owner_clears_it() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(done.stdout)
    write_dev_stack(
        DevStackRecord(pid=dead_pid, bootstrap_servers="127.0.0.1:1", database_url="postgresql://x")
    )
    assert read_dev_stack() is None
    assert load_settings().bootstrap_servers is None
    clear_dev_stack(dead_pid + 1)
    assert dev_stack_file().exists()
    clear_dev_stack(dead_pid)
    assert not dev_stack_file().exists()
