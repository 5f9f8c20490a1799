"""Prometheus metrics: job counters and timings from a middleware, depths from the backend.

::

    from conveyor.metrics import MetricsMiddleware
    app.middleware.append(MetricsMiddleware())     # conveyor.web.create_app adds it for you

What is counted where:

* ``conveyor_jobs_{enqueued,started,succeeded,failed,retried,cancelled}_total{task,queue}``,
  ``conveyor_job_duration_seconds`` and ``conveyor_job_queue_wait_seconds`` (histograms,
  ``{task,queue}``) are counted **in this process** by :class:`MetricsMiddleware`: enqueues
  made here, attempts run by workers here. Each process reports its own share — scrape every
  process (the API's ``/metrics``, or :func:`start_metrics_server` in a worker process) and
  let Prometheus ``sum()`` them. ``cancelled`` counts attempts stopped while running; a queued
  job cancelled before it ran never reaches a worker and is seen in ``conveyor_queue_depth``.
* ``conveyor_queue_depth{queue,state}``, ``conveyor_worker_up{worker}`` and
  ``conveyor_worker_active_jobs{worker}`` are read from the backend at scrape time, so any one
  process reports them for the whole system.

No label ever carries a job id or an argument: series stay few however many jobs run.
The text is written by hand (the format is small), so no client library is needed.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from .backends.base import STATUSES, JobRecord, Outcome, WorkerInfo
from .middleware import Middleware

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from .app import Conveyor

#: seconds; jobs run from milliseconds to hours
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                              30.0, 60.0, 300.0, 900.0, 3600.0)
COUNTERS: dict[str, str] = {
    "enqueued": "Jobs enqueued by this process.",
    "started": "Job attempts started by workers in this process.",
    "succeeded": "Job attempts that succeeded in this process.",
    "failed": "Jobs that failed for good (no retry left) in this process.",
    "retried": "Job attempts that failed and were scheduled again in this process.",
    "cancelled": "Job attempts stopped by a cancel in this process.",
}
_OUTCOME_COUNTER = {"succeeded": "succeeded", "failed": "failed", "scheduled": "retried",
                    "cancelled": "cancelled"}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[str, str]  # (task, queue)


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        counts, total = self.series.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value


class MetricsMiddleware(Middleware):
    """Counts enqueues and attempts in this process (thread-safe)."""

    def __init__(self, buckets: Sequence[float] = BUCKETS) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, dict[Labels, int]] = {name: {} for name in COUNTERS}
        self.duration = Histogram(buckets)
        self.queue_wait = Histogram(buckets)
        # ids built here but not yet stored: an idempotent enqueue hands back another id,
        # and must not count as a new job
        self._pending: OrderedDict[str, None] = OrderedDict()

    def _inc(self, name: str, record: JobRecord) -> None:
        series = self.counters[name]
        labels = (record.task, record.queue)
        series[labels] = series.get(labels, 0) + 1

    def before_enqueue(self, record: JobRecord) -> None:
        with self._lock:
            self._pending[record.id] = None
            while len(self._pending) > 10_000:  # enqueues that failed never come back
                self._pending.popitem(last=False)

    def after_enqueue(self, records: list[JobRecord]) -> None:
        with self._lock:
            for record in records:
                if record.id in self._pending:
                    del self._pending[record.id]
                    self._inc("enqueued", record)

    @contextlib.contextmanager
    def around_run(self, record: JobRecord) -> Iterator[None]:
        waited = (record.started_at or time.time()) - record.run_at
        with self._lock:
            self._inc("started", record)
            self.queue_wait.observe((record.task, record.queue), max(waited, 0.0))
        yield

    def after_run(self, record: JobRecord, outcome: Outcome, duration: float) -> None:
        name = _OUTCOME_COUNTER.get(outcome.status)
        if name is None:  # handed back at shutdown: the attempt did not count
            return
        with self._lock:
            self._inc(name, record)
            self.duration.observe((record.task, record.queue), duration)

    def render(self, tasks: Iterable[Labels] = ()) -> list[str]:
        """The counters and histograms in Prometheus text format; ``tasks`` get zero-valued
        series up front, so ``rate()`` sees their first increment."""
        known = list(tasks)
        lines: list[str] = []
        with self._lock:
            for name, help_text in COUNTERS.items():
                metric = f"conveyor_jobs_{name}_total"
                lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
                series = dict.fromkeys(known, 0) | self.counters[name]
                for labels, value in sorted(series.items()):
                    lines.append(f"{metric}{_labels(task=labels[0], queue=labels[1])} {value}")
            for metric, histogram, help_text in (
                    ("conveyor_job_duration_seconds", self.duration,
                     "How long job attempts ran in this process."),
                    ("conveyor_job_queue_wait_seconds", self.queue_wait,
                     "How long jobs waited between becoming due and starting.")):
                lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} histogram"]
                lines += _histogram_lines(metric, histogram)
        return lines


def _histogram_lines(metric: str, histogram: Histogram) -> list[str]:
    lines = []
    for (task, queue), (counts, total) in sorted(histogram.series.items()):
        cumulative = 0
        for bound, count in zip((*histogram.buckets, math.inf), counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == math.inf else repr(bound)
            lines.append(f"{metric}_bucket{_labels(task=task, queue=queue, le=le)} {cumulative}")
        lines.append(f"{metric}_sum{_labels(task=task, queue=queue)} {total[0]!r}")
        lines.append(f"{metric}_count{_labels(task=task, queue=queue)} {cumulative}")
    return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def backend_lines(stats: dict[str, dict[str, int]], workers: Iterable[WorkerInfo],
                  queues: Iterable[str] = ()) -> list[str]:
    """Gauges read from the backend: queue depths and live workers."""
    lines = ["# HELP conveyor_queue_depth Jobs per queue and state, as stored.",
             "# TYPE conveyor_queue_depth gauge"]
    for queue in sorted(set(stats) | set(queues)):
        for state in STATUSES:
            value = stats.get(queue, {}).get(state, 0)
            lines.append(f"conveyor_queue_depth{_labels(queue=queue, state=state)} {value}")
    live = [w for w in workers if w.kind == "worker"]
    lines += ["# HELP conveyor_worker_up Workers alive (heartbeating), by worker id.",
              "# TYPE conveyor_worker_up gauge"]
    lines += [f"conveyor_worker_up{_labels(worker=w.id)} 1" for w in live]
    lines += ["# HELP conveyor_worker_active_jobs Jobs each live worker holds.",
              "# TYPE conveyor_worker_active_jobs gauge"]
    lines += [f"conveyor_worker_active_jobs{_labels(worker=w.id)} {len(w.current_jobs)}"
              for w in live]
    return lines


def find(app: Conveyor) -> MetricsMiddleware | None:
    return next((m for m in app.middleware if isinstance(m, MetricsMiddleware)), None)


def install(app: Conveyor) -> MetricsMiddleware:
    """The app's metrics middleware, added on first call."""
    middleware = find(app)
    if middleware is None:
        middleware = MetricsMiddleware()
        app.middleware.append(middleware)
    return middleware


def render(app: Conveyor) -> str:
    """Everything, in Prometheus text format (reads the backend: call it off the event loop)."""
    middleware = find(app)
    tasks = [(t.name, t.queue) for t in app.tasks.values()]
    lines = middleware.render(tasks) if middleware is not None else []
    queues = {t.queue for t in app.tasks.values()} | {app.default_queue}
    lines += backend_lines(app.stats(), app.workers(), queues)
    return "\n".join(lines) + "\n"


def start_metrics_server(app: Conveyor, host: str = "127.0.0.1",
                         port: int = 9464) -> ThreadingHTTPServer:
    """Serve ``/metrics`` from a background thread — for worker processes, which have no API
    to scrape. Installs the middleware; ``server.shutdown()`` stops it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    install(app)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = render(app).encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="conveyor-metrics", daemon=True).start()
    return server
