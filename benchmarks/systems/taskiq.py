"""Taskiq with taskiq-redis: one worker process (asyncio)."""

from __future__ import annotations

import os

from taskiq_redis import ListQueueBroker, RedisStreamBroker

from benchmarks.common import REDIS_URL, bin_path, flush_redis, mark

#: BENCH_TASKIQ_BROKER: stream (RedisStreamBroker, acknowledged) or list (ListQueueBroker)
BROKER = os.environ.get("BENCH_TASKIQ_BROKER", "stream")
broker = (RedisStreamBroker if BROKER == "stream" else ListQueueBroker)(REDIS_URL)
DESCRIPTION = ("`taskiq worker --workers 1` (a parent and one asyncio worker process), "
               + ("RedisStreamBroker (acknowledged)" if BROKER == "stream" else "ListQueueBroker")
               + ", per-job logs off; async-only client")


@broker.task(task_name="noop")
async def noop(i):
    mark(i)


async def astart() -> None:
    await broker.startup()


async def astop() -> None:
    await broker.shutdown()


def reset() -> None:
    flush_redis()


async def aenqueue(i: int) -> None:
    await noop.kiq(i)


def worker_argv(index: int) -> list[str]:
    return [bin_path("taskiq"), "worker", "benchmarks.systems.taskiq:broker", "--workers", "1",
            "--log-level", "WARNING"]
