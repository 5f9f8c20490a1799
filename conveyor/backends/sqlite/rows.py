"""The job row: :class:`~conveyor.backends.base.JobRecord` to the parameters of the statements
in ``queries`` and back. Lists and dicts are stored as compact JSON text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..base import AttemptError, JobRecord, Outcome, Transition

dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads


def job_from_row(row: Sequence[Any]) -> JobRecord:
    """The job of a row of ``queries.COLS``."""
    values = list(row)
    values[22] = bool(values[22])
    errors = values[23]
    values[23] = [AttemptError(**e) for e in _loads(errors)] if errors != "[]" else []
    history = values[24]
    values[24] = ([Transition(h["status"], h["at"]) for h in _loads(history)]
                  if history != "[]" else [])
    headers = values[25]
    values[25] = _loads(headers) if headers != "{}" else {}
    return JobRecord(*values)


def _errors_json(errors: list[AttemptError]) -> str:
    return dumps([vars(e) for e in errors]) if errors else "[]"


def _history_json(history: list[Transition]) -> str:
    return dumps([vars(h) for h in history]) if history else "[]"


def insert_params(j: JobRecord) -> tuple[Any, ...]:
    """The parameters of ``queries.INSERT``."""
    return (j.id, j.task, j.queue, j.args, j.kwargs, j.priority, j.status, j.run_at,
            j.created_at, j.attempts, j.max_attempts, j.timeout, j.result_ttl, j.key,
            j.started_at, j.finished_at, j.worker_id, j.lease_expires_at, j.progress,
            j.progress_message, j.result, j.result_expires_at, j.cancel_requested,
            _errors_json(j.errors), _history_json(j.history),
            dumps(j.headers) if j.headers else "{}", j.version)


def rewrite_params(j: JobRecord) -> tuple[Any, ...]:
    """The parameters of ``queries.REWRITE``."""
    return (j.status, j.run_at, j.attempts, j.max_attempts, j.started_at, j.finished_at,
            j.worker_id, j.lease_expires_at, j.progress, j.progress_message, j.result,
            j.result_expires_at, j.cancel_requested, _errors_json(j.errors),
            _history_json(j.history), j.version, j.id)


def transition(status: str, now: float) -> str:
    return dumps({"status": status, "at": now})


def finish_params(o: Outcome, now: float) -> tuple[Any, ...]:
    """The parameters of ``queries.FINISH`` (?1 to ?12, as described there)."""
    status = o.status
    final = status in ("succeeded", "failed", "cancelled")
    if status == "scheduled":
        run_at: float | None = o.run_at if o.run_at is not None else now
    elif status == "queued":
        run_at = now
    else:
        run_at = None
    return (status, dumps(vars(o.error)) if o.error is not None else None, o.result,
            final, o.result_expires_at, run_at, status == "queued", now if final else None,
            not final, transition(status, now), o.job_id, o.attempt)
