"""Shared fixtures: one ``backend_url`` parametrized over every engine.

Redis and PostgreSQL tests skip with a clear message when the server is not reachable on a
laptop, and fail in CI (``CI=true``), where the servers are part of the machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import ENGINES, engine_params, fresh_store


@pytest.fixture(params=engine_params(ENGINES))
def backend_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty store for each test, on every engine."""
    yield from fresh_store(request.param, request)


@pytest.fixture
def backend(backend_url: str):
    from conveyor.backends import open_backend

    store = open_backend(backend_url)
    yield store
    store.close()
