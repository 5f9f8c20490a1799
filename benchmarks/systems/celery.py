"""Celery with the Redis broker, one worker process with a thread pool."""

from __future__ import annotations

import os

from celery import Celery

from benchmarks.common import REDIS_URL, bin_path, flush_redis, mark

THREADS = 8
#: worker pool (BENCH_CELERY_POOL): solo (the fastest here for no-op jobs), threads, prefork
POOL = os.environ.get("BENCH_CELERY_POOL", "solo")
DESCRIPTION = (f"`celery worker --pool {POOL}" + (f" -c {THREADS}" if POOL != "solo" else "")
               + " --without-gossip --without-mingle --without-heartbeat`; results ignored")

app = Celery("bench", broker=REDIS_URL)
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)


@app.task(name="noop")
def noop(i):
    mark(i)


def reset() -> None:
    flush_redis()


def enqueue(i: int) -> None:
    noop.delay(i)


def worker_argv(index: int) -> list[str]:
    pool = ["--pool", POOL] + (["-c", str(THREADS)] if POOL != "solo" else [])
    return [bin_path("celery"), "-A", "benchmarks.systems.celery:app", "worker", *pool,
            "-n", f"bench{index}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-l", "WARNING"]
