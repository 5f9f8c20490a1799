"""``redis://`` and ``rediss://``: scale-out on Redis, one Lua script per state change.

Layout (every key starts with the prefix, ``conveyor:`` by default)::

    job:<id>               hash, one field per JobRecord attribute; absent field = None
    key:<key>              string -> id of the job holding an idempotency key
    ready:<queue>          zset, score -priority, member "<run_at:020.6f><id>": ZPOPMIN
                           yields (priority desc, run_at, id)
    sched:<queue>          zset of scheduled jobs by run_at, promoted into ready by claim
    running                zset of running jobs by lease expiry (requeue_expired)
    expires                zset of finished jobs by result_expires_at (prune)
    idx:qs:<q>:<s>         score-0 zset of the ids of queue q in status s; ids are UUIDv7,
                           so ZREVRANGEBYLEX lists newest first. Listing by status, queue or
                           neither merges these; ZCARD of each gives stats
    idx:task:<t>           score-0 zset of the ids of task t (listing by task)
    queues                 set of queue names ever used
    wake:<queue>           list of wake tokens, BLPOPed by idle workers
    watch:<id>, waiter:*, watching
                           wait_for_change registrations (see below)
    schedule:<id>, schedules
                           schedule hashes and their ids (score-0 zset, ordered by id)
    workers, workers:alive hash id -> WorkerInfo JSON; zset id -> heartbeat expiry
    layout                 the layout version of this prefix

Fields are stored as the strings Python writes (``repr`` of floats), so records read back
exactly; Lua never round-trips them through cjson (whose 14-digit numbers would move
timestamps). Every method is one round trip: one script call per batch for enqueue, claim,
finish and leases (sweeps, and batches over 1,000 jobs, loop in bounded calls). docs/redis.md
has the operator's view of this layout.

Wake-ups: scripts that make a job claimable LPUSH a token to ``wake:<queue>`` (trimmed to a
few), and ``wait_for_work`` BLPOPs those lists, with its timeout cut to when the earliest
scheduled job on its queues falls due. ``wait_for_change`` registers a private list in
``watch:<id>`` atomically with its version check, then BLPOPs it; every script that changes
the job pushes to the registered lists. Lists rather than pub/sub: the registration and the
check are one atomic step (no missed change), every waiter is woken, and the wait borrows a
pooled connection instead of opening a subscriber socket per call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InvalidTransition,
    JobNotFound,
    SchemaOutdated,
)
from .base import (
    AttemptError,
    JobFilter,
    JobRecord,
    LeaseState,
    Outcome,
    Page,
    ScheduleRecord,
    Transition,
    WorkerInfo,
)
from .redis_scripts import FIELDS, SCRIPTS

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

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def _num(value: float) -> str:
    """Exact text of a float (``repr`` round-trips; Redis and Lua parse it)."""
    return repr(float(value))


def _opt_float(value: str | None) -> float | None:
    return None if value is None else float(value)


def _opt_num(value: float | None) -> str | None:
    return None if value is None else _num(value)


def _encode_job(job: JobRecord) -> list[str]:
    """The enqueue script's arguments for one job: a presence mask, then one value per field
    in ``FIELDS`` order (positional: half the arguments of name/value pairs).

    Fields holding their default (no errors, history or headers, progress 0, no cancel
    request) are left out of the hash: at ~75 bytes per hash field that is 10% of a job.
    """
    values = [
        job.id, job.task, job.queue, job.args, job.kwargs, str(int(job.priority)), job.status,
        _num(job.run_at), _num(job.created_at), str(int(job.attempts)),
        str(int(job.max_attempts)), _opt_num(job.timeout), _opt_num(job.result_ttl), job.key,
        _opt_num(job.started_at), _opt_num(job.finished_at), job.worker_id,
        _opt_num(job.lease_expires_at), _num(job.progress) if job.progress else None,
        job.progress_message, job.result, _opt_num(job.result_expires_at),
        "1" if job.cancel_requested else None,
        _DUMPS([vars(e) for e in job.errors]) if job.errors else None,
        (_DUMPS([{"status": t.status, "at": t.at} for t in job.history])
         if job.history else None),
        _DUMPS(job.headers) if job.headers else None,
        str(int(job.version)),
    ]
    mask = "".join("0" if v is None else "1" for v in values)
    return [mask, *("" if v is None else v for v in values)]


def _decode_row(v: list[Any]) -> JobRecord:
    """A job from its HMGET row (``FIELDS`` order; None where a field is absent)."""
    (id_, task, queue, args, kwargs, priority, status, run_at, created_at, attempts,
     max_attempts, timeout, result_ttl, key, started_at, finished_at, worker_id,
     lease_expires_at, progress, progress_message, result, result_expires_at, cancel_requested,
     errors, history, headers, version) = v
    return JobRecord(
        id=id_, task=task, queue=queue, args=args, kwargs=kwargs, priority=int(priority),
        status=status, run_at=float(run_at), created_at=float(created_at),
        attempts=int(attempts), max_attempts=int(max_attempts), timeout=_opt_float(timeout),
        result_ttl=_opt_float(result_ttl), key=key, started_at=_opt_float(started_at),
        finished_at=_opt_float(finished_at), worker_id=worker_id,
        lease_expires_at=_opt_float(lease_expires_at),
        progress=float(progress) if progress else 0.0, progress_message=progress_message,
        result=result, result_expires_at=_opt_float(result_expires_at),
        cancel_requested=cancel_requested == "1",
        errors=[AttemptError(**e) for e in json.loads(errors)] if errors else [],
        history=[Transition(**t) for t in json.loads(history)] if history else [],
        headers=json.loads(headers) if headers else {}, version=int(version),
    )


def _maybe_row(v: list[Any]) -> JobRecord | None:
    return None if v[0] is None else _decode_row(v)


def _copy(job: JobRecord) -> JobRecord:
    # dataclasses.replace re-runs __init__ and cost 17 µs, as much as the rest of enqueue
    clone = object.__new__(JobRecord)
    clone.__dict__.update(job.__dict__)
    clone.errors, clone.history = list(job.errors), list(job.history)
    clone.headers = dict(job.headers)
    return clone


def _opt_text(value: str | None) -> str:
    """None travels as '' and a value as '=' + value, so '' itself stays representable."""
    return "" if value is None else "=" + value


class RedisBackend:
    """The Backend protocol on Redis (see the module docstring for the key layout).

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
        self._retry_for = float(options.pop("retry_for", 1.0))
        options.setdefault("socket_timeout", 5.0)
        options.setdefault("socket_connect_timeout", 2.0)
        options.setdefault("health_check_interval", 0)
        try:
            # redis-py's own retries are off: ours are bounded, logged once, and know which
            # scripts are safe to run twice
            self._pool = redis.ConnectionPool.from_url(
                clean, decode_responses=True, retry=Retry(NoBackoff(), 0), **options)
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL: {exc}") from exc
        kwargs = self._pool.connection_kwargs
        self._where = (f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
                       f"/{kwargs.get('db', 0)}")
        socket_timeout = kwargs.get("socket_timeout")
        # a blocking command must return before the socket read gives up on it
        self._block_max = 30.0 if socket_timeout is None else max(
            0.05, min(float(socket_timeout) - 1.0, float(socket_timeout) * 0.8))
        self._r = redis.Redis(connection_pool=self._pool)
        self._s: dict[str, Script] = {name: self._r.register_script(src)
                                      for name, src in SCRIPTS.items()}
        self._down = False
        self._down_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------------

    def _run(self, op: Callable[[bool], T]) -> T:
        """Run ``op`` (given whether this is a retry), retrying a lost connection briefly.

        Connection errors retry with backoff for ``retry_for`` seconds and then raise
        ``BackendUnavailable``; an outage is logged once, and its end once.
        """
        try:
            result = op(False)
        except (AuthenticationError, AuthorizationError) as exc:
            raise BackendUnavailable(f"Redis at {self._where} refused our credentials: {exc}",
                                     url=self._where) from exc
        except (RedisConnectionError, RedisTimeoutError) as exc:
            return self._retry(op, exc)
        except ResponseError as exc:
            raise self._response_error(exc) from exc
        except RedisError as exc:
            raise BackendError(f"Redis at {self._where} failed: {exc}") from exc
        if self._down:
            self._mark_up()
        return result

    def _retry(self, op: Callable[[bool], T], first: Exception) -> T:
        self._mark_down(first)
        deadline = time.monotonic() + self._retry_for
        delay = 0.05
        last = first
        while time.monotonic() + delay <= deadline:
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            try:
                result = op(True)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                last = exc
                continue
            except ResponseError as exc:
                raise self._response_error(exc) from exc
            except RedisError as exc:
                raise BackendError(f"Redis at {self._where} failed: {exc}") from exc
            self._mark_up()
            return result
        raise BackendUnavailable(f"Redis at {self._where} is unreachable: {last}",
                                 url=self._where) from last

    def _response_error(self, exc: ResponseError) -> BackendError:
        text = str(exc)
        if "CONVEYOR " in text:
            return BackendError(text.split("CONVEYOR ", 1)[1].split("script:")[0].strip())
        return BackendError(f"Redis at {self._where} refused a command: {text}")

    def _mark_down(self, exc: Exception) -> None:
        # idle pooled sockets that a restart closed need nothing from us: redis-py's pool
        # sees the EOF on checkout and reconnects, so they do not each log an outage
        with self._down_lock:
            if self._down:
                return
            self._down = True
        log.warning("lost the connection to Redis at %s (%s); retrying", self._where, exc)

    def _mark_up(self) -> None:
        with self._down_lock:
            if not self._down:
                return
            self._down = False
        log.info("connection to Redis at %s restored", self._where)

    def _call(self, script: str, args: list[str]) -> Any:
        s = self._s[script]
        return self._run(lambda _retrying: self._eval(s, args))

    def _eval(self, script: Script, args: list[str]) -> Any:
        """EVALSHA on a pooled connection, loading the script when the server lacks it.

        This skips the client's generic command path (response callbacks, observability
        hooks, event dispatch): 12 µs of a ~140 µs single enqueue. The connection handles
        its own socket errors (it disconnects); an error reply leaves it clean.
        """
        conn = self._pool.get_connection()
        try:
            conn.send_command("EVALSHA", script.sha, 0, *args)
            try:
                return conn.read_response()
            except NoScriptError:
                # a restarted or flushed server forgot the scripts
                conn.send_command("SCRIPT", "LOAD", script.script)
                script.sha = conn.read_response()
                conn.send_command("EVALSHA", script.sha, 0, *args)
                return conn.read_response()
        finally:
            self._pool.release(conn)

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
                f"the keys under prefix {self.prefix!r} on Redis {self._where} use layout "
                f"{stored}, this version of Conveyor reads layout {LAYOUT_VERSION}: run the "
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
                "maxmemory-policy noeviction (see docs/redis.md).", self._where, value)

    def migrate(self, check_only: bool = False) -> list[str]:
        # schema-less: layout 1 is the first, nothing to convert; check() stamps the layout
        return []

    def close(self) -> None:
        self._r.close()
        self._pool.disconnect()

    # -- jobs --------------------------------------------------------------------------------

    def enqueue(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        stored: list[JobRecord] = []
        for start in range(0, len(jobs), ENQUEUE_CHUNK):
            chunk = jobs[start:start + ENQUEUE_CHUNK]
            tail: list[str] = [str(len(chunk))]
            for job in chunk:
                tail += _encode_job(job)
            reply = self._run(self._enqueue_op(tail))
            for job, got in zip(chunk, reply, strict=True):
                stored.append(_copy(job) if got == 0 else _decode_row(got))
        return stored

    def _enqueue_op(self, tail: list[str]) -> Callable[[bool], Any]:
        script, prefix = self._s["enqueue"], self._p
        # a retried call tells the script so that its own first write is not a duplicate id
        return lambda retrying: self._eval(script, [prefix, "1" if retrying else "0", *tail])

    def claim(self, queues: Sequence[str], limit: int, worker_id: str, lease: float,
              now: float) -> list[JobRecord]:
        if not queues or limit <= 0:
            return []
        reply = self._call("claim", [self._p, _num(now), _num(now + lease), worker_id,
                                     str(min(int(limit), MAX_CLAIM)), *queues])
        return [_decode_row(row) for row in reply]

    def extend_leases(self, leases: Sequence[tuple[str, int]], lease: float,
                      now: float) -> dict[str, LeaseState]:
        if not leases:
            return {}
        args = [self._p, _num(now + lease)]
        for job_id, attempt in leases:
            args += (job_id, str(int(attempt)))
        reply = self._call("extend", args)
        return {job_id: state for (job_id, _), state in zip(leases, reply, strict=True)}

    def set_progress(self, job_id: str, attempt: int, percent: float, message: str | None,
                     now: float) -> LeaseState:
        return cast(LeaseState, self._call("progress", [
            self._p, job_id, str(int(attempt)), _num(percent), _opt_text(message)]))

    def finish(self, outcomes: Sequence[Outcome], now: float) -> list[bool]:
        if not outcomes:
            return []
        args = [self._p, _num(now), str(len(outcomes))]
        for o in outcomes:
            args += (o.job_id, str(int(o.attempt)), o.status, _opt_text(o.result),
                     "" if o.result_expires_at is None else _num(o.result_expires_at),
                     "" if o.error is None else _DUMPS(vars(o.error)),
                     "" if o.run_at is None else _num(o.run_at))
        return [bool(x) for x in self._call("finish", args)]

    def cancel(self, job_id: str, now: float) -> JobRecord:
        return self._change("cancel", job_id, now)

    def retry(self, job_id: str, now: float) -> JobRecord:
        return self._change("retry", job_id, now)

    def _change(self, script: str, job_id: str, now: float) -> JobRecord:
        row = self._call(script, [self._p, job_id, _num(now)])
        if not row:
            raise JobNotFound(f"no job with id {job_id!r}", job_id=job_id)
        if row[0] == 0:
            _, holder, key = row
            raise InvalidTransition(f"job {job_id} cannot be retried: job {holder} holds its "
                                    f"key {key!r}", job_id=job_id)
        return _decode_row(row)

    def delete(self, job_id: str) -> bool:
        return bool(self._call("delete", [self._p, job_id]))

    def get(self, job_id: str) -> JobRecord | None:
        key = self._p + "job:" + job_id
        return _maybe_row(self._run(lambda _r: self._r.hmget(key, FIELDS)))

    def stats(self) -> dict[str, dict[str, int]]:
        flat = self._call("stats", [self._p])
        counts: dict[str, dict[str, int]] = {}
        for i in range(0, len(flat), 3):
            counts.setdefault(flat[i], {})[flat[i + 1]] = int(flat[i + 2])
        return counts

    def requeue_expired(self, now: float) -> list[str]:
        recovered: list[str] = []
        while True:
            reply = self._call("requeue", [self._p, _num(now), str(SWEEP_BATCH)])
            more = bool(reply) and not isinstance(reply[-1], str)
            recovered += reply[:-1] if more else reply
            if not more:
                return recovered

    def prune(self, now: float) -> int:
        total = 0
        while True:
            pruned, examined = self._call("prune", [self._p, _num(now), str(SWEEP_BATCH)])
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
            wait = min(remaining, self._block_max)
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
                return _maybe_row(got)
            registered = True
            if self._blpop([waiter], min(remaining, self._block_max)) is not None:
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

        return _maybe_row(self._run(final))

    def _blpop(self, keys: list[str], wait: float) -> Any:
        # Redis reads a timeout under 1 ms as 0, which would block forever
        timeout = max(wait, 0.01)
        return self._run(lambda _retrying: self._r.blpop(keys, timeout=timeout))

    # -- schedules ---------------------------------------------------------------------------

    def put_schedule(self, schedule: ScheduleRecord) -> None:
        self._call("put_schedule", [self._p, schedule.id, schedule.spec,
                                    "1" if schedule.paused else "0", _num(schedule.updated_at),
                                    schedule.state])

    def get_schedules(self) -> list[ScheduleRecord]:
        schedules = []
        for flat in self._call("get_schedules", [self._p]):
            it = iter(flat)
            h: dict[str, str] = dict(zip(it, it, strict=True))
            schedules.append(ScheduleRecord(
                id=h["id"], spec=h["spec"], paused=h.get("paused") == "1",
                last_fire=_opt_float(h.get("last_fire")), next_fire=_opt_float(h.get("next_fire")),
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
            tail += _encode_job(job)
        head = [self._p, schedule_id, _num(fire_time),
                "" if next_fire is None else _num(next_fire), state]
        s = self._s["claim_fire"]
        return bool(self._run(lambda retrying: self._eval(s, [*head, "1" if retrying else "0",
                                                               *tail])))

    def update_schedule_state(self, schedule_id: str, next_fire: float | None,
                              state: str) -> None:
        self._call("update_schedule", [self._p, schedule_id,
                                       "" if next_fire is None else _num(next_fire), state])

    # -- workers -----------------------------------------------------------------------------

    def heartbeat_worker(self, info: WorkerInfo, ttl: float) -> None:
        def op(_retrying: bool) -> None:
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self._p + "workers", info.id, info.to_json())
            pipe.zadd(self._p + "workers:alive", {info.id: info.last_heartbeat + ttl})
            pipe.execute()

        self._run(op)

    def list_workers(self, now: float) -> list[WorkerInfo]:
        found = self._call("list_workers", [self._p, _num(now),
                                            _num(now - WORKER_FORGET_AFTER)])
        workers = [WorkerInfo.from_json(text) for text in found if text]
        return sorted(workers, key=lambda w: w.id)

    def remove_worker(self, worker_id: str) -> None:
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
        jobs = [_decode_row(row) for row in reply[1:] if row[0] is not None]
        return Page(jobs, reply[0] or None)
