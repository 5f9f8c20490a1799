""":class:`PostgresBackend`: the Backend protocol's methods, each one statement (see the package
docstring for how the protocol maps onto PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from ...errors import (
    BackendError,
    BackendUnavailable,
    InvalidTransition,
    JobNotFound,
    SchemaOutdated,
)
from ..base import (
    LIVE,
    JobFilter,
    JobRecord,
    LeaseState,
    Outcome,
    Page,
    ScheduleRecord,
    WorkerInfo,
    claim_after_wait,
)
from .connections import Address, Pool
from .listener import Wakeups, channel
from .queries import Queries
from .rows import clean, error_json, history_entry, job_arrays, job_from_row
from .schema import Migrator
from .settings import parse_settings

Execute = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]


class PostgresBackend:
    """The Backend protocol on PostgreSQL (psycopg 3 and a connection pool)."""

    name = "postgres"

    def __init__(self, url: str, **options: Any) -> None:
        settings = parse_settings(url, options)
        self.url = url
        self.schema = settings.schema
        self._address = Address(settings.dsn)
        self._q = Queries(self.schema)
        self._migrator = Migrator(self.schema, self._q)
        self._work_channel = channel(self.schema, "work")
        self._changes_channel = channel(self.schema, "changes")
        # a lambda, so the connection is made by whatever listen_connection is at the time
        self._wakeups = Wakeups(lambda: self._address.listen_connection(), self._work_channel,
                                self._changes_channel, settings.poll_interval)
        if settings.auto_migrate:
            self.migrate()
        self._pool = Pool(self._address, settings, name=f"conveyor-{self.schema}")

    def __repr__(self) -> str:
        return f"<PostgresBackend {self._address.where} schema={self.schema!r}>"

    def _rows(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self._pool.rows(query, params)

    # -- lifecycle -----------------------------------------------------------------------------

    def check(self) -> None:
        pending = self._pool.run(lambda conn, _: self._migrator.pending(conn))
        if pending:
            raise SchemaOutdated(
                f"the Conveyor tables in PostgreSQL schema {self.schema!r} at "
                f"{self._address.where} are out of date ({len(pending)} pending migration(s): "
                f"{', '.join(pending)}); run `conveyor -A <app> migrate`", pending=pending)

    def migrate(self, check_only: bool = False) -> list[str]:
        try:
            with self._address.connect() as conn:
                if check_only:
                    return self._migrator.pending(conn)
                return self._migrator.apply(conn)
        except psycopg.OperationalError as exc:
            raise BackendUnavailable(
                f"PostgreSQL at {self._address.where} is unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise BackendError(f"migrating PostgreSQL schema {self.schema!r} failed: {exc}",
                               ) from exc

    def close(self) -> None:
        # both are idempotent: closing twice is harmless
        self._wakeups.close()
        self._pool.close()

    # -- enqueue -------------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        if not jobs:
            return []
        return self._pool.run(
            lambda conn, retrying: self._store(_executor(conn), jobs, retrying))

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
            params: dict[str, Any] = job_arrays([job for _, job in pending])
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
        found = [job_from_row(r) for r in execute(self._q.lookup, {
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
              now: float, wait: float = 0.0) -> list[JobRecord]:
        if wait > 0:
            return claim_after_wait(self, queues, limit, worker_id, lease, now, wait)
        order = list(dict.fromkeys(queues))
        if limit <= 0 or not order:
            return []
        rows = self._rows(self._q.claim, {
            "queues": order, "limit": limit, "now": now, "worker": worker_id,
            "until": now + lease, "entry": history_entry("running", now),
            "changes": self._changes_channel})
        claimed = [job_from_row(r) for r in rows]
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
            "message": clean(message) if message is not None else None,
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
            "errors": [error_json([o.error]) if o.error is not None else None for o in batch],
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
        return job_from_row(rows[0])

    def cancel(self, job_id: str, now: float) -> JobRecord:
        return self._change(self._q.cancel, job_id, now, history_entry("cancelled", now),
                            wake=False)

    def retry(self, job_id: str, now: float) -> JobRecord:
        try:
            return self._change(self._q.retry, job_id, now, history_entry("queued", now),
                                wake=True)
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
        return job_from_row(rows[0]) if rows else None

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

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Wait for a NOTIFY naming one of ``queues``, the earliest scheduled job of those
        queues coming due, or ``timeout``. Database failures are logged, not raised: the
        wait then lasts one poll interval and the caller's next claim reports the failure."""
        self._wakeups.wait_for_work(queues, timeout, self._due)

    def _due(self, queues: list[str], pool_timeout: float) -> tuple[bool, float | None]:
        [(queued, next_run)] = self._pool.run(
            lambda conn, _: conn.execute(self._q.due, {"queues": queues}).fetchall(),
            pool_timeout=pool_timeout)
        return queued, next_run

    def wait_for_change(self, job_id: str, version: int, timeout: float) -> JobRecord | None:
        """Wait for a NOTIFY on the changes channel naming the job (or, while the LISTEN
        connection is down, poll every ``poll_interval``), then re-read the job."""
        return self._wakeups.wait_for_change(job_id, version, timeout, self.get)

    # -- schedules -----------------------------------------------------------------------------

    def put_schedule(self, schedule: ScheduleRecord) -> None:
        self._pool.write(self._q.put_schedule, asdict(schedule))

    def get_schedules(self) -> list[ScheduleRecord]:
        return [ScheduleRecord(*row) for row in self._rows(self._q.get_schedules, {})]

    def delete_schedule(self, schedule_id: str) -> bool:
        return self._pool.write(self._q.delete_schedule, {"id": schedule_id}) > 0

    def set_schedule_paused(self, schedule_id: str, paused: bool) -> bool:
        return self._pool.write(self._q.pause_schedule, {"id": schedule_id,
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

        return self._pool.run(work)

    def update_schedule_state(self, schedule_id: str, next_fire: float | None,
                              state: str) -> None:
        self._pool.write(self._q.schedule_state, {"id": schedule_id, "next": next_fire,
                                                  "state": state})

    # -- workers -------------------------------------------------------------------------------

    def heartbeat_worker(self, info: WorkerInfo, ttl: float) -> None:
        self._pool.write(self._q.heartbeat, {**asdict(info), "ttl": ttl,
                                             "expires_at": info.last_heartbeat + ttl})

    def list_workers(self, now: float) -> list[WorkerInfo]:
        return [WorkerInfo(id=r[0], host=r[1], pid=r[2], kind=r[3], queues=list(r[4]),
                           concurrency=r[5], current_jobs=list(r[6]), started_at=r[7],
                           last_heartbeat=r[8])
                for r in self._rows(self._q.list_workers, {"now": now})]

    def remove_worker(self, worker_id: str) -> None:
        self._pool.write(self._q.remove_worker, {"id": worker_id})

    # last in the class: a method named ``list`` shadows the builtin for annotations below it
    def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        params: dict[str, Any] = {"status": filter.status, "queue": filter.queue,
                                  "task": filter.task, "cursor": cursor, "limit": limit + 1}
        rows = self._rows(self._q.list(filter, cursor is not None), params)
        jobs = [job_from_row(r) for r in rows]
        more = len(jobs) > limit
        page = jobs[:limit]
        return Page(page, page[-1].id if more and page else None)


def _executor(conn: psycopg.Connection[Any]) -> Execute:
    return lambda query, params: conn.execute(query, params).fetchall()
