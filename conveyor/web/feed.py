"""Live job changes for event streams and long-polls, shared per job.

The Backend protocol offers one blocking primitive, ``wait_for_change(job_id, version,
timeout)``. Calling it once per HTTP stream would cost one thread per *stream*; the feed calls
it once per *watched job* instead, on its own thread pool, and fans each change out to every
stream and long-poll watching that job. A thousand dashboards on one job cost one thread.

Each wait is short (``poll`` seconds), so a thread is given back soon after the last watcher of
a job leaves; streams themselves notice a disconnect at once (see :mod:`.sse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

from ..backends.base import Backend, JobRecord

log = logging.getLogger("conveyor.web")


class _Watch:
    """One job being watched: the newest record seen, and a signal per change."""

    def __init__(self, job_id: str, record: JobRecord | None) -> None:
        self.job_id = job_id
        self.latest = record
        self.changed = asyncio.Event()
        self.subscribers = 0
        self.done = False
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task[None] | None = None
        #: encoded events of the latest version, so N streams on one job encode it once
        self.encoded: dict[Hashable, bytes] = {}

    def publish(self, record: JobRecord | None) -> None:
        if record is not None and self.latest is not None and \
                record.version <= self.latest.version and record.id == self.latest.id:
            return
        self.latest = record
        self.encoded.clear()
        self.changed.set()
        self.changed = asyncio.Event()  # waiters hold the old one, which stays set

    def finish(self) -> None:
        self.done = True
        self.changed.set()


class Subscription:
    """A watcher's view of one job; :meth:`next` waits for a version newer than one seen."""

    def __init__(self, watch: _Watch) -> None:
        self._watch = watch

    @property
    def latest(self) -> JobRecord | None:
        return self._watch.latest

    def encode(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        """``make()``, computed once per ``key`` for the latest version among all watchers."""
        cache = self._watch.encoded
        if key not in cache:
            cache[key] = make()
        return cache[key]

    @property
    def closed(self) -> bool:
        """No more changes will come (the job finished or was deleted, or watching failed)."""
        return self._watch.done

    async def next(self, seen: int, timeout: float) -> JobRecord | None:
        """The job once its version is beyond ``seen`` (or it was deleted: None); the latest
        record as it is when ``timeout`` seconds pass first or the feed closed."""
        watch = self._watch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            latest = watch.latest
            if latest is None or latest.version > seen or watch.done:
                return latest
            remaining = deadline - loop.time()
            if remaining <= 0:
                return latest
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.changed.wait(), remaining)


class JobFeed:
    """Fans out job changes from the backend to many async watchers."""

    def __init__(self, backend: Callable[[], Backend], *, threads: int = 256,
                 poll: float = 1.0) -> None:
        self._backend = backend
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self.poll = poll
        self._watches: dict[str, _Watch] = {}
        #: open event streams, for the ``max_streams`` limit and the benchmark
        self.streams = 0
        self._closed = False

    @property
    def watched_jobs(self) -> int:
        return len(self._watches)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads,
                                                thread_name_prefix="conveyor-web-feed")
        return self._executor

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str, record: JobRecord) -> AsyncIterator[Subscription]:
        """Watch ``job_id``, whose current state the caller just read as ``record``."""
        watch = self._attach(job_id, record)
        try:
            yield Subscription(watch)
        finally:
            watch.subscribers -= 1
            if watch.subscribers == 0:
                self._drop(watch)

    def _attach(self, job_id: str, record: JobRecord) -> _Watch:
        watch = self._watches.get(job_id)
        if watch is None or watch.done or watch.loop is not asyncio.get_running_loop():
            watch = _Watch(job_id, record)
            self._watches[job_id] = watch
            if not record.finished and not self._closed:
                watch.task = asyncio.create_task(self._follow(watch),
                                                 name=f"conveyor-feed-{job_id}")
            else:
                watch.finish()
        else:
            watch.publish(record)
        watch.subscribers += 1
        return watch

    def _drop(self, watch: _Watch) -> None:
        if self._watches.get(watch.job_id) is watch:
            del self._watches[watch.job_id]
        if watch.task is not None and not watch.task.done():
            watch.task.cancel()  # its thread returns by itself within ``poll`` seconds

    async def _follow(self, watch: _Watch) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        try:
            while True:
                latest = watch.latest
                assert latest is not None
                try:
                    record = await loop.run_in_executor(
                        self._pool(), self._backend().wait_for_change, watch.job_id,
                        latest.version, self.poll)
                    failures = 0
                except Exception:
                    # keep the streams open through a storage hiccup; they heartbeat meanwhile
                    failures += 1
                    log.warning("watching job %s failed (%d in a row)", watch.job_id, failures,
                                exc_info=True, extra={"job_id": watch.job_id})
                    await asyncio.sleep(min(0.5 * failures, 5.0))
                    continue
                watch.publish(record)
                if record is None or record.finished:
                    return
        finally:
            watch.finish()
            if self._watches.get(watch.job_id) is watch:
                del self._watches[watch.job_id]

    def open(self) -> None:
        """Accept watchers again after :meth:`close` (a server started anew)."""
        self._closed = False

    def close(self) -> None:
        """End every watch (their streams end too) and release the threads."""
        self._closed = True
        for watch in list(self._watches.values()):
            self._drop(watch)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
