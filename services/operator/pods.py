"""Reading pods: does a policy's selector match, and is the worker in it gone. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any


def matches(selector: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """Kubernetes label-selector semantics: matchLabels and matchExpressions, all must hold."""
    labels = pod.get("metadata", {}).get("labels") or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    return all(_holds(expression, labels) for expression in selector.get("matchExpressions") or [])


def _holds(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    return {
        "In": lambda: labels.get(key) in values,
        "NotIn": lambda: labels.get(key) not in values,
        "Exists": lambda: key in labels,
        "DoesNotExist": lambda: key not in labels,
    }[operator]()


def gone_since(
    event_type: str | None, pod: Mapping[str, Any]
) -> tuple[str | None, datetime | None]:
    """Whether the worker in `pod` is gone, why, and since when (None: everything it held).

    A pod being deleted gracefully is not gone yet: its worker is draining, and hands back
    what it cannot finish itself. It is gone once the object is.
    """
    if event_type == "DELETED":
        return "deleted", None
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return ("evicted" if status.get("reason") == "Evicted" else "failed"), None
    for container in status.get("containerStatuses") or []:
        for state in (container.get("state") or {}, container.get("lastState") or {}):
            terminated = state.get("terminated") or {}
            if terminated.get("reason") == "OOMKilled":
                finished = terminated.get("finishedAt")
                return "OOM-killed", _parse(finished) if finished else None
    return None, None


def _parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
