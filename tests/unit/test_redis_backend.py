"""Redis-specific behaviour of ``RedisBackend``; the shared contract is tests/conformance.

Uses database 12 of the shared server with a unique key prefix per test (so a concurrent
run's FLUSHDB of another index cannot interfere), and private ``redis-server`` processes for
what must not touch the shared one: CONFIG changes, command statistics and restarts.
"""

from __future__ import annotations

import copy
import logging
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.backends import open_backend
from conveyor.backends.base import AttemptError, JobFilter, JobRecord, Outcome
from conveyor.backends.memory import MemoryBackend
from conveyor.errors import (
    BackendUnavailable,
    ConfigurationError,
    InvalidTransition,
    JobNotFound,
)
from conveyor.ids import new_job_id

redis = pytest.importorskip("redis")
from conveyor.backends.redis import RedisBackend  # noqa: E402

pytestmark = pytest.mark.redis


from servers import IN_CI, REDIS_HOST, REDIS_PORT, require_server  # noqa: E402

DB = 12
NOW = 1_795_762_559.633279  # full microsecond precision: times must read back bit for bit
LEASE = 30.0


def make(queue: str = "default", *, status: str = "queued", run_at: float = NOW,
         key: str | None = None, task: str = "t", max_attempts: int = 3) -> JobRecord:
    return JobRecord(id=new_job_id(), task=task, queue=queue, status=status, run_at=run_at,
                     created_at=NOW, key=key, max_attempts=max_attempts)


def _need_redis_server_binary() -> None:
    if shutil.which("redis-server") is None:
        message = "the redis-server binary is not on PATH"
        if IN_CI:
            pytest.fail(f"{message}; CI must run the Redis suite, not skip it")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own, on a free port, with its files in a temp dir."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.port = _free_port()
        self.directory = directory
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 5
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def url() -> Iterator[str]:
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{DB}?prefix={prefix}"
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=DB)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def backend(url: str) -> Iterator[RedisBackend]:
    store = RedisBackend(url)
    yield store
    store.close()


