"""2,000 jobs, three worker processes, one SQLite file: every job runs exactly once."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_procs import Procs, read_lines, wait_until

from conveyor import Conveyor

JOBS = 2000
WORKERS = 3


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_two_thousand_jobs_across_three_workers_each_run_exactly_once(
        tmp_path: Path, url: str) -> None:
    procs = Procs(tmp_path, url, app="bulk_app:app")
    try:
        import bulk_app

        bulk_app.app.close()
        bulk_app.app.url = url
        app: Conveyor = bulk_app.app
        workers = [procs.worker("-c", "4", "--grace", "5") for _ in range(WORKERS)]
        wait_until(lambda: len(app.workers()) == WORKERS, 20, "three registered workers")

        # enqueued one by one while the workers already claim, as a web app would
        ids = [bulk_app.record.enqueue(n).id for n in range(JOBS)]
        started = time.monotonic()

        def done() -> bool:
            counts = app.stats().get("default", {})
            assert counts.get("failed", 0) == 0 and counts.get("cancelled", 0) == 0, counts
            return counts.get("succeeded", 0) == JOBS

        wait_until(done, 120, f"{JOBS} succeeded jobs", interval=0.2)
        drained_in = time.monotonic() - started

        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        assert [procs.wait(p, 20) for p in workers] == [0] * WORKERS

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
        print(f"{JOBS} jobs drained by {WORKERS} workers in {drained_in:.1f}s; "
              f"per worker: {sorted(pids.values())}")
    finally:
        procs.cleanup()
        import bulk_app

        bulk_app.app.close()
