"""``sqlite:///path.db``: the embedded default, one database file shared by every process.

URLs: ``sqlite:///relative/path.db`` (relative to the working directory) and
``sqlite:////absolute/path.db``. Options, as keyword arguments or in the URL's query string
(``sqlite:///app.db?busy_timeout=10``):

* ``busy_timeout`` (seconds, default 5): how long a writer waits for another *process* holding the
  write lock before the call fails with :class:`~conveyor.errors.BackendUnavailable`.
* ``synchronous`` (``"NORMAL"``, the default, or ``"FULL"``). In WAL mode ``NORMAL`` never loses a
  committed job when a *process* dies (``kill -9``, OOM): the commit is in the WAL file, in the
  operating system's cache, before ``enqueue`` returns. What it trades away is durability against
  *power loss or a kernel crash*: the transactions committed since the last WAL sync (at most
  those since the last checkpoint) can roll back — the file is never corrupted, the newest jobs
  are just gone. ``FULL`` syncs the WAL on every commit and closes that window, at a large cost
  in enqueue rate on most disks. NORMAL is the default because a job queue on a server's local
  disk fears process death far more than power loss, and the enqueue rate is part of the product.
* ``auto_migrate`` (default True): apply pending schema migrations when the backend opens, so
  embedded mode just works. With False, :meth:`SQLiteBackend.check` reports a stale schema and
  ``conveyor migrate`` applies it.

Concurrency model:

* One connection per thread (``threading.local``), autocommit (``isolation_level=None``); every
  write is an explicit ``BEGIN IMMEDIATE`` transaction, which takes SQLite's single write lock up
  front, so a transaction never fails half-way on a lock upgrade and two processes' claims
  serialize.
* Within a process, writers of one file first queue on a Python lock. SQLite allows one writer
  anyway; its busy handler sleeps in steps of up to 100 ms, a Python lock hands over at once, so
  threads of one process never pay those sleeps — only other processes do.
* ``wait_for_work`` / ``wait_for_change``: SQLite has no notifications. In-process writes notify a
  condition variable (instant); commits of other processes are seen by polling
  ``PRAGMA data_version`` on a per-thread connection that never writes — cheap (no table is read)
  and it changes whenever *another* connection commits. The poll runs every 1 ms for a second
  after the last change seen, then backs off to 20 ms.
* Connections opened before ``os.fork()`` are never used by the child: it opens its own.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InvalidTransition,
    JobNotFound,
    SchemaOutdated,
)
from . import transitions as t
from .base import (
    AttemptError,
    JobFilter,
    JobRecord,
    LeaseState,
    Outcome,
    Page,
    ScheduleRecord,
    Transition,
    WorkerInfo,
)
from .sqlite_schema import JOB_COLUMNS, MIGRATIONS, SCHEMA_VERSION

T = TypeVar("T")

#: RETURNING (3.35) is the newest feature used; json_each and the '$[#]' path (3.31) predate it
MIN_SQLITE = (3, 35, 0)

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads

_COLS = ", ".join(JOB_COLUMNS)
_FINISHED_SQL = "('succeeded', 'failed', 'cancelled')"

_INSERT = f"INSERT INTO jobs ({_COLS}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
# the conflict target names the partial unique index, so a live key makes the insert a no-op while
# a duplicate id still raises
_INSERT_KEYED = (_INSERT + " ON CONFLICT (key) WHERE key IS NOT NULL"
                 " AND status IN ('scheduled', 'queued', 'running') DO NOTHING")
_SELECT_LIVE_KEY = (f"SELECT {_COLS} FROM jobs WHERE key = ? AND key IS NOT NULL"
                    " AND status IN ('scheduled', 'queued', 'running')")
_GET = f"SELECT {_COLS} FROM jobs WHERE id = ?"

# One claim statement per queue, as the queues' order is strict. The queued arm reads the first
# ``limit`` entries of its partial index, already in claim order; the scheduled arm sorts the due
# range of its own (see sqlite_schema); merging the two sorts at most 2 * limit rows.
# ?1 now, ?2 worker, ?3 lease end, ?4 the running transition (JSON text, so its timestamp keeps
# full precision: json_object would print 15 digits), ?5 queue, ?6 limit.
_CLAIM = f"""
UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?1, worker_id = ?2,
    lease_expires_at = ?3, history = json_insert(history, '$[#]', json(?4)),
    version = version + 1
