"""The text of the SQLite backend's statements (the schema they rely on is in ``schema``)."""

from __future__ import annotations

from .schema import JOB_COLUMNS

COLS = ", ".join(JOB_COLUMNS)
FINISHED_SQL = "('succeeded', 'failed', 'cancelled')"

INSERT = f"INSERT INTO jobs ({COLS}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
# the conflict target names the partial unique index, so a live key makes the insert a no-op while
# a duplicate id still raises
INSERT_KEYED = (INSERT + " ON CONFLICT (key) WHERE key IS NOT NULL"
                " AND status IN ('scheduled', 'queued', 'running') DO NOTHING")
SELECT_LIVE_KEY = (f"SELECT {COLS} FROM jobs WHERE key = ? AND key IS NOT NULL"
                   " AND status IN ('scheduled', 'queued', 'running')")
GET = f"SELECT {COLS} FROM jobs WHERE id = ?"

# One claim statement per queue, as the queues' order is strict. The queued arm reads the first
# ``limit`` entries of its partial index, already in claim order; the scheduled arm sorts the due
# range of its own (see schema); merging the two sorts at most 2 * limit rows.
# ?1 now, ?2 worker, ?3 lease end, ?4 the running transition (JSON text, so its timestamp keeps
# full precision: json_object would print 15 digits), ?5 queue, ?6 limit.
CLAIM = f"""
UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?1, worker_id = ?2,
    lease_expires_at = ?3, history = json_insert(history, '$[#]', json(?4)),
    version = version + 1
WHERE rowid IN (
    SELECT r FROM (
        SELECT * FROM (SELECT rowid AS r, priority AS p, run_at AS a, id AS i
                       FROM jobs INDEXED BY jobs_claim_queued
                       WHERE status = 'queued' AND queue = ?5
                       ORDER BY priority DESC, run_at, id LIMIT ?6)
        UNION ALL
        SELECT * FROM (SELECT rowid AS r, priority AS p, run_at AS a, id AS i
                       FROM jobs INDEXED BY jobs_claim_scheduled
                       WHERE status = 'scheduled' AND queue = ?5 AND run_at <= ?1
                       ORDER BY priority DESC, run_at, id LIMIT ?6)
        ORDER BY p DESC, a, i LIMIT ?6))
RETURNING {COLS}
"""

HELD = ("SELECT id, attempts, cancel_requested FROM jobs"
        " WHERE id IN (SELECT value FROM json_each(?)) AND status = 'running'")
EXTEND = ("UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND status = 'running'"
          " AND attempts = ?")
PROGRESS = ("UPDATE jobs SET progress = ?, progress_message = ?, version = version + 1"
            " WHERE id = ? AND status = 'running' AND attempts = ? RETURNING cancel_requested")

# transitions.apply_outcome in SQL. Python precomputes what varies per outcome kind:
# ?1 status, ?2 error JSON or NULL, ?3 result, ?4 1 when result_expires_at is set (final states),
# ?5 result_expires_at, ?6 new run_at or NULL, ?7 1 when the attempt is given back,
# ?8 finished_at or NULL, ?9 1 when worker_id is cleared, ?10 transition JSON,
# ?11 id, ?12 attempt (the fence, repeated although checked just before: it costs nothing)
FINISH = """
UPDATE jobs SET
    status = ?1,
    lease_expires_at = NULL,
    errors = CASE WHEN ?2 IS NULL THEN errors ELSE json_insert(errors, '$[#]', json(?2)) END,
    result = CASE WHEN ?1 = 'succeeded' THEN ?3 ELSE result END,
    progress = CASE WHEN ?1 = 'succeeded' THEN 100.0 ELSE progress END,
    result_expires_at = CASE WHEN ?4 THEN ?5 ELSE result_expires_at END,
    run_at = coalesce(?6, run_at),
    attempts = attempts - ?7,
    finished_at = coalesce(?8, finished_at),
    worker_id = CASE WHEN ?9 THEN NULL ELSE worker_id END,
    history = json_insert(history, '$[#]', json(?10)),
    version = version + 1
WHERE id = ?11 AND status = 'running' AND attempts = ?12
"""

# the mutable part of a record, for read-modify-write through ``transitions``
REWRITE = """
UPDATE jobs SET status = ?, run_at = ?, attempts = ?, max_attempts = ?, started_at = ?,
    finished_at = ?, worker_id = ?, lease_expires_at = ?, progress = ?, progress_message = ?,
    result = ?, result_expires_at = ?, cancel_requested = ?, errors = ?, history = ?, version = ?
WHERE id = ?
"""

# INDEXED BY: without ANALYZE statistics the planner prefers the equality on jobs_status, which
# would walk every running job (or, below, every job of a queue)
EXPIRED = (f"SELECT {COLS} FROM jobs INDEXED BY jobs_lease"
           " WHERE status = 'running' AND lease_expires_at < ?"
           " ORDER BY lease_expires_at")
ANY_EXPIRED = ("SELECT 1 FROM jobs INDEXED BY jobs_lease"
               " WHERE status = 'running' AND lease_expires_at < ? LIMIT 1")
PRUNE_BATCH = 2000
PRUNE = (f"DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs INDEXED BY jobs_prune"
         f" WHERE status IN"
         f" {FINISHED_SQL} AND result_expires_at < ? LIMIT {PRUNE_BATCH})")
ANY_PRUNABLE = (f"SELECT 1 FROM jobs INDEXED BY jobs_prune WHERE status IN {FINISHED_SQL}"
                " AND result_expires_at < ? LIMIT 1")

# per queue: is a job queued, and when is the earliest scheduled one due
WORK_PROBE = """
SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_claim_queued
               WHERE status = 'queued' AND queue = ?1),
       (SELECT min(run_at) FROM jobs INDEXED BY jobs_claim_scheduled
        WHERE status = 'scheduled' AND queue = ?1)
"""

SCHEDULE_COLS = "id, spec, paused, last_fire, next_fire, state, updated_at"
PUT_SCHEDULE = f"""
INSERT INTO schedules ({SCHEDULE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, paused = excluded.paused,
    updated_at = excluded.updated_at
"""
CLAIM_FIRE = ("UPDATE schedules SET last_fire = ?1, next_fire = ?2, state = ?3 WHERE id = ?4"
              " AND (last_fire IS NULL OR last_fire < ?1)")
