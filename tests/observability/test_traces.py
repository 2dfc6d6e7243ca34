"""One trace per task: from the HTTP request through the broker to the worker's last write."""

from __future__ import annotations

import uuid
from collections import Counter

import aio_pika
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.core.amqp.topology import ROUTING_KEY, Topology
from services.core.settings import QueueSettings, Settings
from services.core.telemetry.tracing import publish_spans
from tests.support.services import running_api, running_worker, submit, wait_for


def _trace_of(spans: InMemorySpanExporter, task_id: str) -> list[object]:
    """Every finished span in the trace of the request that submitted `task_id`."""
    finished = spans.get_finished_spans()
    roots = [s for s in finished if s.kind is SpanKind.SERVER and s.name == "POST /api/v1/tasks"]
    assert len(roots) == 1, [s.name for s in finished]
    trace_id = roots[0].context.trace_id
    assert any(s.attributes.get("messaging.message.id") == task_id for s in finished)
    return [s for s in finished if s.context.trace_id == trace_id]


def _names(trace_spans: list[object]) -> Counter[str]:
    return Counter(s.name for s in trace_spans)  # type: ignore[attr-defined]


async def test_a_task_is_one_trace_from_request_to_final_write(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="noop")
        await wait_for(api, task["id"])
    names = _names(_trace_of(spans, task["id"]))
    sent, taken = _destinations(settings)
    assert names["POST /api/v1/tasks"] == 1  # the API's HTTP server span
    assert names["INSERT tasks"] == 1  # the API's database write
    assert names[f"publish {sent}"] == 1  # the relay
    assert names[f"process {taken}"] == 1  # the worker, its claim, handler and last write
    assert names["run noop"] == 1
    assert names["UPDATE tasks"] == 2
    finished = spans.get_finished_spans()
    publish = next(s for s in finished if s.name == f"publish {sent}")
    process = next(s for s in finished if s.name == f"process {taken}")
    assert publish.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    # The messaging conventions for RabbitMQ, and the broker's address.
    for span, kind, destination in ((publish, "send", sent), (process, "process", taken)):
        assert span.attributes["messaging.system"] == "rabbitmq"
        assert span.attributes["messaging.operation.type"] == kind
        assert span.attributes["messaging.destination.name"] == destination
        assert span.attributes["messaging.rabbitmq.destination.routing_key"] == ROUTING_KEY
        assert span.attributes["messaging.message.id"] == task["id"]
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["server.port"] == 5672
    # The database conventions, and which database.
    insert = next(s for s in finished if s.name == "INSERT tasks")
    assert insert.attributes["db.system.name"] == "postgresql"
    assert insert.attributes["db.query.summary"] == "INSERT tasks"
    assert insert.attributes["db.namespace"] == settings.database_url.rsplit("/", 1)[1]
    assert insert.attributes["server.port"] == 5432


def _destinations(settings: Settings) -> tuple[str, str]:
    topology = Topology(settings.amqp_prefix)
    return topology.sent_to(), topology.taken_from()


@pytest.mark.unit
def test_a_failed_publish_names_its_error_type(spans: InMemorySpanExporter) -> None:
    with (
        pytest.raises(ConnectionError),
        publish_spans(lambda q: f"x:{q}", {uuid.uuid4(): ("task", None)}),
    ):
        raise ConnectionError("broker away")
    (span,) = [s for s in spans.get_finished_spans() if s.name == "publish x:task"]
    assert span.attributes["error.type"] == "ConnectionError"


async def test_a_retry_stays_in_the_same_trace(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    settings = settings.model_copy(update={"task_modules": ["tests.support.kinds"]})
    async with running_api(settings) as api, running_worker(settings):
        task = await submit(api, kind="flaky", payload={"key": uuid.uuid4().hex, "failures": 1})
        assert (await wait_for(api, task["id"]))["attempts"] == 2
    names = _names(_trace_of(spans, task["id"]))
    sent, taken = _destinations(settings)
    assert names[f"publish {sent}"] == 2
    assert names[f"process {taken}"] == 2
    assert names["run flaky"] == 2


async def test_a_relay_republish_stays_in_the_same_trace(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    """The API publishes the task's message; the message is lost (a purge); the relay's
    safety net sends another, in the same trace."""
    settings = settings.model_copy(update={"lost_message_seconds": 0.3})
    async with running_api(settings) as api:
        task = await submit(api, kind="echo", payload={"a": 1})
        await wait_for(api, task["id"], {"PENDING"})
        async with await aio_pika.connect(settings.amqp_url) as connection:
            channel = await connection.channel()
            queue = await channel.get_queue(Topology(settings.amqp_prefix).queue())
            await queue.purge()
        async with running_worker(settings):
            await wait_for(api, task["id"])
    names = _names(_trace_of(spans, task["id"]))
    sent, taken = _destinations(settings)
    assert names[f"publish {sent}"] == 2
    assert names[f"process {taken}"] == 1
    assert names["INSERT tasks"] == 1


async def test_a_task_that_waited_for_its_queues_rate_says_so_on_its_trace(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    """Two tasks on a queue of one start a second: the second waits for the rate."""
    settings = settings.model_copy(
        update={
            "queues": [QueueSettings(name="default"), QueueSettings(name="partner", rate=1)],
            "worker_queues": ["partner"],
        }
    )
    async with running_api(settings) as api, running_worker(settings):
        tasks = [await submit(api, kind="noop", queue="partner") for _ in range(2)]
        for task in tasks:
            await wait_for(api, task["id"])
    events = [
        event
        for span in spans.get_finished_spans()
        if span.kind is SpanKind.CONSUMER
        for event in span.events
        if event.name == "held back by the queue's pause or limits"
    ]
    assert len(events) == 1
    assert events[0].attributes["conveyor.queue"] == "partner"
    assert events[0].attributes["conveyor.queue.wait_seconds"] > 0.5
