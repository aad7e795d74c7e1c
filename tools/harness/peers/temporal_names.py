"""The names the Temporal driver, its worker and its workflow agree on; importing this module
imports nothing of Temporal."""

from __future__ import annotations

WORKFLOW = "AgentRun"
LOCAL_WORKFLOW = "AgentRunLocal"
MODEL_ACTIVITY = "bench_model"
TOOL_ACTIVITY = "bench_tool"
TASK_QUEUE = "agentstream-bench"
#: The worker prints this once it polls, so the driver knows when to submit.
READY = "temporal worker polling"
