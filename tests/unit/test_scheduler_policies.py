"""The scheduler's policies on the memory backend, with an injected clock (no real waiting)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from support import Clock

from conveyor import Conveyor, InvalidTransition, ScheduleNotFound, ValidationError
from conveyor.backends.base import ScheduleRecord
from conveyor.scheduler import (
    Schedule,
    Scheduler,
    add_schedule,
    get_schedule,
    list_schedules,
    pause_schedule,
    remove_schedule,
    resume_schedule,
    trigger_schedule,
)
from conveyor.testing import drain

#: a multiple of every period used here, so fire times are easy to name
START = 1_800_000_000.0


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def app(clock: Clock) -> Conveyor:
    return Conveyor("memory://", clock=clock)


def started(app: Conveyor, **options: Any) -> Scheduler:
    scheduler = Scheduler(app, rng=random.Random(7), **options)
    scheduler.prepare()
    return scheduler


def jobs_of(app: Conveyor, schedule_id: str) -> list[Any]:
    """The schedule's jobs, oldest first."""
    jobs = [j for j in app.list_jobs(limit=1000) if j.record.headers.get("schedule") ==
            schedule_id]
    return sorted(jobs, key=lambda j: (j.record.created_at, j.id))


def fire_times(app: Conveyor, schedule_id: str) -> list[float]:
    return [float(j.record.headers["schedule_fire_time"]) for j in jobs_of(app, schedule_id)]


def run_for(scheduler: Scheduler, clock: Clock, seconds: float, step: float = 1.0) -> None:
    """Tick once per ``step`` seconds of fake time."""
    end = clock.now + seconds
    while clock.now < end:
        clock.advance(step)
        scheduler.tick()


def stored(app: Conveyor, schedule_id: str) -> ScheduleRecord:
    return next(r for r in app.backend.get_schedules() if r.id == schedule_id)


# -- firing ---------------------------------------------------------------------------------

def test_a_due_fire_time_enqueues_one_job_that_names_its_schedule(app, clock):
    @app.periodic(every=10, id="tick", args=[3], kwargs={"label": "x"}, queue="cron",
                  priority=5)
    def tick(n: int, label: str = "") -> int:
        return n

    scheduler = started(app)
    clock.advance(10)
    scheduler.tick()
    [job] = jobs_of(app, "tick")
    assert job.record.headers == {"schedule": "tick", "schedule_fire_time": repr(START + 10)}
    assert (job.task, job.args, job.kwargs, job.queue, job.record.priority) == (
        tick.name, [3], {"label": "x"}, "cron", 5)
    assert job.status == "queued"


def test_a_new_schedule_does_not_replay_fire_times_from_before_it_was_stored(app, clock):
    @app.periodic(every=10, id="tick")
    def tick() -> None: ...

    clock.advance(5)
    scheduler = started(app)
    scheduler.tick()
    assert jobs_of(app, "tick") == []
    clock.advance(5)
    scheduler.tick()
    assert fire_times(app, "tick") == [START + 10]


def test_each_fire_time_is_enqueued_once_however_often_the_scheduler_looks(app, clock):
    @app.periodic(every=10, id="tick", max_instances=None)
    def tick() -> None: ...

    scheduler = started(app)
    run_for(scheduler, clock, 60, step=0.5)
    assert fire_times(app, "tick") == [START + 10 * n for n in range(1, 7)]


def test_the_scheduler_sleeps_until_the_next_fire_time_at_most_max_sleep(app, clock):
    @app.periodic(every=10, id="tick")
    def tick() -> None: ...

    scheduler = started(app, max_sleep=5.0)
    clock.advance(8)
    assert scheduler.tick() == pytest.approx(2.0)
    clock.advance(0.5)
    assert scheduler.tick() == pytest.approx(1.5)
    assert started(app, max_sleep=1.0).tick() == pytest.approx(1.0)


