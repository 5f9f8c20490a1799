"""What only the PostgreSQL backend does: migrations, transactional enqueue, many claimers over
separate connections, and surviving killed connections.

Each test gets a schema of its own and drops it afterwards. Connections are told apart by an
``application_name`` unique to the test, so killing "our" connections never touches anyone
else's on a shared server.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor.backends.base import JobRecord, Outcome
from conveyor.errors import (
    BackendUnavailable,
    ConfigurationError,
    InvalidTransition,
    SchemaOutdated,
)
from conveyor.ids import new_job_id

psycopg = pytest.importorskip("psycopg")
from psycopg.rows import dict_row  # noqa: E402
from servers import PG_DSN, require_server  # noqa: E402

from conveyor.backends.postgres import PostgresBackend  # noqa: E402
from conveyor.backends.postgres.schema import migrations  # noqa: E402
from conveyor.backends.postgres.settings import parse_settings  # noqa: E402

pytestmark = pytest.mark.postgres
NOW = 1_800_000_000.0


@pytest.fixture
def admin() -> Iterator[Any]:
    require_server("PostgreSQL", "127.0.0.1", 5432)
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        yield conn


@pytest.fixture
def schema(admin: Any) -> Iterator[str]:
    name = f"conveyor_pgt_{uuid.uuid4().hex[:10]}"
    yield name
    admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def opened(schema: str) -> Iterator[Callable[..., PostgresBackend]]:
    """Open backends on the test's schema (named ``application_name=<schema>``); all closed
    at the end."""
    backends: list[PostgresBackend] = []

    def open_(*, migrate: bool = True, **options: Any) -> PostgresBackend:
        url = f"{PG_DSN}?schema={schema}&application_name={schema}"
        backend = PostgresBackend(url, auto_migrate=migrate, **options)
        backends.append(backend)
        return backend

    yield open_
    for backend in backends:
        backend.close()


def make(queue: str = "default", key: str | None = None) -> JobRecord:
    return JobRecord(id=new_job_id(), task="t", queue=queue, created_at=NOW, run_at=NOW,
                     key=key, max_attempts=3)


def terminate(admin: Any, application_name: str, *, listening: bool | None = None) -> int:
    """pg_terminate_backend every connection with that application_name (only the LISTEN one,
    or only the others); how many."""
    condition = ""
    if listening is not None:
        condition = f"AND query {'' if listening else 'NOT '}LIKE 'LISTEN%%'"
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = %s AND pid <> pg_backend_pid() {condition}",
        [application_name]).fetchall()
    return len(rows)


# -- options -------------------------------------------------------------------------------------

def test_url_options_are_taken_out_of_the_dsn_and_the_rest_passes_through():
    settings = parse_settings("postgresql://u:p%40ss@h:5433/db?schema=jobs&sslmode=disable"
                              "&auto_migrate=true&pool_max_size=4", {"poll_interval": 0.5})
    assert settings.dsn == "postgresql://u:p%40ss@h:5433/db?sslmode=disable"
    assert (settings.schema, settings.auto_migrate, settings.pool_max_size,
            settings.poll_interval) == ("jobs", True, 4, 0.5)
    assert parse_settings("postgres://h/db", {}).schema == "conveyor"
    with pytest.raises(ConfigurationError):
        parse_settings("postgresql://h/db?auto_migrate=maybe", {})
    with pytest.raises(ConfigurationError):
        parse_settings("postgresql://h/db", {"no_such_option": 1})


# -- migrations ----------------------------------------------------------------------------------

def test_a_fresh_schema_reports_pending_migrations_and_check_says_what_to_run(opened, admin,
                                                                               schema):
    backend = opened(migrate=False)
    names = [name for name, _ in migrations()]
    assert backend.migrate(check_only=True) == names
    # check_only changes nothing, not even the schema
    assert admin.execute("SELECT to_regnamespace(%s)", [schema]).fetchone() == (None,)
    with pytest.raises(SchemaOutdated) as raised:
        backend.check()
    assert "conveyor -A <app> migrate" in str(raised.value)
    assert names[0] in str(raised.value)


def test_migrate_applies_everything_once_and_is_then_a_no_op(opened, admin, schema):
    backend = opened(migrate=False)
    names = [name for name, _ in migrations()]
    assert backend.migrate() == names
    assert backend.migrate() == []
    assert backend.migrate(check_only=True) == []
    backend.check()
    recorded = admin.execute(f'SELECT name FROM "{schema}".conveyor_migrations ORDER BY name')
    assert [r[0] for r in recorded] == names
    backend.enqueue([make()])
    assert backend.stats() == {"default": {"queued": 1}}


def test_concurrent_migrations_apply_each_migration_exactly_once(opened):
    backends = [opened(migrate=False) for _ in range(4)]
    barrier = threading.Barrier(len(backends))
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run(backend: PostgresBackend) -> None:
        barrier.wait()
        try:
            results.append(backend.migrate())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in backends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results, key=len) == [[], [], [], [name for name, _ in migrations()]]


def _catalog(conn: Any, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Tables, columns, indexes, constraints and storage options of a schema, with the schema
    name taken out so two schemas compare equal when they hold the same objects."""

    def rows(query: str) -> list[tuple[Any, ...]]:
        return sorted(tuple(str(v).replace(f'"{schema}".', "").replace(f"{schema}.", "")
                            for v in row)
                      for row in conn.execute(query, {"schema": schema}))

    return {
        "columns": rows("""
            SELECT table_name, column_name, ordinal_position, data_type, udt_name,
                   is_nullable, column_default, collation_name
            FROM information_schema.columns WHERE table_schema = %(schema)s"""),
        "indexes": rows("""
            SELECT tablename, indexname, indexdef FROM pg_indexes
            WHERE schemaname = %(schema)s"""),
        "constraints": rows("""
            SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
            FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(schema)s"""),
        "tables": rows("""
            SELECT c.relname, c.relkind, c.reloptions FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(schema)s"""),
    }


