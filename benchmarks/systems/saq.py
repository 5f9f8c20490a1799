"""SAQ: one worker process (asyncio), concurrency 10 (its default)."""

from __future__ import annotations

from saq import Queue

from benchmarks.common import REDIS_URL, bin_path, flush_redis, mark

DESCRIPTION = "`saq settings --workers 1` (asyncio, concurrency 10); async-only client"

queue = Queue.from_url(REDIS_URL, name="bench")


async def noop(ctx, *, i):
    mark(i)


settings = {"queue": queue, "functions": [noop], "concurrency": 10}

_client: Queue | None = None


async def astart() -> None:
    global _client
    _client = Queue.from_url(REDIS_URL, name="bench")
    await _client.connect()


async def astop() -> None:
    global _client
    if _client is not None:
        await _client.disconnect()
        _client = None


def reset() -> None:
    flush_redis()


async def aenqueue(i: int) -> None:
    await _client.enqueue("noop", i=i)


def worker_argv(index: int) -> list[str]:
    return [bin_path("saq"), "benchmarks.systems.saq.settings", "--workers", "1", "--quiet"]