def test_two_schedulers_on_one_backend_fire_each_time_once(app, clock):
    @app.periodic(every=1, id="tick", coalesce=False, max_instances=None)
    def tick() -> None: ...

    first, second = started(app), started(app)
    for _ in range(20):
        clock.advance(0.5)
        first.tick()
        second.tick()
    assert fire_times(app, "tick") == [START + n for n in range(1, 11)]


# -- coalesce -------------------------------------------------------------------------------

def test_coalesce_folds_the_runs_missed_while_no_scheduler_ran_into_one(app, clock):
    @app.periodic(every=10, id="tick", coalesce=True, max_instances=None)
    def tick() -> None: ...

    scheduler = started(app)
    clock.advance(10)
    scheduler.tick()
    clock.advance(55)  # the scheduler was down through five fire times
    scheduler = started(app)
    scheduler.tick()
    assert fire_times(app, "tick") == [START + 10, START + 60]
    state = get_schedule(app, "tick")
    assert state["counts"] == {"enqueued": 2, "missed": 0, "skipped": 0, "coalesced": 4}


def test_without_coalesce_every_missed_fire_time_runs(app, clock):
    @app.periodic(every=10, id="tick", coalesce=False, max_instances=None)
    def tick() -> None: ...

    scheduler = started(app)
    clock.advance(55)
    scheduler.tick()
    assert fire_times(app, "tick") == [START + 10 * n for n in range(1, 6)]


# -- misfire_grace --------------------------------------------------------------------------

def test_misfire_grace_records_runs_that_could_not_start_in_time_as_missed(app, clock):
    @app.periodic(every=10, id="tick", coalesce=False, misfire_grace=15, max_instances=None)
    def tick() -> None: ...

    scheduler = started(app)
    clock.advance(58)  # fire times 10..50; only 50 (8 s late) is within the grace
    scheduler.tick()
    assert fire_times(app, "tick") == [START + 50]
    entry = get_schedule(app, "tick")
    assert entry["counts"]["missed"] == 4 and entry["last_outcome"] == "enqueued"


def test_misfire_grace_applies_to_the_coalesced_run(app, clock):
    @app.periodic(every=10, id="tick", coalesce=True, misfire_grace=5)
    def tick() -> None: ...

    scheduler = started(app)
    clock.advance(58)
    scheduler.tick()
    assert fire_times(app, "tick") == []
    entry = get_schedule(app, "tick")
    assert entry["last_outcome"] == "missed" and entry["counts"]["missed"] == 5
    assert stored(app, "tick").last_fire == START + 50  # claimed: no other scheduler fires it
    clock.advance(2)
    scheduler.tick()
    assert fire_times(app, "tick") == [START + 60]


def test_a_run_within_its_grace_is_not_missed(app, clock):
    @app.periodic(every=10, id="tick", misfire_grace=5)
    def tick() -> None: ...

    scheduler = started(app)
    clock.advance(14)
    scheduler.tick()
    assert fire_times(app, "tick") == [START + 10]


# -- max_instances --------------------------------------------------------------------------

def test_max_instances_skips_a_fire_while_the_previous_run_is_still_queued(app, clock):
    @app.periodic(every=10, id="tick", max_instances=1)
    def tick() -> None: ...

    scheduler = started(app)
    run_for(scheduler, clock, 20)
    assert fire_times(app, "tick") == [START + 10]
    entry = get_schedule(app, "tick")
    assert entry["last_outcome"] == "skipped" and entry["counts"]["skipped"] == 1
    assert stored(app, "tick").last_fire == START + 20

    drain(app)
    run_for(scheduler, clock, 10)
    assert fire_times(app, "tick") == [START + 10, START + 30]


def test_max_instances_counts_running_and_delayed_runs_too(app, clock):
    @app.periodic(every=10, id="tick", max_instances=2, jitter=100)
    def tick() -> None: ...

    scheduler = started(app)
    run_for(scheduler, clock, 30)
    assert fire_times(app, "tick") == [START + 10, START + 20]
    assert {j.status for j in jobs_of(app, "tick")} == {"scheduled"}


