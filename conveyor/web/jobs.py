"""``/api/jobs``: submit, list, read, wait for the result, cancel, retry, delete, follow."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import serialize
from ..backends.base import STATUSES, JobRecord
from ..job import Job
from .context import WebContext, job_log_extra
from .limits import query_float, query_int, query_str, read_json
from .problems import Problem, invalid_parameter
from .sse import HEARTBEAT, Emit, EventStreamResponse, event, kind_of_change
from .submit import ID_PATTERN, parse_submission

log = logging.getLogger("conveyor.web")

Endpoint = Callable[[Request], Awaitable[Response]]

MAX_LIMIT = 1000


def _not_found(job_id: str) -> Problem:
    return Problem(404, "job-not-found", f"no job with id {job_id!r}")


def _job_id(request: Request) -> str:
    job_id: str = request.path_params["job_id"]
    if not ID_PATTERN.fullmatch(job_id):
        raise _not_found(job_id[:128])  # no job can have such an id
    return job_id


def _location(request: Request, job_id: str) -> str:
    return str(request.url_for("job", job_id=job_id).path)


def routes(ctx: WebContext) -> list[Route]:
    app = ctx.app

    async def load(request: Request) -> JobRecord:
        job_id = _job_id(request)
        # the shared pool, not the feed's: a busy feed must not slow plain reads down
        record = await ctx.run(app.backend.get, job_id)
        if record is None:
            raise _not_found(job_id)
        return record

    def respond(request: Request, record: JobRecord, status: int = 200,
                headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(ctx.job_json(record, request), status_code=status, headers=headers)

    # -- submit ------------------------------------------------------------------------------

    def enqueue(name: str, args: list[Any], kwargs: dict[str, Any],
                options: dict[str, Any]) -> tuple[JobRecord, bool]:
        task = app.tasks.get(name)
        if task is None:
            known = ", ".join(sorted(t.name for t in app.tasks.values() if t.expose))
            raise Problem(422, "unknown-task", f"no task is registered as {name!r}"
                          + (f" (tasks open to the API: {known})" if known else ""),
                          errors=[{"pointer": "#/task", "message": "no task has this name"}])
        if not task.expose:
            raise Problem(403, "task-not-exposed", f"task {name!r} cannot be submitted over "
                          "HTTP: register it with @app.task(expose=True) to allow that")
        job = app.enqueue(task, args, kwargs, **options)
        return job.record, job.created

    async def submit(request: Request) -> Response:
        submission = parse_submission(await read_json(request))
        record, created = await ctx.run(enqueue, submission.task, submission.args,
                                        submission.kwargs, submission.options)
        log.info("job %s (%s) %s over HTTP", record.id, record.task,
                 "submitted" if created else "already submitted (same key)",
                 extra=job_log_extra(record))
        return respond(request, record, 201 if created else 200,
                       {"Location": _location(request, record.id)})

    # -- read --------------------------------------------------------------------------------

    async def list_jobs(request: Request) -> Response:
        status = query_str(request, "status", choices=STATUSES)
        queue = query_str(request, "queue")
        task = query_str(request, "task")
        limit = query_int(request, "limit", 50, 1, MAX_LIMIT)
        cursor = query_str(request, "cursor", max_length=128)
        if cursor is not None and not ID_PATTERN.fullmatch(cursor):
            raise invalid_parameter("cursor", "is not a cursor this API returned")
        page = await ctx.run(app.list_jobs, status=status, queue=queue, task=task,
                             limit=limit, cursor=cursor)
        next_url = None
        if page.cursor:
            query = request.url.include_query_params(cursor=page.cursor).query
            next_url = f"{request.url.path}?{query}"
        return JSONResponse({"jobs": [ctx.job_json(j.record, request) for j in page],
                             "cursor": page.cursor, "next": next_url},
                            headers={"Link": f'<{next_url}>; rel="next"'} if next_url else None)

    async def get_job(request: Request) -> Response:
        return respond(request, await load(request))

    async def result(request: Request) -> Response:
        wait = query_float(request, "wait", 0.0, 0.0, ctx.max_wait)
        record = await load(request)
        if not record.finished and wait > 0:
            record = await _wait_finished(ctx, record, wait)
        if record.status == "succeeded":
            return JSONResponse({"id": record.id, "status": record.status,
                                 "result": serialize.loads(record.result),
                                 "finished_at": record.finished_at,
                                 "result_expires_at": record.result_expires_at})
        if record.status in ("failed", "cancelled"):
            raise _ended(record)
        return respond(request, record, 202, {"Retry-After": "1"})

    # -- act ---------------------------------------------------------------------------------

    async def cancel(request: Request) -> Response:
        record = await load(request)
        # a finished job raises InvalidTransition: a 409
        job: Job[Any] = await ctx.run(Job(app, record).cancel)
        log.info("job %s (%s) %s over HTTP", job.id, job.task,
                 "cancelled" if job.status == "cancelled" else "asked to stop",
                 extra=job_log_extra(job.record))
        return respond(request, job.record, 200 if job.status == "cancelled" else 202)

    async def retry(request: Request) -> Response:
        record = await load(request)
        job: Job[Any] = await ctx.run(Job(app, record).retry)
        log.info("job %s (%s) queued again over HTTP", job.id, job.task,
                 extra=job_log_extra(job.record))
        return respond(request, job.record)

    async def delete(request: Request) -> Response:
        record = await load(request)
        if record.status == "running":
            raise Problem(409, "job-running", f"job {record.id} is running: cancel it first, "
                          "then delete it once it stopped", job_status=record.status)
        if not await ctx.run(app.backend.delete, record.id):
            raise _not_found(record.id)
        log.info("job %s (%s) deleted over HTTP", record.id, record.task,
                 extra=job_log_extra(record))
        return Response(status_code=204)

    async def events(request: Request) -> Response:
        last = _last_event_id(request)
        record = await load(request)
        if last is not None and last > record.version:
            last = None  # an id from elsewhere: start over rather than wait for it
        if record.finished and last is not None and last >= record.version:
            return Response(status_code=204)  # seen to the end: EventSource stops here
        if request.method == "HEAD":
            return Response(media_type="text/event-stream")
        if ctx.feed.streams >= ctx.max_streams:
            raise Problem(503, "too-many-streams", "this server holds as many event streams "
                          "as it is allowed to; try again shortly", headers={"Retry-After": "5"})

        async def produce(emit: Emit) -> None:
            ctx.feed.streams += 1
            try:
                await _stream(ctx, request, record, last, emit)
            finally:
                ctx.feed.streams -= 1

        return EventStreamResponse(produce)

    return [
        Route("/api/jobs", by_method(POST=submit, GET=list_jobs), methods=["GET", "POST"],
              name="jobs"),
        Route("/api/jobs/{job_id}", by_method(GET=get_job, DELETE=delete),
              methods=["GET", "DELETE"], name="job"),
        Route("/api/jobs/{job_id}/result", result, methods=["GET"], name="job_result"),
        Route("/api/jobs/{job_id}/cancel", cancel, methods=["POST"], name="cancel_job"),
        Route("/api/jobs/{job_id}/retry", retry, methods=["POST"], name="retry_job"),
        Route("/api/jobs/{job_id}/events", events, methods=["GET"], name="job_events"),
    ]


def by_method(**handlers: Endpoint) -> Endpoint:
    """One endpoint per path serving several methods, so a 405 lists them all in ``Allow``."""
    if "GET" in handlers:
        handlers.setdefault("HEAD", handlers["GET"])

    async def endpoint(request: Request) -> Response:
        return await handlers[request.method](request)

    return endpoint


def _ended(record: JobRecord) -> Problem:
    last = record.errors[-1] if record.errors else None
    error = {"type": last.type, "message": last.message, "attempt": last.attempt,
             "reason": last.reason} if last else None
    if record.status == "cancelled":
        return Problem(409, "job-cancelled", f"job {record.id} ({record.task}) was cancelled",
                       job_id=record.id, job_status=record.status, error=error)
    detail = f": {last.type}: {last.message}" if last else ""
    return Problem(409, "job-failed", f"job {record.id} ({record.task}) failed after "
                   f"{record.attempts} attempt(s){detail}", job_id=record.id,
                   job_status=record.status, error=error)


async def _wait_finished(ctx: WebContext, record: JobRecord, wait: float) -> JobRecord:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    async with ctx.feed.subscribe(record.id, record) as subscription:
        current: JobRecord | None = record
        while current is not None and not current.finished:
            remaining = deadline - loop.time()
            if remaining <= 0 or subscription.closed:
                break
            current = await subscription.next(current.version, remaining)
    if current is None:
        raise _not_found(record.id)
    return current


def _last_event_id(request: Request) -> int | None:
    """The last version the client saw: the ``Last-Event-ID`` header an ``EventSource`` sends
    on reconnect, or ``?last_event_id=`` for clients that cannot set headers."""
    if "last_event_id" in request.query_params:
        return query_int(request, "last_event_id", 0, 0, 2**63 - 1)
    raw = request.headers.get("last-event-id", "").strip()
    if raw.isdigit() and len(raw) <= 18:
        return int(raw)
    return None  # the header is free text in the SSE spec: ignore what is not ours


def _job_event(ctx: WebContext, request: Request, kind: str, record: JobRecord) -> bytes:
    return event(kind, ctx.job_json(record, request), record.version)


async def _stream(ctx: WebContext, request: Request, record: JobRecord, last: int | None,
                  emit: Emit) -> None:
    await emit(b"retry: 2000\n\n")
    seen = -1 if last is None else last
    previous: JobRecord | None = record if last is not None else None
    if record.version > seen:
        await emit(_job_event(ctx, request, "state", record))
        seen, previous = record.version, record
    if record.finished:
        return
    async with ctx.feed.subscribe(record.id, record) as subscription:
        while True:
            current = await subscription.next(seen, ctx.heartbeat)
            if current is None:
                await emit(event("deleted", {"id": record.id}))
                return
            if current.version > seen:
                kind = kind_of_change(previous, current)
                await emit(subscription.encode(
                    (current.version, kind, ctx.redacted(request)),
                    functools.partial(_job_event, ctx, request, kind, current)))
                seen, previous = current.version, current
            elif subscription.closed:
                return
            else:
                await emit(HEARTBEAT)
            if current.finished:
                return
