"""The Python client holds to the server's contract: the statuses, priorities and problem
types it knows, and the fields it reads, are the ones the server's OpenAPI document and its
ProblemType enum name. A change on the server fails here until the client follows."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from conveyor_client import errors, models
from conveyor_client._calls import task_body

from services.api.problems import PREFIX, ProblemType
from services.core.domain import TERMINAL
from tests.support.contract import schema


def test_the_client_knows_the_servers_statuses_in_its_order() -> None:
    assert list(models.STATUSES) == schema("Status")["enum"]


def test_the_client_knows_the_servers_priorities_lowest_first() -> None:
    assert list(models.PRIORITIES) == schema("Priority")["enum"]


def test_the_client_submits_the_servers_default_priority() -> None:
    default = inspect.signature(task_body).parameters["priority"].default
    assert default == schema("TaskTemplate")["properties"]["priority"]["default"]


def test_the_client_knows_which_statuses_are_final() -> None:
    assert models.TERMINAL == {status.value for status in TERMINAL}


def test_the_client_has_a_class_for_every_problem_type_and_no_other() -> None:
    assert errors.problem_names() == {problem.value for problem in ProblemType}
    assert errors.PREFIX == PREFIX


@pytest.mark.parametrize("problem", list(ProblemType))
def test_each_problem_type_is_raised_as_its_own_class(problem: ProblemType) -> None:
    raised = errors.problem_of(418, {"type": problem.uri, "detail": "no"})
    assert type(raised).problem == problem.value


@pytest.mark.parametrize(
    ("record", "name"),
    [
        (models.Task, "Task"),
        (models.Attempt, "AttemptOut"),
        (models.AttemptLogs, "AttemptLogsOut"),
        (models.LogLine, "LogLineOut"),
        (models.Submitted, "BatchItem"),
        (models.Changed, "BulkOut"),
        (models.Schedule, "ScheduleOut"),
        (models.Queue, "QueueOut"),
        (models.Worker, "WorkerOut"),
        (models.Caller, "WhoAmI"),
    ],
)
def test_each_record_reads_every_field_the_server_sends(record: type, name: str) -> None:
    fields = {field.name for field in dataclasses.fields(record)}
    assert fields == set(schema(name)["properties"])