def test_max_instances_none_never_skips(app, clock):
    @app.periodic(every=10, id="tick", max_instances=None)
    def tick() -> None: ...

    scheduler = started(app)
    run_for(scheduler, clock, 50)
    assert len(fire_times(app, "tick")) == 5


# -- run_at_start ---------------------------------------------------------------------------

def test_run_at_start_runs_the_latest_fire_time_when_the_scheduler_starts(app, clock):
    @app.periodic(every=60, id="tick", run_at_start=True)
    def tick() -> None: ...

    clock.advance(25)
    started(app).tick()
    assert fire_times(app, "tick") == [START]
    [job] = jobs_of(app, "tick")
    assert job.record.created_at == START + 25 and job.status == "queued"


def test_run_at_start_fires_once_however_many_schedulers_start(app, clock):
    @app.periodic(every=60, id="tick", run_at_start=True, max_instances=None)
    def tick() -> None: ...

    clock.advance(25)
    started(app).tick()
    clock.advance(3)
    started(app).tick()
    started(app).tick()
    assert fire_times(app, "tick") == [START]


def test_run_at_start_runs_the_latest_missed_fire_time_despite_misfire_grace(app, clock):
    @app.periodic(every=60, id="tick", run_at_start=True, misfire_grace=5)
    def tick() -> None: ...

    scheduler = started(app)
    scheduler.tick()
    drain(app)
    clock.advance(150)  # down through START+60 and START+120
    started(app).tick()
    assert fire_times(app, "tick") == [START, START + 120]


def test_without_run_at_start_a_late_start_waits_for_the_next_fire_time(app, clock):
    @app.periodic(every=60, id="tick")
    def tick() -> None: ...

    clock.advance(25)
    scheduler = started(app)
    scheduler.tick()
    assert fire_times(app, "tick") == []


# -- jitter ---------------------------------------------------------------------------------

def test_jitter_delays_each_run_by_at_most_jitter_seconds(app, clock):
    @app.periodic(every=10, id="tick", jitter=4, max_instances=None)
    def tick() -> None: ...

    scheduler = started(app)
    run_for(scheduler, clock, 500, step=10)
    delays = [j.record.run_at - j.record.created_at for j in jobs_of(app, "tick")]
    assert len(delays) == 50
    assert all(0 <= d <= 4 for d in delays)
    assert max(delays) - min(delays) > 2  # spread, not a constant


def test_jitter_does_not_move_the_fire_time_itself(app, clock):
    @app.periodic(every=10, id="tick", jitter=4, max_instances=None)
    def tick() -> None: ...

    scheduler = started(app)
    run_for(scheduler, clock, 30, step=10)
    assert fire_times(app, "tick") == [START + 10, START + 20, START + 30]


# -- reconciliation -------------------------------------------------------------------------

def redeploy(clock: Clock, app: Conveyor, declare: Any) -> Conveyor:
    """The same backend seen by a new process whose code declares ``declare(app)``."""
    again = Conveyor("memory://", clock=clock)
    again._backend = app.backend
    declare(again)
    return again


def test_reconciling_adds_updates_retires_and_keeps_runtime_schedules(app, clock):
    @app.periodic(every=10, id="changes")
    def changes() -> None: ...

    @app.periodic(every=10, id="goes_away")
    def goes_away() -> None: ...

    @app.periodic(every=10, id="stays")
    def stays() -> None: ...

    started(app)
    add_schedule(app, stays, every=30, id="added_at_run_time")

    def new_code(new: Conveyor) -> None:
        new.periodic(every=20, id="changes")(changes.fn)
        new.periodic(every=10, id="stays")(stays.fn)
        new.periodic(every=10, id="brand_new")(goes_away.fn)

    new_app = redeploy(clock, app, new_code)
    done = started(new_app).reconcile()
    assert done == {"added": [], "updated": [], "retired": []}  # prepare() did it already
    assert [r.id for r in app.backend.get_schedules()] == [
        "added_at_run_time", "brand_new", "changes", "stays"]
    assert get_schedule(new_app, "changes")["trigger"] == {"type": "interval", "every": 20.0}
    assert get_schedule(new_app, "added_at_run_time")["source"] == "runtime"


