"""Every error Conveyor raises, in one tree.

::

    ConveyorError
    ├── ConfigurationError        bad URL, unknown backend, missing optional driver
    ├── BackendError              storage failed
    │   ├── BackendUnavailable    cannot reach the server (after retries)
    │   └── SchemaOutdated        the database schema is older than this code
    ├── ValidationError           a call's arguments do not fit the task (nothing was stored)
    │   └── PayloadTooLarge       the encoded arguments exceed the payload limit
    ├── UnknownTask               no task registered under that name
    ├── JobNotFound               no job with that id
    ├── InvalidTransition         the job's state does not allow the action (cancel a finished job)
    ├── JobFailed                 job.result(): the job ended failed
    ├── JobCancelled              job.result(): the job ended cancelled
    └── ScheduleNotFound          no schedule with that id

Raised *inside* tasks to steer the worker (not errors of Conveyor itself):

    Retry       retry this job after ``delay`` seconds (counts an attempt)
    Cancelled   the job was asked to stop (raised by ``check_cancelled()``)
    JobTimeout  the job ran past its ``timeout`` (raised at ``progress()`` / ``check_cancelled()``)

Each class's docstring is its default message, so ``raise JobNotFound()`` still says something.
``job.result(timeout=...)`` raises the built-in ``TimeoutError`` when the wait runs out.
"""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Conveyor failed."""

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.context = context
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(ConveyorError):
    """Conveyor is misconfigured."""


class BackendError(ConveyorError):
    """The job storage failed."""


class BackendUnavailable(BackendError):
    """The job storage cannot be reached."""


class SchemaOutdated(BackendError):
    """The database schema is older than this version of Conveyor: run `conveyor migrate`."""


class ValidationError(ConveyorError):
    """The arguments do not fit the task's signature."""

    def __init__(self, message: str | None = None, *, errors: list[dict[str, str]] | None = None,
                 **context: Any) -> None:
        #: one entry per problem: {"pointer": "#/kwargs/width", "message": "..."}
        self.errors = errors or []
        super().__init__(message, **context)


class PayloadTooLarge(ValidationError):
    """The encoded arguments are larger than the payload limit."""


class UnknownTask(ConveyorError):
    """No task is registered under that name."""


class JobNotFound(ConveyorError):
    """No job has that id."""


class InvalidTransition(ConveyorError):
    """The job's current state does not allow this action."""


class JobFailed(ConveyorError):
    """The job failed."""

    def __init__(self, message: str | None = None, *, job: Any = None, **context: Any) -> None:
        self.job = job
        super().__init__(message, **context)


class JobCancelled(ConveyorError):
    """The job was cancelled."""

    def __init__(self, message: str | None = None, *, job: Any = None, **context: Any) -> None:
        self.job = job
        super().__init__(message, **context)


class ScheduleNotFound(ConveyorError):
    """No schedule has that id."""


class Retry(Exception):
    """Raise inside a task to run it again after ``delay`` seconds.

    The retry counts as an attempt; past the task's ``retries`` budget the job ends ``failed``.
    ``delay=None`` uses the task's backoff.
    """

    def __init__(self, delay: float | None = None, reason: str | None = None) -> None:
        self.delay = delay
        self.reason = reason
        super().__init__(reason or "retry requested")


class Cancelled(BaseException):
    """The job was asked to stop; raised by ``current_job().check_cancelled()``.

    A ``BaseException`` so that a task's ``except Exception`` does not swallow it.
    """


class JobTimeout(BaseException):
    """The job ran past its timeout; raised at ``progress()`` / ``check_cancelled()``."""
