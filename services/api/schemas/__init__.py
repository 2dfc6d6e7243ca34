"""The shapes of API.md, as pydantic models: what clients send and what they get back.
Each field says what it holds (its description), and the OpenAPI document is made from
them; a task's own fields are described once, on the domain's Task."""

from services.api.schemas.batches import (
    BATCH_LIMIT,
    BATCH_PROBLEMS,
    BatchCreate,
    BatchItem,
    BatchOut,
    BatchTask,
)
from services.api.schemas.common import TIMES, Instant, Text
from services.api.schemas.keys import KeyCreate, KeyCreated, KeyOut, KeyPage, TenantScope, WhoAmI
from services.api.schemas.kinds import KindOut, KindPage, KindVersionOut
from services.api.schemas.payloads import PAYLOAD_LIMIT, Payload, payload_problem
from services.api.schemas.problem import FieldProblem, Problem
from services.api.schemas.queues import (
    MinuteOut,
    OverviewOut,
    QueueActivityOut,
    QueueOut,
    QueuePage,
)
from services.api.schemas.schedules import (
    CRON,
    SCHEDULE_NAME,
    ScheduleCreate,
    ScheduledTask,
    ScheduleOut,
    SchedulePage,
)
from services.api.schemas.tasks import (
    AttemptLogsOut,
    AttemptOut,
    AttemptPage,
    BulkOut,
    TaskCreate,
    TaskPage,
    TaskSelection,
    TaskStatusOut,
    TaskTemplate,
    TraceOut,
)
from services.api.schemas.workers import WorkerOut, WorkerPage

__all__ = [
    "BATCH_LIMIT",
    "BATCH_PROBLEMS",
    "CRON",
    "PAYLOAD_LIMIT",
    "SCHEDULE_NAME",
    "TIMES",
    "AttemptLogsOut",
    "AttemptOut",
    "AttemptPage",
    "BatchCreate",
    "BatchItem",
    "BatchOut",
    "BatchTask",
    "BulkOut",
    "FieldProblem",
    "Instant",
    "KeyCreate",
    "KeyCreated",
    "KeyOut",
    "KeyPage",
    "KindOut",
    "KindPage",
    "KindVersionOut",
    "MinuteOut",
    "OverviewOut",
    "Payload",
    "Problem",
    "QueueActivityOut",
    "QueueOut",
    "QueuePage",
    "ScheduleCreate",
    "ScheduleOut",
    "SchedulePage",
    "ScheduledTask",
    "TaskCreate",
    "TaskPage",
    "TaskSelection",
    "TaskStatusOut",
    "TaskTemplate",
    "TenantScope",
    "Text",
    "TraceOut",
    "WhoAmI",
    "WorkerOut",
    "WorkerPage",
    "payload_problem",
]
