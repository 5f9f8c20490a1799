"""What every adapter and the driver share: where the services are, and the job's mark.

The no-op job of every system calls :func:`mark` with its integer argument ``i``. The driver
gives each phase a file of fixed-size slots, one per job id, and every worker process maps it
into memory (``mmap``, shared): ``mark(i)`` writes ``(time.time(), pid, runs)`` into slot ``i``
with one ``struct.pack_into`` — well under a microsecond, no lock, no system call, nothing on
the network, the same for every system. No system call matters: a call such as ``os.write``
releases the GIL, and in a worker that runs jobs on several threads every release lets another
thread take the GIL — an append-write per job halved Conveyor's thread-pool drain and tripled
its context switches, a cost of the measurement, not of the worker. The driver counts the slots
written and reads the timestamps afterwards; ``runs`` counts a job run more than once.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from pathlib import Path

#: one slot per job id: the time of its first run (float64), that process's pid (int32) and
#: how many times it ran (int32)
SLOT = struct.Struct("<dii")

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
#: libpq URL of the server; benchmark databases are named bench_<system>
PG_SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
#: the database the harness connects to for CREATE/DROP DATABASE
PG_ADMIN_DB = os.environ.get("BENCH_PG_ADMIN_DB", "test")

_map: mmap.mmap | None = None
_pid: int | None = None
_slots = 0


def mark(i: int) -> None:
    """Record that job ``i`` ran, now, in this process (ids past the file's end share its
    last slot, the warm-up's)."""
    global _map, _pid, _slots
    pid = os.getpid()
    if _map is None or _pid != pid:  # first call, or a forked child
        fd = os.open(os.environ["BENCH_MARKS"], os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            _map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        _pid, _slots = pid, size // SLOT.size
    offset = (i if 0 <= i < _slots - 1 else _slots - 1) * SLOT.size
    first, who, runs = SLOT.unpack_from(_map, offset)
    if runs:
        SLOT.pack_into(_map, offset, first, who, runs + 1)
    else:
        SLOT.pack_into(_map, offset, time.time(), pid, 1)


class Marks:
    """The driver's side of the marks: a fresh file of ``slots`` empty slots."""

    def __init__(self, path: Path, slots: int) -> None:
        if path.exists():
            path.unlink()  # a mapping left in a dead worker must not see the new phase
        with open(path, "wb") as f:
            f.truncate(slots * SLOT.size)
        self.slots = slots
        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), slots * SLOT.size)
        # the runs field of slot k is int32 number 4k + 3
        self._runs = memoryview(self._map).cast("i")

    def done(self, n: int) -> int:
        """How many of the jobs 0..n-1 have run."""
        return sum(1 for r in self._runs[3:4 * n:4] if r)

    def read(self) -> list[tuple[int, float, int, int]]:
        """``(i, time of first run, pid, runs)`` of every slot written."""
        return [(k, t, pid, runs) for k, (t, pid, runs) in enumerate(SLOT.iter_unpack(
            self._map)) if runs]

    def close(self) -> None:
        self._runs.release()
        self._map.close()


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
