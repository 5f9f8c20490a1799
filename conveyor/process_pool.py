"""``pool="process"``: jobs run in child processes, one job per child at a time.

Each of the worker's pool threads owns one child (started with ``spawn``, so no lock or
connection is inherited half-held) and drives it over a pipe. A child imports the app by its
import path, opens its own backend (for ``progress()`` and ``check_cancelled()``) and runs the
task. The owning thread watches the clock and the job's cancel flag: past the timeout, or
``cancel_grace`` seconds after a cancel request, it kills the child — a hard stop that a thread
cannot offer — and starts a fresh one for the next job.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import multiprocessing
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from . import serialize
from .backends.base import JobRecord, Outcome
from .context import JobContext, reset_current, set_current
from .errors import Cancelled, ConfigurationError, JobTimeout, Retry, ValidationError

if TYPE_CHECKING:
    from .app import Conveyor
    from .task import Task
    from .worker import Running, Worker


def load_app(path: str) -> Conveyor:
    """Import ``"package.module:attribute"`` and return the Conveyor app there."""
    from .app import Conveyor

    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"app path {path!r} must look like 'package.module:app'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} (from app path {path!r}): "
                                 f"{exc}") from exc
    app: Any = module
    for part in attribute.split("."):
        app = getattr(app, part, None)
        if app is None:
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}")
    if not isinstance(app, Conveyor):
        raise ConfigurationError(f"{path!r} is a {type(app).__name__}, not a Conveyor app")
    app.import_path = path
    return app


def _child_main(app_path: str, url: str, conn: Connection, parent: int) -> None:
    # The worker alone decides when a job's process stops (grace, timeout, cancel, forced
    # stop: it kills the child). Ctrl-C in a terminal signals the whole process group, and
    # systemd's default KillMode signals every process of the unit: without this, the child
    # died of KeyboardInterrupt mid-job and a graceful shutdown recorded a failed attempt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True,
                     name="conveyor-orphan-watch").start()
    app = load_app(app_path)
    app.url = url
    # open the backend before saying ready: opening it (connect, schema check) inside the
    # first job counted toward that job's timeout
    app.backend.check()
    conn.send(_READY)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        record = JobRecord.from_json(message)
        conn.send(_run_here(app, record))


class ChildProcessDied(Exception):
    """The process running a job exited before it replied (killed, crashed, ``os._exit``)."""


#: a new child's first message: the app is imported, jobs may come
_READY = ("ready",)


def _exit_when_orphaned(parent: int) -> None:
    """A child never outlives its worker. When the worker dies without killing it (SIGKILL,
    the OOM killer), the job's lease runs out and another worker runs it again: the orphan
    would run a second copy alongside, or — a stuck job — linger forever."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _run_here(app: Conveyor, record: JobRecord) -> tuple[Any, ...]:
    task = app.tasks.get(record.task)
    if task is None:
        return ("error", "UnknownTask", f"no task named {record.task!r}", "", "unknown_task")
    context = JobContext(record, app.backend, app.clock)
    context.start()
    token = set_current(context)
    try:
        result = task.fn(*serialize.loads(record.args), **serialize.loads(record.kwargs))
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        return ("ok", serialize.dumps(result, "#/result"))
    except ValidationError as exc:
        return ("error", "ValidationError", f"the task returned a value that is not JSON: {exc}",
                "", "final")
    except Retry as exc:
        return ("retry", exc.delay, exc.reason or "retry requested")
    except Cancelled as exc:
        return ("cancelled", str(exc))
    except JobTimeout as exc:
        return ("error", "JobTimeout", str(exc), traceback.format_exc(), "timeout")
    except BaseException as exc:
        return ("error", type(exc).__name__, str(exc), traceback.format_exc(), "error")
    finally:
        reset_current(token)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class _Child:
    def __init__(self, app: Conveyor) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe()
        assert app.import_path is not None
        self.process = context.Process(target=_child_main, args=(app.import_path, app.url,
                                                                 child_conn, os.getpid()),
                                       daemon=True)
        self.process.start()
        child_conn.close()
        #: whether the child has imported the app (it said so: _READY)
        self.ready = False

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


