"""Maintenance windows: weekly ranges (overnight, timezones), cron slots, next opening, syntax errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.preflight.windows import (
    Window,
    WindowSyntaxError,
    parse_cron,
    parse_duration,
    parse_range,
    zone,
)

PARIS = ZoneInfo("Europe/Paris")


def test_an_overnight_weekly_range_is_open_after_midnight_and_closed_at_noon() -> None:
    w = Window(name="prod", tz=PARIS, ranges=(parse_range("mon-fri 22:00-06:00"),))
    assert w.is_open(datetime(2025, 10, 7, 3, 0, tzinfo=PARIS))  # Tuesday 03:00 (from Monday 22:00)
    assert w.is_open(datetime(2025, 10, 6, 22, 0, tzinfo=PARIS))
    assert not w.is_open(datetime(2025, 10, 7, 12, 0, tzinfo=PARIS))
    assert w.is_open(datetime(2025, 10, 11, 5, 59, tzinfo=PARIS))  # Saturday morning from Friday night
    assert not w.is_open(datetime(2025, 10, 12, 3, 0, tzinfo=PARIS))  # Sunday: no Saturday night range


def test_the_window_is_evaluated_in_its_own_timezone() -> None:
    w = Window(name="prod", tz=PARIS, ranges=(parse_range("daily 22:00-23:00"),))
    assert w.is_open(datetime(2025, 10, 6, 20, 30, tzinfo=UTC))  # 22:30 in Paris (UTC+2)
    assert not w.is_open(datetime(2025, 10, 6, 22, 30, tzinfo=UTC))


def test_next_open_is_the_next_start_or_now_when_open() -> None:
    w = Window(name="prod", tz=UTC, ranges=(parse_range("sat 22:00-06:00"),))
    monday = datetime(2025, 10, 6, 12, 0, tzinfo=UTC)
    assert w.next_open(monday) == datetime(2025, 10, 11, 22, 0, tzinfo=UTC)
    inside = datetime(2025, 10, 12, 1, 0, tzinfo=UTC)
    assert w.next_open(inside) == inside


def test_a_cron_slot_opens_for_its_duration() -> None:
    w = Window(name="prod", tz=UTC, slots=(parse_cron("30 2 * * 1-5", timedelta(hours=2)),))
    assert w.is_open(datetime(2025, 10, 7, 3, 0, tzinfo=UTC))
    assert not w.is_open(datetime(2025, 10, 7, 4, 30, tzinfo=UTC))
    assert not w.is_open(datetime(2025, 10, 11, 3, 0, tzinfo=UTC))  # Saturday
    assert w.next_open(datetime(2025, 10, 10, 12, 0, tzinfo=UTC)) == datetime(2025, 10, 13, 2, 30, tzinfo=UTC)


def test_cron_sunday_is_0_or_7_and_steps_and_lists_work() -> None:
    sun0 = parse_cron("0 */6 * * 0", timedelta(minutes=30))
    sun7 = parse_cron("0 0,6,12,18 * * 7", timedelta(minutes=30))
    assert sun0.wdays == sun7.wdays == frozenset({6})
    assert sun0.hours == sun7.hours == (0, 6, 12, 18)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("mon-fri 22:00", "DAYS HH:MM-HH:MM"),
        ("funday 01:00-02:00", "not a day"),
        ("mon 25:00-26:00", "not a time of day"),
    ],
)
def test_a_malformed_weekly_range_says_how_to_write_it(text: str, needle: str) -> None:
    with pytest.raises(WindowSyntaxError, match=needle):
        parse_range(text)


@pytest.mark.parametrize(("schedule", "needle"), [("0 22 * *", "4 fields"), ("61 * * * *", "outside 0-59"),
                                                   ("x * * * *", "not a number")])
def test_a_malformed_cron_schedule_names_the_field(schedule: str, needle: str) -> None:
    with pytest.raises(WindowSyntaxError, match=needle):
        parse_cron(schedule, timedelta(hours=1))


def test_durations_and_timezones() -> None:
    assert parse_duration("72h") == timedelta(hours=72)
    assert parse_duration(90) == timedelta(seconds=90)
    with pytest.raises(WindowSyntaxError, match="72h"):
        parse_duration("three days")
    with pytest.raises(WindowSyntaxError, match="IANA"):
        zone("Mars/Olympus")
