"""Triggers: interval and cron fire times, time zones, both daylight-saving transitions."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from conveyor.errors import ConfigurationError, ValidationError
from conveyor.triggers import CronTrigger, IntervalTrigger, Trigger, make_trigger

PARIS = ZoneInfo("Europe/Paris")


def paris(*fields: int, fold: int = 0) -> float:
    return datetime(*fields, tzinfo=PARIS, fold=fold).timestamp()  # type: ignore[misc]


def utc(*fields: int) -> float:
    return datetime(*fields, tzinfo=UTC).timestamp()  # type: ignore[misc]


def local(t: float) -> str:
    return datetime.fromtimestamp(t, PARIS).isoformat()


def fires(trigger: Trigger, after: float, count: int) -> list[float]:
    times = []
    for _ in range(count):
        after = trigger.next_after(after)
        times.append(after)
    return times


# -- interval -------------------------------------------------------------------------------

def test_an_interval_fires_on_multiples_of_its_period_since_the_epoch():
    trigger = IntervalTrigger(60)
    assert fires(trigger, utc(2026, 5, 1, 12, 0, 30), 3) == [
        utc(2026, 5, 1, 12, 1), utc(2026, 5, 1, 12, 2), utc(2026, 5, 1, 12, 3)]


def test_an_interval_next_fire_is_strictly_after_a_fire_time():
    trigger = IntervalTrigger(30)
    assert trigger.next_after(utc(2026, 5, 1, 12, 0, 30)) == utc(2026, 5, 1, 12, 1)


def test_an_interval_previous_fire_includes_the_instant_itself():
    trigger = IntervalTrigger(30)
    assert trigger.previous(utc(2026, 5, 1, 12, 0, 30)) == utc(2026, 5, 1, 12, 0, 30)
    assert trigger.previous(utc(2026, 5, 1, 12, 0, 29)) == utc(2026, 5, 1, 12)


def test_every_process_computes_the_same_interval_fire_times_whenever_it_started():
    trigger = IntervalTrigger(7)
    fire = trigger.next_after(utc(2026, 5, 1))
    starts = [fire + offset for offset in (0.0, 0.1, 2.5, 6.9)]
    assert {trigger.next_after(start) for start in starts} == {fire + 7}


def test_a_fractional_interval_never_returns_a_time_at_or_before_its_argument():
    trigger = IntervalTrigger(0.1)
    t = 1_800_000_000.0
    for _ in range(1000):
        following = trigger.next_after(t)
        assert t < following <= t + 0.1 + 1e-6
        t = following


def test_an_interval_accepts_a_timedelta_and_describes_itself():
    assert IntervalTrigger(timedelta(minutes=5)).every == 300
    assert IntervalTrigger(300).describe() == "every 5 minutes"
    assert IntervalTrigger(3600).describe() == "every hour"
    assert IntervalTrigger(90).describe() == "every 90 seconds"
    assert IntervalTrigger(1).describe() == "every second"
    assert str(IntervalTrigger(60)) == "interval[0:01:00]"


@pytest.mark.parametrize("every", [0, -5, float("nan"), float("inf"), "60", True, None])
def test_an_interval_that_is_not_a_positive_number_is_refused(every):
    with pytest.raises(ValidationError, match="every= must be a positive number"):
        IntervalTrigger(every)


# -- cron -----------------------------------------------------------------------------------

def test_cron_fires_on_the_wall_clock_of_its_time_zone():
    trigger = CronTrigger("0 2 * * *", "Europe/Paris")
    assert [local(t) for t in fires(trigger, paris(2026, 6, 1, 12), 2)] == [
        "2026-06-02T02:00:00+02:00", "2026-06-03T02:00:00+02:00"]


def test_cron_defaults_to_utc():
    trigger = CronTrigger("*/5 * * * *")
    assert trigger.next_after(utc(2026, 5, 1, 12, 3)) == utc(2026, 5, 1, 12, 5)
    assert trigger.tz == "UTC"


def test_cron_with_six_fields_has_seconds_first():
    trigger = CronTrigger("*/10 * * * * *")
    assert fires(trigger, utc(2026, 5, 1, 12, 0, 1), 2) == [utc(2026, 5, 1, 12, 0, 10),
                                                              utc(2026, 5, 1, 12, 0, 20)]


def test_cron_shorthands_are_understood():
    assert CronTrigger("@daily").next_after(utc(2026, 5, 1, 12)) == utc(2026, 5, 2)
    assert CronTrigger("@hourly").next_after(utc(2026, 5, 1, 12, 1)) == utc(2026, 5, 1, 13)


def test_cron_previous_is_the_latest_fire_at_or_before_the_instant():
    trigger = CronTrigger("0 2 * * *", "Europe/Paris")
    assert trigger.previous(paris(2026, 6, 2, 2)) == paris(2026, 6, 2, 2)
    assert trigger.previous(paris(2026, 6, 2, 1, 59)) == paris(2026, 6, 1, 2)


def test_cron_describes_itself_in_words_with_its_zone():
    trigger = CronTrigger("0 2 * * *", "Europe/Paris")
    assert trigger.describe() == "At 02:00 every day (Europe/Paris)"
    assert str(trigger) == "cron[0 2 * * *, Europe/Paris]"


# -- daylight saving: Europe/Paris, 2026 --------------------------------------------------------

def test_a_time_in_the_skipped_hour_fires_once_at_the_end_of_the_gap():
    # 2026-03-29: at 02:00 CET the clocks jump to 03:00 CEST; 02:30 does not exist that day
    trigger = CronTrigger("30 2 * * *", "Europe/Paris")
    assert [local(t) for t in fires(trigger, paris(2026, 3, 28, 12), 3)] == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]


def test_several_times_in_the_skipped_hour_fold_into_one_fire():
    trigger = CronTrigger("*/15 * * * *", "Europe/Paris")
    assert [local(t) for t in fires(trigger, paris(2026, 3, 29, 1, 40), 3)] == [
        "2026-03-29T01:45:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:15:00+02:00"]


def test_a_time_in_the_repeated_hour_fires_once_at_its_first_occurrence():
    # 2026-10-25: at 03:00 CEST the clocks go back to 02:00 CET; 02:30 happens twice
    trigger = CronTrigger("30 2 * * *", "Europe/Paris")
    got = fires(trigger, paris(2026, 10, 24, 12), 3)
    assert [local(t) for t in got] == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]
    assert got[0] == utc(2026, 10, 25, 0, 30)


def test_the_second_pass_of_the_repeated_hour_does_not_fire_again():
    trigger = CronTrigger("*/30 * * * *", "Europe/Paris")
    got = fires(trigger, paris(2026, 10, 25, 1, 45), 5)
    assert [local(t) for t in got] == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00", "2026-10-25T03:30:00+01:00",
        "2026-10-25T04:00:00+01:00"]


def test_next_after_from_inside_the_second_pass_skips_to_after_the_repeated_hour():
    trigger = CronTrigger("30 2 * * *", "Europe/Paris")
    second_pass = paris(2026, 10, 25, 2, 10, fold=1)
    assert local(trigger.next_after(second_pass)) == "2026-10-26T02:30:00+01:00"


def test_previous_from_inside_the_second_pass_finds_the_first_occurrence():
    trigger = CronTrigger("30 2 * * *", "Europe/Paris")
    assert trigger.previous(paris(2026, 10, 25, 2, 10, fold=1)) == utc(2026, 10, 25, 0, 30)
    assert trigger.previous(paris(2026, 3, 29, 3, 0)) == paris(2026, 3, 29, 3, 0)


def test_a_utc_cron_ignores_daylight_saving_elsewhere():
    trigger = CronTrigger("30 1 * * *", "UTC")
    assert trigger.next_after(utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 1, 30)


# -- invalid declarations -----------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "why"), [
    ("61 * * * *", "Bad minute"),
    ("* * *", "Wrong number of fields"),
    ("0 0 31 2 *", "Bad day-of-month"),
    ("every minute", "Wrong number of fields"),
])
def test_an_invalid_cron_expression_is_refused_with_the_reason(expr, why):
    with pytest.raises(ValidationError, match=f"invalid cron expression .*{why}"):
        CronTrigger(expr)


@pytest.mark.parametrize("expr", ["", "   ", None, 5])
def test_a_cron_that_is_not_a_string_is_refused(expr):
    with pytest.raises(ValidationError, match="cron= must be a cron expression"):
        CronTrigger(expr)


def test_an_unknown_time_zone_is_refused():
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        CronTrigger("0 2 * * *", "Mars/Olympus")


def test_a_schedule_needs_exactly_one_of_every_or_cron():
    with pytest.raises(ValidationError, match="exactly one of every="):
        make_trigger()
    with pytest.raises(ValidationError, match="exactly one of every="):
        make_trigger(every=60, cron="* * * * *")
    with pytest.raises(ValidationError, match="tz= applies to cron="):
        make_trigger(every=60, tz="Europe/Paris")


def test_cron_without_its_extra_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cronsim", None)
    with pytest.raises(ConfigurationError, match=r"conveyor-jobs\[cron\]"):
        CronTrigger("0 2 * * *")


# -- the spec round trip ------------------------------------------------------------------------

@pytest.mark.parametrize("trigger", [IntervalTrigger(45), CronTrigger("0 2 * * 1-5",
                                                                       "Europe/Paris")])
def test_a_trigger_survives_its_json_spec(trigger):
    import json

    again = Trigger.from_spec(json.loads(json.dumps(trigger.to_spec())))
    assert again == trigger and type(again) is type(trigger)
    assert again.next_after(1_800_000_000) == trigger.next_after(1_800_000_000)


def test_an_unknown_trigger_spec_is_refused():
    with pytest.raises(ValidationError, match="unknown trigger spec"):
        Trigger.from_spec({"type": "lunar"})
