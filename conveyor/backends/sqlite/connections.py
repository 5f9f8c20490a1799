"""Connections to one SQLite file: one per thread, every write in a ``BEGIN IMMEDIATE``
transaction behind a write lock that the instances of a process share, and nothing inherited
across ``os.fork()``."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from ...errors import BackendError, BackendUnavailable, ConfigurationError

T = TypeVar("T")

# -- process-wide state per database file --------------------------------------------------------


class FileState:
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


class ForkAware(Protocol):
    def after_fork_in_child(self) -> None:
        """Drop (never touch) what the parent process opened or locked."""


_files: weakref.WeakValueDictionary[str, FileState] = weakref.WeakValueDictionary()
_files_lock = threading.Lock()
_instances: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def file_state(path: str) -> FileState:
    with _files_lock:
        state = _files.get(path)
        if state is None:
            state = _files[path] = FileState()
        return state


def reset_after_fork(instance: ForkAware) -> None:
    """Have ``instance.after_fork_in_child()`` called in a forked child (after the per-file
    state was reset)."""
    _instances.add(instance)


def _after_fork_in_child() -> None:
    global _files, _files_lock
    # locks may have been held by parent threads that do not exist here: start from scratch
    _files = weakref.WeakValueDictionary()
    _files_lock = threading.Lock()
    for instance in list(_instances):
        instance.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- errors --------------------------------------------------------------------------------------

_UNAVAILABLE_MARKERS = ("locked", "busy", "disk i/o", "unable to open", "readonly",
                        "read-only", "disk is full", "closed")


def wrap(exc: sqlite3.Error, doing: str) -> BackendError:
    """The Conveyor error for a driver error met while ``doing`` something."""
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, sqlite3.IntegrityError) and "jobs.id" in text:
        return BackendError(f"SQLite could not {doing}: a job with that id already exists "
                            f"({text})")
    if isinstance(exc, sqlite3.OperationalError | sqlite3.ProgrammingError) and any(
            marker in lowered for marker in _UNAVAILABLE_MARKERS):
        return BackendUnavailable(f"SQLite could not {doing}: {text}")
    return BackendError(f"SQLite could not {doing}: {text}")


# -- the connections of one instance -------------------------------------------------------------

class Connections:
    """One backend instance's connections to its file: one per thread (autocommit), each
    closed once its thread ended or the instance closes."""

    def __init__(self, path: str, busy_timeout: float, synchronous: str) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self._prepare_path()
        self.closed = False
        self._local = threading.local()
        self._lock = threading.Lock()
        #: every connection this instance opened, with the thread it belongs to
        self.opened: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        #: shared with the other instances of this process on the same file
        self.state = file_state(self.key)
        reset_after_fork(self)

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
        #: the file's real path, which names its process-wide state
        self.key = os.path.join(os.path.realpath(parent), os.path.basename(path))

    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.open(threading.current_thread())
        return conn

    def open(self, thread: threading.Thread | None = None) -> sqlite3.Connection:
        """A new connection; it belongs to ``thread`` and is closed once that thread ended, or
        to the caller when ``thread`` is None."""
        if self.closed:
            raise BackendError("the sqlite backend is closed")
        conn = self._connect()
        if thread is not None:
            self._adopt(thread, conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False, cached_statements=256)
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open the sqlite database {self.path!r}: {exc}"
                                     ) from exc
        try:
            self._configure(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower():
                raise BackendUnavailable(f"SQLite could not open {self.path!r}: {exc}") from exc
            raise ConfigurationError(f"{self.path!r} is not a usable sqlite database: {exc}"
                                     ) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
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

    def _adopt(self, thread: threading.Thread, conn: sqlite3.Connection) -> None:
        with self._lock:
            # connections of threads that ended are closed here, so short-lived threads don't
            # leak file handles; nobody else can be using them
            alive = []
            for thread_ref, other in self.opened:
                owner = thread_ref()
                if owner is None or not owner.is_alive():
                    other.close()
                else:
                    alive.append((thread_ref, other))
            alive.append((weakref.ref(thread), conn))
            self.opened = alive

    def after_fork_in_child(self) -> None:
        """In a forked child: drop (never touch) the parent's connections and shared state."""
        self._local = threading.local()
        self._lock = threading.Lock()
        self.opened = []
        self.state = file_state(self.key)

    def close(self) -> None:
        """Close every connection; opening another then raises ``BackendError``."""
        self.closed = True
        with self._lock:
            conns, self.opened = self.opened, []
        for _, conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    # -- transactions ----------------------------------------------------------------------------

    def write(self, doing: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one BEGIN IMMEDIATE transaction; notify waiters after the commit."""
        conn = self.conn()
        state = self.state
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
                raise wrap(exc, doing) from exc
            raise
        finally:
            state.write_lock.release()
        state.notify()
        return out

    def read(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise wrap(exc, doing) from exc
