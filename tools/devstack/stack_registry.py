"""The embedded schema registry: agentstream's own Confluent-compatible registry, stored in the
stack's PostgreSQL, run as a child process on a loopback port.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from agentstream.tools.devstack import stack_process


class EmbeddedRegistry:
    """One registry server process over ``database_url``."""

    def __init__(self, workdir: Path, database_url: str, port: int = 0) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.port = port or stack_process.free_loopback_port()
        self.log_path = workdir / f"registry-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        argv = [
            sys.executable,
            "-m",
            "agentstream.tools.devstack.registry.server",
            "--database-url",
            self.database_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.proc = stack_process.spawn(argv, log_path=self.log_path)
        stack_process.wait_until(
            self._answers,
            proc=self.proc,
            what="the embedded schema registry",
            log_path=self.log_path,
            timeout=timeout,
        )

    def _answers(self) -> bool:
        # uvicorn binds only after the app's startup (tables created), so 200 means ready.
        try:
            return httpx.get(self.url + "/", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stack_process.stop(self.proc)
            self.proc = None
