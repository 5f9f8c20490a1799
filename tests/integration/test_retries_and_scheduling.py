"""Retries with backoff, delayed jobs, priorities and queue order, --burst: real workers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cli_procs import Procs, read_lines, wait_until


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_a_failing_job_is_retried_with_growing_backoff_and_keeps_every_attempts_error(
        procs: Procs, core: Any) -> None:
    procs.worker("-c", "2")
    job = core.always_fails.enqueue("sync")  # retries=2, retry_backoff=0.4
    job.wait(timeout=20)
    assert job.status == "failed", job.to_dict()
    assert job.attempts == 3 and job.record.max_attempts == 3

    errors = job.errors
    assert [(e.attempt, e.type, e.reason) for e in errors] == \
        [(1, "ValueError", "error"), (2, "ValueError", "error"), (3, "ValueError", "error")]
    for n, error in enumerate(errors, start=1):
        assert error.message == f"sync: boom on attempt {n}"
        assert error.traceback.startswith("Traceback (most recent call last):")
        assert 'raise ValueError(f"{label}: boom on attempt {attempt}")' in error.traceback
        assert error.traceback.rstrip().endswith(f"ValueError: sync: boom on attempt {n}")

    statuses = [h.status for h in job.record.history]
    assert statuses == ["queued", "running", "scheduled", "running", "scheduled", "running",
                        "failed"]
    # the wait after each failure: base 0.4 s doubled per attempt, with "equal jitter"
    # (half fixed, half random): [0.2, 0.4] after the first, [0.4, 0.8] after the second
    runs = [h.at for h in job.record.history if h.status == "running"]
    gaps = [runs[1] - errors[0].at, runs[2] - errors[1].at]
    assert 0.19 <= gaps[0] <= 0.4 + 0.5, gaps
    assert 0.39 <= gaps[1] <= 0.8 + 0.5, gaps
    assert gaps[1] > gaps[0], gaps

    # the caller sees the last error, and every attempt's error on the exception's job
    with pytest.raises(Exception, match="failed after 3 attempt") as info:
        job.result(timeout=0)
    assert "ValueError: sync: boom on attempt 3" in str(info.value)
    assert len(info.value.job.errors) == 3


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_a_delayed_job_runs_at_its_time_and_not_before(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    procs.worker("-c", "2")
    wait_until(lambda: core.app.workers(), 15, "the worker to register")
    delayed = core.record.options(delay=1.5).enqueue(1)
    now = core.record.enqueue(2)
    assert delayed.status == "scheduled"
    assert now.result(timeout=10) == 2
    time.sleep(max(0.0, delayed.record.run_at - time.time() - 0.4))
    assert delayed.refresh().status == "scheduled"  # 0.4 s before its time: still waiting
    assert [line[1] for line in read_lines(tmp_path / "ran.log")] == ["2"]

    assert delayed.result(timeout=10) == 1
    started_at = delayed.record.started_at
    assert started_at is not None
    assert started_at >= delayed.record.run_at
    assert started_at - delayed.record.run_at < 0.5  # and promptly then


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_a_worker_serves_its_queues_in_order_and_higher_priority_first(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    record = core.record
    # enqueued before any worker runs, deliberately out of order
    record.options(queue="low", priority=9).enqueue(100)
    record.enqueue(10)
    record.options(queue="high").enqueue(1)
    record.options(priority=9).enqueue(12)
    record.options(queue="high", priority=5).enqueue(3)
    record.options(priority=5).enqueue(11)
    record.options(queue="high").enqueue(2)

    worker = procs.worker("-Q", "high,default", "-c", "1", "--burst")
    assert procs.wait(worker, 20) == 0
    order = [int(line[1]) for line in read_lines(tmp_path / "ran.log")]
    # every due job of "high" first (priority 5, then the two 0s oldest first), then
    # "default" by priority; "low" was not asked for
    assert order == [3, 1, 2, 12, 11, 10]
    assert core.app.stats() == {"high": {"succeeded": 3}, "default": {"succeeded": 3},
                                "low": {"queued": 1}}


@pytest.mark.timeout(40)
def test_burst_drains_what_is_due_and_exits_0(tmp_path: Path, procs: Procs, core: Any) -> None:
    jobs = [core.record.enqueue(n) for n in range(200)]
    later = core.record.options(delay=60).enqueue(999)  # not due: burst leaves it
    worker = procs.worker("-c", "4", "--burst")
    assert procs.wait(worker, 30) == 0
    assert all(job.refresh().status == "succeeded" for job in jobs)
    assert later.refresh().status == "scheduled"
    assert len(read_lines(tmp_path / "ran.log")) == 200
    assert "stopped after 200 job(s)" in procs.output(worker)
    assert core.app.workers() == []
