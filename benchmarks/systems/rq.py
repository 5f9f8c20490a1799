"""RQ: one SimpleWorker process (runs jobs in-process; the default Worker forks per job)."""

from __future__ import annotations

from redis import Redis
from rq import Queue

from benchmarks.common import REDIS_URL, bin_path, flush_redis, mark

DESCRIPTION = ("`rq worker -w rq.worker.SimpleWorker` (no fork per job: RQ's default worker "
               "forks a child for every job and is far slower)")

_queue: Queue | None = None


def noop(i):
    mark(i)


def start() -> None:
    global _queue
    _queue = Queue("bench", connection=Redis.from_url(REDIS_URL))


def stop() -> None:
    global _queue
    if _queue is not None:
        _queue.connection.close()
        _queue = None


def reset() -> None:
    flush_redis()


def enqueue(i: int) -> None:
    _queue.enqueue(noop, i)


def enqueue_batch(ids: range) -> None:
    _queue.enqueue_many([Queue.prepare_data(noop, (i,)) for i in ids])


def worker_argv(index: int) -> list[str]:
    return [bin_path("rq"), "worker", "-u", REDIS_URL, "-w", "rq.worker.SimpleWorker",
            "--logging_level", "WARNING", "-q", "bench"]
