"""A task's statuses and priorities, as the API's document lists them (a test holds them
to the server's); priorities lowest first. `conveyor_client.models` has them too: this
module is theirs alone, so that the command line reads them without making every record
class."""

from __future__ import annotations

from typing import Literal, get_args

Status = Literal["NEW", "PENDING", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]
Priority = Literal["LOW", "MEDIUM", "HIGH"]
STATUSES: tuple[Status, ...] = get_args(Status)
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
# The statuses a task never leaves.
TERMINAL: frozenset[Status] = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
