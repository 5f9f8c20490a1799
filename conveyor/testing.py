"""Helpers for testing code that uses Conveyor.

::

    from conveyor.testing import drain, memory_app

    app = memory_app()            # or use your own app with Conveyor("memory://")

    def test_signup_sends_mail():
        signup("ada@example.com")           # enqueues send_welcome
        drain(app)                          # runs it here; re-raises its error if it failed
"""

from __future__ import annotations

import time
from typing import Any

from .app import Conveyor
from .errors import JobFailed

__all__ = ["drain", "memory_app"]


def memory_app(**options: Any) -> Conveyor:
    """A Conveyor app on ``memory://`` (nothing to clean up)."""
    return Conveyor("memory://", **options)


def drain(app: Conveyor, *, queues: list[str] | None = None, raise_errors: bool = True,
          include_scheduled: bool = False, max_jobs: int = 10_000,
          timeout: float = 60.0) -> int:
    """Run every due job of ``app`` to completion in this thread; the number of attempts run.

    Retries of a failing job run at once (their backoff is skipped). With ``raise_errors``
    (the default) the first job that ends ``failed`` raises ``JobFailed``, whose message
    carries the task's own error type, message and traceback. With
    ``include_scheduled``, delayed jobs are run now as well.
    """
    worker = app.worker(queues=queues, concurrency=1, grace=0)
    worker.skip_backoff = True  # a retry is due at once, so one drain runs it to the end
    worker._start_threads()
    ran = 0
    deadline = time.monotonic() + timeout
    try:
        while ran < max_jobs and time.monotonic() < deadline:
            now = _FAR_FUTURE if include_scheduled else app.clock()
            claimed = app.backend.claim(worker.queues, 1, worker.id, app.lease, now)
            if not claimed:
                break
            record = claimed[0]
            worker._dispatch(record)
            _wait_idle(worker)
            ran += 1
            job = app.backend.get(record.id)
            if raise_errors and job is not None and job.status == "failed":
                last = job.errors[-1] if job.errors else None
                detail = f"{last.type}: {last.message}" if last else "failed"
                raise JobFailed(f"job {job.id} ({job.task}) failed: {detail}"
                                + (f"\n{last.traceback}" if last and last.traceback else ""),
                                job=app.get_job(job.id))
    finally:
        worker.stop(graceful=False)
        worker._shutdown()
    return ran


_FAR_FUTURE = 1e15


def _wait_idle(worker: Any) -> None:
    with worker._slots_free:
        while worker._running:
            worker._slots_free.wait(0.05)

