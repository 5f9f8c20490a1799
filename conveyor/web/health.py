"""``/health``, ``/health/scheduler`` and ``/metrics``.

The health checks answer without a token (load balancers and orchestrators rarely send one)
and say nothing secret; ``/metrics`` needs one when tokens are set (a read-only token will do).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import metrics
from ..errors import ConveyorError
from .context import WebContext
from .problems import Problem

log = logging.getLogger("conveyor.web")


def routes(ctx: WebContext) -> list[Route]:
    app = ctx.app

    async def health(request: Request) -> Response:
        try:
            await ctx.run(app.backend.check)
        except ConveyorError as exc:
            log.warning("health check failed: %s", exc)
            raise Problem(503, "unhealthy", "the job store is not reachable or its schema is "
                          "not current", backend=_backend_name(ctx)) from None
        return JSONResponse({"status": "ok", "backend": _backend_name(ctx)})

    async def scheduler_health(request: Request) -> Response:
        workers = await ctx.run(app.workers)
        schedulers = [asdict(w) for w in workers if w.kind == "scheduler"]
        details = await ctx.run(_scheduler_status, ctx)
        if not schedulers:
            raise Problem(503, "no-scheduler", "no live scheduler is registered: periodic jobs "
                          "will not fire (run `conveyor scheduler` or a worker with "
                          "--with-scheduler)", schedulers=[], **details)
        return JSONResponse({"status": "ok", "schedulers": schedulers, **details})

    async def prometheus(request: Request) -> Response:
        text = await ctx.run(metrics.render, app)
        return Response(text, media_type=metrics.CONTENT_TYPE)

    return [
        Route("/health", health, methods=["GET"], name="health"),
        Route("/health/scheduler", scheduler_health, methods=["GET"], name="scheduler_health"),
        Route("/metrics", prometheus, methods=["GET"], name="metrics"),
    ]


def _backend_name(ctx: WebContext) -> str:
    try:
        return ctx.app.backend.name
    except ConveyorError:
        return "unknown"


def _scheduler_status(ctx: WebContext) -> dict[str, Any]:
    """What the scheduler says of itself, when it offers ``app.scheduler_status()``."""
    status = getattr(ctx.app, "scheduler_status", None)
    if status is None:
        return {}
    try:
        # whatever it returns, the answer must be JSON
        return {"scheduler": json.loads(json.dumps(status(), default=str))}
    except Exception:
        log.warning("scheduler_status() failed", exc_info=True)
        return {}
