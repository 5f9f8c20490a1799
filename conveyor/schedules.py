"""Schedules: what a periodic job is, how it is declared, and the operations on it.

A :class:`Schedule` is stored in the backend as JSON (``ScheduleRecord.spec``) next to its
:class:`ScheduleState` (``ScheduleRecord.state``: last outcome, recent jobs, counters). Two
kinds exist, told apart by ``source``:

* ``"code"`` — declared with ``@app.periodic(...)``; kept in ``app.periodic_schedules`` and
  written to the backend by the scheduler at start-up (see :mod:`conveyor.scheduler`);
* ``"runtime"`` — added with ``app.add_schedule(...)`` from code, the CLI or the HTTP API;
  stored at once and kept until removed.

The functions here (``list_schedules``, ``pause_schedule``, ``resume_schedule``,
``trigger_schedule``, ``remove_schedule``, ``scheduler_status``) are what the CLI and the
HTTP API call; each raises :class:`~conveyor.errors.ScheduleNotFound` for an unknown id.
The running loop lives in :mod:`conveyor.scheduler`, which re-exports all of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from . import serialize
from .backends.base import LIVE, JobRecord, ScheduleRecord
from .errors import (
    BackendError,
    ConfigurationError,
    InvalidTransition,
    ScheduleNotFound,
    ValidationError,
)
from .job import Job
from .task import Task, make_options
from .triggers import CronTrigger, Trigger, make_trigger

if TYPE_CHECKING:
    from .app import Conveyor, TaskDecorator

log = logging.getLogger("conveyor.scheduler")

#: job ids a schedule remembers to enforce ``max_instances`` (finished ones are dropped)
MAX_RECENT_JOBS = 1000
SPEC_VERSION = 1


@dataclass(frozen=True)
class Schedule:
    """One periodic job: which task to enqueue with which arguments, when, and the policies.

    ``anchor`` is the time since which fire times count as due: fire times at or before it are
    never run late. It is set when the schedule is first stored, when its trigger changes and
    when it is resumed, so none of those replays the runs it did not have.
    """

    id: str
    task: str
    trigger: Trigger
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    coalesce: bool = True
    max_instances: int | None = 1
    misfire_grace: float | None = None
    run_at_start: bool = False
    jitter: float = 0.0
    queue: str | None = None
    priority: int | None = None
    source: str = "code"
    anchor: float = 0.0

    def settings(self) -> dict[str, Any]:
        """Everything but the anchor: what a redeploy compares to decide "changed"."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "anchor"}
        data["trigger"] = self.trigger.to_spec()
        data["args"] = list(self.args)
        data["kwargs"] = dict(self.kwargs)
        return data

    def to_json(self) -> str:
        return json.dumps({"v": SPEC_VERSION, **self.settings(), "anchor": self.anchor},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        data = json.loads(text)
        if not isinstance(data, dict) or "task" not in data or "trigger" not in data:
            raise ValidationError(f"not a schedule spec: {text[:200]!r}")
        data.pop("v", None)
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["trigger"] = Trigger.from_spec(data["trigger"])
        values["args"] = tuple(data.get("args") or ())
        values["kwargs"] = dict(data.get("kwargs") or {})
        return cls(**values)


@dataclass
class ScheduleState:
    """The scheduler's notes on one schedule, written with every fire-time claim."""

    #: when the latest job of this schedule was enqueued
    last_run_time: float | None = None
    #: the latest fire time handled, and what became of it:
    #: "enqueued", "triggered" (by hand), "missed" (past misfire_grace), "skipped" (max_instances)
    last_fire_time: float | None = None
    last_outcome: str | None = None
    last_job: str | None = None
    #: jobs that may still be queued or running, for max_instances
    recent_jobs: list[str] = field(default_factory=list)
    enqueued: int = 0
    missed: int = 0
    skipped: int = 0
    #: fire times folded into a later one by coalesce
    coalesced: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> ScheduleState:
        try:
            data = json.loads(text or "{}")
        except ValueError:
            return cls()
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known}) if isinstance(data, dict) \
            else cls()

    def after(self, outcome: str, fire_time: float, now: float, job: str | None = None,
              count: int = 1, coalesced: int = 0) -> ScheduleState:
        """The notes once ``count`` fire times up to ``fire_time`` ended as ``outcome``."""
        state = replace(self, last_fire_time=fire_time, last_outcome=outcome,
                        coalesced=self.coalesced + coalesced,
                        recent_jobs=list(self.recent_jobs))
        if job is not None:
            state.last_run_time = now
            state.last_job = job
            state.recent_jobs = [*state.recent_jobs, job][-MAX_RECENT_JOBS:]
            state.enqueued += 1
        elif outcome == "missed":
            state.missed += count
        elif outcome == "skipped":
            state.skipped += count
        return state


