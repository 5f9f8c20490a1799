"""What the SQLite backend promises beyond the shared conformance suite: its file, its schema, its
behaviour with several processes on one file, and that it agrees with the memory reference."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor.backends import open_backend
from conveyor.backends.base import AttemptError, Backend, JobFilter, JobRecord, Outcome
from conveyor.backends.memory import MemoryBackend
from conveyor.backends.sqlite import SQLiteBackend
from conveyor.backends.sqlite.connections import FileState
from conveyor.backends.sqlite.queries import CLAIM
from conveyor.backends.sqlite.schema import JOB_COLUMNS, MIGRATIONS, SCHEMA_VERSION
from conveyor.errors import BackendError, BackendUnavailable, ConfigurationError, SchemaOutdated
from conveyor.ids import new_job_id

NOW = 1_800_000_000.0
LEASE = 30.0
REPO = Path(__file__).resolve().parents[2]


def make(queue: str = "default", **fields: object) -> JobRecord:
    values: dict[str, object] = {"run_at": NOW, "created_at": NOW, "max_attempts": 3, **fields}
    return JobRecord(id=new_job_id(), task="t", queue=queue, **values)  # type: ignore[arg-type]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'conveyor.db'}"


@pytest.fixture
def backend(url: str) -> Iterator[SQLiteBackend]:
    store = SQLiteBackend(url)
    yield store
    store.close()


def like_another_process(url: str) -> SQLiteBackend:
    """An instance that shares nothing in memory with the others of this test: no writer lock,
    no wake-up condition — only the file, exactly as a second process would."""
    store = SQLiteBackend(url)
    store._connections.state = FileState()
    return store


def raw(url: str) -> sqlite3.Connection:
    return sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)


def run_python(code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)


# -- the file --------------------------------------------------------------------------------------

def test_the_url_scheme_opens_a_sqlite_backend(url: str) -> None:
    store = open_backend(url)
    try:
        assert isinstance(store, SQLiteBackend) and store.name == "sqlite"
    finally:
        store.close()


def test_the_database_runs_in_wal_mode(backend: SQLiteBackend, url: str) -> None:
    assert raw(url).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "jobs.db"
    SQLiteBackend(f"sqlite:///{path}").close()
    assert path.is_file()


def test_a_relative_url_is_relative_to_the_working_directory_at_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteBackend("sqlite:///data/jobs.db")
    monkeypatch.chdir(tmp_path.parent)
    job = make()
    # a thread opens its connection after the chdir, and still finds the same file
    thread = threading.Thread(target=store.enqueue, args=([job],))
    thread.start()
    thread.join()
    assert store.get(job.id) is not None
    assert (tmp_path / "data" / "jobs.db").is_file()
    store.close()


@pytest.mark.parametrize("make_url", [
    pytest.param(lambda tmp: f"sqlite:///{tmp}", id="a directory"),
    pytest.param(lambda tmp: f"sqlite:///{tmp / 'file.txt' / 'jobs.db'}",
                 id="a parent that is a file"),
    pytest.param(lambda tmp: f"sqlite:///{tmp / 'file.txt'}", id="a file that is no database"),
    pytest.param(lambda tmp: "sqlite://somehost/jobs.db", id="a host"),
    pytest.param(lambda tmp: "sqlite://", id="no path"),
    pytest.param(lambda tmp: "sqlite:///:memory:", id="in-memory"),
])
def test_a_bad_path_is_a_configuration_error(tmp_path: Path,
                                              make_url: Callable[[Path], str]) -> None:
    (tmp_path / "file.txt").write_text("not a database, just text that is long enough " * 20)
    with pytest.raises(ConfigurationError):
        SQLiteBackend(make_url(tmp_path))


def test_unknown_options_are_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="busy_timout"):
        SQLiteBackend(url, busy_timout=3)


def test_options_can_come_from_the_url(url: str) -> None:
    store = SQLiteBackend(url + "?busy_timeout=2.5&synchronous=full")
    try:
        assert (store.busy_timeout, store.synchronous) == (2.5, "FULL")
        assert store._connections.conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


# -- the schema ------------------------------------------------------------------------------------

def test_the_jobs_columns_follow_the_job_record_fields() -> None:
    assert tuple(f.name for f in dataclasses.fields(JobRecord)) == JOB_COLUMNS


def test_migrations_are_applied_when_a_new_file_is_opened(backend: SQLiteBackend,
                                                         url: str) -> None:
    conn = raw(url)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    logged = conn.execute("SELECT version, name FROM conveyor_schema ORDER BY version").fetchall()
    assert logged == [(i, name) for i, (name, _) in enumerate(MIGRATIONS, 1)]
    backend.check()


def test_opening_again_applies_no_migration(backend: SQLiteBackend, url: str) -> None:
    job = make()
    backend.enqueue([job])
    again = SQLiteBackend(url)
    try:
        assert again.migrate() == [] and again.migrate(check_only=True) == []
        assert again.get(job.id) is not None
        assert raw(url).execute("SELECT count(*) FROM conveyor_schema").fetchone()[0] == len(
            MIGRATIONS)
    finally:
        again.close()


def test_without_auto_migrate_check_reports_the_pending_migrations(url: str) -> None:
    store = SQLiteBackend(url, auto_migrate=False)
    try:
        with pytest.raises(SchemaOutdated, match="conveyor migrate"):
            store.check()
        names = [name for name, _ in MIGRATIONS]
        assert store.migrate(check_only=True) == names
        assert raw(url).execute("PRAGMA user_version").fetchone()[0] == 0
        assert store.migrate() == names
        store.check()
    finally:
        store.close()


def test_a_database_from_a_newer_conveyor_is_refused(backend: SQLiteBackend, url: str) -> None:
    raw(url).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaOutdated, match="newer"):
        backend.check()
    with pytest.raises(SchemaOutdated, match="newer"):
        backend.migrate()
    with pytest.raises(SchemaOutdated, match="newer"):
        SQLiteBackend(url)


def test_processes_opening_a_new_file_together_migrate_it_once(url: str) -> None:
    code = ("from conveyor.backends.sqlite import SQLiteBackend\n"
            f"SQLiteBackend({url!r}).close()\nprint('ok')\n")
    procs = [run_python(code) for _ in range(4)]
    assert [p.communicate(timeout=30)[0].strip() for p in procs] == ["ok"] * 4
    conn = raw(url)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM conveyor_schema").fetchone()[0] == len(MIGRATIONS)


def test_hot_queries_read_their_index_instead_of_scanning_the_table(
        backend: SQLiteBackend) -> None:
    conn = backend._connections.conn()
    plan = " | ".join(row[3] for row in conn.execute(
        "EXPLAIN QUERY PLAN " + CLAIM, (NOW, "w", NOW, "{}", "default", 10)))
    assert "jobs_claim_queued" in plan and "jobs_claim_scheduled" in plan
    assert "SCAN jobs" not in plan


# -- several processes on one file -----------------------------------------------------------------

def test_two_instances_on_one_file_never_claim_the_same_job(url: str) -> None:
    stores = [like_another_process(url) for _ in range(2)]
    total = 400
    stores[0].enqueue([make() for _ in range(total)])
    seen: list[list[str]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def claimer(n: int) -> None:
        store = stores[n % 2]
        barrier.wait()
        while got := store.claim(["default"], 9, f"w{n}", LEASE, NOW):
            seen[n].extend(j.id for j in got)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [job_id for ids in seen for job_id in ids]
    assert len(everything) == len(set(everything)) == total
    assert all(seen[0] + seen[2]) and all(seen[1] + seen[3])
    for store in stores:
        store.close()


def test_the_watcher_sees_commits_made_through_the_instances_own_connections(
        backend: SQLiteBackend) -> None:
    backend._waiter.poll()
    before = backend._waiter.seen_version
    writer = threading.Thread(target=backend.enqueue, args=([make()],))
    writer.start()
    writer.join()
    backend.enqueue([make()])
    backend._waiter.poll()
    assert backend._waiter.seen_version != before


def test_many_waiting_threads_share_one_poller_and_all_wake(url: str) -> None:
    waiter, producer = like_another_process(url), like_another_process(url)
    woke: list[float] = []
    threads = [threading.Thread(target=lambda: (waiter.wait_for_work(["default"], 5),
                                                woke.append(time.monotonic())))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    enqueued = time.monotonic()
    producer.enqueue([make()])
    for thread in threads:
        thread.join()
    assert len(woke) == 20 and max(woke) - enqueued < 0.1
    waiter.close()
    producer.close()


def test_a_job_enqueued_by_one_instance_wakes_wait_for_work_of_another_within_50ms(
        url: str) -> None:
    waiter, producer = like_another_process(url), like_another_process(url)
    woke: list[float] = []

    def wait() -> None:
        waiter.wait_for_work(["default"], timeout=5)
        woke.append(time.monotonic())

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)
    enqueued = time.monotonic()
    producer.enqueue([make()])
    thread.join()
    assert woke[0] - enqueued < 0.05
    waiter.close()
    producer.close()


def test_wait_for_change_sees_a_change_made_by_another_instance(url: str) -> None:
    watcher, worker = like_another_process(url), like_another_process(url)
    job = make()
    worker.enqueue([job])

    def cancel_later() -> None:
        time.sleep(0.1)
        worker.cancel(job.id, NOW)

    thread = threading.Thread(target=cancel_later)
    thread.start()
    started = time.monotonic()
    got = watcher.wait_for_change(job.id, 0, timeout=5)
    thread.join()
    assert got is not None and got.status == "cancelled"
    assert time.monotonic() - started < 1
    watcher.close()
    worker.close()


def test_wait_for_work_wakes_when_a_scheduled_job_falls_due(backend: SQLiteBackend) -> None:
    backend.enqueue([make(status="scheduled", run_at=time.time() + 0.2)])
    started = time.monotonic()
    backend.wait_for_work(["default"], timeout=5)
    assert 0.15 <= time.monotonic() - started < 1


def test_a_job_survives_a_sigkill_right_after_enqueue_returns(url: str) -> None:
    job_id = new_job_id()
    code = (
        "import time\n"
        "from conveyor.backends.sqlite import SQLiteBackend\n"
        "from conveyor.backends.base import JobRecord\n"
        f"store = SQLiteBackend({url!r})\n"
        f"store.enqueue([JobRecord(id={job_id!r}, task='t', args='[42]')])\n"
        "print('enqueued', flush=True)\n"
        "time.sleep(60)\n")
    proc = run_python(code)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "enqueued"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    store = SQLiteBackend(url)
    try:
        got = store.get(job_id)
        assert got is not None and got.args == "[42]"
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connections_and_the_parent_keeps_working(
        backend: SQLiteBackend) -> None:
    backend.enqueue([make()])
    inherited = [conn for _, conn in backend._connections.opened]
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only, never return into pytest
        code = 1
        try:
            backend.enqueue([make()])
            fresh = [conn for _, conn in backend._connections.opened]
            code = 0 if fresh and not set(fresh) & set(inherited) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend.stats()["default"] == {"queued": 2}


# -- errors and lifecycle --------------------------------------------------------------------------

def test_a_held_write_lock_surfaces_as_backend_unavailable_after_the_busy_timeout(
        url: str) -> None:
    store = like_another_process(url + "?busy_timeout=0.05")
    holder = raw(url)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BackendUnavailable) as caught:
            store.enqueue([make()])
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    finally:
        holder.execute("ROLLBACK")
    store.enqueue([make()])  # the connection is usable again
    store.close()


def test_storing_an_existing_id_raises_backend_error(backend: SQLiteBackend) -> None:
    job = make()
    backend.enqueue([job])
    with pytest.raises(BackendError) as caught:
        backend.enqueue([dataclasses.replace(job)])
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    with pytest.raises(BackendError):
        backend.enqueue([make(), dataclasses.replace(job, key="k")])
    assert backend.stats()["default"] == {"queued": 1}  # the failed batch stored nothing


def test_close_closes_every_connection_the_instance_opened(url: str) -> None:
    store = SQLiteBackend(url)
    opened, release = threading.Barrier(4), threading.Event()

    def use() -> None:
        store.wait_for_work(["default"], 0)  # this thread's connection, and the shared watcher
        opened.wait()
        release.wait()

    threads = [threading.Thread(target=use, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        opened.wait(timeout=5)
        connections = [conn for _, conn in store._connections.opened] + [store._waiter.watch_conn]
        assert len(connections) == 1 + 3 + 1
        store.close()
    finally:
        release.set()
    for thread in threads:
        thread.join()
    for conn in connections:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    with pytest.raises(BackendError):
        store.get(new_job_id())


def test_connections_of_finished_threads_are_closed_when_a_new_thread_connects(
        backend: SQLiteBackend) -> None:
    def use() -> None:
        backend.get(new_job_id())

    first = threading.Thread(target=use)
    first.start()
    first.join()
    [(_, left_behind)] = [(ref, conn) for ref, conn in backend._connections.opened
                          if ref() is first]
    second = threading.Thread(target=use)
    second.start()
    second.join()
    with pytest.raises(sqlite3.ProgrammingError):
        left_behind.execute("SELECT 1")
    assert len(backend._connections.opened) == 2  # this thread's and the second thread's


# -- agreement with the reference ------------------------------------------------------------------

def scenario(store: Backend) -> list[object]:
    """Every state-changing operation, with fixed ids and clocks; what each call returned."""
    ids = [f"0190000{n}-0000-7000-8000-000000000000" for n in range(8)]
    jobs = [JobRecord(id=ids[n], task="t", queue="q2" if n == 7 else "q1", args=f"[{n}]",
                      priority=n % 3, run_at=NOW + (0.5 if n == 6 else 0), created_at=NOW,
                      status="scheduled" if n == 6 else "queued", max_attempts=2,
                      key="k" if n == 0 else None, headers={"n": str(n)}) for n in range(8)]
    error = AttemptError(attempt=1, type="ValueError", message="bad", traceback="tb", at=NOW + 2)
    out: list[object] = [[j.id for j in store.enqueue(jobs)]]
    out.append([j.id for j in store.enqueue([dataclasses.replace(jobs[0], id=ids[0][:-1] + "9")])])
    claimed = store.claim(["q2", "q1"], 8, "w", LEASE, NOW + 1)
    out.append([(j.id, j.attempts) for j in claimed])
    out.append(store.set_progress(ids[1], 1, 33.5, "a third", NOW + 1.5))
    out.append(store.cancel(ids[2], NOW + 1.6).cancel_requested)
    out.append(store.extend_leases([(ids[1], 1), (ids[2], 1), (ids[3], 2)], LEASE, NOW + 1.7))
    out.append(store.finish([
        Outcome(ids[0], 1, "succeeded", result='{"ok": true}', result_expires_at=NOW + 99),
        Outcome(ids[1], 1, "failed", error=error, result_expires_at=NOW + 98),
        Outcome(ids[3], 1, "scheduled", error=dataclasses.replace(error, reason="retry"),
                run_at=NOW + 10),
        Outcome(ids[4], 1, "queued"),
        Outcome(ids[5], 1, "cancelled", error=dataclasses.replace(error, reason="cancelled"),
                result_expires_at=NOW + 50),
        Outcome(ids[5], 1, "succeeded", result="1"),
        Outcome(ids[7], 9, "succeeded", result="1"),
    ], NOW + 2))
    out.append(sorted(store.requeue_expired(NOW + 1 + LEASE + 1)))
    out.append(store.retry(ids[1], NOW + 40).status)
    out.append(store.cancel(ids[4], NOW + 41).status)
    out.append([(j.id, j.attempts) for j in store.claim(["q1", "q2"], 9, "w2", LEASE, NOW + 42)])
    out.append(store.prune(NOW + 98.5))
    return out


def test_every_record_matches_the_memory_reference_after_the_same_operations(
        backend: SQLiteBackend) -> None:
    reference = MemoryBackend()
    assert scenario(backend) == scenario(reference)
    ours, theirs = backend.list(JobFilter(), 100).jobs, reference.list(JobFilter(), 100).jobs
    assert [dataclasses.asdict(j) for j in ours] == [dataclasses.asdict(j) for j in theirs]
    assert backend.stats() == reference.stats()
