"""``/api/schedules``: list periodic schedules; pause, resume or trigger one.

The work is done by :mod:`conveyor.scheduler` (``list_schedules``, ``pause_schedule``,
``resume_schedule``, ``trigger_schedule``), imported on first use so that the API runs, and
answers 501 here, in an installation without the scheduler.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..job import Job
from .context import WebContext, job_log_extra
from .problems import Problem
from .submit import SAFE_TEXT

log = logging.getLogger("conveyor.web")


def _scheduler() -> ModuleType:
    try:
        from .. import scheduler
    except ImportError as exc:
        raise Problem(501, "scheduler-unavailable", "the periodic scheduler is not available "
                      "in this installation") from exc
    return scheduler


def _schedule_id(request: Request) -> str:
    schedule_id: str = request.path_params["schedule_id"]
    if not SAFE_TEXT.fullmatch(schedule_id):
        raise Problem(404, "schedule-not-found", "no schedule has this id")
    return schedule_id


def _find(schedules: list[dict[str, Any]], schedule_id: str) -> dict[str, Any] | None:
    return next((s for s in schedules if s.get("id") == schedule_id), None)


def routes(ctx: WebContext) -> list[Route]:
    app = ctx.app

    async def list_schedules(request: Request) -> Response:
        schedules = await ctx.run(_scheduler().list_schedules, app)
        return JSONResponse({"schedules": schedules})

    def change(action: str) -> Any:
        async def endpoint(request: Request) -> Response:
            schedule_id = _schedule_id(request)
            module = _scheduler()

            def act() -> dict[str, Any]:
                changed = getattr(module, f"{action}_schedule")(app, schedule_id)
                if isinstance(changed, dict):
                    return changed
                found = _find(module.list_schedules(app), schedule_id)
                return found if found is not None else {"id": schedule_id}

            schedule = await ctx.run(act)
            log.info("schedule %s %sd over HTTP", schedule_id, action)
            return JSONResponse(schedule)
        return endpoint

    async def trigger(request: Request) -> Response:
        schedule_id = _schedule_id(request)
        job: Job[Any] = await ctx.run(_scheduler().trigger_schedule, app, schedule_id)
        log.info("schedule %s triggered over HTTP: job %s", schedule_id, job.id,
                 extra=job_log_extra(job.record))
        return JSONResponse(ctx.job_json(job.record, request), status_code=201,
                            headers={"Location": str(request.url_for("job",
                                                                     job_id=job.id).path)})

    return [
        Route("/api/schedules", list_schedules, methods=["GET"], name="list_schedules"),
        Route("/api/schedules/{schedule_id}/pause", change("pause"), methods=["POST"],
              name="pause_schedule"),
        Route("/api/schedules/{schedule_id}/resume", change("resume"), methods=["POST"],
              name="resume_schedule"),
        Route("/api/schedules/{schedule_id}/trigger", trigger, methods=["POST"],
              name="trigger_schedule"),
    ]
