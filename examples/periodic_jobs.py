"""Periodic jobs, runnable: ``python examples/periodic_jobs.py``.

Declares an interval schedule, a cron schedule in a time zone and a schedule added at run
time, then runs a worker and the scheduler in this process for a few seconds and prints what
ran. Uses a SQLite file in a temporary directory, so it leaves nothing behind.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from conveyor import Conveyor

directory = tempfile.mkdtemp()
app = Conveyor(f"sqlite:///{Path(directory) / 'periodic.db'}")


@app.periodic(every=1, id="heartbeat", coalesce=True, max_instances=1, misfire_grace=30,
              run_at_start=True)
def heartbeat() -> float:
    """Once a second, however many processes run a scheduler."""
    return time.time()


@app.periodic(cron="0 2 * * *", tz="Europe/Paris", id="nightly_cleanup")
def nightly_cleanup() -> None:
    """02:00 in Paris; on the spring-forward night it runs at 03:00, in autumn once."""


@app.task
def send_report(kind: str) -> str:
    return f"{kind} report sent"


def main(seconds: float = 3.5) -> dict[str, int]:
    # added at run time: stored in the database, kept until removed
    app.add_schedule(send_report, every=2, id="reports", args=["usage"])
    with app.embedded(scheduler=True):
        time.sleep(seconds)
    ran: dict[str, int] = {}
    for job in app.list_jobs(status="succeeded", limit=100):
        schedule = job.record.headers.get("schedule", "-")
        ran[schedule] = ran.get(schedule, 0) + 1
    for entry in app.scheduler_status()["jobs"]:
        print(f"{entry['id']:<16} {entry['trigger']:<32} next {entry['next_run_time']}  "
              f"last {entry['last_outcome']}")
    print("runs:", ran)
    return ran


if __name__ == "__main__":
    main()
