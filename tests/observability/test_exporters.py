"""Spans leave an API process as the SDK's standard variables say: OTLP over HTTP (the
default protocol) or gRPC, to receivers of the test's own, or the console."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from services.core.settings import Settings
from tests.support.env import settings_env
from tests.support.processes import wait_until_ready
from tests.support.services import free_port

Request = trace_service_pb2.ExportTraceServiceRequest
# Spans are sent every tenth of a second, not every five; print()s reach the file at once.
QUICK = {"OTEL_BSP_SCHEDULE_DELAY": "100", "PYTHONUNBUFFERED": "1"}


def _span_names(request: Any) -> list[str]:
    return [
        span.name
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, list[str]]]:
    """An OTLP/HTTP receiver on loopback: its endpoint, and the span names it received."""
    received: list[str] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                received.extend(_span_names(Request.FromString(body)))
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            """No line per export."""

    with ThreadingHTTPServer(("127.0.0.1", 0), Receiver) as server:
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        yield f"http://127.0.0.1:{server.server_port}", received
        server.shutdown()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, list[str]]]:
    """An OTLP/gRPC receiver on loopback: its endpoint, and the span names it received."""
    received: list[str] = []

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # the service names it so
            received.extend(_span_names(request))
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}", received
    server.stop(None)


def _traced_api(
    settings: Settings, env: dict[str, str], until: Callable[[], bool], stdout: Any = None
) -> None:
    """An API with `env` added to its settings' environment: list tasks once it is ready,
    wait until `until`, then stop it (which sends what spans are left)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api"],
        env={**settings_env(settings.model_copy(update={"api_port": port})), **env},
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, process)
        assert httpx.get(f"{url}/api/v1/tasks").status_code == 200
        deadline = time.monotonic() + 30
        while not until():
            assert time.monotonic() < deadline, "no span came"
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(20)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc", None])
def test_spans_go_over_otlp_by_the_protocol_asked_for(
    settings: Settings,
    http_receiver: tuple[str, list[str]],
    grpc_receiver: tuple[str, list[str]],
    protocol: str | None,
) -> None:
    endpoint, received = grpc_receiver if protocol == "grpc" else http_receiver
    env = {**QUICK, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    if protocol is not None:  # unset: HTTP, the SDK's default
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    _traced_api(settings, env, lambda: "GET /api/v1/tasks" in received)
    other = http_receiver[1] if protocol == "grpc" else grpc_receiver[1]
    assert other == []


def test_spans_go_to_the_console_when_asked_and_nowhere_when_not(
    settings: Settings, tmp_path: Path, http_receiver: tuple[str, list[str]]
) -> None:
    out = tmp_path / "stdout"
    console = {**QUICK, "OTEL_TRACES_EXPORTER": "console"}
    with out.open("w") as stdout:
        _traced_api(
            settings, console, lambda: '"name": "GET /api/v1/tasks"' in out.read_text(), stdout
        )
    # An endpoint, but the exporter none: nothing leaves the process, even as it stops.
    endpoint, received = http_receiver
    none = {**QUICK, "OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    _traced_api(settings, none, lambda: True)
    assert received == []
