"""The schema registry as a process, ``python -m agentstream.tools.devstack.registry.server
--database-url URL --host 127.0.0.1 --port N``.

One uvicorn worker is enough: registrations are rare and clients cache every answer; several
processes may share one database (the store serializes writes per subject).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import uvicorn

from agentstream.streams.runtime.logs import configure_logging, get_logger
from agentstream.tools.devstack.registry.app import create_app


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agentstream.tools.devstack.registry.server",
        description="A Confluent-compatible Avro schema registry stored in PostgreSQL.",
    )
    parser.add_argument("--database-url", required=True, help="postgresql://user@host:port/db")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    get_logger("agentstream.registry").info(
        "schema registry starting", host=args.host, port=args.port
    )
    uvicorn.run(
        create_app(args.database_url),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # Clients reconnect cheaply; no need to hold a restart for idle keep-alive sockets.
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
