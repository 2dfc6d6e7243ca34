"""How the client commands print what the API answered: aligned tables, `key  value`
lines for one record, or JSON (`-o json`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

TASK_COLUMNS = ["id", "status", "priority", "kind", "queue", "attempts", "created_at", "title"]
ATTEMPT_COLUMNS = ["attempt", "outcome", "worker_id", "started_at", "duration_seconds", "error"]
SCHEDULE_COLUMNS = ["id", "name", "cron", "timezone", "paused", "next_run_at", "last_run_at"]
QUEUE_COLUMNS = ["name", "paused", "queued", "running", "oldest_ready_seconds"]
KIND_COLUMNS = ["name", "queue", "workers", "builtin", "description"]
WORKER_COLUMNS = ["id", "state", "running", "concurrency", "queues", "version", "last_seen_at"]


def plain(value: Any) -> Any:
    """`value` as JSON can hold it: records as objects, times in ISO 8601."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Exception):
        return str(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def cell(value: Any) -> str:
    """One value in a table: `-` for none, times to the second, JSON for the rest."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def table(rows: Iterable[Any], columns: Sequence[str]) -> str:
    """Records as aligned columns, a header first."""
    cells = [[cell(getattr(row, c, None)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [[c.upper() for c in columns], *cells]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def show(output: str, value: Any, columns: Sequence[str] | None = None) -> None:
    """Print a record or a list of them, as JSON or as text."""
    if output == "json":
        print(json.dumps(plain(value), indent=2))
    elif isinstance(value, list):
        print(table(value, columns or []))
    else:
        fields = plain(value)
        width = max(len(k) for k in fields)
        for key, item in fields.items():
            print(f"{key.ljust(width)}  {cell(item)}")
