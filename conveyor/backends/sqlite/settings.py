"""The SQLite backend's URL and options (keyword arguments, or the URL's query string)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import ConfigurationError

_OPTIONS = frozenset({"busy_timeout", "synchronous", "auto_migrate"})


@dataclass(frozen=True)
class Settings:
    #: the database file, absolute
    path: str
    busy_timeout: float
    synchronous: str
    auto_migrate: bool


def parse_settings(url: str, options: dict[str, Any]) -> Settings:
    """The settings for ``url`` and keyword ``options`` (which win over the URL's)."""
    path, query = _parse_url(url)
    # absolute now: a later chdir must not send new threads' connections to another file
    path = os.path.abspath(path)
    merged: dict[str, Any] = {**query, **options}
    unknown = set(merged) - _OPTIONS
    if unknown:
        raise ConfigurationError(f"unknown sqlite option(s) {sorted(unknown)}; known: "
                                 f"{sorted(_OPTIONS)}")
    busy_timeout = _float_option(merged, "busy_timeout", 5.0)
    synchronous = str(merged.get("synchronous", "NORMAL")).upper()
    if synchronous not in ("NORMAL", "FULL", "EXTRA"):
        raise ConfigurationError(f"sqlite option synchronous must be NORMAL or FULL, not "
                                 f"{synchronous!r}")
    return Settings(path=path, busy_timeout=busy_timeout, synchronous=synchronous,
                    auto_migrate=_bool_option(merged, "auto_migrate", True))


def _parse_url(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"not a sqlite URL: {url!r}")
    if parts.netloc:
        raise ConfigurationError(
            f"sqlite URL {url!r} names a host ({parts.netloc!r}); use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db")
    # one slash separates the empty host from the path: what follows is the path as written
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path or path.endswith(("/", os.sep)):
        raise ConfigurationError(f"sqlite URL {url!r} names no database file; use "
                                 "sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"sqlite URL {url!r}: an in-memory SQLite database cannot be shared between "
            "threads and processes; use memory:// instead")
    return path, dict(parse_qsl(parts.query))


def _float_option(options: dict[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"sqlite option {name} must be a number, not {value!r}")
    if number < 0:
        raise ConfigurationError(f"sqlite option {name} must not be negative")
    return number


def _bool_option(options: dict[str, Any], name: str, default: bool) -> bool:
    value = options.get(name, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"sqlite option {name} must be true or false, not {value!r}")
