"""The real Scheduler on every backend: racing schedulers fire each time once, and the
management operations keep the fire history."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest

from conveyor import Conveyor
from conveyor.scheduler import (
    Scheduler,
    list_schedules,
    pause_schedule,
    resume_schedule,
    trigger_schedule,
)

START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app(backend_url):
    clock = Clock()
    conveyor = Conveyor(backend_url, clock=clock)
    yield conveyor
    conveyor.close()


def fire_times(app: Conveyor) -> Counter[float]:
    return Counter(float(j.record.headers["schedule_fire_time"])
                   for j in app.list_jobs(limit=1000) if "schedule" in j.record.headers)


def test_four_racing_schedulers_enqueue_every_fire_time_exactly_once(app):
    @app.periodic(every=1, id="tick", coalesce=False, max_instances=None)
    def tick() -> None: ...

    schedulers = [Scheduler(app, rng=random.Random(n)) for n in range(4)]
    for scheduler in schedulers:
        scheduler.prepare()
    steps = 12
    barrier = threading.Barrier(len(schedulers), action=lambda: setattr(
        app.clock, "now", app.clock.now + 0.5))
    errors: list[BaseException] = []

    def race(scheduler: Scheduler) -> None:
        try:
            for _ in range(steps):
                barrier.wait(10)
                scheduler.tick()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=race, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert fire_times(app) == Counter({START + n: 1 for n in range(1, steps // 2 + 1)})


def test_pause_resume_and_trigger_keep_the_fire_history(app):
    @app.periodic(every=10, id="tick", max_instances=None)
    def tick() -> None: ...

    scheduler = Scheduler(app)
    scheduler.prepare()
    app.clock.now += 10
    scheduler.tick()
    pause_schedule(app, "tick")
    app.clock.now += 30
    scheduler.tick()
    job = trigger_schedule(app, "tick")
    resume_schedule(app, "tick")
    app.clock.now += 10
    scheduler.tick()
    assert fire_times(app) == Counter({START + 10: 1, START + 40: 1, START + 50: 1})
    [entry] = list_schedules(app)
    assert entry["last_fire_time"] == START + 50 and entry["counts"]["enqueued"] == 3
    assert app.get_job(job.id).record.headers["schedule"] == "tick"
