"""The app the CLI acceptance tests drive, as a user's project would declare it.

Its URL is written in the code on purpose: ``--url`` and ``CONVEYOR_URL`` must override it,
so the tests can prove that ``cli-app-default.db`` is never touched.
"""

from __future__ import annotations

import asyncio
import time

from conveyor import Conveyor, current_job

app = Conveyor("sqlite:///cli-app-default.db", lease=2)


@app.task(name="report")
def report(steps: int) -> dict[str, int]:
    """Reports progress at every step."""
    job = current_job()
    for step in range(1, steps + 1):
        time.sleep(0.15)
        job.progress(100 * step / steps, f"step {step} of {steps}")
    return {"steps": steps}


@app.task(name="explode")
def explode(message: str) -> None:
    raise RuntimeError(message)


@app.task(name="add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="wait_forever")
async def wait_forever() -> None:
    await asyncio.sleep(3600)
