"""Procrastinate (psycopg 3): one worker process, asyncio, concurrency 8."""

from __future__ import annotations

import psycopg
from procrastinate import App, PsycopgConnector

from benchmarks.common import bin_path, mark, pg_url, recreate_pg_database

CONCURRENCY = 8
DESCRIPTION = (f"`procrastinate worker --concurrency {CONCURRENCY}` (asyncio, LISTEN/NOTIFY), "
               "per-job logs off; sync `defer`, `batch_defer`, async `defer_async`")

app = App(connector=PsycopgConnector(conninfo=pg_url("bench_procrastinate")))


@app.task(name="noop")
def noop(i):
    mark(i)


def reset() -> None:
    recreate_pg_database("bench_procrastinate")
    app.open()
    try:
        app.schema_manager.apply_schema()
    finally:
        app.close()


def start() -> None:
    app.open()


def stop() -> None:
    app.close()


async def astart() -> None:
    await app.open_async()


async def astop() -> None:
    await app.close_async()


_caller: psycopg.Connection | None = None


def tx_start() -> None:
    global _caller
    app.open()
    _caller = psycopg.connect(pg_url("bench_procrastinate"), autocommit=True)


def tx_stop() -> None:
    if _caller is not None:
        _caller.close()
    app.close()


def enqueue_tx(i: int) -> None:
    """One transaction of the caller's own per job: the job is written in it."""
    with _caller.transaction():
        noop.configure(connection=_caller).defer(i=i)


def enqueue(i: int) -> None:
    noop.defer(i=i)


def enqueue_batch(ids: range) -> None:
    noop.batch_defer(*({"i": i} for i in ids))


async def aenqueue(i: int) -> None:
    await noop.defer_async(i=i)


def worker_argv(index: int) -> list[str]:
    return [bin_path("procrastinate"), "--app=benchmarks.systems.procrastinate.app",
            "--log-level", "warning", "worker",
            "--concurrency", str(CONCURRENCY)]
