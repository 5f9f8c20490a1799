"""The PostgreSQL backend's options: keyword arguments, or the URL's query string."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ...errors import ConfigurationError


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _optional_int(value: Any) -> int | None:
    return None if value is None or str(value).lower() in ("none", "null", "") else int(value)


#: option name -> (converter, default); each may be given as a keyword or in the URL query
OPTIONS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "schema": (str, "conveyor"),
    # apply pending migrations when the backend opens (off: production runs `conveyor migrate`)
    "auto_migrate": (_flag, False),
    "pool_min_size": (int, 1),
    "pool_max_size": (int, 10),
    # seconds to wait for a pooled connection before giving up
    "pool_timeout": (float, 5.0),
    # how often waits re-check the database while the LISTEN connection is down
    "poll_interval": (float, 1.0),
    # how many times a statement is retried after a connection failure
    "retries": (int, 3),
    # psycopg's server-side prepare threshold; None behind PgBouncer in transaction mode
    "prepare_threshold": (_optional_int, 5),
}


@dataclass(frozen=True)
class Settings:
    dsn: str
    schema: str
    auto_migrate: bool
    pool_min_size: int
    pool_max_size: int
    pool_timeout: float
    poll_interval: float
    retries: int
    prepare_threshold: int | None


def parse_settings(url: str, options: dict[str, Any]) -> Settings:
    """The settings for ``url`` and keyword ``options`` (which win over the URL's); the DSN
    keeps only the query parameters Conveyor does not understand, for libpq."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ConfigurationError(f"unknown PostgreSQL backend option(s): {sorted(unknown)}")
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {k: v for k, v in query if k in OPTIONS}
    given.update(options)
    passthrough = urlencode([(k, v) for k, v in query if k not in OPTIONS])
    values: dict[str, Any] = {}
    for name, (convert, default) in OPTIONS.items():
        try:
            values[name] = convert(given[name]) if name in given else default
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"bad PostgreSQL option {name}={given[name]!r}: {exc}")
    if not values["schema"]:
        raise ConfigurationError("the PostgreSQL schema name must not be empty")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, passthrough, parts.fragment))
    return Settings(dsn=dsn, **values)
