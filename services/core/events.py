"""Status changes, told once: the store announces every change of status it makes, and
whoever needs to know subscribes.

The counting (conveyor_task_status_changes_total) and the relay's wake-up are
subscribers, wired where each process is put together (services/core/loops/wiring.py),
so no caller of the store counts or kicks on its own. Subscribers run in the announcing
task, after the change is committed: they must be quick and must not raise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.core.domain import Status


@dataclass(frozen=True, slots=True)
class TasksMoved:
    """`count` tasks reached the status `to`. `owed`: they start a new run (submitted, fired
    by a schedule, run again) and nobody publishes their messages at once: the relay owes
    them one, and should look now."""

    to: Status
    count: int
    owed: bool = False


Subscriber = Callable[[TasksMoved], None]


class Events:
    """Where a store announces its status changes, and subscribers hear them."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber` with every change announced from now on."""
        self._subscribers.append(subscriber)

    def moved(self, to: Status, count: int = 1, *, owed: bool = False) -> None:
        """`count` tasks reached `to` (none: nobody is told)."""
        if count:
            event = TasksMoved(to, count, owed)
            for subscriber in self._subscribers:
                subscriber(event)

    def moved_each(self, statuses: Iterable[Status]) -> None:
        """Tasks reached these statuses, one status a task: told once a status."""
        for status, count in Counter(statuses).items():
            self.moved(status, count)
