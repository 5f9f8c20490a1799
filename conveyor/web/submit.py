"""The body of ``POST /api/jobs``, checked field by field before anything is enqueued.

Every problem is reported at once, each with the JSON pointer of the field at fault, so a form
can mark all its bad fields in one round trip.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .problems import Problem

#: what a job id, a cursor, a queue or task filter may look like on the wire: the ids Conveyor
#: makes and the names users give, never a control character a database would choke on
SAFE_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,255}")
ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

MAX_DELAY = 10 * 365 * 86400.0
#: Unix time of 9999-12-31T23:59:59Z, the last instant a datetime can hold
MAX_ETA = 253402300799.0
INT32 = (-(2**31), 2**31 - 1)

FIELDS = ("task", "args", "kwargs", "queue", "priority", "delay", "eta", "key")


@dataclass
class Submission:
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _eta(value: Any) -> float | str:
    """The eta as Unix time, or what is wrong with it."""
    if _number(value):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return "must be Unix time in seconds or an RFC 3339 date-time"
        if parsed.tzinfo is None:
            return "must carry a time zone offset (e.g. 2030-01-01T09:00:00Z)"
        seconds = parsed.timestamp()
    else:
        return "must be Unix time in seconds or an RFC 3339 date-time"
    if not 0 <= seconds <= MAX_ETA:
        return "is out of range"
    return seconds


def parse_submission(body: Any) -> Submission:
    """The submission in ``body``; a 422 listing every bad field otherwise."""
    if not isinstance(body, dict):
        raise Problem(422, "validation-error", "the request body must be a JSON object",
                      errors=[{"pointer": "#", "message": "must be an object"}])
    errors: list[dict[str, str]] = []

    def bad(name: str, message: str) -> None:
        errors.append({"pointer": f"#/{name}", "message": message})

    for name in body:
        if name not in FIELDS:
            escaped = name.replace("~", "~0").replace("/", "~1")
            bad(escaped, f"unknown field (known: {', '.join(FIELDS)})")
    task = body.get("task")
    if task is None:
        bad("task", "is required: the name of the task to run")
    elif not isinstance(task, str) or not SAFE_TEXT.fullmatch(task):
        bad("task", "must be a task name (a string of 1 to 255 characters)")
    args = body.get("args", [])
    if not isinstance(args, list):
        bad("args", "must be an array of positional arguments")
    kwargs = body.get("kwargs", {})
    if not isinstance(kwargs, dict):
        bad("kwargs", "must be an object of keyword arguments")
    options: dict[str, Any] = {}
    for name in ("queue", "key"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, str) and SAFE_TEXT.fullmatch(value):
            options[name] = value
        else:
            bad(name, "must be a string of 1 to 255 characters without control characters")
    priority = body.get("priority")
    if priority is not None:
        if isinstance(priority, int) and not isinstance(priority, bool) and \
                INT32[0] <= priority <= INT32[1]:
            options["priority"] = priority
        else:
            bad("priority", f"must be an integer between {INT32[0]} and {INT32[1]}")
    delay, eta = body.get("delay"), body.get("eta")
    if delay is not None and eta is not None:
        bad("eta", "give delay or eta, not both")
    elif delay is not None:
        if _number(delay) and 0 <= delay <= MAX_DELAY:
            options["delay"] = float(delay)
        else:
            bad("delay", f"must be a number of seconds between 0 and {MAX_DELAY:.0f}")
    elif eta is not None:
        when = _eta(eta)
        if isinstance(when, str):
            bad("eta", when)
        else:
            options["eta"] = when
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise Problem(422, "validation-error", f"{first['pointer']}: {first['message']}{more}",
                      errors=errors)
    assert isinstance(task, str) and isinstance(args, list) and isinstance(kwargs, dict)
    return Submission(task, args, kwargs, options)
