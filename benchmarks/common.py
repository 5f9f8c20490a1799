"""What every adapter and the driver share: where the services are, and the job's mark.

The no-op job of every system calls :func:`mark` with its integer argument. ``mark`` appends
one fixed-size record ``(i, time.time(), pid)`` to the file named by ``BENCH_MARKS`` with a
single ``O_APPEND`` write: a few microseconds, no lock, no network, atomic between the threads
and processes of any worker. The driver counts records by the file's size and reads the
timestamps afterwards, so the measurement costs every system the same and bottlenecks none.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

#: i (int64), unix time (float64), pid (int64)
RECORD = struct.Struct("<qdq")

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
#: libpq URL of the server; benchmark databases are named bench_<system>
PG_SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
#: the database the harness connects to for CREATE/DROP DATABASE
PG_ADMIN_DB = os.environ.get("BENCH_PG_ADMIN_DB", "test")

_fd: int | None = None
_pid: int | None = None


def mark(i: int) -> None:
    """Record that job ``i`` ran, now, in this process."""
    global _fd, _pid
    pid = os.getpid()
    if _fd is None or _pid != pid:  # first call, or a forked child
        _fd = os.open(os.environ["BENCH_MARKS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _pid = pid
    os.write(_fd, RECORD.pack(i, time.time(), pid))


def sqlite_path(name: str) -> str:
    """An absolute path for a SQLite file in the run's scratch directory."""
    return str(Path(os.environ.get("BENCH_DIR", "/tmp")) / name)


def pg_url(database: str) -> str:
    if not database.startswith("bench_"):
        raise ValueError("benchmark databases are named bench_*")
    return f"{PG_SERVER}/{database}"


def flush_redis() -> None:
    import redis

    db = int(REDIS_URL.rsplit("/", 1)[1])
    if not 1 <= db <= 7:
        raise ValueError("benchmarks use Redis databases 1-7 only (tests use 8-15)")
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()


def recreate_pg_database(database: str) -> None:
    """Drop and create ``database`` (named bench_*), empty."""
    import psycopg

    pg_url(database)  # checks the name
    with psycopg.connect(f"{PG_SERVER}/{PG_ADMIN_DB}", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}"')


def drop_pg_databases() -> None:
    """Drop every bench_* database (the harness's clean-up)."""
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/{PG_ADMIN_DB}", autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%'")]
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def remove_sqlite(name: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(sqlite_path(name) + suffix)
        except FileNotFoundError:
            pass


def bin_path(name: str) -> str:
    """A console script of the interpreter running the harness (the bench venv's)."""
    import sys

    return str(Path(sys.executable).parent / name)
