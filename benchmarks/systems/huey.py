"""Huey: SqliteHuey, RedisHuey or PostgresHuey (BENCH_VARIANT), its consumer with threads."""

from __future__ import annotations

import os

from huey import PostgresHuey, RedisHuey, SqliteHuey

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

VARIANT = os.environ.get("BENCH_VARIANT", "sqlite")
#: consumer threads (BENCH_HUEY_WORKERS); 1 is Huey's default
THREADS = int(os.environ.get("BENCH_HUEY_WORKERS", "1"))
DESCRIPTION = (f"`huey_consumer -k thread -w {THREADS}`; storage defaults "
               "(SQLite: WAL, synchronous FULL; Redis: blocking pop; PostgreSQL: LISTEN/NOTIFY)")

if VARIANT == "sqlite":
    huey = SqliteHuey("bench", filename=sqlite_path("huey.db"))
elif VARIANT == "redis":
    huey = RedisHuey("bench", url=REDIS_URL)
elif VARIANT == "postgres":
    # the database is created by reset(), after this module is first imported
    huey = PostgresHuey("bench", dsn=pg_url("bench_huey"), create_tables=False)
else:
    raise ValueError(VARIANT)


@huey.task()
def noop(i):
    mark(i)


def _close() -> None:
    storage = huey.storage
    storage.close()
    # PostgresStorage.close() closes only its LISTEN connection; the database is about to be
    # dropped, so drop the shared one too (BaseSqlStorage keeps it in _conn)
    conn = getattr(storage, "_conn", None)
    if conn is not None:
        conn.close()
        storage._conn = None


def reset() -> None:
    _close()
    if VARIANT == "sqlite":
        remove_sqlite("huey.db")
        huey.storage.initialize_schema()
    elif VARIANT == "redis":
        flush_redis()
    else:
        recreate_pg_database("bench_huey")
        huey.storage.initialize_schema()


def enqueue(i: int) -> None:
    noop(i)


def worker_argv(index: int) -> list[str]:
    return [bin_path("huey_consumer"), "benchmarks.systems.huey.huey", "-k", "thread",
            "-w", str(THREADS), "-q"]
