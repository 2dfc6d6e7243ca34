"""Logging: readable lines at a terminal, JSON lines in a cluster."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from services.core.telemetry.tracing import current_trace_id

_TASK_FIELDS = ("task_id", "trace_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the task fields when the record carries them."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(
            {f: getattr(record, f) for f in _TASK_FIELDS if getattr(record, f, None) is not None}
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger message [task_id=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{f}={getattr(record, f)}"
            for f in _TASK_FIELDS
            if getattr(record, f, None) is not None
        )
        text = super().format(record)
        return f"{text} [{fields}]" if fields else text


class TraceIdFilter(logging.Filter):
    """Give a record about a task the trace id of the span it was logged in."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None and hasattr(record, "task_id"):
            record.trace_id = current_trace_id()
        return True


def configure_logging(log_format: str, level: str) -> None:
    """Send every logger through one handler in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(TraceIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
