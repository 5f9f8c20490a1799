"""The round-trip floor under a synchronous enqueue on Redis, from one Python thread.

    .bench-venv/bin/python benchmarks/redis_floor.py [--calls 5000]

An enqueue that returns only once Redis has stored the job pays at least one round trip. This
prints, one after the other on the benchmark server (database 3, flushed), the rate of: a bare
``PING`` over a raw socket (no client library at all), ``PING`` through redis-py, an ``LPUSH``
of a 300-byte message through redis-py (what Huey's enqueue sends), Huey's own enqueue, and
Conveyor's. No acknowledged enqueue can beat the raw-socket ``PING``: a target above it is out
of reach on this machine whatever the design.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from conveyor import Conveyor

URL = "redis://127.0.0.1:6379/3"


def rate(calls: int, fn: Callable[[int], object]) -> float:
    for i in range(200):  # warm-up
        fn(i)
    started = time.perf_counter()
    for i in range(calls):
        fn(i)
    return calls / (time.perf_counter() - started)


def raw_ping() -> Callable[[int], object]:
    sock = socket.create_connection(("127.0.0.1", 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def ping(_i: int) -> bytes:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(64)

    return ping


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    client = redis.Redis.from_url(URL)
    client.flushdb()
    rows: list[tuple[str, Callable[[int], object]]] = [
        ("PING, raw socket", raw_ping()),
        ("PING, redis-py", lambda _i: client.ping()),
        ("LPUSH 300 B, redis-py", lambda _i: client.lpush("floor", b"x" * 300)),
    ]
    try:
        from huey import RedisHuey

        huey = RedisHuey("floor", url=URL)

        @huey.task()
        def huey_noop(i: int) -> None:
            pass

        rows.append(("Huey enqueue", huey_noop))
    except ImportError:
        print("(huey is not installed: run benchmarks/setup.sh for its row)")
    app = Conveyor(URL)

    @app.task()
    def noop(i: int) -> None:
        pass

    rows.append(("Conveyor enqueue", noop.enqueue))
    for label, fn in rows:
        per_second = rate(args.calls, fn)
        print(f"{label:<24} {per_second:>9,.0f}/s  {1e6 / per_second:6.1f} µs per call")
    client.flushdb()
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
