"""Connections to the PostgreSQL server: one-off ones, and the pool whose statements are retried
over lost connections."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from ...errors import BackendError, BackendUnavailable, ConfigurationError
from .settings import Settings

log = logging.getLogger("conveyor.backends.postgres")
T = TypeVar("T")

#: errors of a server that is shutting down or not yet accepting work: worth a retry
_SERVER_GOING = (psycopg.errors.AdminShutdown, psycopg.errors.CrashShutdown,
                 psycopg.errors.CannotConnectNow)


class Address:
    """Where the server is and how Conveyor connects to it (``where`` names it in messages
    without the password)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"bad PostgreSQL URL: {exc}") from exc
        self.named = "application_name" in params
        self.where = (f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
                      f"/{params.get('dbname', '')}")
        #: what every connection adds to the DSN, unless the URL says otherwise
        self.kwargs: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self.kwargs["connect_timeout"] = 5
        if "application_name" not in params:
            self.kwargs["application_name"] = "conveyor"

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection in autocommit, outside the pool (migrations use one)."""
        return psycopg.connect(self.dsn, autocommit=True, **self.kwargs)

    def listen_connection(self) -> psycopg.Connection[Any]:
        """A new connection for the LISTEN thread."""
        kwargs = dict(self.kwargs)
        if not self.named:
            kwargs["application_name"] = "conveyor-listen"  # easy to spot in pg_stat_activity
        # keepalives and a send timeout: a peer that vanished without a word must not leave us
        # listening to nothing for the kernel's default quarter of an hour
        return psycopg.connect(self.dsn, autocommit=True, keepalives=1, keepalives_idle=30,
                               keepalives_interval=10, keepalives_count=3,
                               tcp_user_timeout=60_000, **kwargs)


class Pool:
    """Pooled autocommit connections, and :meth:`run`, which retries transient failures."""

    def __init__(self, address: Address, settings: Settings, name: str) -> None:
        self._where = address.where
        self._retries = settings.retries
        self._timeout = settings.pool_timeout
        self._pool = ConnectionPool(
            address.dsn, min_size=settings.pool_min_size,
            max_size=max(settings.pool_max_size, settings.pool_min_size),
            timeout=settings.pool_timeout, open=True, name=name,
            kwargs={"autocommit": True, "prepare_threshold": settings.prepare_threshold,
                    **address.kwargs},
            configure=self._configure)

    @staticmethod
    def _configure(conn: psycopg.Connection[Any]) -> None:
        # float8 text output must round-trip exactly: times are compared for equality
        conn.execute("SET extra_float_digits = 3")

    def close(self) -> None:
        self._pool.close()

    def run(self, work: Callable[[psycopg.Connection[Any], bool], T],
            pool_timeout: float | None = None) -> T:
        """Run ``work(conn, retrying)`` on a pooled connection, retrying transient failures.

        Transient: the connection broke (server restart, killed backend, network), the server
        is starting or shutting down, or the transaction lost a deadlock/serialization race.
        ``retrying`` tells ``work`` that an earlier attempt may have committed before its
        connection died (the reply was lost), so what it finds may be its own doing.
        """
        failure: Exception | None = None
        lost = False
        for attempt in range(self._retries + 1):
            if attempt:
                time.sleep(min(0.05 * 4 ** (attempt - 1), 1.0))
            lost = False
            try:
                with self._pool.connection(timeout=pool_timeout) as conn:
                    try:
                        return work(conn, attempt > 0)
                    except psycopg.OperationalError:
                        lost = conn.broken
                        if lost:
                            # its idle siblings probably died with it (server restart, kill)
                            self._pool.check()
                        raise
            except PoolClosed as exc:
                raise BackendError("the PostgreSQL backend is closed") from exc
            except PoolTimeout as exc:
                raise BackendUnavailable(
                    f"no PostgreSQL connection to {self._where} within "
                    f"{pool_timeout or self._timeout:g}s: {exc}") from exc
            except psycopg.OperationalError as exc:
                lost = lost or isinstance(exc, _SERVER_GOING)
                if not (lost or isinstance(exc, psycopg.errors.TransactionRollback)):
                    raise BackendError(f"PostgreSQL error: {exc}") from exc
                failure = exc
                log.warning("PostgreSQL operation failed (attempt %d of %d): %s",
                            attempt + 1, self._retries + 1, exc)
            except psycopg.Error as exc:
                raise BackendError(f"PostgreSQL error: {exc}") from exc
        if lost:
            raise BackendUnavailable(f"PostgreSQL at {self._where} is unavailable: {failure}",
                                     ) from failure
        raise BackendError(f"PostgreSQL error: {failure}") from failure

    def rows(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of one statement."""
        return self.run(lambda conn, _: conn.execute(query, params).fetchall())

    def write(self, query: str, params: dict[str, Any]) -> int:
        """How many rows one statement changed."""
        return self.run(lambda conn, _: conn.execute(query, params).rowcount)
