"""The PostgreSQL schema: the migrations shipped in ``migrations/``, which of them a schema
still lacks, and applying those under an advisory lock.

``migrations/NNNN_name.sql`` are applied in order, each in its own transaction, and recorded
in ``conveyor_migrations``; ``migrations/schema.sql`` is the whole current schema in one
script, which an empty schema gets at once instead of the replay (a test proves the two equal).
"""

from __future__ import annotations

import hashlib
import logging
import re
from importlib import resources
from typing import Any

import psycopg

from .queries import Queries

log = logging.getLogger("conveyor.backends.postgres")

_MIGRATION_NAME = re.compile(r"^(\d{4})_\w+\.sql$")


def _migration_files() -> Any:
    return resources.files("conveyor.backends.postgres").joinpath("migrations")


def migrations() -> list[tuple[str, str]]:
    """Every migration shipped with this version, ``(name, sql)`` in order."""
    folder = _migration_files()
    names = sorted(p.name for p in folder.iterdir() if _MIGRATION_NAME.match(p.name))
    return [(n.removesuffix(".sql"), folder.joinpath(n).read_text("utf-8")) for n in names]


def schema_snapshot() -> str:
    """The whole current schema in one script: what replaying every migration builds."""
    text: str = _migration_files().joinpath("schema.sql").read_text("utf-8")
    return text


class Migrator:
    """Migrations of one schema, over a connection the caller opened (in autocommit)."""

    def __init__(self, schema: str, queries: Queries) -> None:
        self.schema = schema
        self._q = queries

    def applied(self, conn: psycopg.Connection[Any]) -> set[str]:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                              [self._q.migrations]).fetchone()
        if not exists or not exists[0]:
            return set()
        return {r[0] for r in conn.execute(f"SELECT name FROM {self._q.migrations}")}

    def pending(self, conn: psycopg.Connection[Any]) -> list[str]:
        applied = self.applied(conn)
        return [name for name, _ in migrations() if name not in applied]

    def apply(self, conn: psycopg.Connection[Any], snapshot: bool = True) -> list[str]:
        """Apply the pending migrations; their names. ``snapshot``: an empty schema gets
        ``schema.sql`` at once rather than the replay."""
        # a session lock: a second migrating process waits here, then finds nothing to do
        digest = hashlib.blake2b(f"conveyor-migrate:{self.schema}".encode(), digest_size=8)
        key = int.from_bytes(digest.digest(), "big", signed=True)
        conn.execute("SELECT pg_advisory_lock(%s)", [key])
        try:
            return self._apply_pending(conn, snapshot)
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", [key])
            except psycopg.Error:
                pass  # the connection died: the server released the lock with the session

    def _apply_pending(self, conn: psycopg.Connection[Any], snapshot: bool) -> list[str]:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._q.schema}")
        conn.execute(f"""CREATE TABLE IF NOT EXISTS {self._q.migrations} (
            name text COLLATE "C" PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now())""")
        applied = self.applied(conn)
        pending = [(n, text) for n, text in migrations() if n not in applied]
        fresh = not applied and conn.execute(
            "SELECT to_regclass(%s) IS NULL", [self._q.jobs]).fetchone() == (True,)
        if pending and fresh and snapshot:
            # an empty schema gets the snapshot at once (a test proves it equals the replay)
            self._run_script(conn, schema_snapshot(), [n for n, _ in pending])
        else:
            for name, text in pending:
                self._run_script(conn, text, [name])
        if pending:
            log.info("applied PostgreSQL migrations to schema %s: %s", self.schema,
                     ", ".join(n for n, _ in pending))
        return [n for n, _ in pending]

    def _run_script(self, conn: psycopg.Connection[Any], text: str, names: list[str]) -> None:
        """Run ``text`` in the schema and record it as the migrations ``names``, in one
        transaction."""
        record = f"INSERT INTO {self._q.migrations} (name) VALUES (%s)"
        with conn.transaction():
            conn.execute(f"SET LOCAL search_path TO {self._q.schema}")
            conn.execute(text)
            conn.cursor().executemany(record, [(n,) for n in names])
