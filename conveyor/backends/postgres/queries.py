"""The text of every statement the PostgreSQL backend runs, rendered once per schema.

Each builder below takes the schema-qualified table name and returns one statement;
:class:`Queries` holds them all, so psycopg can prepare and reuse them.
"""

from __future__ import annotations

from psycopg import sql

from ..base import JobFilter
from .rows import ARRAY_TYPES, COLUMNS, FINISHED_SQL, JSON_COLUMNS, LIVE_SQL, SELECT


class Queries:
    """Every statement, rendered once per schema so psycopg can prepare and reuse them."""

    def __init__(self, schema: str) -> None:
        quoted = sql.Identifier(schema).as_string(None)
        self.schema = quoted
        self.jobs = jobs = f"{quoted}.conveyor_jobs"
        self.schedules = schedules = f"{quoted}.conveyor_schedules"
        self.workers = workers = f"{quoted}.conveyor_workers"
        self.migrations = f"{quoted}.conveyor_migrations"

        # binary arrays dump several times faster than text ones (no per-element quoting);
        # the portable %s form is for callers' connections (psycopg2, client-side binding)
        self.insert_binary = _insert(jobs, "b")
        self.insert = _insert(jobs, "s")
        self.lookup = _lookup(jobs)
        self.get = f"SELECT {SELECT} FROM {jobs} WHERE id = %(id)s"
        self.claim = _claim(jobs)
        self.extend = _extend(jobs)
        self.progress = _progress(jobs)
        self.finish = _finish(jobs)
        self.cancel = _changed_or_current(jobs, _cancel(jobs))
        self.retry = _changed_or_current(jobs, _retry(jobs))
        self.delete = f"""
            WITH d AS (DELETE FROM {jobs} WHERE id = %(id)s RETURNING id)
            SELECT pg_notify(%(changes)s, id)::text FROM d"""
        self.requeue_expired = _requeue_expired(jobs)
        self.prune = _prune(jobs)
        self.stats = f"SELECT queue, status, count(*) FROM {jobs} GROUP BY queue, status"
        self.due = _due(jobs)

        self.put_schedule = _put_schedule(schedules)
        self.get_schedules = f"SELECT {_SCHEDULE_COLS} FROM {schedules} ORDER BY id"
        self.delete_schedule = f"DELETE FROM {schedules} WHERE id = %(id)s"
        self.pause_schedule = f"UPDATE {schedules} SET paused = %(paused)s WHERE id = %(id)s"
        self.claim_fire = f"""
            UPDATE {schedules}
            SET last_fire = %(fire)s, next_fire = %(next)s, state = %(state)s
            WHERE id = %(id)s AND (last_fire IS NULL OR last_fire < %(fire)s)"""
        self.schedule_state = f"""
            UPDATE {schedules} SET next_fire = %(next)s, state = %(state)s
            WHERE id = %(id)s"""

        self.heartbeat = _heartbeat(workers)
        self.list_workers = f"""
            SELECT {_WORKER_COLS} FROM {workers} WHERE expires_at > %(now)s ORDER BY id"""
        self.remove_worker = f"DELETE FROM {workers} WHERE id = %(id)s"

    def list(self, filter: JobFilter, after: bool) -> str:
        where = [f"{c} = %({c})s" for c in ("status", "queue", "task") if getattr(filter, c)]
        if after:
            where.append("id < %(cursor)s")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return f"SELECT {SELECT} FROM {self.jobs} {clause} ORDER BY id DESC LIMIT %(limit)s"


# -- jobs: enqueue, claim, leases, finish ---------------------------------------------------------

def _insert(jobs: str, placeholder: str) -> str:
    unnest = ", ".join(f"%({c}){placeholder}::{ARRAY_TYPES.get(c, 'text')}[]"
                       for c in COLUMNS)
    picked = ", ".join(f"u.{c}::jsonb" if c in JSON_COLUMNS else f"u.{c}"
                       for c in COLUMNS)
    # ON CONFLICT without a target covers the live-key index *and* the primary key;
    # which one refused a row is sorted out afterwards by `lookup` (conflicts only)
    return f"""
        WITH ins AS (
            INSERT INTO {jobs} ({SELECT})
            SELECT {picked} FROM unnest({unnest}) AS u({SELECT})
            ON CONFLICT DO NOTHING
            RETURNING id, queue
        )
        SELECT id, pg_notify(%(work)s, queue)::text FROM ins"""


