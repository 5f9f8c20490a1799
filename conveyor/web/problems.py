"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error response of the API is a problem document ``{type, title, status, detail}``, plus
``errors: [{pointer | parameter, message}]`` when a request failed validation. Handlers raise
:class:`Problem` (or let a :class:`~conveyor.errors.ConveyorError` through, which
:func:`problem_for` maps to its status); nothing ever answers with a stack trace.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import (
    BackendError,
    ConveyorError,
    InvalidTransition,
    JobNotFound,
    PayloadTooLarge,
    ScheduleNotFound,
    UnknownTask,
    ValidationError,
)

log = logging.getLogger("conveyor.web")

PROBLEM_JSON = "application/problem+json"
#: problem types are URNs: stable identifiers a client can switch on, resolvable nowhere
TYPE_PREFIX = "urn:conveyor:problem:"

#: HTTP statuses a Starlette ``HTTPException`` can carry, named for their problem type
_HTTP_TYPES = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
               405: "method-not-allowed", 406: "not-acceptable", 409: "conflict",
               413: "payload-too-large", 415: "unsupported-media-type",
               422: "validation-error", 500: "internal-error", 503: "unavailable"}


class Problem(Exception):
    """An HTTP error to answer with; ``kind`` becomes ``urn:conveyor:problem:<kind>``."""

    def __init__(self, status: int, kind: str, detail: str, *,
                 errors: list[dict[str, str]] | None = None,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": TYPE_PREFIX + self.kind,
            "title": http.client.responses.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            document["instance"] = instance
        if self.errors is not None:
            document["errors"] = self.errors
        document.update(self.extra)
        return document

    def response(self, instance: str | None = None) -> Response:
        content = json.dumps(self.body(instance), ensure_ascii=False, separators=(",", ":"))
        return Response(content, status_code=self.status, headers=self.headers,
                        media_type=PROBLEM_JSON)


def invalid(pointer: str, message: str, detail: str | None = None) -> Problem:
    """A 422 for one bad field of the request body."""
    return Problem(422, "validation-error", detail or f"{pointer}: {message}",
                   errors=[{"pointer": pointer, "message": message}])


def invalid_parameter(name: str, message: str) -> Problem:
    """A 422 for one bad query parameter or header."""
    return Problem(422, "validation-error", f"{name}: {message}",
                   errors=[{"parameter": name, "message": message}])


def problem_for(exc: ConveyorError) -> Problem:
    """The HTTP answer to an error raised by Conveyor's core."""
    if isinstance(exc, PayloadTooLarge):
        return Problem(413, "payload-too-large", str(exc))
    if isinstance(exc, ValidationError):
        return Problem(422, "validation-error", str(exc), errors=exc.errors or
                       [{"pointer": "#", "message": str(exc)}])
    if isinstance(exc, UnknownTask):
        return Problem(422, "unknown-task", str(exc),
                       errors=[{"pointer": "#/task", "message": "no task has this name"}])
    if isinstance(exc, JobNotFound):
        return Problem(404, "job-not-found", str(exc))
    if isinstance(exc, ScheduleNotFound):
        return Problem(404, "schedule-not-found", str(exc))
    if isinstance(exc, InvalidTransition):
        return Problem(409, "invalid-transition", str(exc),
                       **({"job_status": exc.context["status"]}
                          if "status" in exc.context else {}))
    if isinstance(exc, BackendError):
        # driver messages can name hosts or credentials: log them, answer generically
        log.error("job store error: %s", exc, exc_info=exc)
        return Problem(503, "backend-unavailable", "the job store is unavailable; try again "
                       "later", headers={"Retry-After": "5"})
    log.error("unexpected Conveyor error: %s", exc, exc_info=exc)
    return Problem(500, "internal-error", "the server failed to handle this request")


def _instance(request: Request) -> str:
    return request.url.path


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response(_instance(request))


async def on_conveyor_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConveyorError)
    return problem_for(exc).response(_instance(request))


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = _HTTP_TYPES.get(exc.status_code, "http-error")
    detail = {404: f"no route matches {request.url.path}",
              405: f"{request.method} is not allowed on {request.url.path}"}.get(
                  exc.status_code, str(exc.detail))
    return Problem(exc.status_code, kind, detail, headers=exc.headers).response(
        _instance(request))


EXCEPTION_HANDLERS = {Problem: on_problem, ConveyorError: on_conveyor_error,
                      HTTPException: on_http_exception}


class CatchAll:
    """The last line: an unexpected exception is logged and answered with a generic 500
    problem (never its message or traceback); after the response started, the stream is cut."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                return
            response = Problem(500, "internal-error",
                               "the server failed to handle this request").response()
            await response(scope, receive, send)
