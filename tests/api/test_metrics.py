"""The metrics middleware and the Prometheus text it renders."""

from __future__ import annotations

import urllib.request

from conveyor import Conveyor, current_job
from conveyor.backends.base import JobRecord, Outcome, WorkerInfo
from conveyor.metrics import MetricsMiddleware, backend_lines, install, start_metrics_server
from conveyor.testing import drain


def test_histograms_are_cumulative_with_sum_and_count() -> None:
    metrics = MetricsMiddleware(buckets=(0.1, 1.0))
    record = JobRecord(id="j", task="t", queue="q")
    for duration in (0.05, 0.1, 0.5, 3.0):
        metrics.after_run(record, Outcome("j", 1, "succeeded"), duration)
    text = "\n".join(metrics.render())
    assert 'conveyor_job_duration_seconds_bucket{task="t",queue="q",le="0.1"} 2' in text
    assert 'conveyor_job_duration_seconds_bucket{task="t",queue="q",le="1.0"} 3' in text
    assert 'conveyor_job_duration_seconds_bucket{task="t",queue="q",le="+Inf"} 4' in text
    assert 'conveyor_job_duration_seconds_sum{task="t",queue="q"} 3.65' in text
    assert 'conveyor_job_duration_seconds_count{task="t",queue="q"} 4' in text
    assert 'conveyor_jobs_succeeded_total{task="t",queue="q"} 4' in text


def test_outcomes_map_to_counters_and_handing_back_counts_nothing() -> None:
    metrics = MetricsMiddleware()
    record = JobRecord(id="j", task="t", queue="q")
    for status in ("failed", "scheduled", "cancelled", "queued"):
        metrics.after_run(record, Outcome("j", 1, status), 0.1)
    assert {name: sum(series.values()) for name, series in metrics.counters.items()} == {
        "enqueued": 0, "started": 0, "succeeded": 0, "failed": 1, "retried": 1,
        "cancelled": 1}


def test_an_idempotent_repeat_is_not_counted_twice() -> None:
    app = Conveyor("memory://")
    metrics = install(app)
    assert install(app) is metrics

    @app.task
    def once() -> None: ...

    once.options(key="k").enqueue()
    once.options(key="k").enqueue()
    assert metrics.counters["enqueued"] == {(once.name, "default"): 1}


def test_label_values_are_escaped() -> None:
    lines = backend_lines({'we"ird\\q\n': {"queued": 2}},
                          [WorkerInfo(id="w1", host="h", pid=1, current_jobs=["a", "b"])])
    assert 'conveyor_queue_depth{queue="we\\"ird\\\\q\\n",state="queued"} 2' in lines
    assert 'conveyor_worker_up{worker="w1"} 1' in lines
    assert 'conveyor_worker_active_jobs{worker="w1"} 2' in lines


def test_a_worker_process_can_serve_its_own_metrics() -> None:
    app = Conveyor("memory://")

    @app.task
    def work() -> None:
        current_job().progress(50)

    server = start_metrics_server(app, port=0)
    try:
        work.enqueue()
        drain(app)
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert f'conveyor_jobs_succeeded_total{{task="{work.name}",queue="default"}} 1' in text
    finally:
        server.shutdown()
        server.server_close()
