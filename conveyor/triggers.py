"""When a schedule fires: :class:`IntervalTrigger` and :class:`CronTrigger`.

A trigger is a pure function of time. ``next_after(t)`` is the first fire time strictly after
``t`` and ``previous(t)`` the last one at or before ``t``, both as float Unix timestamps. Every
scheduler process computes the *same* fire times from the same trigger without talking to the
others, which is what lets the backend's per-fire-time claim make firing exactly-once:

* an interval is anchored to the Unix epoch (``every=60`` fires on the minute, ``every=30`` on
  :00 and :30), not to the moment a process happened to start;
* a cron expression is evaluated on the wall clock of its IANA time zone.

Daylight-saving rule (cron only; an interval counts elapsed seconds and ignores the wall
clock): **each wall-clock time fires at most once.** A time that falls in a *skipped* hour
(clocks jump forward) fires once, at the first valid instant after the gap — ``30 2 * * *`` in
Europe/Paris fires at 03:00 CEST on the spring-forward day; several skipped times fold into that
one instant. A time in a *repeated* hour (clocks go back) fires once, at its first occurrence —
02:30 CEST, not again at 02:30 CET. This holds for every expression, so ``*/15 * * * *`` in a
DST zone pauses for the second pass of the repeated hour; schedule in ``tz="UTC"`` or use
``every=`` when elapsed time is what matters.

Cron expressions are parsed by `cronsim` (the ``conveyor-jobs[cron]`` extra), imported only
when a cron trigger is made; nothing outside this module knows which library it is.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigurationError, ValidationError

__all__ = ["CronTrigger", "IntervalTrigger", "Trigger", "make_trigger"]

#: cron's common shorthands, which the parser does not read itself
ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class Trigger(ABC):
    """The fire times of a schedule."""

    @abstractmethod
    def next_after(self, t: float) -> float:
        """The first fire time strictly after ``t``."""

    @abstractmethod
    def previous(self, t: float) -> float | None:
        """The last fire time at or before ``t`` (None: it never fired before ``t``)."""

    @abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_spec` turns back into an equal trigger."""

    @abstractmethod
    def describe(self) -> str:
        """A short human description, for listings: "every 5 minutes"."""

    @staticmethod
    def from_spec(spec: dict[str, Any]) -> Trigger:
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "interval":
            return IntervalTrigger(spec.get("every"))  # type: ignore[arg-type]
        if kind == "cron":
            return CronTrigger(spec.get("expr"), spec.get("tz") or "UTC")  # type: ignore[arg-type]
        raise ValidationError(f"unknown trigger spec {spec!r}: expected type 'interval' or "
                              "'cron'")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trigger) and self.to_spec() == other.to_spec()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_spec().items())))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def make_trigger(every: float | timedelta | None = None, cron: str | None = None,
                 tz: str | None = None) -> Trigger:
    """The trigger for ``every=`` or ``cron=`` (exactly one of them; ``tz`` only with cron)."""
    if (every is None) == (cron is None):
        raise ValidationError("give a schedule exactly one of every= (seconds or a timedelta) "
                              "or cron= (an expression)")
    if every is not None:
        if tz is not None:
            raise ValidationError("tz= applies to cron= schedules; an every= interval counts "
                                  "elapsed seconds and has no time zone")
        return IntervalTrigger(every)
    assert cron is not None
    return CronTrigger(cron, tz or "UTC")


