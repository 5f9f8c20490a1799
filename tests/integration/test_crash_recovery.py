"""kill -9: of a worker in the middle of a job, and of a process right after it enqueued."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from cli_procs import Procs, alive, read_lines, wait_until


@pytest.mark.slow
@pytest.mark.every_engine
@pytest.mark.timeout(60)
def test_a_job_whose_worker_is_killed_midway_reruns_on_another_worker_within_the_lease(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    app = core.app
    first = procs.worker("-c", "1", "--grace", "1")
    wait_until(lambda: app.workers(), 15, "the first worker to register")
    running = core.slow.enqueue(1.5)
    # -c 1 takes a second job as prefetch: it holds it under lease but never starts it
    waiting = core.slow.enqueue(0.1)
    wait_until(lambda: read_lines(tmp_path / "started.log"), 15, "the job to start")
    wait_until(lambda: app.get_job(waiting.id).status == "running", 10,
               "the first worker to claim the second job too")
    # a second worker, idle: there is nothing left for it to claim
    second = procs.worker("-c", "2", "--grace", "1")
    wait_until(lambda: len(app.workers()) == 2, 15, "the second worker to register")

    procs.kill(first)  # SIGKILL: no handler runs, no lease is handed back
    killed_at = time.monotonic()
    assert procs.wait(first, 10) == -signal.SIGKILL
    assert running.refresh().status == "running"
    wait_until(lambda: len(read_lines(tmp_path / "started.log")) == 3, app.lease + 10,
               "the killed job to start again, and the prefetched one, on the second worker")
    rerun_after = time.monotonic() - killed_at
    # the lease (2 s) runs out at most a lease after the kill; the idle worker looks for
    # expired leases at least once a poll interval (1 s); and 1 s of slack for a busy machine
    assert rerun_after < app.lease + 1.0 + 1.0, f"re-run {rerun_after:.1f}s after the kill"
    print(f"re-run {rerun_after:.2f}s after the kill (lease {app.lease:g}s)")

    for job in (running, waiting):
        job.wait(timeout=30)
        assert job.status == "succeeded", job.to_dict()
        # the lease ran out, a worker re-queued it, counting the lost attempt
        assert job.attempts == 2
        assert [e.reason for e in job.errors] == ["worker_lost"]
        assert job.errors[0].attempt == 1 and job.errors[0].type == "WorkerLost"
        statuses = [h.status for h in job.record.history]
        assert statuses == ["queued", "running", "queued", "running", "succeeded"], statuses
    result = running.result(timeout=0)
    assert result["pid"] == second.pid and result["attempt"] == 2

    # the job that was running ran twice (at least once), the prefetched one only once,
    # and nothing finished on the killed worker
    started = read_lines(tmp_path / "started.log")
    assert [(line[1], int(line[2])) for line in started if line[0] == running.id] == \
        [("1", first.pid), ("2", second.pid)]
    assert [int(line[2]) for line in started if line[0] == waiting.id] == [second.pid]
    finished = read_lines(tmp_path / "finished.log")
    assert sorted(line[0] for line in finished) == sorted([running.id, waiting.id])
    assert {int(line[2]) for line in finished} == {second.pid}
    assert app.stats() == {"default": {"succeeded": 2}}


ENQUEUE_THEN_DIE = textwrap.dedent("""
    import os, signal, sys
    import core_app
    for n in range(int(sys.argv[1])):
        job = core_app.record.enqueue(n)
        print(job.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no checkpoint, no atexit
""")


@pytest.mark.timeout(30)
def test_jobs_survive_a_kill_9_of_the_process_right_after_enqueue_returned(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    proc = subprocess.run([sys.executable, "-c", ENQUEUE_THEN_DIE, "25"], env=procs.env(),
                          cwd=tmp_path, capture_output=True, text=True, timeout=20)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ids = proc.stdout.split()
    assert len(ids) == 25
    for n, job_id in enumerate(ids):
        job = core.app.get_job(job_id)
        assert (job.status, job.args) == ("queued", [n])

    # and a worker started afterwards runs them
    worker = procs.worker("--burst")
    assert procs.wait(worker, 20) == 0
    assert core.app.stats() == {"default": {"succeeded": 25}}


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_worker_that_lost_its_lease_cannot_overwrite_the_jobs_newer_state(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    """A worker frozen past its lease (SIGSTOP: a long GC pause, a stalled VM) wakes up to
    find its job re-run elsewhere; its late outcome is refused (fenced), not recorded."""
    frozen = procs.worker("-c", "1", "--grace", "1")
    wait_until(lambda: core.app.workers(), 15, "the first worker to register")
    job = core.slow.enqueue(1.0)
    wait_until(lambda: read_lines(tmp_path / "started.log"), 15, "the job to start")
    frozen.send_signal(signal.SIGSTOP)
    try:
        rescuer = procs.worker("-c", "1", "--grace", "1")
        wait_until(lambda: len(read_lines(tmp_path / "started.log")) == 2, 20,
                   "the job to start again on the second worker")
    finally:
        frozen.send_signal(signal.SIGCONT)
    job.wait(timeout=20)
    assert job.status == "succeeded"
    assert job.result(timeout=0) == {"pid": rescuer.pid, "attempt": 2}
    # the frozen worker finished its copy too (at-least-once) ...
    wait_until(lambda: len(read_lines(tmp_path / "finished.log")) == 2, 10,
               "the frozen worker's copy to finish")
    time.sleep(0.5)
    # ... but its outcome was dropped: one success, recorded by the second worker
    job.refresh()
    assert [h.status for h in job.record.history] == \
        ["queued", "running", "queued", "running", "succeeded"]
    assert job.record.worker_id is not None and f"-{rescuer.pid}-" in job.record.worker_id
    assert [e.reason for e in job.errors] == ["worker_lost"]
    frozen.send_signal(signal.SIGTERM)
    assert procs.wait(frozen, 10) == 0
    assert "outcome succeeded dropped" in procs.output(frozen)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_process_pool_child_does_not_outlive_its_killed_worker(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    worker = procs.worker("--pool", "process", "-c", "1")
    job = core.hang.options(retries=1).enqueue(60)
    wait_until(lambda: read_lines(tmp_path / "pids.log"), 20, "the job to start in a child")
    [child] = [int(line[0]) for line in read_lines(tmp_path / "pids.log")]
    os.kill(worker.pid, signal.SIGKILL)  # the worker only, as the OOM killer would
    assert procs.wait(worker, 10) == -signal.SIGKILL
    # an orphaned child would run its job on while another worker re-runs it, and a stuck
    # job would leave a process behind forever
    wait_until(lambda: not alive(child), 5, "the orphaned child to exit")
    assert read_lines(tmp_path / "finished.log") == []
    assert job.refresh().status == "running"  # until its lease runs out


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_repeated_kill_9_of_busy_workers_loses_no_job_and_leaves_the_file_intact(
        tmp_path: Path, url: str, procs: Procs, core: Any) -> None:
    """Chaos: workers SIGKILLed again and again in the middle of claims, heartbeats and
    batched finishes (any of them possibly inside a write transaction) while others run."""
    jobs = core.tick.enqueue_many([((n,), {}) for n in range(800)])  # 20 ms each
    steady = procs.worker("-c", "4")
    for _ in range(4):
        victim = procs.worker("-c", "8")
        wait_until(lambda v=victim: any(f"-{v.pid}-" in w.id for w in core.app.workers()),
                   15, "the victim to register")
        time.sleep(0.3)
        procs.kill(victim)
        procs.wait(victim, 10)
    wait_until(lambda: core.app.stats().get("default", {}).get("succeeded") == len(jobs), 60,
               "every job to succeed", interval=0.2)
    steady.send_signal(signal.SIGTERM)
    assert procs.wait(steady, 15) == 0

    ran = {line[0] for line in read_lines(tmp_path / "ran.log")}
    assert ran == {job.id for job in jobs}  # each ran at least once: nothing was lost
    for job in jobs:
        job.refresh()
        assert job.status == "succeeded"
        # an attempt beyond the first is always explained by a lost worker
        assert [e.reason for e in job.errors] == ["worker_lost"] * (job.attempts - 1)
    recovered = sum(1 for job in jobs if job.attempts > 1)
    assert recovered > 0, "no kill landed while a victim held jobs"
    print(f"{recovered} job(s) recovered from killed workers")

    import sqlite3

    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.every_engine
@pytest.mark.timeout(60)
def test_jobs_enqueued_just_after_an_idle_worker_was_killed_all_run(
        tmp_path: Path, procs: Procs, core: Any, url: str) -> None:
    """On Redis an idle worker is handed new jobs as they are enqueued: one killed while it
    waits must not take them with it, nor cost them an attempt (they run elsewhere once its
    lease runs out)."""
    app = core.app
    doomed = procs.worker("-c", "2")
    survivor = procs.worker("-c", "2")
    wait_until(lambda: len(app.workers()) == 2, 15, "both workers to register")
    time.sleep(0.5)  # both idle, waiting
    procs.kill(doomed)
    assert procs.wait(doomed, 10) == -signal.SIGKILL
    jobs = [core.record.enqueue(n) for n in range(20)]
    wait_until(lambda: app.stats().get("default") == {"succeeded": 20}, app.lease + 20,
               "every job to succeed")
    for job in jobs:
        job.refresh()
        # `record` has no retries: a job handed to the dead worker never ran there, so it
        # ran here on its first and only attempt, once the dead worker's lease ran out
        assert (job.status, job.attempts, job.errors) == ("succeeded", 1, [])
    if url.startswith("redis"):
        # the dead worker was still registered as idle, and was handed some of them
        recovered = [j for j in jobs if [h.status for h in j.record.history].count("running") == 2]
        assert recovered, "no job was handed to the killed worker: the test proves nothing"
    assert alive(survivor.pid)
