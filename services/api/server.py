"""The HTTP server of the API: uvicorn, with a deadline on reading each request and a
bound on open connections, so that slow or numerous clients cannot hold a process.

Invariant: a client has `http_read_timeout_seconds` to send a whole request, headers and
body, counted from the moment the connection opens (for its first request) or from the
first byte of each later one; past it the connection is closed without an answer. Only
the client's sending is timed: the app may take as long as it needs to answer, and time
in which the server itself holds the client back (reading paused while the app has not
taken the body yet, or a client waiting for "100 Continue") does not count. Idle time
between requests on a kept-alive connection is uvicorn's `timeout_keep_alive` (5 s).

uvicorn (0.54) has no such read timeout: `timeout_keep_alive` only closes a connection
idle after a response, so a client trickling headers or a body, or sending nothing at
all on a fresh connection, is never cut. Hence `GuardedHttpProtocol`, a small subclass of
its httptools protocol (uvicorn[standard] brings httptools; the h11 protocol is not
guarded and is not used). Its `limit_concurrency` is the connection bound: it counts open
connections, and past it answers a plain-text 503 with no Retry-After; the subclass
answers the same refusal as the API's other ones, a problem+json 503 with Retry-After.
Connections past the bound are still accepted (and still timed); their requests are
refused and the connection closed, except the health probes (`/health/...`), which are
served so that a flood does not make Kubernetes restart a pod that is only busy.

This bounds what one process gives a client; it does not stop a flood from many of them.
The ingress in front should add its own limits, per client address, e.g. with nginx:

    client_header_timeout 10s;   # the whole header block, like http_read_timeout_seconds
    client_body_timeout 10s;     # between two reads of the body
    limit_conn_zone $binary_remote_addr zone=per_ip:10m;
    limit_conn per_ip 50;        # open connections per client address
    limit_conn_status 503;

(any other proxy's equivalents: request header and body timeouts, connections per client).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from services.api.errors import RETRY_AFTER_SECONDS, problem
from services.api.problems import ProblemType
from services.core.settings import Settings


def serve(app: ASGIApp, settings: Settings, listening: socket.socket) -> None:
    """Serve `app` on `listening` (from `bind`) until SIGINT or SIGTERM; exit 3 if it
    never started, as `uvicorn.run`."""
    server = uvicorn.Server(server_config(app, settings))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[listening])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` as uvicorn binds one, for `serve`; OSError when the
    port is in use or not ours to take.

    Bound before the app is made: uvicorn binds only once the app has started (connected
    to PostgreSQL and RabbitMQ), and a failure there leaves those connections retrying,
    so the process hangs instead of exiting."""
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError:
        listening.close()
        raise
    listening.set_inheritable(True)
    return listening


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of `conveyor api` and `conveyor dev`."""
    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        http=guarded_protocol(settings.http_read_timeout_seconds),
        ws="none",  # the API serves no WebSocket: no upgrade to leave untimed
        # uvicorn counts the connection asking too: N + 1 lets N connections be served.
        limit_concurrency=settings.http_max_connections + 1,
    )


def guarded_protocol(read_timeout: float) -> type[GuardedHttpProtocol]:
    """A `GuardedHttpProtocol` class whose clients have `read_timeout` s per request."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"read_timeout": read_timeout})


async def overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer past the connection bound; it closes the connection to free a place."""
    response = problem(
        503,
        "too many open connections; retry later",
        problem_type=ProblemType.OVERLOADED,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"},
    )
    await response(scope, receive, send)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request arrives too slowly."""

    read_timeout: float = 10.0
    _read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_read_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_read_deadline()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._stop_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_deadline()
        super().connection_lost(exc)

    # uvicorn types `app` with its own ASGI types; ours is the same callable.
    def _start_asgi_task(  # type: ignore[override]
        self, cycle: RequestResponseCycle, app: ASGIApp
    ) -> None:
        # uvicorn picks its plain-text refusal when `limit_concurrency` is passed. Health
        # probes are served all the same: a flood of connections must not make Kubernetes
        # restart the pod, dropping every request in flight.
        if app is service_unavailable:
            probe = str(cycle.scope.get("path", "")).startswith("/health/")
            app = self.app if probe else overloaded
        super()._start_asgi_task(cycle, app)  # type: ignore[arg-type]

    def _start_read_deadline(self) -> None:
        # A request's first byte does not restart the time its connection opened with.
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout, self._read_too_slow)

    def _stop_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_too_slow(self) -> None:
        self._read_deadline = None
        if self._holding_client_back():
            self._start_read_deadline()
        elif not self.transport.is_closing():
            self.transport.close()

    def _holding_client_back(self) -> bool:
        """True while the server, not the client, is why the request is incomplete."""
        waiting_for_continue = self.cycle is not None and self.cycle.waiting_for_100_continue
        return self.flow.read_paused or waiting_for_continue
