"""The Temporal worker of the bench, in a process of its own as Temporal deployments run it:
it polls the dev server for the run's workflow and activity tasks.

Run as ``python -m agentstream.tools.harness.peers.temporal_worker --target HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
from typing import Any

from agentstream.tools.harness.peers import stand_ins
from agentstream.tools.harness.peers.temporal_names import (
    MODEL_ACTIVITY,
    READY,
    TASK_QUEUE,
    TOOL_ACTIVITY,
)
from agentstream.tools.harness.peers.temporal_workflow import AgentRun, AgentRunLocal


async def _model(run_id: str, turn: int, observation: dict[str, Any] | None) -> dict[str, Any]:
    return await stand_ins.model_call(run_id, turn, observation)


async def _tool(run_id: str, call: dict[str, Any]) -> dict[str, Any]:
    return await stand_ins.tool_call(run_id, call)


async def serve(target: str) -> None:
    activity = importlib.import_module("temporalio.activity")
    client = await importlib.import_module("temporalio.client").Client.connect(target)
    worker = importlib.import_module("temporalio.worker").Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[AgentRun, AgentRunLocal],
        activities=[
            activity.defn(name=MODEL_ACTIVITY)(_model),
            activity.defn(name=TOOL_ACTIVITY)(_tool),
        ],
    )
    print(READY, flush=True)
    await worker.run()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    asyncio.run(serve(parser.parse_args().target))


if __name__ == "__main__":
    main()
