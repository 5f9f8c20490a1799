"""Job: the handle a caller holds on one enqueued job.

It wraps the stored :class:`~conveyor.backends.base.JobRecord` (read it as ``job.record``) and
reads fresh state only when asked (``refresh()``, ``result()``), so holding many handles costs
nothing. Every blocking method has an ``a``-prefixed twin for async callers.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import serialize
from .backends.base import JobRecord
from .errors import InvalidTransition, JobCancelled, JobFailed, JobNotFound

if TYPE_CHECKING:
    from .app import Conveyor

R = TypeVar("R")


class RecordView:
    """Read access to the fields of ``self.record`` that a job handle and a running task's
    context share."""

    __slots__ = ()
    record: JobRecord

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def task(self) -> str:
        return self.record.task

    @property
    def queue(self) -> str:
        return self.record.queue

    @property
    def max_attempts(self) -> int:
        return self.record.max_attempts

    @property
    def args(self) -> list[Any]:
        return serialize.loads(self.record.args)

    @property
    def kwargs(self) -> dict[str, Any]:
        return serialize.loads(self.record.kwargs)


class Job(RecordView, Generic[R]):
    """A job and what is known of it; ``refresh()`` reads it again from the backend."""

    __slots__ = ("_app", "created", "record")

    def __init__(self, app: Conveyor, record: JobRecord, created: bool = True) -> None:
        self._app = app
        self.record = record
        #: False when an idempotency key returned an existing job instead of a new one
        self.created = created

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.task} {self.status}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- what is known -----------------------------------------------------------------------

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def progress(self) -> float:
        return self.record.progress

    @property
    def progress_message(self) -> str | None:
        return self.record.progress_message

    @property
    def attempts(self) -> int:
        return self.record.attempts

    @property
    def errors(self) -> list[Any]:
        return self.record.errors

    @property
    def finished(self) -> bool:
        return self.record.finished

    # -- reading again -----------------------------------------------------------------------

    def refresh(self) -> Job[R]:
        record = self._app.backend.get(self.id)
        if record is None:
            raise JobNotFound(f"job {self.id} no longer exists (deleted or pruned)",
                              job_id=self.id)
        self.record = record
        return self

    async def arefresh(self) -> Job[R]:
        return await asyncio.to_thread(self.refresh)

    def wait(self, timeout: float | None = None) -> Job[R]:
        """Block until the job is finished (or ``timeout``: ``TimeoutError``); returns self."""
        deadline = None if timeout is None else time.monotonic() + timeout
        record = self.record if self.record.finished else self._app.backend.get(self.id)
        if record is None:
            raise JobNotFound(f"job {self.id} no longer exists", job_id=self.id)
        while not record.finished:
            remaining = 5.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                self.record = record
                raise TimeoutError(f"job {self.id} is still {record.status} after {timeout}s")
            changed = self._app.backend.wait_for_change(self.id, record.version,
                                                        min(remaining, 5.0))
            if changed is None:
                raise JobNotFound(f"job {self.id} no longer exists", job_id=self.id)
            record = changed
        self.record = record
        return self

    def result(self, timeout: float | None = None) -> R:
        """Wait for the job and return its result.

        Raises ``JobFailed`` (the last error in its message, every attempt in
        ``exc.job.errors``), ``JobCancelled``, or ``TimeoutError`` when ``timeout`` seconds
        pass first. ``timeout=None`` waits as long as it takes.
        """
        self.wait(timeout)
        record = self.record
        if record.status == "succeeded":
            value: R = serialize.loads(record.result)
            return value
        if record.status == "cancelled":
            raise JobCancelled(f"job {self.id} ({self.task}) was cancelled", job=self)
        last = record.errors[-1] if record.errors else None
        detail = f": {last.type}: {last.message}" if last else ""
        raise JobFailed(f"job {self.id} ({self.task}) failed after {record.attempts} "
                        f"attempt(s){detail}", job=self)

    async def aresult(self, timeout: float | None = None) -> R:
        return await asyncio.to_thread(self.result, timeout)

    # -- acting on it ------------------------------------------------------------------------

    def cancel(self) -> Job[R]:
        """Cancel: a queued or scheduled job is cancelled at once; a running job is asked to
        stop (``status`` stays ``running`` until the worker stops it). Raises
        ``InvalidTransition`` for a job that already finished."""
        current = self._app.backend.get(self.id)
        if current is None:
            raise JobNotFound(f"no job with id {self.id!r}", job_id=self.id)
        if current.finished:
            self.record = current
            raise InvalidTransition(f"job {self.id} already {current.status}",
                                    job_id=self.id, status=current.status)
        self.record = self._app.backend.cancel(self.id, self._app.clock())
        return self

    async def acancel(self) -> Job[R]:
        return await asyncio.to_thread(self.cancel)

    def retry(self) -> Job[R]:
        """Queue a failed or cancelled job again (one more attempt)."""
        current = self._app.backend.get(self.id)
        if current is None:
            raise JobNotFound(f"no job with id {self.id!r}", job_id=self.id)
        if current.status not in ("failed", "cancelled"):
            self.record = current
            raise InvalidTransition(f"job {self.id} is {current.status}; only failed or "
                                    "cancelled jobs can be retried", job_id=self.id,
                                    status=current.status)
        self.record = self._app.backend.retry(self.id, self._app.clock())
        return self

    async def aretry(self) -> Job[R]:
        return await asyncio.to_thread(self.retry)

    def to_dict(self) -> dict[str, Any]:
        """The job as plain JSON-ready data (the HTTP API's and CLI's view)."""
        return job_to_dict(self.record)


def job_to_dict(record: JobRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "task": record.task,
        "queue": record.queue,
        "status": record.status,
        "priority": record.priority,
        "args": serialize.loads(record.args),
        "kwargs": serialize.loads(record.kwargs),
        "key": record.key,
        "attempts": record.attempts,
        "max_attempts": record.max_attempts,
        "progress": {"percent": record.progress, "message": record.progress_message},
        "result": serialize.loads(record.result) if record.status == "succeeded" else None,
        "errors": [{"attempt": e.attempt, "type": e.type, "message": e.message,
                    "traceback": e.traceback, "at": e.at, "reason": e.reason}
                   for e in record.errors],
        "history": [{"status": h.status, "at": h.at} for h in record.history],
        "created_at": record.created_at,
        "run_at": record.run_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "worker_id": record.worker_id,
        "cancel_requested": record.cancel_requested,
        "result_expires_at": record.result_expires_at,
        "timeout": record.timeout,
        "version": record.version,
    }
