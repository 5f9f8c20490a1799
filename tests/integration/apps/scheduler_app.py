"""Schedules for ``test_scheduler_processes.py``: a one-second beat under three policies.

No worker runs in those tests, so every job stays queued and can be counted by its
``schedule_fire_time`` header; ``max_instances=None`` keeps queued jobs from skipping fires.
"""

from __future__ import annotations

import os

from conveyor import Conveyor

app = Conveyor(os.environ.get("CONVEYOR_URL", "memory://"))


@app.periodic(every=1, id="beat", coalesce=False, max_instances=None)
def beat() -> None:
    """Every fire time runs, however late."""


@app.periodic(every=1, id="beat_coalesced", coalesce=True, max_instances=None)
def beat_coalesced() -> None:
    """Fire times missed while no scheduler ran fold into one run."""


@app.periodic(every=1, id="beat_grace", coalesce=False, misfire_grace=3, max_instances=None)
def beat_grace() -> None:
    """Fire times more than 3 s late are recorded as missed, not run."""
