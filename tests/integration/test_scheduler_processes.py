"""Real scheduler processes on one SQLite file: each fire time enqueued exactly once.

The schedules beat once a second (``apps/scheduler_app.py``). No worker runs, so every job
stays queued and names its fire time in the ``schedule_fire_time`` header; the tests read
them back and check that the fire times form an unbroken run of seconds with one job each.

The three-scheduler runs last 15 s rather than 30 s: each second is already a race of three
processes for one claim, and fifteen races exercise the same claim path as thirty; the saved
time pays for the kill, restart and uvicorn scenarios within the suite's 90-second budget.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cli_procs import APPS, Procs, wait_until

from conveyor import Conveyor

pytestmark = pytest.mark.slow


@pytest.fixture
def client(url: str) -> Any:
    app = Conveyor(url)
    yield app
    app.close()


def schedulers_alive(app: Conveyor) -> int:
    return sum(1 for w in app.workers() if w.kind == "scheduler")


def jobs_of(app: Conveyor, schedule_id: str) -> list[Any]:
    jobs = []
    cursor = None
    while True:
        page = app.list_jobs(limit=1000, cursor=cursor)
        jobs += [j for j in page if j.record.headers.get("schedule") == schedule_id]
        if page.cursor is None:
            return sorted(jobs, key=lambda j: float(j.record.headers["schedule_fire_time"]))
        cursor = page.cursor


def fire_times(app: Conveyor, schedule_id: str) -> list[float]:
    return [float(j.record.headers["schedule_fire_time"]) for j in jobs_of(app, schedule_id)]


def gaps(times: list[float]) -> list[tuple[float, float]]:
    """Consecutive fire times more than one second apart."""
    return [(a, b) for a, b in itertools.pairwise(times) if b - a != 1.0]


def assert_each_second_fired_once(times: list[float], start: float, end: float) -> None:
    """One job per fire time, no second left out between the first and the last, and the
    run covers the window in which the schedulers were certainly up."""
    doubled = [t for t, n in Counter(times).items() if n > 1]
    assert not doubled, f"fire times enqueued more than once: {doubled}"
    ordered = sorted(times)
    assert not gaps(ordered), f"fire times missed between: {gaps(ordered)}"
    assert ordered[0] <= start + 1 and ordered[-1] >= end - 1, (ordered[0], ordered[-1],
                                                                 start, end)


def stop(procs: Procs, *running: subprocess.Popen[bytes]) -> None:
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    for proc in running:
        assert procs.wait(proc, 15) == 0, procs.output(proc)[-2000:]


@pytest.mark.timeout(60)
def test_three_schedulers_enqueue_every_fire_time_exactly_once(procs, client):
    procs.app = "scheduler_app:app"
    running = [procs.start("scheduler") for _ in range(3)]
    wait_until(lambda: schedulers_alive(client) == 3, 20, "three live schedulers")
    start = time.time()
    time.sleep(15)
    end = time.time()
    stop(procs, *running)
    times = fire_times(client, "beat")
    assert len(times) >= 14
    assert_each_second_fired_once(times, start, end)


@pytest.mark.timeout(60)
def test_a_scheduler_killed_mid_run_neither_loses_nor_doubles_a_fire_time(procs, client):
    procs.app = "scheduler_app:app"
    running = [procs.start("scheduler") for _ in range(3)]
    wait_until(lambda: schedulers_alive(client) == 3, 20, "three live schedulers")
    start = time.time()
    time.sleep(5.5)
    procs.kill(running[0], signal.SIGKILL)
    assert procs.wait(running[0], 10) == -signal.SIGKILL
    time.sleep(6)
    end = time.time()
    stop(procs, *running[1:])
    assert_each_second_fired_once(fire_times(client, "beat"), start, end)


@pytest.mark.timeout(75)
def test_a_scheduler_stopped_for_ten_seconds_handles_the_missed_runs_as_configured(
        procs, client):
    from conveyor.scheduler import get_schedule

    procs.app = "scheduler_app:app"
    first = procs.start("scheduler")
    wait_until(lambda: schedulers_alive(client) == 1, 20, "a live scheduler")
    time.sleep(4)
    stop(procs, first)
    time.sleep(10)
    second = procs.start("scheduler")
    wait_until(lambda: schedulers_alive(client) == 1, 20, "the restarted scheduler")
    time.sleep(4)
    stop(procs, second)

    # coalesce=False, no grace: every missed fire time runs late, each once
    beat = fire_times(client, "beat")
    assert_each_second_fired_once(beat, beat[0], beat[-1])

    # coalesce=True: the missed fire times fold into one run at the newest of them
    coalesced = jobs_of(client, "beat_coalesced")
    times = [float(j.record.headers["schedule_fire_time"]) for j in coalesced]
    [(before, after)] = gaps(times)
    assert after - before >= 10
    folded_run = coalesced[times.index(after)]
    assert folded_run.record.created_at - after < 1.0
    assert get_schedule(client, "beat_coalesced")["counts"]["coalesced"] == after - before - 1

    # misfire_grace=3: fire times more than 3 s late are recorded as missed; the rest run
    graced = jobs_of(client, "beat_grace")
    times = [float(j.record.headers["schedule_fire_time"]) for j in graced]
    [(before, after)] = gaps(times)
    late = [j for j in graced if j.record.created_at - float(
        j.record.headers["schedule_fire_time"]) > 0.9]
    assert late and all(j.record.created_at - float(j.record.headers["schedule_fire_time"])
                        <= 3.0 for j in late)
    entry = get_schedule(client, "beat_grace")
    assert entry["counts"]["missed"] == after - before - 1 >= 6
    assert Counter(times).most_common(1)[0][1] == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(60)
def test_a_fastapi_app_under_uvicorn_with_two_workers_fires_once_per_period(
        tmp_path: Path, url: str, client):
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(CONVEYOR_URL=url, PYTHONPATH=str(APPS), PYTHONUNBUFFERED="1")
    log_path = tmp_path / "uvicorn.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "scheduler_fastapi_app:api", "--workers", "2",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_until(lambda: schedulers_alive(client) == 2, 30, "a scheduler in each of the "
                   "two web processes")
        status = httpx.get(f"http://127.0.0.1:{port}/health/scheduler", timeout=5).json()
        assert status["running"] is True and status["jobs"][0]["id"] == "beat"
        start = time.time()
        time.sleep(8)
        end = time.time()
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        jobs = jobs_of(client, "beat")
        assert_each_second_fired_once([float(j.record.headers["schedule_fire_time"])
                                       for j in jobs], start, end)
        assert any(j.status == "succeeded" for j in jobs)  # the embedded workers ran them
    except BaseException:
        print(log_path.read_text(errors="replace")[-4000:])
        raise
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(10)