# -- declaring ------------------------------------------------------------------------------

def _positive(value: float | timedelta | None, name: str, allow_zero: bool = False
              ) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or \
            seconds < 0 or (seconds == 0 and not allow_zero) or seconds != seconds:
        kind = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
        raise ValidationError(f"{name}= must be {kind} or a timedelta, got {value!r}")
    return float(seconds)


def make_schedule(task: Task[Any, Any], *, every: float | timedelta | None = None,
                  cron: str | None = None, tz: str | None = None, id: str | None = None,
                  name: str | None = None, args: Sequence[Any] = (),
                  kwargs: dict[str, Any] | None = None, coalesce: bool = True,
                  max_instances: int | None = 1,
                  misfire_grace: float | timedelta | None = None, run_at_start: bool = False,
                  jitter: float | timedelta = 0, queue: str | None = None,
                  priority: int | None = None, source: str = "code",
                  anchor: float = 0.0) -> Schedule:
    """Validate a declaration into a :class:`Schedule`: ``ValidationError`` on any bad value,
    so a mistake fails where it is written, not in the scheduler later."""
    trigger = make_trigger(every, cron, tz)
    schedule_id = task.name if id is None else id
    if not isinstance(schedule_id, str) or not schedule_id.strip() or len(schedule_id) > 200:
        raise ValidationError(f"schedule id must be a non-empty string of at most 200 "
                              f"characters, got {schedule_id!r}")
    if not isinstance(args, (list, tuple)):
        raise ValidationError(f"args= must be a list, got {type(args).__name__}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValidationError(f"kwargs= must be a dict, got {type(kwargs).__name__}")
    task.signature.validate(args, kwargs or {})
    serialize.dumps([list(args), kwargs or {}], "#")
    for flag, flag_name in ((coalesce, "coalesce"), (run_at_start, "run_at_start")):
        if not isinstance(flag, bool):
            raise ValidationError(f"{flag_name}= must be True or False, got {flag!r}")
    if max_instances is not None and (isinstance(max_instances, bool) or
                                      not isinstance(max_instances, int) or max_instances < 1):
        raise ValidationError(f"max_instances= must be an int >= 1 (or None: no limit), "
                              f"got {max_instances!r}")
    make_options(queue=queue, priority=priority)
    return Schedule(
        id=schedule_id, task=task.name, trigger=trigger,
        name=name if isinstance(name, str) and name else schedule_id,
        args=tuple(args), kwargs=dict(kwargs or {}), coalesce=coalesce,
        max_instances=max_instances, misfire_grace=_positive(misfire_grace, "misfire_grace"),
        run_at_start=run_at_start, jitter=_positive(jitter, "jitter", allow_zero=True) or 0.0,
        queue=queue, priority=priority, source=source, anchor=anchor)


def declare_periodic(app: Conveyor, *, every: float | timedelta | None = None,
                     cron: str | None = None, tz: str | None = None, id: str | None = None,
                     name: str | None = None, args: Sequence[Any] = (),
                     kwargs: dict[str, Any] | None = None, coalesce: bool = True,
                     max_instances: int | None = 1,
                     misfire_grace: float | timedelta | None = None,
                     run_at_start: bool = False, jitter: float | timedelta = 0,
                     queue: str | None = None, priority: int | None = None,
                     **task_options: Any) -> TaskDecorator:
    """``@app.periodic(every=60 | cron="0 2 * * *", ...)``: the function becomes a task (with
    ``queue``, ``priority`` and any other ``@app.task`` option) and runs on the schedule.

    Policies, with APScheduler's meanings: ``coalesce`` folds runs missed while no scheduler
    ran into one; ``misfire_grace`` (seconds; None: no limit) skips a run that could not start
    within that long of its time, recorded as missed; ``max_instances`` (None: no limit) skips a
    fire while that many earlier runs are still queued or running, recorded as skipped;
    ``run_at_start`` runs the latest fire time at start-up if it has not run; ``jitter`` delays
    each run by a random 0..jitter seconds. ``id`` defaults to the task's name.
    """
    # bad values fail at the decorator line, before the function is registered as a task
    make_trigger(every, cron, tz)
    make_options(queue=queue, priority=priority)

    def register(fn: Callable[..., Any]) -> Task[Any, Any]:
        # queue and priority become the task's defaults; on an existing task, the schedule's
        schedule_queue, schedule_priority = queue, priority
        if isinstance(fn, Task):
            if task_options:
                raise ConfigurationError(f"{fn.name} is already a task: give "
                                         f"{', '.join(sorted(task_options))} to @app.task")
            task: Task[Any, Any] = fn
        else:
            extra = dict(task_options)
            if priority is not None:
                extra["priority"] = priority
            task = app.task(queue=queue, **extra)(fn)
            schedule_queue = schedule_priority = None
        schedule = make_schedule(task, every=every, cron=cron, tz=tz, id=id, name=name,
                                 args=args, kwargs=kwargs, coalesce=coalesce,
                                 max_instances=max_instances, misfire_grace=misfire_grace,
                                 run_at_start=run_at_start, jitter=jitter,
                                 queue=schedule_queue, priority=schedule_priority,
                                 source="code")
        existing = app.periodic_schedules.get(schedule.id)
        if existing is not None and existing.task != schedule.task:
            raise ConfigurationError(f"two periodic schedules have the id {schedule.id!r} "
                                     f"({existing.task} and {schedule.task}); give one an id=")
        app.periodic_schedules[schedule.id] = schedule
        return task

    return cast("TaskDecorator", register)


def add_schedule(app: Conveyor, task: Task[Any, Any] | str, **options: Any) -> Schedule:
    """Store a schedule for an existing task now (options as :func:`declare_periodic`, minus
    the task options). Adding an id that exists replaces its settings, keeping its pause state
    and its fire history; an id declared in code cannot be replaced at run time."""
    resolved = app.get_task(task) if isinstance(task, str) else task
    now = app.clock()
    schedule = make_schedule(resolved, source="runtime", anchor=now, **options)
    if schedule.id in app.periodic_schedules:
        raise InvalidTransition(f"schedule {schedule.id!r} is declared in code with "
                                "@app.periodic; change it there, or give this one another id=")
    existing = _stored(app).get(schedule.id)
    paused = False
    if existing is not None:
        paused = existing.paused
        current = _parse(existing)
        if current is not None and current.trigger == schedule.trigger:
            schedule = replace(schedule, anchor=current.anchor)
    app.backend.put_schedule(ScheduleRecord(id=schedule.id, spec=schedule.to_json(),
                                            paused=paused, updated_at=now))
    return schedule


# -- reading --------------------------------------------------------------------------------

def _stored(app: Conveyor) -> dict[str, ScheduleRecord]:
    return {record.id: record for record in app.backend.get_schedules()}


def _parse(record: ScheduleRecord) -> Schedule | None:
    try:
        return Schedule.from_json(record.spec)
    except Exception as exc:
        # a spec written by a newer version, or cron without its extra: list it, don't fire it
        log.warning("schedule %s cannot be read: %s", record.id, exc)
        return None


def _find(app: Conveyor, schedule_id: str) -> ScheduleRecord:
    """The stored schedule; one declared in code but not yet stored is stored first."""
    record = _stored(app).get(schedule_id) if isinstance(schedule_id, str) else None
    if record is not None:
        return record
    declared = app.periodic_schedules.get(schedule_id)
    if declared is None:
        raise ScheduleNotFound(f"no schedule with id {schedule_id!r}",
                               schedule_id=schedule_id)
    now = app.clock()
    app.backend.put_schedule(ScheduleRecord(id=schedule_id,
                                            spec=replace(declared, anchor=now).to_json(),
                                            updated_at=now))
    return _find(app, schedule_id)


def since(schedule: Schedule, record: ScheduleRecord) -> float:
    """The time after which fire times are due: the last one claimed, or the anchor."""
    if record.last_fire is None:
        return schedule.anchor
    return max(record.last_fire, schedule.anchor)


def _describe(schedule: Schedule, record: ScheduleRecord | None, now: float
              ) -> dict[str, Any]:
    state = ScheduleState.from_json(record.state if record else None)
    paused = bool(record and record.paused)
    next_run = None
    if not paused:
        next_run = schedule.trigger.next_after(since(schedule, record) if record else now)
    return {
        "id": schedule.id, "name": schedule.name, "task": schedule.task,
        "trigger": schedule.trigger.to_spec(), "description": schedule.trigger.describe(),
        "source": schedule.source, "paused": paused, "next_run_time": next_run,
        "last_run_time": state.last_run_time, "last_fire_time": state.last_fire_time,
        "last_outcome": state.last_outcome, "last_job_id": state.last_job,
        "args": list(schedule.args), "kwargs": schedule.kwargs, "queue": schedule.queue,
        "priority": schedule.priority, "coalesce": schedule.coalesce,
        "max_instances": schedule.max_instances, "misfire_grace": schedule.misfire_grace,
        "run_at_start": schedule.run_at_start, "jitter": schedule.jitter,
        "counts": {"enqueued": state.enqueued, "missed": state.missed,
                   "skipped": state.skipped, "coalesced": state.coalesced},
    }


def list_schedules(app: Conveyor) -> list[dict[str, Any]]:
    """Every schedule, by id, as JSON-ready dicts (times are Unix seconds).

    Includes schedules declared in this app's code that no scheduler has stored yet. A stored
    schedule whose spec cannot be read is listed with ``"error"`` and no trigger.
    """
    now = app.clock()
    stored = _stored(app)
    entries: list[dict[str, Any]] = []
    for schedule_id in sorted(set(stored) | set(app.periodic_schedules)):
        record = stored.get(schedule_id)
        schedule = _parse(record) if record else app.periodic_schedules[schedule_id]
        if schedule is None:
            assert record is not None
            entries.append({"id": schedule_id, "paused": record.paused,
                            "error": "the stored spec cannot be read by this version"})
            continue
        entries.append(_describe(schedule, record, now))
    return entries


def get_schedule(app: Conveyor, schedule_id: str) -> dict[str, Any]:
    """One schedule as :func:`list_schedules` shows it; ``ScheduleNotFound`` if unknown."""
    for entry in list_schedules(app):
        if entry["id"] == schedule_id:
            return entry
    raise ScheduleNotFound(f"no schedule with id {schedule_id!r}", schedule_id=schedule_id)


def _iso(t: float | None, trigger: Trigger) -> str | None:
    if t is None:
        return None
    zone = trigger.zone if isinstance(trigger, CronTrigger) else UTC
    return datetime.fromtimestamp(t, zone).isoformat()


def scheduler_status(app: Conveyor) -> dict[str, Any]:
    """``{"running": bool, "jobs": [...]}`` in the shape APScheduler migration guides use:
    per schedule ``id``, ``name``, ``next_run_time`` and ``last_run_time`` (ISO 8601, in the
    cron zone or UTC), ``trigger`` (``"interval[0:01:00]"``), ``last_outcome``, ``paused``.
    ``running`` is whether any scheduler process is alive on this backend."""
    jobs = []
    for entry in list_schedules(app):
        if "error" in entry:
            continue
        trigger = Trigger.from_spec(entry["trigger"])
        jobs.append({"id": entry["id"], "name": entry["name"],
                     "next_run_time": _iso(entry["next_run_time"], trigger),
                     "trigger": str(trigger),
                     "last_run_time": _iso(entry["last_run_time"], trigger),
                     "last_outcome": entry["last_outcome"], "paused": entry["paused"]})
    running = any(w.kind == "scheduler" for w in app.workers())
    return {"running": running, "jobs": jobs}


# -- acting ---------------------------------------------------------------------------------

def pause_schedule(app: Conveyor, schedule_id: str) -> dict[str, Any]:
    """Stop firing until resumed; fire times that pass meanwhile are not run later."""
    _find(app, schedule_id)
    if not app.backend.set_schedule_paused(schedule_id, True):
        raise ScheduleNotFound(f"no schedule with id {schedule_id!r}", schedule_id=schedule_id)
    return get_schedule(app, schedule_id)


def resume_schedule(app: Conveyor, schedule_id: str) -> dict[str, Any]:
    """Fire again from the next fire time on (resuming a running schedule changes nothing)."""
    record = _find(app, schedule_id)
    schedule = _parse(record)
    if record.paused:
        if schedule is None:
            raise InvalidTransition(f"schedule {schedule_id!r} cannot be read by this "
                                    "version of Conveyor")
        # the new anchor and the unpause are one write, so no scheduler can see the schedule
        # running with its old anchor and replay what passed while it was paused
        now = app.clock()
        app.backend.put_schedule(ScheduleRecord(id=schedule_id,
                                                spec=replace(schedule, anchor=now).to_json(),
                                                paused=False, updated_at=now))
    return get_schedule(app, schedule_id)


def remove_schedule(app: Conveyor, schedule_id: str) -> None:
    """Delete a schedule (its jobs stay). One declared in this app's code cannot be removed:
    it would come back at the next start — delete the ``@app.periodic`` or pause it."""
    if schedule_id in app.periodic_schedules:
        raise InvalidTransition(f"schedule {schedule_id!r} is declared in code; remove its "
                                "@app.periodic declaration, or pause it")
    if not app.backend.delete_schedule(schedule_id):
        raise ScheduleNotFound(f"no schedule with id {schedule_id!r}", schedule_id=schedule_id)


def trigger_schedule(app: Conveyor, schedule_id: str) -> Job[Any]:
    """Enqueue one run now, whatever the policies and even while paused.

    The run is claimed like a fire time (at now), so it is recorded in the schedule's notes
    and counts towards ``max_instances``; a regular fire time that had come due but was not
    yet fired is taken to be this run.
    """
    for _ in range(5):
        record = _find(app, schedule_id)
        schedule = _parse(record)
        if schedule is None:
            raise InvalidTransition(f"schedule {schedule_id!r} cannot be read by this "
                                    "version of Conveyor")
        now = app.clock()
        fire_time = now
        if record.last_fire is not None and record.last_fire >= now:
            # another machine's clock is ahead of ours; claims only move forward
            fire_time = record.last_fire + 0.001
        job = build_job(app, schedule, fire_time, now, delay=0.0)
        state = ScheduleState.from_json(record.state).after("triggered", fire_time, now, job.id)
        if claim(app, schedule, fire_time, state, [job]):
            return Job(app, job)
    raise BackendError(f"could not trigger schedule {schedule_id!r}: other schedulers kept "
                       "claiming it; try again")


# -- shared with the scheduler loop ---------------------------------------------------------

def build_job(app: Conveyor, schedule: Schedule, fire_time: float, now: float,
              delay: float) -> JobRecord:
    """The job record for one fire time; its headers name the schedule and the fire time."""
    task = app.get_task(schedule.task)
    options = make_options(queue=schedule.queue, priority=schedule.priority,
                           delay=delay if delay > 0 else None,
                           headers={"schedule": schedule.id,
                                    "schedule_fire_time": repr(fire_time)})
    return app.build_record(task, schedule.args, schedule.kwargs, options, now)


def claim(app: Conveyor, schedule: Schedule, fire_time: float, state: ScheduleState,
          jobs: list[JobRecord]) -> bool:
    """Claim ``fire_time`` (and enqueue ``jobs``) once across every scheduler."""
    next_fire = schedule.trigger.next_after(fire_time)
    if not app.backend.claim_fire(schedule.id, fire_time, next_fire, state.to_json(), jobs):
        return False
    for middleware in app.middleware:
        if jobs:
            try:
                middleware.after_enqueue(jobs)
            except Exception:
                log.exception("middleware %r failed", middleware)
    return True


def live_jobs(app: Conveyor, job_ids: Sequence[str]) -> list[str]:
    """Those of ``job_ids`` still scheduled, queued or running."""
    live = []
    for job_id in job_ids:
        record = app.backend.get(job_id)
        if record is not None and record.status in LIVE:
            live.append(job_id)
    return live
