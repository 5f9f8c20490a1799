"""Helpers of the HTTP API tests: the test app's tasks, an SSE parser, a polling wait."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from conveyor import Conveyor, Retry, current_job

#: released by a test to let ``gated`` jobs finish
GATES: dict[str, threading.Event] = {}


def build_app(url: str) -> Conveyor:
    app = Conveyor(url)

    @app.task(name="add", expose=True)
    def add(a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    @app.task(name="steps", expose=True)
    def steps(count: int = 3, pause: float = 0.15) -> str:
        """Report progress in even steps."""
        job = current_job()
        for i in range(1, count + 1):
            time.sleep(pause)
            job.progress(100 * i / (count + 1), f"step {i}")
        time.sleep(pause)
        return "done"

    @app.task(name="gated", expose=True)
    def gated(gate: str) -> str:
        """Wait until the test opens the gate (or the job is cancelled)."""
        job = current_job()
        job.progress(10, "waiting at the gate")
        event = GATES.setdefault(gate, threading.Event())
        while not event.wait(0.05):
            job.check_cancelled()
        return gate

    @app.task(name="boom", expose=True)
    def boom(message: str = "kaboom") -> None:
        """Always fails."""
        raise ValueError(message)

    @app.task(name="again", expose=True, retries=1)
    def again() -> None:
        raise Retry(delay=3600)

    @app.task(name="internal")
    def internal() -> None:
        """Not exposed: visible, not submittable."""

    @app.periodic(every=3600, id="hourly", name="hourly report")
    def hourly() -> str:
        return "report"

    return app


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The events of an SSE body: ``{"event", "id", "data"}`` each; comments become
    ``{"comment": ...}``."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        item: dict[str, Any] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                item["comment"] = line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                item[name] = json.loads(value) if name == "data" else value
        if "id" in item:
            item["id"] = int(item["id"])
        events.append(item)
    return events


