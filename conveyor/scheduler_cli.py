"""``conveyor scheduler`` and ``conveyor schedules list|pause|resume|trigger|remove``.

Imported by :func:`conveyor.cli.build_parser`, which registers these commands beside the core
ones.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from .app import Conveyor
from .cli import _on_signals, _table, command, env_default
from .errors import ConveyorError
from .schedules import (
    list_schedules,
    pause_schedule,
    remove_schedule,
    resume_schedule,
    trigger_schedule,
)


def _scheduler_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-sleep", type=float,
                        default=float(env_default("max_sleep", 1.0)),
                        help="longest wait between passes, in seconds; new and resumed "
                             "schedules are seen within it (default 1)")


@command("scheduler", "fire periodic schedules (run as many as you like: each fire time is "
                      "enqueued once)", _scheduler_args)
def scheduler_command(app: Conveyor, args: argparse.Namespace) -> int:
    from .scheduler import Scheduler

    scheduler = Scheduler(app, max_sleep=args.max_sleep)
    # a pass is short and leaves nothing half-done, so even a second signal just stops
    _on_signals(lambda graceful: scheduler.stop())
    scheduler.run()
    return 0


def _schedules_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "pause", "resume", "trigger", "remove"])
    parser.add_argument("schedule_id", nargs="?", metavar="ID",
                        help="for pause, resume, trigger, remove")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


@command("schedules", "list, pause, resume, trigger or remove periodic schedules",
         _schedules_args)
def schedules_command(app: Conveyor, args: argparse.Namespace) -> int:
    if args.action == "list":
        entries = list_schedules(app)
        if args.json:
            print(json.dumps({"schedules": entries}))
        else:
            _print_list(entries)
        return 0
    if not args.schedule_id:
        raise ConveyorError(f"schedules {args.action} needs a schedule id")
    result: Any
    if args.action == "trigger":
        job = trigger_schedule(app, args.schedule_id)
        result = {"schedule": args.schedule_id, "job": job.id}
        message = f"enqueued job {job.id}"
    elif args.action == "remove":
        remove_schedule(app, args.schedule_id)
        result = {"schedule": args.schedule_id, "removed": True}
        message = f"removed {args.schedule_id}"
    else:
        act = pause_schedule if args.action == "pause" else resume_schedule
        result = act(app, args.schedule_id)
        message = f"{args.schedule_id} {'paused' if result['paused'] else 'active'}"
    print(json.dumps(result) if args.json else message)
    return 0


def _print_list(entries: list[dict[str, Any]]) -> None:
    rows = []
    for e in entries:
        if "error" in e:
            rows.append((e["id"], "-", "-", e["error"], "-", "-", "-"))
            continue
        state = "paused" if e["paused"] else "active"
        rows.append((e["id"], e["task"], state, e["description"], _when(e["next_run_time"]),
                     _when(e["last_run_time"]), e["last_outcome"] or "-"))
    _table(("ID", "TASK", "STATE", "WHEN", "NEXT RUN (UTC)", "LAST RUN (UTC)", "LAST OUTCOME"),
           rows or [("(none)", "", "", "", "", "", "")])


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
