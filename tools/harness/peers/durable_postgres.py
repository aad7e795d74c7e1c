"""The embedded PostgreSQL of the test suite, run durable: the peers that keep their state in
PostgreSQL are measured as their users deploy them, with every commit flushed to disk."""

from __future__ import annotations

import psycopg

from agentstream.tools.devstack import stack_postgres
from agentstream.tools.devstack.stack_postgres import EmbeddedPostgres
from agentstream.tools.harness.peers.base import PeerError

#: Over the development settings, which trade an OS crash's safety for commit latency.
DURABLE_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}


class DurablePostgres(EmbeddedPostgres):
    """An :class:`EmbeddedPostgres` whose commits wait for the disk."""

    def start(self, timeout: float = 30.0) -> None:
        # The server reads its settings from this module-level table when it starts; it is
        # swapped only for the duration of our own start, on the one thread that starts peers.
        saved = dict(stack_postgres.SERVER_SETTINGS)
        stack_postgres.SERVER_SETTINGS.update(DURABLE_SETTINGS)
        try:
            super().start(timeout)
        finally:
            stack_postgres.SERVER_SETTINGS.clear()
            stack_postgres.SERVER_SETTINGS.update(saved)
        shown = self.settings_in_force()
        if any(shown[name] != value for name, value in DURABLE_SETTINGS.items()):
            raise PeerError(f"PostgreSQL did not start durable: {shown}")

    def settings_in_force(self) -> dict[str, str]:
        with psycopg.connect(self.url) as conn:
            out = {}
            for name in DURABLE_SETTINGS:
                row = conn.execute(f"SHOW {name}").fetchone()
                out[name] = str(row[0]) if row else ""
            return out

    def server_version(self) -> str:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "unknown"
