"""The run as a Restate service, served by hypercorn in a process of its own: Restate drives
its handler over HTTP/2 and journals each ``ctx.run`` step before the handler goes on.

Run as ``python -m agentstream.tools.harness.peers.restate_service --port N``; stop it with
SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
from types import FrameType
from typing import Any

from agentstream.tools.harness.peers import stand_ins

SERVICE = "AgentRun"
HANDLER = "run"


async def _run(ctx: Any, run_id: str) -> dict[str, Any]:
    options = importlib.import_module("restate").RunOptions()
    first = await ctx.run_typed("model_1", stand_ins.model_call, options, run_id, 1, None)
    observation = await ctx.run_typed(
        "tool", stand_ins.tool_call, options, run_id, first["tool_call"]
    )
    final: dict[str, Any] = await ctx.run_typed(
        "model_2", stand_ins.model_call, options, run_id, 2, observation
    )
    return final


def build_app() -> Any:
    restate = importlib.import_module("restate")
    service = restate.Service(SERVICE)
    service.handler(name=HANDLER)(_run)
    return restate.app([service])


async def _serve(port: int) -> None:
    config = importlib.import_module("hypercorn.config").Config()
    config.bind = [f"127.0.0.1:{port}"]
    # Restate multiplexes every invocation on one HTTP/2 connection; hypercorn's default cap on
    # streams per connection would queue runs behind each other.
    config.h2_max_concurrent_streams = 2**31 - 1
    serve = importlib.import_module("hypercorn.asyncio").serve
    forever = asyncio.Event()
    await serve(build_app(), config, shutdown_trigger=forever.wait)


def _exit_now(_signum: int, _frame: FrameType | None) -> None:
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The endpoint holds no state (Restate journals it all), so SIGINT ends it at once. The
    # SDK takes SIGTERM for its own graceful drain, which waits up to two minutes on the
    # server's HTTP/2 connection even after the server is gone.
    signal.signal(signal.SIGINT, _exit_now)
    asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