WHERE rowid IN (
    SELECT r FROM (
        SELECT * FROM (SELECT rowid AS r, priority AS p, run_at AS a, id AS i
                       FROM jobs INDEXED BY jobs_claim_queued
                       WHERE status = 'queued' AND queue = ?5
                       ORDER BY priority DESC, run_at, id LIMIT ?6)
        UNION ALL
        SELECT * FROM (SELECT rowid AS r, priority AS p, run_at AS a, id AS i
                       FROM jobs INDEXED BY jobs_claim_scheduled
                       WHERE status = 'scheduled' AND queue = ?5 AND run_at <= ?1
                       ORDER BY priority DESC, run_at, id LIMIT ?6)
        ORDER BY p DESC, a, i LIMIT ?6))
RETURNING {_COLS}
"""

_HELD = ("SELECT id, attempts, cancel_requested FROM jobs"
         " WHERE id IN (SELECT value FROM json_each(?)) AND status = 'running'")
_EXTEND = ("UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND status = 'running'"
           " AND attempts = ?")
_PROGRESS = ("UPDATE jobs SET progress = ?, progress_message = ?, version = version + 1"
             " WHERE id = ? AND status = 'running' AND attempts = ? RETURNING cancel_requested")

# transitions.apply_outcome in SQL. Python precomputes what varies per outcome kind:
# ?1 status, ?2 error JSON or NULL, ?3 result, ?4 1 when result_expires_at is set (final states),
# ?5 result_expires_at, ?6 new run_at or NULL, ?7 1 when the attempt is given back,
# ?8 finished_at or NULL, ?9 1 when worker_id is cleared, ?10 transition JSON,
# ?11 id, ?12 attempt (the fence, repeated although checked just before: it costs nothing)
_FINISH = """
UPDATE jobs SET
    status = ?1,
    lease_expires_at = NULL,
    errors = CASE WHEN ?2 IS NULL THEN errors ELSE json_insert(errors, '$[#]', json(?2)) END,
    result = CASE WHEN ?1 = 'succeeded' THEN ?3 ELSE result END,
    progress = CASE WHEN ?1 = 'succeeded' THEN 100.0 ELSE progress END,
    result_expires_at = CASE WHEN ?4 THEN ?5 ELSE result_expires_at END,
    run_at = coalesce(?6, run_at),
    attempts = attempts - ?7,
    finished_at = coalesce(?8, finished_at),
    worker_id = CASE WHEN ?9 THEN NULL ELSE worker_id END,
    history = json_insert(history, '$[#]', json(?10)),
    version = version + 1
WHERE id = ?11 AND status = 'running' AND attempts = ?12
"""

# the mutable part of a record, for read-modify-write through ``transitions``
_REWRITE = """
UPDATE jobs SET status = ?, run_at = ?, attempts = ?, max_attempts = ?, started_at = ?,
    finished_at = ?, worker_id = ?, lease_expires_at = ?, progress = ?, progress_message = ?,
    result = ?, result_expires_at = ?, cancel_requested = ?, errors = ?, history = ?, version = ?
WHERE id = ?
"""

# INDEXED BY: without ANALYZE statistics the planner prefers the equality on jobs_status, which
# would walk every running job (or, below, every job of a queue)
_EXPIRED = (f"SELECT {_COLS} FROM jobs INDEXED BY jobs_lease"
            " WHERE status = 'running' AND lease_expires_at < ?"
            " ORDER BY lease_expires_at")
_ANY_EXPIRED = ("SELECT 1 FROM jobs INDEXED BY jobs_lease"
                " WHERE status = 'running' AND lease_expires_at < ? LIMIT 1")
_PRUNE_BATCH = 2000
_PRUNE = (f"DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs INDEXED BY jobs_prune"
          f" WHERE status IN"
          f" {_FINISHED_SQL} AND result_expires_at < ? LIMIT {_PRUNE_BATCH})")
_ANY_PRUNABLE = (f"SELECT 1 FROM jobs INDEXED BY jobs_prune WHERE status IN {_FINISHED_SQL}"
                 " AND result_expires_at < ? LIMIT 1")

# per queue: is a job queued, and when is the earliest scheduled one due
_WORK_PROBE = """
SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_claim_queued
               WHERE status = 'queued' AND queue = ?1),
       (SELECT min(run_at) FROM jobs INDEXED BY jobs_claim_scheduled
        WHERE status = 'scheduled' AND queue = ?1)
