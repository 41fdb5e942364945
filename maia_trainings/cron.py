"""A schedule's fire times: a cron expression read by APScheduler's CronTrigger, on the wall
clock of an IANA time zone, and the catching up after downtime (coalesced, MISFIRE_GRACE).

Fires are wall-clock times. Each wall time the expression names fires once: a wall time that
occurs twice (clocks going back) fires at its first occurrence; one that does not occur
(clocks going forward) fires at the first instant after the gap. APScheduler 3.11's
CronTrigger, asked in a zone with daylight saving, does neither (2026-10-25 in Europe/Madrid it
returns 02:00 twice, and then, asked for a time after the second, the second again; on
2026-03-29 it returns the missing 02:30 as 03:30 CEST), so the trigger is asked in UTC, which
has no such changes, about the zone's wall clock, and the wall times are placed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

# The "@" shortcuts crontab knows, as the five fields they stand for.
ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
}
# Crontab's day numbers: 0 (and 7) is Sunday. APScheduler 3 counts from Monday, so days are
# handed to it by name.
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# CronTrigger's names of the first four fields, named in errors.
FIELD_NAMES = ("minute", "hour", "day", "month")
# The most fires one catch-up walks through (a minutely schedule down for 69 days): beyond it,
# the fires before the grace window are not counted in missed_fires, and a catch-up stays a
# few seconds of work at most (100,000 steps took 1.8 s, measured 2026-12-02).
MAX_COUNTED = 100_000
_TINY = timedelta(microseconds=1)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValueError saying why for anything else."""
    try:
        if name == "localtime":  # the host's own zone, whichever: not one name for every node
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a folder
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Europe/Madrid)") from None


def _day(text: str, *, end: bool = False) -> int:
    text = text.strip().lower()
    if text in DAY_NAMES:
        # "fri-sun" ends on Sunday, the last day of the week, not the first.
        return 7 if end and text == "sun" else DAY_NAMES.index(text)
    if not text.isdigit() or int(text) > 7:
        raise ValueError(f"{text!r} is not a day of the week (0-7 or sun-sat)")
    return int(text)


def _weekdays(field: str) -> str:
    """Crontab's day-of-week field as APScheduler 3 reads it: the days by name."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, slash, step_text = part.partition("/")
        if slash and (not step_text.isdigit() or int(step_text) == 0):
            raise ValueError(f"the step of {part!r} must be a positive number")
        step = int(step_text) if slash else 1
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = _day(start), _day(end, end=True)
        else:
            first = _day(span)
            last = 6 if slash else first  # "1/2": from Monday to the week's end, every other
        if first > last:
            raise ValueError(f"the range {span!r} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(DAY_NAMES[day] for day in sorted(days))


def wall_trigger(expression: str) -> CronTrigger:
    """The trigger of a five-field expression (or an alias), over a wall clock shown as UTC.

    ValueError with the reason for an expression that is malformed or never fires. When both
    the day of the month and the day of the week are restricted, a day must match both (as
    CronTrigger reads it; classic cron fires when either matches).
    """
    values = ALIASES.get(expression.strip().lower(), expression).split()
    if len(values) != 5:
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day month weekday) or is one of "
            f"{', '.join(ALIASES)}; got {len(values)} fields"
        )
    # Field by field, so that the reason names the field.
    for name, value in zip(FIELD_NAMES, values[:4], strict=False):
        try:
            CronTrigger(**{name: value}, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    try:
        weekdays = _weekdays(values[4])
    except ValueError as exc:
        raise ValueError(f"day_of_week: {exc}") from None
    trigger = CronTrigger.from_crontab(" ".join([*values[:4], weekdays]), timezone=UTC)
    if trigger.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise ValueError("the expression never fires (no such date)")
    return trigger


class Cron:
    """The fire instants of a cron ``expression`` on the wall clock of ``timezone``."""

    def __init__(self, expression: str, timezone: str) -> None:
        self.trigger = wall_trigger(expression)
        self.zone = zone(timezone)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire strictly after ``moment`` (aware), in UTC."""
        wall = moment.astimezone(self.zone).replace(tzinfo=None)
        # Past the end of the clocks' going back, a fire of the hour that repeats is at its
        # first occurrence, before ``moment``: walk on. A few steps; wall times only grow.
        while True:
            found = self.trigger.get_next_fire_time(None, (wall + _TINY).replace(tzinfo=UTC))
            if found is None:
                return None
            wall = found.replace(tzinfo=None)
            instant = self._instant(wall)
            if instant > moment:
                return instant

    def _instant(self, wall: datetime) -> datetime:
        """When ``wall`` happens: its first occurrence, or the end of the gap it falls in."""
        instant = wall.replace(tzinfo=self.zone).astimezone(UTC)  # fold=0: the first
        if instant.astimezone(self.zone).replace(tzinfo=None) == wall:
            return instant
        # Skipped by the clocks: fold=0 places it with the offset before the gap, fold=1 with
        # the one after; the change is between the two, found to the second.
        low, high = sorted(
            int(wall.replace(tzinfo=self.zone, fold=fold).timestamp()) for fold in (0, 1)
        )
        after = datetime.fromtimestamp(high, self.zone).utcoffset()
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle, self.zone).utcoffset() == after:
                high = middle
            else:
                low = middle
        return datetime.fromtimestamp(high, UTC)

    def local(self, instant: datetime) -> datetime:
        """``instant`` on this zone's clock."""
        return instant.astimezone(self.zone)


@dataclass(frozen=True)
class CatchUp:
    """What the fires from a schedule's next fire up to now come to."""

    fire: datetime | None  # the one fire that makes a training; None when all are too old
    fires: int  # the fires counted, that one included
    last: datetime | None  # the latest fire reached (``fire``, unless it is too old)
    next_fire_at: datetime | None  # the first fire after now


def catch_up(cron: Cron, first: datetime, now: datetime, grace: float) -> CatchUp:
    """Coalesce the fires from ``first`` to ``now``: the latest makes a training if it is at
    most ``grace`` seconds old, and every other one is a missed fire.

    At most MAX_COUNTED fires are walked through before the grace window (which alone decides
    the training); the fires skipped to reach it are not counted.
    """
    window = now - timedelta(seconds=grace)
    counted, latest = 0, None
    moment: datetime | None = first
    while moment is not None and moment <= now:
        counted, latest = counted + 1, moment
        if counted == MAX_COUNTED and moment < window:
            moment = cron.next_after(window - _TINY)  # on to the grace window's first fire
            continue
        if counted >= 2 * MAX_COUNTED:
            # A grace window too long to walk through: its fires from here on are not counted,
            # nor is the latest of them found (the one reached makes the training, if recent).
            moment = cron.next_after(now)
            break
        moment = cron.next_after(moment)
    if latest is None:  # not due yet
        return CatchUp(fire=None, fires=0, last=None, next_fire_at=first)
    made = latest if latest >= window else None
    return CatchUp(fire=made, fires=counted, last=latest, next_fire_at=moment)
