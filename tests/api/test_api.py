"""The HTTP API against the ASGI app, on every engine: every endpoint, every error row."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from api_support import GATES, build_app, parse_sse
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient
from support import wait_until

from conveyor import Conveyor
from conveyor.testing import drain
from conveyor.web import create_app, dispatch

PROBLEM = "application/problem+json"


def submit(client: TestClient, task: str, **body: Any) -> dict[str, Any]:
    response = client.post("/api/jobs", json={"task": task, **body})
    assert response.status_code == 201, response.text
    return response.json()


def assert_problem(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:conveyor:problem:{kind}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body


def job_of(app: Conveyor, job_id: str) -> Any:
    return app.get_job(job_id).record


# -- submit ----------------------------------------------------------------------------------

def test_submit_returns_201_with_the_job_and_its_location(client: TestClient) -> None:
    response = client.post("/api/jobs", json={"task": "add", "args": [1], "kwargs": {"b": 5},
                                              "priority": 3, "queue": "fast"})
    assert response.status_code == 201
    job = response.json()
    assert response.headers["location"] == f"/api/jobs/{job['id']}"
    assert (job["task"], job["status"], job["args"], job["kwargs"]) == \
        ("add", "queued", [1], {"b": 5})
    assert (job["priority"], job["queue"]) == (3, "fast")
    assert client.get(response.headers["location"]).json()["id"] == job["id"]


def test_submit_with_delay_or_eta_schedules_the_job(client: TestClient, app: Conveyor) -> None:
    delayed = submit(client, "add", args=[1], delay=60)
    assert delayed["status"] == "scheduled"
    assert delayed["run_at"] == pytest.approx(delayed["created_at"] + 60)
    at = submit(client, "add", args=[1], eta="2100-01-01T00:00:00Z")
    assert (at["status"], at["run_at"]) == ("scheduled", 4102444800.0)
    unix = submit(client, "add", args=[1], eta=4102444800)
    assert unix["run_at"] == 4102444800.0


def test_submit_with_a_live_key_returns_the_existing_job_with_200(client: TestClient) -> None:
    first = submit(client, "add", args=[1], key="once")
    again = client.post("/api/jobs", json={"task": "add", "args": [2], "key": "once"})
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    assert again.headers["location"] == f"/api/jobs/{first['id']}"


def test_a_task_that_is_not_exposed_is_refused_with_403(client: TestClient) -> None:
    body = assert_problem(client.post("/api/jobs", json={"task": "internal"}), 403,
                          "task-not-exposed")
    assert "expose=True" in body["detail"]


def test_an_unknown_task_is_a_422_pointing_at_the_task(client: TestClient) -> None:
    body = assert_problem(client.post("/api/jobs", json={"task": "nope"}), 422,
                          "unknown-task")
    assert body["errors"] == [{"pointer": "#/task", "message": "no task has this name"}]


@pytest.mark.parametrize(("payload", "pointers"), [
    ({"task": "add", "kwargs": {"a": "one"}}, ["#/kwargs/a"]),
    ({"task": "add", "args": ["one"]}, ["#/args/0"]),
    ({"task": "add", "kwargs": {"a": 1, "width": 3}}, ["#"]),
    ({"task": "add"}, ["#"]),
    ({"args": [1]}, ["#/task"]),
    ({"task": "add", "args": {}, "kwargs": []}, ["#/args", "#/kwargs"]),
    ({"task": "add", "args": [1], "color": "red"}, ["#/color"]),
    ({"task": "add", "args": [1], "delay": -1}, ["#/delay"]),
    ({"task": "add", "args": [1], "delay": 1, "eta": 5}, ["#/eta"]),
    ({"task": "add", "args": [1], "eta": "tomorrow"}, ["#/eta"]),
    ({"task": "add", "args": [1], "eta": "2030-01-01T00:00:00"}, ["#/eta"]),
    ({"task": "add", "args": [1], "priority": 2**40}, ["#/priority"]),
    ({"task": "add", "args": [1], "priority": True}, ["#/priority"]),
    ({"task": "add", "args": [1], "queue": ""}, ["#/queue"]),
    ({"task": "add", "args": [1], "key": "k" * 256}, ["#/key"]),
    ({"task": 7}, ["#/task"]),
    ([1, 2], ["#"]),
])
def test_invalid_submissions_are_422_with_a_pointer_per_error(
        client: TestClient, payload: Any, pointers: list[str]) -> None:
    body = assert_problem(client.post("/api/jobs", json=payload), 422, "validation-error")
    assert [e["pointer"] for e in body["errors"]] == pointers
    assert all(e["message"] for e in body["errors"])


def test_malformed_json_is_a_400(client: TestClient) -> None:
    for raw in (b"{not json", b"", b"[1, 2", b'{"task": NaN}', b"\xff\xfe"):
        response = client.post("/api/jobs", content=raw,
                               headers={"content-type": "application/json"})
        assert_problem(response, 400, "malformed-json")


def test_a_deeply_nested_body_is_a_client_error_not_a_500(client: TestClient) -> None:
    raw = b'{"task": "add", "kwargs": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    response = client.post("/api/jobs", content=raw, headers={"content-type":
                                                              "application/json"})
    assert response.status_code in (400, 413, 422)


def test_a_string_that_is_not_unicode_is_refused(client: TestClient) -> None:
    raw = b'{"task": "add", "args": [1], "key": "\\ud800"}'
    response = client.post("/api/jobs", content=raw, headers={"content-type":
                                                              "application/json"})
    assert response.status_code in (400, 422)


def test_a_body_that_is_not_json_is_a_415(client: TestClient) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "application/json; charset=latin-1", ""):
        response = client.post("/api/jobs", content=b'{"task": "add"}',
                               headers={"content-type": content_type})
        assert_problem(response, 415, "unsupported-media-type")
    ok = client.post("/api/jobs", content=b'{"task": "add", "args": [1]}',
                     headers={"content-type": "application/vnd.api+json; charset=utf-8"})
    assert ok.status_code == 201


def test_a_body_over_the_limit_is_a_413_by_header_or_by_count(
        make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body=200)
    big = b'{"task": "add", "args": [1], "key": "' + b"k" * 300 + b'"}'
    assert_problem(client.post("/api/jobs", content=big,
                               headers={"content-type": "application/json"}),
                   413, "payload-too-large")

    def chunks() -> Any:  # no Content-Length: the bytes received are counted
        yield big[:100]
        yield big[100:]

    response = client.post("/api/jobs", content=chunks(),
                           headers={"content-type": "application/json"})
    assert_problem(response, 413, "payload-too-large")
    assert client.post("/api/jobs", json={"task": "add", "args": [1]}).status_code == 201


def test_arguments_over_the_apps_payload_limit_are_a_413(backend_url: str) -> None:
    app = build_app(backend_url)
    app.payload_limit = 50
    with TestClient(create_app(app, tokens=[], read_only_tokens=[])) as client:
        response = client.post("/api/jobs", json={"task": "add", "args": [1],
                                                  "key": "x", "kwargs": {"b": 10**60}})
        assert_problem(response, 413, "payload-too-large")
    app.close()


# -- read --------------------------------------------------------------------------------

def test_get_an_unknown_job_is_a_404(client: TestClient) -> None:
    assert_problem(client.get("/api/jobs/01890000-0000-7000-8000-000000000000"), 404,
                   "job-not-found")
    assert_problem(client.get("/api/jobs/not%20an%20id%00"), 404, "job-not-found")
    for action in ("cancel", "retry"):
        assert_problem(client.post(f"/api/jobs/nope/{action}"), 404, "job-not-found")
    assert_problem(client.delete("/api/jobs/nope"), 404, "job-not-found")
    assert_problem(client.get("/api/jobs/nope/result"), 404, "job-not-found")
    assert_problem(client.get("/api/jobs/nope/events"), 404, "job-not-found")


def test_list_filters_and_pages_with_a_cursor(client: TestClient, app: Conveyor) -> None:
    ids = [submit(client, "add", args=[i])["id"] for i in range(5)]
    other = submit(client, "boom")["id"]
    app.get_job(ids[0]).cancel()
    everything = client.get("/api/jobs").json()
    assert [j["id"] for j in everything["jobs"]] == [other, *reversed(ids)]
    assert everything["cursor"] is None and everything["next"] is None

    first = client.get("/api/jobs", params={"task": "add", "limit": 2})
    page = first.json()
    assert [j["id"] for j in page["jobs"]] == [ids[4], ids[3]]
    assert page["next"].startswith("/api/jobs?") and "cursor=" in page["next"]
    assert first.headers["link"] == f'<{page["next"]}>; rel="next"'
    seen = [j["id"] for j in page["jobs"]]
    while page["next"]:
        page = client.get(page["next"]).json()
        seen += [j["id"] for j in page["jobs"]]
    assert seen == list(reversed(ids))

    cancelled = client.get("/api/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert client.get("/api/jobs", params={"queue": "nowhere"}).json()["jobs"] == []


@pytest.mark.parametrize("query", [
    {"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"limit": "-5"},
    {"status": "sleeping"}, {"cursor": "x" * 200}, {"cursor": "a b"},
    {"queue": "q" * 300}, {"task": "a\x00b"},
])
def test_list_parameters_are_bounded(client: TestClient, query: dict[str, str]) -> None:
    body = assert_problem(client.get("/api/jobs", params=query), 422, "validation-error")
    assert body["errors"][0]["parameter"] == next(iter(query))


def test_a_read_only_caller_sees_no_tracebacks(make_client: Callable[..., TestClient],
                                               app: Conveyor) -> None:
    full = make_client(tokens=["full"], read_only_tokens=["read"])
    job = full.post("/api/jobs", json={"task": "boom"},
                    headers={"Authorization": "Bearer full"}).json()
    drain(app, raise_errors=False)
    as_admin = full.get(f"/api/jobs/{job['id']}", headers={"Authorization": "Bearer full"})
    assert "ValueError" in as_admin.json()["errors"][0]["traceback"]
    as_reader = full.get(f"/api/jobs/{job['id']}", headers={"Authorization": "Bearer read"})
    error = as_reader.json()["errors"][0]
    assert (error["type"], error["message"], error["traceback"]) == ("ValueError", "kaboom",
                                                                      None)


# -- result ------------------------------------------------------------------------------

def test_result_of_a_succeeded_job(client: TestClient, app: Conveyor) -> None:
    job = submit(client, "add", args=[2], kwargs={"b": 40})
    pending = client.get(f"/api/jobs/{job['id']}/result")
    assert pending.status_code == 202
    assert pending.json()["status"] == "queued"
    assert pending.headers["retry-after"] == "1"
    drain(app)
    done = client.get(f"/api/jobs/{job['id']}/result")
    assert done.status_code == 200
    assert done.json()["result"] == 42 and done.json()["status"] == "succeeded"


def test_result_waits_for_the_job(client: TestClient, worker: Callable[[], Any]) -> None:
    job = submit(client, "steps", kwargs={"count": 1, "pause": 0.1})
    worker()
    response = client.get(f"/api/jobs/{job['id']}/result", params={"wait": 10})
    assert response.status_code == 200
    assert response.json()["result"] == "done"


def test_result_wait_gives_up_with_202(client: TestClient) -> None:
    job = submit(client, "add", args=[1])
    response = client.get(f"/api/jobs/{job['id']}/result", params={"wait": 0.3})
    assert response.status_code == 202


def test_result_of_a_failed_job_is_a_409_with_the_error(client: TestClient,
                                                        app: Conveyor) -> None:
    job = submit(client, "boom", kwargs={"message": "disk full"})
    drain(app, raise_errors=False)
    body = assert_problem(client.get(f"/api/jobs/{job['id']}/result"), 409, "job-failed")
    assert "ValueError: disk full" in body["detail"]
    assert body["error"]["type"] == "ValueError" and body["job_status"] == "failed"


def test_result_of_a_cancelled_job_is_a_409(client: TestClient) -> None:
    job = submit(client, "add", args=[1])
    client.post(f"/api/jobs/{job['id']}/cancel")
    assert_problem(client.get(f"/api/jobs/{job['id']}/result"), 409, "job-cancelled")


@pytest.mark.parametrize("wait", ["61", "-1", "nan", "inf", "soon"])
def test_result_wait_is_bounded(client: TestClient, wait: str) -> None:
    job = submit(client, "add", args=[1])
    body = assert_problem(client.get(f"/api/jobs/{job['id']}/result", params={"wait": wait}),
                          422, "validation-error")
    assert body["errors"][0]["parameter"] == "wait"


# -- cancel, retry, delete ---------------------------------------------------------------

def test_cancel_a_queued_job_is_200_and_a_finished_one_409(client: TestClient) -> None:
    job = submit(client, "add", args=[1])
    response = client.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    body = assert_problem(client.post(f"/api/jobs/{job['id']}/cancel"), 409,
                          "invalid-transition")
    assert body["job_status"] == "cancelled"


def test_cancel_a_running_job_is_202_and_the_worker_stops_it(
        client: TestClient, app: Conveyor, worker: Callable[[], Any]) -> None:
    job = submit(client, "gated", kwargs={"gate": "cancel-me"})
    worker()
    wait_until(lambda: job_of(app, job["id"]).progress == 10, what="the job to start")
    response = client.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    result = client.get(f"/api/jobs/{job['id']}/result", params={"wait": 10})
    assert_problem(result, 409, "job-cancelled")


def test_retry_a_failed_job_and_refuse_others(client: TestClient, app: Conveyor) -> None:
    job = submit(client, "boom")
    assert_problem(client.post(f"/api/jobs/{job['id']}/retry"), 409, "invalid-transition")
    drain(app, raise_errors=False)
    response = client.post(f"/api/jobs/{job['id']}/retry")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["max_attempts"]) == ("queued", 2)


def test_delete_refuses_a_running_job_and_removes_others(
        client: TestClient, app: Conveyor, worker: Callable[[], Any]) -> None:
    job = submit(client, "gated", kwargs={"gate": "delete-me"})
    worker()
    wait_until(lambda: job_of(app, job["id"]).status == "running", what="the job to start")
    body = assert_problem(client.delete(f"/api/jobs/{job['id']}"), 409, "job-running")
    assert "cancel it first" in body["detail"]
    GATES["delete-me"].set()
    wait_until(lambda: job_of(app, job["id"]).finished, what="the job to end")
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
    assert_problem(client.get(f"/api/jobs/{job['id']}"), 404, "job-not-found")


# -- events ------------------------------------------------------------------------------

def stream_in_thread(client: TestClient, url: str, headers: dict[str, str] | None = None
                     ) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def read() -> None:
        response = client.get(url, headers=headers or {})
        box["status"] = response.status_code
        box["headers"] = response.headers
        box["events"] = parse_sse(response.text)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, box


def streams(client: TestClient) -> int:
    return client.app.state.conveyor.feed.streams  # type: ignore[attr-defined,no-any-return]


def test_events_stream_state_and_progress_in_order_until_the_end(
        client: TestClient, worker: Callable[[], Any]) -> None:
    job = submit(client, "steps", kwargs={"count": 3, "pause": 0.15})
    thread, box = stream_in_thread(client, f"/api/jobs/{job['id']}/events")
    wait_until(lambda: streams(client) == 1, what="the stream to open")
    worker()
    thread.join(20)
    assert not thread.is_alive(), "the stream did not end with the job"
    assert box["status"] == 200
    assert box["headers"]["content-type"].startswith("text/event-stream")
    events = [e for e in box["events"] if "event" in e]
    assert box["events"][0] == {"retry": "2000"}
    seen = [(e["event"], e["data"]["status"], e["data"]["progress"]["percent"])
            for e in events]
    assert seen == [("state", "queued", 0.0), ("state", "running", 0.0),
                    ("progress", "running", 25.0), ("progress", "running", 50.0),
                    ("progress", "running", 75.0), ("state", "succeeded", 100.0)]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[-1] == events[-1]["data"]["version"]
    assert events[-1]["data"]["result"] == "done"


def test_events_resume_after_last_event_id(client: TestClient, app: Conveyor,
                                           worker: Callable[[], Any]) -> None:
    job = submit(client, "gated", kwargs={"gate": "resume"})
    worker()
    wait_until(lambda: job_of(app, job["id"]).progress == 10, what="the job to start")
    seen = job_of(app, job["id"]).version
    thread, box = stream_in_thread(client, f"/api/jobs/{job['id']}/events",
                                   {"Last-Event-ID": str(seen)})
    wait_until(lambda: streams(client) == 1, what="the stream to open")
    GATES["resume"].set()
    thread.join(20)
    events = [e for e in box["events"] if "event" in e]
    assert events, "nothing after the last event seen"
    assert all(e["id"] > seen for e in events)
    assert events[-1]["data"]["status"] == "succeeded"

    # the final version already seen: 204, which makes an EventSource stop reconnecting
    final = events[-1]["id"]
    again = client.get(f"/api/jobs/{job['id']}/events", headers={"Last-Event-ID": str(final)})
    assert again.status_code == 204
    replay = client.get(f"/api/jobs/{job['id']}/events",
                        params={"last_event_id": final - 1})
    assert [e["id"] for e in parse_sse(replay.text) if "event" in e] == [final]


def test_events_of_a_finished_job_send_its_final_state_and_end(client: TestClient,
                                                               app: Conveyor) -> None:
    job = submit(client, "add", args=[1])
    drain(app)
    events = [e for e in parse_sse(client.get(f"/api/jobs/{job['id']}/events").text)
              if "event" in e]
    assert [(e["event"], e["data"]["status"]) for e in events] == [("state", "succeeded")]
    junk = client.get(f"/api/jobs/{job['id']}/events", headers={"Last-Event-ID": "banana"})
    assert junk.status_code == 200  # an id that is not ours is ignored: full state again
    future = client.get(f"/api/jobs/{job['id']}/events", headers={"Last-Event-ID": "99999"})
    assert future.status_code == 200


def test_events_send_heartbeats_while_nothing_changes(
        make_client: Callable[..., TestClient], app: Conveyor) -> None:
    client = make_client(heartbeat=0.05)
    job = submit(client, "add", args=[1])
    thread, box = stream_in_thread(client, f"/api/jobs/{job['id']}/events")
    wait_until(lambda: streams(client) == 1, what="the stream to open")
    threading.Event().wait(0.3)
    app.get_job(job["id"]).cancel()
    thread.join(10)
    comments = [e for e in box["events"] if e.get("comment") == "keepalive"]
    assert len(comments) >= 2
    assert box["events"][-1]["data"]["status"] == "cancelled"


def test_events_end_with_deleted_when_the_job_is_deleted(client: TestClient,
                                                         app: Conveyor) -> None:
    job = submit(client, "add", args=[1], delay=600)
    thread, box = stream_in_thread(client, f"/api/jobs/{job['id']}/events")
    wait_until(lambda: streams(client) == 1, what="the stream to open")
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
    thread.join(10)
    assert box["events"][-1] == {"event": "deleted", "data": {"id": job["id"]}}


def test_head_of_an_event_stream_sends_no_stream(client: TestClient) -> None:
    job = submit(client, "add", args=[1])
    response = client.head(f"/api/jobs/{job['id']}/events")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-type"].startswith("text/event-stream")


def test_too_many_streams_is_a_503(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_streams=1)
    job = submit(client, "add", args=[1], delay=600)
    thread, _ = stream_in_thread(client, f"/api/jobs/{job['id']}/events")
    wait_until(lambda: streams(client) == 1, what="the stream to open")
    body = assert_problem(client.get(f"/api/jobs/{job['id']}/events"), 503, "too-many-streams")
    assert body["detail"]
    client.post(f"/api/jobs/{job['id']}/cancel")
    thread.join(10)
    assert not thread.is_alive()


@pytest.mark.anyio
async def test_a_client_that_goes_away_frees_its_stream(app: Conveyor) -> None:
    api = create_app(app, tokens=[], read_only_tokens=[])
    job = app.enqueue("add", [1], delay=600)
    sent: list[dict[str, Any]] = []
    disconnect = threading.Event()

    async def receive() -> dict[str, Any]:
        import anyio

        while not disconnect.is_set():
            await anyio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body", b"").startswith(b"id:"):
            disconnect.set()  # leave after the first event

    scope = {"type": "http", "method": "GET", "path": f"/api/jobs/{job.id}/events",
             "raw_path": f"/api/jobs/{job.id}/events".encode(), "root_path": "",
             "query_string": b"", "headers": [], "scheme": "http", "http_version": "1.1",
             "server": ("test", 80), "client": ("test", 1), "asgi": {"version": "3.0"}}
    import anyio

    with anyio.fail_after(10):
        await api(scope, receive, send)
    ctx = api.state.conveyor
    assert ctx.feed.streams == 0 and ctx.feed.watched_jobs == 0
    assert sent[0]["status"] == 200


# -- catalog -----------------------------------------------------------------------------

def test_tasks_list_every_task_with_its_argument_schema(client: TestClient) -> None:
    tasks = {t["name"]: t for t in client.get("/api/tasks").json()["tasks"]}
    assert {"add", "steps", "internal", "boom"} <= set(tasks)
    add = tasks["add"]
    assert (add["expose"], add["queue"], add["doc"]) == (True, "default", "Add two numbers.")
    assert add["schema"]["properties"] == {"a": {"type": "integer"},
                                           "b": {"type": "integer", "default": 2}}
    assert add["schema"]["required"] == ["a"]
    assert tasks["internal"]["expose"] is False


def test_queues_count_jobs_per_state(client: TestClient) -> None:
    submit(client, "add", args=[1])
    submit(client, "add", args=[1], queue="slow")
    queues = {q["name"]: q for q in client.get("/api/queues").json()["queues"]}
    assert queues["default"]["counts"]["queued"] == 1
    assert queues["slow"]["counts"] == {"scheduled": 0, "queued": 1, "running": 0,
                                        "succeeded": 0, "failed": 0, "cancelled": 0}
    assert queues["slow"]["total"] == 1


def test_workers_list_live_workers(client: TestClient, app: Conveyor,
                                   worker: Callable[[], Any]) -> None:
    assert client.get("/api/workers").json() == {"workers": []}
    w = worker()
    listed = wait_until(lambda: client.get("/api/workers").json()["workers"],
                        what="the worker to register")
    assert listed[0]["id"] == w.id and listed[0]["kind"] == "worker"
    assert listed[0]["concurrency"] == 4 and listed[0]["queues"]
    assert client.get("/api/workers", params={"kind": "scheduler"}).json()["workers"] == []
    assert_problem(client.get("/api/workers", params={"kind": "robot"}), 422,
                   "validation-error")


# -- schedules ---------------------------------------------------------------------------

def test_schedules_list_pause_resume_and_trigger(client: TestClient, app: Conveyor) -> None:
    schedules = client.get("/api/schedules").json()["schedules"]
    assert [s["id"] for s in schedules] == ["hourly"]
    paused = client.post("/api/schedules/hourly/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    resumed = client.post("/api/schedules/hourly/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    triggered = client.post("/api/schedules/hourly/trigger")
    assert triggered.status_code == 201
    job = triggered.json()
    assert job["status"] == "queued" and triggered.headers["location"].endswith(job["id"])
    assert app.get_job(job["id"]).record.headers["schedule"] == "hourly"


def test_an_unknown_schedule_is_a_404(client: TestClient) -> None:
    for action in ("pause", "resume", "trigger"):
        assert_problem(client.post(f"/api/schedules/nope/{action}"), 404,
                       "schedule-not-found")


# -- health and metrics ------------------------------------------------------------------

def test_health_checks_the_backend(client: TestClient, app: Conveyor) -> None:
    response = client.get("/health")
    assert response.json() == {"status": "ok", "backend": app.backend.name}


def test_health_of_an_unreachable_backend_is_a_503(tmp_path: Any) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/missing-dir/nested/x.db")
    app.backend.check = _raise_unavailable  # type: ignore[method-assign]
    with TestClient(create_app(app, tokens=[], read_only_tokens=[])) as client:
        body = assert_problem(client.get("/health"), 503, "unhealthy")
        assert "secret" not in body["detail"]


def _raise_unavailable() -> None:
    from conveyor import BackendUnavailable

    raise BackendUnavailable("cannot reach postgresql://admin:secret@db")


def test_scheduler_health_needs_a_live_scheduler(client: TestClient, app: Conveyor) -> None:
    assert_problem(client.get("/health/scheduler"), 503, "no-scheduler")
    from conveyor.backends.base import WorkerInfo

    app.backend.heartbeat_worker(WorkerInfo(id="sched-1", host="h", pid=1, kind="scheduler",
                                            last_heartbeat=app.clock()), ttl=30)
    response = client.get("/health/scheduler")
    assert response.status_code == 200
    assert [s["id"] for s in response.json()["schedulers"]] == ["sched-1"]


def test_metrics_in_prometheus_format(client: TestClient, app: Conveyor) -> None:
    job = submit(client, "add", args=[1])
    submit(client, "boom")
    submit(client, "add", args=[2], queue="slow")
    drain(app, queues=["default", "slow"], raise_errors=False)
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'conveyor_jobs_enqueued_total{task="add",queue="default"} 1' in text
    assert 'conveyor_jobs_started_total{task="add",queue="default"} 1' in text
    assert 'conveyor_jobs_succeeded_total{task="add",queue="slow"} 1' in text
    assert 'conveyor_jobs_failed_total{task="boom",queue="default"} 1' in text
    assert 'conveyor_job_duration_seconds_count{task="add",queue="default"} 1' in text
    assert 'conveyor_job_queue_wait_seconds_bucket{task="add",queue="default",le="+Inf"} 1' \
        in text
    assert 'conveyor_queue_depth{queue="default",state="succeeded"} 1' in text
    assert job["id"] not in text
    for line in text.splitlines():  # every sample line: name{labels} value
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_metrics_list_live_workers(client: TestClient, worker: Callable[[], Any]) -> None:
    w = worker()
    wait_until(lambda: f'conveyor_worker_up{{worker="{w.id}"}} 1' in
               client.get("/metrics").text, what="the worker in the metrics")
    assert f'conveyor_worker_active_jobs{{worker="{w.id}"}} 0' in client.get("/metrics").text


# -- auth --------------------------------------------------------------------------------

def test_without_tokens_the_api_is_open(client: TestClient) -> None:
    assert client.get("/api/jobs").status_code == 200


def test_bearer_tokens(make_client: Callable[..., TestClient]) -> None:
    client = make_client(tokens=["full-token"], read_only_tokens=["read-token"])
    missing = client.get("/api/jobs")
    assert_problem(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == 'Bearer realm="conveyor"'
    wrong = client.get("/api/jobs", headers={"Authorization": "Bearer nope"})
    assert_problem(wrong, 401, "unauthorized")
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    basic = client.get("/api/jobs", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert_problem(basic, 401, "unauthorized")

    full = {"Authorization": "Bearer full-token"}
    read = {"Authorization": "bearer read-token"}
    job = client.post("/api/jobs", json={"task": "add", "args": [1]}, headers=full)
    assert job.status_code == 201
    job_id = job.json()["id"]
    assert client.get(f"/api/jobs/{job_id}", headers=read).status_code == 200
    assert client.get("/metrics", headers=read).status_code == 200
    assert client.get("/openapi.json", headers=read).status_code == 200
    for method, url in (("POST", "/api/jobs"), ("POST", f"/api/jobs/{job_id}/cancel"),
                        ("POST", f"/api/jobs/{job_id}/retry"), ("DELETE", f"/api/jobs/{job_id}"),
                        ("POST", "/api/schedules/hourly/pause"),
                        ("POST", "/api/schedules/hourly/trigger")):
        response = client.request(method, url, headers=read, json={"task": "add"})
        assert_problem(response, 403, "read-only-token")
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=full).status_code == 200
    # probes and the docs page need no token; the OpenAPI document does
    assert client.get("/health").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/metrics").status_code == 401


def test_tokens_from_the_environment(app: Conveyor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_API_TOKENS", "one, two")
    monkeypatch.setenv("CONVEYOR_API_READ_TOKENS", "three")
    with TestClient(create_app(app)) as client:
        assert client.get("/api/jobs").status_code == 401
        for token in ("one", "two", "three"):
            response = client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200
        denied = client.post("/api/jobs", json={"task": "add", "args": [1]},
                             headers={"Authorization": "Bearer three"})
        assert denied.status_code == 403


# -- routing, CORS, mounting -------------------------------------------------------------

def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/api/nothing"), 404, "not-found")
    not_allowed = client.put("/api/jobs")
    assert_problem(not_allowed, 405, "method-not-allowed")
    assert "GET" in not_allowed.headers["allow"]


def test_cors_is_off_by_default_and_configurable(make_client: Callable[..., TestClient]
                                                 ) -> None:
    closed = make_client()
    response = closed.get("/api/jobs", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers
    open_ = make_client(cors_origins=["https://app.example"], tokens=["t"])
    preflight = open_.options("/api/jobs", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    other = open_.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_the_api_mounts_under_a_prefix(app: Conveyor) -> None:
    outer = Starlette(routes=[Mount("/jobs-api", app=create_app(app, tokens=[],
                                                               read_only_tokens=[]))])
    with TestClient(outer) as client:
        created = client.post("/jobs-api/api/jobs", json={"task": "add", "args": [1]})
        assert created.status_code == 201
        assert created.headers["location"] == f"/jobs-api/api/jobs/{created.json()['id']}"
        assert client.get(created.headers["location"]).status_code == 200
        assert client.get("/jobs-api/openapi.json").json()["servers"] == [{"url": "/jobs-api"}]
        assert client.get("/jobs-api/health").status_code == 200


def test_public_paths_stay_public_under_a_prefix(app: Conveyor) -> None:
    outer = Starlette(routes=[Mount("/x", app=create_app(app, tokens=["t"],
                                                         read_only_tokens=[]))])
    with TestClient(outer) as client:
        assert client.get("/x/health").status_code == 200
        assert client.get("/x/docs").status_code == 200
        assert client.get("/x/api/jobs").status_code == 401
        assert client.get("/x/api/jobs", headers={"Authorization": "Bearer t"}).status_code \
            == 200


def test_dispatch_puts_the_api_beside_another_asgi_app(app: Conveyor) -> None:
    async def other(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"django"})

    combined = dispatch("/conveyor", create_app(app, tokens=[], read_only_tokens=[]), other)
    with TestClient(combined) as client:  # type: ignore[arg-type]
        assert client.get("/admin/").text == "django"
        assert client.get("/conveyorx").text == "django"
        created = client.post("/conveyor/api/jobs", json={"task": "add", "args": [1]})
        assert created.headers["location"].startswith("/conveyor/api/jobs/")
        assert client.get("/conveyor/health").json()["status"] == "ok"


# -- OpenAPI and docs --------------------------------------------------------------------

def test_openapi_describes_each_exposed_task(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    mapping = schemas["SubmitRequest"]["discriminator"]["mapping"]
    assert "add" in mapping and "internal" not in mapping
    add = schemas["Submit.add"]
    assert add["properties"]["task"] == {"const": "add"}
    assert add["properties"]["kwargs"]["required"] == ["a"]
    assert set(doc["paths"]) >= {"/api/jobs", "/api/jobs/{job_id}/events", "/health",
                                 "/metrics", "/api/schedules/{schedule_id}/trigger"}


def test_docs_page_is_self_contained(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    script = client.get("/docs/explorer.js")
    assert script.status_code == 200 and "openapi.json" in script.text


def test_api_actions_log_with_job_fields(client: TestClient,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="conveyor.web")
    job = submit(client, "add", args=[1])
    client.post(f"/api/jobs/{job['id']}/cancel")
    records = [r for r in caplog.records if r.name == "conveyor.web"]
    assert len(records) == 2
    for record in records:
        assert (record.job_id, record.task, record.queue) == (job["id"], "add", "default")
        assert record.attempt == 0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
