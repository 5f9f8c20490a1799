"""Storage engines behind one protocol; :func:`open_backend` picks one by URL scheme.

Drivers are imported only when their scheme is used, so ``pip install conveyor-jobs`` without
extras still runs on SQLite and memory.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import Backend

#: scheme -> (module, class, the extra that brings its driver)
ENGINES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("conveyor.backends.memory", "MemoryBackend", None),
    "sqlite": ("conveyor.backends.sqlite", "SQLiteBackend", None),
    "redis": ("conveyor.backends.redis", "RedisBackend", "redis"),
    "rediss": ("conveyor.backends.redis", "RedisBackend", "redis"),
    "postgresql": ("conveyor.backends.postgres", "PostgresBackend", "postgres"),
    "postgres": ("conveyor.backends.postgres", "PostgresBackend", "postgres"),
}


def open_backend(url: str, **options: Any) -> Backend:
    """The backend for ``url``, e.g. ``sqlite:///conveyor.db`` or ``redis://host:6379/0``."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ENGINES:
        known = ", ".join(f"{s}://" for s in ENGINES)
        raise ConfigurationError(f"unknown backend URL {url!r}: use one of {known}")
    module_name, class_name, extra = ENGINES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f" (pip install 'conveyor-jobs[{extra}]')" if extra else ""
        raise ConfigurationError(f"the {scheme} backend needs a driver that is not "
                                 f"installed: {exc.name}{hint}") from exc
    backend: Backend = getattr(module, class_name)(url, **options)
    return backend
