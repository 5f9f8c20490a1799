"""The demo app that ``conveyor dev`` runs when no app is given.

The reference stories in miniature, with real work done by the standard library only:

* ``render_fractal`` renders a Mandelbrot set to a PNG, reporting progress row by row;
* ``flaky_sync`` fails twice and succeeds on its third attempt (retries with backoff);
* ``long_report`` runs for a minute, checking for cancellation — cancel it from the CLI or
  the HTTP API;
* ``process_due_followups`` runs every 30 seconds on the scheduler, once however many
  processes run it.

Its data lives in ``conveyor-demo.db`` and its pictures in ``conveyor-demo-output/`` in the
current directory (``CONVEYOR_URL`` / ``CONVEYOR_DEMO_OUTPUT`` move them).
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any

from . import Conveyor, current_job

app = Conveyor(os.environ.get("CONVEYOR_URL") or "sqlite:///conveyor-demo.db")
OUTPUT = Path(os.environ.get("CONVEYOR_DEMO_OUTPUT", "conveyor-demo-output"))


@app.task(queue="default", timeout=300, expose=True)
def render_fractal(width: int = 320, height: int = 240, max_iter: int = 60,
                   zoom: float = 1.0) -> dict[str, Any]:
    """Render the Mandelbrot set to a PNG file; progress is reported per tenth of the rows."""
    if not (8 <= width <= 4096 and 8 <= height <= 4096):
        raise ValueError("width and height must be between 8 and 4096 pixels")
    job = current_job()
    rows = []
    step = max(height // 10, 1)
    for y in range(height):
        rows.append(_mandelbrot_row(y, width, height, max_iter, zoom))
        if y % step == 0:
            job.progress(100 * y / height, f"row {y} of {height}")
            job.check_cancelled()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"fractal-{job.id}.png"
    path.write_bytes(_png(width, height, rows))
    job.progress(100, "written")
    return {"path": str(path), "width": width, "height": height, "bytes": path.stat().st_size}


def _mandelbrot_row(y: int, width: int, height: int, max_iter: int, zoom: float) -> bytes:
    row = bytearray()
    ci = (y / height - 0.5) * 2.4 / zoom
    for x in range(width):
        cr = (x / width - 0.7) * 3.2 / zoom - 0.3 * (zoom - 1) / zoom
        zr = zi = 0.0
        n = 0
        while n < max_iter and zr * zr + zi * zi <= 4.0:
            zr, zi = zr * zr - zi * zi + cr, 2 * zr * zi + ci
            n += 1
        shade = 0 if n == max_iter else 255 - int(255 * n / max_iter)
        row += bytes((shade // 3, shade // 2, shade))
    return bytes(row)


def _png(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + \
        chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


@app.task(retries=4, retry_backoff=1.0, expose=True)
def flaky_sync(account: str) -> dict[str, Any]:
    """Sync an account with a partner API that fails the first two times."""
    job = current_job()
    job.progress(20, f"calling the partner API (attempt {job.attempt})")
    if job.attempt < 3:
        raise ConnectionError(f"partner API timed out (attempt {job.attempt})")
    return {"account": account, "synced_at": time.time(), "attempts": job.attempt}


@app.task(timeout=600, expose=True)
async def long_report(seconds: int = 60) -> dict[str, Any]:
    """A long async report; cancel it while it runs."""
    job = current_job()
    for second in range(seconds):
        job.progress(100 * second / seconds, f"aggregating: {second}s of {seconds}s")
        await asyncio.sleep(1)
    return {"rows": seconds * 1000}


@app.task(expose=True)
def send_followup(contact: str) -> str:
    """Send one follow-up (here: record it in the output folder)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with (OUTPUT / "followups.log").open("a") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} follow-up sent to {contact}\n")
    return contact


CONTACTS = ["ada@example.com", "grace@example.com", "linus@example.com", "margaret@example.com"]


@app.periodic(every=30, id="process_due_followups", name="process due follow-ups",
              run_at_start=True)
def process_due_followups() -> list[str]:
    """Enqueue one ``send_followup`` per contact whose follow-up is due (here two contacts
    taking turns, a stand-in for a database query)."""
    turn = int(time.time() // 30)
    due = [CONTACTS[turn % len(CONTACTS)], CONTACTS[(turn + 1) % len(CONTACTS)]]
    for contact in due:
        send_followup.enqueue(contact)
    return due


def seed() -> list[Any]:
    """A few jobs to watch when the demo starts."""
    return [
        render_fractal.enqueue(320, 240),
        flaky_sync.enqueue("acme"),
        long_report.enqueue(120),
    ]
