"""Bearer-token authentication, with full-access and read-only tokens.

Tokens come from ``create_app(tokens=..., read_only_tokens=...)`` or, when those are not given,
from ``CONVEYOR_API_TOKENS`` / ``CONVEYOR_API_READ_TOKENS`` (comma-separated). With no token
at all, authentication is off (and :func:`conveyor.web.serve` refuses to listen beyond
loopback). A read-only token may read everything and change nothing: every method other than
GET/HEAD/OPTIONS answers 403.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from .problems import Problem

Access = Literal["full", "read", "open"]
#: where the auth middleware records what the caller may do, for handlers to read
SCOPE_KEY = "conveyor.access"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REALM = 'Bearer realm="conveyor"'


def tokens_from_env(name: str) -> list[str]:
    return [t.strip() for t in os.environ.get(name, "").split(",") if t.strip()]


def _digest(token: str) -> bytes:
    # comparing fixed-length digests keeps compare_digest from leaking a token's length
    return hashlib.sha256(token.encode()).digest()


class TokenSet:
    """Tokens held as digests and checked in constant time against every one of them."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._digests = [_digest(t) for t in tokens if t]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __contains__(self, token: object) -> bool:
        if not isinstance(token, str):
            return False
        offered = _digest(token)
        found = False
        for digest in self._digests:  # no early exit: the time spent never depends on a match
            found |= hmac.compare_digest(offered, digest)
        return found


class BearerAuth:
    """ASGI middleware: checks ``Authorization: Bearer <token>`` and records the access level
    in ``scope["conveyor.access"]``. ``public`` paths (health checks, the docs page) skip it."""

    def __init__(self, app: ASGIApp, *, full: TokenSet, read: TokenSet,
                 public: Iterable[str] = ()) -> None:
        self.app = app
        self.full = full
        self.read = read
        self.public = frozenset(public)

    @property
    def enabled(self) -> bool:
        return bool(self.full) or bool(self.read)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            scope[SCOPE_KEY] = self._access(scope)
        except Problem as problem:
            await problem.response(scope.get("path"))(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _access(self, scope: Scope) -> Access:
        if not self.enabled:
            return "open"
        if route_path(scope) in self.public or scope["method"] == "OPTIONS":
            return "read"
        token = _bearer(scope)
        if token is None:
            raise Problem(401, "unauthorized", "this API needs a bearer token: send "
                          "'Authorization: Bearer <token>'", headers={"WWW-Authenticate": REALM})
        if token in self.full:
            return "full"
        if token in self.read:
            if scope["method"] not in SAFE_METHODS:
                raise Problem(403, "read-only-token", "this token is read-only: it cannot "
                              "submit, cancel, retry, delete or change schedules")
            return "read"
        raise Problem(401, "unauthorized", "the bearer token is not valid",
                      headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'})


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def route_path(scope: Scope) -> str:
    """The path below the prefix the API is mounted at (ASGI: ``path`` includes
    ``root_path``)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root):] or "/"
    return path
