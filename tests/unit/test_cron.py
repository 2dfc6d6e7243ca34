"""The plan of a schedule's firing pass: which due times make a task, and what comes next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
