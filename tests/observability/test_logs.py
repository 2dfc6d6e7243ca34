"""Log lines about a task carry its id and its trace id, as JSON in a cluster."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.core.logs import JsonFormatter, TextFormatter, TraceIdFilter
from services.core.telemetry.tracing import tracer

pytestmark = pytest.mark.unit


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(TraceIdFilter())
    logger = logging.getLogger(f"test-{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_a_json_line_about_a_task_has_its_task_id_and_trace_id(
    spans: InMemorySpanExporter,
) -> None:
    logger, stream = _logger(JsonFormatter())
    with tracer.start_as_current_span("work") as span:
        logger.info("started %s", "noop", extra={"task_id": "t-1"})
    line = json.loads(stream.getvalue())
    assert line["message"] == "started noop"
    assert line["task_id"] == "t-1"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["level"] == "INFO" and line["time"].endswith("+00:00")


def test_a_text_line_names_the_task_and_a_plain_line_stays_plain(
    spans: InMemorySpanExporter,
) -> None:
    logger, stream = _logger(TextFormatter())
    with tracer.start_as_current_span("work"):
        logger.info("about a task", extra={"task_id": "t-2"})
        logger.info("about nothing in particular")
    about_task, plain = stream.getvalue().splitlines()
    assert "task_id=t-2" in about_task and "trace_id=" in about_task
    assert "task_id" not in plain and "trace_id" not in plain
