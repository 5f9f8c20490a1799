"""FastAPI with Conveyor's worker and scheduler inside the app: the APScheduler experience
without the duplicate runs.

    pip install 'conveyor-jobs[cron]' fastapi uvicorn
    uvicorn examples.fastapi_lifespan:api --workers 4

Every web process runs a scheduler, and each fire time is still enqueued exactly once: the
schedulers claim fire times through the database, not through a leader. The jobs run in
whichever process's embedded worker claims them first. Restart, scale or kill the processes
at will — what was due while none ran is handled by each schedule's policies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from conveyor import Conveyor

# CONVEYOR_URL, or a SQLite file in the current directory
conveyor = Conveyor()

#: what the jobs did, so the example's test can see it (a real app writes to its database)
processed: list[str] = []


@conveyor.periodic(every=60, id="process_due_tasks", coalesce=True, max_instances=1,
                   misfire_grace=60, run_at_start=True)
async def process_due_tasks() -> int:
    """Runs once a minute across all the web processes, and once at start-up."""
    processed.append("process_due_tasks")
    return len(processed)


@conveyor.periodic(cron="0 2 * * *", tz="Europe/Paris", id="nightly_cleanup")
def nightly_cleanup() -> None:
    """02:00 in Paris, daylight saving or not."""
    processed.append("nightly_cleanup")


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    async with conveyor.embedded(scheduler=True):
        yield


api = FastAPI(lifespan=lifespan)


@api.get("/health/scheduler")
def scheduler_health() -> dict[str, Any]:
    """``{"running": true, "jobs": [{"id", "name", "next_run_time", "trigger", ...}]}``."""
    return conveyor.scheduler_status()


@api.post("/schedules/{schedule_id}/trigger")
def run_now(schedule_id: str) -> dict[str, str]:
    from conveyor.scheduler import trigger_schedule

    return {"job": trigger_schedule(conveyor, schedule_id).id}
