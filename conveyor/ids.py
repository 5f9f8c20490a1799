"""Job ids: UUIDv7 strings, unique and ordered by creation time.

The 48-bit millisecond timestamp leads, so ids sort (as strings too) by when they were made; a
per-process counter in the next 12 bits keeps ids made in the same millisecond in order, and 62
random bits keep processes apart.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_job_id(now: float | None = None) -> str:
    global _last_ms, _counter
    ms = int((time.time() if now is None else now) * 1000)
    with _lock:
        if ms <= _last_ms:
            # same (or an earlier, after a clock step back) millisecond: count up within it
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms, _counter = ms, 0
        counter = _counter
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    h = "%032x" % ((ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand)
    # str(uuid.UUID(int=...)) spelled out: a third of its cost on every enqueue
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
