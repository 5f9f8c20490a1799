"""A FastAPI app with the scheduler in its lifespan, for ``uvicorn --workers 2`` in
``test_scheduler_processes.py``: every web process runs a worker and a scheduler."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from conveyor import Conveyor

conveyor = Conveyor(os.environ.get("CONVEYOR_URL", "memory://"))


@conveyor.periodic(every=1, id="beat", coalesce=False, max_instances=None)
def beat() -> int:
    """Reports which web process ran it."""
    return os.getpid()


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    async with conveyor.embedded(scheduler=True, concurrency=2):
        yield


api = FastAPI(lifespan=lifespan)


@api.get("/health/scheduler")
def scheduler_health() -> dict[str, Any]:
    return conveyor.scheduler_status()