def test_the_schema_snapshot_equals_the_replayed_migrations(opened, admin, schema):
    opened(migrate=False).migrate()  # an empty schema is built from schema.sql
    replayed = f"{schema}_replay"
    try:
        backend = PostgresBackend(f"{PG_DSN}?schema={replayed}")
        try:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                applied = backend._migrator.apply(conn, snapshot=False)
        finally:
            backend.close()
        assert applied == [name for name, _ in migrations()]
        snapshot = _catalog(admin, schema)
        assert snapshot["columns"] and snapshot["indexes"]
        assert _catalog(admin, replayed) == snapshot
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{replayed}" CASCADE')


def test_an_unreachable_server_is_backend_unavailable():
    backend = PostgresBackend("postgresql://postgres@127.0.0.1:1/test", pool_timeout=0.3,
                              retries=0)
    try:
        with pytest.raises(BackendUnavailable):
            backend.check()
        with pytest.raises(BackendUnavailable):
            backend.migrate()
    finally:
        backend.close()


# -- transactional enqueue -----------------------------------------------------------------------

def test_enqueue_in_a_committed_transaction_stores_the_job_at_commit(opened):
    backend = opened()
    job = make()
    with psycopg.connect(PG_DSN) as conn:
        with conn.transaction():
            [stored] = backend.enqueue_in(conn, [job])
            assert stored.id == job.id
            assert backend.get(job.id) is None  # not visible before the commit
        assert backend.get(job.id) is not None
    assert backend.claim(["default"], 1, "w", 30, NOW)[0].id == job.id


def test_enqueue_in_a_rolled_back_transaction_leaves_no_job(opened):
    backend = opened()
    job = make(key="order-1")
    with psycopg.connect(PG_DSN) as conn, pytest.raises(RuntimeError), conn.transaction():
        backend.enqueue_in(conn, [job])
        raise RuntimeError("the order could not be saved")
    assert backend.get(job.id) is None
    assert backend.stats() == {}
    # the key was never taken
    [again] = backend.enqueue([make(key="order-1")])
    assert again.id != job.id


def test_enqueue_in_honours_live_keys_whatever_the_callers_cursor_settings(opened):
    backend = opened()
    [first] = backend.enqueue([make(key="k")])
    with psycopg.connect(PG_DSN, cursor_factory=psycopg.ClientCursor,
                         row_factory=dict_row) as conn:
        [again] = backend.enqueue_in(conn, [make(key="k")])
    assert again.id == first.id


# -- claiming from many connections --------------------------------------------------------------

