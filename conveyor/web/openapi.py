"""``/openapi.json`` (OpenAPI 3.1) and ``/docs``, the interactive explorer.

The document is written here, not derived from handler annotations: the request body of
``POST /api/jobs`` is one schema per exposed task, built from each task's type hints
(``task.signature.json_schema()``), so generated clients know every task's arguments. It is
rebuilt per request (it is cheap), so tasks registered late still show.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..backends.base import STATUSES
from ..task import Task
from .context import WebContext
from .submit import ID_PATTERN, INT32, MAX_DELAY

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str) -> Schema:
    return {"type": [kind, "null"]}


def _object(properties: Schema, required: list[str] | None = None, **extra: Any) -> Schema:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required, **extra}


ATTEMPT_ERROR = _object({
    "attempt": {"type": "integer"}, "type": {"type": "string"}, "message": {"type": "string"},
    "traceback": {**_nullable("string"), "description": "null for read-only tokens"},
    "at": {"type": "number"}, "reason": {"type": "string"}})

JOB = _object({
    "id": {"type": "string"}, "task": {"type": "string"}, "queue": {"type": "string"},
    "status": {"enum": list(STATUSES)}, "priority": {"type": "integer"},
    "args": {"type": "array"}, "kwargs": {"type": "object"}, "key": _nullable("string"),
    "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"},
    "progress": _object({"percent": {"type": "number", "minimum": 0, "maximum": 100},
                         "message": _nullable("string")}),
    "result": {"description": "the task's return value once succeeded, else null"},
    "errors": {"type": "array", "items": _ref("AttemptError")},
    "history": {"type": "array", "items": _object({"status": {"type": "string"},
                                                   "at": {"type": "number"}})},
    "created_at": {"type": "number"}, "run_at": {"type": "number"},
    "started_at": _nullable("number"), "finished_at": _nullable("number"),
    "worker_id": _nullable("string"), "cancel_requested": {"type": "boolean"},
    "result_expires_at": _nullable("number"), "timeout": _nullable("number"),
    "version": {"type": "integer", "description": "bumped by every change; the SSE event id"},
}, description="A job. Times are Unix seconds.")

PROBLEM = _object({
    "type": {"type": "string", "format": "uri-reference"}, "title": {"type": "string"},
    "status": {"type": "integer"}, "detail": {"type": "string"},
    "instance": {"type": "string"},
    "errors": {"type": "array", "items": _object({
        "pointer": {"type": "string", "description": "JSON pointer into the request body"},
        "parameter": {"type": "string", "description": "the query parameter or header"},
        "message": {"type": "string"}}, ["message"])},
}, ["type", "title", "status", "detail"],
    description="RFC 9457 problem details; extra members may be present.")

WORKER = _object({
    "id": {"type": "string"}, "host": {"type": "string"}, "pid": {"type": "integer"},
    "kind": {"enum": ["worker", "scheduler"]},
    "queues": {"type": "array", "items": {"type": "string"}},
    "concurrency": {"type": "integer"},
    "current_jobs": {"type": "array", "items": {"type": "string"}},
    "started_at": {"type": "number"}, "last_heartbeat": {"type": "number"}})

TASK = _object({
    "name": {"type": "string"}, "queue": {"type": "string"}, "expose": {"type": "boolean"},
    "doc": _nullable("string"), "is_async": {"type": "boolean"},
    "priority": {"type": "integer"}, "retries": {"type": "integer"},
    "timeout": _nullable("number"),
    "schema": {"type": "object", "description": "JSON Schema of the keyword arguments"}})

QUEUE = _object({"name": {"type": "string"},
                 "counts": _object({s: {"type": "integer"} for s in STATUSES}),
                 "total": {"type": "integer"}})

RESULT = _object({"id": {"type": "string"}, "status": {"const": "succeeded"},
                  "result": {"description": "the task's return value"},
                  "finished_at": _nullable("number"), "result_expires_at": _nullable("number")})

OPTIONS: Schema = {
    "queue": {"type": "string", "minLength": 1, "maxLength": 255,
              "description": "run on this queue instead of the task's"},
    "priority": {"type": "integer", "minimum": INT32[0], "maximum": INT32[1],
                 "description": "higher runs first within a queue"},
    "delay": {"type": "number", "minimum": 0, "maximum": MAX_DELAY,
              "description": "seconds from now (not with eta)"},
    "eta": {"anyOf": [{"type": "number", "minimum": 0},
                      {"type": "string", "format": "date-time"}],
            "description": "when to run: Unix seconds or an RFC 3339 date-time (not with delay)"},
    "key": {"type": "string", "minLength": 1, "maxLength": 255,
            "description": "idempotency key: while a job with this key is live, submitting "
                           "again returns it (200) instead of a new one (201)"},
}

GENERIC_SUBMIT = _object({
    "task": {"type": "string", "minLength": 1, "maxLength": 255},
    "args": {"type": "array", "default": []},
    "kwargs": {"type": "object", "default": {}}, **OPTIONS}, ["task"],
    additionalProperties=False)


def _component_name(task: Task[Any, Any]) -> str:
    return "Submit." + re.sub(r"[^A-Za-z0-9._-]", "_", task.name)


def task_request_schema(task: Task[Any, Any]) -> Schema:
    """The body that submits ``task``: its name, its arguments' schema, and the options."""
    kwargs = task.signature.json_schema()
    return {
        "type": "object",
        "title": task.name,
        "description": task.__doc__.strip() if task.__doc__ else f"Submit {task.name}.",
        "properties": {
            "task": {"const": task.name},
            "args": {"type": "array", "default": [],
                     "description": "positional arguments; the keyword form below is clearer"},
            "kwargs": kwargs,
            **OPTIONS,
        },
        "required": ["task", "kwargs"] if kwargs.get("required") else ["task"],
        "additionalProperties": False,
    }


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PROBLEM_RESPONSE = {"description": "an error, as RFC 9457 problem details",
                    "content": {"application/problem+json": {"schema": _ref("Problem")}}}


