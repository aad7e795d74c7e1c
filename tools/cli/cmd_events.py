"""``agentstream send`` and ``agentstream tail``: put inputs on the bus, watch any topic."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Annotated, Any

import typer
from confluent_kafka import Consumer
from pydantic import ValidationError
from rich.console import Console

from agentstream.schemas.errors import ConfigurationError
from agentstream.schemas.events import AgentInput, Event
from agentstream.streams.consumer import group_config
from agentstream.streams.producer import AgentStreamProducer, new_input
from agentstream.streams.runtime.settings import load_settings
from agentstream.streams.serde import DecodeError, EventSerde, registry_client
from agentstream.streams.topics import TOPICS

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _parse_line(number: int, line: str, tenant_id: str, kind: str | None) -> AgentInput:
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return new_input(
            str(data["agent_id"]),
            str(data["text"]),
            tenant_id=str(data.get("tenant_id", tenant_id)),
            metadata={str(k): str(v) for k, v in dict(data.get("metadata") or {}).items()},
            source="cli",
            kind=str(data["kind"]) if data.get("kind") is not None else kind,
        )
    except ValidationError as exc:
        raise ConfigurationError(f"stdin line {number}: {validation_summary(exc)}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ConfigurationError(f"stdin line {number}: {detail}") from exc


def validation_summary(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])


def send(
    text: Annotated[str | None, typer.Argument(help="The input; omit to read JSON lines.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="The agent's id.")] = None,
    tenant: Annotated[str, typer.Option(help="The agent's tenant.")] = "default",
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="key=value metadata (repeatable).")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            "-k",
            help="The agent kind (spec name) to serve a new agent; default: the processor's "
            "first. A known agent keeps its own.",
        ),
    ] = None,
) -> None:
    """Send an input to an agent, or JSON lines from stdin:
    {"agent_id": "a1", "text": "...", "tenant_id": "t", "metadata": {}, "kind": "triage"}"""
    if text is not None:
        if agent is None:
            raise ConfigurationError(
                "--agent is required with TEXT",
                hint="agentstream send --agent support-1 'Where is order o-1001?'",
            )
        pairs = [m.partition("=") for m in meta or []]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigurationError("--meta takes key=value")
        try:
            events = [
                new_input(
                    agent,
                    text,
                    tenant_id=tenant,
                    metadata={k: v for k, _, v in pairs},
                    source="cli",
                    kind=kind,
                )
            ]
        except ValidationError as exc:
            raise ConfigurationError(f"invalid input: {validation_summary(exc)}") from exc
    else:
        if sys.stdin.isatty():
            raise ConfigurationError(
                "no TEXT and nothing piped on stdin",
                hint="agentstream send --agent ID 'text', or pipe JSON lines",
            )
        lines = [(n, line) for n, line in enumerate(sys.stdin, start=1) if line.strip()]
        # All or nothing: a typo on line 900 should not leave 899 inputs sent.
        events = [_parse_line(n, line, tenant, kind) for n, line in lines]
    with AgentStreamProducer(load_settings()) as producer:
        futures = [(event, producer.send_async(event)) for event in events]
        producer.flush()
        for event, future in futures:
            where = future.result()
            out.print(
                f"sent {event.envelope.event_id} to {event.agent_id} "
                f"({where.topic}[{where.partition}]@{where.offset})"
            )


def _summary(event: Any) -> str:
    skip = {"envelope"}
    fields = {k: v for k, v in event.model_dump(mode="json").items() if k not in skip}
    text = json.dumps(fields, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def tail(
    topics: Annotated[
        list[str] | None, typer.Argument(help="Topics to follow (default: every agent topic).")
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent.")] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", "-t", help="Only this event type, e.g. RunCompleted.")
    ] = None,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest record.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after N records.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Follow topics, decoded; Ctrl-C stops."""
    settings = load_settings()
    known = {t.name for t in TOPICS}
    names = topics or [t.name for t in TOPICS]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigurationError(f"unknown topic(s) {unknown}", hint=f"choose from {sorted(known)}")
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    consumer = Consumer(
        group_config(
            settings,
            f"agentstream-tail-{uuid.uuid4()}",
            extra={"auto.offset.reset": "earliest" if from_beginning else "latest"},
        )
    )
    consumer.subscribe([settings.topic(n) for n in names])
    shown = 0
    try:
        while limit is None or shown < limit:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            try:
                record = serde.decode(msg.topic() or "", msg.value())
            except DecodeError as exc:
                err.print(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: undecodable ({exc})")
                continue
            if agent and getattr(record, "agent_id", None) != agent:
                continue
            if event_type and type(record).__name__ != event_type:
                continue
            shown += 1
            if as_json:
                print(
                    json.dumps(
                        {
                            "topic": msg.topic(),
                            "partition": msg.partition(),
                            "offset": msg.offset(),
                            "type": type(record).__name__,
                            "event": record.model_dump(mode="json"),
                        },
                        ensure_ascii=False,
                    ),
                    flush=True,
                )
            elif isinstance(record, Event):
                e = record.envelope
                out.print(
                    f"{e.occurred_at:%H:%M:%S.%f}"[:-3] + f" {msg.topic()} {e.agent_id} "
                    f"[bold]{type(record).__name__}[/bold] {_summary(record)}"
                )
            else:
                out.print(f"{msg.topic()} {type(record).__name__} {_summary(record)}")
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def register(root: typer.Typer) -> None:
    root.command("send")(send)
    root.command("tail")(tail)
