"""The public task and job API, on the memory backend with an injected clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Literal, TypedDict

import pytest
from support import Clock

import conveyor
from conveyor import (
    Conveyor,
    InvalidTransition,
    JobCancelled,
    JobFailed,
    JobNotFound,
    PayloadTooLarge,
    UnknownTask,
    ValidationError,
    current_job,
)
from conveyor.signature import TaskSignature
from conveyor.testing import drain


class Size(TypedDict):
    width: int
    height: int


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(clock: Clock) -> Conveyor:
    return Conveyor("memory://", clock=clock)


def register(app: Conveyor):
    @app.task(queue="gpu", retries=3, timeout=300, priority=1)
    def generate_image(prompt: str, width: int = 512, height: int = 512) -> dict:
        job = current_job()
        job.progress(10, "Refining prompt")
        job.check_cancelled()
        return {"prompt": prompt, "width": width, "height": height}

    return generate_image


def test_enqueue_returns_a_queued_job_handle_at_once(app):
    generate_image = register(app)
    job = generate_image.enqueue("sunset over mountains", width=256)
    assert job.status == "queued"
    assert job.queue == "gpu" and job.record.priority == 1
    assert job.record.max_attempts == 4 and job.record.timeout == 300
    assert job.args == ["sunset over mountains"] and job.kwargs == {"width": 256}
    assert app.get_job(job.id) == job


def test_a_drained_job_has_its_result_and_progress(app):
    generate_image = register(app)
    job = generate_image.enqueue("sunset", width=256)
    drain(app)
    assert job.result(timeout=1) == {"prompt": "sunset", "width": 256, "height": 512}
    assert job.refresh().status == "succeeded"
    assert job.progress == 100
    assert [h.status for h in job.record.history] == ["queued", "running", "succeeded"]


def test_job_ids_are_unique_and_ordered_by_creation(app):
    generate_image = register(app)
    ids = [generate_image.enqueue("x").id for _ in range(200)]
    assert len(set(ids)) == 200
    assert ids == sorted(ids)


def test_calling_a_task_directly_runs_the_function_inline(app):
    @app.task
    def double(x: int) -> int:
        return 2 * x

    assert double(21) == 42
    assert app.stats() == {}


@pytest.mark.parametrize(("args", "kwargs", "pointer"), [
    ((), {}, "#"),                                         # missing argument
    (("a", "b", "c", "d"), {}, "#"),                        # too many
    ((1,), {}, "#/args/0"),                                # wrong type
    (("x",), {"width": "wide"}, "#/kwargs/width"),          # wrong keyword type
    (("x",), {"depth": 3}, "#"),                            # unknown keyword
    (("x",), {"width": True}, "#/kwargs/width"),            # a bool is not an int
])
def test_a_bad_call_fails_in_the_caller_and_stores_nothing(app, args, kwargs, pointer):
    generate_image = register(app)
    with pytest.raises(ValidationError) as caught:
        generate_image.enqueue(*args, **kwargs)
    assert caught.value.errors[0]["pointer"] == pointer
    assert app.stats() == {}


def test_a_validation_error_names_the_argument(app):
    generate_image = register(app)
    with pytest.raises(ValidationError, match="argument 'width' must be int, got str"):
        generate_image.enqueue("x", width="wide")


def test_values_json_cannot_carry_are_refused_with_their_place(app):
    @app.task
    def store(data: dict) -> None: ...

    with pytest.raises(ValidationError) as caught:
        store.enqueue({"when": datetime.now(UTC), "ok": [1, float("nan")]})
    pointers = {e["pointer"] for e in caught.value.errors}
    assert pointers == {"#/args/0/when", "#/args/0/ok/1"}


def test_rich_type_hints_are_checked(app):
    @app.task
    def fancy(size: Size, mode: Literal["fast", "slow"], tags: list[str] | None = None,
              *rest: int, **extra: float) -> None: ...

    fancy.enqueue({"width": 1, "height": 2}, "fast", ["a"], 1, 2, ratio=1.5, other=2)
    with pytest.raises(ValidationError, match="missing key 'height'"):
        fancy.enqueue({"width": 1}, "fast")
    with pytest.raises(ValidationError, match="one of"):
        fancy.enqueue({"width": 1, "height": 2}, "medium")
    with pytest.raises(ValidationError, match="item 1"):
        fancy.enqueue({"width": 1, "height": 2}, "fast", ["a", 2])
    with pytest.raises(ValidationError) as caught:
        fancy.enqueue({"width": 1, "height": 2}, "fast", None, 1, "two")
    assert caught.value.errors[0]["pointer"] == "#/args/4"
    with pytest.raises(ValidationError) as caught:
        fancy.enqueue({"width": 1, "height": 2}, "fast", ratio="big")
    assert caught.value.errors[0]["pointer"] == "#/kwargs/ratio"


def test_the_payload_limit_is_enforced(clock):
    app = Conveyor("memory://", payload_limit=1000, clock=clock)

    @app.task
    def big(blob: str) -> None: ...

    big.enqueue("x" * 900)
    with pytest.raises(PayloadTooLarge, match="1,000-byte payload limit"):
        big.enqueue("é" * 600)
    assert sum(app.stats()["default"].values()) == 1


def test_delay_and_eta_schedule_a_job_for_later(app, clock):
    generate_image = register(app)
    delayed = generate_image.options(delay=30).enqueue("x")
    assert delayed.status == "scheduled" and delayed.record.run_at == clock.now + 30
    eta = datetime.fromtimestamp(clock.now + 60, UTC)
    at_eta = generate_image.options(eta=eta).enqueue("x")
    assert at_eta.record.run_at == pytest.approx(clock.now + 60)
    as_delta = generate_image.options(delay=timedelta(minutes=2)).enqueue("x")
    assert as_delta.record.run_at == clock.now + 120
    assert drain(app) == 0
    clock.now += 61
    assert drain(app) == 2


def test_bad_options_are_refused(app):
    generate_image = register(app)
    with pytest.raises(ValidationError, match="timezone-aware"):
        generate_image.options(eta=datetime(2030, 1, 1))
    with pytest.raises(ValidationError, match="not both"):
        generate_image.options(delay=1, eta=2_000_000_000)
    with pytest.raises(ValidationError, match="negative"):
        generate_image.options(delay=-5)
    with pytest.raises(ValidationError, match="priority"):
        generate_image.options(priority="high")  # type: ignore[arg-type]


def test_an_idempotency_key_returns_the_existing_job(app):
    generate_image = register(app)
    first = generate_image.options(key="user-42-daily").enqueue("x")
    second = generate_image.options(key="user-42-daily").enqueue("y")
    assert second.id == first.id and second.args == ["x"]
    drain(app)
    third = generate_image.options(key="user-42-daily").enqueue("z")
    assert third.id != first.id


def test_celery_aliases(app, clock):
    generate_image = register(app)
    assert generate_image.delay("x", width=8).kwargs == {"width": 8}
    job = generate_image.apply_async(args=["x"], kwargs={"height": 8}, countdown=10,
                                     queue="cpu", priority=5)
    assert (job.queue, job.record.priority, job.record.run_at) == ("cpu", 5, clock.now + 10)
    assert job.status == "scheduled"


def test_async_callers_have_awaitable_twins(app):
    generate_image = register(app)

    async def flow():
        job = await generate_image.aenqueue("x")
        drain(app)
        return await job.aresult(timeout=1)

    assert asyncio.run(flow())["prompt"] == "x"


def test_enqueue_many_stores_a_batch_or_nothing(app):
    generate_image = register(app)
    jobs = generate_image.enqueue_many([(("a",), {}), (("b",), {"width": 1})])
    assert [j.args for j in jobs] == [["a"], ["b"]]
    with pytest.raises(ValidationError):
        generate_image.enqueue_many([(("c",), {}), ((1,), {})])
    assert app.stats()["gpu"]["queued"] == 2


def test_enqueue_by_name_refuses_unknown_tasks(app):
    register(app)
    with pytest.raises(UnknownTask, match="no task is registered as 'nope'"):
        app.enqueue("nope")
    assert app.stats() == {}


def test_get_job_of_an_unknown_id_raises_job_not_found(app):
    with pytest.raises(JobNotFound):
        app.get_job("0190c0de-0000-7000-8000-000000000000")


def test_result_raises_job_failed_with_every_attempt(app):
    @app.task(retries=2, retry_backoff=0)
    def broken() -> None:
        raise ValueError(f"bad input on attempt {current_job().attempt}")

    job = broken.enqueue()
    with pytest.raises(JobFailed):
        drain(app)
    with pytest.raises(JobFailed, match="bad input on attempt 3") as caught:
        job.result(timeout=1)
    errors = caught.value.job.errors
    assert [e.attempt for e in errors] == [1, 2, 3]
    assert all(e.type == "ValueError" and "Traceback" in e.traceback for e in errors)


def test_result_times_out_on_a_job_nobody_runs(app):
    generate_image = register(app)
    with pytest.raises(TimeoutError):
        generate_image.enqueue("x").result(timeout=0.05)


def test_cancel_of_a_queued_job_is_immediate_and_a_second_cancel_is_refused(app):
    generate_image = register(app)
    job = generate_image.enqueue("x")
    assert job.cancel().status == "cancelled"
    with pytest.raises(JobCancelled):
        job.result(timeout=0)
    with pytest.raises(InvalidTransition):
        job.cancel()


def test_retry_of_a_failed_job_gives_it_another_attempt(app):
    outcomes = iter([RuntimeError("first"), None])

    @app.task
    def once_broken() -> str:
        error = next(outcomes)
        if error:
            raise error
        return "ok"

    job = once_broken.enqueue()
    drain(app, raise_errors=False)
    assert job.refresh().status == "failed"
    job.retry()
    drain(app)
    assert job.result(timeout=0) == "ok" and job.attempts == 2
    with pytest.raises(InvalidTransition):
        job.retry()


def test_list_jobs_pages_newest_first_with_filters(app, clock):
    generate_image = register(app)
    ids = []
    for i in range(7):
        clock.now += 1
        ids.append(generate_image.options(queue="a" if i % 2 else "b").enqueue("x").id)
    page = app.list_jobs(limit=3)
    assert [j.id for j in page] == ids[::-1][:3] and page.cursor
    rest = app.list_jobs(limit=10, cursor=page.cursor)
    assert [j.id for j in rest] == ids[::-1][3:] and rest.cursor is None
    assert [j.id for j in app.list_jobs(queue="a")] == [ids[5], ids[3], ids[1]]
    with pytest.raises(ValidationError, match="unknown status"):
        app.list_jobs(status="done")
    with pytest.raises(ValidationError, match="limit"):
        app.list_jobs(limit=0)


def test_stats_count_per_queue_and_state(app):
    generate_image = register(app)
    generate_image.enqueue("x")
    generate_image.options(queue="cpu").enqueue("x").cancel()
    assert app.stats() == {"gpu": {"queued": 1}, "cpu": {"cancelled": 1}}


def test_two_tasks_with_one_name_are_refused(app):
    @app.task(name="same")
    def one() -> None: ...

    with pytest.raises(conveyor.ConfigurationError, match="two tasks are named 'same'"):
        @app.task(name="same")
        def two() -> None: ...


def test_current_job_outside_a_task_is_an_error():
    with pytest.raises(conveyor.ConveyorError, match="outside of a running task"):
        current_job()


def test_an_unknown_url_scheme_names_the_choices():
    with pytest.raises(conveyor.ConfigurationError, match="sqlite://"):
        Conveyor("mysql://localhost/x").backend  # noqa: B018


def test_the_public_names_are_exactly_these():
    public = {name for name in dir(conveyor) if not name.startswith("_")} - {
        "app", "backends", "context", "errors", "ids", "job", "middleware", "serialize",
        "signature", "task", "worker", "testing", "process_pool", "embedded", "cli",
        "scheduler", "schedules", "triggers", "web", "metrics", "otel", "demo",
        "scheduler_cli"}
    assert public == set(conveyor.__all__) - {"__version__"}


def test_task_schema_describes_the_arguments(app):
    generate_image = register(app)
    schema = generate_image.signature.json_schema()
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["width"] == {"type": "integer", "default": 512}


def _one_default(a, b=1): ...
def _star_args(a, *args): ...
def _keyword_only(a, *, k): ...
def _every_kind(a, /, b, *, k=2, **kw): ...
def _no_parameters(): ...
def _anything(*args, **kwargs): ...


@pytest.mark.parametrize("fn", [_one_default, _star_args, _keyword_only, _every_kind,
                                _no_parameters, _anything])
def test_positional_calls_are_refused_exactly_when_python_would_refuse_them(fn) -> None:
    # validate() checks the count of positional arguments without Signature.bind
    signature = TaskSignature(fn)
    for count in range(5):
        args = tuple(range(count))
        try:
            signature.signature.bind(*args)
            binds = True
        except TypeError:
            binds = False
        try:
            signature.validate(args, {})
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == binds, (fn.__name__, count)
