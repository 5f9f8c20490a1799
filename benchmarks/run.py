"""Run Conveyor and its peers on the same services, same no-op job, one invocation.

    bash benchmarks/setup.sh && .bench-venv/bin/python benchmarks/run.py

Options: ``--jobs N`` (default 5000), ``--only conveyor-sqlite,huey-sqlite,...``,
``--engines sqlite,redis,postgres``, ``--profile conveyor-sqlite,conveyor-redis`` (py-spy profile
of the 1-worker drain instead of the benchmark). A full run rewrites the results section of
``benchmarks/README.md`` and ``benchmarks/results.json``; a partial one (``--only``/
``--engines``) prints its tables and leaves the README alone unless ``--readme`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import profile_summary  # noqa: E402
from benchmarks.common import REDIS_URL, drop_pg_databases, flush_redis  # noqa: E402
from benchmarks.systems import ENGINES, SYSTEMS, System  # noqa: E402

HERE = ROOT / "benchmarks"
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
TIMES = "\N{MULTIPLICATION SIGN}"
#: other processes' CPU (cores) above which a figure is flagged in the notes
BUSY_NOTE = 0.3
ENGINE_TITLES = {"sqlite": "SQLite", "redis": "Redis", "postgres": "PostgreSQL"}
PACKAGES = ["conveyor-jobs", "huey", "celery", "kombu", "dramatiq", "rq", "arq", "saq", "taskiq",
            "taskiq-redis", "procrastinate", "redis", "hiredis", "psycopg", "psycopg-pool"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- running the drivers -----------------------------------------------------------------------

def run_system(system: System, args: argparse.Namespace, scratch: Path,
               profile: bool = False) -> dict[str, Any]:
    workdir = scratch / system.name
    workdir.mkdir()
    out = workdir / "result.json"
    argv = [sys.executable, "-m", "benchmarks.driver", system.name, "--jobs", str(args.jobs),
            "--latency-jobs", str(args.latency_jobs), "--latency-gap", str(args.latency_gap),
            "--timeout", str(args.timeout), "--busy", str(args.busy), "--retries",
            str(args.retries), "--repeat", str(args.repeat), "--workdir", str(workdir),
            "--out", str(out)]
    if profile:
        argv += ["--phases", "single,drain1", "--profile", "--retries", "0", "--repeat", "1"]
        if args.profile_gil:
            argv.append("--profile-gil")
    env = dict(os.environ, BENCH_DIR=str(scratch / "sqlite"), PYTHONPATH=str(ROOT))
    limit = 6 * args.timeout + 120
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
    try:
        proc.wait(limit)
    except subprocess.TimeoutExpired:
        log(f"{system.name}: no result after {limit:.0f}s; stopping it")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        kill_leftovers(workdir)
    if out.exists():
        result = json.loads(out.read_text())
    else:
        result = {"system": system.name, "engine": system.engine,
                  "conveyor": system.conveyor, "errors": {"driver": "no result (killed)"}}
    result["seconds"] = round(time.monotonic() - started, 1)
    if profile and result.get("profile_files"):
        parts = [f"# py-spy profile: {system.name}", "",
                 f"`{' '.join(['run.py', *sys.argv[1:]])}`; {args.jobs:,} jobs. "
                 + ("Only the thread holding the GIL was sampled." if args.profile_gil else
                    "Every thread that was not idle was sampled.")]
        for phase, file in result["profile_files"].items():
            what = {"enqueue": "The caller, during the sync enqueue loop",
                    "drain": "The worker process, during the 1-worker drain"}.get(phase, phase)
            rate = result.get("enqueue_sync") if phase == "enqueue" else \
                (result.get("drain1") or {}).get("rate")
            parts += ["", f"## {what}" + (f" ({rate:,.0f} jobs/s while profiled)" if rate
                                          else ""), "",
                      profile_summary.summarize(Path(file))]
        result["profile"] = "\n".join(parts)
    return result


def unavailable(module: str | None) -> str | None:
    """Why ``module`` (a backend still being written) cannot be used; None if it can."""
    if not module:
        return None
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if proc.returncode == 0:
        return None
    last = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return f"{module} does not import: {last}"


def kill_leftovers(workdir: Path) -> None:
    """Worker process groups a killed driver could not stop."""
    pids = workdir / "pids"
    if not pids.exists():
        return
    for line in pids.read_text().split():
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.killpg(int(line), signal.SIGKILL)


def wait_for_quiet(limit: float, busy: float) -> float:
    """Wait up to ``limit`` seconds for a second in which the machine's other processes use
    at most ``busy`` cores; returns the last reading."""
    import psutil

    deadline = time.monotonic() + limit
    while True:
        used = psutil.cpu_percent(interval=1.0) / 100 * (os.cpu_count() or 1)
        if used <= busy or time.monotonic() >= deadline:
            if used > busy:
                log(f"   the machine is still busy ({used:.1f} cores in use); going on")
            return used
        time.sleep(1.0)


def clean_services() -> None:
    with contextlib.suppress(Exception):
        flush_redis()
    with contextlib.suppress(Exception):
        drop_pg_databases()


# -- describing the machine --------------------------------------------------------------------

def machine() -> dict[str, str]:
    info = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(), "os": f"{platform.system()} "
            f"{platform.release()}", "cores": str(os.cpu_count()),
            "sqlite": sqlite3.sqlite_version}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        info["memory"] = f"{kb / 2**20:.0f} GiB"
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        info["redis"] = client.info("server")["redis_version"]
        client.close()
    with contextlib.suppress(Exception):
        import psycopg

        from benchmarks.common import PG_ADMIN_DB, PG_SERVER

        with psycopg.connect(f"{PG_SERVER}/{PG_ADMIN_DB}") as conn:
            info["postgres"] = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    versions = []
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{name} {importlib.metadata.version(name)}")
    info["packages"] = ", ".join(versions)
    return info


# -- the tables --------------------------------------------------------------------------------

#: (title, getter, higher is better, format)
COLUMNS: list[tuple[str, Any, bool, str]] = [
    ("enqueue sync /s", lambda r: r.get("enqueue_sync"), True, "{:,.0f}"),
    ("enqueue batch /s", lambda r: r.get("enqueue_batch"), True, "{:,.0f}"),
    ("enqueue async /s", lambda r: r.get("enqueue_async"), True, "{:,.0f}"),
    ("drain 1 worker /s", lambda r: (r.get("drain1") or {}).get("rate"), True, "{:,.0f}"),
    ("drain 2 workers /s", lambda r: (r.get("drain2") or {}).get("rate"), True, "{:,.0f}"),
    ("p50 ms", lambda r: (r.get("latency") or {}).get("p50_ms"), False, "{:.2f}"),
    ("p99 ms", lambda r: (r.get("latency") or {}).get("p99_ms"), False, "{:.2f}"),
    ("worker RSS MiB", lambda r: (r.get("drain1") or {}).get("rss_mb"), False, "{:.0f}"),
    ("worker CPU µs/job", lambda r: (r.get("drain1") or {}).get("cpu_us_per_job"), False,
     "{:.0f}"),
]
ERROR_KEYS = {0: ("enqueue single",), 1: ("enqueue batched",), 2: ("enqueue async",),
              3: ("drain, 1 worker",), 4: ("drain, 2 workers",), 5: ("latency",),
              6: ("latency",), 7: ("drain, 1 worker",), 8: ("drain, 1 worker",)}


def best_peer(results: list[dict[str, Any]], engine: str, col: int) -> float | None:
    _, get, higher, _ = COLUMNS[col]
    values = [get(r) for r in results if r["engine"] == engine and not r["conveyor"]
              and get(r) is not None]
    if not values:
        return None
    return max(values) if higher else min(values)


def cell(result: dict[str, Any], col: int, best: float | None) -> str:
    _, get, _, fmt = COLUMNS[col]
    value = get(result)
    if value is None:
        errors = result.get("errors", {})
        for key in ERROR_KEYS[col]:
            if key in errors:
                return "timeout" if "Timeout" in errors[key] or "timed out" in errors[key] \
                    else "error"
        return "—"
    text = fmt.format(value)
    if best is None or best == 0:
        return text
    if result["conveyor"]:
        return f"{text} ({value / best:.2f}{TIMES})"
    return f"**{text}**" if value == best else text


def tables(results: list[dict[str, Any]]) -> str:
    lines = []
    for engine in ENGINES:
        rows = [r for r in results if r["engine"] == engine]
        if not rows:
            continue
        lines += [f"#### {ENGINE_TITLES[engine]}", "",
                  "| system | " + " | ".join(c[0] for c in COLUMNS) + " |",
                  "|---|" + "---:|" * len(COLUMNS)]
        bests = [best_peer(results, engine, c) for c in range(len(COLUMNS))]
        for r in rows:
            cells = [cell(r, c, bests[c]) for c in range(len(COLUMNS))]
            lines.append(f"| {r['system']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _get(results: list[dict[str, Any]], name: str, col: int) -> float | None:
    for r in results:
        if r["system"] == name:
            return COLUMNS[col][1](r)
    return None


def _peers(results: list[dict[str, Any]], engine: str, cols: tuple[int, ...]
           ) -> tuple[float | None, str]:
    best, who = None, ""
    for r in results:
        if r["engine"] != engine or r["conveyor"]:
            continue
        for c in cols:
            v = COLUMNS[c][1](r)
            higher = COLUMNS[c][2]
            if v is not None and (best is None or (v > best if higher else v < best)):
                best, who = v, r["system"]
    return best, who


def targets(results: list[dict[str, Any]]) -> str:
    """The issues' targets, as ratios from this run."""
    rows: list[tuple[str, str, float | None, float | None, float, bool]] = []

    def add(label: str, conveyor: str, col: int, ref: tuple[float | None, str],
            want: float, higher: bool = True) -> None:
        mine = _get(results, conveyor, col)
        ref_value, ref_name = ref
        if mine is None or ref_value is None:
            rows.append((label, conveyor, mine, None, want, False))
            return
        ratio = mine / ref_value
        ok = ratio >= want if higher else ratio <= want
        rows.append((f"{label} (vs {ref_name} {COLUMNS[col][3].format(ref_value)})",
                     conveyor, mine, ratio, want, ok))

    def peer(name: str, col: int) -> tuple[float | None, str]:
        return _get(results, name, col), name

    for c in ("conveyor-sqlite", "conveyor-sqlite-async"):
        add("SQLite drain, 1 worker ≥ 2x Huey", c, 3, peer("huey-sqlite", 3), 2)
    add("SQLite enqueue ≥ 2x Huey", "conveyor-sqlite", 0, peer("huey-sqlite", 0), 2)
    for c in ("conveyor-sqlite", "conveyor-sqlite-async"):
        mine = _get(results, c, 5)
        rows.append(("SQLite p50 enqueue→done ≤ 5 ms", c, mine,
                      None, 5, mine is not None and mine <= 5))
    for c in ("conveyor-redis", "conveyor-redis-async"):
        add("Redis drain, 1 worker ≥ 2x fastest peer", c, 3, _peers(results, "redis", (3,)), 2)
    add("Redis single enqueue ≥ 2x fastest peer (sync or async)", "conveyor-redis", 0,
        _peers(results, "redis", (0, 2)), 2)
    for c in ("conveyor-redis", "conveyor-redis-async"):
        add("Redis p50: lowest of all", c, 5, _peers(results, "redis", (5,)), 1, higher=False)
    add("PostgreSQL drain, 1 worker ≥ 3x Procrastinate", "conveyor-postgres", 3,
        peer("procrastinate-postgres", 3), 3)
    add("PostgreSQL drain ≥ ½ Conveyor's Redis drain", "conveyor-postgres", 3,
        peer("conveyor-redis", 3), 0.5)
    add("PostgreSQL single enqueue ≥ 1.3x Procrastinate", "conveyor-postgres", 0,
        peer("procrastinate-postgres", 0), 1.3)
    add("PostgreSQL batched enqueue ≥ 2x Procrastinate batch_defer", "conveyor-postgres", 1,
        peer("procrastinate-postgres", 1), 2)
    add("PostgreSQL p50 below Procrastinate's", "conveyor-postgres", 5,
        peer("procrastinate-postgres", 5), 1, higher=False)

    lines = ["| target | Conveyor row | measured | ratio | met |", "|---|---|---:|---:|:---:|"]
    for raw_label, who, mine, ratio, want, ok in rows:
        label = re.sub(r"(\d)x\b", rf"\1{TIMES}", raw_label)
        if mine is None and ratio is None:
            lines.append(f"| {label} | {who} | not run | | |")
            continue
        shown = f"{mine:,.2f}" if mine < 100 else f"{mine:,.0f}"
        ratio_text = f"{ratio:.2f}{TIMES} (want ≥ {want:g}{TIMES})" if ratio is not None else ""
        if ratio is not None and "p50" in label:
            ratio_text = f"{ratio:.2f}{TIMES} the reference's (want < 1)"
        lines.append(f"| {label} | {who} | {shown} | {ratio_text} | {'yes' if ok else 'NO'} |")
    return "\n".join(lines)


