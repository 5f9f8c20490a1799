"""The scheduler examples in ``examples/`` run as documented (a few seconds of real time)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(30)
def test_the_periodic_jobs_example_runs_its_schedules():
    example = load_example("periodic_jobs")
    try:
        ran = example.main(seconds=2.5)
    finally:
        example.app.close()
    assert ran.get("heartbeat", 0) >= 2 and ran.get("reports", 0) >= 1
    assert "nightly_cleanup" not in ran


@pytest.mark.timeout(30)
def test_the_fastapi_lifespan_example_runs_the_scheduler_in_the_app(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("CONVEYOR_URL", f"sqlite:///{tmp_path / 'app.db'}")
    example = load_example("fastapi_lifespan")
    try:
        with TestClient(example.api) as client:
            deadline = time.monotonic() + 10
            # run_at_start: the minute's fire time runs as soon as the app is up
            while "process_due_tasks" not in example.processed:
                assert time.monotonic() < deadline, "process_due_tasks never ran"
                time.sleep(0.05)
            status = client.get("/health/scheduler").json()
            assert status["running"] is True
            assert [j["id"] for j in status["jobs"]] == ["nightly_cleanup", "process_due_tasks"]
            assert status["jobs"][0]["trigger"] == "cron[0 2 * * *, Europe/Paris]"

            assert client.post("/schedules/nightly_cleanup/trigger").status_code == 200
            while "nightly_cleanup" not in example.processed:
                assert time.monotonic() < deadline, "the triggered run never ran"
                time.sleep(0.05)
        assert example.processed.count("process_due_tasks") == 1
        assert example.conveyor.scheduler_status()["running"] is False
    finally:
        example.conveyor.close()