@pytest.fixture
def raw(url: str) -> Iterator[redis.Redis]:
    """A plain client on the test database, for looking at the keys directly."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=DB, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    _need_redis_server_binary()
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


# -- configuration -------------------------------------------------------------------------------

def test_url_parsing_takes_db_password_tls_and_prefix() -> None:
    # nothing connects until the first call, so no server is needed here
    plain = RedisBackend("redis://:s3cret@cache.internal:6380/9?prefix=app1")
    kwargs = plain._client.pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.internal", 6380, 9)
    assert kwargs["password"] == "s3cret" and plain.prefix == "app1"
    assert "prefix" not in kwargs and "s3cret" not in plain._client.where

    tls = open_backend("rediss://user:pw@redis.example:6390/3", prefix="other")
    assert isinstance(tls, RedisBackend)
    tls_kwargs = tls._client.pool.connection_kwargs
    assert tls._client.pool.connection_class is redis.SSLConnection
    assert (tls_kwargs["username"], tls_kwargs["password"], tls_kwargs["db"]) == ("user", "pw", 3)
    assert tls.prefix == "other"

    default = RedisBackend("redis://localhost")
    assert default.prefix == "conveyor" and default._client.pool.connection_kwargs.get("db", 0) == 0
    assert default._client.pool.connection_kwargs["socket_timeout"] == 5.0
    with pytest.raises(ConfigurationError):
        RedisBackend("memory://")


def test_two_prefixes_do_not_see_each_other(url: str) -> None:
    a = RedisBackend(url)
    b = RedisBackend(url, prefix=a.prefix + "-b")  # the option wins over ?prefix=
    try:
        job = make(key="shared-key")
        a.enqueue([job])
        assert b.get(job.id) is None
        assert b.list(JobFilter(), 10).jobs == [] and b.stats() == {}
        assert b.claim(["default"], 10, "w", LEASE, NOW) == []
        [other] = b.enqueue([make(key="shared-key")])  # the key is free under b's prefix
        assert other.id != job.id
        assert [j.id for j in a.list(JobFilter(), 10).jobs] == [job.id]
    finally:  # b's prefix extends a's, so the fixture cleans both
        a.close()
        b.close()


# -- connection loss ------------------------------------------------------------------------------

def test_a_closed_port_raises_backend_unavailable_quickly_and_logs_once(
        caplog: pytest.LogCaptureFixture) -> None:
    store = RedisBackend(f"redis://127.0.0.1:{_free_port()}/0")
    caplog.set_level(logging.WARNING, logger="conveyor.backends.redis")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        store.get(new_job_id())
    assert time.monotonic() - started < 3
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    with pytest.raises(BackendUnavailable):
        store.enqueue([make()])
    warnings = [r for r in caplog.records if r.name == "conveyor.backends.redis"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def busy_pool(store: RedisBackend, threads: int = 4) -> None:
    """Use ``threads`` pooled connections at once."""
    workers = [threading.Thread(target=store.wait_for_work, args=(["idle"], 0.1))
               for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()


def test_survives_a_redis_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _need_redis_server_binary()
    server = PrivateRedis(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    store = RedisBackend(server.url, retry_for=0.3)
    try:
        caplog.set_level(logging.INFO, logger="conveyor.backends.redis")
        first = make()
        store.enqueue([first])
        assert store.claim(["default"], 1, "w", LEASE, NOW)[0].id == first.id
        busy_pool(store)  # several pooled connections, all of which the restart makes stale

        server.kill()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            store.enqueue([make()])
        assert time.monotonic() - started < 3

        server.start()  # same port and directory: the AOF brings the data back
        second = make()
        store.enqueue([second])  # pooled sockets are dead and the script cache is empty
        assert store.finish([Outcome(first.id, 1, "succeeded", result="1")], NOW) == [True]
        assert store.claim(["default"], 1, "w", LEASE, NOW)[0].id == second.id
        busy_pool(store)  # a worker's threads: each takes a connection from the pool
        assert store.get(first.id).status == "succeeded"
        messages = [r.getMessage() for r in caplog.records]
        assert sum("lost the connection" in m for m in messages) == 1, messages
        assert sum("restored" in m for m in messages) == 1, messages
    finally:
        store.close()
        server.kill()


def test_a_retried_enqueue_returns_its_own_first_write(backend: RedisBackend) -> None:
    # the script ran but the reply was lost: the retry must not report a duplicate id
    from conveyor.backends.redis.codec import encode_job

    job = make(key="once")
    tail = ["1", *encode_job(job)]
    assert backend._enqueue_op(tail)(False) == [0]
    [row] = backend._enqueue_op(tail)(True)
    assert row[0] == job.id
    assert sum(backend.stats()["default"].values()) == 1


# -- layout --------------------------------------------------------------------------------------

def test_listing_stats_and_sweeps_never_scan_the_keyspace(private: PrivateRedis) -> None:
    store = RedisBackend(private.url)
    client = redis.Redis(port=private.port)
    try:
        jobs = [make(queue=q, task=t) for q in ("a", "b") for t in ("x", "y") for _ in range(5)]
        store.enqueue(jobs)
        store.claim(["a"], 3, "w", LEASE, NOW)
        client.config_resetstat()
        for f in (JobFilter(), JobFilter(status="queued"), JobFilter(queue="a"),
                  JobFilter(task="x"), JobFilter(status="running", queue="a", task="y")):
            page = store.list(f, limit=4)
            while page.cursor:
                page = store.list(f, limit=4, cursor=page.cursor)
        store.stats()
        store.requeue_expired(NOW + LEASE + 1)
        store.prune(NOW + 10**6)
        store.list_workers(NOW)
        stats = client.info("commandstats")
        assert not {"cmdstat_scan", "cmdstat_keys"} & set(stats), sorted(stats)
    finally:
        client.flushall()
        client.close()
        store.close()


def test_prune_and_delete_leave_no_trace(backend: RedisBackend, raw: redis.Redis) -> None:
    done, gone = make(key="k1"), make(status="scheduled", run_at=NOW + 60)
    backend.enqueue([done, gone])
    backend.claim(["default"], 1, "w", LEASE, NOW)
    backend.finish([Outcome(done.id, 1, "succeeded", result="1", result_expires_at=NOW + 1)],
                   NOW)
    assert backend.prune(NOW + 2) == 1
    assert backend.delete(gone.id) is True
    for key in raw.scan_iter(match=f"{backend.prefix}:*"):
        kind = raw.type(key)
        if kind == "zset":
            members = raw.zrange(key, 0, -1)
            assert not any(done.id in m or gone.id in m for m in members), key
        assert done.id not in key and gone.id not in key and "k1" not in key
    assert backend.stats() == {} and backend.list(JobFilter(), 10).jobs == []


def test_times_read_back_bit_for_bit(backend: RedisBackend) -> None:
    job = make()
    job.result_ttl = 0.1 + 0.2  # 0.30000000000000004: 17 significant digits
    backend.enqueue([job])
    now = NOW + 0.000001
    [got] = backend.claim(["default"], 1, "w", 12.345678901, now)
    assert got.started_at == now and got.lease_expires_at == now + 12.345678901
    backend.cancel(job.id, now)
    backend.requeue_expired(now + 100)
    got = backend.get(job.id)
    assert got.status == "cancelled" and got.result_expires_at == (now + 100) + job.result_ttl
    assert got.history[-1].at == now + 100


# -- waiting -------------------------------------------------------------------------------------

def test_wait_for_work_wakes_when_a_scheduled_job_falls_due(backend: RedisBackend) -> None:
    backend.enqueue([make(queue="later", status="scheduled", run_at=time.time() + 0.3)])
    started = time.monotonic()
    waits = 0
    while not backend.claim(["later"], 1, "w", LEASE, time.time()):
        # the enqueue's own wake token may return the first wait early (it lets a sleeping
        # worker shorten its timer); after that the wait lasts until the job is due
        backend.wait_for_work(["later"], timeout=5)
        waits += 1
        assert waits <= 3, "wait_for_work is polling"
    assert 0.25 <= time.monotonic() - started < 2


def register_idle(backend: RedisBackend, worker: str, free: int) -> None:
    """What a waiting claim does before it blocks, without the blocking: a worker that
    registers as idle and then dies (or is slow to come back)."""
    now = time.time()
    reply = backend._call("claim", [backend._p, repr(now), repr(now + LEASE), worker, str(free),
                                    "5.0", repr(LEASE), "default"])
    assert reply[0] == "idle"


def test_an_enqueue_hands_its_job_to_an_idle_worker_up_to_its_free_slots(
        backend: RedisBackend, raw: redis.Redis) -> None:
    register_idle(backend, "w", free=2)
    first, second, third = make(), make(), make()
    for job in (first, second, third):
        backend.enqueue([job])
    assert [backend.get(j.id).status for j in (first, second, third)] == \
        ["running", "running", "queued"]
    assert backend.get(first.id).worker_id == "w"
    # what the worker has not popped yet comes with its next claim, then the queue
    claimed = backend.claim(["default"], 3, "w", LEASE, time.time())
    assert [j.id for j in claimed] == [first.id, second.id, third.id]
    assert not raw.exists(f"{backend.prefix}:handoff:w", f"{backend.prefix}:idler:w")
    assert raw.llen(f"{backend.prefix}:idle:default") == 0


def test_a_job_handed_to_a_worker_that_died_waiting_runs_after_the_lease_uncounted(
        backend: RedisBackend) -> None:
    register_idle(backend, "dead", free=1)
    job = make(max_attempts=1)  # no retries: a counted attempt would fail it unrun
    backend.enqueue([job])
    held = backend.get(job.id)
    assert (held.status, held.worker_id) == ("running", "dead")
    assert backend.requeue_expired(time.time()) == []
    assert backend.requeue_expired(held.lease_expires_at + 1) == [job.id]
    back = backend.get(job.id)
    assert (back.status, back.attempts, back.errors) == ("queued", 0, [])
    [again] = backend.claim(["default"], 1, "alive", LEASE, time.time())
    assert (again.id, again.attempts) == (job.id, 1)


def test_a_job_its_worker_took_before_dying_counts_the_lost_attempt(
        backend: RedisBackend, raw: redis.Redis) -> None:
    register_idle(backend, "taker", free=1)
    job = make(max_attempts=1)
    backend.enqueue([job])
    assert raw.lpop(f"{backend.prefix}:handoff:taker")  # what the worker's BLPOP does
    backend.requeue_expired(backend.get(job.id).lease_expires_at + 1)
    lost = backend.get(job.id)
    assert (lost.status, lost.errors[0].reason) == ("failed", "worker_lost")


def test_a_stopping_worker_gives_back_what_it_was_handed_and_not_taken(
        backend: RedisBackend) -> None:
    register_idle(backend, "stopping", free=2)
    job = make()
    backend.enqueue([job])
    backend.remove_worker("stopping")
    back = backend.get(job.id)
    assert (back.status, back.attempts, back.worker_id) == ("queued", 0, None)
    later = make()
    backend.enqueue([later])  # no registration left to hand it to
    assert backend.get(later.id).status == "queued"
    claimed = backend.claim(["default"], 2, "next", LEASE, time.time())
    assert sorted((j.id, j.attempts) for j in claimed) == [(job.id, 1), (later.id, 1)]


def test_an_expired_idle_registration_gets_no_job(backend: RedisBackend,
                                                  raw: redis.Redis) -> None:
    register_idle(backend, "gone", free=4)
    raw.hset(f"{backend.prefix}:idler:gone", "until", repr(time.time() - 1))
    job = make()
    backend.enqueue([job])
    assert backend.get(job.id).status == "queued"
    assert raw.llen(f"{backend.prefix}:idle:default") == 0


def test_a_handed_job_whose_lease_ran_out_is_not_returned_to_its_old_worker(
        backend: RedisBackend) -> None:
    register_idle(backend, "slow", free=1)
    job = make()
    backend.enqueue([job])
    backend.requeue_expired(backend.get(job.id).lease_expires_at + 1)
    [other] = backend.claim(["default"], 1, "other", LEASE, time.time())
    assert other.id == job.id
    assert backend.claim(["default"], 1, "slow", LEASE, time.time()) == []


def test_wait_for_change_wakes_every_waiter_from_another_client(url: str) -> None:
    waiters = [RedisBackend(url) for _ in range(3)]
    writer = RedisBackend(url)
    try:
        job = make()
        writer.enqueue([job])
        got: list[float] = []

        def wait(store: RedisBackend) -> None:
            changed = store.wait_for_change(job.id, 0, timeout=5)
            assert changed is not None and changed.status == "running"
            got.append(time.monotonic())

        threads = [threading.Thread(target=wait, args=(s,)) for s in waiters]
        for thread in threads:
            thread.start()
        time.sleep(0.2)
        changed_at = time.monotonic()
        writer.claim(["default"], 1, "w", LEASE, NOW)
        for thread in threads:
            thread.join()
        assert len(got) == 3 and max(got) - changed_at < 1
    finally:
        for store in (*waiters, writer):
            store.close()


# -- eviction warning ----------------------------------------------------------------------------

def test_check_warns_when_redis_may_evict_keys(private: PrivateRedis,
                                               caplog: pytest.LogCaptureFixture) -> None:
    store = RedisBackend(private.url)
    client = redis.Redis(port=private.port)
    caplog.set_level(logging.WARNING, logger="conveyor.backends.redis")
    try:
        store.check()
        assert not [r for r in caplog.records if r.name == "conveyor.backends.redis"]
        client.config_set("maxmemory-policy", "allkeys-lru")
        store.check()
        [record] = [r for r in caplog.records if r.name == "conveyor.backends.redis"]
        assert "allkeys-lru" in record.getMessage() and "noeviction" in record.getMessage()
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()
        store.close()


# -- the reference semantics ---------------------------------------------------------------------

def test_random_operations_match_the_memory_backend(backend: RedisBackend) -> None:
    """The same operations on memory:// and Redis leave identical records (transitions.py)."""
    rnd = random.Random(7)
    ref = MemoryBackend()
    now = NOW
    ids: list[str] = []

    def both(call):  # type: ignore[no-untyped-def]
        results = []
        for store in (ref, backend):
            try:
                results.append(call(store))
            except (JobNotFound, InvalidTransition) as exc:
                results.append(f"{type(exc).__name__}: {exc}")
        assert results[0] == results[1]
        return results[0]

    for _ in range(250):
        now += rnd.choice([0.0, 0.001, 1.5, 40.0])
        op = rnd.choice(["enqueue", "enqueue", "claim", "claim", "finish", "finish", "cancel",
                         "retry", "requeue", "prune", "list", "progress"])
        if op == "enqueue":
            status = rnd.choice(["queued", "scheduled"])
            batch = [JobRecord(id=new_job_id(), task=rnd.choice(["t1", "t2"]),
                               queue=rnd.choice(["a", "b"]), priority=rnd.choice([0, 5]),
                               status=status, created_at=now,
                               run_at=now + (rnd.choice([0.0, 2.5]) if status == "scheduled"
                                             else 0.0),
                               key=rnd.choice([None, None, "k"]),
                               max_attempts=rnd.randint(1, 3),
                               result_ttl=rnd.choice([None, 10.0]))
                     for _ in range(rnd.randint(1, 4))]
            both(lambda s, batch=batch: s.enqueue(copy.deepcopy(batch)))
            ids += [j.id for j in batch]
        elif op == "claim":
            queues = rnd.sample(["a", "b"], rnd.randint(1, 2))
            limit = rnd.randint(1, 3)
            both(lambda s, q=queues, n=limit, t=now: s.claim(q, n, "w", LEASE, t))
        elif op == "finish" and ids:
            outcomes = []
            for job_id in rnd.sample(ids, min(3, len(ids))):
                current = ref.get(job_id)
                attempt = current.attempts if current is not None else 1
                status = rnd.choice(["succeeded", "failed", "scheduled", "queued", "cancelled"])
                error = (None if status in ("succeeded", "queued") else
                         AttemptError(attempt=attempt, type="E", message='say "hi"', at=now))
                outcomes.append(Outcome(job_id, attempt, status, result='{"r": 1}',
                                        result_expires_at=rnd.choice([None, now + 5]),
                                        error=error, run_at=now + 1))
            both(lambda s, o=outcomes, t=now: s.finish(copy.deepcopy(o), t))
        elif op in ("cancel", "retry") and ids:
            job_id = rnd.choice(ids)
            both(lambda s, j=job_id, name=op, t=now: getattr(s, name)(j, t))
        elif op == "progress" and ids:
            job_id, message = rnd.choice(ids), rnd.choice([None, "x"])
            both(lambda s, j=job_id, m=message, t=now: s.set_progress(j, 1, 12.5, m, t))
        elif op == "requeue":
            assert sorted(ref.requeue_expired(now)) == sorted(backend.requeue_expired(now))
        elif op == "prune":
            both(lambda s, t=now: s.prune(t))
        elif op == "list":
            f = JobFilter(status=rnd.choice([None, "queued", "running", "failed"]),
                          queue=rnd.choice([None, "a"]), task=rnd.choice([None, "t1"]))
            both(lambda s, f=f: s.list(f, 3))
        both(lambda s: s.stats())
    for job_id in ids:
        both(lambda s, j=job_id: s.get(j))
