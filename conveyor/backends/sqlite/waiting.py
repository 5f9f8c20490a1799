"""Waiting for commits: SQLite has no notifications, so commits of this process notify a
condition and those of other processes are seen by polling ``PRAGMA data_version``."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

from ..base import JobRecord
from .connections import Connections, reset_after_fork, wrap
from .queries import WORK_PROBE

#: ``wait_for_*`` poll interval right after a change, and the ceiling it backs off to when idle
FAST_POLL = 0.001
SLOW_POLL = 0.02
#: how long after the last change seen the poll stays fast
FAST_WINDOW = 1.0


class Waiter:
    """The waits of one backend instance, and the poller they share."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections
        # change detection across processes (see poll): one connection that never writes
        self._watch_lock = threading.Lock()
        self.watch_conn: sqlite3.Connection | None = None
        self.seen_version: int | None = None
        #: held by the one waiting thread that polls on behalf of all of them
        self._poller = threading.Lock()
        reset_after_fork(self)

    def after_fork_in_child(self) -> None:
        """In a forked child: drop (never touch) the parent's watch connection and locks."""
        self._watch_lock = threading.Lock()
        self.watch_conn = None
        self.seen_version = None
        self._poller = threading.Lock()

    def close(self) -> None:
        with self._watch_lock:
            watch, self.watch_conn = self.watch_conn, None
        if watch is not None:
            try:
                watch.close()
            except sqlite3.Error:
                pass

    def poll(self) -> None:
        """Look once whether anything was committed since the last look; if so, wake every
        waiter of this process.

        ``PRAGMA data_version`` moves when a connection *other than the one asking* commits. The
        asking connection here never writes, so every commit moves it: other processes' and this
        process's own (made through the per-thread connections). It reads no table: ~3 us."""
        with self._watch_lock:
            conn = self.watch_conn
            if conn is None:
                conn = self.watch_conn = self._connections.open(thread=None)
            try:
                version: int = conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise wrap(exc, "watch for changes") from exc
            changed = self.seen_version is not None and version != self.seen_version
            self.seen_version = version
        if changed:
            self._connections.state.notify()

    def change_token(self) -> int:
        """Where things stand now; :meth:`await_change` returns once they moved on. Taken
        *before* looking at the data, so a commit in between is never missed."""
        # catch up first: a commit the poller has not seen yet must not count as after the token
        self.poll()
        state = self._connections.state
        with state.changed:
            return state.generation

    def await_change(self, token: int, until: float) -> bool:
        """Sleep until something was committed since ``token`` (True) or the monotonic time
        ``until`` came (False).

        Waiting threads take turns: one polls (every 1 ms for a second after the last change,
        then backing off to 20 ms) and wakes the others through the condition, which this
        process's own commits notify directly. So the polling cost does not grow with the number
        of waiters (one per open event stream in the web API)."""
        state = self._connections.state
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
                    self.poll()
        finally:
            if polling:
                self._poller.release()
                with state.changed:
                    state.changed.notify_all()  # without a new generation: someone takes over

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            # the token comes before the probe, so a commit between the two is not missed
            token = self.change_token()
            wall = time.time()
            soonest: float | None = None
            for queue in queues:
                rows = self._connections.read("look for work", WORK_PROBE, (queue,))
                queued, first = rows[0]
                if queued or (first is not None and first <= wall):
                    return
                if first is not None and (soonest is None or first < soonest):
                    soonest = first
            until = deadline
            if soonest is not None:
                until = min(until, time.monotonic() + max(soonest - wall, 0.0))
            if not self.await_change(token, until) and time.monotonic() >= deadline:
                return

    def wait_for_change(self, job_id: str, version: int, timeout: float,
                        get: Callable[[str], JobRecord | None]) -> JobRecord | None:
        """Wait until the job's version is no longer ``version`` (or it is gone), or
        ``timeout``; then the job as ``get`` reads it."""
        deadline = time.monotonic() + timeout
        while True:
            token = self.change_token()
            rows = self._connections.read("read a job version",
                                          "SELECT version FROM jobs WHERE id = ?", (job_id,))
            if not rows or rows[0][0] != version or not self.await_change(token, deadline):
                return get(job_id)
