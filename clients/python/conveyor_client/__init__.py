"""Conveyor's Python client.

    from conveyor_client import Client

    with Client("https://conveyor.example.com", key="cvk_...") as conveyor:
        task = conveyor.submit("resize", kind="thumbnail", payload={"url": "s3://..."})
        done = conveyor.wait(task.id, timeout=60)

`AsyncClient` has the same calls for asyncio. Errors are `conveyor_client.errors`
classes, one per problem type the API answers.
"""

from conveyor_client._calls import Retry
from conveyor_client.client import AsyncClient, Client
from conveyor_client.errors import ConveyorError, ProblemError, Unreachable
from conveyor_client.models import (
    Attempt,
    AttemptLogs,
    Caller,
    Changed,
    Kind,
    KindVersion,
    LogLine,
    Queue,
    Schedule,
    Submitted,
    Task,
    Worker,
)

__version__ = "0.1.0"
__all__ = [
    "AsyncClient",
    "Attempt",
    "AttemptLogs",
    "Caller",
    "Changed",
    "Client",
    "ConveyorError",
    "Kind",
    "KindVersion",
    "LogLine",
    "ProblemError",
    "Queue",
    "Retry",
    "Schedule",
    "Submitted",
    "Task",
    "Unreachable",
    "Worker",
]
