"""Cancel and timeouts, per pool, in a real worker process.

What each pool can do differs (docs/delivery.md): an async job is cancelled at its next
``await``; a thread job sees a cancel or its timeout at ``check_cancelled()``/``progress()``;
a process-pool job is killed — past its timeout at once, after ``--cancel-grace`` on cancel.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cli_procs import Procs, alive, read_lines, wait_until


def started(tmp_path: Path) -> list[list[str]]:
    return read_lines(tmp_path / "started.log")


def cancel_when_started(tmp_path: Path, job: Any, count: int = 1) -> float:
    wait_until(lambda: len(started(tmp_path)) >= count, 20, "the job to start")
    assert job.refresh().status == "running"
    job.cancel()
    assert job.status == "running" and job.record.cancel_requested
    return time.monotonic()


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_cancelling_a_running_async_job_stops_it_promptly(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    procs.worker("-c", "2")
    job = core.sleeper_async.enqueue(60)
    asked = cancel_when_started(tmp_path, job)
    job.wait(timeout=10)
    took = time.monotonic() - asked
    assert job.status == "cancelled", job.to_dict()
    assert took < 3, f"cancel took {took:.1f}s"
    assert [(e.type, e.reason) for e in job.errors] == [("Cancelled", "cancelled")]
    assert read_lines(tmp_path / "finished.log") == []
    # the worker is free again
    assert core.record.enqueue(7).result(timeout=10) == 7


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_cancelling_a_running_thread_job_stops_it_at_check_cancelled(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    procs.worker("-c", "2")
    job = core.cooperative.enqueue(60)
    asked = cancel_when_started(tmp_path, job)
    job.wait(timeout=10)
    assert job.status == "cancelled", job.to_dict()
    assert time.monotonic() - asked < 3
    assert job.errors[-1].reason == "cancelled"
    assert read_lines(tmp_path / "finished.log") == []
    with pytest.raises(Exception, match="cancelled"):
        job.result(timeout=0)


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_a_process_pool_job_past_its_timeout_is_killed_and_retried_then_failed(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    procs.worker("--pool", "process", "-c", "1")
    # timeout=1 on the task, one retry: both attempts sleep past it without checking in
    job = core.stubborn.options(retries=1).enqueue(60)
    job.wait(timeout=30)
    assert job.status == "failed", job.to_dict()
    assert job.attempts == 2
    assert [(e.attempt, e.type, e.reason) for e in job.errors] == \
        [(1, "JobTimeout", "timeout"), (2, "JobTimeout", "timeout")]
    assert "killed" in job.errors[0].message
    # the task's callbacks ran in the worker, as for any other failure
    assert read_lines(tmp_path / "callbacks.log") == [["retry", "JobTimeout"],
                                                       ["failure", "JobTimeout"]]
    # each attempt ran in its own child, and each child was killed
    pids = [int(line[0]) for line in read_lines(tmp_path / "pids.log")]
    assert len(pids) == 2 and pids[0] != pids[1]
    assert not any(alive(pid) for pid in pids)
    assert read_lines(tmp_path / "finished.log") == []
    # the pool starts a fresh child for the next job
    assert core.record.enqueue(3).result(timeout=20) == 3


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_a_process_pool_timeout_does_not_count_the_time_a_new_child_takes_to_import_the_app(
        procs: Procs, core: Any) -> None:
    # every child takes 1.5 s to import the app; the job has a 1 s timeout and needs 0.1 s
    worker = procs.start("worker", "--pool", "process", "-c", "1",
                         env=procs.env(CORE_APP_IMPORT_DELAY="1.5"))
    job = core.brief.enqueue()
    assert job.result(timeout=20) != worker.pid  # ran, in a child
    assert job.attempts == 1 and job.errors == []


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_cancelling_a_running_process_pool_job_terminates_it_after_the_cancel_grace(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    procs.worker("--pool", "process", "-c", "1", "--cancel-grace", "0.5")
    job = core.hang.enqueue(60)
    asked = cancel_when_started(tmp_path, job)
    [pid] = [int(line[0]) for line in read_lines(tmp_path / "pids.log")]
    job.wait(timeout=10)
    took = time.monotonic() - asked
    assert job.status == "cancelled", job.to_dict()
    assert 0.5 <= took < 4, f"cancel took {took:.1f}s"
    assert job.errors[-1].reason == "cancelled"
    assert not alive(pid)
    assert read_lines(tmp_path / "finished.log") == []


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_a_thread_job_reporting_progress_after_its_timeout_is_interrupted(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    procs.worker("-c", "1")
    job = core.late_progress.enqueue(1.0)  # timeout=0.5
    job.wait(timeout=15)
    assert job.status == "failed", job.to_dict()
    [error] = job.errors
    assert (error.type, error.reason) == ("JobTimeout", "timeout")
    assert "0.5" in error.message and "progress" in error.traceback
    assert read_lines(tmp_path / "finished.log") == []
    assert job.progress == 0  # the late progress was refused, not recorded
