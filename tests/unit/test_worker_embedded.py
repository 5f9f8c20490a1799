"""The worker inside the host process (``app.embedded()``), the ``conveyor.testing`` helpers,
and what the worker does with a task's outcome: callbacks, ``Retry``, results that are not
JSON. All on ``memory://``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

from conveyor import (
    Cancelled,
    Conveyor,
    ConveyorError,
    JobFailed,
    Retry,
    current_job,
)
from conveyor.testing import drain, memory_app


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- embedded ------------------------------------------------------------------------------

def test_with_app_embedded_runs_sync_and_async_jobs_and_stops_cleanly() -> None:
    app = memory_app()

    @app.task
    def double(x: int) -> int:
        current_job().progress(50, "halfway")
        return 2 * x

    @app.task
    async def triple(x: int) -> int:
        await asyncio.sleep(0.01)
        return 3 * x

    with app.embedded(concurrency=2) as embedded:
        jobs = [double.enqueue(n) for n in range(10)] + [triple.enqueue(n) for n in range(10)]
        assert [job.result(timeout=5) for job in jobs] == \
            [2 * n for n in range(10)] + [3 * n for n in range(10)]
        assert [w.id for w in app.workers()] == [embedded.worker.id]
    assert embedded.worker.join(0)  # run() returned
    assert app.workers() == []  # deregistered
    assert app.stats() == {"default": {"succeeded": 20}}
    assert jobs[0].refresh().progress == 100


def test_async_with_app_embedded_runs_jobs_inside_an_event_loop() -> None:
    app = memory_app()

    @app.task
    async def greet(name: str) -> str:
        return f"hello {name}"

    async def main() -> tuple[str, Any]:
        async with app.embedded() as embedded:
            job = await greet.aenqueue("ada")
            return await job.aresult(timeout=5), embedded

    result, embedded = asyncio.run(main())
    assert result == "hello ada"
    assert embedded.worker.join(0)


def test_leaving_the_block_lets_a_running_job_finish_within_the_grace_period() -> None:
    app = memory_app()
    started = threading.Event()

    @app.task
    def short() -> str:
        started.set()
        time.sleep(0.3)
        return "finished"

    job = short.enqueue()
    with app.embedded(grace=5):
        assert started.wait(5)
    assert job.refresh().status == "succeeded"


def test_a_job_still_running_after_the_grace_period_is_handed_back_to_the_queue() -> None:
    app = memory_app()
    started = threading.Event()

    @app.task
    async def forever() -> None:
        started.set()
        await asyncio.sleep(60)

    job = forever.enqueue()
    begun = time.monotonic()
    with app.embedded(grace=0.2):
        assert started.wait(5)
    assert time.monotonic() - begun < 3
    job.refresh()
    # not lost and not failed: queued again, the interrupted attempt not counted
    assert (job.status, job.attempts, job.errors) == ("queued", 0, [])


HOST_PROCESS = textwrap.dedent("""
    import sys, threading, time
    from conveyor import Conveyor

    app = Conveyor(sys.argv[1])
    started = threading.Event()

    @app.task
    def stuck() -> None:
        started.set()
        time.sleep(60)  # never checks in: a thread cannot be stopped from outside

    job = stuck.enqueue()
    with app.embedded(grace=0.2):
        started.wait(10)
    print(job.refresh().status, flush=True)
    # the host process (a web server shutting down) must now exit, not wait for the thread
