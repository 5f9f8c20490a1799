"""Tasks the integration tests run in real worker processes (``conveyor -A core_app:app``).

The backend URL comes from ``CONVEYOR_URL`` (a fresh store per test, on any engine), the lease
from ``CORE_APP_LEASE`` (2 s unless the test says otherwise). Tasks leave evidence in
``$CORE_APP_OUT`` with ``O_APPEND`` writes (one ``write()`` per line, so lines from several
processes never interleave): which job ran, in which process, which attempt.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from conveyor import Conveyor, current_job

# a short lease, so a killed worker's job is recovered within seconds
app = Conveyor(lease=float(os.environ.get("CORE_APP_LEASE", "2")))

# an app that takes seconds to import (Django, torch, ...), as a process pool's child sees it
time.sleep(float(os.environ.get("CORE_APP_IMPORT_DELAY", "0")))


def out_dir() -> Path:
    return Path(os.environ.get("CORE_APP_OUT", "."))


def append(name: str, line: str) -> None:
    fd = os.open(out_dir() / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def mark(name: str) -> None:
    job = current_job()
    append(name, f"{job.id} {job.attempt} {os.getpid()}")


@app.task(name="record")
def record(n: int) -> int:
    """Append this job's id to ran.log: the evidence that it ran (and how many times)."""
    append("ran.log", f"{current_job().id} {n} {os.getpid()}")
    return n


@app.task(name="tick", retries=5)
def tick(n: int) -> int:
    """A short job (20 ms) that leaves proof of each run: work for a worker to die in."""
    time.sleep(0.02)
    append("ran.log", f"{current_job().id} {n} {os.getpid()}")
    return n


@app.task(name="slow", retries=1)
def slow(seconds: float) -> dict[str, int]:
    """A thread job that sleeps without checking in."""
    mark("started.log")
    time.sleep(seconds)
    mark("finished.log")
    return {"pid": os.getpid(), "attempt": current_job().attempt}


@app.task(name="sleeper_async")
async def sleeper_async(seconds: float) -> str:
    """An async job that awaits; a cancel reaches it as asyncio cancellation."""
    mark("started.log")
    await asyncio.sleep(seconds)
    mark("finished.log")
    return "slept"


@app.task(name="cooperative")
def cooperative(seconds: float) -> str:
    """A thread job that checks for a cancel between small steps."""
    job = current_job()
    mark("started.log")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job.check_cancelled()
        time.sleep(0.02)
    mark("finished.log")
    return "done"


def note_callback(kind: str) -> Callable[[object, BaseException], None]:
    """A task callback that leaves a line in callbacks.log (it runs in the worker)."""

    def callback(job: object, exc: BaseException) -> None:
        append("callbacks.log", f"{kind} {type(exc).__name__}")
    return callback


@app.task(name="stubborn", timeout=1, on_retry=note_callback("retry"),
          on_failure=note_callback("failure"))
def stubborn(seconds: float) -> str:
    """Sleeps past its 1s timeout without ever checking in (process pool: it gets killed)."""
    append("pids.log", str(os.getpid()))
    mark("started.log")
    time.sleep(seconds)
    mark("finished.log")
    return "overslept"


@app.task(name="brief", timeout=1)
def brief() -> int:
    """Well within its 1s timeout."""
    time.sleep(0.1)
    return os.getpid()


@app.task(name="hang")
def hang(seconds: float) -> str:
    """No timeout, never checks in: only a kill stops it."""
    append("pids.log", str(os.getpid()))
    mark("started.log")
    time.sleep(seconds)
    mark("finished.log")
    return "woke"


@app.task(name="late_progress", timeout=0.5)
def late_progress(seconds: float) -> str:
    """A thread job that reports progress only after its 0.5s timeout has passed."""
    mark("started.log")
    time.sleep(seconds)
    current_job().progress(50, "halfway, but too late")
    mark("finished.log")
    return "unreachable"


@app.task(name="always_fails", retries=2, retry_backoff=0.4)
def always_fails(label: str) -> None:
    """Fails every attempt, with the attempt number in its message."""
    attempt = current_job().attempt
    mark("started.log")
    raise ValueError(f"{label}: boom on attempt {attempt}")


@app.task(name="typed")
def typed(width: int, label: str = "x") -> str:
    return f"{label}:{width}"
