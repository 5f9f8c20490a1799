"""``/api/tasks``, ``/api/queues``, ``/api/workers``: what is registered, queued and running.

Every task is listed (read-only) whether or not it is exposed; only exposed ones can be
submitted.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..backends.base import STATUSES
from ..task import Task
from .context import WebContext
from .limits import query_str


def task_json(task: Task[Any, Any]) -> dict[str, Any]:
    return {
        "name": task.name,
        "queue": task.queue,
        "expose": task.expose,
        "doc": inspect.cleandoc(task.__doc__) if task.__doc__ else None,
        "is_async": task.is_async,
        "priority": task.priority,
        "retries": task.retries,
        "timeout": task.timeout,
        "schema": task.signature.json_schema(),
    }


def queues_json(ctx: WebContext, stats: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    names = set(stats) | {t.queue for t in ctx.app.tasks.values()} | {ctx.app.default_queue}
    queues = []
    for name in sorted(names):
        counts = {status: int(stats.get(name, {}).get(status, 0)) for status in STATUSES}
        queues.append({"name": name, "counts": counts, "total": sum(counts.values())})
    return queues


def routes(ctx: WebContext) -> list[Route]:
    async def list_tasks(request: Request) -> Response:
        tasks = sorted(ctx.app.tasks.values(), key=lambda t: t.name)
        return JSONResponse({"tasks": [task_json(t) for t in tasks]})

    async def list_queues(request: Request) -> Response:
        stats = await ctx.run(ctx.app.stats)
        return JSONResponse({"queues": queues_json(ctx, stats)})

    async def list_workers(request: Request) -> Response:
        kind = query_str(request, "kind", choices=("worker", "scheduler"))
        workers = await ctx.run(ctx.app.workers)
        return JSONResponse({"workers": [asdict(w) for w in workers
                                         if kind is None or w.kind == kind]})

    return [
        Route("/api/tasks", list_tasks, methods=["GET"], name="list_tasks"),
        Route("/api/queues", list_queues, methods=["GET"], name="list_queues"),
        Route("/api/workers", list_workers, methods=["GET"], name="list_workers"),
    ]
