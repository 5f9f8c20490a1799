"""Summarise a py-spy ``--format raw --threads`` recording (collapsed stacks) as Markdown.

Each line of the recording is ``thread (tid): name;frame;frame;... count`` with frames written
``function (file:line)``. The summary gives the share of samples per thread (worker ids
stripped from the names), and the functions with the most samples of their own (self) and
in total (inclusive), files shortened to their package-relative path.

    .bench-venv/bin/python -m benchmarks.profile_summary RECORDING
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")
#: frames every thread has, which say nothing about the work
_BOOT = ("Thread._bootstrap", "Thread._bootstrap_inner", "Thread.run", "_worker (concurrent")


#: where a sample's own frame is, by the first pattern its file matches
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("the no-op job and its mark", ("benchmarks/",)),
    ("Conveyor's backend code (and, on SQLite, the sqlite3 calls it makes)",
     ("conveyor/backends/",)),
    ("the rest of Conveyor (worker, app, task, job, serialize)", ("conveyor/",)),
    ("JSON (json module)", ("json/",)),
    ("Redis client (redis-py, hiredis)", ("redis/", "hiredis")),
    ("PostgreSQL client (psycopg, psycopg_pool)", ("psycopg",)),
    ("threads, locks, queues, futures", ("threading.py", "queue.py", "concurrent/futures")),
    ("asyncio", ("asyncio/",)),
]


def category(frame: str) -> str:
    match = _FRAME.match(frame)
    file = match.group("file") if match else frame
    for name, patterns in CATEGORIES:
        if any(p in file for p in patterns):
            return name
    return "other (uuid, inspect, typing, dataclass __init__, ...)"


def _thread_name(name: str) -> str:
    name = name.strip()
    name = re.sub(r"-[0-9a-zA-Z.]+-\d+-[0-9a-z]{6}", "", name)  # conveyor-<host>-<pid>-<id>
    name = re.sub(r"_\d+$", "_N", name)  # ThreadPoolExecutor-0_3
    return name or "?"


def _short(frame: str, line: bool = False) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match.group("file")
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            if marker == "/lib/python3":
                file = "stdlib " + file.split("/", 1)[-1]
            break
    if line and match.group("line"):
        file += f":{match.group('line')}"
    return f"{match.group('func')} ({file})"


def parse(path: Path) -> list[tuple[str, list[str], int]]:
    samples = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        head, _, rest = stack.partition(";")
        thread = _thread_name(head.split(":", 1)[1] if ":" in head else head)
        frames = [f for f in rest.split(";") if f]
        samples.append((thread, frames, int(count)))
    return samples


def summarize(path: Path, top: int = 25) -> str:
    samples = parse(path)
    total = sum(c for _, _, c in samples)
    if not total:
        return "(no samples)\n"
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for thread, frames, count in samples:
        threads[thread] += count
        if frames:
            own[_short(frames[-1])] += count
            lines[_short(frames[-1], line=True)] += count
            kinds[category(frames[-1])] += count
        seen = set()
        for frame in frames:
            short = _short(frame)
            if short in seen or short.startswith(_BOOT):
                continue
            seen.add(short)
            inclusive[short] += count
    out = [f"{total} samples of active (non-idle) threads; % of all samples.", "",
           "| thread | share |", "|---|---:|"]
    out += [f"| {name} | {n / total:.1%} |" for name, n in threads.most_common()]
    out += ["", "Where the samples' own frame is:", "", "| category | own |", "|---|---:|"]
    out += [f"| {name} | {n / total:.1%} |" for name, n in kinds.most_common()]
    out += ["", f"Top {top} functions by own samples:", "", "| function | own |", "|---|---:|"]
    out += [f"| `{name}` | {n / total:.1%} |" for name, n in own.most_common(top)]
    out += ["", f"Top {top} lines by own samples:", "", "| line | own |", "|---|---:|"]
    out += [f"| `{name}` | {n / total:.1%} |" for name, n in lines.most_common(top)]
    out += ["", f"Top {top} functions by inclusive samples:", "", "| function | inclusive |",
            "|---|---:|"]
    out += [f"| `{name}` | {n / total:.1%} |" for name, n in inclusive.most_common(top)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1])))