def test_sixteen_claimers_on_separate_connections_never_share_a_job(opened):
    total = 800
    opened().enqueue([make() for _ in range(total)])
    backends = [opened(migrate=False, pool_max_size=2) for _ in range(16)]
    seen: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(backends))

    def claimer(backend: PostgresBackend, n: int) -> None:
        barrier.wait()
        while got := backend.claim(["default"], 5, f"w{n}", 30, NOW):
            backend.finish([Outcome(j.id, j.attempts, "succeeded", result="1") for j in got],
                           NOW)
            with lock:
                seen.extend(j.id for j in got)

    threads = [threading.Thread(target=claimer, args=(b, n)) for n, b in enumerate(backends)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == total and len(set(seen)) == total


# -- connection loss -----------------------------------------------------------------------------

def _claim_when_woken(backend: PostgresBackend, queue: str, stop: threading.Event,
                      claimed: dict[str, float]) -> None:
    while not stop.is_set():
        for job in backend.claim([queue], 10, "w", 30, time.time()):
            claimed[job.id] = time.monotonic()
        backend.wait_for_work([queue], 5.0)


def test_a_job_still_starts_within_the_poll_interval_when_the_listen_connection_dies(
        opened, admin, schema):
    backend = opened(poll_interval=0.3)
    stop = threading.Event()
    claimed: dict[str, float] = {}
    worker = threading.Thread(target=_claim_when_woken, args=(backend, "q", stop, claimed))
    worker.start()
    try:
        time.sleep(0.3)
        # NOTIFY works: a job starts at once
        job = make("q")
        enqueued = time.monotonic()
        backend.enqueue([job])
        _wait_for(lambda: job.id in claimed, 2.0)
        assert claimed[job.id] - enqueued < 1.0  # without NOTIFY: the 5 s wait

        # the LISTEN connection is killed and may not come back: only polling is left
        def refuse() -> Any:
            raise psycopg.OperationalError("refused by the test")

        backend._address.listen_connection = refuse  # type: ignore[method-assign]
        assert terminate(admin, schema, listening=True) == 1
        time.sleep(0.2)
        job = make("q")
        enqueued = time.monotonic()
        backend.enqueue([job])
        _wait_for(lambda: job.id in claimed, 3.0)
        assert claimed[job.id] - enqueued < 0.3 + 0.5

        # the listener reconnects by itself once it can, and wake-ups are immediate again
        del backend._address.listen_connection
        _wait_for(lambda: backend._wakeups.listener(0).work_state(["q"])[1], 5.0)
        job = make("q")
        enqueued = time.monotonic()
        backend.enqueue([job])
        _wait_for(lambda: job.id in claimed, 2.0)
        assert claimed[job.id] - enqueued < 1.0
    finally:
        stop.set()
        backend.enqueue([make("q")])  # wake the worker thread
        worker.join(5)


def test_terminated_pool_connections_are_replaced_on_the_next_call(opened, admin, schema):
    backend = opened(pool_min_size=2)
    job = make()
    backend.enqueue([job])
    assert terminate(admin, schema) >= 1
    # every connection the backend held is dead; the next calls reconnect and succeed
    assert backend.get(job.id) is not None
    [claimed] = backend.claim(["default"], 1, "w", 30, NOW)
    assert backend.finish([Outcome(claimed.id, 1, "succeeded", result="1")], NOW) == [True]
    assert backend.get(job.id).status == "succeeded"


def test_wait_for_change_is_woken_by_a_notification(opened):
    backend = opened()
    writer = opened(migrate=False)
    job = make()
    backend.enqueue([job])
    version = backend.get(job.id).version
    timer = threading.Timer(0.2, lambda: writer.cancel(job.id, NOW))
    timer.start()
    started = time.monotonic()
    got = backend.wait_for_change(job.id, version, timeout=5)
    timer.join()
    assert got is not None and got.status == "cancelled"
    assert time.monotonic() - started < 1.0  # woken by NOTIFY, not the 5 s timeout


def test_retrying_a_job_whose_key_is_held_again_is_an_invalid_transition(opened):
    backend = opened()
    old = make(key="nightly")
    backend.enqueue([old])
    backend.cancel(old.id, NOW)
    backend.enqueue([make(key="nightly")])
    with pytest.raises(InvalidTransition, match="nightly"):
        backend.retry(old.id, NOW)
    assert backend.get(old.id).status == "cancelled"


def _wait_for(condition: Callable[[], Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)
