"""A real ``conveyor web`` process and a real ``conveyor worker`` process on one SQLite file:
submit over HTTP, follow over SSE, read the result, cancel a running job."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

APPS = Path(__file__).parent / "apps"
CONVEYOR = str(Path(sys.executable).parent / "conveyor")
TOKEN = "acceptance-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except httpx.TransportError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[httpx.Client]:
    """``conveyor web`` + ``conveyor worker`` on one SQLite file; a client for the API."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(CONVEYOR_URL=f"sqlite:///{tmp_path / 'web.db'}", CONVEYOR_API_TOKENS=TOKEN,
               PYTHONPATH=os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")]))
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    for name, args in (("web", ["web", "--port", str(port)]),
                       ("worker", ["worker", "-c", "2"])):
        log = (tmp_path / f"{name}.log").open("wb")
        logs.append(log)
        procs.append(subprocess.Popen([CONVEYOR, "-A", "web_app:app", *args], env=env,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=30)
    try:
        wait_until(lambda: client.get("/health").status_code == 200, 30, "the API to start")
        wait_until(lambda: client.get("/api/workers").json()["workers"], 30,
                   "the worker to register")
        yield client
    finally:
        client.close()
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for log in logs:
            log.close()
        for name in ("web", "worker"):
            print(f"--- {name} log ---\n{(tmp_path / f'{name}.log').read_text()[-3000:]}")


def read_events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """Follow the job's event stream to its end, as a browser's EventSource would."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    events.append(current)
                current = {}
            elif line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
    return events


def test_submit_follow_and_read_the_result_over_http(system: httpx.Client) -> None:
    created = system.post("/api/jobs", json={"task": "render", "kwargs": {"steps": 4}})
    assert created.status_code == 201
    job = created.json()
    assert created.headers["location"] == f"/api/jobs/{job['id']}"

    events = read_events(system, job["id"])
    assert events[0]["event"] == "state"
    percents = [e["data"]["progress"]["percent"] for e in events if e["event"] == "progress"]
    assert percents == [20.0, 40.0, 60.0, 80.0]
    assert [e["data"]["progress"]["message"] for e in events if e["event"] == "progress"] == \
        [f"step {i} of 4" for i in range(1, 5)]
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))
    final = events[-1]
    assert (final["event"], final["data"]["status"]) == ("state", "succeeded")

    result = system.get(f"/api/jobs/{job['id']}/result")
    assert result.status_code == 200
    assert result.json()["result"] == {"steps": 4}
    # the stream of a finished job, resumed at its last id, says there is nothing more
    again = system.get(f"/api/jobs/{job['id']}/events",
                       headers={"Last-Event-ID": str(final["id"])})
    assert again.status_code == 204


def test_cancel_over_http_stops_a_running_job(system: httpx.Client) -> None:
    job = system.post("/api/jobs", json={"task": "endless"}).json()
    wait_until(lambda: system.get(f"/api/jobs/{job['id']}").json()["status"] == "running",
               30, "the job to start")
    cancel = system.post(f"/api/jobs/{job['id']}/cancel")
    assert cancel.status_code == 202
    assert cancel.json()["cancel_requested"] is True
    result = system.get(f"/api/jobs/{job['id']}/result", params={"wait": 20})
    assert result.status_code == 409
    assert result.json()["type"] == "urn:conveyor:problem:job-cancelled"
    assert system.get(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"


def test_the_api_needs_its_token(system: httpx.Client) -> None:
    base = str(system.base_url).rstrip("/")
    anonymous = httpx.get(f"{base}/api/jobs")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{base}/health").status_code == 200
    metrics = system.get("/metrics").text
    assert "conveyor_worker_up{worker=" in metrics
