"""Middleware: hooks around enqueue and execution, for metrics, tracing and logging.

Subclass :class:`Middleware`, override what you need, and add it with
``app.middleware.append(MyMiddleware())``. Hooks run in the caller's or worker's thread and must
be quick; an exception in a hook is logged and never fails a job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backends.base import JobRecord, Outcome


class Middleware:
    def before_enqueue(self, record: JobRecord) -> None:
        """A job is about to be stored; may add ``record.headers`` (trace context)."""

    def after_enqueue(self, records: list[JobRecord]) -> None:
        """Jobs were stored (an idempotent enqueue returns the existing record)."""

    @contextlib.contextmanager
    def around_run(self, record: JobRecord) -> Iterator[None]:
        """Wraps one attempt of a job in the worker (a tracing span, a log context)."""
        yield

    def after_run(self, record: JobRecord, outcome: Outcome, duration: float) -> None:
        """An attempt ended with ``outcome`` after ``duration`` seconds."""
