"""Where the test servers are, how a test that needs one skips or fails without it, and a
fresh, empty store on each engine (:func:`fresh_store`).

Importable from every test module as ``servers`` (``pythonpath = ["tests"]`` in pyproject).
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("CONVEYOR_TEST_REDIS_PORT", "6379"))
PG_DSN = os.environ.get("CONVEYOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI must run the {name} suite, not skip it")
    pytest.skip(f"{message} (start it to run these tests)")


def require_program(program: str) -> str:
    """The path of ``program`` (a server binary a test starts on its own), skipping the test
    without it, or failing it in CI."""
    found = shutil.which(program)
    if found:
        return found
    message = f"{program} is not installed"
    if IN_CI:
        pytest.fail(f"{message}; CI must run this test, not skip it")
    pytest.skip(f"{message} (install it to run this test)")


def _redis_store(request: pytest.FixtureRequest) -> Iterator[str]:
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    # a key prefix of its own per test: concurrent runs on one server never see each other
    db = 15
    prefix = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}?prefix={prefix}"
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start:start + 1000])
    client.close()


def _postgres_store(request: pytest.FixtureRequest) -> Iterator[str]:
    require_server("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    schema = f"conveyor_test_{uuid.uuid4().hex[:12]}"
    yield f"{PG_DSN}?schema={schema}&auto_migrate=1"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _sqlite_store(request: pytest.FixtureRequest) -> Iterator[str]:
    tmp = request.getfixturevalue("tmp_path")
    yield f"sqlite:///{tmp / 'conveyor.db'}"


def _memory_store(request: pytest.FixtureRequest) -> Iterator[str]:
    yield "memory://"


_STORES = {"memory": _memory_store, "sqlite": _sqlite_store, "redis": _redis_store,
           "postgres": _postgres_store}
#: engines the shared suites run on; an engine joins by adding its name here
ALL_ENGINES = "memory,sqlite,postgres,redis"
#: ``CONVEYOR_TEST_ENGINES=memory,sqlite`` narrows the matrix on a laptop
ENGINES = [e for e in os.environ.get("CONVEYOR_TEST_ENGINES", ALL_ENGINES).split(",") if e]
#: the engines whose store several processes share (``memory://`` lives in one process)
SHARED_ENGINES = [e for e in ENGINES if e != "memory"]
_MARKS = {"redis": [pytest.mark.redis], "postgres": [pytest.mark.postgres]}


def engine_params(engines: list[str]) -> list[object]:
    """``engines`` as parameters of a fixture or test, each with its server's marker."""
    return [pytest.param(e, marks=_MARKS.get(e, []), id=e) for e in engines]


def fresh_store(engine: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fixture body: yields the URL of an empty store on ``engine`` (a SQLite file in
    ``tmp_path``, a Redis key prefix of its own, a PostgreSQL schema of its own), and wipes
    the Redis keys or drops the schema after the test."""
    yield from _STORES[engine](request)