""")


def test_a_stuck_thread_job_handed_back_does_not_keep_the_host_process_alive(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'host.db'}"
    begun = time.monotonic()
    result = subprocess.run([sys.executable, "-c", HOST_PROCESS, url], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "queued"
    assert time.monotonic() - begun < 10


def test_stop_does_not_deadlock_when_a_signal_interrupts_the_worker_holding_its_lock() -> None:
    """The CLI calls ``worker.stop()`` from a signal handler, which runs in the main thread
    wherever it was — possibly inside ``with worker._lock``."""
    worker = memory_app().worker()
    begun = time.monotonic()
    with worker._lock:
        worker.stop(graceful=False)
    assert time.monotonic() - begun < 2
    assert worker._stopping.is_set() and worker._hard_stop.is_set()


def test_a_prefetched_job_is_not_timed_out_while_it_waits_for_a_thread() -> None:
    app = Conveyor("memory://", lease=3)

    @app.task
    def long() -> str:
        time.sleep(1.5)
        return "long"

    @app.task(timeout=0.3)
    def quick() -> str:
        return "quick"

    first, second = long.enqueue(), quick.enqueue()
    # one thread: quick waits (claimed, prefetched) behind long for longer than its timeout
    with app.embedded(concurrency=1, cancel_grace=0.1):
        assert first.result(timeout=10) == "long"
        assert second.result(timeout=10) == "quick"


def test_a_thread_job_stuck_past_its_timeout_does_not_take_the_workers_thread_with_it() -> None:
    app = Conveyor("memory://", lease=3)
    release = threading.Event()

    @app.task(timeout=0.2)
    def stuck() -> None:
        release.wait(30)  # never checks in, never returns on its own

    @app.task
    def quick() -> str:
        return "quick"

    try:
        with app.embedded(concurrency=1, cancel_grace=0.1, grace=0.1):
            job = stuck.enqueue()
            job.wait(timeout=10)  # recorded as timed out while its thread runs on
            assert (job.status, job.errors[-1].reason) == ("failed", "timeout")
            # the next job gets a thread of its own instead of waiting behind the stuck one
            assert quick.enqueue().result(timeout=5) == "quick"
    finally:
        release.set()


def test_a_job_that_finishes_while_its_lease_is_renewed_is_not_reported_as_lost(
        caplog: Any) -> None:
    """The heartbeat renews the leases of the jobs it saw in hand; one whose outcome was
    written meanwhile is no longer running, and the backend answers "lost" for it. That is
    not a lost lease: no "another worker may run it" warning (it came up once a second per
    busy worker in the 10,000-job integration test)."""
    app = Conveyor("memory://", lease=3)
    release = threading.Event()

    @app.task
    def held() -> str:
        release.wait(10)
        return "done"

    renew = app.backend.extend_leases

    def renew_after_the_job_finished(leases: Any, lease: float, now: float) -> Any:
        release.set()
        wait_for(lambda: all(app.get_job(i).status == "succeeded" for i, _ in leases))
        return renew(leases, lease, now)

    app.backend.extend_leases = renew_after_the_job_finished  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="conveyor.worker"), \
            app.embedded(concurrency=1, heartbeat_interval=0.05):
        job = held.enqueue()
        assert job.result(timeout=10) == "done"
        time.sleep(0.2)  # a few more beats
    assert release.is_set()  # a heartbeat did renew while the job was in hand
    assert "lease lost" not in caplog.text


# -- conveyor.testing.drain -------------------------------------------------------------------

def test_drain_runs_queued_jobs_here_and_returns_how_many_ran() -> None:
    app = memory_app()
    seen: list[int] = []

    @app.task
    def collect(n: int) -> None:
        seen.append(n)

    @app.task
    async def collect_async(n: int) -> None:
        seen.append(n)

    for n in range(3):
        collect.enqueue(n)
    collect_async.enqueue(3)
    later = collect.options(delay=3600).enqueue(4)
    assert drain(app) == 4
    assert sorted(seen) == [0, 1, 2, 3]
    assert later.refresh().status == "scheduled"
    assert drain(app, include_scheduled=True) == 1
    assert seen[-1] == 4
    assert app.workers() == []


def test_drain_reraises_a_tasks_error_with_its_type_message_and_traceback() -> None:
    app = memory_app()

    @app.task(retries=2, retry_backoff=60)
    def charge(amount: int) -> None:
        raise ValueError(f"card declined for {amount}")

    job = charge.enqueue(42)
    started = time.monotonic()
    with pytest.raises(JobFailed) as info:
        drain(app)
    # the retries ran at once: a drain does not sleep through backoff
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "ValueError: card declined for 42" in message
    assert 'raise ValueError(f"card declined for {amount}")' in message  # the traceback
    assert info.value.job.id == job.id
    assert info.value.job.attempts == 3 and info.value.job.status == "failed"


def test_drain_with_raise_errors_off_records_the_failure_and_goes_on() -> None:
    app = memory_app()

    @app.task
    def broken() -> None:
        raise RuntimeError("nope")

    @app.task
    def fine() -> str:
        return "ok"

    bad, good = broken.enqueue(), fine.enqueue()
    assert drain(app, raise_errors=False) == 2
    assert bad.refresh().status == "failed" and good.refresh().status == "succeeded"


# -- what the worker does with outcomes --------------------------------------------------------

def test_callbacks_are_called_with_the_job_and_the_result_or_error() -> None:
    calls: list[tuple[str, str, Any]] = []
    app = memory_app()

    def on_success(job: Any, result: Any) -> None:
        calls.append(("success", job.task, result))

    def on_failure(job: Any, exc: BaseException) -> None:
        calls.append(("failure", job.task, repr(exc)))

    def on_retry(job: Any, exc: BaseException) -> None:
        calls.append(("retry", job.task, repr(exc)))

    options = {"on_success": on_success, "on_failure": on_failure, "on_retry": on_retry}

    @app.task(name="works", **options)
    def works() -> int:
        return 7

    @app.task(name="fails_twice", retries=1, **options)
    def fails_twice() -> None:
        raise KeyError(f"attempt {current_job().attempt}")

    works.enqueue()
    fails_twice.enqueue()
    drain(app, raise_errors=False)
    assert calls == [("success", "works", 7),
                     ("retry", "fails_twice", "KeyError('attempt 1')"),
                     ("failure", "fails_twice", "KeyError('attempt 2')")]


def test_a_failing_callback_is_logged_and_does_not_change_the_outcome(caplog: Any) -> None:
    app = memory_app()

    def explode(job: Any, result: Any) -> None:
        raise RuntimeError("callback bug")

    @app.task(on_success=explode)
    def works() -> int:
        return 1

    job = works.enqueue()
    drain(app)
    assert job.refresh().status == "succeeded"
    assert "callback" in caplog.text and "callback bug" in caplog.text


def test_raising_retry_with_a_delay_runs_the_job_again_after_that_delay() -> None:
    app = memory_app()

    @app.task(retries=3)
    def poll_partner() -> str:
        attempt = current_job().attempt
        if attempt == 1:
            raise Retry(delay=0.4, reason="partner not ready")
        return f"ready on attempt {attempt}"

    job = poll_partner.enqueue()
    with app.embedded(concurrency=1):
        assert job.result(timeout=10) == "ready on attempt 2"
    [error] = job.errors
    assert (error.type, error.message, error.reason) == ("Retry", "partner not ready", "retry")
    runs = [h.at for h in job.record.history if h.status == "running"]
    assert 0.39 <= runs[1] - error.at < 2, runs
    assert [h.status for h in job.record.history] == \
        ["queued", "running", "scheduled", "running", "succeeded"]


def test_retry_counts_an_attempt_and_past_the_budget_the_job_fails() -> None:
    app = memory_app()

    @app.task(retries=1)
    def never_ready() -> None:
        raise Retry(delay=0)

    job = never_ready.enqueue()
    drain(app, raise_errors=False)
    job.refresh()
    assert (job.status, job.attempts) == ("failed", 2)
    assert [e.reason for e in job.errors] == ["retry", "retry"]


def test_a_task_returning_a_value_that_is_not_json_fails_with_a_clear_error() -> None:
    app = memory_app()

    @app.task(retries=3)
    def leaky() -> Any:
        return {"when": object()}

    job = leaky.enqueue()
    with pytest.raises(JobFailed, match="not JSON") as info:
        drain(app)
    [error] = info.value.job.errors  # not retried: it would fail the same way again
    assert error.type == "ValidationError"
    assert error.message.startswith("the task returned a value that is not JSON")
    assert "#/result/when" in error.message and "object" in error.message
    assert job.refresh().status == "failed"


def test_a_task_can_stop_itself_when_cancelled_with_check_cancelled() -> None:
    app = memory_app()
    started = threading.Event()

    @app.task
    def loop() -> None:
        started.set()
        while True:
            current_job().check_cancelled()
            time.sleep(0.01)

    job = loop.enqueue()
    with app.embedded(concurrency=1):
        assert started.wait(5)
        job.cancel()
        job.wait(timeout=5)
    assert job.status == "cancelled"
    assert job.errors[-1].reason == "cancelled"


def test_current_job_outside_of_a_task_is_an_error() -> None:
    with pytest.raises(ConveyorError, match="outside of a running task"):
        current_job()
    assert issubclass(Cancelled, BaseException) and not issubclass(Cancelled, Exception)


def test_a_backend_outage_is_logged_once_and_its_end_once(caplog):
    from conveyor.errors import BackendError, BackendUnavailable
    from conveyor.worker import OutageLog

    outage = OutageLog()
    with caplog.at_level("WARNING", logger="conveyor.worker"):
        for what in ("claiming jobs", "renewing leases", "recording 3 outcome(s)"):
            outage.failed(what, BackendUnavailable("connection refused"))
        outage.ended()
        outage.ended()
        outage.failed("claiming jobs", BackendError("no such column"))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
    assert messages[-1] == "claiming jobs failed" and caplog.records[-1].exc_info
