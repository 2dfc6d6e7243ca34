"""When a schedule is due: cron expressions in a time zone, read by cronsim, and the
plan of one firing pass (which due times get a task, and when the schedule is due next).

Pure functions of their arguments: the scheduler passes PostgreSQL's clock, so every
replica agrees on what is due whatever its own clock says.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from services.core.domain import Missed


class BadSchedule(ValueError):
    """A cron expression or time zone that cannot be read."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (Europe/Berlin, UTC); BadSchedule for another name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadSchedule(f"unknown time zone {name!r}: give an IANA name, such as UTC") from None


def check(expression: str, timezone: str) -> None:
    """BadSchedule unless `expression` is a cron expression (five fields, or six with the
    seconds first) that is due at some time, in the time zone `timezone`."""
    if not due_after(expression, timezone, datetime.now(UTC), 1):
        raise BadSchedule("never due: no date matches every field")


def due_after(expression: str, timezone: str, moment: datetime, count: int) -> list[datetime]:
    """The `count` due times strictly after `moment`, in UTC (the rule: `_walk`)."""
    try:
        return list(itertools.islice(_after(expression, zone(timezone), moment), count))
    except CronSimError as error:
        raise BadSchedule(f"not a cron expression: {error}") from None


def due_before(expression: str, timezone: str, moment: datetime) -> datetime:
    """The last due time strictly before `moment`, in UTC.

    cronsim walks back on the wall clock: from the second pass of a repeated hour it
    misses the due times that ran in the first pass, so its answer is walked forward.
    """
    where = zone(timezone)
    backward = _walk(expression, where, moment, reverse=True)
    last = next(itertools.dropwhile(lambda due: due >= moment, backward))
    for due in _after(expression, where, last):
        if due >= moment:
            break
        last = due
    return last


def _after(expression: str, where: ZoneInfo, moment: datetime) -> Iterator[datetime]:
    """The due times strictly after `moment`, in UTC, in order. cronsim starts from
    `moment`'s wall time, which in the second pass of a repeated hour is behind it."""
    return itertools.dropwhile(lambda due: due <= moment, _walk(expression, where, moment))


def _walk(
    expression: str, where: ZoneInfo, moment: datetime, *, reverse: bool = False
) -> Iterator[datetime]:
    """Due times in UTC, in order, from about `moment` on (or back, with `reverse`).

    Five fields follow cronsim (after Debian cron). When the minute and the hour are
    fixed (`30 2 * * *`), the wall clock: a time skipped by a daylight-saving change is
    due once right after it, a repeated one once, in its first pass. When either starts
    with `*` (`*/15 * * * *`, `0 * * * *`), real time: each instant whose wall time
    matches, none in a skipped hour and both passes of a repeated one.
    Six fields follow the same rule: they are due at the seconds of their first field
    within each minute their other five fields are due.
    """
    fields = expression.split()
    if len(fields) != 6:
        local = moment.astimezone(where)
        return (due.astimezone(UTC) for due in CronSim(expression, local, reverse=reverse))
    seconds = _seconds(fields[0])
    seconds = seconds[::-1] if reverse else seconds
    margin = timedelta(minutes=1 if reverse else -1)  # the minute `moment` lies in comes too
    minutes = _walk(" ".join(fields[1:]), where, moment + margin, reverse=reverse)
    return (minute + timedelta(seconds=second) for minute in minutes for second in seconds)


def _seconds(field: str) -> list[int]:
    """The seconds of a minute that a cron seconds field names, in order, read by cronsim."""
    minute = datetime(2000, 1, 1, tzinfo=UTC)
    ticks = CronSim(f"{field} * * * * *", minute - timedelta(seconds=1))
    within = itertools.takewhile(lambda due: due < minute + timedelta(minutes=1), ticks)
    return [int((due - minute).total_seconds()) for due in within]


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass does for a schedule: a task for each of `fire` (its due times, in
    order), `missed` due times dropped, and the schedule due next at `next_run_at`."""

    fire: list[datetime]
    missed: int
    next_run_at: datetime


def plan(
    expression: str,
    timezone: str,
    next_run_at: datetime,
    now: datetime,
    *,
    missed: Missed,
    grace: timedelta,
    most: int,
) -> Plan:
    """The pass at `now` of a schedule due at `next_run_at` (<= now).

    Due times at most `grace` old each get a task, at most `most` of them (the rest are
    left to the next pass). Older ones were missed, while no scheduler ran: with
    Missed.SKIP they are dropped; with Missed.RUN_ONCE the latest of them gets one task,
    unless a due time within the grace runs anyway.
    """
    late = now - grace
    on_time: list[datetime] = []
    missed_times: list[datetime] = []  # at most the latest missed, for RUN_ONCE
    count_missed = 0
    if next_run_at >= late:
        on_time.append(next_run_at)
        start = next_run_at
    else:
        latest_missed = due_before(expression, timezone, late + timedelta(microseconds=1))
        missed_times.append(latest_missed)
        count_missed = _count_between(expression, timezone, next_run_at, latest_missed)
        start = latest_missed
    upcoming = due_after(expression, timezone, start, most + 1)
    on_time += [due for due in upcoming if due <= now]
    later = [due for due in upcoming if due > now]
    fire = on_time[:most]
    # `upcoming` holds most + 1 times: either one of them is later than now, or more than
    # `most` are on time and the next pass goes on from the first one not fired.
    following = on_time[most] if len(on_time) > most else later[0]
    if not fire and missed is Missed.RUN_ONCE and missed_times:
        fire, count_missed = missed_times, count_missed - 1
    return Plan(fire, count_missed, following)


_COUNT_LIMIT = 100


def _count_between(expression: str, timezone: str, first: datetime, last: datetime) -> int:
    """How many due times lie from `first` to `last`, both due times; at most 100 are
    counted (the figure feeds a metric; counting is a walk, run in a pass that holds the
    schedule's row)."""
    count = 1
    for due in _after(expression, zone(timezone), first):
        if due > last or count >= _COUNT_LIMIT:
            break
        count += 1
    return count
