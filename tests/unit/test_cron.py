"""The plan of a schedule's firing pass: which due times make a task, and what comes next."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.core import cron
from services.core.domain import Missed

GRACE = timedelta(seconds=60)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def plan(expression: str, next_run_at: str, now: str, **options: object) -> cron.Plan:
    settings: dict[str, object] = {"missed": Missed.SKIP, "grace": GRACE, "most": 100}
    settings.update(options)
    return cron.plan(expression, "UTC", at(next_run_at), at(now), **settings)  # type: ignore[arg-type]


def test_each_due_time_within_the_grace_makes_one_task() -> None:
    result = plan("* * * * * *", "2026-01-01T00:00:00", "2026-01-01T00:00:02.5")
    assert result.fire == [
        at("2026-01-01T00:00:00"),
        at("2026-01-01T00:00:01"),
        at("2026-01-01T00:00:02"),
    ]
    assert (result.missed, result.next_run_at) == (0, at("2026-01-01T00:00:03"))


def test_a_due_time_exactly_now_fires_and_the_next_is_after_it() -> None:
    result = plan("*/10 * * * *", "2026-01-01T00:10:00", "2026-01-01T00:10:00")
    assert result.fire == [at("2026-01-01T00:10:00")]
    assert result.next_run_at == at("2026-01-01T00:20:00")


def test_times_missed_beyond_the_grace_are_skipped() -> None:
    result = plan("0 * * * *", "2026-01-01T00:00:00", "2026-01-01T05:30:00")
    assert result.fire == []
    assert (result.missed, result.next_run_at) == (6, at("2026-01-01T06:00:00"))


def test_run_once_makes_one_task_for_the_latest_missed_time() -> None:
    result = plan("0 * * * *", "2026-01-01T00:00:00", "2026-01-01T05:30:00", missed=Missed.RUN_ONCE)
    assert result.fire == [at("2026-01-01T05:00:00")]
    assert (result.missed, result.next_run_at) == (5, at("2026-01-01T06:00:00"))


def test_run_once_adds_nothing_when_a_due_time_within_the_grace_runs() -> None:
    result = plan("0 * * * *", "2026-01-01T00:00:00", "2026-01-01T05:00:30", missed=Missed.RUN_ONCE)
    assert result.fire == [at("2026-01-01T05:00:00")]
    assert (result.missed, result.next_run_at) == (5, at("2026-01-01T06:00:00"))


def test_a_long_backlog_within_the_grace_goes_on_in_the_next_pass() -> None:
    first = plan("* * * * * *", "2026-01-01T00:00:00", "2026-01-01T00:00:50", most=20)
    assert len(first.fire) == 20 and first.next_run_at == at("2026-01-01T00:00:20")
    second = plan("* * * * * *", "2026-01-01T00:00:20", "2026-01-01T00:00:50", most=20)
    assert second.fire[0] == at("2026-01-01T00:00:20")


def test_due_times_follow_the_time_zone_across_daylight_saving_changes() -> None:
    # Berlin: 2026-03-29 02:00 becomes 03:00; 2026-10-25 03:00 becomes 02:00 again.
    spring = cron.due_after("30 2 * * *", "Europe/Berlin", at("2026-03-28T12:00:00"), 2)
    assert spring == [at("2026-03-29T01:00:00"), at("2026-03-30T00:30:00")]  # 03:00 CEST, 02:30
    autumn = cron.due_after("30 2 * * *", "Europe/Berlin", at("2026-10-24T12:00:00"), 2)
    assert autumn == [at("2026-10-25T00:30:00"), at("2026-10-26T01:30:00")]  # 02:30 once
    nine = cron.due_after("0 9 * * *", "America/New_York", at("2026-01-01T00:00:00"), 1)
    assert nine == [at("2026-01-01T14:00:00")]


@pytest.mark.parametrize(
    ("expression", "zone", "says"),
    [
        ("* * *", "UTC", "not a cron expression"),
        ("61 * * * *", "UTC", "not a cron expression"),
        ("0 0 30 2 *", "UTC", "not a cron expression"),
        ("0 * * * *", "Mars/Olympus", "unknown time zone"),
        ("0 * * * *", "../etc/passwd", "unknown time zone"),
    ],
)
def test_what_cannot_be_read_is_refused_with_a_reason(
    expression: str, zone: str, says: str
) -> None:
    with pytest.raises(cron.BadSchedule, match=says):
        cron.check(expression, zone)


# Daylight-saving changes. Berlin: 2026-03-29 02:00 CET becomes 03:00 CEST (01:00 UTC);
# 2026-10-25 03:00 CEST becomes 02:00 CET again (01:00 UTC). New York: 2026-03-08 02:00
# EST becomes 03:00 EDT (07:00 UTC); 2026-11-01 02:00 EDT becomes 01:00 EST (06:00 UTC).
CHANGE_DAYS = [
    ("Europe/Berlin", "30 2 * * *", "2026-03-28T12:00:00", ["2026-03-29T01:00:00"]),
    ("Europe/Berlin", "30 2 * * *", "2026-10-24T12:00:00", ["2026-10-25T00:30:00"]),
    ("America/New_York", "30 2 * * *", "2026-03-07T12:00:00", ["2026-03-08T07:00:00"]),
    ("America/New_York", "30 1 * * *", "2026-10-31T12:00:00", ["2026-11-01T05:30:00"]),
    ("Europe/Berlin", "0-59 2 * * *", "2026-03-28T12:00:00", ["2026-03-29T01:00:00"]),
]


def _on_change_day(times: list[datetime], zone: str, noon_before: str) -> list[datetime]:
    """The times that fall on the local day after `noon_before` (the change day)."""
    day = (at(noon_before) + timedelta(days=1)).date()
    return [time for time in times if time.astimezone(ZoneInfo(zone)).date() == day]


@pytest.mark.parametrize(("zone", "five", "noon_before", "change_day"), CHANGE_DAYS)
def test_six_fields_are_due_exactly_when_five_fields_are_across_daylight_saving(
    zone: str, five: str, noon_before: str, change_day: list[str]
) -> None:
    six = f"0 {five}"
    expected = cron.due_after(five, zone, at(noon_before), 3)
    assert _on_change_day(expected, zone, noon_before) == [at(due) for due in change_day]
    assert cron.due_after(six, zone, at(noon_before), 3) == expected


@pytest.mark.parametrize(("zone", "five", "noon_before", "change_day"), CHANGE_DAYS)
@pytest.mark.parametrize("seconds", ["", "0 "])
def test_the_due_time_before_a_moment_is_the_one_due_after_the_time_before_it(
    zone: str, five: str, noon_before: str, change_day: list[str], seconds: str
) -> None:
    expression = seconds + five
    times = cron.due_after(expression, zone, at(noon_before), 4)
    for earlier, later in itertools.pairwise(times):
        assert cron.due_before(expression, zone, later) == earlier
        assert cron.due_before(expression, zone, later + timedelta(microseconds=1)) == later


SPRING_EVE, AUTUMN_EVE = "2026-03-28T12:00:00", "2026-10-24T12:00:00"


@pytest.mark.parametrize(  # UTC times of the change day, and (+) of the day after it
    ("expression", "noon_before", "expected"),
    [
        ("15 30 2 * * *", SPRING_EVE, ["01:00:15", "+00:30:15"]),
        ("15 30 2 * * *", AUTUMN_EVE, ["00:30:15", "+01:30:15"]),
        ("*/20 30 2 * * *", SPRING_EVE, ["01:00:00", "01:00:20", "01:00:40", "+00:30:00"]),
        ("*/20 30 2 * * *", AUTUMN_EVE, ["00:30:00", "00:30:20", "00:30:40", "+01:30:00"]),
    ],
)
def test_seconds_of_a_skipped_time_run_right_after_the_change_and_of_a_repeated_one_once(
    expression: str, noon_before: str, expected: list[str]
) -> None:
    change_day = (at(noon_before) + timedelta(days=1)).date().isoformat()
    next_day = (at(noon_before) + timedelta(days=2)).date().isoformat()
    times = [
        at(f"{next_day}T{time[1:]}") if time.startswith("+") else at(f"{change_day}T{time}")
        for time in expected
    ]
    assert cron.due_after(expression, "Europe/Berlin", at(noon_before), len(times)) == times
    assert cron.due_before(expression, "Europe/Berlin", times[-1]) == times[-2]


@pytest.mark.parametrize("change", ["2026-03-29T01:00:00", "2026-10-25T01:00:00"])
@pytest.mark.parametrize(
    ("expression", "step"),
    [
        ("* * * * * *", timedelta(seconds=1)),
        ("*/20 * * * * *", timedelta(seconds=20)),
        ("0 * * * * *", timedelta(minutes=1)),
        ("* * * * *", timedelta(minutes=1)),
        ("0 */15 * * * *", timedelta(minutes=15)),
        ("*/15 * * * *", timedelta(minutes=15)),
        ("0 0 * * * *", timedelta(hours=1)),
        ("0 * * * *", timedelta(hours=1)),
    ],
)
def test_expressions_repeating_every_n_seconds_minutes_or_hours_keep_real_time(
    expression: str, step: timedelta, change: str
) -> None:
    start = at(change) - 3 * step
    times = cron.due_after(expression, "Europe/Berlin", start, 6)
    assert times == [start + n * step for n in range(1, 7)]
    assert cron.due_before(expression, "Europe/Berlin", times[-1]) == times[-2]
    every = cron.plan(
        expression, "Europe/Berlin", times[0], times[-1], missed=Missed.SKIP, grace=6 * step, most=9
    )
    assert every.fire == times and every.next_run_at == times[-1] + step


@pytest.mark.parametrize("expression", ["30 2 * * *", "0 30 2 * * *", "0 0-59 2 * * *"])
def test_in_the_second_pass_of_a_repeated_hour_its_due_times_are_behind(expression: str) -> None:
    second_pass = at("2026-10-25T01:20:00")  # 02:20 CET, after 02:30 CEST ran
    (after,) = cron.due_after(expression, "Europe/Berlin", second_pass, 1)
    assert after.date().isoformat() == "2026-10-26"
    before = cron.due_before(expression, "Europe/Berlin", second_pass)
    assert at("2026-10-25T00:30:00") <= before < at("2026-10-25T01:00:00")


def berlin_plan(expression: str, next_run_at: str, now: str, missed: Missed) -> cron.Plan:
    return cron.plan(
        expression, "Europe/Berlin", at(next_run_at), at(now), missed=missed, grace=GRACE, most=100
    )


@pytest.mark.parametrize("expression", ["30 2 * * *", "0 30 2 * * *"])
def test_a_pass_fires_a_daily_time_once_on_each_change_day(expression: str) -> None:
    # The day before each change, then the change day: 02:30 CET, then 03:00 CEST (skipped
    # 02:30); 02:30 CEST, then not 02:30 CET, but the next day's.
    for due, after in [
        ("2026-03-28T01:30:00", "2026-03-29T01:00:00"),
        ("2026-03-29T01:00:00", "2026-03-30T00:30:00"),
        ("2026-10-24T00:30:00", "2026-10-25T00:30:00"),
        ("2026-10-25T00:30:00", "2026-10-26T01:30:00"),
    ]:
        now = (at(due) + timedelta(seconds=0.5)).isoformat()[:-6]
        result = berlin_plan(expression, due, now, Missed.SKIP)
        assert (result.fire, result.missed, result.next_run_at) == ([at(due)], 0, at(after))


@pytest.mark.parametrize("expression", ["30 2 * * *", "0 30 2 * * *"])
def test_a_time_missed_in_the_first_pass_of_a_repeated_hour_is_missed_in_the_second(
    expression: str,
) -> None:
    # Due 02:30 CEST; the pass comes at 02:25 CET, 55 minutes later: beyond the grace.
    skipped = berlin_plan(expression, "2026-10-25T00:30:00", "2026-10-25T01:25:00", Missed.SKIP)
    assert (skipped.fire, skipped.missed) == ([], 1)
    assert skipped.next_run_at == at("2026-10-26T01:30:00")
    once = berlin_plan(expression, "2026-10-25T00:30:00", "2026-10-25T01:25:00", Missed.RUN_ONCE)
    assert (once.fire, once.missed) == ([at("2026-10-25T00:30:00")], 0)
    assert once.next_run_at == at("2026-10-26T01:30:00")
