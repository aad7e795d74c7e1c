"""The run as Temporal workflows: three activities, each result recorded in the workflow's
history before the next is scheduled (``AgentRun``); or three local activities, run by the
worker inside one workflow task and recorded as markers when that task completes
(``AgentRunLocal``: fewer round trips, but a step is durable only once the task completes).

Temporal's sandbox re-imports this module and takes the classes by name, so they are marked as
workflows when the module is imported (where temporalio is installed), by calls rather than
decorators: decorators would need temporalio to type-check the project. Only the worker imports
this module.
"""

from __future__ import annotations

import importlib
import importlib.util
from datetime import timedelta
from typing import Any

from agentstream.tools.harness.peers.temporal_names import (
    LOCAL_WORKFLOW,
    MODEL_ACTIVITY,
    TOOL_ACTIVITY,
    WORKFLOW,
)

STEP_TIMEOUT = timedelta(seconds=60)


async def _steps(run_id: str, execute: Any) -> dict[str, Any]:
    first = await execute(
        MODEL_ACTIVITY, args=[run_id, 1, None], start_to_close_timeout=STEP_TIMEOUT
    )
    observation = await execute(
        TOOL_ACTIVITY, args=[run_id, first["tool_call"]], start_to_close_timeout=STEP_TIMEOUT
    )
    final: dict[str, Any] = await execute(
        MODEL_ACTIVITY, args=[run_id, 2, observation], start_to_close_timeout=STEP_TIMEOUT
    )
    return final


class AgentRun:
    async def run(self, run_id: str) -> dict[str, Any]:
        workflow = importlib.import_module("temporalio.workflow")
        return await _steps(run_id, workflow.execute_activity)


class AgentRunLocal:
    async def run(self, run_id: str) -> dict[str, Any]:
        workflow = importlib.import_module("temporalio.workflow")
        return await _steps(run_id, workflow.execute_local_activity)


if importlib.util.find_spec("temporalio") is not None:
    _workflow = importlib.import_module("temporalio.workflow")
    AgentRun.run = _workflow.run(AgentRun.run)  # type: ignore[method-assign]
    _workflow.defn(name=WORKFLOW)(AgentRun)
    AgentRunLocal.run = _workflow.run(AgentRunLocal.run)  # type: ignore[method-assign]
    _workflow.defn(name=LOCAL_WORKFLOW)(AgentRunLocal)
