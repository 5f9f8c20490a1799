"""The Backend protocol: the only door to storage.

Everything above this module (app, worker, scheduler, web) speaks these records and methods and
nothing else; each engine (memory, SQLite, Redis, PostgreSQL) implements them and passes
``tests/conformance``. Backends move *bytes*: arguments and results arrive already encoded as
JSON text and are stored verbatim; no backend ever sees a user object.

Conventions shared by every method:

* Times are float seconds since the epoch, passed in by the caller (``now=``) so that tests can
  inject a clock. Backends never read the wall clock for job decisions, except when waiting
  (``wait_for_*``, ``claim(wait=)``), which happens in real time.
* **Fencing.** A claim increments ``attempts``; the pair ``(job id, attempt)`` is the fence. Every
  write a worker makes about a running job (progress, lease, finish) names the attempt and is
  refused when the job is no longer ``running`` under that attempt — a worker that lost its lease
  can never overwrite newer state.
* Driver failures are raised as :class:`~conveyor.errors.BackendError` (or
  ``BackendUnavailable``), with the driver's exception as ``__cause__``.
* Backends are thread-safe: one instance is shared by a worker's threads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Status = Literal["scheduled", "queued", "running", "succeeded", "failed", "cancelled"]

#: every state, in lifecycle order
STATUSES: tuple[Status, ...] = ("scheduled", "queued", "running", "succeeded", "failed",
                                "cancelled")
#: states a job never leaves by itself
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
#: states in which an idempotency key is still taken
LIVE: frozenset[str] = frozenset({"scheduled", "queued", "running"})


@dataclass
class AttemptError:
    """Why one attempt did not succeed."""

    attempt: int
    type: str
    message: str
    traceback: str = ""
    at: float = 0.0
    #: machine-readable reason: "error", "timeout", "worker_lost", "retry", "cancelled"
    reason: str = "error"


@dataclass
class Transition:
    """A state the job entered, and when."""

    status: str
    at: float


@dataclass
class JobRecord:
    """A job as stored. ``args``/``kwargs``/``result`` are JSON text, never decoded here."""

    id: str
    task: str
    queue: str = "default"
    args: str = "[]"
    kwargs: str = "{}"
    priority: int = 0
    status: str = "queued"
    #: when the job becomes due (``scheduled`` jobs) or was made due
    run_at: float = 0.0
    created_at: float = 0.0
    attempts: int = 0
    max_attempts: int = 1
    timeout: float | None = None
    result_ttl: float | None = 86400.0
    key: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None
    lease_expires_at: float | None = None
    progress: float = 0.0
    progress_message: str | None = None
    result: str | None = None
    result_expires_at: float | None = None
    cancel_requested: bool = False
    errors: list[AttemptError] = field(default_factory=list)
    history: list[Transition] = field(default_factory=list)
    #: free-form string headers carried with the job (trace context, schedule id)
    headers: dict[str, str] = field(default_factory=dict)
    #: bumped by every change; lets event streams resume and skip what was seen
    version: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    # -- a compact JSON form, for backends that store the record as one document --------------

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> JobRecord:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        data = dict(data)
        data["errors"] = [AttemptError(**e) for e in data.get("errors") or []]
        data["history"] = [Transition(**t) for t in data.get("history") or []]
        return cls(**data)


@dataclass
class Outcome:
    """How one attempt ended, as the worker reports it to :meth:`JobStore.finish`.

    ``status`` is the state the job moves to: ``succeeded`` (with ``result`` and
    ``result_expires_at``), ``failed`` (with ``error``), ``scheduled`` (a retry: ``error`` and
    ``run_at``), ``queued`` (handed back unstarted-in-spirit at shutdown: the attempt is not
    counted) or ``cancelled`` (with ``error`` when it was stopped while running).
    """

    job_id: str
    attempt: int
    status: str
    result: str | None = None
    result_expires_at: float | None = None
    error: AttemptError | None = None
    run_at: float | None = None


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    queue: str | None = None
    task: str | None = None


@dataclass
class Page:
    """One page of a listing, newest first; ``cursor`` fetches the next page (None: last)."""

    jobs: list[JobRecord]
    cursor: str | None


@dataclass
class ScheduleRecord:
    """A periodic schedule as stored. ``spec`` is the scheduler's own JSON; ``state`` its notes
    (last outcome, recent job ids). Only ``last_fire`` is interpreted by backends."""

    id: str
    spec: str
    paused: bool = False
    #: the latest fire time claimed, the fence of :meth:`ScheduleStore.claim_fire`
    last_fire: float | None = None
    next_fire: float | None = None
    state: str = "{}"
    updated_at: float = 0.0


@dataclass
class WorkerInfo:
    """A live worker or scheduler process, as it registers itself."""

    id: str
    host: str
    pid: int
    kind: str = "worker"  # or "scheduler"
    queues: list[str] = field(default_factory=list)
    concurrency: int = 0
    current_jobs: list[str] = field(default_factory=list)
    started_at: float = 0.0
    last_heartbeat: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerInfo:
        return cls(**json.loads(text))


LeaseState = Literal["ok", "cancel", "lost"]


@runtime_checkable
class JobStore(Protocol):
    """Job operations. Every method is atomic on its own."""

    def enqueue(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        """Store new jobs (``status`` is ``queued`` or ``scheduled``) and return what is stored.

        For a job with a ``key``: when a job with the same key is in a LIVE state, nothing is
        stored for it and the existing job is returned in its place (the caller compares ids).
        The key check and the insert are one atomic step (two racing enqueues of one key store
        one job). A key of a finished job may be reused. Ids are unique: storing an existing id
        raises ``BackendError``.
        """
        ...

    def claim(self, queues: Sequence[str], limit: int, worker_id: str, lease: float,
              now: float, wait: float = 0.0) -> list[JobRecord]:
        """Atomically take up to ``limit`` due jobs and return them ``running``.

        Due: ``queued``, or ``scheduled`` with ``run_at <= now``. Order: the queues in the
        order given (all due jobs of the first queue before the second), then higher
        ``priority``, then earlier ``run_at``, then id. Each claimed job gets ``attempts + 1``,
        ``started_at = now``, ``worker_id``, ``lease_expires_at = now + lease`` and a
        ``running`` transition. Two concurrent callers never receive the same job.

        With ``wait`` > 0 and nothing due, block up to ``wait`` seconds for a job to become
        due and claim it then (``now`` advanced by the time waited); an empty list after the
        wait, or earlier, is allowed. Engines that can hand a job to a waiting worker in the
        enqueue's own step do (Redis); the others wait with :meth:`wait_for_work`
        (:func:`claim_after_wait`).
        """
        ...

    def extend_leases(self, leases: Sequence[tuple[str, int]], lease: float,
                      now: float) -> dict[str, LeaseState]:
        """Renew the leases of running jobs, named as ``(job id, attempt)``.

        Returns, per job id: ``"ok"`` (renewed to ``now + lease``), ``"cancel"`` (renewed, and
        a cancel was requested) or ``"lost"`` (not running under that attempt any more: stop
        working on it; nothing was changed).
        """
        ...

    def set_progress(self, job_id: str, attempt: int, percent: float, message: str | None,
                     now: float) -> LeaseState:
        """Record progress of a running attempt (fenced) and report its lease state."""
        ...

    def finish(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        """Record how attempts ended, in one round trip; per outcome, whether it was applied.

        An outcome is applied only while its job is ``running`` under that attempt (fencing);
        otherwise it is dropped and ``False`` returned. Applying clears the lease, sets
        ``finished_at`` for final states, appends ``error`` to ``errors``, and records the
        transition. ``queued`` outcomes give the attempt back (``attempts - 1``).
        """
        ...

    def cancel(self, job_id: str, now: float) -> JobRecord:
        """Cancel a job: ``scheduled``/``queued`` become ``cancelled`` at once; ``running``
        ones get ``cancel_requested`` (the worker stops them); finished ones are returned
        unchanged. Raises ``JobNotFound``."""
        ...

    def retry(self, job_id: str, now: float) -> JobRecord:
        """Queue a ``failed`` or ``cancelled`` job again now, with one more attempt allowed
        (``max_attempts = max(max_attempts, attempts + 1)``), clearing the cancel request
        and the result. Other states are returned unchanged. Raises ``JobNotFound``, and
        ``InvalidTransition`` (changing nothing) when the job has a key that another live job
        holds now."""
        ...

    def delete(self, job_id: str) -> bool:
        """Remove a job whatever its state; whether it existed."""
        ...

    def get(self, job_id: str) -> JobRecord | None:
        """The job, or None."""
        ...

    def stats(self) -> dict[str, dict[str, int]]:
        """Job counts as ``{queue: {status: count}}``; statuses with no job may be omitted."""
        ...

    def requeue_expired(self, now: float) -> list[str]:
        """Recover running jobs whose lease ended before ``now``; the ids recovered.

        With attempts left (``attempts < max_attempts``) a job goes back to ``queued``;
        otherwise it ends ``failed``. Either way an AttemptError with reason ``worker_lost``
        is recorded. Safe to call from many processes at once.
        """
        ...

    def prune(self, now: float) -> int:
        """Delete finished jobs whose ``result_expires_at`` is before ``now``; how many."""
        ...

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when a job may have become
        claimable on ``queues``. Spurious returns are allowed; a missed wake-up is not (at
        worst it costs the timeout)."""
        ...

    def wait_for_change(self, job_id: str, version: int, timeout: float) -> JobRecord | None:
        """Block until the job's ``version`` differs from ``version`` or ``timeout`` runs out;
        return the job as it then is (None if it does not exist)."""
        ...

    # last in the class: a method named ``list`` shadows the builtin for annotations below it
    def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        """Jobs matching every set field of ``filter``, newest (highest id) first.

        ``cursor`` is the value a previous page returned; pages never repeat or skip a job
        that existed when the first page was read.
        """
        ...


