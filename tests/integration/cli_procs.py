"""Real ``conveyor`` processes, started the way a user starts them, and always killed.

Shared by ``tests/integration`` and ``tests/acceptance`` (imported as a plain module: both
directories put this one on ``sys.path``).

Each test gets a fresh store (``CONVEYOR_URL``: a SQLite file in its ``tmp_path``, or a Redis
key prefix or PostgreSQL schema of its own), the test apps in ``apps/`` on ``PYTHONPATH``, and
a :class:`Procs` that starts ``conveyor -A core_app:app ...`` in its own process group (so a
process pool's children die with it) and SIGKILLs whatever is still alive when the test ends,
pass or fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support import wait_until

APPS = Path(__file__).parent / "apps"
if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))

_script = Path(sys.executable).parent / "conveyor"
CONVEYOR = [str(_script)] if _script.exists() else [shutil.which("conveyor") or "conveyor"]

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_lines(path: Path) -> list[list[str]]:
    """The evidence file's lines, split in words ([] when the file does not exist)."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by its parent) still answers kill(pid, 0)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Procs:
    """Starts ``conveyor`` subprocesses for one test and guarantees they are gone after it."""

    def __init__(self, tmp_path: Path, url: str, app: str = "core_app:app",
                 apps: Path = APPS) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.app = app
        #: the directory of the app modules, put on the processes' PYTHONPATH
        self.apps = apps
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.apps), os.environ.get("PYTHONPATH", "")) if p)
        env["CONVEYOR_URL"] = self.url
        env["CORE_APP_OUT"] = str(self.tmp_path)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def start(self, *args: str, app: str | None = None, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``conveyor -A app ARGS...`` in the background (``app=""``: no ``-A``), output in a
        log file; ``env`` replaces the environment :meth:`env` makes."""
        log_path = self.tmp_path / f"proc-{len(self.started)}.log"
        app_args = [] if app == "" else ["-A", app or self.app]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([*CONVEYOR, *app_args, *args],
                                    env=self.env() if env is None else env,
                                    cwd=cwd or self.tmp_path, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((proc, log_path))
        return proc

    def worker(self, *args: str) -> subprocess.Popen[bytes]:
        return self.start("worker", *args)

    def run(self, *args: str, timeout: float = 30, app: str | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
        """``conveyor -A app ARGS...`` to completion (``app=""``: no ``-A`` at all)."""
        app_args = [] if app == "" else ["-A", app or self.app]
        return subprocess.run([*CONVEYOR, *app_args, *args], env=self.env(**env),
                              cwd=self.tmp_path, capture_output=True, text=True,
                              timeout=timeout)

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        for started, log in self.started:
            if started is proc:
                return log.read_text(errors="replace")
        return ""

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        """The exit code; fails the test (with the process's output) if it is still running."""
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process {proc.pid} still running after {timeout}s; "
                                 f"output:\n{self.output(proc)[-3000:]}") from None

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Signal the process's whole group (the worker and its pool children)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def cleanup(self) -> None:
        for proc, _ in self.started:
            self.kill(proc)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


def restart_under_workers(server: Any, procs: Procs, core: Any, jobs: list[Any], ran: Path,
                          down_for: float) -> tuple[int, int, list[str]]:
    """Stop ``server`` (something with ``stop()``/``start()``) while two workers run
    ``jobs``, start it again after ``down_for`` seconds, and check that every job then ran
    and succeeded, each extra attempt being a claim whose reply the outage cut off (it was
    applied, the worker never heard, its lease ran out). Returns (jobs run before the stop,
    jobs that ran again, each worker's output)."""
    env = procs.env(CORE_APP_LEASE="10")  # leases outlast the outage: heartbeats resume in time
    workers = [procs.start("worker", "-c", "4", "--grace", "5", env=env) for _ in range(2)]
    wait_until(lambda: len(read_lines(ran)) >= len(jobs) // 4, 30, "a quarter of the jobs")
    server.stop()
    stopped_at = len(read_lines(ran))
    time.sleep(down_for)
    assert all(alive(w.pid) for w in workers), "a worker exited while the server was down"
    server.start()
    assert stopped_at < len(jobs), "every job ran before the restart: nothing left to test"
    wait_until(lambda: core.app.stats().get("default", {}).get("succeeded") == len(jobs), 60,
               "every job to succeed after the restart", interval=0.2)
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    assert [procs.wait(p, 15) for p in workers] == [0, 0]
    assert {line[0] for line in read_lines(ran)} == {job.id for job in jobs}
    rerun = 0
    for job in jobs:
        job.refresh()
        assert job.status == "succeeded", job.to_dict()
        assert [e.reason for e in job.errors] == ["worker_lost"] * (job.attempts - 1)
        rerun += job.attempts > 1
    logs = [procs.output(proc) for proc in workers]
    for log in logs:
        assert "lease lost; another worker may run it" not in log, log[-3000:]
    return stopped_at, rerun, logs
