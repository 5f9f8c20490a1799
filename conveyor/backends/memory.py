"""``memory://``: everything in one process's dicts, for tests and eager use.

One lock guards all state and one condition signals every change, so ``wait_for_work`` and
``wait_for_change`` wake at once. Records are copied in and out so callers can never mutate
stored state by accident.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence

from ..errors import BackendError, InvalidTransition, JobNotFound
from . import transitions as t
from .base import (
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


class MemoryBackend:
    name = "memory"

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._jobs: dict[str, JobRecord] = {}
        self._keys: dict[str, str] = {}
        self._schedules: dict[str, ScheduleRecord] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._changed = threading.Condition(threading.Lock())

    # -- lifecycle ---------------------------------------------------------------------------

    def check(self) -> None:
        return None

    def close(self) -> None:
        return None

    def migrate(self, check_only: bool = False) -> list[str]:
        return []

    # -- jobs --------------------------------------------------------------------------------

    def _store(self, job: JobRecord) -> JobRecord:
        if job.key is not None:
            existing = self._jobs.get(self._keys.get(job.key, ""))
            if existing is not None and existing.status in LIVE:
                return copy.deepcopy(existing)
        if job.id in self._jobs:
            raise BackendError(f"a job with id {job.id} already exists")
        stored = copy.deepcopy(job)
        self._jobs[job.id] = stored
        if job.key is not None:
            self._keys[job.key] = job.id
        return copy.deepcopy(stored)

    def enqueue(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        with self._changed:
            stored = [self._store(job) for job in jobs]
            self._changed.notify_all()
        return stored

    def claim(self, queues: Sequence[str], limit: int, worker_id: str, lease: float,
              now: float, wait: float = 0.0) -> list[JobRecord]:
        if wait > 0:
            return claim_after_wait(self, queues, limit, worker_id, lease, now, wait)
        order = list(queues)
        with self._changed:
            due = [j for j in self._jobs.values() if j.queue in order and t.is_due(j, now)]
            due.sort(key=lambda j: t.claim_order(j, order))
            claimed = due[:limit]
            for job in claimed:
                t.claim(job, worker_id, lease, now)
            if claimed:
                self._changed.notify_all()
            return copy.deepcopy(claimed)

    def extend_leases(self, leases: Sequence[tuple[str, int]], lease: float,
                      now: float) -> dict[str, LeaseState]:
        states: dict[str, LeaseState] = {}
        with self._changed:
            for job_id, attempt in leases:
                job = self._jobs.get(job_id)
                if not t.holds(job, attempt):
                    states[job_id] = "lost"
                    continue
                assert job is not None
                job.lease_expires_at = now + lease
                states[job_id] = "cancel" if job.cancel_requested else "ok"
        return states

    def set_progress(self, job_id: str, attempt: int, percent: float, message: str | None,
                     now: float) -> LeaseState:
        with self._changed:
            job = self._jobs.get(job_id)
            if not t.holds(job, attempt):
                return "lost"
            assert job is not None
            t.set_progress(job, percent, message)
            self._changed.notify_all()
            return "cancel" if job.cancel_requested else "ok"

    def finish(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        applied = []
        with self._changed:
            for outcome in outcomes:
                job = self._jobs.get(outcome.job_id)
                ok = t.holds(job, outcome.attempt)
                if ok:
                    assert job is not None
                    t.apply_outcome(job, outcome, now)
                applied.append(ok)
            self._changed.notify_all()
        return applied

    def _change(self, job_id: str, now: float, rule: str) -> JobRecord:
        with self._changed:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
            if getattr(t, rule)(job, now):
                self._changed.notify_all()
            return copy.deepcopy(job)

    def cancel(self, job_id: str, now: float) -> JobRecord:
        return self._change(job_id, now, "cancel")

    def retry(self, job_id: str, now: float) -> JobRecord:
        with self._changed:
            job = self._jobs.get(job_id)
            holder = self._jobs.get(self._keys.get(job.key, "")) if job and job.key else None
            retriable = job is not None and job.status in ("failed", "cancelled")
            if retriable and holder is not None and holder.id != job_id \
                    and holder.status in LIVE:
                raise InvalidTransition(f"job {job_id} cannot be retried: job {holder.id} "
                                        f"holds its key {job.key!r}", job_id=job_id)
            if job is not None and job.key is not None and t.retry(job, now):
                self._keys[job.key] = job_id
                self._changed.notify_all()
                return copy.deepcopy(job)
        return self._change(job_id, now, "retry")

    def delete(self, job_id: str) -> bool:
        with self._changed:
            job = self._jobs.pop(job_id, None)
            if job is not None and job.key is not None and self._keys.get(job.key) == job_id:
                del self._keys[job.key]
            self._changed.notify_all()
            return job is not None

    def get(self, job_id: str) -> JobRecord | None:
        with self._changed:
            job = self._jobs.get(job_id)
            return copy.deepcopy(job) if job is not None else None

    def stats(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        with self._changed:
            for job in self._jobs.values():
                per_queue = counts.setdefault(job.queue, {})
                per_queue[job.status] = per_queue.get(job.status, 0) + 1
        return counts

    def requeue_expired(self, now: float) -> list[str]:
        with self._changed:
            expired = [j for j in self._jobs.values() if j.status == "running"
                       and j.lease_expires_at is not None and j.lease_expires_at < now]
            for job in expired:
                t.expire(job, now)
            if expired:
                self._changed.notify_all()
            return [j.id for j in expired]

    def prune(self, now: float) -> int:
        with self._changed:
            old = [j.id for j in self._jobs.values() if j.finished
                   and j.result_expires_at is not None and j.result_expires_at < now]
            for job_id in old:
                job = self._jobs.pop(job_id)
                if job.key is not None and self._keys.get(job.key) == job_id:
                    del self._keys[job.key]
            return len(old)

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        wanted = set(queues)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                now = time.time()
                if any(j.queue in wanted and t.is_due(j, now) for j in self._jobs.values()):
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                # scheduled jobs become due without any notify: wake for the earliest of them
                soonest = min((j.run_at for j in self._jobs.values()
                               if j.queue in wanted and j.status == "scheduled"), default=None)
                if soonest is not None:
                    remaining = min(remaining, max(soonest - now, 0.001))
                self._changed.wait(remaining)

    def wait_for_change(self, job_id: str, version: int, timeout: float) -> JobRecord | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                job = self._jobs.get(job_id)
                if job is None or job.version != version:
                    return copy.deepcopy(job) if job is not None else None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return copy.deepcopy(job)
                self._changed.wait(remaining)

    def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        with self._changed:
            ids = sorted(self._jobs, reverse=True)
            found: list[JobRecord] = []
            for job_id in ids:
                if cursor is not None and job_id >= cursor:
                    continue
                job = self._jobs[job_id]
                if ((filter.status and job.status != filter.status)
                        or (filter.queue and job.queue != filter.queue)
                        or (filter.task and job.task != filter.task)):
                    continue
                found.append(copy.deepcopy(job))
                if len(found) > limit:
                    break
        more = len(found) > limit
        page = found[:limit]
        return Page(page, page[-1].id if more and page else None)

    # -- schedules ---------------------------------------------------------------------------

    def put_schedule(self, schedule: ScheduleRecord) -> None:
        with self._changed:
            existing = self._schedules.get(schedule.id)
            stored = copy.deepcopy(schedule)
            if existing is not None:
                stored.last_fire = existing.last_fire
                stored.next_fire = existing.next_fire
                stored.state = existing.state
            self._schedules[schedule.id] = stored

    def get_schedules(self) -> list[ScheduleRecord]:
        with self._changed:
            return [copy.deepcopy(s) for _, s in sorted(self._schedules.items())]

    def delete_schedule(self, schedule_id: str) -> bool:
        with self._changed:
            return self._schedules.pop(schedule_id, None) is not None

    def set_schedule_paused(self, schedule_id: str, paused: bool) -> bool:
        with self._changed:
            schedule = self._schedules.get(schedule_id)
            if schedule is None:
                return False
            schedule.paused = paused
            return True

    def claim_fire(self, schedule_id: str, fire_time: float, next_fire: float | None,
                   state: str, jobs: Sequence[JobRecord]) -> bool:
        with self._changed:
            schedule = self._schedules.get(schedule_id)
            if schedule is None or (schedule.last_fire is not None
                                    and schedule.last_fire >= fire_time):
                return False
            for job in jobs:
                self._store(job)
            schedule.last_fire = fire_time
            schedule.next_fire = next_fire
            schedule.state = state
            self._changed.notify_all()
            return True

    def update_schedule_state(self, schedule_id: str, next_fire: float | None,
                              state: str) -> None:
        with self._changed:
            schedule = self._schedules.get(schedule_id)
            if schedule is not None:
                schedule.next_fire = next_fire
                schedule.state = state

    # -- workers -----------------------------------------------------------------------------

    def heartbeat_worker(self, info: WorkerInfo, ttl: float) -> None:
        with self._changed:
            self._workers[info.id] = (copy.deepcopy(info), ttl)

    def list_workers(self, now: float) -> list[WorkerInfo]:
        with self._changed:
            return [copy.deepcopy(info) for _, (info, ttl) in sorted(self._workers.items())
                    if info.last_heartbeat + ttl > now]

    def remove_worker(self, worker_id: str) -> None:
        with self._changed:
            self._workers.pop(worker_id, None)
