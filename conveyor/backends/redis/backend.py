""":class:`RedisBackend`: the Backend protocol's methods, most of them one script call (see the
package docstring for the key layout)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ...errors import (
    BackendError,
    ConfigurationError,
    InvalidTransition,
    JobNotFound,
    SchemaOutdated,
)
from ..base import JobFilter, JobRecord, LeaseState, Outcome, Page, ScheduleRecord, WorkerInfo
from .client import Client
from .codec import (
    copy_job,
    decode_handed,
    decode_row,
    dumps,
    encode_job,
    maybe_row,
    num,
    opt_float,
    opt_text,
)
from .scripts import FIELDS

log = logging.getLogger("conveyor.backends.redis")

T = TypeVar("T")

#: the layout this code reads and writes, stored under ``<prefix>:layout``
LAYOUT_VERSION = "1"
#: jobs per script call when enqueueing a large batch (bounds how long Redis is busy)
ENQUEUE_CHUNK = 1000
#: claims beyond this many per call would make one script hold Redis too long
MAX_CLAIM = 1000
#: ids examined per requeue/prune script call
SWEEP_BATCH = 500
#: a worker unseen for this long is dropped from the registry
WORKER_FORGET_AFTER = 86400.0


class RedisBackend:
    """The Backend protocol on Redis (see the package docstring for the key layout).

    Options: ``prefix`` (also ``?prefix=`` in the URL; default ``conveyor``),
    ``socket_timeout`` (5 s), ``socket_connect_timeout`` (2 s), ``retry_for`` (how long a call
    retries a lost connection before raising ``BackendUnavailable``, 1 s), ``max_connections``;
    others go to redis-py's ``ConnectionPool``.
    """

    name = "redis"

    def __init__(self, url: str, **options: Any) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigurationError(f"not a Redis URL: {url!r}")
        query = parse_qsl(parts.query, keep_blank_values=True)
        url_prefix = next((v for k, v in query if k == "prefix"), None)
        prefix = str(options.pop("prefix", None) or url_prefix or "conveyor")
        if not prefix or any(c.isspace() for c in prefix):
            raise ConfigurationError(f"invalid Redis key prefix {prefix!r}")
        self.prefix = prefix
        self._p = prefix + ":"
        clean = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query
                                                           if k != "prefix"])))
        self._client = Client(clean, options)
        self._r = self._client.redis  # for plain commands and pipelines

    def _run(self, op: Callable[[bool], T]) -> T:
        """Run ``op`` (given whether this is a retry), retrying a lost connection briefly
        (see :meth:`Client.run`)."""
        return self._client.run(op)

    def _call(self, script: str, args: list[str]) -> Any:
        return self._client.call(script, args)

    # -- lifecycle ---------------------------------------------------------------------------

    def check(self) -> None:
        layout_key = self._p + "layout"

        def probe(_retrying: bool) -> str | None:
            self._r.ping()
            self._r.set(layout_key, LAYOUT_VERSION, nx=True)
            return cast(str | None, self._r.get(layout_key))

        stored = self._run(probe)
        if stored != LAYOUT_VERSION:
            raise SchemaOutdated(
                f"the keys under prefix {self.prefix!r} on Redis {self._client.where} use "
                f"layout {stored}, this version of Conveyor reads layout {LAYOUT_VERSION}: run the "
                f"Conveyor version that wrote them, or use another prefix")
        self._warn_if_evicting()

    def _warn_if_evicting(self) -> None:
        try:
            policy = self._run(lambda _r: self._r.config_get("maxmemory-policy"))
        except BackendError as exc:
            # managed services often disable CONFIG; say we could not tell, once
            log.info("could not read Redis maxmemory-policy (%s); make sure it is noeviction",
                     exc)
            return
        value = (policy or {}).get("maxmemory-policy")
        if value and value != "noeviction":
            log.warning(
                "Redis at %s has maxmemory-policy=%s: when it reaches maxmemory it evicts "
                "keys, and Conveyor's jobs, results and indexes can silently disappear. Set "
                "maxmemory-policy noeviction (see docs/redis.md).", self._client.where, value)

    def migrate(self, check_only: bool = False) -> list[str]:
        # schema-less: layout 1 is the first, nothing to convert; check() stamps the layout
        return []

    def close(self) -> None:
        self._client.close()

    # -- jobs --------------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        stored: list[JobRecord] = []
        for start in range(0, len(jobs), ENQUEUE_CHUNK):
            chunk = jobs[start:start + ENQUEUE_CHUNK]
            tail: list[str] = [str(len(chunk))]
            for job in chunk:
                tail += encode_job(job)
            reply = self._run(self._enqueue_op(tail))
            for job, got in zip(chunk, reply, strict=True):
                stored.append(copy_job(job) if got == 0 else decode_row(got))
        return stored

    def _enqueue_op(self, tail: list[str]) -> Callable[[bool], Any]:
        script, prefix = self._client.scripts["enqueue"], self._p
        # a retried call tells the script so that its own first write is not a duplicate id
        return lambda retrying: self._client.eval(script, [prefix, "1" if retrying else "0", *tail])

    def claim(self, queues: Sequence[str], limit: int, worker_id: str, lease: float,
              now: float, wait: float = 0.0) -> list[JobRecord]:
        if not queues or limit <= 0:
            return []
        args = [self._p, num(now), num(now + lease), worker_id, str(min(int(limit), MAX_CLAIM)),
                num(wait) if wait > 0 else "", num(lease), *queues]
        reply = self._call("claim", args)
        if not reply or reply[0] != "idle":
            return [decode_row(row) for row in reply]
        # registered as idle: an enqueue hands us its job through our handoff list (see
        # hand_off in lua/helpers.lua); a wake token means work arrived another way
        timeout = min(wait, self._client.block_max)
        if reply[1]:
            timeout = min(timeout, float(reply[1]) - now)
        handoff = self._p + "handoff:" + worker_id
        got = None
        if timeout > 0:
            got = self._blpop([handoff, *(self._p + "wake:" + q for q in queues)], timeout)
        if got is not None and got[0] == handoff:
            # the rest of the list (and our registration) go with the next claim
            return [decode_row(decode_handed(got[1]))]
        # woken by a token, or the wait is over: the caller's next claim takes what is due
        # and renews or ends the registration in the same atomic step, so there is no moment
        # in which this worker, still waiting, is not registered
        return []

    def extend_leases(self, leases: Sequence[tuple[str, int]], lease: float,
                      now: float) -> dict[str, LeaseState]:
        if not leases:
            return {}
        args = [self._p, num(now + lease)]
        for job_id, attempt in leases:
            args += (job_id, str(int(attempt)))
        reply = self._call("extend", args)
        return {job_id: state for (job_id, _), state in zip(leases, reply, strict=True)}

    def set_progress(self, job_id: str, attempt: int, percent: float, message: str | None,
                     now: float) -> LeaseState:
        return cast(LeaseState, self._call("progress", [
            self._p, job_id, str(int(attempt)), num(percent), opt_text(message)]))

    def finish(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        if not outcomes:
            return []
        args = [self._p, num(now), str(len(outcomes))]
        for o in outcomes:
            args += (o.job_id, str(int(o.attempt)), o.status, opt_text(o.result),
                     "" if o.result_expires_at is None else num(o.result_expires_at),
                     "" if o.error is None else dumps(vars(o.error)),
                     "" if o.run_at is None else num(o.run_at))
        return [bool(x) for x in self._call("finish", args)]

    def cancel(self, job_id: str, now: float) -> JobRecord:
        return self._change("cancel", job_id, now)

    def retry(self, job_id: str, now: float) -> JobRecord:
        return self._change("retry", job_id, now)

    def _change(self, script: str, job_id: str, now: float) -> JobRecord:
        row = self._call(script, [self._p, job_id, num(now)])
        if not row:
            raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
        if row[0] == 0:
            _, holder, key = row
            raise InvalidTransition(f"job {job_id} cannot be retried: job {holder} holds its "
                                    f"key {key!r}", job_id=job_id)
        return decode_row(row)

    def delete(self, job_id: str) -> bool:
        return bool(self._call("delete", [self._p, job_id]))

    def get(self, job_id: str) -> JobRecord | None:
        key = self._p + "job:" + job_id
        return maybe_row(self._run(lambda _r: self._r.hmget(key, FIELDS)))

    def stats(self) -> dict[str, dict[str, int]]:
        flat = self._call("stats", [self._p])
        counts: dict[str, dict[str, int]] = {}
        for i in range(0, len(flat), 3):
            counts.setdefault(flat[i], {})[flat[i + 1]] = int(flat[i + 2])
        return counts

    def requeue_expired(self, now: float) -> list[str]:
        recovered: list[str] = []
        while True:
            reply = self._call("requeue", [self._p, num(now), str(SWEEP_BATCH)])
            more = bool(reply) and not isinstance(reply[-1], str)
            recovered += reply[:-1] if more else reply
            if not more:
                return recovered

    def prune(self, now: float) -> int:
        total = 0
        while True:
            pruned, examined = self._call("prune", [self._p, num(now), str(SWEEP_BATCH)])
            total += int(pruned)
            if int(examined) < SWEEP_BATCH:
                return total

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if not queues:
            time.sleep(max(timeout, 0.0))
            return
        peek_args = [self._p, *queues]
        wake_keys = [self._p + "wake:" + q for q in queues]
        while True:
            earliest = self._call("peek", peek_args)
            if earliest == "ready":
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            wait = min(remaining, self._client.block_max)
            if earliest is not None:
                due_in = float(earliest) - time.time()
                if due_in <= 0:
                    return
                wait = min(wait, due_in)
            got = self._blpop(wake_keys, wait)
            if got is not None:
                return
            if earliest is not None and time.time() >= float(earliest):
                return

    def wait_for_change(self, job_id: str, version: int, timeout: float) -> JobRecord | None:
        deadline = time.monotonic() + timeout
        waiter = self._p + "waiter:" + uuid.uuid4().hex
        watch_args = [self._p, job_id, str(int(version)), waiter, ""]
        registered = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            watch_args[4] = str(int((remaining + 10) * 1000))
            got = self._call("watch", watch_args)
            if got == 0:
                return None
            if isinstance(got, list):
                return maybe_row(got)
            registered = True
            if self._blpop([waiter], min(remaining, self._client.block_max)) is not None:
                # the notifier dropped our registration with its token
                registered = False
        job_key = self._p + "job:" + job_id

        def final(_retrying: bool) -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            if registered:
                pipe.srem(self._p + "watch:" + job_id, waiter)
                pipe.delete(waiter)
            pipe.hmget(job_key, FIELDS)
            return cast(list[Any], pipe.execute()[-1])

        return maybe_row(self._run(final))

    def _blpop(self, keys: list[str], wait: float) -> Any:
        # Redis reads a timeout under 1 ms as 0, which would block forever
        timeout = max(wait, 0.01)
        return self._run(lambda _retrying: self._client.command("BLPOP", *keys, timeout))

    # -- schedules ---------------------------------------------------------------------------

    def put_schedule(self, schedule: ScheduleRecord) -> None:
        self._call("put_schedule", [self._p, schedule.id, schedule.spec,
                                    "1" if schedule.paused else "0", num(schedule.updated_at),
                                    schedule.state])

    def get_schedules(self) -> list[ScheduleRecord]:
        schedules = []
        for flat in self._call("get_schedules", [self._p]):
            it = iter(flat)
            h: dict[str, str] = dict(zip(it, it, strict=True))
            schedules.append(ScheduleRecord(
                id=h["id"], spec=h["spec"], paused=h.get("paused") == "1",
                last_fire=opt_float(h.get("last_fire")), next_fire=opt_float(h.get("next_fire")),
                state=h.get("state", "{}"), updated_at=float(h.get("updated_at", 0.0))))
        return schedules

    def delete_schedule(self, schedule_id: str) -> bool:
        def op(_retrying: bool) -> bool:
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self._p + "schedule:" + schedule_id)
            pipe.zrem(self._p + "schedules", schedule_id)
            return bool(pipe.execute()[0])

        return self._run(op)

    def set_schedule_paused(self, schedule_id: str, paused: bool) -> bool:
        return bool(self._call("set_paused", [self._p, schedule_id, "1" if paused else "0"]))

    def claim_fire(self, schedule_id: str, fire_time: float, next_fire: float | None,
                   state: str, jobs: Sequence[JobRecord]) -> bool:
        tail: list[str] = [str(len(jobs))]
        for job in jobs:
            tail += encode_job(job)
        head = [self._p, schedule_id, num(fire_time),
                "" if next_fire is None else num(next_fire), state]
        s = self._client.scripts["claim_fire"]
        return bool(self._run(lambda retrying: self._client.eval(
            s, [*head, "1" if retrying else "0", *tail])))

    def update_schedule_state(self, schedule_id: str, next_fire: float | None,
                              state: str) -> None:
        self._call("update_schedule", [self._p, schedule_id,
                                       "" if next_fire is None else num(next_fire), state])

    # -- workers -----------------------------------------------------------------------------

    def heartbeat_worker(self, info: WorkerInfo, ttl: float) -> None:
        def op(_retrying: bool) -> None:
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self._p + "workers", info.id, info.to_json())
            pipe.zadd(self._p + "workers:alive", {info.id: info.last_heartbeat + ttl})
            pipe.execute()

        self._run(op)

    def list_workers(self, now: float) -> list[WorkerInfo]:
        found = self._call("list_workers", [self._p, num(now),
                                            num(now - WORKER_FORGET_AFTER)])
        workers = [WorkerInfo.from_json(text) for text in found if text]
        return sorted(workers, key=lambda w: w.id)

    def remove_worker(self, worker_id: str) -> None:
        # a claim of nothing ends the worker's idle registration and collects the jobs an
        # enqueue handed it after its last claim: they go back to the queue, attempt uncounted
        now = time.time()
        handed = self._call("claim", [self._p, num(now), num(now), worker_id, "0", "", "0"])
        self.finish([Outcome(job.id, job.attempts, "queued")
                     for job in map(decode_row, handed)], now)

        def op(_retrying: bool) -> None:
            pipe = self._r.pipeline(transaction=True)
            pipe.hdel(self._p + "workers", worker_id)
            pipe.zrem(self._p + "workers:alive", worker_id)
            pipe.execute()

        self._run(op)

    # -- listing ---------------------------------------------------------------------------

    # last in the class: a method named ``list`` shadows the builtin for annotations below it
    def list(self, filter: JobFilter, limit: int, cursor: str | None = None) -> Page:
        if limit <= 0:
            return Page([], None)
        reply = self._call("list", [self._p, cursor or "", str(int(limit)),
                                    filter.status or "", filter.queue or "", filter.task or ""])
        jobs = [decode_row(row) for row in reply[1:] if row[0] is not None]
        return Page(jobs, reply[0] or None)
