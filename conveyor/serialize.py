"""JSON encoding of arguments and results, with errors that say where the bad value is.

Conveyor stores JSON only — no pickle anywhere — so a value that JSON cannot carry is refused
when it is enqueued (or returned), naming the argument by JSON pointer: ``#/kwargs/when``.
Tuples are accepted and arrive as lists, as JSON has no tuple.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import PayloadTooLarge, ValidationError

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def find_non_json(value: Any, pointer: str) -> list[dict[str, str]]:
    """Every place in ``value`` JSON cannot carry, as ``{"pointer", "message"}``."""
    problems: list[dict[str, str]] = []
    _walk(value, pointer, problems, depth=0)
    return problems


def _walk(value: Any, pointer: str, problems: list[dict[str, str]], depth: int) -> None:
    if depth > 100:
        problems.append({"pointer": pointer, "message": "nested more than 100 levels deep"})
    elif value is None or isinstance(value, (str, bool, int)):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            problems.append({"pointer": pointer, "message": f"{value} is not valid JSON"})
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _walk(item, f"{pointer}/{i}", problems, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append({"pointer": pointer, "message":
                                 f"object key {key!r} is a {type(key).__name__}, not a string"})
                continue
            escaped = key.replace("~", "~0").replace("/", "~1")
            _walk(item, f"{pointer}/{escaped}", problems, depth + 1)
    else:
        problems.append({"pointer": pointer, "message": f"a {type(value).__name__} is not JSON "
                         "(use str, int, float, bool, None, list or dict)"})


def dumps(value: Any, pointer: str = "#") -> str:
    """Encode ``value`` as compact JSON; ``ValidationError`` naming the bad place otherwise."""
    try:
        encoded = _encoder.encode(value)
        if not encoded.isascii():
            encoded.encode()  # a lone surrogate cannot be stored as UTF-8: refuse it here
        return encoded
    except UnicodeEncodeError as exc:
        problems = [{"pointer": pointer, "message": f"contains text that is not valid "
                     f"Unicode ({exc.reason}: a lone surrogate)"}]
        raise ValidationError(_summary(problems), errors=problems) from None
    except (TypeError, ValueError, RecursionError):
        problems = find_non_json(value, pointer) or [{"pointer": pointer,
                                                      "message": "cannot be encoded as JSON"}]
        raise ValidationError(_summary(problems), errors=problems) from None


def loads(text: str | bytes | None) -> Any:
    if text is None:
        return None
    # most jobs take no arguments of one kind or the other: skip the parser for those
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


def check_size(encoded: str, limit: int, what: str = "arguments") -> None:
    size = len(encoded.encode()) if len(encoded) * 4 > limit else len(encoded)
    if size > limit:
        raise PayloadTooLarge(f"the encoded {what} are {size:,} bytes, over the {limit:,}-byte "
                              "payload limit (Conveyor(payload_limit=...) raises it; large data "
                              "belongs in files or a database, passed by reference)",
                              errors=[{"pointer": "#", "message": "payload too large"}])


def _summary(problems: list[dict[str, str]]) -> str:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first['pointer']}: {first['message']}{more}"
