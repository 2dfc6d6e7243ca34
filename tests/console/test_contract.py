"""The console holds to the server's contract without a browser: it lists no status or
priority of its own (it reads them from the API's OpenAPI document when it starts), and the
statuses it does name, for finished and re-runnable tasks, are the domain's."""

from __future__ import annotations

import json
import re

from services.api.routes.console import FILES
from services.core.domain import TERMINAL, Priority, Status, can_move
from tests.support.contract import schema

SCRIPT = (FILES / "static" / "app.js").read_text()


def _constant(name: str) -> list[str]:
    """The list the script declares as `const NAME = [...]`."""
    found = re.search(rf"^const {name} = (\[[^\]]*\]);$", SCRIPT, re.MULTILINE)
    assert found, f"app.js declares no {name}"
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def _literals(script: str) -> set[str]:
    return set(re.findall(r"\"([A-Z][A-Z_]*)\"", script))


def test_the_console_names_no_priority_and_no_list_of_statuses() -> None:
    assert not _literals(SCRIPT) & set(Priority)
    rest = re.sub(r"^const (FINISHED|RERUNNABLE) = .*$", "", SCRIPT, flags=re.MULTILINE)
    assert not _literals(rest) & set(Status)


def test_the_statuses_it_names_are_the_domains_finished_and_rerunnable_ones() -> None:
    assert set(_constant("FINISHED")) == TERMINAL
    rerunnable = {status for status in TERMINAL if can_move(status, Status.PENDING)}
    assert set(_constant("RERUNNABLE")) == rerunnable


def test_what_it_reads_from_the_document_is_there() -> None:
    for read in (
        "schemas.Status.enum",
        "schemas.Priority.enum",
        "schemas.TaskTemplate.properties.priority.default",
        "schemas.KeyCreate.properties.scopes.items.enum",
    ):
        assert read in SCRIPT
    assert schema("Status")["enum"] == list(Status)
    assert schema("TaskTemplate")["properties"]["priority"]["default"] in set(Priority)
    assert schema("KeyCreate")["properties"]["scopes"]["items"]["enum"]


def test_priorities_are_listed_lowest_first_as_the_console_expects() -> None:
    # It reverses the document's list to show the highest first.
    ranks = [Priority(name).rank for name in schema("Priority")["enum"]]
    assert ranks == sorted(ranks)
