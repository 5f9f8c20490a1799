"""Fixtures of the CLI acceptance tests: ``conveyor`` run as a user runs it, in a subprocess,
with the process helpers of ``tests/integration/cli_procs.py``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE / "apps"))

from cli_procs import Procs  # noqa: E402


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def cli(tmp_path: Path, url: str) -> Iterator[Procs]:
    """Runs ``conveyor -A cli_app:app ...`` with ``CONVEYOR_URL`` set to this test's file."""
    manager = Procs(tmp_path, url, app="cli_app:app", apps=HERE / "apps")
    try:
        yield manager
    finally:
        manager.cleanup()


@pytest.fixture
def client(url: str) -> Iterator[object]:
    """The app module, pointed at this test's file, for checking what the CLI did."""
    import cli_app

    cli_app.app.close()
    saved = cli_app.app.url
    cli_app.app.url = url
    try:
        yield cli_app
    finally:
        cli_app.app.close()
        cli_app.app.url = saved