def test_reconcile_reports_what_it_changed(app, clock):
    @app.periodic(every=10, id="a")
    def a() -> None: ...

    @app.periodic(every=10, id="b")
    def b() -> None: ...

    assert Scheduler(app).reconcile() == {"added": ["a", "b"], "updated": [], "retired": []}

    def new_code(new: Conveyor) -> None:
        new.periodic(every=15, id="a")(a.fn)

    assert Scheduler(redeploy(clock, app, new_code)).reconcile() == {
        "added": [], "updated": ["a"], "retired": ["b"]}


def test_a_changed_trigger_counts_from_the_redeploy_and_does_not_replay(app, clock):
    @app.periodic(every=10, id="tick")
    def tick() -> None: ...

    started(app).tick()
    clock.advance(35)  # down while the code changed to a 5-second interval

    def new_code(new: Conveyor) -> None:
        new.periodic(every=5, id="tick")(tick.fn)

    new_app = redeploy(clock, app, new_code)
    scheduler = started(new_app)
    scheduler.tick()
    assert fire_times(app, "tick") == []
    clock.advance(5)
    scheduler.tick()
    assert fire_times(app, "tick") == [START + 40]


def test_a_redeploy_keeps_the_fire_history_and_the_pause(app, clock):
    @app.periodic(every=10, id="tick")
    def tick() -> None: ...

    scheduler = started(app)
    run_for(scheduler, clock, 10)
    pause_schedule(app, "tick")

    def new_code(new: Conveyor) -> None:
        new.periodic(every=10, id="tick", misfire_grace=30)(tick.fn)

    started(redeploy(clock, app, new_code))
    record = stored(app, "tick")
    assert record.paused and record.last_fire == START + 10
    assert Schedule.from_json(record.spec).misfire_grace == 30


def test_a_running_scheduler_restores_a_declared_schedule_another_process_retired(app, clock):
    @app.periodic(every=10, id="tick", max_instances=None)
    def tick() -> None: ...

    scheduler = started(app)
    app.backend.delete_schedule("tick")  # what a scheduler running older code does at start
    clock.advance(10)
    scheduler.tick()
    assert [r.id for r in app.backend.get_schedules()] == ["tick"]
    clock.advance(10)
    scheduler.tick()
    assert fire_times(app, "tick") == [START + 20]


# -- managing schedules at run time ---------------------------------------------------------

def test_a_runtime_schedule_is_stored_and_fired(app, clock):
    @app.task
    def report(kind: str) -> str:
        return kind

    schedule = app.add_schedule(report, cron="*/1 * * * *", id="reports", args=["daily"])
    assert schedule.source == "runtime"
    scheduler = started(app)
    run_for(scheduler, clock, 60)
    [job] = jobs_of(app, "reports")
    assert job.args == ["daily"] and float(job.record.headers["schedule_fire_time"]) == START + 60


def test_adding_a_runtime_schedule_by_task_name_and_again_replaces_it(app, clock):
    @app.task(name="report")
    def report() -> None: ...

    add_schedule(app, "report", every=60)
    add_schedule(app, "report", every=120, name="two-minutely")
    [entry] = list_schedules(app)
    assert (entry["id"], entry["name"], entry["trigger"]["every"]) == (
        "report", "two-minutely", 120.0)


def test_a_runtime_schedule_cannot_take_the_id_of_one_declared_in_code(app):
    @app.periodic(every=10, id="tick")
    def tick() -> None: ...

    with pytest.raises(InvalidTransition, match="declared in code"):
        add_schedule(app, tick, every=5, id="tick")


