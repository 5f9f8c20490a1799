"""Job records to the strings the Redis scripts store, and back."""

from __future__ import annotations

import json
from typing import Any

from ..base import AttemptError, JobRecord, Transition
from .scripts import FIELDS

dumps = json.JSONEncoder(separators=(",", ":")).encode


def num(value: float) -> str:
    """Exact text of a float (``repr`` round-trips; Redis and Lua parse it)."""
    return repr(float(value))


def opt_float(value: str | None) -> float | None:
    return None if value is None else float(value)


def opt_num(value: float | None) -> str | None:
    return None if value is None else num(value)


def encode_job(job: JobRecord) -> list[str]:
    """The enqueue script's arguments for one job (see ``enqueue_jobs`` in
    ``lua/helpers.lua``): a head of the values the script reads, then the fields the job has
    as field/value pairs, which the script hands to ``HSET`` as they are.

    Fields holding their default (no errors, history or headers, progress 0, no cancel
    request) are left out of the hash: at ~75 bytes per hash field that is 10% of a job.
    """
    history = history_json(job.history) if job.history else None
    priority, run_at, attempts = str(int(job.priority)), num(job.run_at), str(int(job.attempts))
    version = str(int(job.version))
    values = [
        job.id, job.task, job.queue, job.args, job.kwargs, priority, job.status, run_at,
        num(job.created_at), attempts, str(int(job.max_attempts)), opt_num(job.timeout),
        opt_num(job.result_ttl), job.key,
        opt_num(job.started_at), opt_num(job.finished_at), job.worker_id,
        opt_num(job.lease_expires_at), num(job.progress) if job.progress else None,
        job.progress_message, job.result, opt_num(job.result_expires_at),
        "1" if job.cancel_requested else None,
        dumps([vars(e) for e in job.errors]) if job.errors else None,
        history, dumps(job.headers) if job.headers else None, version,
    ]
    pairs = [part for name, value in zip(FIELDS, values, strict=True) if value is not None
             for part in (name, value)]
    return [job.id, job.queue, job.status, job.task, priority, run_at, opt_text(job.key),
            attempts, version, history or "", str(len(pairs) // 2), *pairs]


def history_json(history: list[Transition]) -> str:
    """The history as the scripts append to it; statuses need no escaping and ``repr`` is
    how ``json`` writes a float, so this is ``dumps`` without the encoder's cost."""
    return "[" + ",".join(f'{{"status":"{t.status}","at":{float(t.at)!r}}}'
                          for t in history) + "]"


def decode_row(v: list[Any]) -> JobRecord:
    """A job from its HMGET row (``FIELDS`` order; None where a field is absent)."""
    (id_, task, queue, args, kwargs, priority, status, run_at, created_at, attempts,
     max_attempts, timeout, result_ttl, key, started_at, finished_at, worker_id,
     lease_expires_at, progress, progress_message, result, result_expires_at, cancel_requested,
     errors, history, headers, version) = v
    return JobRecord(
        id=id_, task=task, queue=queue, args=args, kwargs=kwargs, priority=int(priority),
        status=status, run_at=float(run_at), created_at=float(created_at),
        attempts=int(attempts), max_attempts=int(max_attempts), timeout=opt_float(timeout),
        result_ttl=opt_float(result_ttl), key=key, started_at=opt_float(started_at),
        finished_at=opt_float(finished_at), worker_id=worker_id,
        lease_expires_at=opt_float(lease_expires_at),
        progress=float(progress) if progress else 0.0, progress_message=progress_message,
        result=result, result_expires_at=opt_float(result_expires_at),
        cancel_requested=cancel_requested == "1",
        errors=[AttemptError(**e) for e in json.loads(errors)] if errors else [],
        history=[Transition(**t) for t in json.loads(history)] if history else [],
        headers=json.loads(headers) if headers else {}, version=int(version),
    )


def decode_handed(item: str) -> list[Any]:
    """The row (``FIELDS`` order) of a ``handoff:<worker>`` list item: the job id, a space,
    and the job's fields as a flat JSON list of field/value pairs, a later value of a field
    replacing an earlier one."""
    flat = json.loads(item.split(" ", 1)[1])
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return [fields.get(name) for name in FIELDS]


def maybe_row(v: list[Any]) -> JobRecord | None:
    return None if v[0] is None else decode_row(v)


def copy_job(job: JobRecord) -> JobRecord:
    # dataclasses.replace re-runs __init__ and cost 17 µs, as much as the rest of enqueue
    clone = object.__new__(JobRecord)
    clone.__dict__.update(job.__dict__)
    clone.errors, clone.history = list(job.errors), list(job.history)
    clone.headers = dict(job.headers)
    return clone


def opt_text(value: str | None) -> str:
    """None travels as '' and a value as '=' + value, so '' itself stays representable."""
    return "" if value is None else "=" + value
