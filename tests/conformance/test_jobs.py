"""The JobStore contract, run unchanged against every backend."""

from __future__ import annotations

import threading
import time

import pytest

from conveyor.backends.base import AttemptError, JobFilter, JobRecord, Outcome
from conveyor.errors import InvalidTransition, JobNotFound
from conveyor.ids import new_job_id

NOW = 1_800_000_000.0
LEASE = 30.0


def make(task: str = "t", queue: str = "default", *, priority: int = 0, status: str = "queued",
         run_at: float = NOW, key: str | None = None, max_attempts: int = 3,
         args: str = "[1, 2]", at: float | None = None) -> JobRecord:
    return JobRecord(id=new_job_id(at), task=task, queue=queue, args=args, kwargs='{"x": "y"}',
                     priority=priority, status=status, run_at=run_at, created_at=NOW, key=key,
                     max_attempts=max_attempts)


def claim_one(backend, queues=("default",), now=NOW, worker="w1") -> JobRecord:
    claimed = backend.claim(list(queues), 1, worker, LEASE, now)
    assert len(claimed) == 1, claimed
    return claimed[0]


# -- enqueue and get -----------------------------------------------------------------------------

def test_an_enqueued_job_reads_back_byte_for_byte(backend):
    job = make(args='[1, "two", {"three": [3.0, null, true]}]')
    job.headers = {"traceparent": "00-abc-def-01"}
    [stored] = backend.enqueue([job])
    got = backend.get(job.id)
    assert stored.id == got.id == job.id
    assert got.args == job.args and got.kwargs == job.kwargs
    assert (got.task, got.queue, got.status, got.max_attempts) == ("t", "default", "queued", 3)
    assert got.headers == {"traceparent": "00-abc-def-01"}


def test_get_of_an_unknown_id_is_none(backend):
    assert backend.get(new_job_id()) is None


def test_enqueue_many_stores_them_all_in_order(backend):
    jobs = [make() for _ in range(50)]
    stored = backend.enqueue(jobs)
    assert [j.id for j in stored] == [j.id for j in jobs]
    assert all(backend.get(j.id) is not None for j in jobs)


def test_a_live_key_returns_the_existing_job_instead_of_a_duplicate(backend):
    first = make(key="user-42")
    backend.enqueue([first])
    [again] = backend.enqueue([make(key="user-42")])
    assert again.id == first.id
    assert backend.stats()["default"]["queued"] == 1


def test_a_key_is_free_again_once_its_job_finished(backend):
    first = make(key="k")
    backend.enqueue([first])
    backend.cancel(first.id, NOW)
    [second] = backend.enqueue([make(key="k")])
    assert second.id != first.id


