"""Benchmark one system, in a process of its own: ``python -m benchmarks.driver NAME ...``.

``benchmarks/run.py`` starts one driver per system so that no library's imports, globals or
threads leak into another's figures, and so that a system that hangs can be killed whole. The
driver imports the system's adapter, runs the phases below and writes its figures as JSON.

Phases (the storage is emptied before each):

1. **enqueue, single** — N no-op jobs enqueued one call at a time from a sync caller (an async
   caller, awaiting each call in turn, for libraries that have no sync API);
   then **drain, 1 worker** — one worker process is started with the library's own command and
   runs the N jobs: the rate is N over the time from the first job's start to the last job's end,
   read from the jobs' own marks (see :mod:`benchmarks.common`); the worker's RSS (its whole
   process tree) and CPU time are read at the end of the drain.
2. **enqueue, batched** — N jobs through the library's batch API, in calls of 1,000 (libraries
   without one enqueue singly, untimed); then **drain, 2 workers** — two worker processes.
3. **enqueue, async** — N jobs from an async caller, awaiting each call in turn (libraries with
   both a sync and an async API; async-only ones were timed in phase 1).
4. **latency** — one worker is started and left idle for a second after a warm-up job; then
   L jobs are enqueued one at a time, ``gap`` seconds apart, and each job's enqueue→done time
   is the time from just before its enqueue call to its mark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import Marks
from benchmarks.systems import BY_NAME

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000
WARM_UP_ID = 10**9


class PhaseTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise PhaseTimeout in this (main) thread after ``seconds``."""
    def fire(signum: int, frame: Any) -> None:
        raise PhaseTimeout(f"no result within {seconds:.0f}s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- worker processes --------------------------------------------------------------------------

class Workers:
    """Worker processes started with the library's own command, each in a session of its own
    so that it and its children are stopped together."""

    def __init__(self, argvs: list[list[str]], workdir: Path, tag: str) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        cwd = workdir / "cwd"
        cwd.mkdir(exist_ok=True)
        for n, argv in enumerate(argvs):
            log = workdir / f"worker-{tag}-{n}.log"
            self.logs.append(log)
            with open(log, "wb") as out:
                self.procs.append(subprocess.Popen(argv, env=env, cwd=cwd, stdout=out,
                                                   stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL,
                                                   start_new_session=True))
        with open(workdir / "pids", "a") as f:
            f.writelines(f"{p.pid}\n" for p in self.procs)

    def _tree(self) -> list[psutil.Process]:
        found = []
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(proc.pid)
                found.append(top)
                found.extend(top.children(recursive=True))
        return found

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def context_switches(self) -> int:
        """Voluntary and involuntary context switches of every thread of every process of
        the workers so far (threads that ended are not counted)."""
        total = 0
        for proc in self._tree():
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{proc.pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        for line in (task / "status").read_text().splitlines():
                            if "ctxt_switches:" in line:
                                total += int(line.split()[1])
        return total

    def rss_mb(self) -> float:
        """Resident memory of each worker's process tree, averaged over the workers (MiB)."""
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total / len(self.procs) / 2**20

    def exited(self) -> str | None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:]
                return f"worker exited with code {proc.returncode}:\n{tail}"
        return None

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 2  # every job is done by now
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.01))
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


_SERVER_NAMES = {"redis": ("redis-server",), "postgres": ("postgres",)}


def server_cpu(engine: str) -> dict[int, float]:
    """CPU seconds so far of each process of the database server (none for SQLite)."""
    names = _SERVER_NAMES.get(engine, ())
    out = {}
    if not names:
        return out
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in names:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                out[proc.pid] = times.user + times.system
    return out


def _busy() -> float:
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + \
        getattr(times, "steal", 0.0)


class Load:
    """How much CPU the rest of the machine used during a measurement, in cores: the machine's
    busy time less the measured processes' own (``own()``: CPU seconds so far). Other
    processes running at the same time (another test suite, say) distort every figure; a
    measurement taken while they used more than ``--busy`` cores is taken again."""

    def __init__(self, own: Callable[[], float], engine: str = "") -> None:
        self.own = own
        times = psutil.Process().cpu_times()
        self.caller_start = times.user + times.system
        self.server_start = server_cpu(engine)
        self.started = time.monotonic()
        self.busy = _busy()
        self.own_start = own()

    def foreign(self) -> float:
        wall = time.monotonic() - self.started
        if wall <= 0:
            return 0.0
        used = (_busy() - self.busy) - (self.own() - self.own_start)
        return max(used, 0.0) / wall