"""

_SCHEDULE_COLS = "id, spec, paused, last_fire, next_fire, state, updated_at"
_PUT_SCHEDULE = f"""
INSERT INTO schedules ({_SCHEDULE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, paused = excluded.paused,
    updated_at = excluded.updated_at
"""
_CLAIM_FIRE = ("UPDATE schedules SET last_fire = ?1, next_fire = ?2, state = ?3 WHERE id = ?4"
               " AND (last_fire IS NULL OR last_fire < ?1)")

#: how long the expired rows of the worker registry are kept before a heartbeat sweeps them
_WORKER_GRACE = 3600.0

#: ``wait_for_*`` poll interval right after a change, and the ceiling it backs off to when idle
FAST_POLL = 0.001
SLOW_POLL = 0.02
#: how long after the last change seen the poll stays fast
FAST_WINDOW = 1.0

_OPTIONS = frozenset({"busy_timeout", "synchronous", "auto_migrate"})


# -- process-wide state per database file --------------------------------------------------------

class _FileState:
    """What every instance of this process that opened one file shares: the writer queue, and
    the condition their commits notify so a waiter in this process wakes at once."""

    __slots__ = ("__weakref__", "changed", "generation", "last_change", "write_lock")

    def __init__(self) -> None:
        self.write_lock = threading.Lock()
        self.changed = threading.Condition(threading.Lock())
        self.generation = 0
        self.last_change = time.monotonic()

    def notify(self) -> None:
        with self.changed:
            self.generation += 1
            self.last_change = time.monotonic()
            self.changed.notify_all()


_files: weakref.WeakValueDictionary[str, _FileState] = weakref.WeakValueDictionary()
_files_lock = threading.Lock()
_instances: weakref.WeakSet[SQLiteBackend] = weakref.WeakSet()


def _file_state(path: str) -> _FileState:
    with _files_lock:
        state = _files.get(path)
        if state is None:
            state = _files[path] = _FileState()
        return state


def _after_fork_in_child() -> None:
    global _files, _files_lock
    # locks may have been held by parent threads that do not exist here: start from scratch
    _files = weakref.WeakValueDictionary()
    _files_lock = threading.Lock()
    for backend in list(_instances):
        backend._forget_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- records <-> rows ----------------------------------------------------------------------------

def _record(row: Sequence[Any]) -> JobRecord:
    values = list(row)
    values[22] = bool(values[22])
    errors = values[23]
    values[23] = [AttemptError(**e) for e in _loads(errors)] if errors != "[]" else []
    history = values[24]
    values[24] = ([Transition(h["status"], h["at"]) for h in _loads(history)]
                  if history != "[]" else [])
    headers = values[25]
    values[25] = _loads(headers) if headers != "{}" else {}
    return JobRecord(*values)


def _errors_json(errors: list[AttemptError]) -> str:
    return _dumps([vars(e) for e in errors]) if errors else "[]"


def _history_json(history: list[Transition]) -> str:
    return _dumps([vars(h) for h in history]) if history else "[]"


def _insert_params(j: JobRecord) -> tuple[Any, ...]:
    return (j.id, j.task, j.queue, j.args, j.kwargs, j.priority, j.status, j.run_at,
            j.created_at, j.attempts, j.max_attempts, j.timeout, j.result_ttl, j.key,
            j.started_at, j.finished_at, j.worker_id, j.lease_expires_at, j.progress,
            j.progress_message, j.result, j.result_expires_at, j.cancel_requested,
            _errors_json(j.errors), _history_json(j.history),
            _dumps(j.headers) if j.headers else "{}", j.version)


def _rewrite_params(j: JobRecord) -> tuple[Any, ...]:
    return (j.status, j.run_at, j.attempts, j.max_attempts, j.started_at, j.finished_at,
            j.worker_id, j.lease_expires_at, j.progress, j.progress_message, j.result,
            j.result_expires_at, j.cancel_requested, _errors_json(j.errors),
            _history_json(j.history), j.version, j.id)


def _transition(status: str, now: float) -> str:
    return _dumps({"status": status, "at": now})


def _finish_params(o: Outcome, now: float) -> tuple[Any, ...]:
    status = o.status
    final = status in ("succeeded", "failed", "cancelled")
    if status == "scheduled":
        run_at: float | None = o.run_at if o.run_at is not None else now
    elif status == "queued":
        run_at = now
    else:
        run_at = None
    return (status, _dumps(vars(o.error)) if o.error is not None else None, o.result,
            final, o.result_expires_at, run_at, status == "queued", now if final else None,
            not final, _transition(status, now), o.job_id, o.attempt)


# -- errors --------------------------------------------------------------------------------------

_UNAVAILABLE_MARKERS = ("locked", "busy", "disk i/o", "unable to open", "readonly",
                        "read-only", "disk is full", "closed")


def _wrap(exc: sqlite3.Error, doing: str) -> BackendError:
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, sqlite3.IntegrityError) and "jobs.id" in text:
        return BackendError(f"SQLite could not {doing}: a job with that id already exists "
                            f"({text})")
    if isinstance(exc, sqlite3.OperationalError | sqlite3.ProgrammingError) and any(
            marker in lowered for marker in _UNAVAILABLE_MARKERS):
        return BackendUnavailable(f"SQLite could not {doing}: {text}")
    return BackendError(f"SQLite could not {doing}: {text}")


# -- the backend ---------------------------------------------------------------------------------

class SQLiteBackend:
    """The Backend protocol on one SQLite file (see the module docstring)."""

    name = "sqlite"

    def __init__(self, url: str, **options: Any) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigurationError(
                f"the sqlite backend needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; "
                f"this Python links SQLite {sqlite3.sqlite_version}")
        self.url = url
        path, query = _parse_url(url)
        # absolute now: a later chdir must not send new threads' connections to another file
        self.path = os.path.abspath(path)
        merged: dict[str, Any] = {**query, **options}
        unknown = set(merged) - _OPTIONS
        if unknown:
            raise ConfigurationError(f"unknown sqlite option(s) {sorted(unknown)}; known: "
                                     f"{sorted(_OPTIONS)}")
        self.busy_timeout = _float_option(merged, "busy_timeout", 5.0)
        self.synchronous = str(merged.get("synchronous", "NORMAL")).upper()
        if self.synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(f"sqlite option synchronous must be NORMAL or FULL, not "
                                     f"{self.synchronous!r}")
        self.auto_migrate = _bool_option(merged, "auto_migrate", True)

        self._prepare_path()
        self._closed = False
        self._local = threading.local()
        self._conns_lock = threading.Lock()
        #: every connection this instance opened, with the thread it belongs to
        self._conns: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._state = _file_state(self._key)
        self._list_sql: dict[tuple[bool, bool, bool, bool], str] = {}
        # change detection across processes (see _poll): one connection that never writes
        self._watch_lock = threading.Lock()
        self._watch_conn: sqlite3.Connection | None = None
        self._seen_version: int | None = None
        #: held by the one waiting thread that polls on behalf of all of them
        self._poller = threading.Lock()
        _instances.add(self)
        try:
            conn = self._conn()
            if self.auto_migrate:
                self._migrate(conn, check_only=False)
        except BaseException:
            self.close()
            raise

    def _prepare_path(self) -> None:
        path = self.path
        if os.path.isdir(path):
            raise ConfigurationError(f"sqlite path {path!r} is a directory, not a database file")
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the directory {parent!r} for the sqlite "
                                     f"database: {exc}") from exc
        self._key = os.path.join(os.path.realpath(parent), os.path.basename(path))

    # -- connections -----------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open(threading.current_thread())
        return conn

    def _open(self, thread: threading.Thread | None = None) -> sqlite3.Connection:
        """A new connection; it belongs to ``thread`` (the current one by default) and is closed
        once that thread ended, or to the instance (``_watch_conn``) when ``thread`` is None."""
        if self._closed:
            raise BackendError("the sqlite backend is closed")
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False, cached_statements=256)
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open the sqlite database {self.path!r}: {exc}"
                                     ) from exc
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise ConfigurationError(f"cannot put {self.path!r} in WAL mode (got "
                                             f"{mode!r}); is it on a network filesystem?")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            # sorts and the claim merge stay off disk
            conn.execute("PRAGMA temp_store = MEMORY")
            # a burst can grow the WAL; once checkpointed, give the space back beyond 64 MiB
            conn.execute("PRAGMA journal_size_limit = 67108864")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower():
                raise BackendUnavailable(f"SQLite could not open {self.path!r}: {exc}") from exc
            raise ConfigurationError(f"{self.path!r} is not a usable sqlite database: {exc}"
                                     ) from exc
        except BaseException:
            conn.close()
            raise
        if thread is None:
            return conn
        with self._conns_lock:
            # connections of threads that ended are closed here, so short-lived threads don't
            # leak file handles; nobody else can be using them
            alive = []
            for thread_ref, other in self._conns:
                owner = thread_ref()
                if owner is None or not owner.is_alive():
                    other.close()
                else:
                    alive.append((thread_ref, other))
            alive.append((weakref.ref(thread), conn))
            self._conns = alive
        return conn

    def _forget_connections(self) -> None:
        """In a forked child: drop (never touch) the parent's connections and shared state."""
        self._local = threading.local()
        self._conns_lock = threading.Lock()
        self._conns = []
        self._watch_lock = threading.Lock()
        self._watch_conn = None
        self._seen_version = None
        self._poller = threading.Lock()
        self._state = _file_state(self._key)

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        with self._watch_lock:
            watch, self._watch_conn = self._watch_conn, None
        for conn in [c for _, c in conns] + ([watch] if watch is not None else []):
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    # -- transactions ----------------------------------------------------------------------------

    def _write(self, doing: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one BEGIN IMMEDIATE transaction; notify waiters after the commit."""
        conn = self._conn()
        state = self._state
        # bounded like SQLite's own wait, so a stuck writer elsewhere surfaces as an error here
        if not state.write_lock.acquire(timeout=self.busy_timeout):
            raise BackendUnavailable(f"SQLite could not {doing}: another thread of this process "
                                     f"held the write lock for {self.busy_timeout} s")
        try:
            conn.execute("BEGIN IMMEDIATE")
            out = work(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if isinstance(exc, sqlite3.Error):
                raise _wrap(exc, doing) from exc
            raise
        finally:
            state.write_lock.release()
        state.notify()
        return out

    def _read(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _wrap(exc, doing) from exc

    # -- lifecycle -------------------------------------------------------------------------------

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        return version

    def _newer_schema(self, version: int) -> SchemaOutdated:
        return SchemaOutdated(
            f"the database {self.path!r} has schema version {version}, newer than this Conveyor "
            f"knows ({SCHEMA_VERSION}): upgrade Conveyor, or point it at another file",
            version=version, expected=SCHEMA_VERSION)

    def _migrate(self, conn: sqlite3.Connection, check_only: bool) -> list[str]:
        try:
            current = self._schema_version(conn)
        except sqlite3.Error as exc:
            raise _wrap(exc, "read the schema version") from exc
        if current > SCHEMA_VERSION:
            raise self._newer_schema(current)
        if current == SCHEMA_VERSION or check_only:
            return [name for name, _ in MIGRATIONS[current:]]

        def apply(conn: sqlite3.Connection) -> list[str]:
            # read again under the write lock: another process may have migrated meanwhile
            start = self._schema_version(conn)
            if start > SCHEMA_VERSION:
                raise self._newer_schema(start)
            applied = []
            for version, (name, statements) in enumerate(MIGRATIONS[start:], start + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO conveyor_schema (version, name, applied_at)"
                             " VALUES (?, ?, ?)", (version, name, time.time()))
                # PRAGMA takes no parameters; version is an int from enumerate
                conn.execute(f"PRAGMA user_version = {int(version)}")
                applied.append(name)
            return applied

        return self._write("migrate the schema", apply)

    def migrate(self, check_only: bool = False) -> list[str]:
        return self._migrate(self._conn(), check_only)

    def check(self) -> None:
        try:
            conn = self._conn()
            version = self._schema_version(conn)
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"SQLite database {self.path!r} is not usable: {exc}"
                                     ) from exc
        except ConfigurationError as exc:
            raise BackendUnavailable(str(exc)) from exc
        if version > SCHEMA_VERSION:
            raise self._newer_schema(version)
        if version < SCHEMA_VERSION:
            pending = ", ".join(name for name, _ in MIGRATIONS[version:])
            raise SchemaOutdated(
                f"the database {self.path!r} has schema version {version}, this Conveyor needs "
                f"{SCHEMA_VERSION}: run `conveyor migrate` (pending: {pending})",
                version=version, expected=SCHEMA_VERSION)

    # -- jobs ------------------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        if not jobs:
            return []
        params = [_insert_params(job) for job in jobs]
        if any(job.key is not None for job in jobs):
            return self._write("enqueue", lambda conn: self._store(conn, jobs, params))

        # the hot path: no key, so what is stored is exactly what was given
        def insert(conn: sqlite3.Connection) -> list[JobRecord]:
            if len(params) == 1:
                conn.execute(_INSERT, params[0])
            else:
                conn.executemany(_INSERT, params)
            return list(jobs)

        return self._write("enqueue", insert)

    def _store(self, conn: sqlite3.Connection, jobs: Sequence[JobRecord],
               params: list[tuple[Any, ...]]) -> list[JobRecord]:
        stored: list[JobRecord] = []
        for job, row in zip(jobs, params, strict=True):
            if job.key is None:
                conn.execute(_INSERT, row)
                stored.append(job)
                continue
            if conn.execute(_INSERT_KEYED, row).rowcount == 1:
                stored.append(job)
                continue
            existing = conn.execute(_SELECT_LIVE_KEY, (job.key,)).fetchall()
            stored.append(_record(existing[0]))
        return stored

    def claim(self, queues: Sequence[str], limit: int, worker_id: str, lease: float,
              now: float) -> list[JobRecord]:
        if limit <= 0 or not queues:
            return []
        order: dict[str, int] = {}
        for queue in queues:
            order.setdefault(queue, len(order))
        running = _transition("running", now)

        def take(conn: sqlite3.Connection) -> list[Any]:
            rows: list[Any] = []
            for queue in order:
                rows += conn.execute(_CLAIM, (now, worker_id, now + lease, running, queue,
                                              limit - len(rows))).fetchall()
                if len(rows) >= limit:
                    break
            return rows

        rows = self._write("claim jobs", take)
        # RETURNING gives no order: restore the claim order
        rows.sort(key=lambda r: (order[r[2]], -r[5], r[7], r[0]))
        return [_record(row) for row in rows]

    def extend_leases(self, leases: Sequence[tuple[str, int]], lease: float,
                      now: float) -> dict[str, LeaseState]:
        if not leases:
            return {}
        ids = _dumps([job_id for job_id, _ in leases])
        until = now + lease

        def renew(conn: sqlite3.Connection) -> dict[str, LeaseState]:
            held = {job_id: (attempts, cancel) for job_id, attempts, cancel
                    in conn.execute(_HELD, (ids,))}
            states: dict[str, LeaseState] = {}
            renewed = []
            for job_id, attempt in leases:
                found = held.get(job_id)
                if found is None or found[0] != attempt:
                    states[job_id] = "lost"
                    continue
                states[job_id] = "cancel" if found[1] else "ok"
                renewed.append((until, job_id, attempt))
            if renewed:
                conn.executemany(_EXTEND, renewed)
            return states

        return self._write("extend leases", renew)

    def set_progress(self, job_id: str, attempt: int, percent: float, message: str | None,
                     now: float) -> LeaseState:
        def record(conn: sqlite3.Connection) -> LeaseState:
            rows = conn.execute(_PROGRESS, (percent, message, job_id, attempt)).fetchall()
            if not rows:
                return "lost"
            return "cancel" if rows[0][0] else "ok"

        return self._write("record progress", record)

    def finish(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        if not outcomes:
            return []
        ids = _dumps([o.job_id for o in outcomes])
        params = [_finish_params(o, now) for o in outcomes]

        def apply(conn: sqlite3.Connection) -> list[bool]:
            held = {job_id: attempts for job_id, attempts, _ in conn.execute(_HELD, (ids,))}
            applied: list[bool] = []
            rows = []
            for outcome, row in zip(outcomes, params, strict=True):
                # pop: a second outcome for one job in the same batch finds it finished
                ok = held.get(outcome.job_id) == outcome.attempt
                if ok:
                    del held[outcome.job_id]
                    rows.append(row)
                applied.append(ok)
            if rows:
                conn.executemany(_FINISH, rows)
            return applied

        return self._write("record finished jobs", apply)

    def _change(self, job_id: str, now: float, rule: Callable[[JobRecord, float], bool],
                doing: str) -> JobRecord:
        def change(conn: sqlite3.Connection) -> JobRecord:
            rows = conn.execute(_GET, (job_id,)).fetchall()
            if not rows:
                raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
            job = _record(rows[0])
            if rule(job, now):
                try:
                    conn.execute(_REWRITE, _rewrite_params(job))
                except sqlite3.IntegrityError as exc:
                    # only retry makes a finished job live again; jobs_live_key refuses it while
                    # a newer live job holds the key, and the transaction rolls back whole
                    holder = conn.execute("SELECT id FROM jobs WHERE key = ? AND key IS NOT NULL"
                                          " AND status IN ('scheduled', 'queued', 'running')",
                                          (job.key,)).fetchall()
                    if job.key is None or not holder:
                        raise
                    raise InvalidTransition(
                        f"job {job_id} cannot be retried: job {holder[0][0]} holds its key "
                        f"{job.key!r}", job_id=job_id) from exc
            return job

        return self._write(doing, change)

    def cancel(self, job_id: str, now: float) -> JobRecord:
        return self._change(job_id, now, t.cancel, "cancel a job")

    def retry(self, job_id: str, now: float) -> JobRecord:
        return self._change(job_id, now, t.retry, "retry a job")

    def delete(self, job_id: str) -> bool:
        return self._write("delete a job", lambda conn: conn.execute(
            "DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 1)

    def get(self, job_id: str) -> JobRecord | None:
        rows = self._read("read a job", _GET, (job_id,))
        return _record(rows[0]) if rows else None

    def _list_statement(self, shape: tuple[bool, bool, bool, bool]) -> str:
        sql = self._list_sql.get(shape)
        if sql is None:
            terms = [term for term, used in zip(
                ("status = ?", "queue = ?", "task = ?", "id < ?"), shape, strict=True) if used]
            where = f" WHERE {' AND '.join(terms)}" if terms else ""
            sql = self._list_sql[shape] = (f"SELECT {_COLS} FROM jobs{where}"
                                           " ORDER BY id DESC LIMIT ?")
        return sql

    def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        values = (filter.status, filter.queue, filter.task, cursor)
        shape = (bool(values[0]), bool(values[1]), bool(values[2]), bool(values[3]))
        params: list[Any] = [v for v in values if v]
        params.append(max(limit, 0) + 1)
        rows = self._read("list jobs", self._list_statement(shape), params)
        more = len(rows) > limit
        jobs = [_record(row) for row in rows[:limit]]
        return Page(jobs, jobs[-1].id if more and jobs else None)

    def stats(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for queue, status, count in self._read(
                "count jobs", "SELECT queue, status, count(*) FROM jobs GROUP BY queue, status"):
            counts.setdefault(queue, {})[status] = count
        return counts

    def requeue_expired(self, now: float) -> list[str]:
        # a read first: every worker calls this periodically, and the write lock is not free
        if not self._read("scan expired leases", _ANY_EXPIRED, (now,)):
            return []

        def expire(conn: sqlite3.Connection) -> list[str]:
            jobs = [_record(row) for row in conn.execute(_EXPIRED, (now,)).fetchall()]
            for job in jobs:
                t.expire(job, now)
            conn.executemany(_REWRITE, [_rewrite_params(job) for job in jobs])
            return [job.id for job in jobs]

        return self._write("requeue expired jobs", expire)

    def prune(self, now: float) -> int:
        total = 0
        # in bounded batches, each its own transaction: a large prune never holds the write
        # lock long enough to stall workers
        while self._read("scan prunable jobs", _ANY_PRUNABLE, (now,)):
            deleted = self._write("prune jobs", lambda conn: conn.execute(
                _PRUNE, (now,)).rowcount)
            total += deleted
            if deleted < _PRUNE_BATCH:
                break
        return total

    # -- waiting ---------------------------------------------------------------------------------

    def _poll(self) -> None:
        """Look once whether anything was committed since the last look; if so, wake every
        waiter of this process.

        ``PRAGMA data_version`` moves when a connection *other than the one asking* commits. The
        asking connection here never writes, so every commit moves it: other processes' and this
        process's own (made through the per-thread connections). It reads no table: ~3 us."""
        with self._watch_lock:
            conn = self._watch_conn
            if conn is None:
                conn = self._watch_conn = self._open(thread=None)
            try:
                version: int = conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise _wrap(exc, "watch for changes") from exc
            changed = self._seen_version is not None and version != self._seen_version
            self._seen_version = version
        if changed:
            self._state.notify()

    def _change_token(self) -> int:
        """Where things stand now; :meth:`_await_change` returns once they moved on. Taken
        *before* looking at the data, so a commit in between is never missed."""
        # catch up first: a commit the poller has not seen yet must not count as after the token
        self._poll()
        state = self._state
        with state.changed:
            return state.generation

    def _await_change(self, token: int, until: float) -> bool:
        """Sleep until something was committed since ``token`` (True) or the monotonic time
        ``until`` came (False).

        Waiting threads take turns: one polls (every 1 ms for a second after the last change,
        then backing off to 20 ms) and wakes the others through the condition, which this
        process's own commits notify directly. So the polling cost does not grow with the number
        of waiters (one per open event stream in the web API)."""
        state = self._state
        polling = False
        interval = FAST_POLL
        try:
            while True:
                now = time.monotonic()
                if now >= until:
                    return False
                if not polling:
                    polling = self._poller.acquire(blocking=False)
                if polling:
                    quiet = now - state.last_change
                    interval = FAST_POLL if quiet < FAST_WINDOW else min(interval * 1.5,
                                                                         SLOW_POLL)
                with state.changed:
                    if state.generation != token:
                        return True
                    # a thread that does not poll still looks now and then whether the poller
                    # left; normally the leaving poller wakes it at once (below)
                    state.changed.wait(min(interval if polling else SLOW_POLL, until - now))
                    if state.generation != token:
                        return True
                if polling:
                    self._poll()
        finally:
            if polling:
                self._poller.release()
                with state.changed:
                    state.changed.notify_all()  # without a new generation: someone takes over

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            # the token comes before the probe, so a commit between the two is not missed
            token = self._change_token()
            wall = time.time()
            soonest: float | None = None
            for queue in queues:
                rows = self._read("look for work", _WORK_PROBE, (queue,))
                queued, first = rows[0]
                if queued or (first is not None and first <= wall):
                    return
                if first is not None and (soonest is None or first < soonest):
                    soonest = first
            until = deadline
            if soonest is not None:
                until = min(until, time.monotonic() + max(soonest - wall, 0.0))
            if not self._await_change(token, until) and time.monotonic() >= deadline:
                return

    def wait_for_change(self, job_id: str, version: int, timeout: float) -> JobRecord | None:
        deadline = time.monotonic() + timeout
        while True:
            token = self._change_token()
            rows = self._read("read a job version", "SELECT version FROM jobs WHERE id = ?",
                              (job_id,))
            if not rows or rows[0][0] != version or not self._await_change(token, deadline):
                return self.get(job_id)

    # -- schedules -------------------------------------------------------------------------------

    def put_schedule(self, schedule: ScheduleRecord) -> None:
        s = schedule
        self._write("store a schedule", lambda conn: conn.execute(_PUT_SCHEDULE, (
            s.id, s.spec, s.paused, s.last_fire, s.next_fire, s.state, s.updated_at)))

    def get_schedules(self) -> list[ScheduleRecord]:
        rows = self._read("read schedules",
                          f"SELECT {_SCHEDULE_COLS} FROM schedules ORDER BY id")
        return [ScheduleRecord(sid, spec, bool(paused), last, next_, state, updated)
                for sid, spec, paused, last, next_, state, updated in rows]

    def delete_schedule(self, schedule_id: str) -> bool:
        return self._write("delete a schedule", lambda conn: conn.execute(
            "DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount == 1)

    def set_schedule_paused(self, schedule_id: str, paused: bool) -> bool:
        return self._write("pause a schedule", lambda conn: conn.execute(
            "UPDATE schedules SET paused = ? WHERE id = ?", (paused, schedule_id)).rowcount == 1)

    def claim_fire(self, schedule_id: str, fire_time: float, next_fire: float | None,
                   state: str, jobs: Sequence[JobRecord]) -> bool:
        params = [_insert_params(job) for job in jobs]

        def fire(conn: sqlite3.Connection) -> bool:
            if conn.execute(_CLAIM_FIRE, (fire_time, next_fire, state,
                                          schedule_id)).rowcount != 1:
                return False
            self._store(conn, jobs, params)
            return True

        return self._write("claim a schedule fire", fire)

    def update_schedule_state(self, schedule_id: str, next_fire: float | None,
                              state: str) -> None:
        self._write("update a schedule", lambda conn: conn.execute(
            "UPDATE schedules SET next_fire = ?, state = ? WHERE id = ?",
            (next_fire, state, schedule_id)))

    # -- workers ---------------------------------------------------------------------------------

    def heartbeat_worker(self, info: WorkerInfo, ttl: float) -> None:
        expires = info.last_heartbeat + ttl

        def beat(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO workers (id, info, expires_at) VALUES (?, ?, ?)",
                         (info.id, info.to_json(), expires))
            # workers that died without saying so are forgotten after a grace period
            conn.execute("DELETE FROM workers WHERE expires_at < ?",
                         (info.last_heartbeat - _WORKER_GRACE,))

        self._write("register a worker", beat)

    def list_workers(self, now: float) -> list[WorkerInfo]:
        rows = self._read("list workers",
                          "SELECT info FROM workers WHERE expires_at > ? ORDER BY id", (now,))
        return [WorkerInfo.from_json(info) for (info,) in rows]

    def remove_worker(self, worker_id: str) -> None:
        self._write("remove a worker", lambda conn: conn.execute(
            "DELETE FROM workers WHERE id = ?", (worker_id,)))


# -- configuration -------------------------------------------------------------------------------

def _parse_url(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"not a sqlite URL: {url!r}")
    if parts.netloc:
        raise ConfigurationError(
            f"sqlite URL {url!r} names a host ({parts.netloc!r}); use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db")
    # one slash separates the empty host from the path: what follows is the path as written
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path or path.endswith(("/", os.sep)):
        raise ConfigurationError(f"sqlite URL {url!r} names no database file; use "
                                 "sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"sqlite URL {url!r}: an in-memory SQLite database cannot be shared between "
            "threads and processes; use memory:// instead")
    return path, dict(parse_qsl(parts.query))


def _float_option(options: dict[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"sqlite option {name} must be a number, not {value!r}")
    if number < 0:
        raise ConfigurationError(f"sqlite option {name} must not be negative")
    return number


def _bool_option(options: dict[str, Any], name: str, default: bool) -> bool:
    value = options.get(name, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"sqlite option {name} must be true or false, not {value!r}")
