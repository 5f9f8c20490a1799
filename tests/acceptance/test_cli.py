"""The ``conveyor`` command line, run the way a user runs it: a subprocess, its output, its
exit code (0 done, 1 a job failed or was not found, 2 bad usage or configuration)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from cli_procs import Procs, wait_until

from conveyor import Conveyor


def out_lines(result: Any) -> list[str]:
    return result.stdout.strip().splitlines()


def enqueue(cli: Procs, *args: str) -> str:
    result = cli.run("enqueue", *args)
    assert result.returncode == 0, result.stderr
    [job_id] = out_lines(result)
    return job_id


def start_worker(cli: Procs, client: Any, *args: str) -> Any:
    worker = cli.worker("-c", "2", "--grace", "1", *args)
    wait_until(lambda: client.app.workers(), 15, "the worker to register")
    return worker


# -- enqueue --wait ----------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_enqueue_with_wait_shows_progress_and_prints_the_result(cli: Procs, client: Any) -> None:
    start_worker(cli, client)
    result = cli.run("enqueue", "report", "--args", "[4]", "--wait", "--timeout", "20")
    assert result.returncode == 0, result.stderr
    job_id, printed = out_lines(result)
    assert json.loads(printed) == {"steps": 4}
    assert client.app.get_job(job_id).status == "succeeded"
    progress = result.stderr.splitlines()
    assert any("running" in line and "step 2 of 4" in line for line in progress), progress
    assert "[##############################] 100.0% succeeded" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(60)
def test_enqueue_with_wait_exits_1_when_the_job_fails(cli: Procs, client: Any) -> None:
    start_worker(cli, client)
    result = cli.run("enqueue", "explode", "--args", '["the disk is full"]', "--wait")
    assert result.returncode == 1
    [job_id] = out_lines(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"conveyor: job {job_id} (explode) failed after 1 attempt(s): "
                    "RuntimeError: the disk is full")
    assert client.app.get_job(job_id).status == "failed"


@pytest.mark.timeout(30)
def test_enqueue_with_wait_and_timeout_gives_up_with_exit_1_leaving_the_job_queued(
        cli: Procs, client: Any) -> None:
    started = time.monotonic()
    result = cli.run("enqueue", "add", "--args", "[1, 2]", "--wait", "--timeout", "0.5")
    assert result.returncode == 1
    assert time.monotonic() - started < 10
    [job_id] = out_lines(result)
    assert "still queued after 0.5s" in result.stderr
    assert client.app.get_job(job_id).status == "queued"
    # off a terminal, a progress line is written when it changes, not once a second
    assert result.stderr.count("queued") == 2, result.stderr


@pytest.mark.timeout(30)
def test_enqueue_with_wait_exits_1_when_the_job_is_deleted_meanwhile(
        cli: Procs, client: Any) -> None:
    waiting = cli.start("enqueue", "add", "--args", "[1, 2]", "--wait")
    job_id = wait_until(lambda: [j.id for j in client.app.list_jobs()], 15, "the job")[0]
    assert cli.run("jobs", "delete", job_id).returncode == 0
    assert cli.wait(waiting, 10) == 1
    output = cli.output(waiting)
    assert f"conveyor: job {job_id} no longer exists (deleted)" in output
    assert len(output.splitlines()) < 10  # no busy loop printing the same line


@pytest.mark.timeout(30)
def test_enqueue_options_reach_the_job(cli: Procs, client: Any) -> None:
    job_id = enqueue(cli, "add", "--kwargs", '{"a": 1, "b": 2}', "--queue", "math",
                     "--priority", "7", "--delay", "60", "--key", "sum-1")
    job = client.app.get_job(job_id)
    assert (job.queue, job.record.priority, job.status, job.record.key, job.kwargs) == \
        ("math", 7, "scheduled", "sum-1", {"a": 1, "b": 2})
    # the same key again returns the live job instead of a second one
    assert enqueue(cli, "add", "--kwargs", '{"a": 1, "b": 2}', "--key", "sum-1") == job_id


# -- jobs ----------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_jobs_list_show_cancel_retry_and_delete(cli: Procs, client: Any) -> None:
    first = enqueue(cli, "add", "--args", "[1, 2]")
    second = enqueue(cli, "add", "--args", "[3, 4]", "--queue", "math")
    third = enqueue(cli, "add", "--args", "[5, 6]")

    listing = cli.run("jobs", "list")
    assert listing.returncode == 0
    header, *rows = out_lines(listing)
    assert header.split() == ["ID", "TASK", "QUEUE", "STATUS", "PROGRESS", "ATTEMPTS",
                              "CREATED"]
    assert [row.split()[:4] for row in rows] == [  # newest first
        [third, "add", "default", "queued"], [second, "add", "math", "queued"],
        [first, "add", "default", "queued"]]

    as_json = json.loads(cli.run("jobs", "list", "--json", "--queue", "math").stdout)
    assert [j["id"] for j in as_json["jobs"]] == [second] and as_json["cursor"] is None
    assert as_json["jobs"][0]["args"] == [3, 4]

    page = cli.run("jobs", "list", "--limit", "2")
    more = out_lines(page)[-1]
    assert more.startswith("(more: --cursor ")
    cursor = more.removeprefix("(more: --cursor ").rstrip(")")
    rest = out_lines(cli.run("jobs", "list", "--limit", "2", "--cursor", cursor))
    assert [row.split()[0] for row in rest[1:]] == [first]

    shown = cli.run("jobs", "show", first)
    assert shown.returncode == 0
    data = json.loads(shown.stdout)
    assert (data["id"], data["status"], data["args"]) == (first, "queued", [1, 2])
    assert len(out_lines(shown)) > 1  # pretty-printed for a person
    one_line = out_lines(cli.run("jobs", "show", first, "--json"))
    assert len(one_line) == 1 and json.loads(one_line[0]) == data

    cancelled = cli.run("jobs", "cancel", first)
    assert (cancelled.returncode, cancelled.stdout.strip()) == (0, f"{first} cancelled")
    again = cli.run("jobs", "cancel", first)
    assert again.returncode != 0 and "already cancelled" in again.stderr
    assert "Traceback" not in again.stderr

    retried = cli.run("jobs", "retry", first, "--json")
    assert retried.returncode == 0
    assert json.loads(retried.stdout)["status"] == "queued"
    assert client.app.get_job(first).status == "queued"

    deleted = cli.run("jobs", "delete", second)
    assert (deleted.returncode, deleted.stdout.strip()) == (0, f"deleted {second}")
    missing = cli.run("jobs", "show", second)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"conveyor: error: no job with id '{second}'"

    by_status = json.loads(cli.run("jobs", "list", "--status", "queued", "--json").stdout)
    assert {j["id"] for j in by_status["jobs"]} == {first, third}


@pytest.mark.timeout(60)
def test_jobs_cancel_of_a_running_job_asks_the_worker_to_stop_it(
        cli: Procs, client: Any) -> None:
    start_worker(cli, client)
    job_id = enqueue(cli, "wait_forever")
    wait_until(lambda: client.app.get_job(job_id).status == "running", 15, "the job to run")
    result = cli.run("jobs", "cancel", job_id)
    assert (result.returncode, result.stdout.strip()) == \
        (0, f"{job_id} running (cancel requested)")
    wait_until(lambda: client.app.get_job(job_id).status == "cancelled", 10, "the cancel")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("action", ["show", "cancel", "retry", "delete"])
def test_jobs_actions_without_an_id_are_a_usage_error(cli: Procs, action: str) -> None:
    result = cli.run("jobs", action)
    assert result.returncode == 2
    assert result.stderr.strip() == f"conveyor: error: jobs {action} needs a job id"


# -- info, migrate -------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_info_shows_the_backend_tasks_counts_and_live_workers(cli: Procs, client: Any,
                                                             url: str) -> None:
    enqueue(cli, "add", "--args", "[1, 2]", "--queue", "math")
    enqueue(cli, "add", "--args", "[1, 2]", "--delay", "60")
    worker = start_worker(cli, client, "-Q", "other")
    result = cli.run("info")
    assert result.returncode == 0, result.stderr
    lines = out_lines(result)
    assert lines[0] == f"backend: sqlite ({url})"
    assert lines[1] == "tasks:   add, explode, report, wait_forever"
    table = {line.split()[0]: line.split()[1:] for line in lines[3:] if line.strip()}
    assert table["math"] == ["0", "1", "0", "0", "0", "0"]
    assert table["default"] == ["1", "0", "0", "0", "0", "0"]
    [row] = [line.split() for line in lines if f" {worker.pid} " in line]
    assert row[1] == "worker" and row[4:] == ["other", "2", "0"]


@pytest.mark.timeout(30)
def test_migrate_check_reports_an_up_to_date_schema(cli: Procs) -> None:
    applied = cli.run("migrate")
    assert applied.returncode == 0, applied.stderr
    checked = cli.run("migrate", "--check")
    assert (checked.returncode, checked.stdout.strip()) == (0, "the schema is up to date")


# -- the environment -----------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_every_command_reads_conveyor_app_and_conveyor_url_from_the_environment(
        tmp_path: Path, cli: Procs, client: Any, url: str) -> None:
    env = {"CONVEYOR_APP": "cli_app:app"}  # and CONVEYOR_URL, which cli.env() always sets

    def run(*args: str) -> Any:
        result = cli.run(*args, app="", **env)
        assert result.returncode == 0, (args, result.stderr)
        return result

    job_id = out_lines(run("enqueue", "add", "--args", "[2, 3]"))[0]
    assert job_id in run("jobs", "list").stdout
    assert json.loads(run("jobs", "show", job_id).stdout)["status"] == "queued"
    assert f"backend: sqlite ({url})" in run("info").stdout
    run("migrate", "--check")
    run("worker", "--burst")
    assert client.app.get_job(job_id).result(timeout=0) == 5
    cancel_id = out_lines(run("enqueue", "add", "--args", "[1, 1]", "--delay", "60"))[0]
    assert run("jobs", "cancel", cancel_id).stdout.strip() == f"{cancel_id} cancelled"
    assert run("jobs", "retry", cancel_id).stdout.strip() == f"{cancel_id} queued"
    assert run("jobs", "delete", cancel_id).stdout.strip() == f"deleted {cancel_id}"

    # the URL written in the app was never used: the environment overrides it
    assert not (tmp_path / "cli-app-default.db").exists()
    # the --url flag overrides it too, and beats CONVEYOR_URL
    other = tmp_path / "other.db"
    flagged = cli.run("--url", f"sqlite:///{other}", "enqueue", "add", "--args", "[1, 1]")
    assert flagged.returncode == 0, flagged.stderr
    assert Conveyor(f"sqlite:///{other}").stats() == {"default": {"queued": 1}}


@pytest.mark.timeout(30)
def test_enqueue_wait_reads_the_environment_too(cli: Procs, client: Any) -> None:
    start_worker(cli, client)
    result = cli.run("enqueue", "add", "--args", "[4, 4]", "--wait", "--timeout", "20",
                     app="", CONVEYOR_APP="cli_app:app")
    assert result.returncode == 0, result.stderr
    assert out_lines(result)[-1] == "8"


@pytest.mark.timeout(30)
def test_boolean_and_number_options_read_from_the_environment(cli: Procs, client: Any) -> None:
    enqueue(cli, "add", "--args", "[1, 2]")
    # CONVEYOR_BURST=1 makes `worker` drain and exit, as --burst does
    burst = cli.run("worker", CONVEYOR_BURST="1", CONVEYOR_CONCURRENCY="3", timeout=20)
    assert burst.returncode == 0, burst.stderr
    assert "concurrency=3" in burst.stderr
    # a bad number is a usage error of that command, not a traceback of every command
    bad = cli.run("worker", "--burst", CONVEYOR_CONCURRENCY="many")
    assert bad.returncode == 2 and "invalid int value: 'many'" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert cli.run("info", CONVEYOR_CONCURRENCY="many").returncode == 0


# -- errors a user makes -------------------------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize(("app", "message"), [
    ("nowhere.module:app", "cannot import 'nowhere.module' (from app path "
                           "'nowhere.module:app'): No module named 'nowhere'"),
    ("cli_app", "app path 'cli_app' must look like 'package.module:app'"),
    ("cli_app:missing", "'cli_app' has no attribute 'missing'"),
    ("cli_app:add", "'cli_app:add' is a Task, not a Conveyor app"),
])
def test_a_bad_app_path_is_one_clear_line_and_exit_2(cli: Procs, app: str, message: str) -> None:
    for command in (["info"], ["worker", "--burst"], ["enqueue", "add"], ["jobs", "list"]):
        result = cli.run(*command, app=app)
        assert result.returncode == 2, (command, result)
        assert result.stderr.strip() == f"conveyor: error: {message}", command


@pytest.mark.timeout(30)
def test_no_app_at_all_says_how_to_give_one(cli: Procs) -> None:
    result = cli.run("info", app="")
    assert result.returncode == 2
    assert result.stderr.strip() == ("conveyor: error: no app given: pass -A "
                                     "package.module:app or set CONVEYOR_APP")


@pytest.mark.timeout(30)
def test_an_unknown_task_is_one_clear_line_and_exit_2(cli: Procs, client: Any) -> None:
    result = cli.run("enqueue", "ad", "--args", "[1, 2]")
    assert result.returncode == 2
    assert result.stderr.strip() == ("conveyor: error: no task is registered as 'ad' "
                                     "(known: add, explode, report, wait_forever)")
    assert client.app.stats() == {}


@pytest.mark.timeout(30)
def test_a_bad_log_level_is_a_usage_error(cli: Procs) -> None:
    result = cli.run("--log-level", "chatty", "info")
    assert result.returncode == 2
    assert "unknown --log-level 'chatty'" in result.stderr and "Traceback" not in result.stderr


# -- conveyor dev --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_conveyor_dev_runs_the_demo_jobs_in_a_fresh_directory(tmp_path: Path,
                                                              cli: Procs) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONUNBUFFERED"] = "1"
    dev = cli.start("dev", "--port", str(free_port()), app="", cwd=fresh, env=env)
    demo = Conveyor(f"sqlite:///{fresh / 'conveyor-demo.db'}")
    try:
        wait_until(lambda: (fresh / "conveyor-demo.db").exists(), 20, "the demo database")

        def by_task() -> dict[str, Any]:
            return {job.task.rpartition(".")[2]: job for job in demo.list_jobs(limit=100)}

        def demo_done() -> bool:
            jobs = by_task()
            assert dev.poll() is None, cli.output(dev)
            return all(name in jobs and jobs[name].status == "succeeded"
                       for name in ("render_fractal", "flaky_sync"))

        wait_until(demo_done, 45, "the demo's fractal and flaky jobs to succeed", interval=0.3)
        jobs = by_task()
        assert jobs["long_report"].status == "running"
        assert jobs["flaky_sync"].attempts == 3  # it fails twice by design

        rendered = jobs["render_fractal"].result(timeout=0)
        data = (fresh / rendered["path"]).read_bytes()  # relative to where dev runs
        assert len(data) == rendered["bytes"]
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", data[16:24]) == (320, 240)
        assert list(fresh.glob("conveyor-demo-output/fractal-*.png"))

        dev.send_signal(signal.SIGINT)
        time.sleep(0.5)
        dev.send_signal(signal.SIGINT)  # long_report would hold the grace period: force it
        assert cli.wait(dev, 15) == 0, cli.output(dev)
        output = cli.output(dev)
        assert "conveyor dev:" in output and "enqueued conveyor.demo.render_fractal" in output
        assert "Traceback" not in output
        # the interrupted job is back in the queue for the next run, not lost
        assert by_task()["long_report"].status == "queued"
    finally:
        demo.close()
