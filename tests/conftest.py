"""Shared fixtures: one ``backend_url`` parametrized over every engine.

Redis and PostgreSQL tests skip with a clear message when the server is not reachable on a
laptop, and fail in CI (``CI=true``), where the servers are part of the machine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from servers import PG_DSN, REDIS_HOST, REDIS_PORT, require_server


def _redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    # a key prefix of its own per test: concurrent runs on one server never see each other
    db = 15
    prefix = f"conveyor-test-{uuid.uuid4().hex[:12]}"
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}?prefix={prefix}"
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    require_server("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    schema = f"conveyor_test_{uuid.uuid4().hex[:12]}"
    yield f"{PG_DSN}?schema={schema}&auto_migrate=1"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _sqlite_url(request: pytest.FixtureRequest) -> Iterator[str]:
    tmp = request.getfixturevalue("tmp_path")
    yield f"sqlite:///{tmp / 'conveyor.db'}"


def _memory_url(request: pytest.FixtureRequest) -> Iterator[str]:
    yield "memory://"


URL_FACTORIES = {"memory": _memory_url, "sqlite": _sqlite_url, "redis": _redis_url,
                 "postgres": _postgres_url}
#: engines the shared suites run on; an engine joins by adding its name here
ALL_ENGINES = "memory,sqlite,postgres,redis"
#: ``CONVEYOR_TEST_ENGINES=memory,sqlite`` narrows the matrix on a laptop
ENGINES = [e for e in os.environ.get("CONVEYOR_TEST_ENGINES", ALL_ENGINES).split(",") if e]
_MARKS = {"redis": [pytest.mark.redis], "postgres": [pytest.mark.postgres]}


@pytest.fixture(params=[pytest.param(e, marks=_MARKS.get(e, [])) for e in ENGINES])
def backend_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty store for each test, on every engine."""
    yield from URL_FACTORIES[request.param](request)


@pytest.fixture
def backend(backend_url: str):
    from conveyor.backends import open_backend

    store = open_backend(backend_url)
    yield store
    store.close()