def details(results: list[dict[str, Any]]) -> str:
    lines = ["| system | worker set-up | 2-worker rate measured | CPU of worker / server "
             "during 1-worker drain | note |", "|---|---|---|---|---|"]
    for r in results:
        d1, d2 = r.get("drain1") or {}, r.get("drain2") or {}
        window = "both running" if "rate_plain" in d2 else ("first to last job" if d2 else "")
        cpu = ""
        if d1.get("cpu_util") is not None:
            cpu = f"{d1['cpu_util'] * 100:.0f}% / {d1.get('server_cpu_util', 0) * 100:.0f}%"
        notes = []
        lat = r.get("latency") or {}
        if "record_p50_ms" in lat:
            notes.append(f"created_at→finished_at p50 {lat['record_p50_ms']:.2f} ms, "
                         f"p99 {lat['record_p99_ms']:.2f} ms")
        busy = {k: v for k, v in (r.get("foreign") or {}).items() if v > BUSY_NOTE}
        if busy:
            notes.append("other processes used " + ", ".join(
                f"{v:.1f} cores during {k}" for k, v in busy.items()))
        if r.get("enqueue_tx"):
            notes.append(f"transactional enqueue (one caller transaction per job) "
                         f"{r['enqueue_tx']:,.0f}/s")
        single = (r.get("enqueue_cpu") or {}).get("enqueue_sync")
        if single and r["conveyor"]:
            notes.append(f"sync enqueue CPU per job: caller {single['caller_us']:.0f} µs, "
                         f"server {single['server_us']:.0f} µs")
        if d1.get("rates"):
            notes.append("1-worker drains " + ", ".join(f"{v:,}" for v in d1["rates"])
                         + "/s (median shown)")
        if d1.get("context_switches_per_job") is not None and r["conveyor"]:
            notes.append(f"worker context switches per job {d1['context_switches_per_job']:.1f}")
        dups = (d1.get("duplicates") or 0) + (d2.get("duplicates") or 0)
        if dups:
            notes.append(f"{dups} job(s) ran twice")
        for phase, message in (r.get("errors") or {}).items():
            first = message.strip().splitlines()[0] if message.strip() else message
            notes.append(f"{phase}: {first[:160]}")
        lines.append(f"| {r['system']} | {r.get('description', '')} | {window} | {cpu} | "
                     f"{'; '.join(notes).replace('|', '/')} |")
    return "\n".join(lines)


