"""OpenTelemetry tracing for jobs, following the messaging semantic conventions.

::

    from conveyor.otel import OpenTelemetryMiddleware
    app.middleware.append(OpenTelemetryMiddleware())      # pip install 'conveyor-jobs[otel]'

* Enqueueing a job makes a ``send {queue}`` span (kind PRODUCER), a child of whatever span is
  current (an HTTP request, say), and stores its trace context in the job's ``headers``
  (W3C ``traceparent``, through the configured propagator).
* Each attempt a worker runs is a ``process {queue}`` span (kind CONSUMER) *linked* to that
  producer span and, by default, its child too, so one trace shows the request, the enqueue
  and every attempt (``parent=False`` starts a new trace per attempt, with the link only).

Attributes: ``messaging.system="conveyor"``, ``messaging.destination.name`` (the queue),
``messaging.message.id`` (the job id), ``messaging.operation.type`` / ``.name``
(``send`` / ``process``), plus ``conveyor.task`` and ``conveyor.job.attempt``. An attempt that
raises is recorded as an error (``error.type``); one stopped by a cancel is marked
``conveyor.job.cancelled``.

Only ``opentelemetry-api`` is needed here; the SDK and exporters are the application's choice.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from .backends.base import JobRecord
from .errors import Cancelled
from .middleware import Middleware

__all__ = ["OpenTelemetryMiddleware"]

SYSTEM = "conveyor"
#: a producer span whose job was never stored (the enqueue failed, or a scheduler lost the
#: race for a fire time) is ended as such after this many seconds
_ORPHAN_AFTER = 60.0


class OpenTelemetryMiddleware(Middleware):
    def __init__(self, tracer_provider: trace.TracerProvider | None = None, *,
                 parent: bool = True) -> None:
        from . import __version__

        self.tracer = trace.get_tracer("conveyor", __version__, tracer_provider=tracer_provider)
        self.parent = parent
        self._lock = threading.Lock()
        # producer spans between before_enqueue and after_enqueue, by job id
        self._sending: dict[str, tuple[trace.Span, str | None, float]] = {}

    # -- producing ---------------------------------------------------------------------------

    def before_enqueue(self, record: JobRecord) -> None:
        span = self.tracer.start_span(
            f"send {record.queue}", kind=SpanKind.PRODUCER,
            attributes=_attributes(record, "send"))
        propagate.inject(record.headers, context=trace.set_span_in_context(span))
        with self._lock:
            self._sending[record.id] = (span, record.key, time.monotonic())

    def after_enqueue(self, records: list[JobRecord]) -> None:
        done: list[tuple[trace.Span, dict[str, Any]]] = []
        with self._lock:
            for record in records:
                entry = self._sending.pop(record.id, None)
                if entry is not None:
                    done.append((entry[0], {}))
                elif record.key is not None:
                    # an idempotent enqueue handed back the live job with this key
                    same_key = next((i for i, e in self._sending.items() if e[1] == record.key),
                                    None)
                    if same_key is not None:
                        span = self._sending.pop(same_key)[0]
                        done.append((span, {"conveyor.job.duplicate_of": record.id}))
            orphans = self._orphans()
        for span, attributes in done:
            span.set_attributes(attributes)
            span.end()
        for span in orphans:
            span.set_status(Status(StatusCode.ERROR, "the job was not stored"))
            span.end()

    def _orphans(self) -> list[trace.Span]:
        cutoff = time.monotonic() - _ORPHAN_AFTER
        stale = [i for i, (_, _, at) in self._sending.items() if at < cutoff]
        return [self._sending.pop(i)[0] for i in stale]

    # -- consuming ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def around_run(self, record: JobRecord) -> Iterator[None]:
        carried = propagate.extract(record.headers)
        producer = trace.get_current_span(carried).get_span_context()
        links = [Link(producer)] if producer.is_valid else []
        attributes = _attributes(record, "process")
        attributes["conveyor.job.attempt"] = record.attempts
        span = self.tracer.start_span(
            f"process {record.queue}", kind=SpanKind.CONSUMER, links=links,
            attributes=attributes, context=carried if self.parent else None)
        with trace.use_span(span, end_on_exit=True, record_exception=False,
                            set_status_on_exception=False):
            try:
                yield
            except Cancelled:
                span.set_attribute("conveyor.job.cancelled", True)
                raise
            except BaseException as exc:  # JobTimeout is a BaseException, and an error
                span.record_exception(exc)
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise


def _attributes(record: JobRecord, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": record.queue,
        "messaging.message.id": record.id,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "conveyor.task": record.task,
    }
