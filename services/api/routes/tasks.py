"""/api/v1/tasks: submit, list, read, cancel."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from pydantic import ValidationError

from services.api.auth import BatchSubmitter, Canceller, Reader, Submitter
from services.api.deps import ServicesDep, StoreDep
from services.api.errors import Refused, invalid_body, refused_body
from services.api.problems import ProblemType
from services.api.responses import errors, json_response, page_response, task_json
from services.api.schemas import (
    BATCH_PROBLEMS,
    TIMES,
    AttemptLogsOut,
    AttemptOut,
    AttemptPage,
    BatchCreate,
    BatchItem,
    BatchOut,
    BatchTask,
    BulkOut,
    Instant,
    Problem,
    TaskCreate,
    TaskPage,
    TaskSelection,
    TaskStatusOut,
    TaskTemplate,
    payload_problem,
)
from services.api.waiting import POLL_SECONDS, TenantWaitersFull, TooManyWaiters, Waiter
from services.core.db.store import InvalidCursor, encode_cursor
from services.core.domain import (
    DEFAULT_QUEUE,
    NO_NUL,
    QUEUE_NAME,
    NewTask,
    Page,
    Priority,
    Status,
    Submission,
    Task,
    TaskFilter,
)
from services.core.errors import IdempotencyConflict, StoreUnavailable
from services.core.telemetry.tracing import current_carrier, db_span

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])
# A page's JSON stays under this, however large its tasks' payloads.
PAGE_BYTES = 1024 * 1024
# {"items":[...],"next_cursor":"..."} around the items, with room for any cursor.
_ENVELOPE_BYTES = 256
# A refused task of a batch lists so many errors at most, each text cut at so many
# characters: the answer stays a small multiple of the request, whatever is sent.
_ITEM_ERRORS = 3
_ITEM_TEXT = 160


def check_submission(
    body: TaskTemplate, services: ServicesDep, at: tuple[str | int, ...] = ("body",)
) -> NewTask:
    """The task to store, or the refusal of what the models cannot see: a kind no worker
    registered, an unknown queue, a payload PostgreSQL cannot keep, too deep or too large,
    or one its kind's schema refuses; `at` is where the body is in the request. The
    catalog is ready for the body's kind (`KindCatalog.ready`)."""
    kind = services.kinds.get(body.kind)
    if kind is None and not services.settings.accept_unregistered_kinds:
        known = ", ".join(services.kinds.names())
        detail = f"unknown kind {body.kind!r}: no worker has registered it (known: {known})"
        raise Refused(422, ProblemType.VALIDATION, detail, loc=[*at, "kind"])
    queue = body.queue or (kind.queue if kind is not None else DEFAULT_QUEUE)
    known_queue(queue, services, (*at, "queue"))
    problem = payload_problem(body.payload, services.settings.max_payload_depth)
    if problem is not None:
        problem_type = ProblemType.TOO_LARGE if problem[0] == 413 else ProblemType.VALIDATION
        raise Refused(problem[0], problem_type, problem[1], loc=[*at, "payload"])
    refusal = kind.refusal(body.payload) if kind is not None else None
    if refusal is not None:
        where, why = refusal
        detail = f"{why} (the payload schema of kind {body.kind!r})"
        raise Refused(422, ProblemType.VALIDATION, detail, loc=[*at, "payload", *where])
    return body.to_new_task(queue)


def known_queue(queue: str | None, services: ServicesDep, at: tuple[str | int, ...]) -> None:
    """422 naming `at` for a queue the installation does not have."""
    if queue is not None and queue not in services.queues:
        known = ", ".join(sorted(services.queues))
        raise Refused(
            422, ProblemType.VALIDATION, f"unknown queue {queue!r}; known: {known}", loc=list(at)
        )


def _bounded(page: Page) -> Response:
    """`page` as JSON of at most PAGE_BYTES (but never without its first item): items past
    the bound are left for the next page, whose cursor follows the last item kept."""
    pieces: list[bytes] = []
    size, cursor = _ENVELOPE_BYTES, page.next_cursor
    for task in page.items:
        piece = task_json(task)
        size += len(piece) + 1
        if pieces and size > PAGE_BYTES:
            cursor = encode_cursor(page.items[len(pieces) - 1])
            break
        pieces.append(piece)
    return page_response(pieces, cursor)


