"""The HTTP API: submit, follow and manage jobs from any frontend.

::

    from conveyor.web import create_app, serve

    api = create_app(app, tokens=["s3cret"])     # an ASGI app: mount it or serve it
    serve(app, host="127.0.0.1", port=8000)      # or: conveyor -A pkg.module:app web

Importing this package costs nothing: Starlette and uvicorn (the ``web`` extra) are imported
when ``create_app`` or ``serve`` is first called, so ``conveyor`` keeps working without them.
See ``docs/http-api.md`` for every endpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp

    from ..app import Conveyor

__all__ = ["create_app", "dispatch", "serve"]


def create_app(app: Conveyor, **options: Any) -> Starlette:
    """The API for ``app`` as an ASGI application; see :func:`conveyor.web.factory.create_app`
    for the options (tokens, read_only_tokens, cors_origins, max_body, ...)."""
    from .factory import create_app as build

    return build(app, **options)


def serve(app: Conveyor, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve the API with uvicorn in this process (refuses a public ``host`` without tokens
    unless ``insecure=True``); see :func:`conveyor.web.server.serve`."""
    from .server import serve as run

    run(app, host=host, port=port, **options)


def dispatch(prefix: str, api: ASGIApp, other: ASGIApp) -> ASGIApp:
    """Route ``prefix/...`` to ``api`` and the rest to ``other`` (e.g. Django's ASGI app)."""
    from .server import dispatch as build

    return build(prefix, api, other)
