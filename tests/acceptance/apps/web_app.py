"""The app the web acceptance test serves: ``conveyor -A web_app:app web`` and ``worker``."""

from __future__ import annotations

import os
import time

from conveyor import Conveyor, current_job

app = Conveyor(os.environ.get("CONVEYOR_URL"))


@app.task(name="render", expose=True)
def render(steps: int = 4, pause: float = 0.3) -> dict[str, int]:
    """Work in steps, reporting progress after each."""
    job = current_job()
    for step in range(1, steps + 1):
        time.sleep(pause)
        job.progress(100 * step / (steps + 1), f"step {step} of {steps}")
    time.sleep(pause)
    return {"steps": steps}


@app.task(name="endless", expose=True)
def endless() -> None:
    """Runs until cancelled."""
    job = current_job()
    job.progress(1, "started")
    while True:
        time.sleep(0.05)
        job.check_cancelled()