def test_a_paused_schedule_does_not_fire_and_does_not_catch_up_when_resumed(app, clock):
    @app.periodic(every=10, id="tick", max_instances=None)
    def tick() -> None: ...

    scheduler = started(app)
    run_for(scheduler, clock, 10)
    assert pause_schedule(app, "tick")["paused"] is True
    run_for(scheduler, clock, 35)
    assert fire_times(app, "tick") == [START + 10]
    entry = resume_schedule(app, "tick")
    assert entry["paused"] is False and entry["next_run_time"] == START + 50
    run_for(scheduler, clock, 10)
    assert fire_times(app, "tick") == [START + 10, START + 50]


def test_resuming_a_running_schedule_changes_nothing(app, clock):
    @app.periodic(every=10, id="tick")
    def tick() -> None: ...

    started(app)
    before = stored(app, "tick")
    resume_schedule(app, "tick")
    assert stored(app, "tick") == before


def test_trigger_enqueues_a_run_now_even_while_paused(app, clock):
    @app.periodic(every=60, id="tick")
    def tick() -> None: ...

    scheduler = started(app)
    pause_schedule(app, "tick")
    clock.advance(7)
    job = trigger_schedule(app, "tick")
    assert job.status == "queued" and job.record.headers["schedule"] == "tick"
    entry = get_schedule(app, "tick")
    assert (entry["last_outcome"], entry["last_run_time"]) == ("triggered", START + 7)
    resume_schedule(app, "tick")
    run_for(scheduler, clock, 60)  # the triggered run is still queued: max_instances=1
    assert len(jobs_of(app, "tick")) == 1
    assert get_schedule(app, "tick")["last_outcome"] == "skipped"


def test_trigger_does_not_move_the_regular_fire_times(app, clock):
    @app.periodic(every=10, id="tick", max_instances=None)
    def tick() -> None: ...

    scheduler = started(app)
    clock.advance(3)
    trigger_schedule(app, "tick")
    run_for(scheduler, clock, 7)
    assert fire_times(app, "tick") == [START + 3, START + 10]


def test_removing_a_runtime_schedule_deletes_it(app):
    @app.task
    def report() -> None: ...

    add_schedule(app, report, every=60, id="reports")
    remove_schedule(app, "reports")
    assert list_schedules(app) == []


def test_a_schedule_declared_in_code_cannot_be_removed_at_run_time(app):
    @app.periodic(every=10, id="tick")
    def tick() -> None: ...

    with pytest.raises(InvalidTransition, match="declared in code"):
        remove_schedule(app, "tick")


@pytest.mark.parametrize("action", [pause_schedule, resume_schedule, trigger_schedule,
                                    remove_schedule, get_schedule])
def test_an_unknown_schedule_id_raises_schedule_not_found(app, action):
    with pytest.raises(ScheduleNotFound, match="no schedule with id 'nope'"):
        action(app, "nope")


def test_a_declared_schedule_is_listed_and_managed_before_any_scheduler_stored_it(app, clock):
    @app.periodic(every=10, id="tick")
    def tick() -> None: ...

    [entry] = list_schedules(app)
    assert entry["id"] == "tick" and entry["next_run_time"] == START + 10
    assert app.backend.get_schedules() == []
    pause_schedule(app, "tick")
    assert stored(app, "tick").paused


# -- status ---------------------------------------------------------------------------------

def test_scheduler_status_has_the_apscheduler_shape(app, clock):
    @app.periodic(cron="0 2 * * *", tz="Europe/Paris", id="nightly", name="nightly cleanup")
    def nightly() -> None: ...

    @app.periodic(every=60, id="minutely")
    def minutely() -> None: ...

    assert app.scheduler_status()["running"] is False
    scheduler = started(app)
    run_for(scheduler, clock, 60, step=60)
    status = app.scheduler_status()
    assert status["running"] is True
    minutely_entry, nightly_entry = status["jobs"]
    assert nightly_entry == {
        "id": "nightly", "name": "nightly cleanup",
        "next_run_time": "2027-01-16T02:00:00+01:00", "trigger": "cron[0 2 * * *, Europe/Paris]",
        "last_run_time": None, "last_outcome": None, "paused": False}
    assert minutely_entry["trigger"] == "interval[0:01:00]"
    assert minutely_entry["last_run_time"] == "2027-01-15T08:01:00+00:00"
    assert minutely_entry["last_outcome"] == "enqueued"
    json.dumps(status)


