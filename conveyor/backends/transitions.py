"""The state rules of the Backend protocol as pure functions on a :class:`JobRecord`.

Backends that keep the record as a document (memory, and any engine that stores the JSON form)
call these inside their own atomic step, so the rules are written once. Each function mutates
the record it is given and says whether anything changed.
"""

from __future__ import annotations

from .base import FINISHED, AttemptError, JobRecord, Outcome, Transition


def _enter(job: JobRecord, status: str, now: float) -> None:
    job.status = status
    job.history.append(Transition(status, now))
    job.version += 1


def is_due(job: JobRecord, now: float) -> bool:
    return job.status == "queued" or (job.status == "scheduled" and job.run_at <= now)


def claim_order(job: JobRecord, queues: list[str]) -> tuple[int, int, float, str]:
    return (queues.index(job.queue), -job.priority, job.run_at, job.id)


def claim(job: JobRecord, worker_id: str, lease: float, now: float) -> None:
    job.attempts += 1
    job.started_at = now
    job.worker_id = worker_id
    job.lease_expires_at = now + lease
    _enter(job, "running", now)


def holds(job: JobRecord | None, attempt: int) -> bool:
    """Whether ``attempt`` is still the running attempt of ``job`` (the fence)."""
    return job is not None and job.status == "running" and job.attempts == attempt


def apply_outcome(job: JobRecord, outcome: Outcome, now: float) -> None:
    job.lease_expires_at = None
    if outcome.error is not None:
        job.errors.append(outcome.error)
    if outcome.status == "succeeded":
        job.result = outcome.result
        job.result_expires_at = outcome.result_expires_at
        job.progress = 100.0
    elif outcome.status in ("failed", "cancelled"):
        job.result_expires_at = outcome.result_expires_at
    elif outcome.status == "scheduled":
        job.run_at = outcome.run_at if outcome.run_at is not None else now
    elif outcome.status == "queued":
        job.attempts -= 1
        job.run_at = now
    if outcome.status in FINISHED:
        job.finished_at = now
    else:
        job.worker_id = None
    _enter(job, outcome.status, now)


def cancel(job: JobRecord, now: float) -> bool:
    if job.status in ("scheduled", "queued"):
        job.finished_at = now
        if job.result_ttl is not None:
            job.result_expires_at = now + job.result_ttl
        _enter(job, "cancelled", now)
        return True
    if job.status == "running" and not job.cancel_requested:
        job.cancel_requested = True
        job.version += 1
        return True
    return False


def retry(job: JobRecord, now: float) -> bool:
    if job.status not in ("failed", "cancelled"):
        return False
    job.max_attempts = max(job.max_attempts, job.attempts + 1)
    job.cancel_requested = False
    job.result = None
    job.result_expires_at = None
    job.finished_at = None
    job.worker_id = None
    job.run_at = now
    _enter(job, "queued", now)
    return True


def expire(job: JobRecord, now: float) -> None:
    """A running job whose lease ran out: back to the queue, or failed when out of attempts
    (cancelled, when a cancel had been requested)."""
    job.errors.append(AttemptError(
        attempt=job.attempts, type="WorkerLost", reason="worker_lost", at=now,
        message=f"worker {job.worker_id} stopped renewing its lease"))
    job.lease_expires_at = None
    job.worker_id = None
    if job.cancel_requested:
        job.finished_at = now
        if job.result_ttl is not None:
            job.result_expires_at = now + job.result_ttl
        _enter(job, "cancelled", now)
    elif job.attempts < job.max_attempts:
        job.run_at = now
        _enter(job, "queued", now)
    else:
        job.finished_at = now
        if job.result_ttl is not None:
            job.result_expires_at = now + job.result_ttl
        _enter(job, "failed", now)


def set_progress(job: JobRecord, percent: float, message: str | None) -> None:
    job.progress = percent
    job.progress_message = message
    job.version += 1
