"""The SQLite schema, as an ordered list of migrations, and applying them.

``PRAGMA user_version`` holds how many migrations a database file has had: migration ``n`` (1-based)
moves it from ``n - 1`` to ``n``. DDL is transactional in SQLite, so each migration and the version
bump commit together or not at all. A shipped migration is never edited: change the schema by
appending a new one. The ``conveyor_schema`` table is a human-readable log of what ran and when;
``user_version`` alone decides.

Index design (every index costs on the hot insert path, so each one earns its place):

* ``jobs_claim_queued`` — partial on ``status = 'queued'``, ordered exactly like a claim
  (``queue, priority DESC, run_at, id``): claiming ``n`` jobs reads the first ``n`` index entries.
* ``jobs_claim_scheduled`` — partial on ``status = 'scheduled'`` by ``(queue, run_at)``: the due
  ones are a range, and the earliest one (for ``wait_for_work``) is the first entry. Keeping the
  two states apart means thousands of future-scheduled jobs never slow a claim down. The due
  range is sorted by priority at each claim, so a claim costs O(due scheduled jobs) — small in
  steady state, ~17 ms per claim for a backlog of 50k overdue retries; ``priority, id`` ride along
  in the index so that sort never reads the table.
* ``jobs_status`` / ``jobs_queue`` / ``jobs_task`` — listing newest-first (``id DESC``) under one
  filter, with cursor paging on ``id``; the bare listing walks the primary key.
* ``jobs_lease`` — partial on running jobs: the expired-lease scan touches only running jobs.
* ``jobs_prune`` — partial on finished jobs by ``result_expires_at``.
* ``jobs_live_key`` — UNIQUE and partial on live states: the idempotency key is enforced by the
  engine itself, atomically with the insert, and a finished job's key is free again.
"""

from __future__ import annotations

import sqlite3
import time

from ...errors import BackendUnavailable, ConfigurationError, SchemaOutdated
from .connections import Connections, wrap

#: the columns of ``jobs``, in :class:`~conveyor.backends.base.JobRecord` field order
JOB_COLUMNS: tuple[str, ...] = (
    "id", "task", "queue", "args", "kwargs", "priority", "status", "run_at", "created_at",
    "attempts", "max_attempts", "timeout", "result_ttl", "key", "started_at", "finished_at",
    "worker_id", "lease_expires_at", "progress", "progress_message", "result",
    "result_expires_at", "cancel_requested", "errors", "history", "headers", "version",
)

_INITIAL: tuple[str, ...] = (
    """
    CREATE TABLE conveyor_schema (
        version    INTEGER PRIMARY KEY,
        name       TEXT NOT NULL,
        applied_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE jobs (
        id                TEXT NOT NULL PRIMARY KEY,
        task              TEXT NOT NULL,
        queue             TEXT NOT NULL,
        args              TEXT NOT NULL,
        kwargs            TEXT NOT NULL,
        priority          INTEGER NOT NULL,
        status            TEXT NOT NULL CHECK (status IN ('scheduled', 'queued', 'running',
                                                          'succeeded', 'failed', 'cancelled')),
        run_at            REAL NOT NULL,
        created_at        REAL NOT NULL,
        attempts          INTEGER NOT NULL,
        max_attempts      INTEGER NOT NULL,
        timeout           REAL,
        result_ttl        REAL,
        key               TEXT,
        started_at        REAL,
        finished_at       REAL,
        worker_id         TEXT,
        lease_expires_at  REAL,
        progress          REAL NOT NULL,
        progress_message  TEXT,
        result            TEXT,
        result_expires_at REAL,
        cancel_requested  INTEGER NOT NULL,
        errors            TEXT NOT NULL,
        history           TEXT NOT NULL,
        headers           TEXT NOT NULL,
        version           INTEGER NOT NULL
    )
    """,
    """
    CREATE INDEX jobs_claim_queued ON jobs (queue, priority DESC, run_at, id)
        WHERE status = 'queued'
    """,
    "CREATE INDEX jobs_claim_scheduled ON jobs (queue, run_at, priority, id)"
    " WHERE status = 'scheduled'",
    "CREATE INDEX jobs_status ON jobs (status, id)",
    "CREATE INDEX jobs_queue ON jobs (queue, id)",
    "CREATE INDEX jobs_task ON jobs (task, id)",
    "CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running'",
    """
    CREATE INDEX jobs_prune ON jobs (result_expires_at)
        WHERE status IN ('succeeded', 'failed', 'cancelled')
    """,
    """
    CREATE UNIQUE INDEX jobs_live_key ON jobs (key)
        WHERE key IS NOT NULL AND status IN ('scheduled', 'queued', 'running')
    """,
    """
    CREATE TABLE schedules (
        id         TEXT NOT NULL PRIMARY KEY,
        spec       TEXT NOT NULL,
        paused     INTEGER NOT NULL,
        last_fire  REAL,
        next_fire  REAL,
        state      TEXT NOT NULL,
        updated_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE workers (
        id         TEXT NOT NULL PRIMARY KEY,
        info       TEXT NOT NULL,
        expires_at REAL NOT NULL
    )
    """,
)