def _op(op_id: str, summary: str, tag: str, responses: Schema, *,
        parameters: list[Schema] | None = None, body: Schema | None = None,
        public: bool = False) -> Schema:
    operation: Schema = {"operationId": op_id, "summary": summary, "tags": [tag],
                         "responses": {**responses, "default": PROBLEM_RESPONSE}}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = body
    if public:
        operation["security"] = []
    return operation


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


JOB_ID = {"name": "job_id", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}}
SCHEDULE_ID = {"name": "schedule_id", "in": "path", "required": True,
               "schema": {"type": "string", "minLength": 1, "maxLength": 255}}


def _paths(ctx: WebContext) -> Schema:
    job = _json(_ref("Job"), "the job")
    name_filter = {"type": "string", "minLength": 1, "maxLength": 255}
    return {
        "/api/jobs": {
            "post": _op("submitJob", "Submit a job (exposed tasks only)", "jobs", {
                "201": {**_json(_ref("Job"), "created; Location names it"),
                        "headers": {"Location": {"schema": {"type": "string"}}}},
                "200": _json(_ref("Job"), "a live job with the same key already exists")},
                body={"required": True, "content": {"application/json": {
                    "schema": _ref("SubmitRequest")}}}),
            "get": _op("listJobs", "List jobs, newest first", "jobs", {
                "200": _json(_ref("JobList"), "one page; follow `next` for more")},
                parameters=[
                    _query("status", {"enum": list(STATUSES)}, "only jobs in this state"),
                    _query("queue", name_filter, "only jobs of this queue"),
                    _query("task", name_filter, "only jobs of this task"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                     "default": 50}, "page size"),
                    _query("cursor", {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"},
                           "the `cursor` of the previous page")]),
        },
        "/api/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": _op("getJob", "Read a job", "jobs", {"200": job}),
            "delete": _op("deleteJob", "Delete a job that is not running", "jobs",
                          {"204": {"description": "deleted"}}),
        },
        "/api/jobs/{job_id}/result": {
            "parameters": [JOB_ID],
            "get": _op("getJobResult", "The result, waiting up to `wait` seconds", "jobs", {
                "200": _json(_ref("Result"), "succeeded"),
                "202": _json(_ref("Job"), "not finished yet: ask again"),
                "409": {**PROBLEM_RESPONSE, "description": "the job failed or was cancelled"}},
                parameters=[_query("wait", {"type": "number", "minimum": 0,
                                            "maximum": ctx.max_wait, "default": 0},
                                   "seconds to wait for the job to finish")]),
        },
        "/api/jobs/{job_id}/cancel": {
            "parameters": [JOB_ID],
            "post": _op("cancelJob", "Cancel a job", "jobs", {
                "200": _json(_ref("Job"), "cancelled"),
                "202": _json(_ref("Job"), "running: the worker was asked to stop it"),
                "409": {**PROBLEM_RESPONSE, "description": "already finished"}}),
        },
        "/api/jobs/{job_id}/retry": {
            "parameters": [JOB_ID],
            "post": _op("retryJob", "Queue a failed or cancelled job again", "jobs", {
                "200": job, "409": {**PROBLEM_RESPONSE,
                                    "description": "not failed or cancelled"}}),
        },
        "/api/jobs/{job_id}/events": {
            "parameters": [JOB_ID],
            "get": _op("jobEvents", "Follow a job as Server-Sent Events", "jobs", {
                "200": {"description": "`event: state|progress|deleted`, `id:` the job "
                                       "version, `data:` the job as JSON; ends with the job",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                "204": {"description": "the job finished and the client saw its last "
                                       "version"}},
                parameters=[
                    {"name": "Last-Event-ID", "in": "header", "required": False,
                     "schema": {"type": "string"},
                     "description": "the last `id:` seen; resumes after it"},
                    _query("last_event_id", {"type": "integer", "minimum": 0,
                                             "maximum": 2**63 - 1},
                           "as Last-Event-ID, for clients that cannot set headers")]),
        },
        "/api/tasks": {"get": _op("listTasks", "Registered tasks and their argument schemas",
                                  "catalog", {"200": _json(_object({"tasks": {
                                      "type": "array", "items": _ref("Task")}}), "tasks")})},
        "/api/queues": {"get": _op("listQueues", "Queues and job counts per state", "catalog",
                                   {"200": _json(_object({"queues": {
                                       "type": "array", "items": _ref("Queue")}}), "queues")})},
        "/api/workers": {"get": _op(
            "listWorkers", "Live workers and schedulers", "catalog",
            {"200": _json(_object({"workers": {"type": "array", "items": _ref("Worker")}}),
                          "workers")},
            parameters=[_query("kind", {"enum": ["worker", "scheduler"]}, "only this kind")])},
        "/api/schedules": {"get": _op(
            "listSchedules", "Periodic schedules", "schedules",
            {"200": _json(_object({"schedules": {"type": "array",
                                                 "items": _ref("Schedule")}}), "schedules")})},
        **{f"/api/schedules/{{schedule_id}}/{action}": {
            "parameters": [SCHEDULE_ID],
            "post": _op(f"{action}Schedule", f"{action.capitalize()} a schedule", "schedules",
                        {"200": _json(_ref("Schedule"), "the schedule")})}
           for action in ("pause", "resume")},
        "/api/schedules/{schedule_id}/trigger": {
            "parameters": [SCHEDULE_ID],
            "post": _op("triggerSchedule", "Run a schedule's task now", "schedules",
                        {"201": _json(_ref("Job"), "the job it enqueued")})},
        "/health": {"get": _op("health", "Is the job store reachable?", "health", {
            "200": _json(_object({"status": {"const": "ok"}, "backend": {"type": "string"}}),
                         "healthy")}, public=True)},
        "/health/scheduler": {"get": _op(
            "schedulerHealth", "Is a scheduler alive?", "health",
            {"200": _json(_object({"status": {"const": "ok"},
                                   "schedulers": {"type": "array", "items": _ref("Worker")}},
                                  ["status", "schedulers"]), "a scheduler is alive")},
            public=True)},
        "/metrics": {"get": _op("metrics", "Prometheus metrics", "health", {
            "200": {"description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    }


def document(ctx: WebContext, root_path: str, secured: bool) -> Schema:
    exposed = sorted((t for t in ctx.app.tasks.values() if t.expose), key=lambda t: t.name)
    schemas: Schema = {
        "Job": JOB, "AttemptError": ATTEMPT_ERROR, "Problem": PROBLEM, "Worker": WORKER,
        "Task": TASK, "Queue": QUEUE, "Result": RESULT,
        "JobList": _object({"jobs": {"type": "array", "items": _ref("Job")},
                            "cursor": _nullable("string"), "next": _nullable("string")}),
        "Schedule": {"type": "object", "required": ["id", "paused"],
                     "properties": {"id": {"type": "string"}, "paused": {"type": "boolean"},
                                    "task": {"type": "string"},
                                    "next_run_time": _nullable("number")},
                     "description": "a periodic schedule, its trigger and its recent runs"},
    }
    if exposed:
        for task in exposed:
            schemas[_component_name(task)] = task_request_schema(task)
        schemas["SubmitRequest"] = {
            "oneOf": [_ref(_component_name(t)) for t in exposed],
            "discriminator": {"propertyName": "task", "mapping": {
                t.name: f"#/components/schemas/{_component_name(t)}" for t in exposed}}}
    else:
        schemas["SubmitRequest"] = GENERIC_SUBMIT
    doc: Schema = {
        "openapi": "3.1.0",
        "info": {"title": "Conveyor", "version": _version(),
                 "description": "Submit, follow and manage background jobs. Errors are RFC "
                                "9457 problem details."},
        "servers": [{"url": root_path or "/"}],
        "paths": _paths(ctx),
        "components": {"schemas": schemas},
        "tags": [{"name": n} for n in ("jobs", "catalog", "schedules", "health")],
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc


def _version() -> str:
    from .. import __version__

    return __version__


def _static(name: str) -> str:
    return resources.files("conveyor.web").joinpath("static", name).read_text("utf-8")


# the explorer's script is its own file so the page can forbid inline script
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


def routes(ctx: WebContext, secured: bool) -> list[Route]:
    async def openapi(request: Request) -> Response:
        return JSONResponse(document(ctx, request.scope.get("root_path", ""), secured))

    async def docs(request: Request) -> Response:
        return Response(_static("docs.html"), media_type="text/html",
                        headers={"Content-Security-Policy": DOCS_CSP})

    async def script(request: Request) -> Response:
        return Response(_static("explorer.js"), media_type="text/javascript",
                        headers={"Cache-Control": "no-cache"})

    return [
        Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
        Route("/docs", docs, methods=["GET"], name="docs"),
        Route("/docs/explorer.js", script, methods=["GET"], name="docs_script"),
    ]
