"""Task: a registered function, its options, and the ways to enqueue it.

``Task`` is generic over the function's parameters (``ParamSpec``), so a type checker checks
``task.enqueue(...)`` against the function itself. Calling the task directly (``task(x)``)
still runs the plain function inline, which keeps unit tests of task logic trivial.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .errors import ValidationError
from .signature import TaskSignature

if TYPE_CHECKING:
    from .app import Conveyor
    from .job import Job

P = ParamSpec("P")
R = TypeVar("R")

Callback = Callable[..., Any]


@dataclass(frozen=True)
class EnqueueOptions:
    """Per-call options; ``None`` means "the task's default"."""

    queue: str | None = None
    priority: int | None = None
    delay: float | None = None
    eta: float | None = None
    key: str | None = None
    retries: int | None = None
    timeout: float | None = None
    result_ttl: float | None = None
    #: a caller's open database connection, for transactional enqueue (PostgreSQL)
    connection: Any = None
    headers: dict[str, str] | None = None


def _seconds(value: float | timedelta | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{name} must be seconds (a number) or a timedelta, "
                              f"got {type(value).__name__}")
    if value < 0:
        raise ValidationError(f"{name} must not be negative, got {value}")
    return float(value)


def _timestamp(value: datetime | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError("eta must be a timezone-aware datetime (a naive one is "
                                  "ambiguous); use datetime.now(timezone.utc) + ...")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"eta must be a datetime or a Unix timestamp, "
                              f"got {type(value).__name__}")
    return float(value)


def make_options(*, queue: str | None = None, priority: int | None = None,
                 delay: float | timedelta | None = None, eta: datetime | float | None = None,
                 key: str | None = None, retries: int | None = None,
                 timeout: float | timedelta | None = None,
                 result_ttl: float | timedelta | None = None, connection: Any = None,
                 headers: dict[str, str] | None = None) -> EnqueueOptions:
    """Validate per-call options once, so a typo fails in the caller."""
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ValidationError(f"queue must be a non-empty string, got {queue!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ValidationError(f"priority must be an int, got {priority!r}")
    if key is not None and (not isinstance(key, str) or not key or len(key) > 255):
        raise ValidationError(f"key must be a non-empty string of at most 255 characters, "
                              f"got {key!r}")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)
                                or retries < 0):
        raise ValidationError(f"retries must be an int >= 0, got {retries!r}")
    if delay is not None and eta is not None:
        raise ValidationError("give delay or eta, not both")
    return EnqueueOptions(queue=queue, priority=priority, delay=_seconds(delay, "delay"),
                          eta=_timestamp(eta), key=key, retries=retries,
                          timeout=_seconds(timeout, "timeout"),
                          result_ttl=_seconds(result_ttl, "result_ttl"),
                          connection=connection, headers=headers)


class Task(Generic[P, R]):
    """A function registered with ``@app.task``; enqueue it to run it on a worker."""

    def __init__(self, app: Conveyor, fn: Callable[P, R], *, name: str, queue: str,
                 priority: int, retries: int, retry_backoff: float, retry_backoff_max: float,
                 timeout: float | None, result_ttl: float | None,
                 on_success: Callback | None, on_failure: Callback | None,
                 on_retry: Callback | None, expose: bool) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.priority = priority
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.timeout = timeout
        self.result_ttl = result_ttl
        self.on_success = on_success
        self.on_failure = on_failure
        self.on_retry = on_retry
        #: may be submitted over the HTTP API
        self.expose = expose
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = TaskSignature(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, not as a job."""
        return self.fn(*args, **kwargs)

    # -- enqueueing --------------------------------------------------------------------------

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Validate the call and store it as a job; returns its handle at once."""
        return self.app._enqueue(self, args, kwargs, None)

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return await asyncio.to_thread(self.app._enqueue, self, args, kwargs, None)

    def enqueue_many(self, calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]]
                     ) -> list[Job[R]]:
        """Enqueue many calls ``[(args, kwargs), ...]`` in one backend round trip; all are
        validated first, and none is stored if any is invalid."""
        return self.app._enqueue_many([(self, a, k, None) for a, k in calls])

    def options(self, *, queue: str | None = None, priority: int | None = None,
                delay: float | timedelta | None = None, eta: datetime | float | None = None,
                key: str | None = None, retries: int | None = None,
                timeout: float | timedelta | None = None,
                result_ttl: float | timedelta | None = None,
                connection: Any = None) -> BoundTask[P, R]:
        """This task with per-call options: ``task.options(delay=30, key="k").enqueue(x)``.

        ``delay`` (seconds or timedelta) or ``eta`` (aware datetime or Unix time) schedule it
        later; ``key`` makes the enqueue idempotent while a job with that key is live;
        ``connection`` (PostgreSQL) writes the job in the caller's open transaction.
        """
        return BoundTask(self, make_options(queue=queue, priority=priority, delay=delay, eta=eta,
                                            key=key, retries=retries, timeout=timeout,
                                            result_ttl=result_ttl, connection=connection))

    # -- Celery spellings --------------------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Celery's name for :meth:`enqueue`."""
        return self.enqueue(*args, **kwargs)

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, *, countdown: float | None = None,
                    eta: datetime | float | None = None, queue: str | None = None,
                    priority: int | None = None, key: str | None = None) -> Job[R]:
        """Celery's spelling of ``options(delay=countdown, eta=..., ...).enqueue(*args,
        **kwargs)``."""
        options = make_options(queue=queue, priority=priority, delay=countdown, eta=eta, key=key)
        return self.app._enqueue(self, tuple(args or ()), dict(kwargs or {}), options)

    # -- used by the worker ------------------------------------------------------------------

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number ``attempt``: the base doubled per attempt, capped, with
        "equal jitter" (half fixed, half random) so a burst of failures does not retry in
        lockstep."""
        if self.retry_backoff <= 0:
            return 0.0
        base = min(self.retry_backoff * (2 ** max(attempt - 1, 0)), self.retry_backoff_max)
        return base / 2 + random.uniform(0, base / 2)

    def call(self, args: list[Any], kwargs: dict[str, Any]) -> R | Awaitable[R]:
        return self.fn(*args, **kwargs)


class BoundTask(Generic[P, R]):
    """A task with per-call options, as returned by :meth:`Task.options`."""

    def __init__(self, task: Task[P, R], options: EnqueueOptions) -> None:
        self.task = task
        self._options = options

    def options(self, **changes: Any) -> BoundTask[P, R]:
        merged = {k: v for k, v in vars(self._options).items() if v is not None}
        merged.update(changes)
        return BoundTask(self.task, make_options(**merged))

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return self.task.app._enqueue(self.task, args, kwargs, self._options)

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return await asyncio.to_thread(self.task.app._enqueue, self.task, args, kwargs,
                                       self._options)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        return self.enqueue(*args, **kwargs)

    def with_headers(self, headers: dict[str, str]) -> BoundTask[P, R]:
        return BoundTask(self.task, replace(self._options, headers=headers))
