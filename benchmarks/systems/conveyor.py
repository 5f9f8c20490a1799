"""Conveyor on SQLite, Redis or PostgreSQL; BENCH_VARIANT ``<engine>[-async]``.

``-async`` runs the ``async def`` no-op (the worker's event loop) instead of the ``def`` one
(the worker's thread pool).
"""

from __future__ import annotations

import os

from benchmarks.common import (
    REDIS_URL,
    bin_path,
    flush_redis,
    mark,
    pg_url,
    recreate_pg_database,
    remove_sqlite,
    sqlite_path,
)
from conveyor import Conveyor

VARIANT = os.environ.get("BENCH_VARIANT", "sqlite")
ENGINE, _, FLAVOUR = VARIANT.partition("-")
CONCURRENCY = 8
DESCRIPTION = (f"`conveyor worker -c {CONCURRENCY}` ("
               + ("`async def` task on the worker's event loop"
                  if FLAVOUR == "async" else "`def` task in the thread pool") + ")")

URLS = {
    "sqlite": "sqlite:///" + sqlite_path("conveyor.db"),
    "redis": REDIS_URL,
    "postgres": pg_url("bench_conveyor"),
}
app = Conveyor(URLS[ENGINE])


@app.task(name="noop")
def noop(i: int) -> None:
    mark(i)


@app.task(name="anoop")
async def anoop(i: int) -> None:
    mark(i)


TASK = anoop if FLAVOUR == "async" else noop


def reset() -> None:
    app.close()
    if ENGINE == "sqlite":
        remove_sqlite("conveyor.db")
    elif ENGINE == "redis":
        flush_redis()
    else:
        recreate_pg_database("bench_conveyor")
        app.backend.migrate()
    app.close()


def enqueue(i: int):
    return TASK.enqueue(i)


async def aenqueue(i: int):
    return await TASK.aenqueue(i)


def enqueue_batch(ids: range) -> None:
    TASK.enqueue_many([((i,), {}) for i in ids])


if ENGINE == "postgres":
    import psycopg

    _caller: psycopg.Connection | None = None

    def tx_start() -> None:
        global _caller
        _caller = psycopg.connect(URLS["postgres"], autocommit=True)

    def tx_stop() -> None:
        if _caller is not None:
            _caller.close()

    def enqueue_tx(i: int) -> None:
        """One transaction of the caller's own per job: the job is written in it."""
        with _caller.transaction():
            TASK.options(connection=_caller).enqueue(i)


def done_latencies(handles) -> list[float]:
    """enqueue→finished from the job records (created_at → finished_at), in ms."""
    out = []
    for handle in handles:
        record = app.get_job(handle.id).record
        out.append((record.finished_at - record.created_at) * 1000)
    return out


def worker_argv(index: int) -> list[str]:
    return [bin_path("conveyor"), "-A", "benchmarks.systems.conveyor:app", "worker",
            "-c", str(CONCURRENCY)]