@runtime_checkable
class ScheduleStore(Protocol):
    """Periodic schedules and their exactly-once fire claims."""

    def put_schedule(self, schedule: ScheduleRecord) -> None:
        """Insert or replace a schedule's ``spec`` and ``paused``; keeps its ``last_fire``
        when it already exists (a redeploy must not re-fire past runs)."""
        ...

    def get_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, ordered by id."""
        ...

    def delete_schedule(self, schedule_id: str) -> bool:
        """Remove a schedule; whether it existed."""
        ...

    def set_schedule_paused(self, schedule_id: str, paused: bool) -> bool:
        """Pause or resume; whether the schedule exists."""
        ...

    def claim_fire(self, schedule_id: str, fire_time: float, next_fire: float | None,
                   state: str, jobs: Sequence[JobRecord]) -> bool:
        """Claim one fire time of a schedule, exactly once across all callers.

        Succeeds only when the stored ``last_fire`` is None or earlier than ``fire_time``; then,
        in the same atomic step, sets ``last_fire = fire_time``, ``next_fire``, ``state`` and
        enqueues ``jobs`` (as :meth:`JobStore.enqueue`). Returns False — changing nothing —
        when another caller claimed this or a later fire time, or the schedule is gone.
        """
        ...

    def update_schedule_state(self, schedule_id: str, next_fire: float | None,
                              state: str) -> None:
        """Store the scheduler's notes without claiming a fire time."""
        ...


