"""The OpenAPI document as generated clients need it: named operations, problems under
application/problem+json, the headers that matter, and an example for every shape."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from services.api.problems import ProblemType
from services.core.domain import Priority, Status

# Operation ids where the route function's name would not say it as clients expect.
_NAMED = {
    "submit_batch": "submitTasks",
    "cancel_matching": "cancelTasks",
    "rerun_matching": "retryTasks",
    "rerun_task": "retryTask",
    "list_attempts": "listTaskAttempts",
    "task_trace": "getTaskTrace",
    "whoami": "whoAmI",
    "overview": "getOverview",
    "live": "checkLiveness",
    "ready": "checkReadiness",
}


def operation_id(route: APIRoute) -> str:
    """submitTask, listTasks, ...: the route function's name in camelCase, or its given name."""
    first, *rest = route.name.split("_")
    return _NAMED.get(route.name) or first + "".join(part.title() for part in rest)


_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_HEADERS = {
    "Location": {
        "description": "The new resource's path",
        "schema": {
            "type": "string",
            "example": "/api/v1/tasks/0193e7a4-5b1c-7c3e-9f2a-8d4b6e1f0a2c",
        },
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1, "example": 1},
    },
    "WWW-Authenticate": {
        "description": "How to authenticate: with an API key as a bearer token",
        "schema": {"type": "string", "example": "Bearer"},
    },
}
_RESPONSE_HEADERS = {
    "201": ["Location"],
    "401": ["WWW-Authenticate"],
    "429": ["Retry-After"],
    "503": ["Retry-After"],
}
_BAD_BODY = {
    "description": "The body is not JSON the API can read",
    "content": {"application/problem+json": {"schema": _PROBLEM}},
}


# Kinds come and go with the workers that register them: the document names the built-in
# ones as examples, and GET /api/v1/kinds lists what the installation takes now.
KIND_DESCRIPTION = (
    "A kind that some worker registered (GET /api/v1/kinds lists them with their payload "
    "schemas); the built-in ones are always taken"
)


_NOT_JSON = {
    "description": "The body was not sent as application/json",
    "headers": {
        "Accept-Post": {"description": "The type a body must have", "schema": {"type": "string"}}
    },
}


def document(app: FastAPI, kinds: list[str], queues: list[str]) -> dict[str, Any]:
    """The generated document, finished: the built-in `kinds` as examples, the
    installation's queues, problems and headers."""
    spec = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    schemas = spec["components"]["schemas"]
    for name, schema in schemas.items():
        # What clients send (a template read back may name a kind gone since).
        if name in ("TaskCreate", "TaskTemplate", "BatchTask"):
            schema["properties"]["kind"]["examples"] = kinds
            schema["properties"]["kind"]["description"] = KIND_DESCRIPTION
            schema["properties"]["queue"]["anyOf"][0]["enum"] = queues
        if name == "TaskSelection":
            schema["properties"]["queue"]["anyOf"][0]["enum"] = queues
        if name in EXAMPLES:
            schema["examples"] = [EXAMPLES[name]]
    for path in spec["paths"].values():
        for operation in path.values():
            _finish(operation)
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "queue" and parameter["in"] == "query":
                    parameter["schema"]["anyOf"][0]["enum"] = queues
    for unused in ("HTTPValidationError", "ValidationError"):  # 422s are problems here
        schemas.pop(unused, None)
    return spec


