"""Fixtures of the integration tests: a fresh store (a SQLite file; each engine the worker
processes can share for a test marked ``every_engine``), the test app, and :class:`Procs` (see
``cli_procs.py``), which kills every process a test started, pass or fail."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_procs import Procs
from servers import SHARED_ENGINES, engine_params, fresh_store


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("every_engine") is not None:
        metafunc.parametrize("url", engine_params(SHARED_ENGINES), indirect=True)


@pytest.fixture
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a fresh, empty store: a SQLite file in ``tmp_path``, or, for a test marked
    ``every_engine``, each engine in turn (a Redis key prefix, a PostgreSQL schema)."""
    yield from fresh_store(getattr(request, "param", "sqlite"), request)


@pytest.fixture
def procs(tmp_path: Path, url: str, request: pytest.FixtureRequest) -> Iterator[Procs]:
    manager = Procs(tmp_path, url)
    try:
        yield manager
    finally:
        manager.cleanup()
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            for proc, log in manager.started:
                print(f"--- output of {proc.args} (exit {proc.returncode}) ---")
                print(log.read_text(errors="replace")[-4000:])


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def core(url: str) -> Iterator[Any]:
    """The test app module, its ``app`` pointed at this test's SQLite file (the client side)."""
    import core_app

    core_app.app.close()
    core_app.app.url = url
    try:
        yield core_app
    finally:
        core_app.app.close()
