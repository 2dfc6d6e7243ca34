"""What a failed attempt leaves to debug it, without a server: the exception's class and
traceback (a time-out's: where the handler was), and the handler's log lines, bounded."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.core.domain import Status
from services.core.errors import TaskFailed
from services.core.kinds import TaskContext
from services.core.outputs import (
    AttemptLog,
    OutputLimits,
    clean_tail,
    error_type,
    traceback_text,
)
from services.core.settings import Settings
from services.worker import telemetry
from services.worker.execution import AttemptLogger, Held, run_attempt
from tests.unit.test_execution import claim, job

LIMITS = OutputLimits()
AT = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def _lines(log: AttemptLog) -> list[dict[str, Any]]:
    window = log.window()
    return [] if window is None else json.loads(window.lines)  # type: ignore[no-any-return]


# --- the exception --------------------------------------------------------------------


def _raise_deep() -> None:
    raise ValueError("deep down")


async def test_a_failed_attempt_keeps_the_class_and_the_traceback_of_its_exception() -> None:
    async def handler(payload: dict[str, Any]) -> None:
        _raise_deep()

    outcome = await run_attempt(Held(claim()), job(handler), 30.0, LIMITS)
    assert (outcome.error, outcome.error_type) == ("ValueError: deep down", "ValueError")
    assert outcome.traceback is not None
    assert outcome.traceback.startswith("Traceback (most recent call last):")
    assert "in _raise_deep" in outcome.traceback
    assert outcome.traceback.endswith("ValueError: deep down\n")
    # Its files by import path, not where they are installed; its cause's too.
    assert 'File "tests/unit/test_attempt_details.py", line' in outcome.traceback
    assert str(Path(__file__).parent) not in outcome.traceback


def test_a_traceback_names_the_files_of_its_causes_by_import_path_too() -> None:
    try:
        try:
            _raise_deep()
        except ValueError as cause:
            raise RuntimeError("on top") from cause
    except RuntimeError as error:
        text = traceback_text(error, 16384)
    assert text is not None and "The above exception was the direct cause" in text
    assert text.count('File "tests/unit/test_attempt_details.py"') == 3
    assert str(Path(__file__).parent) not in text


async def test_a_task_failed_keeps_its_traceback_but_the_workers_line_gives_only_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def meant(payload: dict[str, Any]) -> None:
        raise TaskFailed("the card was declined")

    async def unexpected(payload: dict[str, Any]) -> None:
        _raise_deep()

    lines = []
    for handler in (meant, unexpected):
        held = Held(claim())
        outcome = await run_attempt(held, job(handler), 30.0, LIMITS)
        assert outcome.traceback is not None and outcome.deliberate is (handler is meant)
        with caplog.at_level(logging.ERROR, logger="services.worker.telemetry"):
            telemetry.recorded(held.claim, outcome, Status.PENDING)
        (line,) = caplog.records
        caplog.clear()
        assert line.levelno == logging.ERROR and line.task_id == str(held.claim.task.id)  # type: ignore[attr-defined]
        lines.append(line.getMessage())
    assert lines[0] == "attempt 1: fail -> PENDING: the card was declined"
    assert lines[1].startswith("attempt 1: fail -> PENDING: ValueError: deep down\nTraceback")


async def test_a_class_of_a_module_is_named_with_its_module() -> None:
    assert error_type(asyncio.CancelledError()) == "asyncio.exceptions.CancelledError"
    assert error_type(KeyError()) == "KeyError"


async def test_a_timed_out_attempt_says_where_its_handler_was() -> None:
    async def stuck_in_here() -> None:
        await asyncio.sleep(30)

    async def handler(payload: dict[str, Any]) -> None:
        await stuck_in_here()

    outcome = await run_attempt(Held(claim(timeout=0.05)), job(handler), 30.0, LIMITS)
    assert (outcome.timed_out, outcome.error_type) == (True, "TimeoutError")
    assert outcome.traceback is not None
    assert outcome.traceback.startswith("Where the handler was when its time ran out")
    assert outcome.traceback.index("in handler") < outcome.traceback.index("in stuck_in_here")


async def test_a_long_traceback_keeps_its_end_within_error_max_bytes() -> None:
    async def handler(payload: dict[str, Any]) -> None:
        raise RuntimeError("x" * 2000 + " the end")

    outcome = await run_attempt(
        Held(claim()), job(handler), 30.0, OutputLimits(error_max_bytes=300)
    )
    assert outcome.traceback is not None and len(outcome.traceback.encode()) <= 300
    assert outcome.traceback.startswith("[") and outcome.traceback.endswith(" the end\n")


def test_clean_tail_cleans_as_clean_text_and_cuts_at_a_character() -> None:
    assert clean_tail("a\x00b", 100) == "a\ufffdb"
    cut = clean_tail("é" * 1000, 64)
    assert len(cut.encode()) <= 64
    assert cut.startswith("[2000 bytes, cut to 64] ") and cut.endswith("éé")


# --- the handler's lines --------------------------------------------------------------


def test_an_attempt_keeps_its_last_lines_within_its_bound_and_counts_the_rest() -> None:
    log = AttemptLog(4096)
    for n in range(200):
        log.add(AT, "INFO", f"line {n:03} " + "." * 50)
    window = log.window()
    assert window is not None and window.logged == 200
    kept = json.loads(window.lines)
    assert [line["message"][:8] for line in kept] == [f"line {n:03}" for n in range(170, 200)]
    assert 4096 - 130 < len(window.lines) <= 4096  # one more line would not fit
    assert kept[0] == {"logged_at": AT.isoformat(), "level": "INFO", "message": kept[0]["message"]}


def test_each_line_is_cleaned_and_cut_so_no_line_fills_the_log_alone() -> None:
    log = AttemptLog(4096)
    log.add(AT, "INFO", "nul\x00 and \udc80")
    log.add(AT, "ERROR", "y" * 10_000)
    first, long = _lines(log)
    assert first["message"] == "nul\ufffd and \ufffd"
    assert len(long["message"].encode()) <= 1024 and long["message"].endswith("cut to 1024]")


def test_a_running_attempts_lines_are_due_only_when_new_and_not_too_often() -> None:
    log = AttemptLog(65_536)
    assert log.due(100.0, 5.0) is None and log.window() is None  # nothing logged
    log.add(AT, "INFO", "one")
    assert log.due(100.0, 5.0) is not None
    log.add(AT, "INFO", "two")
    assert log.due(102.0, 5.0) is None  # new, but too soon
    taken = log.due(105.0, 5.0)
    assert taken is not None and taken.logged == 2
    assert log.due(200.0, 5.0) is None  # nothing new


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _context_logger(level: int = logging.INFO) -> tuple[AttemptLogger, AttemptLog, Records]:
    kept, records = AttemptLog(65_536), Records()
    underlying = logging.getLogger(f"conveyor.task.test-{uuid.uuid4().hex}")
    underlying.setLevel(level)
    underlying.handlers[:] = [records]
    underlying.propagate = False
    return AttemptLogger(underlying, uuid.uuid4(), kept), kept, records


def test_a_handlers_lines_are_kept_formatted_and_still_logged_with_the_task_id() -> None:
    logger, kept, records = _context_logger()
    logger.info("resized %d of %s", 3, "images")
    logger.warning("odd %d", "not a number")
    logger.debug("not kept while DEBUG is off")
    try:
        raise KeyError("size")
    except KeyError:
        logger.exception("gave up")
    lines = _lines(kept)
    assert [(line["level"], line["message"].splitlines()[0]) for line in lines] == [
        ("INFO", "resized 3 of images"),
        ("WARNING", "(a line that could not be formatted)"),
        ("ERROR", "gave up"),
    ]
    assert "Traceback" in lines[2]["message"] and "KeyError: 'size'" in lines[2]["message"]
    resized = records.records[0]
    assert resized.getMessage() == "resized 3 of images" and len(records.records) == 3
    assert resized.task_id == logger.extra["task_id"]  # type: ignore[attr-defined, index]
    # Where the handler logged it, not the adapter.
    assert (
        resized.funcName
        == test_a_handlers_lines_are_kept_formatted_and_still_logged_with_the_task_id.__name__
    )


def test_debug_lines_are_kept_when_the_logger_is_enabled_for_them() -> None:
    logger, kept, _ = _context_logger(logging.DEBUG)
    logger.debug("detail %s", "shown")
    assert [line["message"] for line in _lines(kept)] == ["detail shown"]


async def test_a_handler_logs_through_its_context_into_its_attempts_log() -> None:
    async def handler(payload: dict[str, Any], context: TaskContext) -> None:
        context.logger.info("attempt %d", context.attempt)

    held = Held(claim(attempt=2))
    await run_attempt(held, job(handler, takes_context=True), 30.0, LIMITS)
    assert held.log is not None and [line["message"] for line in _lines(held.log)] == ["attempt 2"]


def test_the_bound_is_a_setting() -> None:
    assert Settings(attempt_log_max_bytes=8192).output_limits().log_max_bytes == 8192
    assert Settings().output_limits().log_max_bytes == 65_536
