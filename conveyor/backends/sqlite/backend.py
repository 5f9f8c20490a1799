""":class:`SQLiteBackend`: the Backend protocol's methods on one SQLite file (see the package
docstring for the concurrency model)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ...errors import ConfigurationError, InvalidTransition, JobNotFound
from .. import transitions as t
from ..base import (
    JobFilter,
    JobRecord,
    LeaseState,
    Outcome,
    Page,
    ScheduleRecord,
    WorkerInfo,
    claim_after_wait,
)
from . import queries as q
from . import schema
from .connections import Connections
from .rows import dumps, finish_params, insert_params, job_from_row, rewrite_params, transition
from .settings import parse_settings
from .waiting import Waiter

T = TypeVar("T")

#: RETURNING (3.35) is the newest feature used; json_each and the '$[#]' path (3.31) predate it
MIN_SQLITE = (3, 35, 0)

#: how long the expired rows of the worker registry are kept before a heartbeat sweeps them
_WORKER_GRACE = 3600.0


class SQLiteBackend:
    """The Backend protocol on one SQLite file (see the package docstring)."""

    name = "sqlite"

    def __init__(self, url: str, **options: Any) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigurationError(
                f"the sqlite backend needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; "
                f"this Python links SQLite {sqlite3.sqlite_version}")
        self.url = url
        settings = parse_settings(url, options)
        self.path = settings.path
        self.busy_timeout = settings.busy_timeout
        self.synchronous = settings.synchronous
        self.auto_migrate = settings.auto_migrate
        # creates the file's directory
        self._connections = Connections(self.path, self.busy_timeout, self.synchronous)
        self._waiter = Waiter(self._connections)
        self._list_sql: dict[tuple[bool, bool, bool, bool], str] = {}
        try:
            self._connections.conn()  # a file that cannot be used fails here, not at first use
            if self.auto_migrate:
                schema.migrate(self._connections, check_only=False)
        except BaseException:
            self.close()
            raise

    def _write(self, doing: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction (see :meth:`Connections.write`)."""
        return self._connections.write(doing, work)

    def _read(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._connections.read(doing, sql, params)

    # -- lifecycle -------------------------------------------------------------------------------

    def migrate(self, check_only: bool = False) -> list[str]:
        return schema.migrate(self._connections, check_only)

    def check(self) -> None:
        schema.check(self._connections)

    def close(self) -> None:
        self._connections.close()  # first: no connection opens after this
        self._waiter.close()

    # -- jobs ------------------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        if not jobs:
            return []
        params = [insert_params(job) for job in jobs]
        if any(job.key is not None for job in jobs):
            return self._write("enqueue", lambda conn: self._store(conn, jobs, params))

        # the hot path: no key, so what is stored is exactly what was given
        def insert(conn: sqlite3.Connection) -> list[JobRecord]:
            if len(params) == 1:
                conn.execute(q.INSERT, params[0])
            else:
                conn.executemany(q.INSERT, params)
            return list(jobs)

        return self._write("enqueue", insert)

    def _store(self, conn: sqlite3.Connection, jobs: Sequence[JobRecord],
               params: list[tuple[Any, ...]]) -> list[JobRecord]:
        stored: list[JobRecord] = []
        for job, row in zip(jobs, params, strict=True):
            if job.key is None:
                conn.execute(q.INSERT, row)
                stored.append(job)
                continue
            if conn.execute(q.INSERT_KEYED, row).rowcount == 1:
                stored.append(job)
                continue
            existing = conn.execute(q.SELECT_LIVE_KEY, (job.key,)).fetchall()
            stored.append(job_from_row(existing[0]))
        return stored

    def claim(self, queues: Sequence[str], limit: int, worker_id: str, lease: float,
              now: float, wait: float = 0.0) -> list[JobRecord]:
        if wait > 0:
            return claim_after_wait(self, queues, limit, worker_id, lease, now, wait)
        if limit <= 0 or not queues:
            return []
        order: dict[str, int] = {}
        for queue in queues:
            order.setdefault(queue, len(order))
        running = transition("running", now)

        def take(conn: sqlite3.Connection) -> list[Any]:
            rows: list[Any] = []
            for queue in order:
                rows += conn.execute(q.CLAIM, (now, worker_id, now + lease, running, queue,
                                               limit - len(rows))).fetchall()
                if len(rows) >= limit:
                    break
            return rows

        rows = self._write("claim jobs", take)
        # RETURNING gives no order: restore the claim order
        rows.sort(key=lambda r: (order[r[2]], -r[5], r[7], r[0]))
        return [job_from_row(row) for row in rows]

    def extend_leases(self, leases: Sequence[tuple[str, int]], lease: float,
                      now: float) -> dict[str, LeaseState]:
        if not leases:
            return {}
        ids = dumps([job_id for job_id, _ in leases])
        until = now + lease

        def renew(conn: sqlite3.Connection) -> dict[str, LeaseState]:
            held = {job_id: (attempts, cancel) for job_id, attempts, cancel
                    in conn.execute(q.HELD, (ids,))}
            states: dict[str, LeaseState] = {}
            renewed = []
            for job_id, attempt in leases:
                found = held.get(job_id)
                if found is None or found[0] != attempt:
                    states[job_id] = "lost"
                    continue
                states[job_id] = "cancel" if found[1] else "ok"
                renewed.append((until, job_id, attempt))
            if renewed:
                conn.executemany(q.EXTEND, renewed)
            return states

        return self._write("extend leases", renew)

    def set_progress(self, job_id: str, attempt: int, percent: float, message: str | None,
                     now: float) -> LeaseState:
        def record(conn: sqlite3.Connection) -> LeaseState:
            rows = conn.execute(q.PROGRESS, (percent, message, job_id, attempt)).fetchall()
            if not rows:
                return "lost"
            return "cancel" if rows[0][0] else "ok"

        return self._write("record progress", record)

    def finish(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        if not outcomes:
            return []
        ids = dumps([o.job_id for o in outcomes])
        params = [finish_params(o, now) for o in outcomes]

        def apply(conn: sqlite3.Connection) -> list[bool]:
            held = {job_id: attempts for job_id, attempts, _ in conn.execute(q.HELD, (ids,))}
            applied: list[bool] = []
            rows = []
            for outcome, row in zip(outcomes, params, strict=True):
                # pop: a second outcome for one job in the same batch finds it finished
                ok = held.get(outcome.job_id) == outcome.attempt
                if ok:
                    del held[outcome.job_id]
                    rows.append(row)
                applied.append(ok)
            if rows:
                conn.executemany(q.FINISH, rows)
            return applied

        return self._write("record finished jobs", apply)

    def _change(self, job_id: str, now: float, rule: Callable[[JobRecord, float], bool],
                doing: str) -> JobRecord:
        def change(conn: sqlite3.Connection) -> JobRecord:
            rows = conn.execute(q.GET, (job_id,)).fetchall()
            if not rows:
                raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
            job = job_from_row(rows[0])
            if rule(job, now):
                try:
                    conn.execute(q.REWRITE, rewrite_params(job))
                except sqlite3.IntegrityError as exc:
                    # only retry makes a finished job live again; jobs_live_key refuses it while
                    # a newer live job holds the key, and the transaction rolls back whole
                    holder = conn.execute("SELECT id FROM jobs WHERE key = ? AND key IS NOT NULL"
                                          " AND status IN ('scheduled', 'queued', 'running')",
                                          (job.key,)).fetchall()
                    if job.key is None or not holder:
                        raise
                    raise InvalidTransition(
                        f"job {job_id} cannot be retried: job {holder[0][0]} holds its key "
                        f"{job.key!r}", job_id=job_id) from exc
            return job

        return self._write(doing, change)

    def cancel(self, job_id: str, now: float) -> JobRecord:
        return self._change(job_id, now, t.cancel, "cancel a job")

    def retry(self, job_id: str, now: float) -> JobRecord:
        return self._change(job_id, now, t.retry, "retry a job")

    def delete(self, job_id: str) -> bool:
        return self._write("delete a job", lambda conn: conn.execute(
            "DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 1)

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._read("read a job", q.GET, (job_id,))
        return job_from_row(rows[0]) if rows else None


    def stats(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for queue, status, count in self._read(
                "count jobs", "SELECT queue, status, count(*) FROM jobs GROUP BY queue, status"):
            counts.setdefault(queue, {})[status] = count
        return counts

    def requeue_expired(self, now: float) -> list[str]:
        # a read first: every worker calls this periodically, and the write lock is not free
        if not self._read("scan expired leases", q.ANY_EXPIRED, (now,)):
            return []

        def expire(conn: sqlite3.Connection) -> list[str]:
            jobs = [job_from_row(row) for row in conn.execute(q.EXPIRED, (now,)).fetchall()]
            for job in jobs:
                t.expire(job, now)
            conn.executemany(q.REWRITE, [rewrite_params(job) for job in jobs])
            return [job.id for job in jobs]

        return self._write("requeue expired jobs", expire)

    def prune(self, now: float) -> int:
        total = 0
        # in bounded batches, each its own transaction: a large prune never holds the write
        # lock long enough to stall workers
        while self._read("scan prunable jobs", q.ANY_PRUNABLE, (now,)):
            deleted = self._write("prune jobs", lambda conn: conn.execute(
                q.PRUNE, (now,)).rowcount)
            total += deleted
            if deleted < q.PRUNE_BATCH:
                break
        return total

    # -- waiting ---------------------------------------------------------------------------------

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        self._waiter.wait_for_work(queues, timeout)

    def wait_for_change(self, job_id: str, version: int, timeout: float) -> JobRecord | None:
        return self._waiter.wait_for_change(job_id, version, timeout, self.get)

    # -- schedules -------------------------------------------------------------------------------

    def put_schedule(self, schedule: ScheduleRecord) -> None:
        s = schedule
        self._write("store a schedule", lambda conn: conn.execute(q.PUT_SCHEDULE, (
            s.id, s.spec, s.paused, s.last_fire, s.next_fire, s.state, s.updated_at)))

    def get_schedules(self) -> list[ScheduleRecord]:
        rows = self._read("read schedules",
                          f"SELECT {q.SCHEDULE_COLS} FROM schedules ORDER BY id")
        return [ScheduleRecord(sid, spec, bool(paused), last, next_, state, updated)
                for sid, spec, paused, last, next_, state, updated in rows]

    def delete_schedule(self, schedule_id: str) -> bool:
        return self._write("delete a schedule", lambda conn: conn.execute(
            "DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount == 1)

    def set_schedule_paused(self, schedule_id: str, paused: bool) -> bool:
        return self._write("pause a schedule", lambda conn: conn.execute(
            "UPDATE schedules SET paused = ? WHERE id = ?", (paused, schedule_id)).rowcount == 1)

    def claim_fire(self, schedule_id: str, fire_time: float, next_fire: float | None,
                   state: str, jobs: Sequence[JobRecord]) -> bool:
        params = [insert_params(job) for job in jobs]

        def fire(conn: sqlite3.Connection) -> bool:
            if conn.execute(q.CLAIM_FIRE, (fire_time, next_fire, state,
                                           schedule_id)).rowcount != 1:
                return False
            self._store(conn, jobs, params)
            return True

        return self._write("claim a schedule fire", fire)

    def update_schedule_state(self, schedule_id: str, next_fire: float | None,
                              state: str) -> None:
        self._write("update a schedule", lambda conn: conn.execute(
            "UPDATE schedules SET next_fire = ?, state = ? WHERE id = ?",
            (next_fire, state, schedule_id)))

    # -- workers ---------------------------------------------------------------------------------

    def heartbeat_worker(self, info: WorkerInfo, ttl: float) -> None:
        expires = info.last_heartbeat + ttl

        def beat(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO workers (id, info, expires_at) VALUES (?, ?, ?)",
                         (info.id, info.to_json(), expires))
            # workers that died without saying so are forgotten after a grace period
            conn.execute("DELETE FROM workers WHERE expires_at < ?",
                         (info.last_heartbeat - _WORKER_GRACE,))

        self._write("register a worker", beat)

    def list_workers(self, now: float) -> list[WorkerInfo]:
        rows = self._read("list workers",
                          "SELECT info FROM workers WHERE expires_at > ? ORDER BY id", (now,))
        return [WorkerInfo.from_json(info) for (info,) in rows]

    def remove_worker(self, worker_id: str) -> None:
        self._write("remove a worker", lambda conn: conn.execute(
            "DELETE FROM workers WHERE id = ?", (worker_id,)))

    # -- listing ---------------------------------------------------------------------------------

    def _list_statement(self, shape: tuple[bool, bool, bool, bool]) -> str:
        sql = self._list_sql.get(shape)
        if sql is None:
            terms = [term for term, used in zip(
                ("status = ?", "queue = ?", "task = ?", "id < ?"), shape, strict=True) if used]
            where = f" WHERE {' AND '.join(terms)}" if terms else ""
            sql = self._list_sql[shape] = (f"SELECT {q.COLS} FROM jobs{where}"
                                           " ORDER BY id DESC LIMIT ?")
        return sql

    # last in the class: a method named ``list`` shadows the builtin for annotations below it
    def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        values = (filter.status, filter.queue, filter.task, cursor)
        shape = (bool(values[0]), bool(values[1]), bool(values[2]), bool(values[3]))
        params: list[Any] = [v for v in values if v]
        params.append(max(limit, 0) + 1)
        rows = self._read("list jobs", self._list_statement(shape), params)
        more = len(rows) > limit
        jobs = [job_from_row(row) for row in rows[:limit]]
        return Page(jobs, jobs[-1].id if more and jobs else None)
