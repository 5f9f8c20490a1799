"""Exactly once in normal operation, on each engine: 10,000 jobs across three worker processes,
and a job that outlives its lease many times over while another worker waits for work."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cli_procs import Procs, read_lines, wait_until

from conveyor import Conveyor

JOBS = 10_000
SINGLE = 1000
BATCH = 100
WORKERS = 3


@pytest.mark.slow
@pytest.mark.every_engine
@pytest.mark.timeout(150)
def test_ten_thousand_jobs_across_three_workers_each_run_exactly_once(
        tmp_path: Path, url: str) -> None:
    procs = Procs(tmp_path, url, app="bulk_app:app")
    try:
        import bulk_app

        bulk_app.app.close()
        bulk_app.app.url = url
        app: Conveyor = bulk_app.app
        workers = [procs.worker("-c", "4", "--grace", "5") for _ in range(WORKERS)]
        wait_until(lambda: len(app.workers()) == WORKERS, 20, "three registered workers")

        # enqueued while the workers already claim: the first ones one by one, as a web app
        # would, the rest in batches of 100, as an import would (10,000 single commits racing
        # the workers' claims take ~40 s on PostgreSQL on this disk)
        started = time.monotonic()
        ids = [bulk_app.record.enqueue(n).id for n in range(SINGLE)]
        for first in range(SINGLE, JOBS, BATCH):
            batch = bulk_app.record.enqueue_many(
                [((n,), {}) for n in range(first, min(first + BATCH, JOBS))])
            ids.extend(job.id for job in batch)
        enqueued_in = time.monotonic() - started

        def done() -> bool:
            counts = app.stats().get("default", {})
            assert counts.get("failed", 0) == 0 and counts.get("cancelled", 0) == 0, counts
            return counts.get("succeeded", 0) == JOBS

        wait_until(done, 120, f"{JOBS} succeeded jobs", interval=0.2)
        drained_in = time.monotonic() - started

        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        assert [procs.wait(p, 20) for p in workers] == [0] * WORKERS
        # and no worker ever thought it had lost a job (nor dropped an outcome)
        for proc in workers:
            log = procs.output(proc)
            assert "lease lost" not in log and "dropped" not in log, log[-3000:]

        runs = read_lines(tmp_path / "ran.log")
        ran_ids = Counter(line[0] for line in runs)
        duplicates = {job_id: n for job_id, n in ran_ids.items() if n > 1}
        assert not duplicates, f"jobs that ran more than once: {list(duplicates.items())[:5]}"
        assert set(ran_ids) == set(ids), f"never ran: {sorted(set(ids) - set(ran_ids))[:5]}"
        assert sorted(int(line[1]) for line in runs) == list(range(JOBS))

        # every job is recorded succeeded, with its result and one attempt
        seen = 0
        cursor = None
        while True:
            page = app.list_jobs(limit=1000, cursor=cursor)
            for job in page:
                assert job.status == "succeeded" and job.attempts == 1, job.to_dict()
                assert job.record.result == str(job.args[0])
                seen += 1
            cursor = page.cursor
            if cursor is None:
                break
        assert seen == JOBS
        assert app.stats() == {"default": {"succeeded": JOBS}}

        # every worker process took part
        pids = Counter(line[2] for line in runs)
        assert len(pids) == WORKERS, pids
        print(f"{JOBS} jobs enqueued in {enqueued_in:.1f}s and done in {drained_in:.1f}s by "
              f"{WORKERS} workers; per worker: {sorted(pids.values())}")
    finally:
        procs.cleanup()
        import bulk_app

        bulk_app.app.close()


@pytest.mark.slow
@pytest.mark.every_engine
@pytest.mark.timeout(60)
def test_a_job_running_three_times_its_lease_is_not_run_twice_while_another_worker_waits(
        tmp_path: Path, procs: Procs, core: Any) -> None:
    app = core.app
    lease = app.lease  # 2 s: core_app's short lease
    workers = [procs.worker("-c", "1", "--grace", "1") for _ in range(2)]
    wait_until(lambda: len(app.workers()) == 2, 15, "two registered workers")
    job = core.slow.enqueue(3 * lease)  # sleeps without ever checking in

    # while it runs, its lease keeps moving ahead of the clock: the heartbeats renew it
    wait_until(lambda: read_lines(tmp_path / "started.log"), 15, "the job to start")
    leases = []
    while job.refresh().status == "running":
        leases.append((app.clock(), job.record.lease_expires_at))
        time.sleep(0.2)
    assert all(expires > now for now, expires in leases), leases
    assert leases[-1][1] - leases[0][1] > lease, leases

    assert job.status == "succeeded", job.to_dict()
    assert job.attempts == 1 and job.errors == []
    assert [h.status for h in job.record.history] == ["queued", "running", "succeeded"]
    [(job_id, attempt, pid)] = read_lines(tmp_path / "started.log")
    assert (job_id, attempt) == (job.id, "1")
    assert read_lines(tmp_path / "finished.log") == [[job.id, "1", pid]]
    assert job.result(timeout=0) == {"pid": int(pid), "attempt": 1}

    # the other worker was there all along, looking for expired leases, and found none
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    assert [procs.wait(p, 10) for p in workers] == [0, 0]
    for proc in workers:
        log = procs.output(proc)
        assert "recovered" not in log and "lease lost" not in log, log
    assert {int(pid)} < {p.pid for p in workers}
