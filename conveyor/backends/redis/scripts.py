"""The Lua scripts of the Redis backend, read from ``lua/`` at import; every state change of a
job is one of them.

``lua/<name>.lua`` is the body of script ``name``; ``lua/helpers.lua`` holds the helper blocks
the bodies share. Each script is its body preceded by the helper blocks it uses, and gets the
key prefix (``"conveyor:"``) as ``ARGV[1]``. Scripts never take ``KEYS``: the layout derives
from the prefix and job ids, which ties this backend to a single Redis node (not Redis Cluster).

Numbers cross the Lua boundary as strings written by Python's ``repr(float)`` and are stored
verbatim, so times read back bit for bit. When Lua must compute a time itself (``now +
result_ttl``) it formats with ``%.17g``, which round-trips a double exactly; plain
``tostring`` would keep only 14 digits and shift timestamps by up to 0.1 ms.

Index writes (the ``idx:*`` zsets, ``running``, ``expires``) are buffered per key and issued
once per script as variadic ZADD/ZREM: a batch of 100 claims moves 100 members with a handful
of calls instead of 500. Queue structures that a script reads back (``ready``) are written
directly.
"""

from __future__ import annotations

import re
from importlib import resources

#: how many wake tokens a queue's list holds at most (one token wakes one blocked worker)
WAKE_CAP = 8
#: upper bound of due scheduled jobs one claim moves to the ready set per queue
PROMOTE_MIN = 256
#: expired idle registrations one enqueue skips per queue before giving up on a hand-off
STALE_SKIP = 16

#: the job hash's fields, in the order scripts return them (HMGET rows: no field names on the
#: wire, and Python decodes by position)
FIELDS = ("id", "task", "queue", "args", "kwargs", "priority", "status", "run_at", "created_at",
          "attempts", "max_attempts", "timeout", "result_ttl", "key", "started_at",
          "finished_at", "worker_id", "lease_expires_at", "progress", "progress_message",
          "result", "result_expires_at", "cancel_requested", "errors", "history", "headers",
          "version")

_LUA = resources.files("conveyor.backends.redis").joinpath("lua")
_BLOCK = re.compile(r"^-- @block [^\n]*\n", re.M)
_DEFINES = re.compile(r"^local (?:function )?([\w, ]+?)(?: =|\()", re.M)
_PLACEHOLDER = re.compile(r"@(\w+)@")

#: the helper blocks of ``lua/helpers.lua``, in order (what precedes the first is its header)
BLOCKS: list[str] = _BLOCK.split(_LUA.joinpath("helpers.lua").read_text("utf-8"))[1:]


def _fill(text: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return {"FIELDS": ", ".join(f"'{f}'" for f in FIELDS), "WAKE_CAP": str(WAKE_CAP),
                "PROMOTE_MIN": str(PROMOTE_MIN), "STALE_SKIP": str(STALE_SKIP)}[name]

    return _PLACEHOLDER.sub(value, text)


def _code(text: str) -> str:
    """Lua without comments and string literals, so that only real references count."""
    return re.sub(r"--[^\n]*|'[^'\n]*'|\"[^\"\n]*\"", "", text)


def _assemble(body: str) -> str:
    """``body`` preceded by the helper blocks it uses, directly or through other blocks."""
    defined = [[n.strip() for group in _DEFINES.findall(block) for n in group.split(",")]
               for block in BLOCKS]
    used = [False] * len(BLOCKS)
    used[0] = True  # the prefix
    pending = [body]
    while pending:
        text = _code(pending.pop())
        for i, names in enumerate(defined):
            if not used[i] and any(re.search(rf"\b{n}\b", text) for n in names):
                used[i] = True
                pending.append(BLOCKS[i])
    return _fill("".join(b for b, u in zip(BLOCKS, used, strict=True) if u) + body)


#: script name -> its full source
SCRIPTS: dict[str, str] = {
    path.name.removesuffix(".lua"): _assemble(path.read_text("utf-8"))
    for path in sorted(_LUA.iterdir(), key=lambda p: p.name)
    if path.name.endswith(".lua") and path.name != "helpers.lua"
}
