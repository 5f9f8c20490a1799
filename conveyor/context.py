"""``current_job()``: what a running task knows of its own job, and how it talks back.

The worker sets the context before it calls the task (a ``ContextVar``, so each thread and each
asyncio task sees its own job). ``progress()`` writes through to the backend at once;
``check_cancelled()`` answers from what the worker's heartbeat last learned and asks the
backend itself at most every ``_RECHECK`` seconds, so calling it in a tight loop stays cheap.
"""

from __future__ import annotations

import contextvars
import time
from typing import TYPE_CHECKING, Any

from .errors import Cancelled, ConveyorError, JobTimeout
from .job import RecordView

if TYPE_CHECKING:
    from .backends.base import Backend, JobRecord

_RECHECK = 0.25
_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "conveyor_current_job", default=None)


class JobContext(RecordView):
    """The running attempt of a job, as seen from inside its task."""

    def __init__(self, record: JobRecord, backend: Backend,
                 clock: Any = time.time) -> None:
        self.record = record
        self._backend = backend
        self._clock = clock
        #: when the attempt times out (monotonic); unset until ``start()``, so a job waiting
        #: behind others in the worker's queue is not timed out before it runs
        self.deadline: float | None = None
        self._last_check = time.monotonic()
        #: set by the worker's heartbeat (or a check here) once a cancel was requested
        self.cancel_requested = record.cancel_requested
        #: set by the worker when the lease was lost: another worker may run the job now
        self.lost = False

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, ..."""
        return self.record.attempts

    def start(self) -> None:
        """The task starts now: its ``timeout`` counts from here."""
        timeout = self.record.timeout
        self.deadline = time.monotonic() + timeout if timeout else None

    @property
    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress (0 to 100) and an optional message; seen at once by API and dashboard.

        Raises ``JobTimeout`` once the job ran past its ``timeout`` (how thread jobs are
        interrupted).
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"progress must be between 0 and 100, got {percent}")
        self._raise_if_timed_out()
        state = self._backend.set_progress(self.record.id, self.record.attempts, float(percent),
                                           message, self._clock())
        self._learn(state)

    def check_cancelled(self) -> None:
        """Raise ``Cancelled`` if a cancel was requested (``JobTimeout`` past the timeout).

        Call it between steps of long work: a thread cannot be stopped from outside.
        """
        self._raise_if_timed_out()
        if not self.cancel_requested and time.monotonic() - self._last_check >= _RECHECK:
            states = self._backend.extend_leases(
                [(self.record.id, self.record.attempts)], self._lease(), self._clock())
            self._learn(states.get(self.record.id, "lost"))
        if self.cancel_requested or self.lost:
            raise Cancelled(f"job {self.record.id} was cancelled")

    def _lease(self) -> float:
        expires = self.record.lease_expires_at
        started = self.record.started_at
        return (expires - started) if expires and started else 30.0

    def _learn(self, state: str) -> None:
        self._last_check = time.monotonic()
        if state == "cancel":
            self.cancel_requested = True
        elif state == "lost":
            self.lost = True

    def _raise_if_timed_out(self) -> None:
        if self.timed_out:
            raise JobTimeout(f"job {self.record.id} ran past its timeout of "
                             f"{self.record.timeout}s")


def current_job() -> JobContext:
    """The job being run by the calling task; ``ConveyorError`` outside of a task."""
    context = _current.get()
    if context is None:
        raise ConveyorError("current_job() was called outside of a running task")
    return context


def set_current(context: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(context)


def reset_current(token: contextvars.Token[JobContext | None]) -> None:
    _current.reset(token)
