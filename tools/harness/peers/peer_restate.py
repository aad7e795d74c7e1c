"""Restate: the native server from the npm package (its journal in RocksDB, WAL fsync on as it
ships) calling the Python service endpoint in a hypercorn process; runs are submitted to the
server's HTTP ingress and answered when the handler ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from agentstream.tools.devstack import stack_process
from agentstream.tools.harness.peers import binaries
from agentstream.tools.harness.peers.base import (
    PeerError,
    dist_version,
    missing_distributions,
    not_installed,
)
from agentstream.tools.harness.peers.restate_service import HANDLER, SERVICE

INSTALL = (
    "pip install restate-sdk hypercorn; npm install -g @restatedev/restate-server "
    f"(or name the binary in {binaries.RESTATE_ENV})"
)
#: Runs are multiplexed over HTTP/2 (as Temporal's client does over gRPC): at high loads a
#: connection per run in flight costs both sides more than the runs themselves.
MAX_CONNECTIONS = 64


class RestatePeer:
    name = "restate"

    def __init__(self) -> None:
        self._server: subprocess.Popen[bytes] | None = None
        self._endpoint: subprocess.Popen[bytes] | None = None
        self._client: httpx.AsyncClient | None = None
        self._server_version = "?"

    def version(self) -> str:
        return f"restate-server {self._server_version}, restate-sdk {dist_version('restate-sdk')}"

    def available(self) -> str | None:
        missing = missing_distributions("restate-sdk", "hypercorn", "h2")
        if binaries.restate_server() is None:
            missing.append("the restate-server binary")
        return not_installed(missing, INSTALL) if missing else None

    async def start(self, workdir: Path) -> None:
        binary = binaries.restate_server()
        if binary is None:
            raise PeerError("restate-server not found", hint=INSTALL)
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, check=False
        )
        self._server_version = done.stdout.strip().rpartition(" ")[2] or "?"
        ingress, admin, node, endpoint = (stack_process.free_loopback_port() for _ in range(4))
        env = {
            **os.environ,
            "RESTATE_INGRESS__BIND_ADDRESS": f"127.0.0.1:{ingress}",
            "RESTATE_ADMIN__BIND_ADDRESS": f"127.0.0.1:{admin}",
            "RESTATE_BIND_ADDRESS": f"127.0.0.1:{node}",
            "RESTATE_ADVERTISED_ADDRESS": f"http://127.0.0.1:{node}/",
            # Its per-request logging at the default level costs CPU the other peers do not pay.
            "RESTATE_LOG_FILTER": "warn",
        }
        argv = [
            str(binary),
            "--no-logo",
            "--listen-mode",
            "tcp",
            "--node-name",
            "bench",
            "--base-dir",
            str(workdir / "restate-data"),
        ]
        server_log = workdir / "restate-server.log"
        self._server = stack_process.spawn(argv, log_path=server_log, env=env)
        endpoint_argv = [
            sys.executable,
            "-m",
            "agentstream.tools.harness.peers.restate_service",
            "--port",
            str(endpoint),
        ]
        endpoint_log = workdir / "restate-endpoint.log"
        self._endpoint = stack_process.spawn(
            endpoint_argv, log_path=endpoint_log, death_signal=signal.SIGINT
        )
        admin_url = f"http://127.0.0.1:{admin}"
        stack_process.wait_until(
            lambda: _answers(f"{admin_url}/health"),
            proc=self._server,
            what="restate-server",
            log_path=server_log,
            timeout=60,
        )
        stack_process.wait_until(
            lambda: _listens(endpoint),
            proc=self._endpoint,
            what="the Restate service endpoint",
            log_path=endpoint_log,
            timeout=60,
        )
        _register(admin_url, f"http://127.0.0.1:{endpoint}", server_log)
        self._client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ingress}",
            http1=False,
            http2=True,
            timeout=httpx.Timeout(60.0),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
        )

    async def submit(self, run_id: str) -> Any:
        if self._client is None:
            raise PeerError("restate is not started")
        # The run id as idempotency key, as an agent runtime would use it: a retried submit
        # gets the recorded run's result instead of starting another.
        response = await self._client.post(
            f"/{SERVICE}/{HANDLER}", json=run_id, headers={"idempotency-key": run_id}
        )
        response.raise_for_status()
        return response.json()

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._server is not None:
            stack_process.stop(self._server, timeout=20)
        if self._endpoint is not None:
            stack_process.stop(self._endpoint, sig=signal.SIGINT, timeout=20)
        self._endpoint = self._server = None

    def pids(self) -> list[int]:
        return [proc.pid for proc in (self._server, self._endpoint) if proc is not None]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == httpx.codes.OK
    except httpx.HTTPError:
        return False


def _listens(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def _register(admin_url: str, endpoint_url: str, log_path: Path) -> None:
    """Tell the server where the service is; it answers once it has discovered the handlers."""
    deadline = time.monotonic() + 30
    while True:
        try:
            response = httpx.post(
                f"{admin_url}/deployments", json={"uri": endpoint_url}, timeout=10
            )
            if response.is_success:
                return
            problem = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            problem = str(exc)
        if time.monotonic() > deadline:
            raise PeerError(
                f"restate did not register the service endpoint: {problem}\n"
                f"{stack_process.log_tail(log_path)}"
            )
        time.sleep(0.2)
