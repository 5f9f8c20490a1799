"""HTTP API benchmarks: submit rate on one uvicorn worker, and SSE fan-out.

    .venv/bin/python benchmarks/http_submit.py                    # defaults below
    .venv/bin/python benchmarks/http_submit.py --jobs 20000 --clients 64 --streams 100,500

The server is ``conveyor.web.serve`` in a child process (one uvicorn worker, SQLite backend in a
temporary directory). The load is made by a minimal asyncio HTTP/1.1 client in this process,
so the client costs little next to the server.

1. **Submit**: ``--clients`` keep-alive connections POST ``/api/jobs`` as fast as they can,
   ``--jobs`` in all; reports jobs/s and latency percentiles. No worker runs meanwhile.
2. **SSE fan-out**: for each count in ``--streams``, that many jobs are claimed by this process
   (acting as the worker, through the Backend protocol) and one event stream is opened per job;
   then every job reports progress every ``--interval`` seconds for ``--duration`` seconds, and
   finishes. Reports how many streams stayed open and saw every progress event plus the final
   state, events/s delivered, and the delay from ``set_progress`` to the event's arrival.
   ``--shared`` streams also watch *one* job, to show streams on the same job sharing a watch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conveyor import Conveyor  # noqa: E402
from conveyor.backends.base import Outcome  # noqa: E402
from conveyor.task import make_options  # noqa: E402


def make_app(url: str) -> Conveyor:
    app = Conveyor(url)

    @app.task(name="noop", expose=True)
    def noop(n: int = 0) -> int:
        return n

    return app


# -- the server (child process) ---------------------------------------------------------------

def serve(args: argparse.Namespace) -> None:
    from conveyor.web import serve as run

    run(make_app(args.url), host="127.0.0.1", port=args.port, log_level="warning",
        tokens=[], read_only_tokens=[], max_streams=args.max_streams,
        stream_threads=args.stream_threads, heartbeat=15.0)


# -- a small HTTP/1.1 client --------------------------------------------------------------------

class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
                "Content-Type: application/json\r\n\r\n").encode()
        self.writer.write(head + body)
        status, headers = await self._head()
        length = int(headers.get("content-length", "0"))
        return status, await self.reader.readexactly(length)

    async def _head(self) -> tuple[int, dict[str, str]]:
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                return status, headers
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()

    async def events(self, path: str) -> Any:
        """Yield ``(event, data)`` of an SSE response (chunked), until it ends."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        status, _ = await self._head()
        assert status == 200, status
        buffer = b""
        while True:
            size = int((await self.reader.readline()).strip(), 16)
            if size == 0:
                return
            buffer += (await self.reader.readexactly(size + 2))[:-2]
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.decode().split("\n")
                              if not line.startswith(":") and ": " in line)
                if "event" in fields:
                    yield fields["event"], json.loads(fields["data"])

    def close(self) -> None:
        self.writer.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


# -- 1. submit ----------------------------------------------------------------------------------

async def bench_submit(port: int, jobs: int, clients: int) -> dict[str, Any]:
    body = json.dumps({"task": "noop", "kwargs": {"n": 1}}).encode()
    remaining = jobs
    latencies: list[float] = []

    async def client() -> None:
        nonlocal remaining
        connection = await Connection.open(port)
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                status, _ = await connection.request("POST", "/api/jobs", body)
                latencies.append(time.perf_counter() - started)
                assert status == 201, status
        finally:
            connection.close()

    warm = await Connection.open(port)
    for _ in range(200):
        await warm.request("POST", "/api/jobs", body)
    warm.close()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    return {"jobs": jobs, "clients": clients, "seconds": round(elapsed, 2),
            "jobs_per_second": round(jobs / elapsed),
            "latency_ms": {p: round(percentile(latencies, p) * 1000, 1) for p in (50, 90, 99)}}


# -- 2. fan-out ---------------------------------------------------------------------------------

