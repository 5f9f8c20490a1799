"""Graceful shutdown: SIGTERM lets running jobs finish; a second signal stops at once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from cli_procs import Procs, read_lines, wait_until


def started_ids(tmp_path: Path) -> list[str]:
    return [line[0] for line in read_lines(tmp_path / "started.log")]


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_sigterm_lets_the_running_job_finish_and_the_worker_exits_0(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    worker = procs.worker("-c", "1", "--grace", "10")
    wait_until(lambda: core.app.workers(), 15, "the worker to register")
    running = core.slow.enqueue(1.5)
    prefetched = core.slow.enqueue(0.1)
    wait_until(lambda: started_ids(tmp_path), 15, "the job to start")

    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    later = core.slow.enqueue(0.1)  # enqueued after the signal: the worker claims no more
    assert procs.wait(worker, 15) == 0
    took = time.monotonic() - sent

    assert running.refresh().status == "succeeded"
    assert running.attempts == 1 and running.errors == []
    assert 0.8 < took < 8, f"exited {took:.1f}s after SIGTERM"
    # the job it held but had not started goes back to the queue with its attempt given back
    prefetched.refresh()
    assert (prefetched.status, prefetched.attempts, prefetched.errors) == ("queued", 0, [])
    assert later.refresh().status == "queued"
    assert started_ids(tmp_path) == [running.id]
    assert "stopping" in procs.output(worker)
    assert core.app.workers() == []  # deregistered on the way out


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_a_second_sigterm_stops_at_once_and_hands_the_running_job_back(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    worker = procs.worker("-c", "2", "--grace", "30")
    wait_until(lambda: core.app.workers(), 15, "the worker to register")
    thread_job = core.slow.enqueue(60)
    async_job = core.sleeper_async.enqueue(60)
    wait_until(lambda: len(started_ids(tmp_path)) == 2, 15, "both jobs to start")

    worker.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert worker.poll() is None  # still waiting for its jobs (grace 30 s)
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert procs.wait(worker, 10) == 0
    took = time.monotonic() - sent
    assert took < 3, f"a forced stop took {took:.1f}s"

    for job in (thread_job, async_job):
        job.refresh()
        # handed back: queued again, the interrupted attempt not counted, no error recorded
        assert (job.status, job.attempts, job.errors) == ("queued", 0, []), job.to_dict()
        assert job.record.worker_id is None
    assert read_lines(tmp_path / "finished.log") == []

    # the next worker runs them from the start
    again = procs.worker("-c", "2")
    wait_until(lambda: len(started_ids(tmp_path)) == 4, 15, "both jobs to start again")
    procs.kill(again)


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_a_job_still_running_when_the_grace_period_ends_is_handed_back(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    worker = procs.worker("-c", "1", "--grace", "1")
    wait_until(lambda: core.app.workers(), 15, "the worker to register")
    job = core.slow.enqueue(60)
    wait_until(lambda: started_ids(tmp_path), 15, "the job to start")
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert procs.wait(worker, 10) == 0
    assert 0.9 < time.monotonic() - sent < 5
    job.refresh()
    assert (job.status, job.attempts, job.errors) == ("queued", 0, [])


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_ctrl_c_in_a_terminal_lets_a_process_pool_job_finish(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    """A terminal sends SIGINT to the whole foreground process group: the worker *and* its
    pool's children. The job must still finish gracefully, not die of KeyboardInterrupt."""
    worker = procs.worker("--pool", "process", "-c", "1", "--grace", "10")
    wait_until(lambda: core.app.workers(), 15, "the worker to register")
    job = core.slow.enqueue(1.5)
    wait_until(lambda: started_ids(tmp_path), 15, "the job to start in a child process")
    child_pid = int(read_lines(tmp_path / "started.log")[0][2])
    assert child_pid != worker.pid

    os.killpg(worker.pid, signal.SIGINT)
    assert procs.wait(worker, 15) == 0
    job.refresh()
    assert job.status == "succeeded", job.to_dict()
    assert job.errors == []
    assert job.result(timeout=0)["pid"] == child_pid