def test_racing_enqueues_of_one_key_store_one_job(backend):
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def enqueue() -> None:
        barrier.wait()
        ids.append(backend.enqueue([make(key="race")])[0].id)

    threads = [threading.Thread(target=enqueue) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1
    assert sum(backend.stats()["default"].values()) == 1


# -- claim ---------------------------------------------------------------------------------------

def test_claim_marks_the_job_running_under_a_lease(backend):
    job = make()
    backend.enqueue([job])
    got = claim_one(backend)
    assert got.id == job.id
    assert (got.status, got.attempts, got.worker_id) == ("running", 1, "w1")
    assert got.started_at == NOW and got.lease_expires_at == NOW + LEASE
    assert backend.get(job.id).status == "running"
    assert backend.claim(["default"], 10, "w2", LEASE, NOW) == []


def test_claim_takes_higher_priority_first_then_older(backend):
    low = make(priority=0)
    high = make(priority=9)
    later_high = make(priority=9)
    backend.enqueue([low, high, later_high])
    got = backend.claim(["default"], 3, "w", LEASE, NOW)
    assert [j.id for j in got] == [high.id, later_high.id, low.id]


def test_claim_serves_queues_in_the_order_given(backend):
    default = make(queue="default", priority=9)
    high = make(queue="high")
    backend.enqueue([default, high])
    got = backend.claim(["high", "default"], 2, "w", LEASE, NOW)
    assert [j.id for j in got] == [high.id, default.id]


def test_claim_ignores_other_queues(backend):
    backend.enqueue([make(queue="other")])
    assert backend.claim(["default"], 10, "w", LEASE, NOW) == []


def test_claim_respects_the_batch_limit(backend):
    backend.enqueue([make() for _ in range(10)])
    assert len(backend.claim(["default"], 4, "w", LEASE, NOW)) == 4
    assert len(backend.claim(["default"], 100, "w", LEASE, NOW)) == 6


def test_a_scheduled_job_is_claimed_only_once_due(backend):
    job = make(status="scheduled", run_at=NOW + 60)
    backend.enqueue([job])
    assert backend.claim(["default"], 1, "w", LEASE, NOW) == []
    assert backend.claim(["default"], 1, "w", LEASE, NOW + 59.9) == []
    assert claim_one(backend, now=NOW + 60).id == job.id


def test_concurrent_claimers_never_get_the_same_job(backend):
    total = 200
    backend.enqueue([make() for _ in range(total)])
    seen: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def claimer(n: int) -> None:
        barrier.wait()
        while True:
            got = backend.claim(["default"], 7, f"w{n}", LEASE, NOW)
            if not got:
                return
            with lock:
                seen.extend(j.id for j in got)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == total
    assert len(set(seen)) == total


# -- leases, progress, fencing -------------------------------------------------------------------

def test_extend_leases_renews_and_reports_cancel_requests_and_lost_jobs(backend):
    a, b, c = make(), make(), make()
    backend.enqueue([a, b, c])
    backend.claim(["default"], 3, "w", LEASE, NOW)
    backend.cancel(b.id, NOW + 1)
    states = backend.extend_leases([(a.id, 1), (b.id, 1), (c.id, 2)], LEASE, NOW + 10)
    assert states == {a.id: "ok", b.id: "cancel", c.id: "lost"}
    assert backend.get(a.id).lease_expires_at == NOW + 10 + LEASE


def test_progress_is_recorded_and_fenced(backend):
    job = make()
    backend.enqueue([job])
    claim_one(backend)
    assert backend.set_progress(job.id, 1, 40.0, "halfway", NOW + 1) == "ok"
    got = backend.get(job.id)
    assert (got.progress, got.progress_message) == (40.0, "halfway")
    assert backend.set_progress(job.id, 2, 90.0, "wrong attempt", NOW + 2) == "lost"
    assert backend.get(job.id).progress == 40.0


def test_finish_succeeded_stores_the_result(backend):
    job = make()
    backend.enqueue([job])
    claim_one(backend)
    assert backend.finish([Outcome(job.id, 1, "succeeded", result='{"ok": 1}',
                                   result_expires_at=NOW + 100)], NOW + 5) == [True]
    got = backend.get(job.id)
    assert (got.status, got.result, got.finished_at) == ("succeeded", '{"ok": 1}', NOW + 5)
    assert got.result_expires_at == NOW + 100
    assert [h.status for h in got.history][-2:] == ["running", "succeeded"]


def test_finish_applies_a_batch_and_reports_each(backend):
    jobs = [make() for _ in range(3)]
    backend.enqueue(jobs)
    backend.claim(["default"], 3, "w", LEASE, NOW)
    error = AttemptError(attempt=1, type="ValueError", message="bad", traceback="tb", at=NOW)
    applied = backend.finish([
        Outcome(jobs[0].id, 1, "succeeded", result="1"),
        Outcome(jobs[1].id, 1, "failed", error=error),
        Outcome(jobs[2].id, 7, "succeeded", result="2"),
    ], NOW + 1)
    assert applied == [True, True, False]
    failed = backend.get(jobs[1].id)
    assert failed.status == "failed"
    assert failed.errors[0].type == "ValueError" and failed.errors[0].traceback == "tb"
    assert backend.get(jobs[2].id).status == "running"


def test_a_retry_outcome_schedules_the_next_attempt(backend):
    job = make()
    backend.enqueue([job])
    claim_one(backend)
    error = AttemptError(attempt=1, type="Boom", message="try again", reason="retry")
    assert backend.finish([Outcome(job.id, 1, "scheduled", error=error, run_at=NOW + 30)],
                          NOW + 1) == [True]
    got = backend.get(job.id)
    assert (got.status, got.run_at, got.attempts) == ("scheduled", NOW + 30, 1)
    assert backend.claim(["default"], 1, "w", LEASE, NOW + 29) == []
    again = claim_one(backend, now=NOW + 30)
    assert again.attempts == 2 and [e.message for e in again.errors] == ["try again"]


def test_a_queued_outcome_hands_the_job_back_without_counting_the_attempt(backend):
    job = make()
    backend.enqueue([job])
    claim_one(backend)
    assert backend.finish([Outcome(job.id, 1, "queued")], NOW + 1) == [True]
    got = backend.get(job.id)
    assert (got.status, got.attempts, got.worker_id) == ("queued", 0, None)
    assert claim_one(backend, now=NOW + 2).attempts == 1


def test_a_worker_that_lost_its_lease_cannot_overwrite_newer_state(backend):
    job = make()
    backend.enqueue([job])
    claim_one(backend, worker="old")
    assert backend.requeue_expired(NOW + LEASE + 1) == [job.id]
    claim_one(backend, now=NOW + LEASE + 2, worker="new")
    assert backend.finish([Outcome(job.id, 1, "succeeded", result='"stale"')],
                          NOW + LEASE + 3) == [False]
    got = backend.get(job.id)
    assert (got.status, got.worker_id, got.result) == ("running", "new", None)
    assert backend.finish([Outcome(job.id, 2, "succeeded", result='"fresh"')],
                          NOW + LEASE + 4) == [True]
    assert backend.get(job.id).result == '"fresh"'


def test_a_finished_job_cannot_be_finished_again(backend):
    job = make()
    backend.enqueue([job])
    claim_one(backend)
    backend.finish([Outcome(job.id, 1, "succeeded", result="1")], NOW)
    assert backend.finish([Outcome(job.id, 1, "failed")], NOW) == [False]
    assert backend.get(job.id).status == "succeeded"


# -- expired leases ------------------------------------------------------------------------------

def test_an_expired_lease_puts_the_job_back_and_counts_the_attempt(backend):
    job = make(max_attempts=2)
    backend.enqueue([job])
    claim_one(backend)
    assert backend.requeue_expired(NOW + LEASE - 1) == []
    assert backend.requeue_expired(NOW + LEASE + 1) == [job.id]
    got = backend.get(job.id)
    assert (got.status, got.attempts) == ("queued", 1)
    assert got.errors[-1].reason == "worker_lost"


def test_an_expired_lease_on_the_last_attempt_fails_the_job_as_worker_lost(backend):
    job = make(max_attempts=1)
    backend.enqueue([job])
    claim_one(backend)
    backend.requeue_expired(NOW + LEASE + 1)
    got = backend.get(job.id)
    assert got.status == "failed" and got.errors[-1].reason == "worker_lost"


def test_a_renewed_lease_does_not_expire(backend):
    job = make()
    backend.enqueue([job])
    claim_one(backend)
    backend.extend_leases([(job.id, 1)], LEASE, NOW + LEASE - 1)
    assert backend.requeue_expired(NOW + LEASE + 1) == []
    assert backend.get(job.id).status == "running"


# -- cancel, retry, delete -----------------------------------------------------------------------

def test_cancel_of_a_queued_job_is_immediate(backend):
    job = make()
    backend.enqueue([job])
    got = backend.cancel(job.id, NOW + 1)
    assert got.status == "cancelled" and got.finished_at == NOW + 1
    assert backend.claim(["default"], 1, "w", LEASE, NOW + 2) == []


def test_cancel_of_a_scheduled_job_is_immediate(backend):
    job = make(status="scheduled", run_at=NOW + 100)
    backend.enqueue([job])
    assert backend.cancel(job.id, NOW).status == "cancelled"


def test_cancel_of_a_running_job_is_a_request(backend):
    job = make()
    backend.enqueue([job])
    claim_one(backend)
    got = backend.cancel(job.id, NOW + 1)
    assert got.status == "running" and got.cancel_requested
    assert backend.set_progress(job.id, 1, 10, None, NOW + 2) == "cancel"


def test_cancel_of_a_finished_job_changes_nothing(backend):
    job = make()
    backend.enqueue([job])
    claim_one(backend)
    backend.finish([Outcome(job.id, 1, "succeeded", result="1")], NOW)
    assert backend.cancel(job.id, NOW + 1).status == "succeeded"


def test_cancel_and_retry_of_an_unknown_job_raise_job_not_found(backend):
    with pytest.raises(JobNotFound):
        backend.cancel(new_job_id(), NOW)
    with pytest.raises(JobNotFound):
        backend.retry(new_job_id(), NOW)


def test_a_job_lost_while_cancel_was_requested_ends_cancelled(backend):
    job = make()
    backend.enqueue([job])
    claim_one(backend)
    backend.cancel(job.id, NOW + 1)
    backend.requeue_expired(NOW + LEASE + 1)
    assert backend.get(job.id).status == "cancelled"


def test_retry_queues_a_failed_job_with_one_more_attempt(backend):
    job = make(max_attempts=1)
    backend.enqueue([job])
    claim_one(backend)
    backend.finish([Outcome(job.id, 1, "failed")], NOW)
    got = backend.retry(job.id, NOW + 1)
    assert (got.status, got.max_attempts) == ("queued", 2)
    again = claim_one(backend, now=NOW + 2)
    assert again.attempts == 2


def test_retry_is_refused_while_another_live_job_holds_the_key(backend):
    old = make(key="k", max_attempts=1)
    backend.enqueue([old])
    claim_one(backend)
    backend.finish([Outcome(old.id, 1, "failed")], NOW)
    newer = make(key="k")
    backend.enqueue([newer])
    with pytest.raises(InvalidTransition):
        backend.retry(old.id, NOW)
    assert backend.get(old.id).status == "failed"
    backend.cancel(newer.id, NOW)
    assert backend.retry(old.id, NOW).status == "queued"
    [again] = backend.enqueue([make(key="k")])
    assert again.id == old.id


def test_retry_of_a_queued_job_changes_nothing(backend):
    job = make()
    backend.enqueue([job])
    assert backend.retry(job.id, NOW).status == "queued"


def test_delete_removes_the_job(backend):
    job = make(key="gone")
    backend.enqueue([job])
    assert backend.delete(job.id) is True
    assert backend.get(job.id) is None
    assert backend.delete(job.id) is False
    [again] = backend.enqueue([make(key="gone")])
    assert again.id != job.id


# -- listing and stats ---------------------------------------------------------------------------

def test_list_is_newest_first_and_filters(backend):
    jobs = [make(task="a" if i % 2 else "b", queue="q1" if i < 5 else "q2",
                 at=NOW + i) for i in range(10)]
    backend.enqueue(jobs)
    page = backend.list(JobFilter(), limit=100)
    assert [j.id for j in page.jobs] == [j.id for j in reversed(jobs)]
    assert page.cursor is None
    only_a = backend.list(JobFilter(task="a", queue="q1"), limit=100).jobs
    assert [j.id for j in only_a] == [jobs[3].id, jobs[1].id]
    backend.cancel(jobs[0].id, NOW)
    assert [j.id for j in backend.list(JobFilter(status="cancelled"), 10).jobs] == [jobs[0].id]


def test_cursor_paging_walks_every_job_once(backend):
    jobs = [make(at=NOW + i) for i in range(25)]
    backend.enqueue(jobs)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = backend.list(JobFilter(), limit=10, cursor=cursor)
        seen.extend(j.id for j in page.jobs)
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor
    assert pages == 3
    assert seen == [j.id for j in reversed(jobs)]


def test_stats_counts_per_queue_and_state(backend):
    backend.enqueue([make(queue="a"), make(queue="a"), make(queue="b")])
    backend.claim(["a"], 1, "w", LEASE, NOW)
    stats = backend.stats()
    assert stats["a"].get("queued") == 1 and stats["a"].get("running") == 1
    assert stats["b"].get("queued") == 1


# -- pruning and waiting -------------------------------------------------------------------------

def test_prune_deletes_only_expired_finished_jobs(backend):
    keep, drop, live = make(), make(), make()
    backend.enqueue([keep, drop, live])
    backend.claim(["default"], 2, "w", LEASE, NOW)
    backend.finish([Outcome(keep.id, 1, "succeeded", result="1", result_expires_at=NOW + 100),
                    Outcome(drop.id, 1, "succeeded", result="1", result_expires_at=NOW + 10)],
                   NOW)
    assert backend.prune(NOW + 50) == 1
    assert backend.get(drop.id) is None
    assert backend.get(keep.id) is not None and backend.get(live.id) is not None


def test_wait_for_work_returns_soon_after_an_enqueue(backend):
    def later() -> None:
        time.sleep(0.2)
        backend.enqueue([make(queue="wake")])

    thread = threading.Thread(target=later)
    thread.start()
    started = time.monotonic()
    deadline = started + 5
    while time.monotonic() < deadline:
        backend.wait_for_work(["wake"], timeout=5)
        if backend.claim(["wake"], 1, "w", LEASE, time.time()):
            break
    thread.join()
    assert time.monotonic() - started < 2


def test_wait_for_work_times_out_when_nothing_comes(backend):
    started = time.monotonic()
    backend.wait_for_work(["nothing-here"], timeout=0.3)
    assert 0.2 <= time.monotonic() - started < 2


def test_a_waiting_claim_takes_a_job_enqueued_during_the_wait(backend):
    job = make(queue="wake")

    def later() -> None:
        time.sleep(0.2)
        backend.enqueue([job])

    thread = threading.Thread(target=later)
    thread.start()
    started, deadline = time.monotonic(), time.monotonic() + 5
    claimed: list[JobRecord] = []
    while not claimed and time.monotonic() < deadline:
        claimed = backend.claim(["wake"], 4, "w1", LEASE, time.time(), wait=5)
    thread.join()
    assert time.monotonic() - started < 2
    [got] = claimed
    assert (got.id, got.status, got.attempts, got.worker_id) == (job.id, "running", 1, "w1")
    assert got.lease_expires_at == pytest.approx(got.started_at + LEASE)
    assert abs(got.started_at - time.time()) < 2
    stored = backend.get(job.id)
    assert (stored.status, stored.attempts, stored.version) == ("running", 1, got.version)
    assert {k: v for k, v in backend.stats()["wake"].items() if v} == {"running": 1}
    assert backend.claim(["wake"], 4, "w1", LEASE, time.time()) == []


def test_a_waiting_claim_returns_nothing_after_the_wait(backend):
    started = time.monotonic()
    assert backend.claim(["nothing-here"], 4, "w1", LEASE, time.time(), wait=0.3) == []
    assert 0.2 <= time.monotonic() - started < 2


def test_a_waiting_claim_wakes_for_a_scheduled_job_falling_due(backend):
    job = make(queue="soon", status="scheduled", run_at=time.time() + 0.3)
    backend.enqueue([job])
    started, deadline = time.monotonic(), time.monotonic() + 5
    claimed: list[JobRecord] = []
    while not claimed and time.monotonic() < deadline:
        claimed = backend.claim(["soon"], 1, "w1", LEASE, time.time(), wait=5)
    assert [j.id for j in claimed] == [job.id]
    assert time.monotonic() - started < 2


def test_jobs_enqueued_while_claimers_wait_each_reach_exactly_one(backend):
    jobs = [make(queue="many") for _ in range(30)]
    got: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def claimer(name: str) -> None:
        while not done.is_set():
            claimed = backend.claim(["many"], 3, name, LEASE, time.time(), wait=0.2)
            with lock:
                got.extend(j.id for j in claimed)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for job in jobs:
        backend.enqueue([job])
        time.sleep(0.005)
    deadline = time.monotonic() + 10
    while len(got) < len(jobs) and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    for thread in threads:
        thread.join()
    assert sorted(got) == sorted(j.id for j in jobs)
    assert all(backend.get(j.id).status == "running" for j in jobs)


def test_wait_for_change_returns_the_new_version(backend):
    job = make()
    backend.enqueue([job])
    version = backend.get(job.id).version

    def later() -> None:
        time.sleep(0.2)
        backend.cancel(job.id, NOW)

    thread = threading.Thread(target=later)
    thread.start()
    got = backend.wait_for_change(job.id, version, timeout=5)
    thread.join()
    assert got.status == "cancelled" and got.version != version


def test_every_change_bumps_the_version(backend):
    job = make()
    backend.enqueue([job])
    versions = [backend.get(job.id).version]
    claim_one(backend)
    versions.append(backend.get(job.id).version)
    backend.set_progress(job.id, 1, 50, "half", NOW)
    versions.append(backend.get(job.id).version)
    backend.finish([Outcome(job.id, 1, "succeeded", result="1")], NOW)
    versions.append(backend.get(job.id).version)
    assert versions == sorted(set(versions))
