"""The pure domain: statuses, transitions, priorities, backoff."""

from __future__ import annotations

import pytest

from services.core.domain import TERMINAL, Priority, Status, can_move, retry_delay


def test_terminal_statuses_move_only_to_a_rerun() -> None:
    for source in TERMINAL:
        allowed = {target for target in Status if can_move(source, target)}
        assert allowed == (set() if source is Status.COMPLETED else {Status.PENDING})


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (Status.NEW, Status.PENDING),
        (Status.NEW, Status.IN_PROGRESS),
        (Status.PENDING, Status.CANCELLED),
        (Status.IN_PROGRESS, Status.PENDING),
        (Status.IN_PROGRESS, Status.COMPLETED),
    ],
)
def test_allowed_moves(source: Status, target: Status) -> None:
    assert can_move(source, target)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (Status.PENDING, Status.NEW),
        (Status.PENDING, Status.COMPLETED),
        (Status.NEW, Status.FAILED),
        (Status.IN_PROGRESS, Status.NEW),
    ],
)
def test_forbidden_moves(source: Status, target: Status) -> None:
    assert not can_move(source, target)


def test_priority_ranks_order_high_first() -> None:
    ranks = sorted(Priority, key=lambda p: p.rank, reverse=True)
    assert ranks == [Priority.HIGH, Priority.MEDIUM, Priority.LOW]
    assert all(Priority.from_rank(p.rank) is p for p in Priority)


def test_retry_delay_grows_exponentially_then_caps() -> None:
    ceilings = [retry_delay(attempt, 1.0, 30.0, jitter=1.0) for attempt in range(1, 8)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_retry_delay_jitter_spans_the_upper_half() -> None:
    assert retry_delay(3, 1.0, 30.0, jitter=0.0) == 2.0
    assert retry_delay(3, 1.0, 30.0, jitter=0.5) == 3.0
