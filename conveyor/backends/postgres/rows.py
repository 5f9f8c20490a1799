"""The job row: :class:`~conveyor.backends.base.JobRecord` to SQL parameters and back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from typing import Any

from ..base import FINISHED, LIVE, AttemptError, JobRecord, Transition

#: table columns, in JobRecord's field order so a row is ``JobRecord(*row)``
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(JobRecord))
JSON_COLUMNS = frozenset({"errors", "history", "headers"})
ARRAY_TYPES = {"priority": "int4", "attempts": "int4", "max_attempts": "int4",
               "version": "int8", "cancel_requested": "bool",
               **{c: "float8" for c in ("run_at", "created_at", "timeout", "result_ttl",
                                        "started_at", "finished_at", "lease_expires_at",
                                        "progress", "result_expires_at")}}
SELECT = ", ".join(COLUMNS)
FINISHED_SQL = "('succeeded', 'failed', 'cancelled')"
LIVE_SQL = "('scheduled', 'queued', 'running')"
assert {"succeeded", "failed", "cancelled"} == FINISHED
assert {"scheduled", "queued", "running"} == LIVE


def _loads(value: Any) -> Any:
    # a caller's connection (Django registers a text loader for jsonb) may hand back raw text
    return json.loads(value) if isinstance(value, str | bytes) else value


def job_from_row(row: Sequence[Any]) -> JobRecord:
    """The job of a row that starts with :data:`COLUMNS` (extra trailing values are ignored)."""
    record = JobRecord(*row[:len(COLUMNS)])
    record.errors = [AttemptError(**e) for e in _loads(record.errors)]
    record.history = [Transition(**h) for h in _loads(record.history)]
    record.headers = _loads(record.headers)
    return record


def clean(text: str) -> str:
    # jsonb and text both refuse NUL; a traceback is still worth keeping without it
    return text.replace("\x00", "\ufffd")


def error_json(errors: Iterable[AttemptError]) -> str:
    return json.dumps([{**asdict(e), "type": clean(e.type), "message": clean(e.message),
                        "traceback": clean(e.traceback)} for e in errors])


def history_entry(status: str, at: float) -> str:
    """A one-transition history array, as jsonb text (json.dumps keeps the float exact)."""
    return json.dumps([{"status": status, "at": at}])


def _history_json(history: Sequence[Transition]) -> str:
    if not history:
        return "[]"
    return json.dumps([{"status": t.status, "at": t.at} for t in history])


def job_arrays(jobs: Sequence[JobRecord]) -> dict[str, list[Any]]:
    """One array per column. Values are coerced to one Python type per array (an int
    ``timeout`` becomes a float) because binary array dumping refuses mixed types."""
    arrays: dict[str, list[Any]] = {}
    for name in COLUMNS:
        if name == "errors":
            arrays[name] = [error_json(j.errors) if j.errors else "[]" for j in jobs]
        elif name == "history":
            arrays[name] = [_history_json(j.history) for j in jobs]
        elif name == "headers":
            arrays[name] = [json.dumps({clean(k): clean(v) for k, v in j.headers.items()})
                            if j.headers else "{}" for j in jobs]
        elif ARRAY_TYPES.get(name) == "float8":
            values = [getattr(j, name) for j in jobs]
            arrays[name] = [None if v is None else float(v) for v in values]
        elif name == "cancel_requested":
            arrays[name] = [bool(j.cancel_requested) for j in jobs]
        else:
            arrays[name] = [getattr(j, name) for j in jobs]
    return arrays
