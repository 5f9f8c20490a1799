"""Wake-ups: a thread holding a dedicated LISTEN connection, and the waits built on it, which
poll every ``poll_interval`` while that connection is down."""

from __future__ import annotations

import hashlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import pq, sql

from ...errors import BackendError
from ..base import JobRecord

log = logging.getLogger("conveyor.backends.postgres")


def channel(schema: str, suffix: str) -> str:
    """The NOTIFY channel ``suffix`` (``work`` or ``changes``) of ``schema``."""
    name = f"conveyor_{schema}_{suffix}"
    if len(name.encode()) > 63:  # NAMEDATALEN: LISTEN would truncate what pg_notify rejects
        name = f"conveyor_{hashlib.sha1(schema.encode()).hexdigest()[:16]}_{suffix}"
    return name


class Listener:
    """One thread holding a dedicated LISTEN connection; waiters block on its condition.

    Waiters take a snapshot of the counters, check the database, then wait for the snapshot to
    go stale: a notification for what they watch, or any connect/disconnect (``epoch``), which
    may have lost notifications and so wakes everyone to re-check.
    """

    KEEPALIVE = 30.0  # seconds of silence before the thread proves the connection alive

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], work: str,
                 changes: str) -> None:
        self._connect = connect
        self._work, self._changes = work, changes
        self._cond = threading.Condition()
        self._epoch = 0
        self._connected = False
        self._changes_live = False
        self._want_changes = False
        self._stopping = False
        self._queue_seq: dict[str, int] = {}
        self._watch: dict[str, int] = {}
        self._job_seq: dict[str, int] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="conveyor-pg-listen",
                                        daemon=True)
        self._thread.start()

    # -- waiter side ---------------------------------------------------------------------------

    def work_state(self, queues: Sequence[str]) -> tuple[Any, ...]:
        with self._cond:
            return self._work_state(queues)

    def _work_state(self, queues: Sequence[str]) -> tuple[Any, ...]:
        return (self._epoch, self._connected, *(self._queue_seq.get(q, 0) for q in queues))

    def wait_work(self, queues: Sequence[str], seen: tuple[Any, ...], timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._work_state(queues) != seen,
                                timeout)

    def watch(self, job_id: str) -> None:
        with self._cond:
            self._watch[job_id] = self._watch.get(job_id, 0) + 1
            self._job_seq.setdefault(job_id, 0)
            ask = not self._want_changes
            self._want_changes = True
        if ask:
            self._poke()

    def unwatch(self, job_id: str) -> None:
        with self._cond:
            left = self._watch.get(job_id, 1) - 1
            if left:
                self._watch[job_id] = left
            else:
                self._watch.pop(job_id, None)
                self._job_seq.pop(job_id, None)

    def change_state(self, job_id: str) -> tuple[Any, ...]:
        with self._cond:
            return self._change_state(job_id)

    def _change_state(self, job_id: str) -> tuple[Any, ...]:
        return (self._epoch, self._connected and self._changes_live,
                self._job_seq.get(job_id, 0))

    def wait_change(self, job_id: str, seen: tuple[Any, ...], timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._change_state(job_id) != seen,
                                timeout)

    def wait_connected(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._connected or self._stopping, timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._poke()
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            return  # stuck on a dead peer: leave it the pipe rather than a recycled fd
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # -- thread side ---------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                conn = self._connect()
            except psycopg.Error as exc:
                log.warning("LISTEN connection failed (%s); polling, retrying in %.1fs",
                            exc, backoff)
                self._pause(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            try:
                self._serve(conn)
            except (psycopg.Error, OSError) as exc:
                if not self._stopping:
                    log.warning("LISTEN connection lost (%s); polling until it is back", exc)
            except Exception:
                # whatever went wrong, a dead listener thread would leave every wait polling
                log.exception("LISTEN connection failed; polling until it is back")
            finally:
                with self._cond:
                    self._connected = self._changes_live = False
                    self._epoch += 1
                    self._cond.notify_all()
                conn.close()
            if not self._stopping:
                self._pause(backoff)

    def _pause(self, seconds: float) -> None:
        try:
            select.select([self._wake_r], [], [], seconds)
        except (OSError, ValueError):
            time.sleep(seconds)

    def _listen(self, conn: psycopg.Connection[Any], channel: str) -> None:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        conn.add_notify_handler(lambda n: self._deliver([(n.channel, n.payload)]))
        self._listen(conn, self._work)
        changes = False
        with self._cond:
            self._connected = True
            self._epoch += 1
            self._cond.notify_all()
        sock = conn.fileno()
        quiet_since = time.monotonic()
        while True:
            with self._cond:
                if self._stopping:
                    return
                want = self._want_changes
            if want and not changes:
                self._listen(conn, self._changes)
                changes = True
                with self._cond:
                    self._changes_live = True
                    self._epoch += 1
                    self._cond.notify_all()
            ready, _, _ = select.select([sock, self._wake_r], [], [], self.KEEPALIVE)
            if self._wake_r in ready:
                os.read(self._wake_r, 1024)
            if sock in ready:
                conn.pgconn.consume_input()
                got = []
                while (n := conn.pgconn.notifies()) is not None:
                    got.append((n.relname.decode(), n.extra.decode()))
                if got:
                    self._deliver(got)
                if conn.pgconn.status != pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the LISTEN connection was closed")
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= self.KEEPALIVE:
                conn.execute("SELECT 1")  # a silently dead peer shows up here
                quiet_since = time.monotonic()

    def _deliver(self, notes: Sequence[tuple[str, str]]) -> None:
        with self._cond:
            for channel, payload in notes:
                if channel == self._work:
                    self._queue_seq[payload] = self._queue_seq.get(payload, 0) + 1
                elif payload in self._job_seq:
                    self._job_seq[payload] += 1
            self._cond.notify_all()


#: ``due(queues, pool_timeout)``: whether a job of ``queues`` is queued, and when the earliest
#: scheduled one of them comes due (None: none is scheduled)
Due = Callable[[list[str], float], tuple[bool, float | None]]


class Wakeups:
    """The waits of one backend: woken by a :class:`Listener` (started by the first wait),
    polling every ``poll_interval`` while its connection is down."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], work: str, changes: str,
                 poll_interval: float) -> None:
        self._connect = connect
        self._work, self._changes = work, changes
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._closed = False
        self._listener: Listener | None = None

    def listener(self, wait: float) -> Listener:
        """The listener, started now if this is the first wait (which then waits up to
        ``wait`` seconds for its connection)."""
        with self._lock:
            if self._closed:
                raise BackendError("the PostgreSQL backend is closed")
            if self._listener is None:
                self._listener = Listener(self._connect, self._work, self._changes)
                fresh = True
            else:
                fresh = False
            listener = self._listener
        if fresh:
            # the first wait should already be woken by NOTIFY rather than polling
            listener.wait_connected(wait)
        return listener

    def close(self) -> None:
        with self._lock:
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()

    def wait_for_work(self, queues: Sequence[str], timeout: float, due: Due) -> None:
        """Wait for a NOTIFY naming one of ``queues``, the earliest scheduled job of those
        queues coming due, or ``timeout``. Database failures are logged, not raised: the
        wait then lasts one poll interval and the caller's next claim reports the failure."""
        deadline = time.monotonic() + timeout
        order = list(dict.fromkeys(queues))
        listener = self.listener(wait=min(timeout, 2.0))
        seen = listener.work_state(order)
        poll = self._poll_interval
        try:
            queued, next_run = due(order, max(deadline - time.monotonic(), 0.05))
        except BackendError as exc:
            log.warning("wait_for_work could not check the queues: %s", exc)
            listener.wait_work(order, seen, max(0.0, min(deadline - time.monotonic(), poll)))
            return
        if queued:
            return
        wait = deadline - time.monotonic()
        if next_run is not None:
            wait = min(wait, next_run - time.time())
        if not seen[1]:  # no LISTEN connection: notifications may be missed, so poll
            wait = min(wait, poll)
        if wait > 0:
            listener.wait_work(order, seen, wait)

    def wait_for_change(self, job_id: str, version: int, timeout: float,
                        get: Callable[[str], JobRecord | None]) -> JobRecord | None:
        """Wait for a NOTIFY on the changes channel naming the job (or, while the LISTEN
        connection is down, poll every ``poll_interval``), then re-read the job with ``get``."""
        deadline = time.monotonic() + timeout
        listener = self.listener(wait=min(timeout, 2.0))
        listener.watch(job_id)
        try:
            while True:
                seen = listener.change_state(job_id)
                job = get(job_id)
                if job is None or job.version != version:
                    return job
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return job
                if not seen[1]:
                    remaining = min(remaining, self._poll_interval)
                listener.wait_change(job_id, seen, remaining)
        finally:
            listener.unwatch(job_id)
