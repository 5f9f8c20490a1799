"""Conveyor: the facade users hold — configuration, task registry, enqueue and lookups."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

from . import serialize
from .backends import open_backend
from .backends.base import STATUSES, Backend, JobFilter, JobRecord, Transition
from .errors import ConfigurationError, JobNotFound, UnknownTask, ValidationError
from .ids import new_job_id
from .job import Job
from .middleware import Middleware
from .task import EnqueueOptions, Task, make_options

if TYPE_CHECKING:
    from .embedded import Embedded
    from .worker import Worker

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("conveyor")

DEFAULT_URL = "sqlite:///conveyor.db"
MAX_LIST_LIMIT = 1000


@dataclass
class JobPage:
    """One page of :meth:`Conveyor.list_jobs`: iterate it, and pass ``cursor`` for the next."""

    jobs: list[Job[Any]]
    cursor: str | None

    def __iter__(self) -> Iterator[Job[Any]]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` returns: turns a function into a typed :class:`Task` (an
    ``async def`` task's result type is what its coroutine returns)."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    def __call__(self, fn: Callable[..., Any], /) -> Task[Any, Any]: ...


def _seconds(value: float | timedelta | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


class Conveyor:
    """A job system: ``Conveyor("sqlite:///conveyor.db")`` (the default, also read from
    ``CONVEYOR_URL``), ``"redis://host:6379/0"``, ``"postgresql://host/db"`` or ``"memory://"``.

    Nothing connects until the first use, so an app module can be imported anywhere.
    """

    def __init__(self, url: str | None = None, *, payload_limit: int = 1 << 20,
                 lease: float = 30.0, result_ttl: float | timedelta | None = 86400.0,
                 default_queue: str = "default", clock: Callable[[], float] = time.time,
                 backend_options: dict[str, Any] | None = None) -> None:
        self.url = url or os.environ.get("CONVEYOR_URL") or DEFAULT_URL
        if payload_limit <= 0:
            raise ConfigurationError("payload_limit must be a positive number of bytes")
        if lease < 1:
            raise ConfigurationError("lease must be at least 1 second")
        self.payload_limit = payload_limit
        #: seconds a claimed job stays owned without a heartbeat
        self.lease = float(lease)
        self.result_ttl = _seconds(result_ttl)
        self.default_queue = default_queue
        #: the time source for every job decision; tests inject a fake one
        self.clock = clock
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: periodic schedules declared in code, by id (filled by @app.periodic)
        self.periodic_schedules: dict[str, Any] = {}
        self.middleware: list[Middleware] = []
        #: "module:attribute" this app was loaded from (the CLI sets it; process pools need it)
        self.import_path: str | None = None
        self._backend_options = backend_options or {}
        self._backend: Backend | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Conveyor {self.url} tasks={len(self.tasks)}>"

    @property
    def backend(self) -> Backend:
        """The storage engine, opened on first use."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = open_backend(self.url, **self._backend_options)
        return self._backend

    def close(self) -> None:
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    # -- registering tasks -------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, fn: None = None, /, *, name: str | None = None, queue: str | None = None,
             priority: int = 0, retries: int = 0, retry_backoff: float = 1.0,
             retry_backoff_max: float = 300.0, timeout: float | timedelta | None = None,
             result_ttl: float | timedelta | None = None,
             on_success: Callable[..., Any] | None = None,
             on_failure: Callable[..., Any] | None = None,
             on_retry: Callable[..., Any] | None = None,
             expose: bool = False) -> TaskDecorator: ...

    def task(self, fn: Callable[P, R] | None = None, /, *, name: str | None = None,
             queue: str | None = None, priority: int = 0, retries: int = 0,
             retry_backoff: float = 1.0, retry_backoff_max: float = 300.0,
             timeout: float | timedelta | None = None,
             result_ttl: float | timedelta | None = None,
             on_success: Callable[..., Any] | None = None,
             on_failure: Callable[..., Any] | None = None,
             on_retry: Callable[..., Any] | None = None,
             expose: bool = False) -> Task[Any, Any] | TaskDecorator:
        """Register a function (``def`` or ``async def``) as a task.

        ``retries`` extra attempts after the first, waiting ``retry_backoff`` seconds doubled
        per attempt (with jitter) up to ``retry_backoff_max``; ``timeout`` seconds per attempt;
        ``result_ttl`` how long a finished job is kept (default: the app's, 1 day; None keeps
        it); ``on_success(job, result)`` / ``on_failure(job, exc)`` / ``on_retry(job, exc)``
        run in the worker; ``expose=True`` allows submitting it over the HTTP API.
        """
        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise ConfigurationError(f"task {task_name}: retries must be an int >= 0")
            if task_name in self.tasks and self.tasks[task_name].fn is not func:
                raise ConfigurationError(f"two tasks are named {task_name!r}; give one "
                                         "another name=")
            created: Task[Any, Any] = Task(
                self, func, name=task_name, queue=queue or self.default_queue,
                priority=priority, retries=retries, retry_backoff=retry_backoff,
                retry_backoff_max=retry_backoff_max, timeout=_seconds(timeout),
                result_ttl=_seconds(result_ttl) if result_ttl is not None else self.result_ttl,
                on_success=on_success, on_failure=on_failure, on_retry=on_retry, expose=expose)
            self.tasks[task_name] = created
            return created

        return register(fn) if fn is not None else cast(TaskDecorator, register)

    def get_task(self, name: str) -> Task[Any, Any]:
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise UnknownTask(f"no task is registered as {name!r} (known: {known})",
                              task=name) from None

    def periodic(self, *, every: float | timedelta | None = None, cron: str | None = None,
                 **options: Any) -> TaskDecorator:
        """Run a function on a schedule (see :mod:`conveyor.scheduler`); it becomes a task."""
        from .scheduler import declare_periodic

        return declare_periodic(self, every=every, cron=cron, **options)

    def add_schedule(self, task: Task[Any, Any] | str, **options: Any) -> Any:
        """Add a schedule for an existing task at run time; it is stored in the backend."""
        from .scheduler import add_schedule

        return add_schedule(self, task, **options)

    def scheduler_status(self) -> dict[str, Any]:
        """``{"running": bool, "jobs": [{"id", "name", "next_run_time", "trigger", ...}]}``,
        the shape APScheduler migration guides use (see :mod:`conveyor.scheduler`)."""
        from .scheduler import scheduler_status

        return scheduler_status(self)

    # -- enqueueing --------------------------------------------------------------------------

    def build_record(self, task: Task[Any, Any], args: Sequence[Any], kwargs: dict[str, Any],
                     options: EnqueueOptions | None, now: float | None = None) -> JobRecord:
        """Validate a call and make the record to store (nothing is stored here)."""
        task.signature.validate(args, kwargs)
        encoded_args = serialize.dumps(list(args), "#/args")
        encoded_kwargs = serialize.dumps(kwargs, "#/kwargs")
        serialize.check_size(encoded_args + encoded_kwargs, self.payload_limit)
        opts = options or _NO_OPTIONS
        now = self.clock() if now is None else now
        run_at = now
        if opts.delay is not None:
            run_at = now + opts.delay
        elif opts.eta is not None:
            run_at = opts.eta
        retries = task.retries if opts.retries is None else opts.retries
        status = "scheduled" if run_at > now else "queued"
        record = JobRecord(
            id=new_job_id(now), task=task.name, queue=opts.queue or task.queue,
            args=encoded_args, kwargs=encoded_kwargs,
            priority=task.priority if opts.priority is None else opts.priority,
            status=status, run_at=run_at, created_at=now, max_attempts=retries + 1,
            timeout=task.timeout if opts.timeout is None else opts.timeout,
            result_ttl=task.result_ttl if opts.result_ttl is None else opts.result_ttl,
            key=opts.key, history=[Transition(status, now)],
            headers=dict(opts.headers or {}))
        for middleware in self.middleware:
            _call_hook(middleware.before_enqueue, record)
        return record

    def _store(self, records: list[JobRecord], connection: Any = None) -> list[JobRecord]:
        if connection is None:
            stored = self.backend.enqueue(records)
        else:
            enqueue_in = getattr(self.backend, "enqueue_in", None)
            if enqueue_in is None:
                raise ConfigurationError(f"transactional enqueue (connection=) needs the "
                                         f"PostgreSQL backend, not {self.backend.name}")
            stored = enqueue_in(connection, records)
        for middleware in self.middleware:
            _call_hook(middleware.after_enqueue, stored)
        return stored

    def _enqueue(self, task: Task[Any, R], args: Sequence[Any], kwargs: dict[str, Any],
                 options: EnqueueOptions | None) -> Job[R]:
        record = self.build_record(task, args, kwargs, options)
        [stored] = self._store([record], options.connection if options else None)
        return Job(self, stored, created=stored.id == record.id)

    def _enqueue_many(self, calls: list[tuple[Task[Any, Any], Sequence[Any], dict[str, Any],
                                              EnqueueOptions | None]]) -> list[Job[Any]]:
        now = self.clock()
        records = [self.build_record(t, a, k, o, now) for t, a, k, o in calls]
        if not records:
            return []
        return [Job(self, stored, created=stored.id == record.id)
                for record, stored in zip(records, self._store(records), strict=True)]

    def enqueue(self, task: str | Task[Any, Any], args: Sequence[Any] = (),
                kwargs: dict[str, Any] | None = None, **options: Any) -> Job[Any]:
        """Enqueue by task name (or Task), as the CLI and HTTP API do: ``UnknownTask`` for a
        name nobody registered. ``options`` as in :meth:`Task.options`."""
        if not isinstance(args, (list, tuple)):
            raise ValidationError("args must be a list", errors=[
                {"pointer": "#/args", "message": "must be a list"}])
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ValidationError("kwargs must be an object", errors=[
                {"pointer": "#/kwargs", "message": "must be an object"}])
        resolved = self.get_task(task) if isinstance(task, str) else task
        return self._enqueue(resolved, tuple(args), dict(kwargs or {}),
                             make_options(**options) if options else None)

    # -- looking things up -------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job[Any]:
        """The job with that id; ``JobNotFound`` if there is none."""
        record = self.backend.get(job_id) if isinstance(job_id, str) else None
        if record is None:
            raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
        return Job(self, record)

    def list_jobs(self, *, status: str | None = None, queue: str | None = None,
                  task: str | None = None, limit: int = 50,
                  cursor: str | None = None) -> JobPage:
        """Jobs newest first, filtered; ``page.cursor`` fetches the next page."""
        if status is not None and status not in STATUSES:
            raise ValidationError(f"unknown status {status!r}: use one of "
                                  f"{', '.join(STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not \
                1 <= limit <= MAX_LIST_LIMIT:
            raise ValidationError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        page = self.backend.list(JobFilter(status=status, queue=queue, task=task), limit, cursor)
        return JobPage([Job(self, r) for r in page.jobs], page.cursor)

    def stats(self) -> dict[str, dict[str, int]]:
        """Job counts per queue and state: ``{"default": {"queued": 3, "running": 1}}``."""
        return self.backend.stats()

    def workers(self) -> list[Any]:
        """Live workers and schedulers, as they last reported."""
        return self.backend.list_workers(self.clock())

    # -- running -----------------------------------------------------------------------------

    def worker(self, **options: Any) -> Worker:
        """A worker for this app (``run()`` it, or ``start()`` it in a thread)."""
        from .worker import Worker

        return Worker(self, **options)

    def embedded(self, *, concurrency: int = 4, queues: Sequence[str] | None = None,
                 scheduler: bool = False, **options: Any) -> Embedded:
        """Run a worker (and the scheduler) inside this process for the length of a
        ``with`` / ``async with`` block — a FastAPI lifespan, a Django process, a script."""
        from .embedded import Embedded

        return Embedded(self, concurrency=concurrency, queues=queues, scheduler=scheduler,
                        **options)


_NO_OPTIONS = EnqueueOptions()


def _call_hook(hook: Callable[..., Any], *args: Any) -> None:
    """Run a middleware hook; its failure is logged and never fails the enqueue."""
    try:
        hook(*args)
    except Exception:
        log.exception("middleware hook %r failed", hook)
