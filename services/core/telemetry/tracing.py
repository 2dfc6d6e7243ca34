"""OpenTelemetry: one trace per task, from the HTTP request to the last write.

A task keeps the W3C trace context of the request that submitted it, in its row, so that
every later hop (the relay's publish, the worker's claim, handler and writes, a retry or a
recovery) joins that trace, whichever process makes it. Spans follow the semantic
conventions for HTTP, database and messaging. Nothing is exported unless the standard
OTEL_* variables ask for it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, StatusCode

tracer = trace.get_tracer("conveyor")

Carrier = dict[str, str]
# Where this process's database and broker are, for the spans' server.* and db.namespace
# attributes (describe_peers sets them once the settings are read).
_database: dict[str, Any] = {}
_broker: dict[str, Any] = {}


def describe_peers(database_url: str, amqp_url: str) -> None:
    """Name the servers this process talks to, as span attributes (never a password)."""
    database, broker = urlsplit(database_url), urlsplit(amqp_url)
    _database.clear()
    _database.update(_server(database.hostname, database.port, 5432))
    _database["db.namespace"] = database.path.lstrip("/")
    _broker.clear()
    _broker.update(_server(broker.hostname, broker.port, 5672))


def _server(host: str | None, port: int | None, default_port: int) -> dict[str, Any]:
    return {"server.address": host or "localhost", "server.port": port or default_port}


def configure_tracing(service_name: str) -> None:
    """Export spans as the SDK's standard variables say: OTEL_TRACES_EXPORTER (otlp,
    console, none; a comma-separated list), and for otlp its endpoint and
    OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL (http/protobuf, the default, or grpc). Unset, it
    is otlp when an OTLP endpoint is set, else none: tracing costs nothing unless asked for.
    OTEL_SDK_DISABLED=true turns it off."""
    if _setting("OTEL_SDK_DISABLED").lower() == "true":
        return
    endpoint = _setting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    names = _setting("OTEL_TRACES_EXPORTER") or ("otlp" if endpoint else "none")
    exporters = [_exporter(name.strip()) for name in names.split(",") if name.strip() != "none"]
    if not exporters:
        return
    # OTEL_SERVICE_NAME, when set, wins over the process's own name.
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(named))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _setting(*names: str) -> str:
    """The first of the environment variables `names` that is set, else ''."""
    return next((os.environ[name] for name in names if os.environ.get(name)), "")


def _exporter(name: str) -> SpanExporter:
    """The span exporter OTEL_TRACES_EXPORTER names; ValueError for another name."""
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER: {name!r} is not otlp, console or none")
    protocol = _setting("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol not in ("", "http/protobuf"):
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not grpc or http/protobuf")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


def tracing_enabled() -> bool:
    """True once a real tracer provider is installed (by configure_tracing, or a test)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def current_carrier() -> Carrier:
    """The current trace context, as W3C headers to keep with a task or a message."""
    carrier: Carrier = {}
    propagate.inject(carrier)
    return carrier


def context_of(carrier: Mapping[str, Any] | None) -> context.Context:
    """The trace context kept in `carrier` (a task's row or a message's headers)."""
    return propagate.extract({k: str(v) for k, v in (carrier or {}).items()})


def carrier_of(span: Span) -> Carrier:
    carrier: Carrier = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def trace_id_of(carrier: Mapping[str, Any] | None) -> str | None:
    """The hex trace id kept in `carrier`, for log lines."""
    span_context = trace.get_current_span(context_of(carrier)).get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


def db_attributes(operation: str, purpose: str) -> dict[str, Any]:
    """Database span attributes by the semantic conventions; `purpose` says which of the
    store's statements it is (claim, complete, ...)."""
    return {
        "db.system.name": "postgresql",
        "db.operation.name": operation,
        "db.collection.name": "tasks",
        "db.query.summary": f"{operation} tasks",
        "conveyor.db.purpose": purpose,
        **_database,
    }


def db_span(operation: str, purpose: str, **options: Any) -> AbstractContextManager[Span]:
    """A CLIENT span named by its query summary (`UPDATE tasks`) around one statement."""
    if not tracing_enabled():  # the hot paths pay nothing for spans nobody records
        return nullcontext(INVALID_SPAN)
    return _db_span(operation, purpose, **options)


@contextmanager
def _db_span(operation: str, purpose: str, **options: Any) -> Iterator[Span]:
    with tracer.start_as_current_span(
        f"{operation} tasks",
        kind=SpanKind.CLIENT,
        attributes=db_attributes(operation, purpose),
        **options,
    ) as span:
        yield span


def messaging_attributes(operation: str, destination: str, message_id: str) -> dict[str, Any]:
    """Messaging span attributes by the semantic conventions, for RabbitMQ: `operation` is
    publish (of type send) or process; `destination` is `{exchange}:{routing key}` for a
    publish and `{exchange}:{routing key}:{queue}` for a consumer."""
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send" if operation == "publish" else operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": destination,
        "messaging.rabbitmq.destination.routing_key": destination.split(":")[1],
        "messaging.message.id": message_id,
        **_broker,
    }


@contextmanager
def publish_spans(
    destination: Callable[[str], str],
    outgoing: Mapping[uuid.UUID, tuple[str, Mapping[str, Any] | None]],
) -> Iterator[dict[uuid.UUID, tuple[str, Carrier]]]:
    """A PRODUCER span per task, each in the task's own trace, around one publish of all
    their messages, each to the `destination` of its queue (`{exchange}:{routing key}`);
    gives each message's queue and headers. A publish that fails marks every span with
    its error."""
    if not tracing_enabled():
        yield {task_id: (queue, {}) for task_id, (queue, _) in outgoing.items()}
        return
    spans = {
        task_id: (
            queue,
            tracer.start_span(
                f"publish {destination(queue)}",
                context=context_of(carrier),
                kind=SpanKind.PRODUCER,
                attributes=messaging_attributes("publish", destination(queue), str(task_id)),
            ),
        )
        for task_id, (queue, carrier) in outgoing.items()
    }
    try:
        yield {task_id: (queue, carrier_of(span)) for task_id, (queue, span) in spans.items()}
    except Exception as error:
        for _, span in spans.values():
            span.set_status(StatusCode.ERROR, str(error))
            span.set_attribute("error.type", type(error).__qualname__)
        raise
    finally:
        for _, span in spans.values():
            span.end()
