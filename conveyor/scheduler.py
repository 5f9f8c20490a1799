"""The periodic scheduler: fires each schedule's due times, exactly once across processes.

There is no leader. Every scheduler process — ``conveyor scheduler``, ``conveyor worker
--with-scheduler``, ``app.embedded(scheduler=True)`` in each web replica — runs the same loop:

1. read the schedules from the backend;
2. for each one that is not paused, compute the fire times that came due since the last one
   claimed (triggers are pure functions of time, so every process computes the same times);
3. apply the policies (coalesce, misfire_grace, max_instances) to decide, per fire time,
   "enqueue", "missed" or "skipped";
4. claim it with ``backend.claim_fire``, which atomically moves the schedule's ``last_fire``
   forward *and* enqueues the job — only one claim of a fire time can succeed, so a job is
   enqueued once however many processes race for it, and a process that dies mid-way leaves
   nothing half-done for the others;
5. sleep until the next fire time (at most ``max_sleep`` seconds, so new, paused and resumed
   schedules are seen promptly).

Missed and skipped fire times are claimed too (with no job), so another process does not fire
them either. At start-up a scheduler reconciles the schedules declared in code with the
backend (new ones added, changed ones updated, removed ones retired; run-time ones kept) and
registers itself in the worker registry with ``kind="scheduler"``.

Declaring and managing schedules: see :mod:`conveyor.schedules` (re-exported here).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .backends.base import JobRecord, ScheduleRecord, WorkerInfo
from .errors import ConfigurationError, UnknownTask, ValidationError
from .ids import new_job_id
from .schedules import (
    Schedule,
    ScheduleState,
    add_schedule,
    build_job,
    claim,
    declare_periodic,
    get_schedule,
    list_schedules,
    live_jobs,
    pause_schedule,
    remove_schedule,
    resume_schedule,
    scheduler_status,
    since,
    trigger_schedule,
)
from .triggers import CronTrigger, IntervalTrigger, Trigger

if TYPE_CHECKING:
    from .app import Conveyor

__all__ = [
    "CronTrigger",
    "Fire",
    "IntervalTrigger",
    "Schedule",
    "ScheduleState",
    "Scheduler",
    "Trigger",
    "add_schedule",
    "declare_periodic",
    "due_fire_times",
    "get_schedule",
    "list_schedules",
    "pause_schedule",
    "plan_fires",
    "remove_schedule",
    "resume_schedule",
    "scheduler_status",
    "trigger_schedule",
]

log = logging.getLogger("conveyor.scheduler")

#: at most this many due fire times are looked at per schedule and pass; older ones are folded
MAX_CATCH_UP = 1000


@dataclass(frozen=True)
class Fire:
    """What to do with one fire time: ``run`` it or record it ``missed``; ``count`` fire
    times end here (more than one when coalesced or missed together)."""

    time: float
    missed: bool
    count: int = 1


def due_fire_times(trigger: Trigger, after: float, now: float,
                   limit: int = MAX_CATCH_UP) -> list[float]:
    """The fire times in ``(after, now]``, oldest first; only the newest ``limit`` of them
    when there are more (found newest first, so a long outage costs ``limit`` steps)."""
    found: list[float] = []
    latest = trigger.previous(now)
    while latest is not None and latest > after and len(found) < limit:
        found.append(latest)
        latest = trigger.previous(latest - 1e-6)
    return found[::-1]


def plan_fires(schedule: Schedule, due: list[float], now: float,
               exempt_latest: bool = False) -> list[Fire]:
    """Apply ``coalesce`` and ``misfire_grace`` to the due fire times (``max_instances``
    needs the backend and is checked when a run is enqueued).

    With ``coalesce`` the due times fold into one run at the latest; without, each is its own
    run. A run later than ``misfire_grace`` seconds is missed — consecutive missed times are
    recorded as one — except the latest when ``exempt_latest`` (``run_at_start``).
    """
    if not due:
        return []
    groups = [(due[-1], len(due))] if schedule.coalesce else [(t, 1) for t in due]
    fires: list[Fire] = []
    for fire_time, count in groups:
        grace = schedule.misfire_grace
        missed = grace is not None and now - fire_time > grace and not (
            exempt_latest and fire_time == due[-1])
        if missed and fires and fires[-1].missed:
            fires[-1] = Fire(fire_time, True, fires[-1].count + count)
        else:
            fires.append(Fire(fire_time, missed, count))
    return fires


class Scheduler:
    """Fires an app's schedules. ``run()`` blocks until ``stop()``; ``start()`` runs it in a
    background thread. Run as many as you like on one backend.

    ``max_sleep`` bounds each wait (new and resumed schedules are seen within it); ``sleep``
    and ``rng`` replace the real wait and randomness in tests (time comes from ``app.clock``).
    """

    def __init__(self, app: Conveyor, *, max_sleep: float = 1.0,
                 sleep: Callable[[float], Any] | None = None,
                 rng: random.Random | None = None, heartbeat_interval: float = 5.0,
                 scheduler_id: str | None = None) -> None:
        self.app = app
        self.max_sleep = max_sleep
        self.heartbeat_interval = heartbeat_interval
        self.rng = rng or random.Random()
        self.id = scheduler_id or \
            f"scheduler-{socket.gethostname()}-{os.getpid()}-{new_job_id()[-6:]}"
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._sleep = sleep or self._stopping.wait
        self._thread: threading.Thread | None = None
        self._starting = False
        self._started_at = 0.0
        self._last_heartbeat: float | None = None
        self._parsed: dict[str, Schedule | None] = {}
        self._warned: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"<Scheduler {self.id}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Scheduler:
        """Run in a background thread; returns at once."""
        self._thread = threading.Thread(target=self.run, name=f"conveyor-{self.id}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Finish the current pass and return from ``run()``."""
        self._stopping.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for ``run()`` to return; whether it did."""
        return self._stopped.wait(timeout)

    @property
    def running(self) -> bool:
        return not self._stopped.is_set() and self._last_heartbeat is not None

    def run(self) -> None:
        """Reconcile, then fire due schedules until stopped."""
        self._stopped.clear()
        try:
            self.prepare()
            log.info("scheduler %s started: %d schedule(s) declared in code, backend=%s",
                     self.id, len(self.app.periodic_schedules), self.app.backend.name)
            while not self._stopping.is_set():
                try:
                    delay = self.tick()
                except Exception:
                    # a backend hiccup must not end the scheduler; the next pass retries
                    log.exception("scheduler pass failed; retrying")
                    delay = self.max_sleep
                if not self._stopping.is_set():
                    self._sleep(delay)
        finally:
            self._deregister()
            self._stopped.set()
            log.info("scheduler %s stopped", self.id)

    def prepare(self) -> None:
        """Start-up: check the backend, reconcile declared schedules, register; the next
        :meth:`tick` applies ``run_at_start``."""
        self.app.backend.check()
        now = self.app.clock()
        self._started_at = now
        self.reconcile(now)
        self._heartbeat(now, force=True)
        self._starting = True

    # -- reconciling code and backend --------------------------------------------------------

    def reconcile(self, now: float | None = None) -> dict[str, list[str]]:
        """Make the backend match the schedules declared in code: add new ones, update
        changed ones (a changed trigger starts counting from now), retire ("code") ones no
        longer declared, keep run-time ones. Returns the ids per action."""
        now = self.app.clock() if now is None else now
        stored = {r.id: r for r in self.app.backend.get_schedules()}
        done: dict[str, list[str]] = {"added": [], "updated": [], "retired": []}
        for schedule_id, declared in self.app.periodic_schedules.items():
            record = stored.get(schedule_id)
            current = self._parse(record) if record else None
            if record is None:
                self._store(replace(declared, anchor=now), paused=False, now=now)
                done["added"].append(schedule_id)
            elif current is None or current.settings() != declared.settings():
                if current is not None and current.source == "runtime":
                    log.warning("schedule %s was added at run time; the declaration in code "
                                "replaces it", schedule_id)
                same_trigger = current is not None and current.trigger == declared.trigger
                anchor = current.anchor if same_trigger and current else now
                self._store(replace(declared, anchor=anchor), paused=record.paused, now=now)
                done["updated"].append(schedule_id)
        for schedule_id, record in stored.items():
            if schedule_id not in self.app.periodic_schedules and _source(record) == "code":
                self.app.backend.delete_schedule(schedule_id)
                done["retired"].append(schedule_id)
        for action, ids in done.items():
            if ids:
                log.info("schedules %s: %s", action, ", ".join(ids))
        return done

    def _store(self, schedule: Schedule, paused: bool, now: float) -> None:
        self.app.backend.put_schedule(ScheduleRecord(id=schedule.id, spec=schedule.to_json(),
                                                     paused=paused, updated_at=now))

    def _restore_missing(self, stored: list[ScheduleRecord], now: float) -> None:
        """A scheduler with older code retires our schedules when it starts; put them back
        (without replaying: they count from now)."""
        present = {r.id for r in stored}
        for schedule_id, declared in self.app.periodic_schedules.items():
            if schedule_id not in present:
                log.info("schedule %s is declared in code but was missing; stored again",
                         schedule_id)
                self._store(replace(declared, anchor=now), paused=False, now=now)

    def _parse(self, record: ScheduleRecord) -> Schedule | None:
        if len(self._parsed) > 1000:
            self._parsed.clear()  # specs change on every resume; keep the cache bounded
        if record.spec not in self._parsed:
            try:
                self._parsed[record.spec] = Schedule.from_json(record.spec)
            except Exception as exc:
                log.error("schedule %s cannot be read (%s); it is not fired by %s",
                          record.id, exc, self.id)
                self._parsed[record.spec] = None
        return self._parsed[record.spec]

    # -- one pass ----------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> float:
        """Fire whatever is due at ``now`` (default: the app's clock); the seconds until the
        next fire time, at most ``max_sleep``."""
        now = self.app.clock() if now is None else now
        records = self.app.backend.get_schedules()
        self._restore_missing(records, now)
        starting, self._starting = self._starting, False
        wake = now + self.max_sleep
        for record in records:
            if record.paused or self._stopping.is_set():
                continue
            schedule = self._parse(record)
            if schedule is None:
                continue
            try:
                self._fire_due(schedule, record, now, starting)
            except (UnknownTask, ValidationError, ConfigurationError) as exc:
                # one schedule's problem must not stop the others; nothing was claimed, so a
                # scheduler whose code knows the task still fires it
                if (record.id, str(exc)) not in self._warned:
                    self._warned.add((record.id, str(exc)))
                    log.error("schedule %s cannot fire in %s: %s", record.id, self.id, exc)
                continue
            wake = min(wake, schedule.trigger.next_after(now))
        self._heartbeat(now)
        return max(0.0, min(wake - now, self.max_sleep))

    def _fire_due(self, schedule: Schedule, record: ScheduleRecord, now: float,
                  starting: bool) -> None:
        due, exempt = self._due(schedule, record, now, starting)
        state = ScheduleState.from_json(record.state)
        for fire in plan_fires(schedule, due, now, exempt):
            outcome, job = self._decide(schedule, fire, state, now)
            folded = fire.count - 1 if schedule.coalesce and not fire.missed else 0
            new_state = state.after(outcome, fire.time, now, job.id if job else None,
                                    count=fire.count if fire.missed else 1, coalesced=folded)
            if not claim(self.app, schedule, fire.time, new_state, [job] if job else []):
                # another scheduler got there first; the next pass reads what it did
                return
            state = new_state
            self._log(schedule, fire, outcome, job.id if job else None)

    def _due(self, schedule: Schedule, record: ScheduleRecord, now: float,
             starting: bool) -> tuple[list[float], bool]:
        """The fire times to handle, and whether the latest is exempt from misfire_grace."""
        due = due_fire_times(schedule.trigger, since(schedule, record), now)
        if not (starting and schedule.run_at_start):
            return due, False
        if not due:
            # run_at_start: the latest fire time runs now if it has not run (a new schedule,
            # say) — once, since it is claimed like any other fire time
            latest = schedule.trigger.previous(now)
            if latest is not None and (record.last_fire is None or latest > record.last_fire):
                due = [latest]
        return due, bool(due)

    def _decide(self, schedule: Schedule, fire: Fire, state: ScheduleState, now: float
                ) -> tuple[str, JobRecord | None]:
        """"missed", "skipped" or "enqueued" (with the job to enqueue) for one fire."""
        if fire.missed:
            return "missed", None
        if schedule.max_instances is not None:
            # finished jobs are dropped from the notes here, which keeps them short
            state.recent_jobs = live_jobs(self.app, state.recent_jobs)
            if len(state.recent_jobs) >= schedule.max_instances:
                return "skipped", None
        delay = self.rng.uniform(0, schedule.jitter) if schedule.jitter else 0.0
        return "enqueued", build_job(self.app, schedule, fire.time, now, delay)

    def _log(self, schedule: Schedule, fire: Fire, outcome: str, job_id: str | None) -> None:
        if outcome == "enqueued":
            log.debug("schedule %s: enqueued job %s for %.3f%s", schedule.id, job_id,
                      fire.time, f" ({fire.count} runs coalesced)" if fire.count > 1 else "")
        elif outcome == "missed":
            log.warning("schedule %s: %d run(s) up to %.3f missed (later than misfire_grace "
                        "%ss)", schedule.id, fire.count, fire.time, schedule.misfire_grace)
        else:
            log.info("schedule %s: run at %.3f skipped: %s earlier run(s) still queued or "
                     "running (max_instances)", schedule.id, fire.time, schedule.max_instances)

    # -- the registry ------------------------------------------------------------------------

    def _heartbeat(self, now: float, force: bool = False) -> None:
        if not force and self._last_heartbeat is not None and \
                now - self._last_heartbeat < self.heartbeat_interval:
            return
        self._last_heartbeat = now
        self.app.backend.heartbeat_worker(WorkerInfo(
            id=self.id, host=socket.gethostname(), pid=os.getpid(), kind="scheduler",
            started_at=self._started_at, last_heartbeat=now),
            ttl=max(self.heartbeat_interval * 3, 15.0))

    def _deregister(self) -> None:
        if self._last_heartbeat is None:
            return
        try:
            self.app.backend.remove_worker(self.id)
        except Exception:
            log.exception("could not deregister scheduler %s", self.id)


def _source(record: ScheduleRecord) -> str | None:
    try:
        data = json.loads(record.spec)
    except ValueError:
        return None
    return data.get("source") if isinstance(data, dict) else None
