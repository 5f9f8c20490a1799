"""Input limits: the request body's size and type, and bounded query parameters.

The body limit is enforced twice: a ``Content-Length`` over it is refused before anything is
read, and the bytes actually received are counted, so a chunked upload (no length) or a lying
header cannot get past it either.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import Problem, invalid_parameter

DEFAULT_MAX_BODY = 1 << 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def too_large(limit: int) -> Problem:
    return Problem(413, "payload-too-large", f"the request body is larger than {limit:,} bytes")


class BodyLimit:
    """ASGI middleware refusing request bodies over ``max_body`` bytes with a 413."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and (declared > self.max_body or declared < 0):
            problem = too_large(self.max_body) if declared > 0 else Problem(
                400, "bad-request", "the Content-Length header is not a valid length")
            await problem.response(scope.get("path"))(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise too_large(self.max_body)  # the handler reading the body answers 413
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


def _is_json(content_type: str) -> bool:
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if not (media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))):
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
                "utf-8", "utf8"):
            return False
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request) -> Any:
    """The request body as JSON: 415 unless it is declared JSON (UTF-8), 400 if it is not."""
    content_type = request.headers.get("content-type", "")
    if not _is_json(content_type):
        raise Problem(415, "unsupported-media-type",
                      f"send the body as application/json (got {content_type or 'no type'!r})")
    body = await request.body()
    if not body.strip():
        raise Problem(400, "malformed-json", "the request body is empty; send a JSON object")
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(
            exc, json.JSONDecodeError) else ""
        raise Problem(400, "malformed-json", f"the request body is not valid JSON{where}") \
            from None
    try:
        # "\ud800" is valid JSON but no text: no database could store it
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise Problem(400, "malformed-json", "the request body contains an unpaired UTF-16 "
                      "surrogate escape (\\ud800-\\udfff), which is not text") from None
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_parameter(name, f"must be an integer between {low} and {high}") from None
    if not low <= value <= high:
        raise invalid_parameter(name, f"must be between {low} and {high}, got {value}")
    return value


def query_float(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise invalid_parameter(name, f"must be a number of seconds between {low:g} and "
                                      f"{high:g}")
    return value


def query_str(request: Request, name: str, *, max_length: int = 255,
              choices: tuple[str, ...] | None = None) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        raise invalid_parameter(name, f"must be at most {max_length} characters")
    if _CONTROL.search(raw):
        raise invalid_parameter(name, "must not contain control characters")
    if choices is not None and raw not in choices:
        raise invalid_parameter(name, f"must be one of {', '.join(choices)}")
    return raw
