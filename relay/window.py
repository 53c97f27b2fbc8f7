"""Posting windows (pure): the hours and days an account posts, on the wall clock of a time
zone. A window edge is read as the wall clock reads it: on the day the clocks go forward, an
edge in the skipped hour (02:30 in Europe/Paris) is passed at 03:00, the first minute the
clock shows a later time; on the day they go back, an edge in the repeated hour is passed
the first time the clock shows it, and not again during the repeat."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
END_OF_DAY = time(23, 59, 59, 999999)  # "24:00": the window runs to midnight


@dataclass(frozen=True)
class Window:
    start: time
    end: time  # END_OF_DAY for 24:00; before start for a window across midnight
    days: frozenset[int]  # weekdays the window opens on (0 is Monday)
    zone: tzinfo
    zone_name: str  # as written, or the system's
    text: str  # "08:00-21:30 mon-fri Europe/Paris", for messages

    @property
    def overnight(self) -> bool:
        return self.end < self.start


def _after(local: datetime, edge: time) -> bool:
    """Whether the wall clock has passed edge on local's day (see the module's note)."""
    if edge == END_OF_DAY:
        return False
    if local.time().replace(tzinfo=None) >= edge:
        return True
    # the second pass of a repeated hour comes after every time of its first pass
    return local.fold == 1 and _repeated(local.date(), edge, local.tzinfo)


def _repeated(day: date, edge: time, zone: tzinfo | None) -> bool:
    first = datetime.combine(day, edge, tzinfo=zone)
    return first.utcoffset() != first.replace(fold=1).utcoffset()


def is_open(window: Window, now: datetime) -> bool:
    local = now.astimezone(window.zone)
    day = local.weekday()
    if not window.overnight:
        return day in window.days and _after(local, window.start) and not _after(local, window.end)
    # across midnight: opened today, or opened yesterday and not yet closed
    if day in window.days and _after(local, window.start):
        return True
    return (day - 1) % 7 in window.days and not _after(local, window.end)


def next_open(window: Window, now: datetime) -> datetime:
    """The instant the window next opens after now (now itself when it is open): the first
    instant on or after each opening day's start that the wall clock reads as past it."""
    if is_open(window, now):
        return now
    local_day = now.astimezone(window.zone).date()
    for offset in range(0, 9):
        day = local_day + timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        found = _first_after(window, day, now)
        if found is not None:
            return found
    raise ValueError(f"the window {window.text} never opens")  # days is never empty


def _first_after(window: Window, day: date, now: datetime) -> datetime | None:
    """The instant the window's start is passed on day, if it is after now."""
    start = datetime.combine(day, window.start, tzinfo=window.zone)
    instant = start.astimezone(UTC)
    if instant.astimezone(window.zone).replace(tzinfo=None) != start.replace(tzinfo=None):
        # the start is in the hour skipped that day: the window opens at the end of the gap,
        # the first minute whose wall clock is past the start
        earliest = start.replace(fold=1).astimezone(UTC)
        instant = earliest
        while not _after(instant.astimezone(window.zone), window.start):
            instant += timedelta(minutes=1)
    if instant <= now or not is_open(window, instant):
        return None
    return instant


def describe_next(window: Window, now: datetime) -> str:
    """'opens Mon 2026-11-30 08:00 CET', for status, preview and the run's pacing line."""
    when = next_open(window, now).astimezone(window.zone)
    return f"opens {when:%a %Y-%m-%d %H:%M %Z}"


def parse_hours(value: str) -> tuple[time, time] | None:
    """'08:00-21:30' (24:00 allowed as an end; an end before the start runs across midnight)."""
    parts = value.replace("–", "-").split("-")
    if len(parts) != 2:
        return None
    edges = [_clock(part.strip()) for part in parts]
    if edges[0] is None or edges[1] is None or edges[0] == END_OF_DAY or edges[0] == edges[1]:
        return None
    return edges[0], edges[1]


def _clock(value: str) -> time | None:
    hours, _, minutes = value.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2 and 1 <= len(hours) <= 2):
        return None
    h, m = int(hours), int(minutes)
    if (h, m) == (24, 0):
        return END_OF_DAY
    if h > 23 or m > 59:
        return None
    return time(h, m)


def system_zone() -> tuple[tzinfo, str]:
    """The system's time zone, by name where the system says it (TZ, /etc/localtime,
    /etc/timezone), so daylight saving is followed; else the current fixed offset."""
    from zoneinfo import ZoneInfo

    candidates = [os.environ.get("TZ", "").lstrip(":")]
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name), name
            except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
                continue
    fixed = datetime.now(UTC).astimezone().tzinfo or UTC
    return fixed, str(fixed)
