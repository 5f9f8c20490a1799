"""``conveyor``: the command line.

Every option can also come from the environment: ``CONVEYOR_APP`` for ``-A``, ``CONVEYOR_URL``
for ``--url``, and ``CONVEYOR_<OPTION>`` for a command's options (``CONVEYOR_CONCURRENCY=8``,
``CONVEYOR_QUEUES=high,default``). Exit codes: 0 done, 1 a job failed or was not found,
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from .app import Conveyor
from .errors import ConveyorError, JobCancelled, JobFailed
from .job import job_to_dict

DEMO_APP = "conveyor.demo:app"

Handler = Callable[[Conveyor, argparse.Namespace], int]
#: name -> (help, add_arguments, handler); other modules register their commands here
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, help: str,
            arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None
            ) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = (help, arguments, handler)
        return handler
    return register


def env_default(name: str, default: Any = None) -> Any:
    return os.environ.get(f"CONVEYOR_{name.upper()}", default)


def env_flag(name: str) -> bool:
    """A boolean option's default from ``CONVEYOR_<NAME>``: ``CONVEYOR_BURST=0`` (or ``false``,
    ``no``, ``off``, empty) is off — ``bool("0")`` would have turned it on."""
    return str(env_default(name, "")).strip().lower() not in ("", "0", "false", "no", "off")


def load(app_path: str | None, url: str | None) -> Conveyor:
    from .process_pool import load_app

    if not app_path:
        raise ConveyorError("no app given: pass -A package.module:app or set CONVEYOR_APP")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    app = load_app(app_path)
    if url:
        app.url = url
    return app


# -- worker ---------------------------------------------------------------------------------------

def _worker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-Q", "--queues", default=env_default("queues"),
                        help="queues to serve, in priority order (default: every queue the "
                             "app's tasks use)")
    # numbers from the environment stay strings here: argparse converts a string default
    # with type=, so a bad CONVEYOR_CONCURRENCY is a usage error of this command (exit 2),
    # not a traceback of every command at start-up
    parser.add_argument("-c", "--concurrency", type=int,
                        default=env_default("concurrency", "8"),
                        help="jobs run at once (default 8)")
    parser.add_argument("--pool", choices=["thread", "process"],
                        default=env_default("pool", "thread"),
                        help="thread: def tasks in threads, async tasks on an event loop "
                             "(default); process: every job in a child process")
    parser.add_argument("--burst", action="store_true", default=env_flag("burst"),
                        help="run what is due, then exit")
    parser.add_argument("--grace", type=float, default=env_default("grace", "30"),
                        help="seconds running jobs get to finish on SIGTERM (default 30)")
    parser.add_argument("--cancel-grace", type=float, default=env_default("cancel_grace", "5"),
                        help="seconds a cancelled or lease-lost process-pool job gets before "
                             "its process is killed (default 5)")
    parser.add_argument("--prefetch", type=int, default=env_default("prefetch", None),
                        help="jobs claimed ahead of free slots (default: as many as -c); "
                             "they hold leases, and count an attempt if the worker is killed "
                             "before starting them: use 0 for long jobs without retries")
    parser.add_argument("--with-scheduler", action="store_true",
                        default=env_flag("with_scheduler"),
                        help="also run the periodic scheduler in this process")


@command("worker", "run jobs", _worker_args)
def worker_command(app: Conveyor, args: argparse.Namespace) -> int:
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    worker = app.worker(queues=queues, concurrency=args.concurrency, pool=args.pool,
                        burst=args.burst, grace=args.grace, cancel_grace=args.cancel_grace,
                        prefetch=args.prefetch)
    scheduler = None
    if args.with_scheduler:
        from .scheduler import Scheduler

        scheduler = Scheduler(app).start()
    def stop(graceful: bool) -> None:
        worker.stop(graceful)
        if scheduler is not None:
            scheduler.stop()

    _on_signals(stop)
    worker.run()
    if scheduler is not None:
        scheduler.stop()
        scheduler.join(10)
    return 0


def _on_signals(stop: Callable[[bool], Any]) -> None:
    """First SIGTERM/SIGINT: graceful stop; a second one: stop at once."""
    received = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        graceful = len(received) == 1
        print(f"\nconveyor: {'stopping (again to force)' if graceful else 'stopping now'}",
              file=sys.stderr, flush=True)
        stop(graceful)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- enqueue --------------------------------------------------------------------------------------

def _enqueue_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="the task's registered name")
    parser.add_argument("--args", default="[]", help="positional arguments as a JSON list")
    parser.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    parser.add_argument("--queue")
    parser.add_argument("--priority", type=int)
    parser.add_argument("--delay", type=float, help="seconds from now")
    parser.add_argument("--key", help="idempotency key")
    parser.add_argument("--wait", action="store_true",
                        help="show progress until the job ends; exit 1 if it fails")
    parser.add_argument("--timeout", type=float, help="with --wait: give up after seconds")


@command("enqueue", "enqueue a job by task name", _enqueue_args)
def enqueue_command(app: Conveyor, args: argparse.Namespace) -> int:
    try:
        call_args = json.loads(args.args)
        call_kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise ConveyorError(f"--args/--kwargs must be JSON: {exc}") from None
    options = {k: v for k, v in (("queue", args.queue), ("priority", args.priority),
                                 ("delay", args.delay), ("key", args.key)) if v is not None}
    job = app.enqueue(args.task, call_args, call_kwargs, **options)
    print(job.id)
    if not args.wait:
        return 0
    return _follow(job, args.timeout)


def _follow(job: Any, timeout: float | None) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    record = job.record
    interactive = sys.stderr.isatty()
    drawn = None
    while not record.finished:
        drawn = _draw_progress(record, interactive, drawn)
        remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
        if remaining <= 0:
            print(f"\nstill {record.status} after {timeout}s", file=sys.stderr)
            return 1
        changed = job._app.backend.wait_for_change(job.id, record.version, remaining)
        if changed is None:
            # deleted (or pruned) while we watched: wait_for_change returns None at once, so
            # keeping the old record here spun in a busy loop, printing a line per turn
            print(f"\nconveyor: job {job.id} no longer exists (deleted)", file=sys.stderr)
            return 1
        record = changed
    _draw_progress(record, interactive, drawn)
    print(file=sys.stderr)
    job.record = record
    try:
        result = job.result(timeout=0)
    except (JobFailed, JobCancelled) as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def _draw_progress(record: Any, interactive: bool, previous: str | None = None) -> str:
    """Draw the bar (redrawn in place on a terminal); returns the line drawn. Off a terminal
    (a log, a pipe) a line is written only when it changed, not once a second."""
    width = 30
    filled = int(width * record.progress / 100)
    bar = "#" * filled + "-" * (width - filled)
    line = (f"[{bar}] {record.progress:5.1f}% {record.status:<9} "
            f"{record.progress_message or ''}")
    if interactive or line != previous:
        print(("\r" + line[:110].ljust(110)) if interactive else line, end="" if interactive
              else "\n", file=sys.stderr, flush=True)
    return line


# -- jobs -----------------------------------------------------------------------------------------

def _jobs_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "show", "cancel", "retry", "delete"])
    parser.add_argument("job_id", nargs="?", help="for show, cancel, retry, delete")
    parser.add_argument("--status")
    parser.add_argument("--queue")
    parser.add_argument("--task")
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--cursor")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


@command("jobs", "list, show, cancel, retry or delete jobs", _jobs_args)
def jobs_command(app: Conveyor, args: argparse.Namespace) -> int:
    if args.action == "list":
        page = app.list_jobs(status=args.status, queue=args.queue, task=args.task,
                             limit=args.limit, cursor=args.cursor)
        if args.json:
            print(json.dumps({"jobs": [j.to_dict() for j in page], "cursor": page.cursor}))
            return 0
        rows = [(j.id, j.task, j.queue, j.status, f"{j.progress:.0f}%", str(j.attempts),
                 _when(j.record.created_at)) for j in page]
        _table(("ID", "TASK", "QUEUE", "STATUS", "PROGRESS", "ATTEMPTS", "CREATED"), rows)
        if page.cursor:
            print(f"(more: --cursor {page.cursor})")
        return 0
    if not args.job_id:
        raise ConveyorError(f"jobs {args.action} needs a job id")
    job = app.get_job(args.job_id)
    if args.action == "cancel":
        job.cancel()
    elif args.action == "retry":
        job.retry()
    elif args.action == "delete":
        app.backend.delete(job.id)
        print(f"deleted {job.id}")
        return 0
    data = job_to_dict(job.record)
    if args.json or args.action == "show":
        print(json.dumps(data, indent=None if args.json else 2, default=str))
    else:
        print(f"{job.id} {job.status}" + (" (cancel requested)" if
                                           job.record.cancel_requested else ""))
    return 0


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# -- info, migrate --------------------------------------------------------------------------------

@command("info", "queues, job counts and live workers")
def info_command(app: Conveyor, args: argparse.Namespace) -> int:
    print(f"backend: {app.backend.name} ({_redacted(app.url)})")
    print(f"tasks:   {', '.join(sorted(app.tasks)) or 'none'}")
    stats = app.stats()
    states = ("scheduled", "queued", "running", "succeeded", "failed", "cancelled")
    rows = [(q, *(str(counts.get(s, 0)) for s in states)) for q, counts in sorted(stats.items())]
    print()
    _table(("QUEUE", *(s.upper() for s in states)), rows or [("-",) + ("0",) * 6])
    workers = app.workers()
    print()
    _table(("WORKER", "KIND", "HOST", "PID", "QUEUES", "CONCURRENCY", "RUNNING"),
           [(w.id, w.kind, w.host, str(w.pid), ",".join(w.queues), str(w.concurrency),
             str(len(w.current_jobs))) for w in workers] or [("(none)",) + ("",) * 6])
    return 0


def _redacted(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def _migrate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="only report whether migrations are pending (exit 1 if so)")


@command("migrate", "bring the database schema up to date", _migrate_args)
def migrate_command(app: Conveyor, args: argparse.Namespace) -> int:
    names = app.backend.migrate(check_only=args.check)
    if args.check:
        if names:
            print("pending migrations: " + ", ".join(names))
            return 1
        print("the schema is up to date")
        return 0
    print(("applied: " + ", ".join(names)) if names else "the schema is up to date")
    return 0


# -- dev ------------------------------------------------------------------------------------------

def _dev_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=env_default("host", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=env_default("port", "8000"))
    parser.add_argument("-c", "--concurrency", type=int,
                        default=env_default("concurrency", "4"))


@command("dev", "worker, scheduler and HTTP API in one process (the demo app by "
                "default)", _dev_args)
def dev_command(app: Conveyor, args: argparse.Namespace) -> int:
    scheduler_available = _has_module("conveyor.scheduler")
    web_available = _has_module("conveyor.web") and _has_module("uvicorn")
    embedded = app.embedded(concurrency=args.concurrency, scheduler=scheduler_available)
    stop: list[bool] = []

    def on_signal(graceful: bool) -> None:
        # the first Ctrl-C leaves the loop below and stops gracefully (up to the grace
        # period); a second one must force the stop, as it does for `conveyor worker`
        stop.append(graceful)
        if len(stop) > 1 or not graceful:
            embedded.worker.stop(graceful=False)

    # installed before the server starts: uvicorn restores the handlers it found and then
    # re-raises the signals it caught, so they reach on_signal. Installed after, a SIGTERM met
    # its default action (the process died, no graceful stop) and a SIGINT became a
    # KeyboardInterrupt, and a second Ctrl-C could not force the stop.
    _on_signals(on_signal)
    with embedded:
        print(f"conveyor dev: {len(app.tasks)} task(s) on {_redacted(app.url)}, worker "
              f"{'+ scheduler ' if scheduler_available else ''}running", flush=True)
        if app.import_path == DEMO_APP:
            from .demo import seed

            for job in seed():
                print(f"  enqueued {job.task} {job.id}", flush=True)
        if web_available and not stop:
            from .web import serve

            serve(app, host=args.host, port=args.port)
        else:
            print("(install conveyor-jobs[web] for the HTTP API)", flush=True)
            while not stop:
                time.sleep(0.2)
    return 0


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# -- entry point ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = argparse.ArgumentParser(
        prog="conveyor", description="Conveyor background jobs: workers, scheduler, API.")
    parser.add_argument("-A", "--app", default=os.environ.get("CONVEYOR_APP"),
                        help="the app, as package.module:attribute (env CONVEYOR_APP)")
    # CONVEYOR_URL is this flag's environment form: it must override a URL written in the app
    # (`Conveyor("sqlite:///app.db")`), which only reads CONVEYOR_URL when given none
    parser.add_argument("--url", default=os.environ.get("CONVEYOR_URL") or None,
                        help="override the app's backend URL (env CONVEYOR_URL)")
    parser.add_argument("--log-level", default=env_default("log_level", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _load_plugins() -> None:
    """Commands that live beside their feature register themselves on import."""
    import importlib

    for module in ("conveyor.scheduler_cli", "conveyor.web.cli"):
        if _has_module(module.rpartition(".")[0] or module) and _has_module(module):
            importlib.import_module(module)


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    parser = build_parser()
    args = parser.parse_args(argv)
    level = str(args.log_level).upper()
    if level not in logging.getLevelNamesMapping():
        parser.error(f"unknown --log-level {args.log_level!r}: use DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app_path = args.app or (DEMO_APP if args.command == "dev" else None)
    try:
        app = load(app_path, args.url)
        return COMMANDS[args.command][2](app, args)
    except (JobFailed, JobCancelled) as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return 1
    except ConveyorError as exc:
        # the backend cannot know how the app was named; the command line can
        message = str(exc).replace("-A <app>", f"-A {app_path}") if app_path else str(exc)
        print(f"conveyor: error: {message}", file=sys.stderr)
        from .errors import JobNotFound, ScheduleNotFound

        return 1 if isinstance(exc, (JobNotFound, ScheduleNotFound)) else 2
    except KeyboardInterrupt:
        # Ctrl-C in a command without its own handler (`enqueue --wait`, a slow `jobs list`):
        # a line, not a traceback; a job being followed keeps running
        print("\nconveyor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
