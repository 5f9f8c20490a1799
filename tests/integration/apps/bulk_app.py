"""The app of the 10,000-job test: one no-op task that leaves proof of each run.

The lease is the default (30 s) on purpose: the test asserts exactly-once in normal operation,
and a short lease on a loaded two-core machine would turn a slow heartbeat into a (correct,
at-least-once) second run.
"""

from __future__ import annotations

import os

from conveyor import Conveyor, current_job

app = Conveyor()


@app.task(name="bulk.record")
def record(n: int) -> int:
    line = f"{current_job().id} {n} {os.getpid()}\n".encode()
    fd = os.open(os.path.join(os.environ["CORE_APP_OUT"], "ran.log"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return n
