"""The connection to Redis: a pool, the scripts loaded on the server, and retrying calls over
a lost connection."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.connection import ConnectionInterface
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ...errors import BackendError, BackendUnavailable, ConfigurationError
from .scripts import SCRIPTS

log = logging.getLogger("conveyor.backends.redis")

T = TypeVar("T")


class Client:
    """Pooled connections to one Redis server (``url`` without Conveyor's own options), with
    every script registered; ``retry_for`` is popped from ``options``, the rest go to
    redis-py's ``ConnectionPool``."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self._retry_for = float(options.pop("retry_for", 1.0))
        options.setdefault("socket_timeout", 5.0)
        options.setdefault("socket_connect_timeout", 2.0)
        options.setdefault("health_check_interval", 0)
        try:
            # redis-py's own retries are off: ours are bounded, logged once, and know which
            # scripts are safe to run twice
            self.pool = redis.ConnectionPool.from_url(
                url, decode_responses=True, retry=Retry(NoBackoff(), 0), **options)
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL: {exc}") from exc
        kwargs = self.pool.connection_kwargs
        self.where = (f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
                      f"/{kwargs.get('db', 0)}")
        socket_timeout = kwargs.get("socket_timeout")
        #: the longest a blocking command may block: it must return before the socket read
        #: gives up on it
        self.block_max = 30.0 if socket_timeout is None else max(
            0.05, min(float(socket_timeout) - 1.0, float(socket_timeout) * 0.8))
        self.redis = redis.Redis(connection_pool=self.pool)
        self.scripts: dict[str, Script] = {name: self.redis.register_script(src)
                                           for name, src in SCRIPTS.items()}
        self._down = False
        self._down_lock = threading.Lock()
        #: the connections of :meth:`command` (see there): idle ones, and every one made
        self._idle: deque[ConnectionInterface] = deque()
        self._made: list[ConnectionInterface] = []
        self._made_lock = threading.Lock()
        self._pid = os.getpid()

    def close(self) -> None:
        with self._made_lock:
            made, self._made = self._made, []
            self._idle.clear()
        for conn in made:
            conn.disconnect()
        self.redis.close()
        self.pool.disconnect()

    def run(self, op: Callable[[bool], T]) -> T:
        """Run ``op`` (given whether this is a retry), retrying a lost connection briefly.

        Connection errors retry with backoff for ``retry_for`` seconds and then raise
        ``BackendUnavailable``; an outage is logged once, and its end once.
        """
        try:
            result = op(False)
        except (AuthenticationError, AuthorizationError) as exc:
            raise BackendUnavailable(f"Redis at {self.where} refused our credentials: {exc}",
                                     url=self.where) from exc
        except (RedisConnectionError, RedisTimeoutError) as exc:
            return self._retry(op, exc)
        except ResponseError as exc:
            raise self._response_error(exc) from exc
        except RedisError as exc:
            raise BackendError(f"Redis at {self.where} failed: {exc}") from exc
        if self._down:
            self._mark_up()
        return result

    def _retry(self, op: Callable[[bool], T], first: Exception) -> T:
        self._mark_down(first)
        deadline = time.monotonic() + self._retry_for
        delay = 0.05
        last = first
        while time.monotonic() + delay <= deadline:
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            try:
                result = op(True)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                last = exc
                continue
            except ResponseError as exc:
                raise self._response_error(exc) from exc
            except RedisError as exc:
                raise BackendError(f"Redis at {self.where} failed: {exc}") from exc
            self._mark_up()
            return result
        raise BackendUnavailable(f"Redis at {self.where} is unreachable: {last}",
                                 url=self.where) from last

    def _response_error(self, exc: ResponseError) -> BackendError:
        text = str(exc)
        if "CONVEYOR " in text:
            return BackendError(text.split("CONVEYOR ", 1)[1].split("script:")[0].strip())
        return BackendError(f"Redis at {self.where} refused a command: {text}")

    def _mark_down(self, exc: Exception) -> None:
        # idle pooled sockets that a restart closed need nothing from us: redis-py's pool
        # sees the EOF on checkout and reconnects, so they do not each log an outage
        with self._down_lock:
            if self._down:
                return
            self._down = True
        log.warning("lost the connection to Redis at %s (%s); retrying", self.where, exc)

    def _mark_up(self) -> None:
        with self._down_lock:
            if not self._down:
                return
            self._down = False
        log.info("connection to Redis at %s restored", self.where)

    def call(self, script: str, args: list[str]) -> Any:
        """The reply of the script named ``script``, retried as :meth:`run` retries."""
        s = self.scripts[script]
        return self.run(lambda _retrying: self.eval(s, args))

    def eval(self, script: Script, args: list[str]) -> Any:
        """EVALSHA on a pooled connection, loading the script when the server lacks it."""
        try:
            return self.command("EVALSHA", script.sha, 0, *args)
        except NoScriptError:
            # a restarted or flushed server forgot the scripts
            script.sha = self.command("SCRIPT", "LOAD", script.script)
            return self.command("EVALSHA", script.sha, 0, *args)

    def command(self, *args: str | int | float) -> Any:
        """One command by the shortest path, on a connection of our own small pool.

        The hot path (enqueue, claim, finish, the idle worker's BLPOP) skips redis-py's
        generic command path (response callbacks, observability hooks) and its pool's
        checkout and release, which record metrics on every call: together about 15 µs of a
        ~110 µs single enqueue here. hiredis packs the ~50 arguments of an enqueue in a
        third of redis-py's time. A connection goes back to the pool only with its reply
        read: socket errors disconnect it (the next send reconnects) and an error reply
        leaves it clean; anything else that interrupts the exchange (KeyboardInterrupt) may
        leave a reply unread, so the connection is closed first.
        """
        conn = self._checkout()
        try:
            conn.send_packed_command([hiredis.pack_command(args)])
            reply = conn.read_response()
        except (RedisError, OSError):
            self._idle.append(conn)
            raise
        except BaseException:
            conn.disconnect()
            self._idle.append(conn)
            raise
        self._idle.append(conn)
        return reply

    def _checkout(self) -> ConnectionInterface:
        if self._pid != os.getpid():
            # a forked child must not share its parent's sockets: it opens its own
            with self._made_lock:
                self._idle, self._made, self._pid = deque(), [], os.getpid()
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self.pool.make_connection()
            with self._made_lock:
                self._made.append(conn)
            return conn
        try:
            # a socket the server closed while it sat idle (a restart) reconnects quietly,
            # as in redis-py's pool, instead of each one reporting an outage
            if conn.can_read():
                conn.disconnect()
        except (RedisError, OSError):
            conn.disconnect()
        return conn
