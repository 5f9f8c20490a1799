"""``conveyor scheduler`` and ``conveyor schedules ...``, run in-process on a SQLite file."""

from __future__ import annotations

import json
import sys
import textwrap
import threading

import pytest

from conveyor.cli import main

APP = textwrap.dedent('''
    import os
    from conveyor import Conveyor

    app = Conveyor(os.environ["CONVEYOR_URL"])

    @app.periodic(every=3600, id="hourly", name="hourly report")
    def hourly() -> None: ...

    @app.task(name="cleanup")
    def cleanup(folder: str) -> None: ...
''')


@pytest.fixture
def app_path(tmp_path, monkeypatch):
    (tmp_path / "cli_schedules_app.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CONVEYOR_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delitem(sys.modules, "cli_schedules_app", raising=False)
    return "cli_schedules_app:app"


def run(app_path: str, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["-A", app_path, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_schedules_list_shows_the_declared_schedules(app_path, capsys):
    code, out, _ = run(app_path, capsys, "schedules", "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:4] == ["ID", "TASK", "STATE", "WHEN"]
    assert row.split()[:3] == ["hourly", "cli_schedules_app.hourly", "active"]
    assert "every hour" in row


def test_schedules_pause_resume_trigger_and_list_as_json(app_path, capsys):
    assert run(app_path, capsys, "schedules", "pause", "hourly")[1] == "hourly paused\n"
    code, out, _ = run(app_path, capsys, "schedules", "trigger", "hourly", "--json")
    job_id = json.loads(out)["job"]
    assert code == 0 and job_id
    assert run(app_path, capsys, "schedules", "resume", "hourly")[1] == "hourly active\n"
    [entry] = json.loads(run(app_path, capsys, "schedules", "list", "--json")[1])["schedules"]
    assert (entry["id"], entry["paused"], entry["last_job_id"], entry["last_outcome"]) == (
        "hourly", False, job_id, "triggered")


def test_schedules_remove_deletes_a_runtime_schedule_and_refuses_a_declared_one(app_path,
                                                                                capsys):
    import cli_schedules_app

    cli_schedules_app.app.add_schedule("cleanup", every=60, id="cleanup", args=["/tmp"])
    cli_schedules_app.app.close()
    assert run(app_path, capsys, "schedules", "remove", "cleanup")[1] == "removed cleanup\n"
    code, _, err = run(app_path, capsys, "schedules", "remove", "hourly")
    assert code == 2 and "declared in code" in err


def test_an_unknown_schedule_id_is_an_error(app_path, capsys):
    code, _, err = run(app_path, capsys, "schedules", "pause", "nope")
    assert code == 1 and "no schedule with id 'nope'" in err
    code, _, err = run(app_path, capsys, "schedules", "trigger")
    assert code == 2 and "needs a schedule id" in err


def test_the_scheduler_command_runs_until_stopped(app_path, capsys, monkeypatch):
    from conveyor import scheduler as scheduler_module

    started = threading.Event()
    real_prepare = scheduler_module.Scheduler.prepare

    def prepare(self):
        real_prepare(self)
        started.set()
        threading.Timer(0.2, self.stop).start()  # what SIGTERM does through _on_signals

    monkeypatch.setattr(scheduler_module.Scheduler, "prepare", prepare)
    monkeypatch.setattr("conveyor.scheduler_cli._on_signals", lambda stop: None)
    assert run(app_path, capsys, "scheduler", "--max-sleep", "0.05")[0] == 0
    assert started.is_set()
    out = run(app_path, capsys, "schedules", "list", "--json")[1]
    assert json.loads(out)["schedules"][0]["source"] == "code"
