"""Fixtures for the HTTP API tests: an app with a few tasks on every engine, the API in front
of it, and a worker to start when a test needs jobs to run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from api_support import GATES, build_app
from starlette.testclient import TestClient

from conveyor import Conveyor
from conveyor.web import create_app


@pytest.fixture
def app(backend_url: str) -> Iterator[Conveyor]:
    conveyor = build_app(backend_url)
    yield conveyor
    conveyor.close()


@pytest.fixture
def make_client(app: Conveyor) -> Iterator[Callable[..., TestClient]]:
    """A TestClient for ``create_app(app, **options)``; closed after the test."""
    clients: list[TestClient] = []

    def make(**options: Any) -> TestClient:
        options.setdefault("tokens", [])
        options.setdefault("read_only_tokens", [])
        client = TestClient(create_app(app, **options), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def worker(app: Conveyor) -> Iterator[Callable[[], Any]]:
    """Call it to start a worker thread; it is stopped after the test."""
    started: list[Any] = []

    def start() -> Any:
        w = app.worker(concurrency=4, poll_interval=0.05, grace=1).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop(graceful=False)
        w.join(10)
    for gate in GATES.values():
        gate.set()
    GATES.clear()
