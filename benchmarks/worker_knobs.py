"""Conveyor's drain rate against its worker's knobs (concurrency, prefetch), in one process.

    .bench-venv/bin/python benchmarks/worker_knobs.py sqlite 8:8 8:56 8:248 1:1
    .bench-venv/bin/python benchmarks/worker_knobs.py redis --jobs 20000 8:8 8:248

Each ``C:P`` enqueues N no-op jobs (``enqueue_many``), then runs ``app.worker(concurrency=C,
prefetch=P, burst=True)`` in this process until they are done, and prints jobs/s, CPU per job,
the share of one core used and context switches per job. ``Worker`` holds ``C + P`` jobs at
once (the default prefetch is ``C``), so P sets how many jobs one claim takes. Redis uses
database 2 of the benchmark server (flushed); SQLite a file in a temporary directory.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import PG_SERVER, REDIS_URL, recreate_pg_database
from conveyor import Conveyor


def switches() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=["sqlite", "redis", "postgres"])
    parser.add_argument("knobs", nargs="+", help="CONCURRENCY:PREFETCH")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--async-task", action="store_true", help="an async def no-op")
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="conveyor-knobs-")
    redis_url = REDIS_URL.rsplit("/", 1)[0] + "/2"
    if args.engine == "postgres":
        recreate_pg_database("bench_knobs")
    url = {"sqlite": f"sqlite:///{scratch}/knobs.db", "redis": redis_url,
           "postgres": f"{PG_SERVER}/bench_knobs"}[args.engine]
    app = Conveyor(url)

    @app.task(name="noop")
    def noop(i: int) -> None:
        return None

    @app.task(name="anoop")
    async def anoop(i: int) -> None:
        return None

    task = anoop if args.async_task else noop
    if args.engine == "postgres":
        app.backend.migrate()
    n = args.jobs
    try:
        for knob in args.knobs:
            concurrency, prefetch = (int(v) for v in knob.split(":"))
            for start in range(0, n, 1000):
                task.enqueue_many([((i,), {}) for i in range(start, min(n, start + 1000))])
            worker = app.worker(concurrency=concurrency, prefetch=prefetch, burst=True)
            began, cpu, cs = time.perf_counter(), time.process_time(), switches()
            worker.run()
            wall = time.perf_counter() - began
            cpu = time.process_time() - cpu
            print(f"{args.engine} concurrency={concurrency} prefetch={prefetch}: "
                  f"{n / wall:,.0f} jobs/s, {cpu / n * 1e6:.0f} µs CPU/job, "
                  f"{cpu / wall:.0%} of a core, {(switches() - cs) / n:.2f} context "
                  "switches/job", flush=True)
    finally:
        app.close()
        shutil.rmtree(scratch, ignore_errors=True)
        if args.engine == "redis":
            import redis

            redis.Redis.from_url(redis_url).flushdb()
        if args.engine == "postgres":
            from benchmarks.common import drop_pg_databases

            drop_pg_databases()
    return 0


if __name__ == "__main__":
    sys.exit(main())