def results_section(results: list[dict[str, Any]], info: dict[str, str], command: str,
                    jobs: int, latency_jobs: int, gap: float) -> str:
    return "\n".join([
        START,
        f"Run on {info['date']}: `{command}`",
        "",
        f"Machine: {info.get('cpu', '?')}, {info['cores']} cores, {info.get('memory', '?')}; "
        f"{info['os']}; Python {info['python']}; Redis {info.get('redis', '?')}; PostgreSQL "
        f"{info.get('postgres', '?')}; SQLite {info['sqlite']}.",
        "",
        f"Packages: {info['packages']}.",
        "",
        f"{jobs:,} no-op jobs per enqueue and drain figure; latency over {latency_jobs} jobs "
        f"enqueued {gap * 1000:g} ms apart. Conveyor rows show (ratio to the best peer on the "
        "same engine); the best peer is in bold. Higher is better for rates, lower for "
        "latency, RSS and CPU.",
        "",
        tables(results),
        "#### Targets (from the issues), as ratios from this run",
        "",
        targets(results),
        "",
        "#### Set-ups and notes",
        "",
        details(results),
        END,
    ])


def write_readme(section: str) -> None:
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n## Results\n\n{START}\n{END}\n"
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    README.write_text(before + section + after)


# -- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Conveyor and its peers, side by side.")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per figure (5000)")
    parser.add_argument("--only", help="comma-separated systems: "
                        + ",".join(s.name for s in SYSTEMS))
    parser.add_argument("--engines", help="comma-separated: sqlite,redis,postgres")
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--latency-gap", type=float, default=0.005,
                        help="seconds between latency jobs (0.005)")
    parser.add_argument("--timeout", type=float, default=90.0,
                        help="seconds a phase may take before the system is reported as "
                             "timed out (90)")
    parser.add_argument("--busy", type=float, default=0.3,
                        help="cores other processes may use during a measurement before it "
                             "is taken again (0.3)")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a disturbed measurement is taken again (2)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="1-worker drains per system, the median is reported (3)")
    parser.add_argument("--quiet-wait", type=float, default=15.0,
                        help="seconds to wait, before each system, for the machine to be "
                             "idle (15)")
    parser.add_argument("--nice", type=int, default=-10,
                        help="scheduling priority for the harness and the workers it starts, "
                             "to shield them from other load on the machine (-10; root only; "
                             "0 to leave it)")
    parser.add_argument("--profile", help="systems to profile with py-spy (1-worker drain)")
    parser.add_argument("--profile-gil", action="store_true",
                        help="with --profile: sample only the thread holding the GIL")
    parser.add_argument("--readme", action="store_true",
                        help="rewrite README.md's results even for a partial run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--render", metavar="RESULTS_JSON",
                        help="only rewrite README.md's results from a saved results file")
    args = parser.parse_args(argv)
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        write_readme(results_section(saved["results"], saved["machine"], saved["command"],
                                     saved["jobs"], args.latency_jobs, args.latency_gap))
        log(f"rewrote {README.relative_to(ROOT)} from {args.render}")
        return 0

    names = [s.name for s in SYSTEMS]
    chosen = SYSTEMS
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            parser.error(f"unknown system(s): {', '.join(unknown)}")
        chosen = [s for s in chosen if s.name in wanted]
    if args.engines:
        engines = {e.strip() for e in args.engines.split(",")}
        chosen = [s for s in chosen if s.engine in engines]
    if args.profile:
        wanted = [n.strip() for n in args.profile.split(",") if n.strip()]
        chosen = [s for s in SYSTEMS if s.name in wanted]
    partial = bool(args.only or args.engines)
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError:
            log(f"could not change the priority by {args.nice} (not root?); going on")

    scratch = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    (scratch / "sqlite").mkdir()
    command = " ".join([".bench-venv/bin/python benchmarks/run.py", *(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))])
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for system in chosen:
            missing = unavailable(system.requires)
            if missing:
                log(f"== {system.name}: skipped ({missing})")
                continue
            log(f"== {system.name}")
            clean_services()
            wait_for_quiet(args.quiet_wait, args.busy)
            result = run_system(system, args, scratch, profile=bool(args.profile))
            results.append(result)
            log(f"   done in {result['seconds']}s: " + summary_line(result))
            if args.profile and result.get("profile"):
                suffix = "-gil" if args.profile_gil else ""
                out = HERE / "profiles" / f"{system.name}{suffix}.md"
                out.parent.mkdir(exist_ok=True)
                out.write_text(result["profile"])
                log(f"   profile summary: {out.relative_to(ROOT)}")
    finally:
        clean_services()
        if args.keep:
            log(f"scratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    log(f"total {time.monotonic() - started:.0f}s")
    if args.profile:
        return 0

    info = machine()
    payload = {"machine": info, "command": command, "jobs": args.jobs, "results": results}
    section = results_section(results, info, command, args.jobs, args.latency_jobs,
                              args.latency_gap)
    if partial and not args.readme:
        out = Path(tempfile.gettempdir()) / "conveyor-bench-partial.json"
        out.write_text(json.dumps(payload, indent=2) + "\n")
        print(section)
        log(f"partial run: README.md left as it is; figures in {out}")
    else:
        (HERE / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        write_readme(section)
        print(section)
        log(f"wrote {README.relative_to(ROOT)} and benchmarks/results.json")
    return 0


def summary_line(r: dict[str, Any]) -> str:
    parts = []
    for col, (title, get, _, fmt) in enumerate(COLUMNS):
        if col > 6:
            break
        value = get(r)
        if value is not None:
            parts.append(f"{title} {fmt.format(value)}")
    if r.get("errors"):
        parts.append("errors: " + ", ".join(r["errors"]))
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