#: every migration in order, as (name, SQL statements); the position is the version it yields
MIGRATIONS: list[tuple[str, tuple[str, ...]]] = [
    ("0001_initial", _INITIAL),
]

#: the schema version this code writes and expects
SCHEMA_VERSION = len(MIGRATIONS)


def _version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _newer_schema(path: str, version: int) -> SchemaOutdated:
    return SchemaOutdated(
        f"the database {path!r} has schema version {version}, newer than this Conveyor "
        f"knows ({SCHEMA_VERSION}): upgrade Conveyor, or point it at another file",
        version=version, expected=SCHEMA_VERSION)


def migrate(connections: Connections, check_only: bool) -> list[str]:
    """Apply the pending migrations (``check_only``: only name them); their names."""
    try:
        current = _version(connections.conn())
    except sqlite3.Error as exc:
        raise wrap(exc, "read the schema version") from exc
    if current > SCHEMA_VERSION:
        raise _newer_schema(connections.path, current)
    if current == SCHEMA_VERSION or check_only:
        return [name for name, _ in MIGRATIONS[current:]]
    return connections.write("migrate the schema",
                             lambda conn: _apply(conn, connections.path))


def _apply(conn: sqlite3.Connection, path: str) -> list[str]:
    # read again under the write lock: another process may have migrated meanwhile
    start = _version(conn)
    if start > SCHEMA_VERSION:
        raise _newer_schema(path, start)
    applied = []
    for version, (name, statements) in enumerate(MIGRATIONS[start:], start + 1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO conveyor_schema (version, name, applied_at)"
                     " VALUES (?, ?, ?)", (version, name, time.time()))
        # PRAGMA takes no parameters; version is an int from enumerate
        conn.execute(f"PRAGMA user_version = {int(version)}")
        applied.append(name)
    return applied


def check(connections: Connections) -> None:
    """Raise unless the file is usable and its schema is the one this code expects."""
    path = connections.path
    try:
        conn = connections.conn()
        version = _version(conn)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise BackendUnavailable(f"SQLite database {path!r} is not usable: {exc}"
                                 ) from exc
    except ConfigurationError as exc:
        raise BackendUnavailable(str(exc)) from exc
    if version > SCHEMA_VERSION:
        raise _newer_schema(path, version)
    if version < SCHEMA_VERSION:
        pending = ", ".join(name for name, _ in MIGRATIONS[version:])
        raise SchemaOutdated(
            f"the database {path!r} has schema version {version}, this Conveyor needs "
            f"{SCHEMA_VERSION}: run `conveyor migrate` (pending: {pending})",
            version=version, expected=SCHEMA_VERSION)
