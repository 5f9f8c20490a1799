"""PostgreSQL with real worker processes: wake-ups that outlive their LISTEN connection,
enqueue inside the caller's transaction, and workers that ride out a server restart.

The first two run on the test server (a schema of their own); the restart test starts a
PostgreSQL of its own (``initdb`` into a temporary directory, as the ``postgres`` user when the
tests run as root, ``pg_ctl`` on a free port) and stops and starts it in the middle of a run.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cli_procs import Procs, free_port, read_lines, restart_under_workers, wait_until
from servers import PG_DSN, fresh_store, require_program

from conveyor.errors import JobNotFound

#: how often a worker re-checks the queues when no notification comes (the default)
POLL_INTERVAL = 1.0


class PrivatePostgres:
    """A PostgreSQL server of the test's own, in a temporary directory, which it can restart."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        # not tmp_path: the postgres user cannot enter pytest's private (0700) directories
        self.dir = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
        self.data = self.dir / "data"
        # initdb and postgres refuse to run as root
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            shutil.chown(self.dir, "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?auto_migrate=1"

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run([*self.as_owner, *args], capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout}\n{proc.stderr}\n" \
            f"{self.log()}"

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        # fsync off: commits at memory speed; a fast shutdown still writes everything out
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.dir} -c fsync=off")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.dir / "server.log"), "-o", options, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: what a service restart does (every session is terminated, in-flight
        transactions roll back, a checkpoint is written)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                  "-t", "30", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.as_owner, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                            "-m", "immediate", "-w", "stop"], capture_output=True, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, or the newest Debian-style install."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                       key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(require_program(installed[-1] if installed else "initdb")).parent


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(postgres_bindir())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The store of ``procs`` and ``core``: a schema of its own on the test server, or the
    test's own server for a test that asks for ``private_postgres``."""
    if "private_postgres" in request.fixturenames:
        yield request.getfixturevalue("private_postgres").url
    else:
        yield from fresh_store("postgres", request)


def schema_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["schema"][0]


def listeners(schema: str) -> list[int]:
    """The server pids of the LISTEN connections of ``schema``'s channels (the workers', and
    this process's own while it waits on a job)."""
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
            (f'LISTEN "conveyor_{schema}_%',)).fetchall()
    return [pid for (pid,) in rows]


