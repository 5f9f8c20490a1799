"""A Redis restart in the middle of a run: the workers log the outage, reconnect, carry on,
and every job still finishes.

The Redis is the test's own: ``redis-server`` on a free port, its files in ``tmp_path``, with
append-only persistence as a production server has it (docs/redis.md), so the queued jobs
outlive the restart.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_procs import Procs, free_port, restart_under_workers, wait_until
from servers import require_program

JOBS = 3000
#: longer than a call's retries (1 s): the workers' calls fail, and they must carry on
DOWN_FOR = 2.5


class PrivateRedis:
    """A ``redis-server`` of the test's own, which it can restart."""

    def __init__(self, program: str, directory: Path) -> None:
        self.program = program
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix=outage"

    def start(self) -> None:
        self.dir.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [self.program, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--appendonly", "yes", "--save", "",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._ready, 10, f"redis-server on port {self.port} to accept connections")

    def _ready(self) -> bool:
        import redis

        assert self.proc is not None and self.proc.poll() is None, \
            (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        try:
            with redis.Redis(port=self.port, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:  # not listening yet, or still loading its files
            return False

    def stop(self) -> None:
        """Shut down as a service restart does: the append-only file is flushed and the
        clients are disconnected."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(require_program("redis-server"), tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
def url(private_redis: PrivateRedis) -> str:
    """The store of ``procs`` and ``core``: the private server."""
    return private_redis.url


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.timeout(90)
def test_workers_ride_out_a_redis_restart_mid_run_and_every_job_still_finishes(
        tmp_path: Path, procs: Procs, core: Any, private_redis: PrivateRedis) -> None:
    jobs = core.tick.enqueue_many([((n,), {}) for n in range(JOBS)])  # 20 ms each
    stopped_at, rerun, logs = restart_under_workers(private_redis, procs, core, jobs,
                                                    tmp_path / "ran.log", DOWN_FOR)
    for log in logs:
        # the outage is logged once, and its end once
        assert log.count("lost the connection to Redis") == 1, log[-3000:]
        assert log.count("restored") == 1, log[-3000:]
    print(f"{stopped_at} of {JOBS} jobs had run when Redis stopped for {DOWN_FOR}s; "
          f"{rerun} ran again after the restart")
