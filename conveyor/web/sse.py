"""``GET /api/jobs/{id}/events``: a job's state and progress as Server-Sent Events.

Wire format, one event per change::

    id: 7
    event: progress
    data: {"id": "...", "status": "running", "progress": {"percent": 40.0, ...}, ...}

``id`` is the job's ``version`` (bumped by every change), so a reconnecting ``EventSource``
sends it back as ``Last-Event-ID`` and the stream resumes without repeating what was seen —
resuming delivers the job as it is *now*, not every step missed in between. ``event`` is
``state`` when the status (or the cancel request) changed and ``progress`` when only progress
did; the first event is always ``state``. The stream ends after the job's final state (or an
``event: deleted``); reconnecting after that gets ``204 No Content``, which stops an
``EventSource`` for good. A comment line (``: keepalive``) goes out every ``heartbeat`` seconds
so proxies keep the connection open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..backends.base import JobRecord

log = logging.getLogger("conveyor.web")

Emit = Callable[[bytes], Awaitable[None]]
Producer = Callable[[Emit], Awaitable[None]]

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    # nginx buffers proxied responses unless told not to, which would hold events back
    (b"x-accel-buffering", b"no"),
]


def event(kind: str, data: dict[str, Any] | None, event_id: int | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {kind}")
    # compact JSON never contains a newline, so one data line carries the whole document
    lines.append("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n\n").encode()


HEARTBEAT = b": keepalive\n\n"


def kind_of_change(before: JobRecord | None, after: JobRecord) -> str:
    if before is None or before.status != after.status or \
            before.cancel_requested != after.cancel_requested:
        return "state"
    if before.progress != after.progress or before.progress_message != after.progress_message:
        return "progress"
    return "state"


class EventStreamResponse(Response):
    """A response that runs ``producer(emit)`` and stops it the moment the client goes away
    (whatever ASGI version the server speaks), so a closed tab frees its watch at once."""

    def __init__(self, producer: Producer) -> None:
        # Response's own body handling is bypassed: __call__ streams
        self.producer = producer
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": self.raw_headers})
        closed = False

        async def emit(chunk: bytes) -> None:
            nonlocal closed
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OSError:  # ASGI 2.4 servers report a gone client by failing the send
                closed = True
                group.cancel_scope.cancel()
                await anyio.sleep(0)  # deliver the cancellation here

        async def watch_disconnect() -> None:
            nonlocal closed
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    closed = True
                    group.cancel_scope.cancel()
                    return

        async with anyio.create_task_group() as group:
            group.start_soon(watch_disconnect)
            try:
                await self.producer(emit)
            except Exception:
                log.exception("event stream failed")
            group.cancel_scope.cancel()
        if not closed:
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass
