"""Listing cursors: opaque, round-tripping, and refused when forged."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.core.db.store import InvalidCursor, decode_cursor, encode_cursor
from services.core.domain import Priority, Status, Task


def _task() -> Task:
    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    return Task(
        uuid.uuid4(),
        "t",
        "",
        Priority.LOW,
        Status.NEW,
        "demo",
        "default",
        {},
        None,
        None,
        0,
        3,
        None,
        now,
        now,
        None,
        None,
        None,
        False,
    )


def test_cursor_round_trips() -> None:
    task = _task()
    assert decode_cursor(encode_cursor(task)) == (task.created_at, task.id)


@pytest.mark.parametrize("forged", ["", "abc", "!!!", "MjAyNnx4", "bm90fGF8dXVpZA"])
def test_forged_cursors_are_refused(forged: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(forged)
