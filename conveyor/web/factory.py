"""``create_app``: the HTTP API as an ASGI application.

Layers, outermost first: catch-all (a generic 500 problem, never a traceback) → CORS (only
when origins are configured) → bearer auth → body size limit → Starlette's routing, whose
exception handlers turn :class:`~.problems.Problem` and Conveyor's errors into problem
details.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from .. import metrics
from ..errors import ConfigurationError
from . import catalog, health, jobs, openapi, schedules
from .auth import BearerAuth, TokenSet, tokens_from_env
from .context import WebContext
from .feed import JobFeed
from .limits import DEFAULT_MAX_BODY, BodyLimit
from .problems import EXCEPTION_HANDLERS, CatchAll

if TYPE_CHECKING:
    from ..app import Conveyor

#: reachable without a token: probes, and the docs page (which asks for one itself)
PUBLIC_PATHS = ("/health", "/health/scheduler", "/docs", "/docs/explorer.js")


def create_app(app: Conveyor, *, tokens: Sequence[str] | None = None,
               read_only_tokens: Sequence[str] | None = None,
               cors_origins: Sequence[str] | None = None, max_body: int = DEFAULT_MAX_BODY,
               tracebacks: bool = True, max_streams: int = 1000, heartbeat: float = 15.0,
               stream_threads: int = 256, collect_metrics: bool = True) -> Starlette:
    """The Conveyor HTTP API for ``app``, as an ASGI application to serve or mount.

    ``tokens`` may do everything, ``read_only_tokens`` only read; either defaults to the
    comma-separated ``CONVEYOR_API_TOKENS`` / ``CONVEYOR_API_READ_TOKENS``. No token at all
    turns authentication off. ``cors_origins`` (default none) lists the browser origins
    allowed to call the API. ``max_body`` bytes per request body; ``tracebacks`` shows task
    tracebacks to full-access callers (never to read-only ones); ``max_streams`` SSE
    connections at most, watched on up to ``stream_threads`` threads; ``heartbeat`` seconds
    between SSE keepalives. ``collect_metrics`` adds a
    :class:`~conveyor.metrics.MetricsMiddleware` to ``app`` for ``/metrics``.
    """
    if max_body < 1:
        raise ConfigurationError("max_body must be a positive number of bytes")
    if max_streams < 1 or stream_threads < 1 or heartbeat <= 0:
        raise ConfigurationError("max_streams, stream_threads and heartbeat must be positive")
    full = TokenSet(tokens if tokens is not None else tokens_from_env("CONVEYOR_API_TOKENS"))
    read = TokenSet(read_only_tokens if read_only_tokens is not None
                    else tokens_from_env("CONVEYOR_API_READ_TOKENS"))
    if collect_metrics:
        metrics.install(app)
    feed = JobFeed(lambda: app.backend, threads=stream_threads)
    ctx = WebContext(app, feed, tracebacks=tracebacks, max_streams=max_streams,
                     heartbeat=heartbeat)
    secured = bool(full) or bool(read)

    middleware = [Middleware(CatchAll)]
    if cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["Location", "Link", "Retry-After"], max_age=600))
    middleware += [Middleware(BearerAuth, full=full, read=read, public=PUBLIC_PATHS),
                   Middleware(BodyLimit, max_body=max_body)]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        feed.open()
        yield
        feed.close()  # open streams end, so the server's shutdown does not wait on them

    web = Starlette(
        routes=[*jobs.routes(ctx), *catalog.routes(ctx), *schedules.routes(ctx),
                *health.routes(ctx), *openapi.routes(ctx, secured)],
        middleware=middleware,
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=lifespan,
    )
    web.state.conveyor = ctx
    return web