@runtime_checkable
class WorkerRegistry(Protocol):
    """Which workers and schedulers are alive, for the API, dashboard and health checks."""

    def heartbeat_worker(self, info: WorkerInfo, ttl: float) -> None:
        """Register or refresh a worker; it counts as alive for ``ttl`` seconds."""
        ...

    def list_workers(self, now: float) -> list[WorkerInfo]:
        """Workers whose last heartbeat is younger than their ttl, by id."""
        ...

    def remove_worker(self, worker_id: str) -> None:
        """Forget a worker (graceful shutdown)."""
        ...


@runtime_checkable
class Backend(JobStore, ScheduleStore, WorkerRegistry, Protocol):
    """A complete engine: jobs, schedules and the worker registry, plus lifecycle."""

    #: the URL scheme family, for messages and metrics ("memory", "sqlite", ...)
    name: str

    def check(self) -> None:
        """Verify that storage is reachable and its schema current; raise ``BackendUnavailable``
        or ``SchemaOutdated`` (whose message says what to run) otherwise."""
        ...

    def migrate(self, check_only: bool = False) -> list[str]:
        """Bring the schema up to date; the names of the migrations applied (with
        ``check_only``: of those that would be applied, changing nothing)."""
        ...

    def close(self) -> None:
        """Release connections; further calls may fail."""
        ...


def claim_after_wait(store: JobStore, queues: Sequence[str], limit: int, worker_id: str,
                     lease: float, now: float, wait: float) -> list[JobRecord]:
    """``store.claim`` with ``wait`` built from ``claim`` and ``wait_for_work``."""
    claimed = store.claim(queues, limit, worker_id, lease, now)
    if claimed or wait <= 0:
        return claimed
    started = time.monotonic()
    store.wait_for_work(queues, wait)
    return store.claim(queues, limit, worker_id, lease, now + time.monotonic() - started)
