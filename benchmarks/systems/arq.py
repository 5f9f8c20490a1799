"""arq: one worker process (asyncio), its default max_jobs."""

from __future__ import annotations

import os

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from benchmarks.common import REDIS_URL, bin_path, flush_redis, mark

DESCRIPTION = ("`arq WorkerSettings` (asyncio, max_jobs=10), poll_delay 0.05 s (its default "
               "0.5 s caps a worker near 200 jobs/s), per-job logs off; async-only client")

_pool: ArqRedis | None = None


async def noop(ctx, i):
    mark(i)


#: arq logs two lines per job at INFO by default; the benchmark keeps warnings only
#: (`arq --custom-log-dict`), as it does for every library that logs each job
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    #: arq's default, 0.5 s, caps a worker at its queue_read_limit (100 jobs) per poll, about
    #: 200 jobs/s here; 0.05 s lets it drain as fast as its CPU allows (BENCH_ARQ_POLL_DELAY)
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.05"))


async def astart() -> None:
    global _pool
    _pool = await create_pool(WorkerSettings.redis_settings)


async def astop() -> None:
    global _pool
    if _pool is not None:
        await _pool.aclose()
        _pool = None


def reset() -> None:
    flush_redis()


async def aenqueue(i: int) -> None:
    await _pool.enqueue_job("noop", i)


def worker_argv(index: int) -> list[str]:
    return [bin_path("arq"), "benchmarks.systems.arq.WorkerSettings", "--custom-log-dict",
            "benchmarks.systems.arq.LOG_CONFIG"]