class IntervalTrigger(Trigger):
    """Every ``every`` seconds (or timedelta), on multiples of ``every`` since the Unix epoch."""

    def __init__(self, every: float | timedelta) -> None:
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not math.isfinite(seconds) or seconds <= 0:
            raise ValidationError(f"every= must be a positive number of seconds or a "
                                  f"timedelta, got {every!r}")
        self.every = float(seconds)

    def next_after(self, t: float) -> float:
        fire = (math.floor(t / self.every) + 1) * self.every
        # float division can land one step short; the contract is "strictly after"
        while fire <= t:
            fire += self.every
        return fire

    def previous(self, t: float) -> float | None:
        fire = math.floor(t / self.every) * self.every
        while fire > t:
            fire -= self.every
        return fire

    def to_spec(self) -> dict[str, Any]:
        return {"type": "interval", "every": self.every}

    def describe(self) -> str:
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
            if self.every >= size and self.every % size == 0:
                count = int(self.every // size)
                return f"every {unit}" if count == 1 else f"every {count} {unit}s"
        count_s = f"{self.every:g}"
        return "every second" if self.every == 1 else f"every {count_s} seconds"

    def __str__(self) -> str:
        return f"interval[{timedelta(seconds=self.every)}]"


class CronTrigger(Trigger):
    """A cron expression (5 fields, or 6 with seconds first; ``@daily`` and friends) on the
    wall clock of ``tz``, an IANA zone name (default UTC). See the module docstring for the
    daylight-saving rule."""

    def __init__(self, expr: str, tz: str = "UTC") -> None:
        if not isinstance(expr, str) or not expr.strip():
            raise ValidationError(f"cron= must be a cron expression string, got {expr!r}")
        if not isinstance(tz, str) or not tz:
            raise ValidationError(f"tz= must be an IANA time zone name such as "
                                  f"'Europe/Paris', got {tz!r}")
        self.expr = " ".join(expr.split())
        self.tz = tz
        try:
            self.zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"unknown time zone {tz!r}: use an IANA name such as "
                                  "'Europe/Paris' or 'UTC'") from None
        self._fields = ALIASES.get(self.expr.lower(), self.expr)
        self._cronsim = _cronsim()
        try:
            self._iterate(datetime(2000, 1, 1), reverse=False)
        except Exception as exc:
            # the parser's own message names the bad field ("Bad minute")
            raise ValidationError(f"invalid cron expression {expr!r}: {exc}; expected 5 "
                                  "fields (minute hour day-of-month month day-of-week) or 6 "
                                  "with seconds first") from None
        try:
            next(self._iterate(datetime(2000, 1, 1), reverse=False))
        except StopIteration:
            raise ValidationError(f"cron expression {expr!r} never fires") from None

    def _iterate(self, wall: datetime, reverse: bool) -> Iterator[datetime]:
        # naive wall-clock times: the DST rule is applied by _instant, not by the parser
        iterator: Iterator[datetime] = self._cronsim(self._fields, wall, reverse=reverse)
        return iterator

    def _wall(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, self.zone)

    def _instant(self, wall: datetime) -> float:
        """The instant a wall-clock match fires at: its first occurrence, or, inside a gap,
        the first instant after the gap."""
        first = wall.replace(tzinfo=self.zone, fold=0).timestamp()
        if self._wall(first).replace(tzinfo=None) == wall:
            return first
        # ``fold=1`` reads the gap with the offset after it, which lands before the gap;
        # ``fold=0`` with the offset before it, which lands after: the gap's end lies between
        low = int(wall.replace(tzinfo=self.zone, fold=1).timestamp())
        high = math.ceil(first)
        while high - low > 1:
            middle = (low + high) // 2
            if self._wall(middle).replace(tzinfo=None) >= wall:
                high = middle
            else:
                low = middle
        return float(high)

    def next_after(self, t: float) -> float:
        start = self._wall(t).replace(tzinfo=None, microsecond=0)
        # matches at or before ``start`` may map to an instant after ``t`` only when ``t``
        # is in a repeated hour, and then they are its first occurrence — already past
        for wall in self._iterate(start, reverse=False):
            instant = self._instant(wall)
            if instant > t:
                return instant
        raise ConfigurationError(f"cron expression {self.expr!r} has no fire time after {t}")

    def previous(self, t: float) -> float | None:
        local = self._wall(t)
        start = local.replace(tzinfo=None, microsecond=0) + timedelta(seconds=1)
        if local.fold:
            # in the second pass of a repeated hour, the first pass's later matches are
            # already past, so the search starts from the end of the repeated hour
            first_offset = local.replace(fold=0).utcoffset() or timedelta()
            start += abs(first_offset - (local.utcoffset() or timedelta()))
        for wall in self._iterate(start, reverse=True):
            instant = self._instant(wall)
            if instant <= t:
                return instant
        return None

    def to_spec(self) -> dict[str, Any]:
        return {"type": "cron", "expr": self.expr, "tz": self.tz}

    def describe(self) -> str:
        try:
            explained = self._cronsim(self._fields, datetime(2000, 1, 1)).explain()
        except Exception:
            # the explainer does not cover every expression the parser accepts
            explained = f"cron {self.expr}"
        return f"{explained} ({self.tz})"

    def __str__(self) -> str:
        return f"cron[{self.expr}, {self.tz}]"


def _cronsim() -> Any:
    try:
        from cronsim import CronSim
    except ImportError:
        raise ConfigurationError("cron schedules need the cron extra: pip install "
                                 "'conveyor-jobs[cron]'") from None
    return CronSim