class ProcessPool:
    def __init__(self, app: Conveyor, size: int) -> None:
        if not app.import_path:
            raise ConfigurationError("the process pool needs the app's import path: run the "
                                     "worker with `conveyor -A package.module:app worker "
                                     "--pool process`, or set app.import_path")
        self.app = app
        self._local = threading.local()
        self._children: list[_Child] = []
        self._lock = threading.Lock()

    def _child(self) -> _Child:
        child: _Child | None = getattr(self._local, "child", None)
        if child is None or not child.process.is_alive():
            child = _Child(self.app)
            self._local.child = child
            with self._lock:
                self._children.append(child)
        return child

    def _discard(self, child: _Child) -> None:
        child.kill()
        self._local.child = None
        with self._lock:
            if child in self._children:
                self._children.remove(child)

    def run(self, worker: Worker, running: Running, task: Task[Any, Any]) -> Outcome:
        record = running.record
        child = self._child()
        deadline: float | None = None
        cancel_seen: float | None = None

        def send() -> float | None:
            # the timeout clock starts when the job reaches a ready child: spawning and
            # importing the app can take seconds (far more on a loaded machine or with a heavy
            # app), and counting them killed jobs before they began — every job, when the
            # import outlasts the timeout, since each kill means a fresh child
            child.conn.send(record.to_json())
            return time.monotonic() + record.timeout if record.timeout else None

        if child.ready:
            deadline = send()
        while True:
            if child.conn.poll(0.05):
                try:
                    reply = child.conn.recv()
                except EOFError:
                    reply = None
                if reply == _READY:
                    child.ready = True
                    deadline = send()
                elif reply is not None:
                    return self._outcome(worker, running, task, reply)
            # through _from_exception, like a thread job's failure: on_retry/on_failure are
            # called and the failure is logged (both were skipped for a killed child)
            if not child.process.is_alive():
                self._discard(child)
                return worker._from_exception(running, task, ChildProcessDied(
                    f"the job's process exited with code {child.process.exitcode}"))
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self._discard(child)
                return worker._from_exception(running, task, JobTimeout(
                    f"job ran past its timeout of {record.timeout}s; its process was killed"))
            if running.context.cancel_requested or running.context.lost:
                cancel_seen = cancel_seen or now
                if now - cancel_seen >= worker.cancel_grace:
                    self._discard(child)
                    return worker._from_exception(running, task, Cancelled(
                        "cancelled; its process was terminated"))

    def _outcome(self, worker: Worker, running: Running, task: Task[Any, Any],
                 reply: tuple[Any, ...]) -> Outcome:
        kind = reply[0]
        if kind == "ok":
            record = running.record
            now = worker.app.clock()
            worker._callback(task.on_success, running, serialize.loads(reply[1]))
            return Outcome(record.id, record.attempts, "succeeded", result=reply[1],
                           result_expires_at=worker._expiry(record, now))
        if kind == "retry":
            return worker._from_exception(running, task, Retry(reply[1], reply[2]))
        if kind == "cancelled":
            return worker._from_exception(running, task, Cancelled(reply[1]))
        _, error_type, message, tb, reason = reply
        if reason in ("final", "unknown_task"):
            return worker._failed(running, error_type, message, tb, final=True,
                                  reason="error" if reason == "final" else reason)
        outcome = worker._failed(running, error_type, message, tb, reason=reason, task=task)
        callback = task.on_retry if outcome.status == "scheduled" else task.on_failure
        worker._callback(callback, running, RuntimeError(f"{error_type}: {message}"))
        return outcome

    def kill_all(self) -> None:
        with self._lock:
            children = list(self._children)
        for child in children:
            child.kill()

    def close(self) -> None:
        with self._lock:
            children, self._children = list(self._children), []
        for child in children:
            try:
                child.conn.send(None)
            except (OSError, ValueError):
                pass
            child.process.join(2)
            child.kill()
