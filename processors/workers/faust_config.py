"""A Faust app for agentstream's workers, configured from the shared Settings.

Measured on the embedded broker (Tansu): aiokafka's ``InitProducerId`` fails, so the producer
runs without idempotence and without ``exactly_once`` (workers are at-least-once with
idempotency keys anyway); a consumer group's join takes half the session timeout, which the
settings keep short where the broker allows. Values stay bytes (the ``raw`` codec): the Avro
serde decodes them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

import faust

from agentstream.processors.workers.faust_transport import Transport
from agentstream.schemas.errors import ConfigurationError
from agentstream.streams.consumer import heartbeat_interval_ms
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.settings import Settings

__all__ = [
    "broker_credentials",
    "broker_urls",
    "idempotence_granted",
    "quiet_faust_logging",
    "worker_app",
]

log = get_logger(__name__)


def broker_urls(settings: Settings) -> list[str]:
    return [f"kafka://{server}" for server in settings.require_bootstrap_servers().split(",")]


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(settings.ssl_ca_location) if settings.ssl_ca_location else None
    )
    if settings.ssl_certificate_location and settings.ssl_key_location:
        password = (
            settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
        )
        context.load_cert_chain(
            str(settings.ssl_certificate_location), str(settings.ssl_key_location), password
        )
    return context


def broker_credentials(settings: Settings) -> Any:
    """Faust's credentials object for the configured security protocol (None for PLAINTEXT)."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(_ssl_context(settings))
    mechanism = settings.sasl_mechanism or "PLAIN"
    if mechanism == "OAUTHBEARER":
        raise ConfigurationError(
            "the Faust workers do not support SASL OAUTHBEARER",
            hint="use PLAIN or SCRAM credentials for the workers",
        )
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    return faust.SASLCredentials(
        username=settings.sasl_username or "",
        password=password,
        mechanism=mechanism,
        ssl_context=_ssl_context(settings) if protocol == "SASL_SSL" else None,
    )


def quiet_faust_logging(level: int = logging.WARNING) -> None:
    """Faust, mode and aiokafka log through the standard library; keep only their warnings
    (our own lines go through structlog)."""
    for name in ("faust", "mode", "aiokafka"):
        logging.getLogger(name).setLevel(level)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _data_root() -> Path:
    # Faust makes only the last level of the directory (no parents) and hangs if that fails.
    root = Path(tempfile.gettempdir()) / f"agentstream-faust-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    return root


async def idempotence_granted(settings: Settings, timeout_s: float = 10.0) -> bool:
    """Whether the broker gives aiokafka a producer id. Apache Kafka does; the embedded broker
    answers aiokafka's ``InitProducerId`` with an error (within milliseconds), and an idempotent
    aiokafka producer would then never deliver anything."""
    from aiokafka import AIOKafkaProducer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.require_bootstrap_servers().split(","),
        enable_idempotence=True,
        **credentials_to_aiokafka_auth(broker_credentials(settings)),
    )
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        # aiokafka asks for the producer id only before its first send; ask now, so a
        # refusal is known before the worker takes any call.
        await asyncio.wait_for(producer._sender._maybe_wait_for_pid(), timeout_s)
    except Exception as exc:  # any refusal or timeout means: run without idempotence
        log.info("producer_idempotence", enabled=False, reason=f"{type(exc).__name__}: {exc}")
        return False
    finally:
        await producer.stop()
    return True


def worker_app(
    settings: Settings,
    app_id: str,
    *,
    instance_id: str | None = None,
    idempotent: bool = False,
    **overrides: Any,
) -> Any:
    """A Faust app without web server, tables or topic declaration (``topics ensure`` owns the
    topics and their configuration). Its consumers read committed records only when the
    processor writes in transactions; ``idempotent`` (see :func:`idempotence_granted`) makes
    its producer idempotent."""
    options: dict[str, Any] = {
        "broker": broker_urls(settings),
        "broker_credentials": broker_credentials(settings),
        "broker_client_id": f"{settings.client_id}-{app_id}",
        "broker_session_timeout": settings.group_session_timeout_ms / 1000,
        "broker_heartbeat_interval": heartbeat_interval_ms(settings) / 1000,
        "broker_commit_interval": 1.0,
        "broker_commit_every": 100,
        "consumer_auto_offset_reset": "earliest",
        "consumer_group_instance_id": instance_id,
        "producer_acks": -1,
        "processing_guarantee": "at_least_once",
        "key_serializer": "raw",
        "value_serializer": "raw",
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        # A rebalance must not wait for slow tool calls; unfinished records are redelivered
        # to the new owner and their results deduped by event id.
        "stream_wait_empty": False,
        "web_enabled": False,
        "table_standby_replicas": 0,
        # Faust creates its data directory even without tables; by default in the current
        # directory, which would litter wherever a user runs `agentstream demo`.
        "datadir": str(_data_root() / "{conf.name}-data"),
    }
    options.update(overrides)
    app = faust.App(app_id, **options)
    # Before anything touches app.transport (app.topic does), so every consumer is ours.
    app.transport = Transport(
        app.conf.broker_consumer,
        app,
        fetch_wait_ms=settings.fetch_wait_ms,
        read_committed=settings.processor_transactions,
        idempotent=idempotent,
    )
    return app
