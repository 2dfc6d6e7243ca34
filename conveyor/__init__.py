"""The stable import for handler authors:

    from conveyor import TaskContext, TaskFailed, kind

    @kind("thumbnail", timeout_seconds=120)
    async def thumbnail(payload: dict, context: TaskContext) -> dict:
        if "url" not in payload:
            raise TaskFailed("payload.url is required", retryable=False)
        ...

What this module names keeps its meaning across releases; the rest of `services` may move.
"""

from services.core.errors import TaskFailed
from services.core.kinds import TaskContext, kind

__all__ = ["TaskContext", "TaskFailed", "kind"]