def _finish(operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    if "requestBody" in operation:
        responses.setdefault("400", _BAD_BODY)
        responses.setdefault("415", _NOT_JSON)
    for status, response in responses.items():
        if status >= "400":  # every refusal is a problem document, 422 included
            response["content"] = {"application/problem+json": {"schema": _PROBLEM}}
        for header in _RESPONSE_HEADERS.get(status, []):
            response.setdefault("headers", {})[header] = _HEADERS[header]


_ID = "0193e7a4-5b1c-7c3e-9f2a-8d4b6e1f0a2c"
_TIME = "2026-12-02T09:00:00Z"
_TASK = {
    "id": _ID,
    "title": "Resize image 42",
    "description": "",
    "priority": Priority.HIGH,
    "status": Status.COMPLETED,
    "kind": "echo",
    "queue": "default",
    "payload": {"url": "s3://images/42.png", "width": 320},
    "result": {"url": "s3://images/42.png", "width": 320},
    "error": None,
    "attempts": 1,
    "max_attempts": 3,
    "timeout_seconds": None,
    "created_at": _TIME,
    "updated_at": "2026-12-02T09:00:01Z",
    "scheduled_at": None,
    "started_at": "2026-12-02T09:00:00.010Z",
    "finished_at": "2026-12-02T09:00:01Z",
    "cancel_requested": False,
    "progress": {"fraction": 1.0, "note": "done"},
}
_BODY = {
    "title": "Resize image 42",
    "kind": "echo",
    "priority": Priority.HIGH,
    "payload": {"url": "s3://images/42.png"},
}
_SCHEDULE = {
    "id": _ID,
    "name": "weekday-report",
    "cron": "0 9 * * MON-FRI",
    "timezone": "Europe/Berlin",
    "missed": "skip",
    "paused": False,
    "task": {
        **_BODY,
        "description": "",
        "max_attempts": 3,
        "timeout_seconds": None,
        "queue": "default",
    },
    "next_run_at": "2026-12-03T08:00:00Z",
    "next_runs": ["2026-12-03T09:00:00+01:00", "2026-12-04T09:00:00+01:00"],
    "last_run_at": None,
    "last_task_id": None,
    "created_at": _TIME,
    "updated_at": _TIME,
}
_KEY = {
    "id": "k3v9x0m2q7ab",
    "tenant": "team-a",
    "name": "billing jobs",
    "scopes": ["read", "submit"],
    "created_at": _TIME,
    "revoked_at": None,
}
_QUEUE = {
    "name": "default",
    "paused": False,
    "max_running": None,
    "rate": None,
    "queued": {Priority.LOW: 0, Priority.MEDIUM: 12, Priority.HIGH: 3},
    "running": 16,
    "oldest_ready_seconds": 0.4,
}
_WORKER = {
    "id": "conveyor-worker-7d9c-x2",
    "host": "conveyor-worker-7d9c-x2",
    "version": "0.1.0",
    "queues": ["default", "partner"],
    "kinds": ["demo", "echo", "fail", "noop", "sleep"],
    "concurrency": 16,
    "running": 12,
    "state": "alive",
    "started_at": _TIME,
    "last_seen_at": "2026-12-02T09:41:17.500Z",
}
_RESIZE_SCHEMA = {
    "title": "ResizeIn",
    "type": "object",
    "properties": {
        "url": {"title": "Url", "type": "string"},
        "width": {"title": "Width", "type": "integer", "exclusiveMinimum": 0},
    },
    "required": ["url", "width"],
}
_KIND_VERSION = {
    "digest": "5c1f0e9a7d3b2c4e8f6a1b0d9e7c5a3f",
    "version": "0.1.0",
    "registered_at": _TIME,
    "workers": 3,
    "queue": "images",
    "timeout_seconds": 120.0,
    "payload_schema": _RESIZE_SCHEMA,
}
_KIND = {
    "name": "resize",
    "description": "Resize an image to a width, keeping its proportions.",
    "builtin": False,
    "queue": "images",
    "workers": 3,
    "payload_schema": _RESIZE_SCHEMA,
    "versions": [_KIND_VERSION],
}
_FIELD = {"loc": ["body", "title"], "msg": "String should have at least 1 character"}
_PROBLEM_EXAMPLE = {
    "type": ProblemType.VALIDATION.uri,
    "title": "Unprocessable Content",
    "status": 422,
    "detail": "body.title: String should have at least 1 character",
    "errors": [_FIELD],
}
_LOG_LINE = {"logged_at": _TIME, "level": "INFO", "message": "charging 12.00 EUR"}
EXAMPLES: dict[str, Any] = {
    "Task": _TASK,
    "TaskCreate": _BODY,
    "TaskTemplate": _BODY,
    "ScheduledTask": _SCHEDULE["task"],
    "BatchTask": {**_BODY, "idempotency_key": "order-1234-resize"},
    "BatchCreate": {"tasks": [_BODY, {"title": "Resize image 43", "kind": "echo"}]},
    "BatchItem": {"outcome": "created", "status": 201, "task": _TASK},
    "BatchOut": {
        "items": [{"outcome": "created", "status": 201, "task": _TASK}],
        "created": 1,
        "repeated": 0,
        "refused": 0,
    },
    "TaskPage": {"items": [_TASK], "next_cursor": "MjAyNi0xMi0wMlQwOTowMDowMCswMDowMHww"},
    "TaskStatusOut": {
        "id": _ID,
        "status": Status.IN_PROGRESS,
        "attempts": 1,
        "updated_at": _TIME,
        "cancel_requested": False,
    },
    "TaskSelection": {
        "status": [Status.FAILED],
        "kind": "echo",
        "created_after": "2026-12-01T00:00:00Z",
    },
    "BulkOut": {"changed": 42, "cancel_requested": 3},
    "AttemptOut": {
        "attempt": 1,
        "worker_id": "conveyor-worker-7d9c-x2",
        "started_at": _TIME,
        "finished_at": "2026-12-02T09:00:01Z",
        "outcome": "failed",
        "error": "card declined",
        "error_type": "services.core.errors.TaskFailed",
        "traceback": "Traceback (most recent call last):\n"
        '  File "payments.py", line 12, in charge\n    raise TaskFailed("card declined")\n'
        "services.core.errors.TaskFailed: card declined\n",
        "duration_seconds": 1.0,
    },
    "AttemptPage": {
        "items": [
            {
                "attempt": 1,
                "worker_id": "conveyor-worker-7d9c-x2",
                "started_at": _TIME,
                "finished_at": None,
                "outcome": "running",
                "error": None,
                "error_type": None,
                "traceback": None,
                "duration_seconds": None,
            }
        ]
    },
    "LogLineOut": _LOG_LINE,
    "AttemptLogsOut": {"attempt": 1, "lines": [_LOG_LINE], "dropped": 0},
    "TraceOut": {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "url": "http://jaeger:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736",
    },
    "ScheduleCreate": {
        "name": "weekday-report",
        "cron": "0 9 * * MON-FRI",
        "timezone": "Europe/Berlin",
        "missed": "skip",
        "task": _BODY,
    },
    "ScheduleOut": _SCHEDULE,
    "SchedulePage": {"items": [_SCHEDULE], "next_cursor": None},
    "KeyCreate": {"scopes": ["submit", "read"], "name": "billing jobs"},
    "KeyOut": _KEY,
    "KeyCreated": {**_KEY, "key": "cvk_k3v9x0m2q7ab_" + "x" * 43},
    "KeyPage": {"items": [_KEY]},
    "QueueOut": _QUEUE,
    "QueuePage": {"items": [_QUEUE]},
    "KindVersionOut": _KIND_VERSION,
    "KindOut": _KIND,
    "KindPage": {"items": [_KIND]},
    "WorkerOut": _WORKER,
    "WorkerPage": {"items": [_WORKER]},
    "WhoAmI": {
        "tenant": "team-a",
        "key_id": "k3v9x0m2q7ab",
        "scopes": ["submit", "read"],
        "auth_enabled": True,
    },
    "MinuteOut": {"at": "2026-12-02T09:00:00Z", "started": 120, "completed": 118, "failed": 2},
    "QueueActivityOut": {
        "name": "default",
        "paused": False,
        "ready": {Priority.LOW: 0, Priority.MEDIUM: 12, Priority.HIGH: 3},
        "running": 16,
        "oldest_ready_seconds": 0.4,
        "minutes": [{"at": "2026-12-02T09:00:00Z", "started": 120, "completed": 118, "failed": 2}],
    },
    "OverviewOut": {"queues": [], "window_complete": True},
    "Problem": _PROBLEM_EXAMPLE,
    "FieldProblem": _FIELD,
}
