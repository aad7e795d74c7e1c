"""Schema migrations: the ``NNNN_name.sql`` files of this package, applied in order, once.

Each file runs in its own transaction together with its row in ``schema_migrations`` (inside the
target schema, so a shadow schema built by a rebuild carries its own history). A transaction-level
advisory lock keeps two processes from migrating one schema at the same time. A file that was
applied and later edited is refused: migrations are append-only, the fix is a new file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from agentstream.projections.database import DEFAULT_SCHEMA, check_schema_name, connect
from agentstream.schemas.errors import ConfigurationError, ServiceUnavailableError
from agentstream.streams.runtime.logs import get_logger

__all__ = [
    "Migration",
    "applied_versions",
    "migrate",
    "migrations",
]

log = get_logger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def migrations() -> list[Migration]:
    """Every migration file shipped with the package, in version order."""
    found = []
    for entry in resources.files("agentstream.projections").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(match.group(1), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigurationError(f"two migrations share a version number: {versions}")
    return found


def migrate(database_url: str, schema: str = DEFAULT_SCHEMA) -> list[str]:
    """Create ``schema`` if needed and apply every pending migration; returns the files applied."""
    check_schema_name(schema)
    applied: list[str] = []
    with connect(database_url, schema) as conn:
        try:
            for migration in migrations():
                if _apply(conn, schema, migration):
                    applied.append(migration.name)
        except psycopg.OperationalError as exc:
            raise ServiceUnavailableError(f"migration of schema {schema} failed: {exc}") from exc
        if schema == DEFAULT_SCHEMA:
            _put_on_search_path(conn, schema)
    if applied:
        log.info("migrations_applied", schema=schema, files=applied)
    return applied


def _put_on_search_path(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """The read models on this user's search path in this database, so that psql and other
    tools of the user find ``runs`` and ``approvals`` unqualified, as the documented SQL writes
    them. (agentstream's own connections set their schema themselves.)"""
    try:
        row = conn.execute("SELECT current_database()").fetchone()
        database = str(row[0]) if row else ""
        conn.execute(
            sql.SQL(
                'ALTER ROLE CURRENT_USER IN DATABASE {} SET search_path = "$user", public, {}'
            ).format(sql.Identifier(database), sql.Identifier(schema))
        )
        conn.commit()
    except psycopg.Error as exc:  # a user may not change its own defaults: say so, go on
        conn.rollback()
        log.warning("search_path_not_set", schema=schema, error=str(exc))


def _apply(conn: psycopg.Connection[tuple[object, ...]], schema: str, migration: Migration) -> bool:
    with conn.transaction():
        # Keyed by schema: migrating two schemas in parallel (tests) does not serialize.
        lock_key = f"agentstream.migrate.{schema}"
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_key,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute(
            "SELECT name, checksum FROM schema_migrations WHERE version = %s", (migration.version,)
        ).fetchone()
        if row is not None:
            if row[1] != migration.checksum:
                raise ConfigurationError(
                    f"migration {row[0]} was changed after it was applied to schema {schema}",
                    hint="never edit an applied migration; add a new NNNN_*.sql file instead",
                )
            return False
        conn.execute(migration.text)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
            (migration.version, migration.name, migration.checksum),
        )
    return True


def applied_versions(database_url: str, schema: str = DEFAULT_SCHEMA) -> list[str]:
    """The versions recorded in ``schema`` (empty when it was never migrated)."""
    with connect(database_url, schema) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'schema_migrations'",
            (schema,),
        ).fetchone()
        if exists is None:
            return []
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        return [str(r[0]) for r in rows]
