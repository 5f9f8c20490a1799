"""Serving the API: ``serve()`` (uvicorn, one process) and mounting it in another ASGI app."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .auth import tokens_from_env

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from ..app import Conveyor

log = logging.getLogger("conveyor.web")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name could resolve anywhere: treat it as public


def check_exposure(host: str, tokens: Sequence[str] | None,
                   read_only_tokens: Sequence[str] | None, insecure: bool) -> None:
    """Refuse to listen beyond loopback with no token, unless told ``insecure``."""
    full = tokens if tokens is not None else tokens_from_env("CONVEYOR_API_TOKENS")
    read = read_only_tokens if read_only_tokens is not None \
        else tokens_from_env("CONVEYOR_API_READ_TOKENS")
    if is_loopback(host) or full or read:
        return
    if not insecure:
        raise ConfigurationError(
            f"refusing to serve the API on {host} without authentication: anyone who can "
            "reach it could submit and cancel jobs. Set CONVEYOR_API_TOKENS (or pass "
            "--token), listen on 127.0.0.1, or pass --insecure if a proxy in front "
            "authenticates")
    log.warning("serving the API on %s WITHOUT authentication (--insecure)", host)


def serve(app: Conveyor, host: str = "127.0.0.1", port: int = 8000, *,
          insecure: bool = False, log_level: str = "info", root_path: str = "",
          **options: Any) -> None:
    """Serve the API (``create_app(app, **options)``) with uvicorn in this process until
    SIGINT/SIGTERM. Raises ``ConfigurationError`` for a non-loopback ``host`` without tokens,
    unless ``insecure``."""
    check_exposure(host, options.get("tokens"), options.get("read_only_tokens"), insecure)
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigurationError("serving the API needs uvicorn: pip install "
                                 "'conveyor-jobs[web]'") from exc
    from .factory import create_app

    config = uvicorn.Config(create_app(app, **options), host=host, port=port,
                            log_level=log_level, root_path=root_path, workers=1,
                            proxy_headers=True, server_header=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run()


def dispatch(prefix: str, api: ASGIApp, other: ASGIApp) -> ASGIApp:
    """An ASGI app sending ``prefix/...`` to ``api`` and everything else to ``other`` — to put
    the API beside an app that cannot mount ASGI apps itself (Django's ``get_asgi_application()``).
    Lifespan events are answered here, since Django does not speak them."""
    prefix = "/" + prefix.strip("/")

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        root = scope.get("root_path", "")
        path = scope.get("path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if scope["type"] in ("http", "websocket") and (path == prefix
                                                       or path.startswith(prefix + "/")):
            # ASGI: ``path`` stays the full path; ``root_path`` grows by what the mount took
            await api({**scope, "root_path": root + prefix}, receive, send)
            return
        await other(scope, receive, send)

    return application
