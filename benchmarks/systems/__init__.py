"""The rows of the benchmark: which adapter module, which engine, which variant.

Every adapter module (``benchmarks/systems/<name>.py``) has the same shape:

* ``DESCRIPTION``: how its worker is configured (shown in the README);
* ``reset()``: empty its storage (flush the Redis db, recreate the bench_* database, delete the
  SQLite file) and create its schema;
* ``enqueue(i)`` (sync caller), ``aenqueue(i)`` (async caller), ``enqueue_batch(ids)`` (the
  library's own batch API): each optional, a library lacking one has none;
* ``start()``/``stop()`` and ``astart()``/``astop()``: optional, open and close the client in a
  sync caller or inside an event loop;
* ``worker_argv(index)``: the library's own worker command for one worker process;
* the no-op task itself, which calls :func:`benchmarks.common.mark` with its argument.

The variant reaches the adapter (in the driver and in the worker processes alike) through
``BENCH_VARIANT``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class System:
    name: str
    module: str
    variant: str
    engine: str
    #: a Conveyor row (compared against the peers of its engine)
    conveyor: bool = False
    #: a module that must be importable for the row to run (a backend still being written)
    requires: str | None = None


_CONVEYOR = "benchmarks.systems.conveyor"

SYSTEMS: list[System] = [
    System("conveyor-sqlite", _CONVEYOR, "sqlite", "sqlite", True,
           "conveyor.backends.sqlite"),
    System("conveyor-sqlite-async", _CONVEYOR, "sqlite-async", "sqlite", True,
           "conveyor.backends.sqlite"),
    System("huey-sqlite", "benchmarks.systems.huey", "sqlite", "sqlite"),
    System("conveyor-redis", _CONVEYOR, "redis", "redis", True, "conveyor.backends.redis"),
    System("conveyor-redis-async", _CONVEYOR, "redis-async", "redis", True,
           "conveyor.backends.redis"),
    System("huey-redis", "benchmarks.systems.huey", "redis", "redis"),
    System("celery-redis", "benchmarks.systems.celery", "redis", "redis"),
    System("dramatiq-redis", "benchmarks.systems.dramatiq", "redis", "redis"),
    System("rq-redis", "benchmarks.systems.rq", "redis", "redis"),
    System("arq-redis", "benchmarks.systems.arq", "redis", "redis"),
    System("saq-redis", "benchmarks.systems.saq", "redis", "redis"),
    System("taskiq-redis", "benchmarks.systems.taskiq", "redis", "redis"),
    System("conveyor-postgres", _CONVEYOR, "postgres", "postgres", True,
           "conveyor.backends.postgres"),
    System("procrastinate-postgres", "benchmarks.systems.procrastinate", "postgres",
           "postgres"),
    System("huey-postgres", "benchmarks.systems.huey", "postgres", "postgres"),
]

BY_NAME = {s.name: s for s in SYSTEMS}
ENGINES = ("sqlite", "redis", "postgres")
