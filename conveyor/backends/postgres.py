"""``postgresql://`` / ``postgres://``: jobs in PostgreSQL tables, shared by any number of workers.

``postgresql://user:pass@host:5432/app?schema=conveyor&auto_migrate=1`` — every table lives in
``schema`` (default ``conveyor``); the query options Conveyor understands (see
:data:`OPTIONS`) are removed before the URL reaches libpq, the rest (``sslmode`` ...) pass through.

How the protocol maps onto PostgreSQL:

* One row per job; each protocol method is one SQL statement in autocommit (plus a lookup
  when an enqueue meets a taken key or id), or one explicit transaction where several
  statements must agree (``claim_fire``). Batch operations (enqueue, claim, finish,
  extend_leases) send arrays and touch every row in one statement, so a commit — not Python, not
  round trips — is the unit of cost.
* Claims walk a partial index in claim order under ``FOR UPDATE SKIP LOCKED``: concurrent
  claimers skip each other's rows instead of queueing behind them.
* Idempotency keys are a partial unique index over live jobs; enqueue is
  ``INSERT ... ON CONFLICT DO NOTHING`` and only then looks up the job holding the key.
* Wake-ups: statements that make work available ``pg_notify`` the schema's *work* channel with
  the queue name; statements that change a job notify its *changes* channel with the job id. One
  background thread per backend holds a dedicated ``LISTEN`` connection (it listens to changes
  only once someone waits for one). When that connection is down, waits fall back to polling
  every ``poll_interval`` and the thread reconnects with backoff, so a lost notification costs at
  most one poll interval.
* Connection loss: a failed statement is retried (bounded, with backoff) on a fresh pooled
  connection, then raised as ``BackendUnavailable``.
* Transactional enqueue: :meth:`PostgresBackend.enqueue_in` writes jobs through the caller's own
  connection, inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import select
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from ..errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InvalidTransition,
    JobNotFound,
    SchemaOutdated,
)
from .base import (
    FINISHED,
    LIVE,
    AttemptError,
    JobFilter,
    JobRecord,
    LeaseState,
    Outcome,
    Page,
    ScheduleRecord,
    Transition,
    WorkerInfo,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# -- options -----------------------------------------------------------------------------------


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _optional_int(value: Any) -> int | None:
    return None if value is None or str(value).lower() in ("none", "null", "") else int(value)


#: option name -> (converter, default); each may be given as a keyword or in the URL query
OPTIONS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "schema": (str, "conveyor"),
    # apply pending migrations when the backend opens (off: production runs `conveyor migrate`)
    "auto_migrate": (_flag, False),
    "pool_min_size": (int, 1),
    "pool_max_size": (int, 10),
    # seconds to wait for a pooled connection before giving up
    "pool_timeout": (float, 5.0),
    # how often waits re-check the database while the LISTEN connection is down
    "poll_interval": (float, 1.0),
    # how many times a statement is retried after a connection failure
    "retries": (int, 3),
    # psycopg's server-side prepare threshold; None behind PgBouncer in transaction mode
    "prepare_threshold": (_optional_int, 5),
}


@dataclass(frozen=True)
class _Settings:
    dsn: str
    schema: str
    auto_migrate: bool
    pool_min_size: int
    pool_max_size: int
    pool_timeout: float
    poll_interval: float
    retries: int
    prepare_threshold: int | None


def _settings(url: str, options: dict[str, Any]) -> _Settings:
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ConfigurationError(f"unknown PostgreSQL backend option(s): {sorted(unknown)}")
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {k: v for k, v in query if k in OPTIONS}
    given.update(options)
    passthrough = urlencode([(k, v) for k, v in query if k not in OPTIONS])
    values: dict[str, Any] = {}
    for name, (convert, default) in OPTIONS.items():
        try:
            values[name] = convert(given[name]) if name in given else default
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"bad PostgreSQL option {name}={given[name]!r}: {exc}")
    if not values["schema"]:
        raise ConfigurationError("the PostgreSQL schema name must not be empty")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, passthrough, parts.fragment))
    return _Settings(dsn=dsn, **values)


# -- the job row -------------------------------------------------------------------------------

#: table columns, in JobRecord's field order so a row is ``JobRecord(*row)``
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(JobRecord))
_JSON_COLUMNS = frozenset({"errors", "history", "headers"})
_ARRAY_TYPES = {"priority": "int4", "attempts": "int4", "max_attempts": "int4",
                "version": "int8", "cancel_requested": "bool",
                **{c: "float8" for c in ("run_at", "created_at", "timeout", "result_ttl",
                                         "started_at", "finished_at", "lease_expires_at",
                                         "progress", "result_expires_at")}}
_SELECT = ", ".join(COLUMNS)
_FINISHED_SQL = "('succeeded', 'failed', 'cancelled')"
_LIVE_SQL = "('scheduled', 'queued', 'running')"
assert {"succeeded", "failed", "cancelled"} == FINISHED
assert {"scheduled", "queued", "running"} == LIVE


def _loads(value: Any) -> Any:
    # a caller's connection (Django registers a text loader for jsonb) may hand back raw text
    return json.loads(value) if isinstance(value, str | bytes) else value


def _job(row: Sequence[Any]) -> JobRecord:
    job = JobRecord(*row[:len(COLUMNS)])
    job.errors = [AttemptError(**e) for e in _loads(job.errors)]
    job.history = [Transition(**h) for h in _loads(job.history)]
    job.headers = _loads(job.headers)
    return job


def _clean(text: str) -> str:
    # jsonb and text both refuse NUL; a traceback is still worth keeping without it
    return text.replace("\x00", "\ufffd")


def _error_json(errors: Iterable[AttemptError]) -> str:
    return json.dumps([{**asdict(e), "type": _clean(e.type), "message": _clean(e.message),
                        "traceback": _clean(e.traceback)} for e in errors])


def _entry(status: str, at: float) -> str:
    """A one-transition history array, as jsonb text (json.dumps keeps the float exact)."""
    return json.dumps([{"status": status, "at": at}])


def _history_json(history: Sequence[Transition]) -> str:
    if not history:
        return "[]"
    return json.dumps([{"status": t.status, "at": t.at} for t in history])


def _job_arrays(jobs: Sequence[JobRecord]) -> dict[str, list[Any]]:
    """One array per column. Values are coerced to one Python type per array (an int
    ``timeout`` becomes a float) because binary array dumping refuses mixed types."""
    arrays: dict[str, list[Any]] = {}
    for name in COLUMNS:
        if name == "errors":
            arrays[name] = [_error_json(j.errors) if j.errors else "[]" for j in jobs]
        elif name == "history":
            arrays[name] = [_history_json(j.history) for j in jobs]
        elif name == "headers":
            arrays[name] = [json.dumps({_clean(k): _clean(v) for k, v in j.headers.items()})
                            if j.headers else "{}" for j in jobs]
        elif _ARRAY_TYPES.get(name) == "float8":
            values = [getattr(j, name) for j in jobs]
            arrays[name] = [None if v is None else float(v) for v in values]
        elif name == "cancel_requested":
            arrays[name] = [bool(j.cancel_requested) for j in jobs]
        else:
            arrays[name] = [getattr(j, name) for j in jobs]
    return arrays


# -- SQL ---------------------------------------------------------------------------------------


class _Queries:
    """Every statement, rendered once per schema so psycopg can prepare and reuse them."""

    def __init__(self, schema: str) -> None:
        quoted = sql.Identifier(schema).as_string(None)
        self.schema = quoted
        self.jobs = f"{quoted}.conveyor_jobs"
        self.schedules = f"{quoted}.conveyor_schedules"
        self.workers = f"{quoted}.conveyor_workers"
        self.migrations = f"{quoted}.conveyor_migrations"
        jobs = self.jobs

        def insert(placeholder: str) -> str:
            unnest = ", ".join(f"%({c}){placeholder}::{_ARRAY_TYPES.get(c, 'text')}[]"
                               for c in COLUMNS)
            picked = ", ".join(f"u.{c}::jsonb" if c in _JSON_COLUMNS else f"u.{c}"
                               for c in COLUMNS)
            # ON CONFLICT without a target covers the live-key index *and* the primary key;
            # which one refused a row is sorted out afterwards by `lookup` (conflicts only)
            return f"""
                WITH ins AS (
                    INSERT INTO {jobs} ({_SELECT})
                    SELECT {picked} FROM unnest({unnest}) AS u({_SELECT})
                    ON CONFLICT DO NOTHING
                    RETURNING id, queue
                )
                SELECT id, pg_notify(%(work)s, queue)::text FROM ins"""

        # binary arrays dump several times faster than text ones (no per-element quoting);
        # the portable %s form is for callers' connections (psycopg2, client-side binding)
        self.insert_binary = insert("b")
        self.insert = insert("s")
        self.lookup = f"""
            SELECT {_SELECT} FROM {jobs} WHERE id = ANY(%(ids)s::text[])
            UNION ALL
            SELECT {_SELECT} FROM {jobs}
            WHERE key = ANY(%(keys)s::text[]) AND status IN {_LIVE_SQL}"""
        self.get = f"SELECT {_SELECT} FROM {jobs} WHERE id = %(id)s"
        returning = ", ".join(f"j.{c}" for c in COLUMNS)

        # one queue at a time in the given order, each walked along conveyor_jobs_claim; a
        # MATERIALIZED CTE guarantees the SKIP LOCKED pick runs exactly once
        self.claim = f"""
            WITH picked AS MATERIALIZED (
                SELECT c.id
                FROM unnest(%(queues)s::text[]) WITH ORDINALITY AS q(name, ord)
                CROSS JOIN LATERAL (
                    SELECT j.id, j.priority, j.run_at FROM {jobs} AS j
                    WHERE j.queue = q.name AND j.status IN ('queued', 'scheduled')
                      AND (j.status = 'queued' OR j.run_at <= %(now)s)
                    ORDER BY j.priority DESC, j.run_at, j.id
                    LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED
                ) AS c
                ORDER BY q.ord, c.priority DESC, c.run_at, c.id
                LIMIT %(limit)s
            ), claimed AS (
                UPDATE {jobs} AS j SET
                    status = 'running', attempts = j.attempts + 1, started_at = %(now)s,
                    worker_id = %(worker)s, lease_expires_at = %(until)s,
                    history = j.history || %(entry)s::jsonb, version = j.version + 1
                FROM picked WHERE j.id = picked.id
                RETURNING {returning}
            )
            SELECT claimed.*, pg_notify(%(changes)s, claimed.id)::text FROM claimed"""
        self.extend = f"""
            UPDATE {jobs} AS j SET lease_expires_at = %(until)s
            FROM unnest(%(ids)s::text[], %(attempts)s::int4[]) AS l(id, attempt)
            WHERE j.id = l.id AND j.status = 'running' AND j.attempts = l.attempt
            RETURNING j.id, j.cancel_requested"""
        self.progress = f"""
            WITH u AS (
                UPDATE {jobs} SET progress = %(percent)s, progress_message = %(message)s,
                    version = version + 1
                WHERE id = %(id)s AND status = 'running' AND attempts = %(attempt)s
                RETURNING id, cancel_requested
            )
            SELECT cancel_requested, pg_notify(%(changes)s, id)::text FROM u"""
        self.finish = f"""
            WITH o AS (
                SELECT * FROM unnest(%(ids)s::text[], %(attempts)s::int4[], %(statuses)s::text[],
                    %(results)s::text[], %(expires)s::float8[], %(errors)s::text[],
                    %(run_ats)s::float8[])
                    AS o(id, attempt, status, result, result_expires_at, error, run_at)
            ), u AS (
                UPDATE {jobs} AS j SET
                    status = o.status,
                    lease_expires_at = NULL,
                    errors = CASE WHEN o.error IS NULL THEN j.errors
                                  ELSE j.errors || o.error::jsonb END,
                    result = CASE WHEN o.status = 'succeeded' THEN o.result ELSE j.result END,
                    result_expires_at = CASE WHEN o.status IN {_FINISHED_SQL}
                                             THEN o.result_expires_at
                                             ELSE j.result_expires_at END,
                    progress = CASE WHEN o.status = 'succeeded' THEN 100 ELSE j.progress END,
                    run_at = CASE WHEN o.status = 'scheduled' THEN coalesce(o.run_at, %(now)s)
                                  WHEN o.status = 'queued' THEN %(now)s
                                  ELSE j.run_at END,
                    attempts = CASE WHEN o.status = 'queued' THEN j.attempts - 1
                                    ELSE j.attempts END,
                    finished_at = CASE WHEN o.status IN {_FINISHED_SQL} THEN %(now)s
                                       ELSE j.finished_at END,
                    worker_id = CASE WHEN o.status IN {_FINISHED_SQL} THEN j.worker_id END,
                    history = j.history || jsonb_build_array(
                        jsonb_build_object('status', o.status, 'at', %(at)s::jsonb)),
                    version = j.version + 1
                FROM o
                WHERE j.id = o.id AND j.status = 'running' AND j.attempts = o.attempt
                RETURNING j.id, j.queue, j.status
            )
            SELECT u.id, pg_notify(%(changes)s, u.id)::text,
                   CASE WHEN u.status IN ('queued', 'scheduled')
                        THEN pg_notify(%(work)s, u.queue)::text END
            FROM u"""

        def changed_or_current(update: str) -> str:
            # the UPDATE's row when it applied, else the row as it stands (or none: not found)
            return f"""
                WITH u AS ({update} RETURNING {_SELECT})
                SELECT u.*, pg_notify(%(changes)s, u.id)::text,
                       CASE WHEN %(wake)s AND u.status = 'queued'
                            THEN pg_notify(%(work)s, u.queue)::text END
                FROM u
                UNION ALL
                SELECT {_SELECT}, NULL, NULL FROM {jobs}
                WHERE id = %(id)s AND NOT EXISTS (SELECT 1 FROM u)"""

        self.cancel = changed_or_current(f"""
            UPDATE {jobs} SET
                status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END,
                cancel_requested = cancel_requested OR status = 'running',
                finished_at = CASE WHEN status = 'running' THEN finished_at ELSE %(now)s END,
                result_expires_at = CASE WHEN status <> 'running' AND result_ttl IS NOT NULL
                                         THEN %(now)s + result_ttl
                                         ELSE result_expires_at END,
                history = CASE WHEN status = 'running' THEN history
                               ELSE history || %(entry)s::jsonb END,
                version = version + 1
            WHERE id = %(id)s AND (status IN ('scheduled', 'queued')
                                   OR (status = 'running' AND NOT cancel_requested))""")
        self.retry = changed_or_current(f"""
            UPDATE {jobs} SET
                status = 'queued', max_attempts = greatest(max_attempts, attempts + 1),
                cancel_requested = false, result = NULL, result_expires_at = NULL,
                finished_at = NULL, worker_id = NULL, run_at = %(now)s,
                history = history || %(entry)s::jsonb, version = version + 1
            WHERE id = %(id)s AND status IN ('failed', 'cancelled')""")
        self.delete = f"""
            WITH d AS (DELETE FROM {jobs} WHERE id = %(id)s RETURNING id)
            SELECT pg_notify(%(changes)s, id)::text FROM d"""

        # transitions.expire, row by row: cancelled if asked, queued with attempts left, else
        # failed; the WorkerLost error and the history entry name the state actually entered
        expired_status = """CASE WHEN j.cancel_requested THEN 'cancelled'
                                 WHEN j.attempts < j.max_attempts THEN 'queued'
                                 ELSE 'failed' END"""
        ends = "(j.cancel_requested OR j.attempts >= j.max_attempts)"
        self.requeue_expired = f"""
            WITH x AS MATERIALIZED (
                SELECT id FROM {jobs}
                WHERE status = 'running' AND lease_expires_at < %(now)s
                FOR UPDATE SKIP LOCKED
            ), u AS (
                UPDATE {jobs} AS j SET
                    errors = j.errors || jsonb_build_array(jsonb_build_object(
                        'attempt', j.attempts, 'type', 'WorkerLost',
                        'message', 'worker ' || coalesce(j.worker_id, 'None')
                                   || ' stopped renewing its lease',
                        'traceback', '', 'at', %(at)s::jsonb, 'reason', 'worker_lost')),
                    lease_expires_at = NULL,
                    worker_id = NULL,
                    status = {expired_status},
                    finished_at = CASE WHEN {ends} THEN %(now)s ELSE j.finished_at END,
                    result_expires_at = CASE WHEN {ends} AND j.result_ttl IS NOT NULL
                                             THEN %(now)s + j.result_ttl
                                             ELSE j.result_expires_at END,
                    run_at = CASE WHEN {ends} THEN j.run_at ELSE %(now)s END,
                    history = j.history || jsonb_build_array(jsonb_build_object(
                        'status', {expired_status}, 'at', %(at)s::jsonb)),
                    version = j.version + 1
                FROM x WHERE j.id = x.id
                RETURNING j.id, j.queue, j.status
            )
            SELECT u.id, pg_notify(%(changes)s, u.id)::text,
                   CASE WHEN u.status = 'queued' THEN pg_notify(%(work)s, u.queue)::text END
            FROM u"""
        self.prune = f"""
            WITH d AS (
                DELETE FROM {jobs} WHERE id IN (
                    SELECT id FROM {jobs}
                    WHERE status IN {_FINISHED_SQL} AND result_expires_at < %(now)s
                    LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
                RETURNING 1
            )
            SELECT count(*) FROM d"""
        self.stats = f"SELECT queue, status, count(*) FROM {jobs} GROUP BY queue, status"
        # anything queued, else the earliest scheduled run time: per queue, each probe an
        # ordered LIMIT 1 down conveyor_jobs_queued / _scheduled (an EXISTS, or one plan over
        # all queues at once, lets the planner bet on a seq scan finding a row early)
        self.due = f"""
            SELECT coalesce(bool_or(s.queued IS NOT NULL), false), min(s.scheduled)
            FROM unnest(%(queues)s::text[]) AS q(name)
            CROSS JOIN LATERAL (
                SELECT
                    (SELECT run_at FROM {jobs} WHERE queue = q.name AND status = 'queued'
                     ORDER BY run_at LIMIT 1) AS queued,
                    (SELECT run_at FROM {jobs} WHERE queue = q.name AND status = 'scheduled'
                     ORDER BY run_at LIMIT 1) AS scheduled
            ) AS s"""

        schedule_cols = "id, spec, paused, last_fire, next_fire, state, updated_at"
        self.put_schedule = f"""
            INSERT INTO {self.schedules} ({schedule_cols})
            VALUES (%(id)s, %(spec)s, %(paused)s, %(last_fire)s, %(next_fire)s, %(state)s,
                    %(updated_at)s)
            ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, paused = excluded.paused,
                updated_at = excluded.updated_at"""
        self.get_schedules = f"SELECT {schedule_cols} FROM {self.schedules} ORDER BY id"
        self.delete_schedule = f"DELETE FROM {self.schedules} WHERE id = %(id)s"
        self.pause_schedule = f"UPDATE {self.schedules} SET paused = %(paused)s WHERE id = %(id)s"
        self.claim_fire = f"""
            UPDATE {self.schedules}
            SET last_fire = %(fire)s, next_fire = %(next)s, state = %(state)s
            WHERE id = %(id)s AND (last_fire IS NULL OR last_fire < %(fire)s)"""
        self.schedule_state = f"""
            UPDATE {self.schedules} SET next_fire = %(next)s, state = %(state)s
            WHERE id = %(id)s"""

        worker_cols = ("id, host, pid, kind, queues, concurrency, current_jobs, started_at, "
                       "last_heartbeat")
        # the same statement forgets workers that stopped heartbeating an hour ago
        self.heartbeat = f"""
            WITH gone AS (
                DELETE FROM {self.workers}
                WHERE expires_at < %(last_heartbeat)s - 3600 AND id <> %(id)s
            )
            INSERT INTO {self.workers} ({worker_cols}, ttl, expires_at)
            VALUES (%(id)s, %(host)s, %(pid)s, %(kind)s, %(queues)s::text[], %(concurrency)s,
                    %(current_jobs)s::text[], %(started_at)s, %(last_heartbeat)s, %(ttl)s,
                    %(expires_at)s)
            ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                kind = excluded.kind, queues = excluded.queues,
                concurrency = excluded.concurrency, current_jobs = excluded.current_jobs,
                started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat,
                ttl = excluded.ttl, expires_at = excluded.expires_at"""
        self.list_workers = f"""
            SELECT {worker_cols} FROM {self.workers} WHERE expires_at > %(now)s ORDER BY id"""
        self.remove_worker = f"DELETE FROM {self.workers} WHERE id = %(id)s"

    def list(self, filter: JobFilter, after: bool) -> str:
        where = [f"{c} = %({c})s" for c in ("status", "queue", "task") if getattr(filter, c)]
        if after:
            where.append("id < %(cursor)s")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return f"SELECT {_SELECT} FROM {self.jobs} {clause} ORDER BY id DESC LIMIT %(limit)s"


def _channel(schema: str, suffix: str) -> str:
    name = f"conveyor_{schema}_{suffix}"
    if len(name.encode()) > 63:  # NAMEDATALEN: LISTEN would truncate what pg_notify rejects
        name = f"conveyor_{hashlib.sha1(schema.encode()).hexdigest()[:16]}_{suffix}"
    return name


# -- migrations --------------------------------------------------------------------------------

_MIGRATION_NAME = re.compile(r"^(\d{4})_\w+\.sql$")


def _migration_files() -> Any:
    return resources.files("conveyor.backends").joinpath("postgres_migrations")


def migrations() -> list[tuple[str, str]]:
    """Every migration shipped with this version, ``(name, sql)`` in order."""
    folder = _migration_files()
    names = sorted(p.name for p in folder.iterdir() if _MIGRATION_NAME.match(p.name))
    return [(n.removesuffix(".sql"), folder.joinpath(n).read_text("utf-8")) for n in names]


def schema_snapshot() -> str:
    """The whole current schema in one script: what replaying every migration builds."""
    text: str = _migration_files().joinpath("schema.sql").read_text("utf-8")
    return text


# -- the LISTEN connection ---------------------------------------------------------------------


class _Listener:
    """One thread holding a dedicated LISTEN connection; waiters block on its condition.

    Waiters take a snapshot of the counters, check the database, then wait for the snapshot to
    go stale: a notification for what they watch, or any connect/disconnect (``epoch``), which
    may have lost notifications and so wakes everyone to re-check.
    """

    KEEPALIVE = 30.0  # seconds of silence before the thread proves the connection alive

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], work: str,
                 changes: str) -> None:
        self._connect = connect
        self._work, self._changes = work, changes
        self._cond = threading.Condition()
        self._epoch = 0
        self._connected = False
        self._changes_live = False
        self._want_changes = False
        self._stopping = False
        self._queue_seq: dict[str, int] = {}
        self._watch: dict[str, int] = {}
        self._job_seq: dict[str, int] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="conveyor-pg-listen",
                                        daemon=True)
        self._thread.start()

    # -- waiter side ---------------------------------------------------------------------------

    def work_state(self, queues: Sequence[str]) -> tuple[Any, ...]:
        with self._cond:
            return self._work_state(queues)

    def _work_state(self, queues: Sequence[str]) -> tuple[Any, ...]:
        return (self._epoch, self._connected, *(self._queue_seq.get(q, 0) for q in queues))

    def wait_work(self, queues: Sequence[str], seen: tuple[Any, ...], timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._work_state(queues) != seen,
                                timeout)

    def watch(self, job_id: str) -> None:
        with self._cond:
            self._watch[job_id] = self._watch.get(job_id, 0) + 1
            self._job_seq.setdefault(job_id, 0)
            ask = not self._want_changes
            self._want_changes = True
        if ask:
            self._poke()

    def unwatch(self, job_id: str) -> None:
        with self._cond:
            left = self._watch.get(job_id, 1) - 1
            if left:
                self._watch[job_id] = left
            else:
                self._watch.pop(job_id, None)
                self._job_seq.pop(job_id, None)

    def change_state(self, job_id: str) -> tuple[Any, ...]:
        with self._cond:
            return self._change_state(job_id)

    def _change_state(self, job_id: str) -> tuple[Any, ...]:
        return (self._epoch, self._connected and self._changes_live,
                self._job_seq.get(job_id, 0))

    def wait_change(self, job_id: str, seen: tuple[Any, ...], timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._change_state(job_id) != seen,
                                timeout)

    def wait_connected(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._connected or self._stopping, timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._poke()
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            return  # stuck on a dead peer: leave it the pipe rather than a recycled fd
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # -- thread side ---------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                conn = self._connect()
            except psycopg.Error as exc:
                log.warning("LISTEN connection failed (%s); polling, retrying in %.1fs",
                            exc, backoff)
                self._pause(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            try:
                self._serve(conn)
            except (psycopg.Error, OSError) as exc:
                if not self._stopping:
                    log.warning("LISTEN connection lost (%s); polling until it is back", exc)
            except Exception:
                # whatever went wrong, a dead listener thread would leave every wait polling
                log.exception("LISTEN connection failed; polling until it is back")
            finally:
                with self._cond:
                    self._connected = self._changes_live = False
                    self._epoch += 1
                    self._cond.notify_all()
                conn.close()
            if not self._stopping:
                self._pause(backoff)

    def _pause(self, seconds: float) -> None:
        try:
            select.select([self._wake_r], [], [], seconds)
        except (OSError, ValueError):
            time.sleep(seconds)

    def _listen(self, conn: psycopg.Connection[Any], channel: str) -> None:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        conn.add_notify_handler(lambda n: self._deliver([(n.channel, n.payload)]))
        self._listen(conn, self._work)
        changes = False
        with self._cond:
            self._connected = True
            self._epoch += 1
            self._cond.notify_all()
        sock = conn.fileno()
        quiet_since = time.monotonic()
        while True:
            with self._cond:
                if self._stopping:
                    return
                want = self._want_changes
            if want and not changes:
                self._listen(conn, self._changes)
                changes = True
                with self._cond:
                    self._changes_live = True
                    self._epoch += 1
                    self._cond.notify_all()
            ready, _, _ = select.select([sock, self._wake_r], [], [], self.KEEPALIVE)
            if self._wake_r in ready:
                os.read(self._wake_r, 1024)
            if sock in ready:
                conn.pgconn.consume_input()
                got = []
                while (n := conn.pgconn.notifies()) is not None:
                    got.append((n.relname.decode(), n.extra.decode()))
                if got:
                    self._deliver(got)
                if conn.pgconn.status != pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the LISTEN connection was closed")
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= self.KEEPALIVE:
                conn.execute("SELECT 1")  # a silently dead peer shows up here
                quiet_since = time.monotonic()

    def _deliver(self, notes: Sequence[tuple[str, str]]) -> None:
        with self._cond:
            for channel, payload in notes:
                if channel == self._work:
                    self._queue_seq[payload] = self._queue_seq.get(payload, 0) + 1
                elif payload in self._job_seq:
                    self._job_seq[payload] += 1
            self._cond.notify_all()


# -- the backend -------------------------------------------------------------------------------

Execute = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]
#: errors of a server that is shutting down or not yet accepting work: worth a retry
_SERVER_GOING = (psycopg.errors.AdminShutdown, psycopg.errors.CrashShutdown,
                 psycopg.errors.CannotConnectNow)


class PostgresBackend:
    """The Backend protocol on PostgreSQL (psycopg 3 and a connection pool)."""

    name = "postgres"

    def __init__(self, url: str, **options: Any) -> None:
        settings = _settings(url, options)
        self.url = url
        self.schema = settings.schema
        self._settings = settings
        self._dsn = settings.dsn
        try:
            params = conninfo_to_dict(self._dsn)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"bad PostgreSQL URL: {exc}") from exc
        self._named = "application_name" in params
        self._where = (f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
                       f"/{params.get('dbname', '')}")
        self._connect_kwargs: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = 5
        if "application_name" not in params:
            self._connect_kwargs["application_name"] = "conveyor"
        self._q = _Queries(self.schema)
        self._work_channel = _channel(self.schema, "work")
        self._changes_channel = _channel(self.schema, "changes")
        self._listener: _Listener | None = None
        self._lock = threading.Lock()
        self._closed = False
        if settings.auto_migrate:
            self.migrate()
        self._pool = ConnectionPool(
            self._dsn, min_size=settings.pool_min_size,
            max_size=max(settings.pool_max_size, settings.pool_min_size),
            timeout=settings.pool_timeout, open=True, name=f"conveyor-{self.schema}",
            kwargs={"autocommit": True, "prepare_threshold": settings.prepare_threshold,
                    **self._connect_kwargs},
            configure=self._configure)

    def __repr__(self) -> str:
        return f"<PostgresBackend {self._where} schema={self.schema!r}>"

    @staticmethod
    def _configure(conn: psycopg.Connection[Any]) -> None:
        # float8 text output must round-trip exactly: times are compared for equality
        conn.execute("SET extra_float_digits = 3")

    # -- plumbing ------------------------------------------------------------------------------

    def _run(self, work: Callable[[psycopg.Connection[Any], bool], T],
             pool_timeout: float | None = None) -> T:
        """Run ``work(conn, retrying)`` on a pooled connection, retrying transient failures.

        Transient: the connection broke (server restart, killed backend, network), the server
        is starting or shutting down, or the transaction lost a deadlock/serialization race.
        ``retrying`` tells ``work`` that an earlier attempt may have committed before its
        connection died (the reply was lost), so what it finds may be its own doing.
        """
        failure: Exception | None = None
        lost = False
        for attempt in range(self._settings.retries + 1):
            if attempt:
                time.sleep(min(0.05 * 4 ** (attempt - 1), 1.0))
            lost = False
            try:
                with self._pool.connection(timeout=pool_timeout) as conn:
                    try:
                        return work(conn, attempt > 0)
                    except psycopg.OperationalError:
                        lost = conn.broken
                        if lost:
                            # its idle siblings probably died with it (server restart, kill)
                            self._pool.check()
                        raise
            except PoolClosed as exc:
                raise BackendError("the PostgreSQL backend is closed") from exc
            except PoolTimeout as exc:
                raise BackendUnavailable(
                    f"no PostgreSQL connection to {self._where} within "
                    f"{pool_timeout or self._settings.pool_timeout:g}s: {exc}") from exc
            except psycopg.OperationalError as exc:
                lost = lost or isinstance(exc, _SERVER_GOING)
                if not (lost or isinstance(exc, psycopg.errors.TransactionRollback)):
                    raise BackendError(f"PostgreSQL error: {exc}") from exc
                failure = exc
                log.warning("PostgreSQL operation failed (attempt %d of %d): %s",
                            attempt + 1, self._settings.retries + 1, exc)
            except psycopg.Error as exc:
                raise BackendError(f"PostgreSQL error: {exc}") from exc
        if lost:
            raise BackendUnavailable(f"PostgreSQL at {self._where} is unavailable: {failure}",
                                     ) from failure
        raise BackendError(f"PostgreSQL error: {failure}") from failure

    def _rows(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self._run(lambda conn, _: conn.execute(query, params).fetchall())

    # -- lifecycle -----------------------------------------------------------------------------

    def check(self) -> None:
        pending = self._run(lambda conn, _: self._pending(conn))
        if pending:
            raise SchemaOutdated(
                f"the Conveyor tables in PostgreSQL schema {self.schema!r} at {self._where} "
                f"are out of date ({len(pending)} pending migration(s): {', '.join(pending)}); "
                f"run `conveyor -A <app> migrate`", pending=pending)

    def migrate(self, check_only: bool = False) -> list[str]:
        try:
            with psycopg.connect(self._dsn, autocommit=True, **self._connect_kwargs) as conn:
                if check_only:
                    return self._pending(conn)
                return self._apply_migrations(conn)
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(f"PostgreSQL at {self._where} is unavailable: {exc}",
                                     ) from exc
        except psycopg.Error as exc:
            raise BackendError(f"migrating PostgreSQL schema {self.schema!r} failed: {exc}",
                               ) from exc

    def _applied(self, conn: psycopg.Connection[Any]) -> set[str]:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                              [self._q.migrations]).fetchone()
        if not exists or not exists[0]:
            return set()
        return {r[0] for r in conn.execute(f"SELECT name FROM {self._q.migrations}")}

    def _pending(self, conn: psycopg.Connection[Any]) -> list[str]:
        applied = self._applied(conn)
        return [name for name, _ in migrations() if name not in applied]

    def _apply_migrations(self, conn: psycopg.Connection[Any],
                          snapshot: bool = True) -> list[str]:
        # a session lock: a second migrating process waits here, then finds nothing to do
        digest = hashlib.blake2b(f"conveyor-migrate:{self.schema}".encode(), digest_size=8)
        key = int.from_bytes(digest.digest(), "big", signed=True)
        conn.execute("SELECT pg_advisory_lock(%s)", [key])
        try:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._q.schema}")
            conn.execute(f"""CREATE TABLE IF NOT EXISTS {self._q.migrations} (
                name text COLLATE "C" PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now())""")
            applied = self._applied(conn)
            pending = [(n, text) for n, text in migrations() if n not in applied]
            fresh = not applied and conn.execute(
                "SELECT to_regclass(%s) IS NULL", [self._q.jobs]).fetchone() == (True,)
            record = f"INSERT INTO {self._q.migrations} (name) VALUES (%s)"
            if pending and fresh and snapshot:
                # an empty schema gets the snapshot at once (a test proves it equals the replay)
                with conn.transaction():
                    conn.execute(f"SET LOCAL search_path TO {self._q.schema}")
                    conn.execute(schema_snapshot())
                    conn.cursor().executemany(record, [(n,) for n, _ in pending])
            else:
                for name, text in pending:
                    with conn.transaction():
                        conn.execute(f"SET LOCAL search_path TO {self._q.schema}")
                        conn.execute(text)
                        conn.execute(record, [name])
            if pending:
                log.info("applied PostgreSQL migrations to schema %s: %s", self.schema,
                         ", ".join(n for n, _ in pending))
            return [n for n, _ in pending]
        finally:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", [key])
            except psycopg.Error:
                pass  # the connection died: the server released the lock with the session

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self._pool.close()

    # -- enqueue -------------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        if not jobs:
            return []
        return self._run(lambda conn, retrying: self._store(_executor(conn), jobs, retrying))

    def enqueue_in(self, connection: Any, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        """Store ``jobs`` through the caller's own connection, inside its open transaction.

        Nothing is committed here: the jobs exist when (and only if) the caller commits, and
        workers are woken at that commit (NOTIFY is transactional). ``connection`` is the
        caller's psycopg 3 connection, whatever its cursor or row factory; only ``cursor()``
        and ``%(name)s`` parameters are used, so other PostgreSQL DB-API drivers may work but
        are untested. Key and id rules are those of :meth:`enqueue`; driver errors are raised
        as ``BackendError`` and leave the caller's transaction aborted, as any failed
        statement does.
        """
        if not jobs:
            return []

        # the caller may have set a dict or class row factory on their connection
        plain = {"row_factory": tuple_row} if isinstance(connection, psycopg.Connection) else {}

        def execute(query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
            with connection.cursor(**plain) as cur:
                cur.execute(query, params)
                return list(cur.fetchall())

        try:
            return self._store(execute, jobs, retrying=False, binary=False)
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(f"enqueue on the caller's connection failed: {exc}",
                                     ) from exc
        except psycopg.Error as exc:
            raise BackendError(f"enqueue on the caller's connection failed: {exc}") from exc

    def _store(self, execute: Execute, jobs: Sequence[JobRecord], retrying: bool,
               binary: bool = True) -> list[JobRecord]:
        stored: dict[int, JobRecord] = {}
        pending = list(enumerate(jobs))
        insert = self._q.insert_binary if binary else self._q.insert
        for _ in range(10):
            params: dict[str, Any] = _job_arrays([job for _, job in pending])
            params["work"] = self._work_channel
            inserted = {row[0] for row in execute(insert, params)}
            refused = []
            for i, job in pending:
                if job.id in inserted:
                    stored[i] = job
                else:
                    refused.append((i, job))
            if not refused:
                break
            pending = self._resolve(execute, refused, stored, retrying)
            if not pending:
                break
        else:
            raise BackendError("could not store jobs: their keys kept changing hands")
        return [stored[i] for i in range(len(jobs))]

    def _resolve(self, execute: Execute, refused: list[tuple[int, JobRecord]],
                 stored: dict[int, JobRecord], retrying: bool) -> list[tuple[int, JobRecord]]:
        """Explain refused rows: a live job holds the key (return it), the id exists (an
        error, unless our own lost-reply attempt stored it), or the key's holder finished in
        between (insert again)."""
        found = [_job(r) for r in execute(self._q.lookup, {
            "ids": [job.id for _, job in refused],
            "keys": [job.key for _, job in refused if job.key is not None]})]
        by_id = {job.id: job for job in found}
        by_key = {job.key: job for job in found if job.key is not None and job.status in LIVE}
        again = []
        for i, job in refused:
            holder = by_key.get(job.key) if job.key is not None else None
            if holder is not None:
                stored[i] = holder
            elif job.id in by_id:
                if not retrying:
                    raise BackendError(f"a job with id {job.id} already exists", job_id=job.id)
                stored[i] = by_id[job.id]
            else:
                again.append((i, job))
        return again

    # -- claim, leases, progress, finish -------------------------------------------------------

    def claim(self, queues: Sequence[str], limit: int, worker_id: str, lease: float,
              now: float) -> list[JobRecord]:
        order = list(dict.fromkeys(queues))
        if limit <= 0 or not order:
            return []
        rows = self._rows(self._q.claim, {
            "queues": order, "limit": limit, "now": now, "worker": worker_id,
            "until": now + lease, "entry": _entry("running", now),
            "changes": self._changes_channel})
        claimed = [_job(r) for r in rows]
        rank = {q: i for i, q in enumerate(order)}
        claimed.sort(key=lambda j: (rank[j.queue], -j.priority, j.run_at, j.id))
        return claimed

    def extend_leases(self, leases: Sequence[tuple[str, int]], lease: float,
                      now: float) -> dict[str, LeaseState]:
        if not leases:
            return {}
        ordered = sorted(leases)  # one row order for every writer: no deadlocks between them
        rows = self._rows(self._q.extend, {
            "ids": [i for i, _ in ordered], "attempts": [a for _, a in ordered],
            "until": now + lease})
        states: dict[str, LeaseState] = {job_id: "lost" for job_id, _ in leases}
        for job_id, cancel_requested in rows:
            states[job_id] = "cancel" if cancel_requested else "ok"
        return states

    def set_progress(self, job_id: str, attempt: int, percent: float, message: str | None,
                     now: float) -> LeaseState:
        rows = self._rows(self._q.progress, {
            "id": job_id, "attempt": attempt, "percent": percent,
            "message": _clean(message) if message is not None else None,
            "changes": self._changes_channel})
        if not rows:
            return "lost"
        return "cancel" if rows[0][0] else "ok"

    def finish(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        if not outcomes:
            return []
        # a job named twice: the first outcome is the one that can apply, as in memory
        first: dict[str, Outcome] = {}
        for outcome in outcomes:
            first.setdefault(outcome.job_id, outcome)
        batch = sorted(first.values(), key=lambda o: o.job_id)
        rows = self._rows(self._q.finish, {
            "ids": [o.job_id for o in batch], "attempts": [o.attempt for o in batch],
            "statuses": [o.status for o in batch],
            "results": [o.result for o in batch],
            "expires": [o.result_expires_at for o in batch],
            "errors": [_error_json([o.error]) if o.error is not None else None for o in batch],
            "run_ats": [o.run_at for o in batch],
            "now": now, "at": json.dumps(now),
            "changes": self._changes_channel, "work": self._work_channel})
        applied = {row[0] for row in rows}
        return [o.job_id in applied and first[o.job_id] is o for o in outcomes]

    # -- cancel, retry, delete, get, list ------------------------------------------------------

    def _change(self, query: str, job_id: str, now: float, entry: str,
                wake: bool) -> JobRecord:
        rows = self._rows(query, {
            "id": job_id, "now": now, "entry": entry, "wake": wake,
            "changes": self._changes_channel, "work": self._work_channel})
        if not rows:
            raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
        return _job(rows[0])

    def cancel(self, job_id: str, now: float) -> JobRecord:
        return self._change(self._q.cancel, job_id, now, _entry("cancelled", now), wake=False)

    def retry(self, job_id: str, now: float) -> JobRecord:
        try:
            return self._change(self._q.retry, job_id, now, _entry("queued", now), wake=True)
        except BackendError as exc:
            if not isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise
            job = self.get(job_id)
            raise InvalidTransition(
                f"job {job_id} cannot be retried: a live job already holds its key "
                f"{job.key if job else None!r}", job_id=job_id) from exc

    def delete(self, job_id: str) -> bool:
        return bool(self._rows(self._q.delete, {"id": job_id,
                                                "changes": self._changes_channel}))

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._rows(self._q.get, {"id": job_id})
        return _job(rows[0]) if rows else None

    def stats(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for queue, status, count in self._rows(self._q.stats, {}):
            counts.setdefault(queue, {})[status] = count
        return counts

    # -- recovery and pruning ------------------------------------------------------------------

    def requeue_expired(self, now: float) -> list[str]:
        rows = self._rows(self._q.requeue_expired, {
            "now": now, "at": json.dumps(now),
            "changes": self._changes_channel, "work": self._work_channel})
        return sorted(row[0] for row in rows)

    def prune(self, now: float, batch: int = 5000) -> int:
        """Delete expired finished jobs in batches of ``batch`` rows, one transaction each,
        so pruning a large backlog never holds many locks or one huge transaction."""
        total = 0
        while True:
            [(deleted,)] = self._rows(self._q.prune, {"now": now, "batch": batch})
            count = int(deleted)
            total += count
            if count < batch:
                return total

    # -- waiting -------------------------------------------------------------------------------

    def _get_listener(self, wait: float) -> _Listener:
        with self._lock:
            if self._closed:
                raise BackendError("the PostgreSQL backend is closed")
            if self._listener is None:
                self._listener = _Listener(lambda: self._listen_connection(),
                                           self._work_channel, self._changes_channel)
                fresh = True
            else:
                fresh = False
            listener = self._listener
        if fresh:
            # the first wait should already be woken by NOTIFY rather than polling
            listener.wait_connected(wait)
        return listener

    def _listen_connection(self) -> psycopg.Connection[Any]:
        kwargs = dict(self._connect_kwargs)
        if not self._named:
            kwargs["application_name"] = "conveyor-listen"  # easy to spot in pg_stat_activity
        # keepalives and a send timeout: a peer that vanished without a word must not leave us
        # listening to nothing for the kernel's default quarter of an hour
        return psycopg.connect(self._dsn, autocommit=True, keepalives=1, keepalives_idle=30,
                               keepalives_interval=10, keepalives_count=3,
                               tcp_user_timeout=60_000, **kwargs)

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Wait for a NOTIFY naming one of ``queues``, the earliest scheduled job of those
        queues coming due, or ``timeout``. Database failures are logged, not raised: the
        wait then lasts one poll interval and the caller's next claim reports the failure."""
        deadline = time.monotonic() + timeout
        order = list(dict.fromkeys(queues))
        listener = self._get_listener(wait=min(timeout, 2.0))
        seen = listener.work_state(order)
        poll = self._settings.poll_interval
        try:
            [(queued, next_run)] = self._run(
                lambda conn, _: conn.execute(self._q.due, {"queues": order}).fetchall(),
                pool_timeout=max(deadline - time.monotonic(), 0.05))
        except BackendError as exc:
            log.warning("wait_for_work could not check the queues: %s", exc)
            listener.wait_work(order, seen, max(0.0, min(deadline - time.monotonic(), poll)))
            return
        if queued:
            return
        wait = deadline - time.monotonic()
        if next_run is not None:
            wait = min(wait, next_run - time.time())
        if not seen[1]:  # no LISTEN connection: notifications may be missed, so poll
            wait = min(wait, poll)
        if wait > 0:
            listener.wait_work(order, seen, wait)

    def wait_for_change(self, job_id: str, version: int, timeout: float) -> JobRecord | None:
        """Wait for a NOTIFY on the changes channel naming the job (or, while the LISTEN
        connection is down, poll every ``poll_interval``), then re-read the job."""
        deadline = time.monotonic() + timeout
        listener = self._get_listener(wait=min(timeout, 2.0))
        listener.watch(job_id)
        try:
            while True:
                seen = listener.change_state(job_id)
                job = self.get(job_id)
                if job is None or job.version != version:
                    return job
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return job
                if not seen[1]:
                    remaining = min(remaining, self._settings.poll_interval)
                listener.wait_change(job_id, seen, remaining)
        finally:
            listener.unwatch(job_id)

    # -- schedules -----------------------------------------------------------------------------

    def put_schedule(self, schedule: ScheduleRecord) -> None:
        self._write(self._q.put_schedule, asdict(schedule))

    def _write(self, query: str, params: dict[str, Any]) -> int:
        return self._run(lambda conn, _: conn.execute(query, params).rowcount)

    def get_schedules(self) -> list[ScheduleRecord]:
        return [ScheduleRecord(*row) for row in self._rows(self._q.get_schedules, {})]

    def delete_schedule(self, schedule_id: str) -> bool:
        return self._write(self._q.delete_schedule, {"id": schedule_id}) > 0

    def set_schedule_paused(self, schedule_id: str, paused: bool) -> bool:
        return self._write(self._q.pause_schedule, {"id": schedule_id,
                                                        "paused": paused}) > 0

    def claim_fire(self, schedule_id: str, fire_time: float, next_fire: float | None,
                   state: str, jobs: Sequence[JobRecord]) -> bool:
        def work(conn: psycopg.Connection[Any], retrying: bool) -> bool:
            with conn.transaction():
                claimed = conn.execute(self._q.claim_fire, {
                    "id": schedule_id, "fire": fire_time, "next": next_fire,
                    "state": state}).rowcount
                if not claimed:
                    return False
                if jobs:
                    self._store(_executor(conn), jobs, retrying)
                return True

        return self._run(work)

    def update_schedule_state(self, schedule_id: str, next_fire: float | None,
                              state: str) -> None:
        self._write(self._q.schedule_state, {"id": schedule_id, "next": next_fire,
                                                 "state": state})

    # -- workers -------------------------------------------------------------------------------

    def heartbeat_worker(self, info: WorkerInfo, ttl: float) -> None:
        self._write(self._q.heartbeat, {**asdict(info), "ttl": ttl,
                                            "expires_at": info.last_heartbeat + ttl})

    def list_workers(self, now: float) -> list[WorkerInfo]:
        return [WorkerInfo(id=r[0], host=r[1], pid=r[2], kind=r[3], queues=list(r[4]),
                           concurrency=r[5], current_jobs=list(r[6]), started_at=r[7],
                           last_heartbeat=r[8])
                for r in self._rows(self._q.list_workers, {"now": now})]

    def remove_worker(self, worker_id: str) -> None:
        self._write(self._q.remove_worker, {"id": worker_id})


    # last in the class: a method named ``list`` shadows the builtin for annotations below it
    def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        params: dict[str, Any] = {"status": filter.status, "queue": filter.queue,
                                  "task": filter.task, "cursor": cursor, "limit": limit + 1}
        rows = self._rows(self._q.list(filter, cursor is not None), params)
        jobs = [_job(r) for r in rows]
        more = len(jobs) > limit
        page = jobs[:limit]
        return Page(page, page[-1].id if more and page else None)


def _executor(conn: psycopg.Connection[Any]) -> Execute:
    return lambda query, params: conn.execute(query, params).fetchall()
