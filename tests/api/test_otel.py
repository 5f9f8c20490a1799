"""OpenTelemetry: a PRODUCER span per enqueue and a linked CONSUMER span per attempt."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor import Conveyor, Retry, current_job
from conveyor.otel import OpenTelemetryMiddleware
from conveyor.testing import drain

Traced = tuple[Conveyor, InMemorySpanExporter, TracerProvider]


@pytest.fixture
def traced() -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = Conveyor("memory://")
    app.middleware.append(OpenTelemetryMiddleware(provider))
    yield app, exporter, provider
    provider.shutdown()


def test_enqueue_and_run_make_linked_producer_and_consumer_spans(traced: Traced) -> None:
    app, exporter, provider = traced

    @app.task(queue="images")
    def resize(width: int) -> int:
        current_job().progress(50)
        return width

    with provider.get_tracer("test").start_as_current_span("POST /api/jobs") as request:
        job = resize.enqueue(256)
    assert "traceparent" in app.get_job(job.id).record.headers
    drain(app)

    spans = {s.name: s for s in exporter.get_finished_spans()}
    send, process = spans["send images"], spans["process images"]
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    # the producer is a child of the caller's span; the consumer a child and a link of it
    assert send.parent.span_id == request.get_span_context().span_id
    assert send.context.trace_id == request.get_span_context().trace_id
    assert process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    for span, operation in ((send, "send"), (process, "process")):
        assert span.attributes["messaging.system"] == "conveyor"
        assert span.attributes["messaging.destination.name"] == "images"
        assert span.attributes["messaging.message.id"] == job.id
        assert span.attributes["messaging.operation.type"] == operation
        assert span.attributes["conveyor.task"] == resize.name
    assert process.attributes["conveyor.job.attempt"] == 1
    assert process.status.status_code is StatusCode.UNSET


def test_a_failing_attempt_is_an_error_span_per_attempt(traced: Traced) -> None:
    app, exporter, _ = traced

    @app.task(retries=1)
    def flaky() -> None:
        if current_job().attempt == 1:
            raise Retry(delay=0)
        raise ValueError("still broken")

    job = flaky.enqueue()
    drain(app, raise_errors=False)
    processes = [s for s in exporter.get_finished_spans() if s.name == "process default"]
    assert [s.attributes["conveyor.job.attempt"] for s in processes] == [1, 2]
    assert all(s.status.status_code is StatusCode.ERROR for s in processes)
    assert processes[1].attributes["error.type"] == "ValueError"
    assert processes[1].events[0].name == "exception"
    send = next(s for s in exporter.get_finished_spans() if s.name == "send default")
    assert {s.parent.span_id for s in processes} == {send.context.span_id}
    assert app.get_job(job.id).status == "failed"


def test_parent_false_starts_a_new_trace_with_a_link(traced: Traced) -> None:
    app, exporter, provider = traced
    app.middleware[:] = [OpenTelemetryMiddleware(provider, parent=False)]

    @app.task
    def work() -> None: ...

    work.enqueue()
    drain(app)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    process, send = spans["process default"], spans["send default"]
    assert process.parent is None
    assert process.context.trace_id != send.context.trace_id
    assert process.links[0].context.span_id == send.context.span_id


def test_an_idempotent_repeat_ends_its_span_as_a_duplicate(traced: Traced) -> None:
    app, exporter, _ = traced

    @app.task
    def once() -> None: ...

    first = once.options(key="k").enqueue()
    again = once.options(key="k").enqueue()
    assert again.id == first.id
    sends = [s for s in exporter.get_finished_spans() if s.name == "send default"]
    assert len(sends) == 2
    assert sends[1].attributes["conveyor.job.duplicate_of"] == first.id