def terminate(pids: list[int]) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def start_latency(job: Any) -> float:
    """Seconds from the job's enqueue to its claim by a worker (both stamped in storage)."""
    record = job.refresh().record
    assert record.started_at is not None, job.to_dict()
    return float(record.started_at - record.created_at)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_jobs_start_within_the_poll_interval_while_the_notify_connections_are_killed_mid_run(
        tmp_path: Path, url: str, procs: Procs, core: Any) -> None:
    schema = schema_of(url)
    workers = [procs.worker("-c", "2") for _ in range(2)]
    wait_until(lambda: len(core.app.workers()) == 2, 15, "two registered workers")
    wait_until(lambda: len(listeners(schema)) == 2, 15, "both workers to LISTEN")
    first = core.record.enqueue(0)
    wait_until(lambda: first.refresh().status == "succeeded", 10, "the first job to run")
    assert start_latency(first) < 0.2  # woken by NOTIFY, not by a poll

    # every LISTEN connection of the schema is killed again and again, while jobs arrive
    # one by one: notifications are lost in every gap, and each job must still start
    killed: list[int] = []
    stop = threading.Event()

    def kill_listeners() -> None:
        while not stop.wait(0.15):
            pids = listeners(schema)
            terminate(pids)
            killed.extend(pids)

    killer = threading.Thread(target=kill_listeners, daemon=True)
    killer.start()
    try:
        jobs = []
        for n in range(1, 31):
            jobs.append(core.record.enqueue(n))
            time.sleep(0.1)
        wait_until(lambda: all(j.refresh().status == "succeeded" for j in jobs), 15,
                   "every job enqueued while the LISTEN connections were being killed")
    finally:
        stop.set()
        killer.join(5)
    assert len(killed) >= 10, f"only {len(killed)} LISTEN connection(s) were killed"
    latencies = sorted(start_latency(job) for job in jobs)
    assert latencies[-1] < POLL_INTERVAL + 0.5, latencies
    print(f"{len(killed)} LISTEN connections killed; start latency p50 "
          f"{latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")

    # the workers reconnect their LISTEN connections, and NOTIFY wakes them at once again
    wait_until(lambda: len(listeners(schema)) >= 2, 15, "the workers to LISTEN again")
    time.sleep(0.2)
    last = core.record.enqueue(99)
    wait_until(lambda: last.refresh().status == "succeeded", 10, "the last job to run")
    assert start_latency(last) < 0.2
    for proc in workers:
        assert "LISTEN connection lost" in procs.output(proc)
        proc.send_signal(signal.SIGTERM)
    assert [procs.wait(p, 15) for p in workers] == [0, 0]
    ran = [int(line[1]) for line in read_lines(tmp_path / "ran.log")]
    assert sorted(ran) == [0, *range(1, 31), 99]  # and each exactly once


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_a_job_enqueued_in_a_rolled_back_transaction_never_runs_and_a_committed_one_does(
        tmp_path: Path, url: str, procs: Procs, core: Any) -> None:
    import psycopg

    schema = schema_of(url)
    worker = procs.worker("-c", "2")
    wait_until(lambda: core.app.workers(), 15, "the worker to register")  # schema migrated
    orders = f'"{schema}".orders'
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {orders} (id int PRIMARY KEY, job_id text)")

    with psycopg.connect(PG_DSN) as conn:  # the application's own connection and transaction
        conn.execute(f"INSERT INTO {orders} VALUES (1, 'pending')")
        rolled_back = core.record.options(connection=conn).enqueue(1)
        conn.execute(f"UPDATE {orders} SET job_id = %s WHERE id = 1", (rolled_back.id,))
        conn.rollback()

        conn.execute(f"INSERT INTO {orders} VALUES (2, 'pending')")
        committed = core.record.options(connection=conn).enqueue(2)
        conn.execute(f"UPDATE {orders} SET job_id = %s WHERE id = 2", (committed.id,))
        time.sleep(0.5)  # a worker that could see it would have started it by now
        with pytest.raises(JobNotFound):
            core.app.get_job(committed.id)  # not before the commit
        assert read_lines(tmp_path / "ran.log") == []
        conn.commit()
        committed_at = time.monotonic()

    wait_until(lambda: read_lines(tmp_path / "ran.log"), 10, "the committed job to run")
    assert time.monotonic() - committed_at < 0.5  # woken by the NOTIFY sent at the commit
    committed.wait(timeout=10)
    assert committed.status == "succeeded" and committed.result(timeout=0) == 2
    # the rolled-back job does not exist and never ran; the order row went with it
    with pytest.raises(JobNotFound):
        core.app.get_job(rolled_back.id)
    time.sleep(POLL_INTERVAL + 0.2)  # a poll of the queues would find it now if it existed
    assert [line[:2] for line in read_lines(tmp_path / "ran.log")] == [[committed.id, "2"]]
    with psycopg.connect(PG_DSN) as conn:
        assert conn.execute(f"SELECT id, job_id FROM {orders}").fetchall() == \
            [(2, committed.id)]
    assert core.app.stats() == {"default": {"succeeded": 1}}
    worker.send_signal(signal.SIGTERM)
    assert procs.wait(worker, 15) == 0


RESTART_JOBS = 1500
#: longer than a statement's retries (~1 s): the workers' calls fail, and they must carry on
DOWN_FOR = 2.5


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_workers_ride_out_a_postgresql_restart_mid_run_and_every_job_still_finishes(
        tmp_path: Path, private_postgres: PrivatePostgres, procs: Procs, core: Any) -> None:
    jobs = core.tick.enqueue_many([((n,), {}) for n in range(RESTART_JOBS)])  # 20 ms each
    core.app.close()  # the test's own connections would only be killed by the restart
    # leases (10 s) outlast the outage: the heartbeats resume in time and keep the jobs owned
    stopped_at, rerun, logs = restart_under_workers(private_postgres, procs, core, jobs,
                                                    tmp_path / "ran.log", DOWN_FOR)
    for log in logs:
        # the outage was seen (a busy worker never waits, so it may have no LISTEN
        # connection to lose)
        assert "PostgreSQL operation failed" in log, log[-3000:]
    print(f"{stopped_at} of {RESTART_JOBS} jobs had run when PostgreSQL stopped for "
          f"{DOWN_FOR}s; {rerun} ran again after the restart")
