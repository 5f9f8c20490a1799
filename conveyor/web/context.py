"""What every route needs: the Conveyor app, the settings of this API, and the job feed."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..backends.base import JobRecord
from ..job import job_to_dict
from .auth import SCOPE_KEY
from .feed import JobFeed

if TYPE_CHECKING:
    from ..app import Conveyor

T = TypeVar("T")

log = logging.getLogger("conveyor.web")


@dataclass
class WebContext:
    app: Conveyor
    feed: JobFeed
    #: show task tracebacks to full-access callers (read-only tokens never see them)
    tracebacks: bool = True
    #: SSE connections one process holds at most (503 past it)
    max_streams: int = 1000
    #: seconds between SSE keepalive comments
    heartbeat: float = 15.0
    #: the longest ``?wait=`` a result request may ask for
    max_wait: float = 60.0

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking backend call off the event loop."""
        return await run_in_threadpool(functools.partial(fn, *args, **kwargs))

    def redacted(self, request: Request) -> bool:
        """Whether this caller must not see tracebacks."""
        return not self.tracebacks or request.scope.get(SCOPE_KEY) == "read"

    def job_json(self, record: JobRecord, request: Request) -> dict[str, Any]:
        data = job_to_dict(record)
        if self.redacted(request):
            for error in data["errors"]:
                error["traceback"] = None
        return data


def job_log_extra(record: JobRecord) -> dict[str, Any]:
    """The structured fields every job log line carries, as the worker's do."""
    return {"job_id": record.id, "task": record.task, "queue": record.queue,
            "attempt": record.attempts}