async def bench_fanout(port: int, app: Conveyor, streams: int, shared: bool, duration: float,
                       interval: float) -> dict[str, Any]:
    backend = app.backend
    count = 1 if shared else streams
    options = make_options(queue="fanout")  # apart from the jobs the submit run left queued
    backend.enqueue([app.build_record(app.tasks["noop"], [], {}, options)
                     for _ in range(count)])
    claimed = backend.claim(["fanout"], count, "bench-worker", 600, time.time())
    assert len(claimed) == count, (len(claimed), count)
    ids = [r.id for r in claimed]
    targets = [ids[0] if shared else ids[i] for i in range(streams)]
    lags: list[float] = []
    received = [0] * streams
    finals = [False] * streams
    opened = 0

    async def follow(index: int, job_id: str) -> None:
        nonlocal opened
        connection = await Connection.open(port)
        try:
            async for kind, data in connection.events(f"/api/jobs/{job_id}/events"):
                if kind == "state" and data["status"] == "running" and not received[index]:
                    opened += 1
                if kind == "progress":
                    received[index] += 1
                    lags.append(time.time() - float(data["progress"]["message"]))
                if kind == "state" and data["status"] == "succeeded":
                    finals[index] = True
        finally:
            connection.close()

    followers = [asyncio.create_task(follow(i, job)) for i, job in enumerate(targets)]
    deadline = time.monotonic() + 60
    while opened < streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    opened_in = 60 - (deadline - time.monotonic())
    rounds = 0
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    while time.monotonic() - started < duration:
        tick = time.monotonic()
        rounds += 1

        def report(percent: float = min(rounds, 99)) -> None:
            for record in claimed:
                backend.set_progress(record.id, record.attempts, percent, repr(time.time()),
                                     time.time())

        await loop.run_in_executor(None, report)
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))
    elapsed = time.monotonic() - started
    await asyncio.sleep(1.0)  # let the last round arrive before the final state
    backend.finish([Outcome(r.id, r.attempts, "succeeded", result="null") for r in claimed],
                   time.time())
    done, pending = await asyncio.wait(followers, timeout=30)
    for task in pending:
        task.cancel()
    complete = sum(1 for i in range(streams) if finals[i] and received[i] >= rounds * 0.95)
    return {"streams": streams, "jobs": count, "open_streams": opened,
            "opened_in_s": round(opened_in, 2),
            "progress_updates_per_s": round(rounds * count / elapsed),
            "events_delivered_per_s": round(sum(received) / elapsed),
            "streams_complete": complete, "streams_ended": len(done),
            "lag_ms": {p: round(percentile(lags, p) * 1000, 1) for p in (50, 90, 99)}}


# -- driver -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--streams", default="100,500,1000,2000")
    parser.add_argument("--shared", type=int, default=2000,
                        help="streams on one job (0 to skip)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between progress reports of each job")
    parser.add_argument("--stream-threads", type=int, default=256)
    parser.add_argument("--max-streams", type=int, default=5000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        port = free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", "--url", url,
                                   "--port", str(port), "--stream-threads",
                                   str(args.stream_threads), "--max-streams",
                                   str(args.max_streams)], cwd=ROOT)
        results: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
        try:
            wait_for(port)
            results["submit"] = asyncio.run(bench_submit(port, args.jobs, args.clients))
            print(json.dumps({"submit": results["submit"]}), flush=True)
            app = make_app(url)
            results["fanout"] = []
            plans = [(int(s), False) for s in args.streams.split(",") if s]
            if args.shared:
                plans.append((args.shared, True))
            for streams, shared in plans:
                outcome = asyncio.run(bench_fanout(port, app, streams, shared, args.duration,
                                                   args.interval))
                outcome["shared_job"] = shared
                results["fanout"].append(outcome)
                print(json.dumps(outcome), flush=True)
            app.close()
        finally:
            server.terminate()
            server.wait(15)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