@router.post(
    "",
    status_code=201,
    response_model=Task,
    responses={
        200: {"model": Task, "description": "A repeat of an earlier submission"},
        **errors(409, 413, 422),
    },
)
async def submit_task(
    body: TaskCreate,
    services: ServicesDep,
    principal: Submitter,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> Response:
    """Store a task; it is handed to a worker once the broker has confirmed it."""
    await services.kinds.ready((body.kind,))
    submission = Submission(
        check_submission(body, services),
        principal.tenant,
        idempotency_key,
        body.request_hash() if idempotency_key else None,
        current_carrier(),  # the request's span: the root of the task's trace
    )
    with db_span("INSERT", "create task"):
        task, created = await services.intake.submit(submission)
    return json_response(task, 201 if created else 200, Location=f"{router.prefix}/{task.id}")


@router.post(":batch", response_model=BatchOut, responses=errors(413, 422))
async def submit_batch(
    body: BatchCreate, services: ServicesDep, principal: BatchSubmitter
) -> Response:
    """Store up to 1,000 tasks in one statement; answer each one's outcome in order.

    Each task is checked on its own: one that is refused (as a single submit would be)
    refuses only itself. The others are stored all together or, when PostgreSQL fails,
    none of them (503). The rate limit counts each task as a request, and lets a batch
    larger than its window through once the key's window is whole.
    """
    await services.kinds.ready({raw["kind"] for raw in body.tasks if _names_kind(raw)})
    items = [_checked(raw, ("body", "tasks", n), services) for n, raw in enumerate(body.tasks)]
    accepted = [(n, item) for n, item in enumerate(items) if isinstance(item, tuple)]
    carrier = current_carrier()
    submissions = [_submission(*checked, principal.tenant, carrier) for _, checked in accepted]
    with db_span("INSERT", "create tasks"):
        outcomes = await services.intake.submit_many(submissions)
    for (n, _), outcome in zip(accepted, outcomes, strict=True):
        items[n] = _answer(outcome)
    answers = [item for item in items if isinstance(item, BatchItem)]
    refused = [item for item in answers if item.problem is not None]
    for item in refused[BATCH_PROBLEMS:]:  # answered by its status alone
        item.problem = None
    return json_response(
        BatchOut(
            items=answers,
            **{kind: sum(a.outcome == kind for a in answers) for kind in BatchOut.COUNTED},
            more_problems=max(len(refused) - BATCH_PROBLEMS, 0) or None,
        )
    )


def _checked(
    raw: Any, at: tuple[str | int, ...], services: ServicesDep
) -> tuple[BatchTask, NewTask] | BatchItem:
    """One task of a batch and what to store of it, or its refusal."""
    try:
        task = BatchTask.model_validate(raw)
        return task, check_submission(task, services, at)
    except ValidationError as error:
        return _refused(invalid_body(error.errors(), at))
    except Refused as error:
        return _refused(refused_body(error))


def _names_kind(raw: Any) -> bool:
    return isinstance(raw, dict) and isinstance(raw.get("kind"), str)


def _submission(task: BatchTask, new: NewTask, tenant: str, carrier: dict[str, str]) -> Submission:
    key = task.idempotency_key
    return Submission(new, tenant, key, task.request_hash() if key else None, carrier)


def _answer(outcome: tuple[Task, bool] | IdempotencyConflict) -> BatchItem:
    if isinstance(outcome, IdempotencyConflict):
        return _refused(refused_body(outcome))
    task, created = outcome
    if not created:
        return BatchItem(outcome="repeated", status=200, task=task)
    return BatchItem(outcome="created", status=201, task=task)


def _refused(problem: dict[str, Any]) -> BatchItem:
    """A task's refusal, its problem brief: at most _ITEM_ERRORS errors, texts cut short."""
    errors = problem.get("errors") or []
    more = max(len(errors) - _ITEM_ERRORS, 0) + (problem.get("more_errors") or 0)
    brief = {**problem, "detail": _brief(problem["detail"]), "more_errors": more or None}
    if errors:
        brief["errors"] = [{**e, "msg": _brief(e["msg"])} for e in errors[:_ITEM_ERRORS]]
    return BatchItem(outcome="refused", status=problem["status"], problem=Problem(**brief))


def _brief(text: str) -> str:
    return text if len(text) <= _ITEM_TEXT else text[:_ITEM_TEXT] + "…"


@router.post(":cancel", response_model=BulkOut, responses=errors(422))
async def cancel_matching(
    body: TaskSelection, services: ServicesDep, principal: Canceller
) -> Response:
    """Cancel every task of the caller's that matches the filters: queued ones at once,
    running ones by asking their workers to stop; finished ones stay. Done in batches that
    hold no lock long; a repeat changes nothing."""
    known_queue(body.queue, services, ("body", "queue"))
    cancelled, requested = await services.store.cancel_matching(body.to_filter(principal.tenant))
    return json_response(BulkOut(changed=cancelled, cancel_requested=requested))


@router.post(":retry", response_model=BulkOut, responses=errors(422))
async def rerun_matching(
    body: TaskSelection, services: ServicesDep, principal: Submitter
) -> Response:
    """Run again every FAILED or CANCELLED task of the caller's that matches the filters,
    as POST /api/v1/tasks/{id}:retry does, in batches; a repeat changes nothing."""
    known_queue(body.queue, services, ("body", "queue"))
    changed = await services.store.rerun_matching(body.to_filter(principal.tenant))
    return json_response(BulkOut(changed=changed))


@router.get("", response_model=TaskPage, responses=errors(422))
async def list_tasks(
    services: ServicesDep,
    principal: Reader,
    status: Annotated[list[Status] | None, Query(max_length=len(Status))] = None,
    priority: Annotated[list[Priority] | None, Query(max_length=len(Priority))] = None,
    kind: Annotated[str | None, Query(min_length=1, max_length=100, pattern=NO_NUL)] = None,
    queue: Annotated[str | None, Query(pattern=QUEUE_NAME)] = None,
    created_after: Annotated[Instant | None, Query(description=f"Created after: {TIMES}")] = None,
    created_before: Annotated[Instant | None, Query(description=f"Created before: {TIMES}")] = None,
    title: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=NO_NUL,
            description="Text the title holds, in any case (the newest matches first; "
            "narrow the time range for rare text in a large history)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Tasks newest first; follow `next_cursor` to visit every match once.

    A page holds at most `limit` tasks and at most 1 MiB of JSON: when the tasks are large
    (payloads of up to 64 KiB, and results) it holds fewer, always at least one, and
    `next_cursor` continues after the last one it holds.
    """
    known_queue(queue, services, ("query", "queue"))
    where = TaskFilter(
        frozenset(status or ()),
        frozenset(priority or ()),
        kind,
        queue,
        created_after,
        created_before,
        principal.tenant,
        title,
    )
    try:
        page = await services.store.page(where, limit, cursor)
    except InvalidCursor as error:
        raise Refused(422, ProblemType.VALIDATION, str(error), loc=["query", "cursor"]) from error
    return _bounded(page)


@router.get("/{task_id}", response_model=Task, responses=errors(404, 422))
async def get_task(
    task_id: uuid.UUID,
    services: ServicesDep,
    principal: Reader,
    wait: Annotated[
        float | None,
        Query(
            gt=0, le=60, description="Answer once the task is terminal, or after this many seconds"
        ),
    ] = None,
) -> Response:
    """One task; with `wait`, answered as soon as it is terminal (COMPLETED, FAILED or
    CANCELLED), or after `wait` seconds with its state then. Waiting costs no polling:
    PostgreSQL announces each finished task to every API process."""
    task = await services.store.get(task_id, principal.tenant)
    if wait is None or task.status.is_terminal:
        return json_response(task)
    return json_response(await _until_finished(task, wait, services, principal.tenant))


async def _until_finished(task: Task, wait: float, services: ServicesDep, tenant: str) -> Task:
    settings = services.settings
    # With keys off, every request is the one tenant's: a share would only turn it away.
    percent = settings.wait_tenant_percent if settings.auth_enabled else 100
    try:
        with services.waiters.waiting_for(task.id, tenant, percent) as waiter:
            return await _watch(task, wait, waiter, services, tenant)
    except TenantWaitersFull as error:
        raise Refused(503, ProblemType.TENANT_BUSY, str(error), {"Retry-After": "1"}) from error
    except TooManyWaiters as error:
        raise Refused(503, ProblemType.OVERLOADED, str(error), {"Retry-After": "1"}) from error


async def _watch(
    task: Task, wait: float, waiter: Waiter, services: ServicesDep, tenant: str
) -> Task:
    """The task once terminal, or as it is at the end of the wait. A database blip is
    waited out: a look that fails is tried again every POLL_SECONDS, and only one that
    fails at the end of the wait answers 503 (StoreUnavailable)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    away: StoreUnavailable | None = None  # the last look failed: PostgreSQL is away
    woken: Task | None = None
    while True:
        if woken is not None:  # the finished task, read once for all its waiters
            task, away = woken, None
        else:  # looked at once the place is held: a finish just before is not missed
            try:
                task, away = await services.store.get(task.id, tenant), None
            except StoreUnavailable as error:
                away = error
        if task.status.is_terminal or (left := deadline - loop.time()) <= 0:
            break
        poll = POLL_SECONDS if away is not None else services.waiters.poll_seconds
        # Waiting holds no connection: the tenant's place goes to others.
        async with services.auth.lines.stepped_out(tenant):
            woken = await waiter.woken(min(left, poll or left))
    if away is not None:
        raise away
    return task


@router.get("/{task_id}/status", response_model=TaskStatusOut, responses=errors(404, 422))
async def get_task_status(task_id: uuid.UUID, store: StoreDep, principal: Reader) -> Response:
    """The short form of a task, for polling."""
    return json_response(TaskStatusOut.model_validate(await store.get(task_id, principal.tenant)))


@router.post("/{task_id}:retry", response_model=Task, responses=errors(404, 409, 422))
async def rerun_task(task_id: uuid.UUID, services: ServicesDep, principal: Submitter) -> Response:
    """Run a FAILED or CANCELLED task again: back in its queue with a fresh attempt budget,
    keeping its id, its attempt history (numbers go on) and its trace. 409 from any other
    status."""
    task = await services.store.rerun(task_id, principal.tenant)
    return json_response(task)


@router.get("/{task_id}/attempts", response_model=AttemptPage, responses=errors(404, 422))
async def list_attempts(task_id: uuid.UUID, store: StoreDep, principal: Reader) -> Response:
    """Every attempt of the task, oldest first: who ran it, when, how it ended (completed,
    failed, timed_out, cancelled, lost: its worker died and recovery took the task
    back), and the running one last."""
    attempts = await store.attempts_of(task_id, principal.tenant)
    items = [
        AttemptOut(
            **dataclasses.asdict(a),
            duration_seconds=(a.finished_at - a.started_at).total_seconds()
            if a.finished_at
            else None,
        )
        for a in attempts
    ]
    return json_response(AttemptPage(items=items))


@router.get(
    "/{task_id}/attempts/{attempt}/logs", response_model=AttemptLogsOut, responses=errors(404, 422)
)
async def get_attempt_logs(
    task_id: uuid.UUID,
    attempt: Annotated[int, Path(ge=1, le=2**31 - 1, description="The attempt's number")],
    store: StoreDep,
    principal: Reader,
) -> Response:
    """The last lines the task's handler logged through its context's logger in this
    attempt, oldest first; 404 attempt-not-found for an attempt it has not started."""
    logs = await store.attempt_logs(task_id, attempt, principal.tenant)
    return json_response(AttemptLogsOut.model_validate(dataclasses.asdict(logs)))


@router.delete(
    "/{task_id}",
    response_model=Task,
    responses={
        202: {"model": Task, "description": "Running: its worker was asked to stop"},
        **errors(404, 409, 422),
    },
)
async def cancel_task(task_id: uuid.UUID, store: StoreDep, principal: Canceller) -> Response:
    """Cancel a queued task at once (200), or ask a running one to stop (202)."""
    task = await store.cancel(task_id, principal.tenant)
    status = 200 if task.status is Status.CANCELLED else 202
    return json_response((task), status)