def test_the_scheduler_registers_as_a_scheduler_and_leaves_on_stop(app, clock):
    @app.periodic(every=1, id="tick", max_instances=None)
    def tick() -> None: ...

    ticks = []

    def fake_sleep(seconds: float) -> None:
        ticks.append(seconds)
        assert [w.kind for w in app.workers()] == ["scheduler"]
        clock.advance(seconds)
        if len(ticks) == 5:
            scheduler.stop()

    scheduler = Scheduler(app, sleep=fake_sleep)
    scheduler.run()
    assert scheduler.join(0) and app.workers() == []
    assert len(fire_times(app, "tick")) == 4
    assert not scheduler.running


# -- declarations ---------------------------------------------------------------------------

def test_a_periodic_function_is_also_a_task(app):
    @app.periodic(every=60, retries=2)
    async def tidy() -> str:
        return "tidy"

    assert app.tasks[tidy.name] is tidy and tidy.retries == 2 and tidy.is_async
    assert app.periodic_schedules[tidy.name].task == tidy.name


def test_periodic_arguments_are_checked_against_the_function_when_declared(app):
    with pytest.raises(ValidationError, match="arguments do not match"):
        @app.periodic(every=60, args=[1, 2])
        def one(n: int) -> None: ...


@pytest.mark.parametrize(("options", "message"), [
    ({"misfire_grace": 0}, "misfire_grace= must be a positive number"),
    ({"jitter": -1}, "jitter= must be a number of seconds >= 0"),
    ({"max_instances": 0}, "max_instances= must be an int >= 1"),
    ({"coalesce": "yes"}, "coalesce= must be True or False"),
    ({"cron": "61 * * * *", "every": None}, "invalid cron expression"),
    ({"queue": ""}, "queue must be a non-empty string"),
])
def test_bad_policies_are_refused_when_declared(app, options, message):
    declaration = {"every": 60, **options}
    with pytest.raises(ValidationError, match=message):
        @app.periodic(**declaration)
        def job() -> None: ...


def test_two_functions_cannot_share_a_schedule_id(app):
    from conveyor import ConfigurationError

    @app.periodic(every=60, id="same")
    def first() -> None: ...

    with pytest.raises(ConfigurationError, match="two periodic schedules have the id"):
        @app.periodic(every=60, id="same")
        def second() -> None: ...


def test_a_schedule_whose_task_this_process_lacks_is_left_for_another(app, clock):
    app.backend.put_schedule(ScheduleRecord(id="other", spec=Schedule.from_json(json.dumps({
        "task": "elsewhere.task", "trigger": {"type": "interval", "every": 10}, "id": "other",
        "name": "other", "source": "runtime", "anchor": START})).to_json()))
    scheduler = started(app)
    run_for(scheduler, clock, 20)
    assert stored(app, "other").last_fire is None
    assert app.list_jobs().jobs == []


def test_a_schedule_spec_survives_its_json_form(app):
    @app.periodic(cron="*/5 * * * *", tz="Europe/Paris", id="s", args=[1], jitter=2,
                  misfire_grace=30, max_instances=None, coalesce=False)
    def s(n: int) -> None: ...

    schedule = app.periodic_schedules["s"]
    assert Schedule.from_json(schedule.to_json()) == schedule


def test_a_periodic_declaration_on_an_existing_task_keeps_the_task_and_sets_the_queue(app):
    from conveyor import ConfigurationError

    @app.task
    def report() -> None: ...

    app.periodic(every=60, id="reports", queue="reports")(report)
    assert report.queue == "default" and app.periodic_schedules["reports"].queue == "reports"
    with pytest.raises(ConfigurationError, match=r"already a task: give retries to @app\.task"):
        app.periodic(every=60, id="again", retries=3)(report)
