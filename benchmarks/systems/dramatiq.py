"""Dramatiq with the Redis broker: one worker process with threads."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks.common import REDIS_URL, bin_path, flush_redis, mark

THREADS = 8
DESCRIPTION = f"`dramatiq --processes 1 --threads {THREADS}` (a parent and one worker process)"

broker = RedisBroker(url=REDIS_URL)
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop(i):
    mark(i)


def reset() -> None:
    flush_redis()


def enqueue(i: int) -> None:
    noop.send(i)


def worker_argv(index: int) -> list[str]:
    return [bin_path("dramatiq"), "benchmarks.systems.dramatiq", "--processes", "1",
            "--threads", str(THREADS)]
