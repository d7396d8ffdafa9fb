"""Maintenance windows: weekly ranges and cron-like schedules, timezone-aware. Pure.

A window is open at ``now`` when any of its ranges or cron slots holds ``now`` (in the window's
timezone). Weekly ranges read ``DAYS HH:MM-HH:MM``: ``mon-fri 22:00-06:00`` (an end at or before
the start ends the next day), ``sat,sun 00:00-24:00``, ``daily 01:00-03:00``. A cron slot is a
five-field schedule (minute hour day-of-month month day-of-week; ``*``, lists, ranges, ``/step``;
day of week 0-7, Sunday 0 or 7) that opens the window for ``duration``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SEARCH_DAYS = 400
_RANGE_RE = re.compile(r"^\s*(?P<days>[a-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$")
_CRON_LIMITS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CRON_NAMES = ("minute", "hour", "day of month", "month", "day of week")


class WindowSyntaxError(ValueError):
    """A weekly range or cron schedule is malformed (the message says how to write it)."""


@dataclass(frozen=True)
class WeeklyRange:
    """``days`` (0 = Monday) from ``start`` for ``length`` (may run into the next day)."""

    days: frozenset[int]
    start: timedelta
    length: timedelta


@dataclass(frozen=True)
class CronSlot:
    """Start times matching a five-field cron schedule, each open for ``duration``."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    mdays: frozenset[int]
    months: frozenset[int]
    wdays: frozenset[int]  # 0 = Monday, as ``date.weekday()``
    dom_any: bool
    dow_any: bool
    duration: timedelta

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom, dow = day.day in self.mdays, day.weekday() in self.wdays
        if self.dom_any or self.dow_any:
            return dom and dow
        return dom or dow  # cron: both restricted means either


@dataclass(frozen=True)
class Window:
    """A named maintenance window: its timezone, weekly ranges and cron slots."""

    name: str
    tz: ZoneInfo
    ranges: tuple[WeeklyRange, ...] = ()
    slots: tuple[CronSlot, ...] = ()

    def is_open(self, now: datetime) -> bool:
        return any(start <= now < end for start, end in self._intervals(now, now))

    def next_open(self, now: datetime) -> datetime | None:
        """``now`` if open, else when it next opens (``None``: not within ``SEARCH_DAYS``)."""
        if self.is_open(now):
            return now
        upcoming = [start for start, _ in self._intervals(now, now + timedelta(days=SEARCH_DAYS)) if start > now]
        return min(upcoming, default=None)

    def _intervals(self, since: datetime, until: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Every interval that starts from the day before ``since`` (less the longest cron
        duration) to the day of ``until``, in the window's timezone."""
        first = since.astimezone(self.tz).date() - timedelta(days=1)
        last = until.astimezone(self.tz).date()
        longest = max((s.duration for s in self.slots), default=timedelta(0))
        first -= timedelta(days=longest.days + 1) if self.slots else timedelta(0)
        day = first
        while day <= last:
            midnight = datetime.combine(day, time(0), self.tz)
            for r in self.ranges:
                if day.weekday() in r.days:
                    start = _local(day, r.start, self.tz)
                    yield start, start + r.length
            for slot in self.slots:
                if slot.day_matches(day):
                    for hour in slot.hours:
                        for minute in slot.minutes:
                            start = midnight.replace(hour=hour, minute=minute)
                            yield start, start + slot.duration
            day += timedelta(days=1)


def _local(day: date, offset: timedelta, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tz) + offset


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise WindowSyntaxError(f"unknown timezone {name!r}: use an IANA name such as UTC or Europe/Paris") from exc


def parse_range(text: str) -> WeeklyRange:
    """``mon-fri 22:00-06:00`` → a :class:`WeeklyRange`."""
    match = _RANGE_RE.match(text.lower())
    if not match:
        raise WindowSyntaxError(
            f"weekly range {text!r} is not DAYS HH:MM-HH:MM; write e.g. 'mon-fri 22:00-06:00' or 'daily 01:00-03:00'"
        )
    days = _days(match["days"], text)
    start, end = _clock(match["start"], text), _clock(match["end"], text)
    if start >= timedelta(hours=24):
        raise WindowSyntaxError(f"weekly range {text!r} starts at 24:00; start at 00:00-23:59")
    length = end - start if end > start else end + timedelta(hours=24) - start
    return WeeklyRange(days=days, start=start, length=length)


def _days(spec: str, text: str) -> frozenset[int]:
    if spec in ("daily", "any", "all"):
        return frozenset(range(7))
    out: set[int] = set()
    for part in spec.split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(e not in DAYS for e in ends):
            raise WindowSyntaxError(
                f"weekly range {text!r}: {part!r} is not a day or day range; use mon..sun, e.g. 'mon-fri' or 'sat,sun'"
            )
        a, b = DAYS.index(ends[0]), DAYS.index(ends[-1])
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(out)


def _clock(hhmm: str, text: str) -> timedelta:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise WindowSyntaxError(f"weekly range {text!r}: {hhmm} is not a time of day (00:00-24:00)")
    return timedelta(hours=hours, minutes=minutes)


def parse_cron(schedule: str, duration: timedelta) -> CronSlot:
    """``0 22 * * 1-5`` open for ``duration`` → a :class:`CronSlot`."""
    fields = schedule.split()
    if len(fields) != 5:
        raise WindowSyntaxError(
            f"cron schedule {schedule!r} has {len(fields)} fields; write minute hour day-of-month month "
            "day-of-week, e.g. '0 22 * * 1-5'"
        )
    values = [_cron_field(f, lo, hi, name, schedule) for f, (lo, hi), name in zip(fields, _CRON_LIMITS, _CRON_NAMES,
                                                                                  strict=True)]
    if duration <= timedelta(0):
        raise WindowSyntaxError(f"cron window {schedule!r} needs a positive duration such as '2h'")
    wdays = frozenset((d - 1) % 7 for d in values[4])  # cron 0/7 = Sunday → 6; 1 = Monday → 0
    return CronSlot(
        minutes=tuple(sorted(values[0])),
        hours=tuple(sorted(values[1])),
        mdays=frozenset(values[2]),
        months=frozenset(values[3]),
        wdays=wdays,
        dom_any=fields[2] == "*",
        dow_any=fields[4] == "*",
        duration=duration,
    )


def _cron_field(spec: str, lo: int, hi: int, name: str, schedule: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        base, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if base == "*":
                a, b = lo, hi
            elif "-" in base:
                a, b = (int(x) for x in base.split("-", 1))
            else:
                a = b = int(base)
                if step_text:
                    b = hi
        except ValueError as exc:
            raise WindowSyntaxError(
                f"cron schedule {schedule!r}: {name} {part!r} is not a number, range, list or */step"
            ) from exc
        if not (lo <= a <= b <= hi) or step < 1:
            raise WindowSyntaxError(f"cron schedule {schedule!r}: {name} {part!r} is outside {lo}-{hi}")
        out.update(range(a, b + 1, step))
    return out


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str | float) -> timedelta:
    """``90`` (seconds), ``"30m"``, ``"72h"``, ``"2d"`` → a timedelta."""
    if isinstance(value, (int, float)):
        return timedelta(seconds=float(value))
    match = _DURATION_RE.match(value)
    if not match:
        raise WindowSyntaxError(f"duration {value!r} is not a number with a unit: write e.g. 90s, 30m, 72h or 2d")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])