def _lookup(jobs: str) -> str:
    return f"""
        SELECT {SELECT} FROM {jobs} WHERE id = ANY(%(ids)s::text[])
        UNION ALL
        SELECT {SELECT} FROM {jobs}
        WHERE key = ANY(%(keys)s::text[]) AND status IN {LIVE_SQL}"""


def _claim(jobs: str) -> str:
    returning = ", ".join(f"j.{c}" for c in COLUMNS)
    # one queue at a time in the given order, each walked along conveyor_jobs_claim; a
    # MATERIALIZED CTE guarantees the SKIP LOCKED pick runs exactly once
    return f"""
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


def _extend(jobs: str) -> str:
    return f"""
        UPDATE {jobs} AS j SET lease_expires_at = %(until)s
        FROM unnest(%(ids)s::text[], %(attempts)s::int4[]) AS l(id, attempt)
        WHERE j.id = l.id AND j.status = 'running' AND j.attempts = l.attempt
        RETURNING j.id, j.cancel_requested"""


def _progress(jobs: str) -> str:
    return f"""
        WITH u AS (
            UPDATE {jobs} SET progress = %(percent)s, progress_message = %(message)s,
                version = version + 1
            WHERE id = %(id)s AND status = 'running' AND attempts = %(attempt)s
            RETURNING id, cancel_requested
        )
        SELECT cancel_requested, pg_notify(%(changes)s, id)::text FROM u"""


def _finish(jobs: str) -> str:
    return f"""
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
                result_expires_at = CASE WHEN o.status IN {FINISHED_SQL}
                                         THEN o.result_expires_at
                                         ELSE j.result_expires_at END,
                progress = CASE WHEN o.status = 'succeeded' THEN 100 ELSE j.progress END,
                run_at = CASE WHEN o.status = 'scheduled' THEN coalesce(o.run_at, %(now)s)
                              WHEN o.status = 'queued' THEN %(now)s
                              ELSE j.run_at END,
                attempts = CASE WHEN o.status = 'queued' THEN j.attempts - 1
                                ELSE j.attempts END,
                finished_at = CASE WHEN o.status IN {FINISHED_SQL} THEN %(now)s
                                   ELSE j.finished_at END,
                worker_id = CASE WHEN o.status IN {FINISHED_SQL} THEN j.worker_id END,
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


# -- jobs: cancel, retry, recovery, pruning ---------------------------------------------------

def _changed_or_current(jobs: str, update: str) -> str:
    # the UPDATE's row when it applied, else the row as it stands (or none: not found)
    return f"""
        WITH u AS ({update} RETURNING {SELECT})
        SELECT u.*, pg_notify(%(changes)s, u.id)::text,
               CASE WHEN %(wake)s AND u.status = 'queued'
                    THEN pg_notify(%(work)s, u.queue)::text END
        FROM u
        UNION ALL
        SELECT {SELECT}, NULL, NULL FROM {jobs}
        WHERE id = %(id)s AND NOT EXISTS (SELECT 1 FROM u)"""


def _cancel(jobs: str) -> str:
    return f"""
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
                               OR (status = 'running' AND NOT cancel_requested))"""


def _retry(jobs: str) -> str:
    return f"""
        UPDATE {jobs} SET
            status = 'queued', max_attempts = greatest(max_attempts, attempts + 1),
            cancel_requested = false, result = NULL, result_expires_at = NULL,
            finished_at = NULL, worker_id = NULL, run_at = %(now)s,
            history = history || %(entry)s::jsonb, version = version + 1
        WHERE id = %(id)s AND status IN ('failed', 'cancelled')"""


