"""``app.embedded()``: a worker (and optionally the scheduler) inside the host process.

Use it as ``with app.embedded():`` in a script or Django process, or ``async with`` in a FastAPI
lifespan. Leaving the block stops claiming, lets running jobs finish within ``grace`` seconds
and hands the rest back to the queue — nothing is lost on restart, unlike a thread pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Conveyor
    from .worker import Worker


class Embedded:
    def __init__(self, app: Conveyor, *, concurrency: int = 4,
                 queues: Sequence[str] | None = None, scheduler: bool = False,
                 grace: float = 10.0, **worker_options: Any) -> None:
        self.app = app
        self.worker: Worker = app.worker(concurrency=concurrency, queues=queues, grace=grace,
                                         **worker_options)
        self.with_scheduler = scheduler
        self.scheduler: Any = None

    def start(self) -> Embedded:
        self.app.backend.check()
        self.worker.start()
        if self.with_scheduler:
            from .scheduler import Scheduler

            self.scheduler = Scheduler(self.app).start()
        return self

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        self.worker.stop()
        self.worker.join(self.worker.grace + 15)
        if self.scheduler is not None:
            self.scheduler.join(10)

    def __enter__(self) -> Embedded:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Embedded:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)
