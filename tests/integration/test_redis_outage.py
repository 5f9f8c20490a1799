"""A Redis restart in the middle of a run: the workers log the outage, reconnect, carry on,
and every job still finishes.

The Redis is the test's own: ``redis-server`` on a free port, its files in ``tmp_path``, with
append-only persistence as a production server has it (docs/redis.md), so the queued jobs
outlive the restart.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_procs import Procs, alive, free_port, read_lines, wait_until
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
    # leases (10 s) outlast the outage: the heartbeats resume in time and keep the jobs owned
    env = procs.env(CORE_APP_LEASE="10")
    workers = [procs.start("worker", "-c", "4", "--grace", "5", env=env) for _ in range(2)]
    ran = tmp_path / "ran.log"
    wait_until(lambda: len(read_lines(ran)) >= JOBS // 4, 30, "a quarter of the jobs to run")

    private_redis.stop()
    stopped_at = len(read_lines(ran))
    time.sleep(DOWN_FOR)
    assert all(alive(w.pid) for w in workers), "a worker exited while Redis was down"
    private_redis.start()
    assert stopped_at < JOBS, "every job ran before the restart: nothing was left to test"

    wait_until(lambda: core.app.stats().get("default", {}).get("succeeded") == JOBS, 60,
               "every job to succeed after the restart", interval=0.2)
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    assert [procs.wait(p, 15) for p in workers] == [0, 0]

    assert {line[0] for line in read_lines(ran)} == {job.id for job in jobs}
    rerun = 0
    for job in jobs:
        job.refresh()
        assert job.status == "succeeded", job.to_dict()
        # an attempt beyond the first is only ever a claim whose reply the restart cut off
        # (Redis ran it, the worker never heard): its lease ran out and it was run again
        assert [e.reason for e in job.errors] == ["worker_lost"] * (job.attempts - 1)
        rerun += job.attempts > 1
    for proc in workers:
        log = procs.output(proc)
        # the outage is logged (once: its end too), and the heartbeats resumed in time; an
        # outcome may be "dropped" when its first write went through but the reply was lost
        assert log.count("lost the connection to Redis") == 1, log[-3000:]
        assert log.count("restored") == 1, log[-3000:]
        assert "lease lost; another worker may run it" not in log, log[-3000:]
    print(f"{stopped_at} of {JOBS} jobs had run when Redis stopped for {DOWN_FOR}s; "
          f"{rerun} ran again after the restart")