# transitions.expire, row by row: cancelled if asked, queued with attempts left, else
# failed; the WorkerLost error and the history entry name the state actually entered
_EXPIRED_STATUS = """CASE WHEN j.cancel_requested THEN 'cancelled'
                             WHEN j.attempts < j.max_attempts THEN 'queued'
                             ELSE 'failed' END"""
_ENDS = "(j.cancel_requested OR j.attempts >= j.max_attempts)"


def _requeue_expired(jobs: str) -> str:
    return f"""
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
                status = {_EXPIRED_STATUS},
                finished_at = CASE WHEN {_ENDS} THEN %(now)s ELSE j.finished_at END,
                result_expires_at = CASE WHEN {_ENDS} AND j.result_ttl IS NOT NULL
                                         THEN %(now)s + j.result_ttl
                                         ELSE j.result_expires_at END,
                run_at = CASE WHEN {_ENDS} THEN j.run_at ELSE %(now)s END,
                history = j.history || jsonb_build_array(jsonb_build_object(
                    'status', {_EXPIRED_STATUS}, 'at', %(at)s::jsonb)),
                version = j.version + 1
            FROM x WHERE j.id = x.id
            RETURNING j.id, j.queue, j.status
        )
        SELECT u.id, pg_notify(%(changes)s, u.id)::text,
               CASE WHEN u.status = 'queued' THEN pg_notify(%(work)s, u.queue)::text END
        FROM u"""


def _prune(jobs: str) -> str:
    return f"""
        WITH d AS (
            DELETE FROM {jobs} WHERE id IN (
                SELECT id FROM {jobs}
                WHERE status IN {FINISHED_SQL} AND result_expires_at < %(now)s
                LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
            RETURNING 1
        )
        SELECT count(*) FROM d"""


def _due(jobs: str) -> str:
    # anything queued, else the earliest scheduled run time: per queue, each probe an
    # ordered LIMIT 1 down conveyor_jobs_queued / _scheduled (an EXISTS, or one plan over
    # all queues at once, lets the planner bet on a seq scan finding a row early)
    return f"""
        SELECT coalesce(bool_or(s.queued IS NOT NULL), false), min(s.scheduled)
        FROM unnest(%(queues)s::text[]) AS q(name)
        CROSS JOIN LATERAL (
            SELECT
                (SELECT run_at FROM {jobs} WHERE queue = q.name AND status = 'queued'
                 ORDER BY run_at LIMIT 1) AS queued,
                (SELECT run_at FROM {jobs} WHERE queue = q.name AND status = 'scheduled'
                 ORDER BY run_at LIMIT 1) AS scheduled
        ) AS s"""


# -- schedules and workers -------------------------------------------------------------------

_SCHEDULE_COLS = "id, spec, paused, last_fire, next_fire, state, updated_at"
_WORKER_COLS = ("id, host, pid, kind, queues, concurrency, current_jobs, started_at, "
                "last_heartbeat")


def _put_schedule(schedules: str) -> str:
    return f"""
        INSERT INTO {schedules} ({_SCHEDULE_COLS})
        VALUES (%(id)s, %(spec)s, %(paused)s, %(last_fire)s, %(next_fire)s, %(state)s,
                %(updated_at)s)
        ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, paused = excluded.paused,
            updated_at = excluded.updated_at"""


def _heartbeat(workers: str) -> str:
    # the same statement forgets workers that stopped heartbeating an hour ago
    return f"""
        WITH gone AS (
            DELETE FROM {workers}
            WHERE expires_at < %(last_heartbeat)s - 3600 AND id <> %(id)s
        )
        INSERT INTO {workers} ({_WORKER_COLS}, ttl, expires_at)
        VALUES (%(id)s, %(host)s, %(pid)s, %(kind)s, %(queues)s::text[], %(concurrency)s,
                %(current_jobs)s::text[], %(started_at)s, %(last_heartbeat)s, %(ttl)s,
                %(expires_at)s)
        ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
            kind = excluded.kind, queues = excluded.queues,
            concurrency = excluded.concurrency, current_jobs = excluded.current_jobs,
            started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat,
            ttl = excluded.ttl, expires_at = excluded.expires_at"""