# -- the driver --------------------------------------------------------------------------------

class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.system = BY_NAME[args.system]
        os.environ["BENCH_VARIANT"] = self.system.variant
        os.environ["BENCH_MARKS"] = str(Path(args.workdir) / "marks.bin")
        self.workdir = Path(args.workdir)
        self._me = psutil.Process()
        self._marks: Marks | None = None
        self.mod = importlib.import_module(self.system.module)
        self.result: dict[str, Any] = {
            "system": self.system.name, "engine": self.system.engine,
            "conveyor": self.system.conveyor, "jobs": args.jobs,
            "description": getattr(self.mod, "DESCRIPTION", ""), "errors": {},
        }

    # -- enqueueing --------------------------------------------------------------------------

    def _has(self, name: str) -> bool:
        return callable(getattr(self.mod, name, None))

    def _sync(self, fn: Callable[[], Any]) -> Any:
        if self._has("start"):
            self.mod.start()
        try:
            return fn()
        finally:
            if self._has("stop"):
                self.mod.stop()

    def _async(self, fn: Callable[[], Any]) -> Any:
        async def main() -> Any:
            if self._has("astart"):
                await self.mod.astart()
            try:
                return await fn()
            finally:
                if self._has("astop"):
                    await self.mod.astop()
        return asyncio.run(main())

    def _own_cpu(self) -> float:
        """CPU seconds of this driver and the database server (see :class:`Load`)."""
        times = self._me.cpu_times()
        return times.user + times.system + sum(server_cpu(self.system.engine).values())

    def _timed(self, count: int, started: float, load: Load) -> dict[str, Any]:
        """The figures of an enqueue loop that began at ``started`` (with ``load``)."""
        rate = count / (time.perf_counter() - started)
        me = self._me.cpu_times()
        caller = me.user + me.system - load.caller_start
        server = sum(v - load.server_start.get(p, 0.0)
                     for p, v in server_cpu(self.system.engine).items())
        return {"rate": rate, "foreign_cores": load.foreign(),
                "caller_cpu_us_per_job": caller / count * 1e6,
                "server_cpu_us_per_job": server / count * 1e6}

    def enqueue_single_sync(self, ids: range) -> dict[str, Any]:
        enqueue = self.mod.enqueue

        def loop() -> dict[str, Any]:
            with self._profiling_me("enqueue"):
                load = Load(self._own_cpu, self.system.engine)
                started = time.perf_counter()
                for i in ids:
                    enqueue(i)
                return self._timed(len(ids), started, load)
        return self._sync(loop)

    def enqueue_single_async(self, ids: range) -> dict[str, Any]:
        aenqueue = self.mod.aenqueue

        async def loop() -> dict[str, Any]:
            load = Load(self._own_cpu, self.system.engine)
            started = time.perf_counter()
            for i in ids:
                await aenqueue(i)
            return self._timed(len(ids), started, load)
        return self._async(loop)

    def enqueue_batched(self, ids: range) -> dict[str, Any]:
        batch = self.mod.enqueue_batch
        chunks = [ids[k:k + BATCH] for k in range(0, len(ids), BATCH)]
        if inspect.iscoroutinefunction(batch):
            async def aloop() -> dict[str, Any]:
                load = Load(self._own_cpu, self.system.engine)
                started = time.perf_counter()
                for chunk in chunks:
                    await batch(chunk)
                return self._timed(len(ids), started, load)
            return self._async(aloop)

        def loop() -> dict[str, Any]:
            load = Load(self._own_cpu, self.system.engine)
            started = time.perf_counter()
            for chunk in chunks:
                batch(chunk)
            return self._timed(len(ids), started, load)
        return self._sync(loop)

    def enqueue_transactional(self, ids: range) -> dict[str, Any]:
        """Each job enqueued inside a transaction of the caller's own connection."""
        enqueue = self.mod.enqueue_tx
        self.mod.tx_start()
        try:
            load = Load(self._own_cpu, self.system.engine)
            started = time.perf_counter()
            for i in ids:
                enqueue(i)
            return self._timed(len(ids), started, load)
        finally:
            self.mod.tx_stop()

    def enqueue_single(self, ids: range) -> dict[str, Any]:
        if self._has("enqueue"):
            return dict(self.enqueue_single_sync(ids), kind="enqueue_sync")
        return dict(self.enqueue_single_async(ids), kind="enqueue_async")

    def fill(self, ids: range) -> bool:
        """Empty the storage and enqueue ``ids`` the fastest way the library has (untimed)."""
        self.mod.reset()
        if self._has("enqueue_batch"):
            self.enqueue_batched(ids)
        else:
            self.enqueue_single(ids)
        return True

    # -- draining ----------------------------------------------------------------------------

    def marks(self, slots: int) -> Marks:
        if self._marks is not None:
            self._marks.close()
        self._marks = Marks(Path(os.environ["BENCH_MARKS"]), slots)
        return self._marks

    def drain(self, n: int, workers: int) -> dict[str, Any]:
        marks = self.marks(n + 1)
        argvs = [self.mod.worker_argv(k) for k in range(workers)]
        procs = Workers(argvs, self.workdir, f"drain{workers}")
        profiler = None
        try:
            deadline = time.monotonic() + self.args.timeout
            cpu_start = 0.0
            switches_start = 0
            server_start: dict[int, float] | None = None
            load: Load | None = None
            wall_start = 0.0
            while True:
                done = marks.done(n)
                if done and server_start is None:
                    cpu_start = procs.cpu_seconds()
                    switches_start = procs.context_switches()
                    server_start = server_cpu(self.system.engine)
                    load = Load(lambda: procs.cpu_seconds() + self._own_cpu())
                    wall_start = time.monotonic()
                    if self.args.profile and workers == 1:
                        profiler = self._start_profiler(procs.procs[0].pid, "drain")
                if done >= n:
                    break
                failure = procs.exited()
                if failure:
                    raise RuntimeError(failure)
                if time.monotonic() > deadline:
                    raise PhaseTimeout(f"timed out after {self.args.timeout:.0f}s with "
                                       f"{done}/{n} jobs done")
                time.sleep(0.005)
            wall = time.monotonic() - wall_start
            if profiler is not None:
                self._stop_profiler(profiler)
                profiler = None
            cpu = procs.cpu_seconds() - cpu_start
            switches = procs.context_switches() - switches_start
            server_end = server_cpu(self.system.engine)
            server_used = sum(v - (server_start or {}).get(p, 0.0)
                              for p, v in server_end.items())
            foreign = load.foreign() if load is not None else 0.0
            rss = procs.rss_mb()
        finally:
            if profiler is not None:
                self._stop_profiler(profiler)
            procs.stop()
        ran = [m for m in marks.read() if m[0] < n]
        times = sorted(m[1] for m in ran)
        span = times[-1] - times[0]
        out: dict[str, Any] = {
            "rate": n / span if span > 0 else None,
            "duplicates": sum(m[3] - 1 for m in ran),
            "rss_mb": rss,
            "cpu_us_per_job": cpu / n * 1e6,
            "context_switches_per_job": switches / n,
            "cpu_util": cpu / wall if wall > 0 else None,
            "server_cpu_util": server_used / wall if wall > 0 else None,
            "foreign_cores": foreign,
        }
        if workers > 1:
            # the workers start within a fraction of a second of each other; measure from the
            # moment every one of them has run a job, so that the skew does not count
            starts: dict[int, float] = {}
            for _, t, pid, _ in ran:
                starts[pid] = min(starts.get(pid, t), t)
            out["pids"] = len(starts)
            if len(starts) >= workers:
                begin = max(starts.values())
                after = sum(1 for t in times if t >= begin)
                if after >= n / 2 and times[-1] > begin:
                    out["rate_plain"] = out["rate"]
                    out["rate"] = after / (times[-1] - begin)
        return out

    def _start_profiler(self, pid: int, phase: str) -> subprocess.Popen[bytes]:
        """py-spy, sampling every thread of ``pid`` that is not idle (``--profile-gil``:
        only the thread holding the GIL), until :meth:`_stop_profiler`."""
        out = self.workdir / f"profile-{self.system.name}-{phase}.txt"
        self.result.setdefault("profile_files", {})[phase] = str(out)
        argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                "--rate", "500", "--format", "raw", "--threads", "--nonblocking",
                "--output", str(out)]
        if self.args.profile_gil:
            argv.append("--gil")
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _stop_profiler(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

    @contextlib.contextmanager
    def _profiling_me(self, phase: str) -> Iterator[None]:
        """Profile this process (the enqueueing caller) for the length of the block."""
        if not self.args.profile:
            yield
            return
        proc = self._start_profiler(os.getpid(), phase)
        time.sleep(0.5)  # let py-spy attach before the measured loop starts
        try:
            yield
        finally:
            self._stop_profiler(proc)

    # -- latency -----------------------------------------------------------------------------

    def latency(self) -> dict[str, Any]:
        count, gap = self.args.latency_jobs, self.args.latency_gap
        marks = self.marks(count + 1)  # the last slot is the warm-up job's
        procs = Workers([self.mod.worker_argv(0)], self.workdir, "latency")
        sent: list[float] = [0.0] * count
        handles: list[Any] = []
        keep = self._has("done_latencies")
        try:
            use_sync = self._has("enqueue")

            def wait_for(predicate: Callable[[], bool], what: str) -> None:
                deadline = time.monotonic() + self.args.timeout
                while not predicate():
                    failure = procs.exited()
                    if failure:
                        raise RuntimeError(failure)
                    if time.monotonic() > deadline:
                        raise PhaseTimeout(f"timed out waiting for {what}")
                    time.sleep(0.005)

            # warm up: the worker is up and has run a job; then it idles for a second
            if use_sync:
                self._sync(lambda: self.mod.enqueue(WARM_UP_ID))
            else:
                self._async(lambda: self.mod.aenqueue(WARM_UP_ID))
            wait_for(lambda: bool(marks.read()), "the warm-up job")
            time.sleep(1.0)
            load = Load(lambda: procs.cpu_seconds() + self._own_cpu())

            if use_sync:
                def paced() -> None:
                    enqueue = self.mod.enqueue
                    start = time.perf_counter() + 0.01
                    for k in range(count):
                        pause = start + k * gap - time.perf_counter()
                        if pause > 0:
                            time.sleep(pause)
                        sent[k] = time.time()
                        handle = enqueue(k)
                        if keep:
                            handles.append(handle)
                self._sync(paced)
            else:
                async def apaced() -> None:
                    aenqueue = self.mod.aenqueue
                    start = time.perf_counter() + 0.01
                    for k in range(count):
                        pause = start + k * gap - time.perf_counter()
                        if pause > 0:
                            await asyncio.sleep(pause)
                        sent[k] = time.time()
                        handle = await aenqueue(k)
                        if keep:
                            handles.append(handle)
                self._async(apaced)

            wait_for(lambda: marks.done(count) >= count, f"{count} latency jobs")
            foreign = load.foreign()
            time.sleep(0.2)
        finally:
            procs.stop()
        ran = {i: t for i, t, _, _ in marks.read() if i < count}
        lat = sorted((ran[k] - sent[k]) * 1000 for k in range(count))
        out = {"p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
               "max_ms": lat[-1], "mean_ms": statistics.fmean(lat), "foreign_cores": foreign}
        if keep and handles:
            try:
                done = sorted(self.mod.done_latencies(handles))
                out["record_p50_ms"] = percentile(done, 50)
                out["record_p99_ms"] = percentile(done, 99)
            except Exception as exc:
                self.result["errors"]["record_latency"] = repr(exc)
        return out

    # -- the run -----------------------------------------------------------------------------

    def phase(self, name: str, fn: Callable[[], Any], limit: float | None = None) -> Any:
        print(f"  {self.system.name}: {name} ...", file=sys.stderr, flush=True)
        try:
            with time_limit(limit or self.args.timeout):
                return fn()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, (PhaseTimeout, RuntimeError)):
                message += "\n" + traceback.format_exc(limit=-3)
            self.result["errors"][name] = message
            print(f"  {self.system.name}: {name} failed: {message}", file=sys.stderr,
                  flush=True)
            return None

    def measure(self, name: str, fn: Callable[[int], dict[str, Any]],
                limit: float | None = None, repeat: int = 1) -> dict[str, Any] | None:
        """Run ``fn(attempt)`` until it has ``repeat`` undisturbed results, and return the
        median of them (by rate, when there is one).

        An attempt during which the rest of the machine used more than ``--busy`` cores is
        disturbed: it is taken again, ``--retries`` times at most. No attempt is repeated
        once one took longer than ``--repeat-under`` seconds (a slow system would blow the
        run's time budget); then the least disturbed result is kept."""
        good: list[dict[str, Any]] = []
        spoiled: list[dict[str, Any]] = []
        attempt = 0
        while len(good) < repeat and len(spoiled) <= self.args.retries:
            again = "" if attempt == 0 else (
                " (again: the machine was busy)" if spoiled and not good else " (again)")
            started = time.monotonic()
            out = self.phase(name + again, lambda attempt=attempt: fn(attempt), limit)
            if out is None:
                break
            attempt += 1
            (good if out["foreign_cores"] <= self.args.busy else spoiled).append(out)
            if time.monotonic() - started > self.args.repeat_under:
                break
        if not good and not spoiled:
            return None
        if good:
            good.sort(key=lambda o: o.get("rate") or 0.0)
            best = dict(good[(len(good) - 1) // 2])
            if len(good) > 1 and "rate" in best:
                best["rates"] = [round(o["rate"]) for o in good if o.get("rate")]
        else:
            best = dict(min(spoiled, key=lambda o: o["foreign_cores"]))
        best["attempts"] = attempt
        self.result["errors"].pop(name, None)
        self.result["foreign"][name] = round(best["foreign_cores"], 2)
        return best

    def _keep_cpu(self, kind: str, out: dict[str, Any] | None) -> None:
        if out:
            self.result.setdefault("enqueue_cpu", {})[kind] = {
                "caller_us": round(out["caller_cpu_us_per_job"], 1),
                "server_us": round(out["server_cpu_us_per_job"], 1)}

    def run(self) -> dict[str, Any]:
        n = self.args.jobs
        ids = range(n)
        res = self.result
        res["foreign"] = {}
        phases = set(self.args.phases.split(","))
        mod = self.mod
        drain_limit = self.args.timeout + 30

        def then_drain(workers: int) -> Callable[[int], dict[str, Any]]:
            # the first attempt drains the jobs just enqueued; another one enqueues anew
            def attempt(k: int) -> dict[str, Any]:
                if k:
                    self.fill(ids)
                return self.drain(n, workers)
            return attempt

        def fresh(enqueue: Callable[[range], dict[str, Any]]) -> Callable[[int], Any]:
            def attempt(k: int) -> dict[str, Any]:
                mod.reset()
                return enqueue(ids)
            return attempt

        if "drain1" in phases or "single" in phases:
            single = self.measure("enqueue single", fresh(self.enqueue_single))
            if single:
                res[single["kind"]] = single["rate"]
                self._keep_cpu(single["kind"], single)
                if "drain1" in phases:
                    res["drain1"] = self.measure("drain, 1 worker", then_drain(1), drain_limit,
                                                 repeat=self.args.repeat)

        if "drain2" in phases or "batch" in phases:
            filled = False
            if self._has("enqueue_batch"):
                batch = self.measure("enqueue batched", fresh(self.enqueue_batched))
                res["enqueue_batch"] = batch["rate"] if batch else None
                self._keep_cpu("enqueue_batch", batch)
                filled = batch is not None
            elif "drain2" in phases:
                filled = bool(self.phase("enqueue (untimed)", lambda: self.fill(ids)))
            if filled and "drain2" in phases:
                res["drain2"] = self.measure("drain, 2 workers", then_drain(2), drain_limit)

        if "async" in phases and self._has("enqueue") and self._has("aenqueue"):
            out = self.measure("enqueue async", fresh(self.enqueue_single_async))
            res["enqueue_async"] = out["rate"] if out else None
            self._keep_cpu("enqueue_async", out)

        if "tx" in phases and self._has("enqueue_tx"):
            out = self.measure("enqueue transactional", fresh(self.enqueue_transactional))
            res["enqueue_tx"] = out["rate"] if out else None
            self._keep_cpu("enqueue_tx", out)

        if "latency" in phases:
            def latency(k: int) -> dict[str, Any]:
                mod.reset()
                return self.latency()
            res["latency"] = self.measure("latency", latency, 2 * self.args.timeout + 30)

        self.phase("reset", mod.reset)
        return res


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return float("nan")
    rank = max(1, min(len(values), round(pct / 100 * len(values) + 0.5)))
    return values[rank - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=sorted(BY_NAME))
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--latency-gap", type=float, default=0.005)
    parser.add_argument("--timeout", type=float, default=90.0,
                        help="seconds any one phase may take")
    parser.add_argument("--phases", default="single,drain1,batch,drain2,async,tx,latency")
    parser.add_argument("--busy", type=float, default=0.3,
                        help="cores other processes may use during a measurement before it "
                             "is taken again (0.3)")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a disturbed measurement is taken again (2)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="1-worker drains measured per system; the median is kept (3)")
    parser.add_argument("--repeat-under", type=float, default=8.0,
                        help="seconds under which an attempt may be repeated or retried (8)")
    parser.add_argument("--profile", action="store_true",
                        help="record the sync enqueue loop and the 1-worker drain with py-spy")
    parser.add_argument("--profile-gil", action="store_true",
                        help="with --profile: sample only the thread holding the GIL")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    # a SIGTERM from run.py (its timeout) unwinds through the finally blocks that stop workers
    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(143)
    signal.signal(signal.SIGTERM, terminate)

    driver = Driver(args)
    try:
        result = driver.run()
    finally:
        Path(args.out).write_text(json.dumps(driver.result, indent=2))
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
