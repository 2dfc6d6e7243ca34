"""Conveyor's Python client.

    from conveyor_client import Client

    with Client("https://conveyor.example.com", key="cvk_...") as conveyor:
        task = conveyor.submit("resize", kind="thumbnail", payload={"url": "s3://..."})
        done = conveyor.wait(task.id, timeout=60)

`AsyncClient` has the same calls for asyncio. Errors are `conveyor_client.errors`
classes, one per problem type the API answers. `conveyorctl` (`conveyor_client.cli`) is
the command line built on it.

The names below are imported when first used, not with the package: the command line's
`--help` then answers without loading httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
# Each public name and the module that defines it.
_HOMES = {
    "Retry": "conveyor_client._calls",
    "AsyncClient": "conveyor_client.client",
    "Client": "conveyor_client.client",
    "ConveyorError": "conveyor_client.errors",
    "ProblemError": "conveyor_client.errors",
    "Unreachable": "conveyor_client.errors",
    **{
        name: "conveyor_client.models"
        for name in (
            "Attempt",
            "AttemptLogs",
            "Caller",
            "Changed",
            "Kind",
            "KindVersion",
            "LogLine",
            "Queue",
            "Schedule",
            "Submitted",
            "Task",
            "Worker",
        )
    },
}
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


def __getattr__(name: str) -> Any:
    """A public name, imported from its module the first time it is asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'conveyor_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
