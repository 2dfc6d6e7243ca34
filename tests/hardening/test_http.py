"""The HTTP server against slow and numerous clients, on a real `conveyor api` process:
a request must arrive whole within the read timeout, and connections past the bound are
turned away with 503 and Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from http.client import HTTPConnection, HTTPResponse

import pytest

from tests.support.database import connect, until_a_lock_waiter
from tests.support.env import make_settings
from tests.support.processes import start_process, wait_until_ready
from tests.support.services import free_port

READ_TIMEOUT = 1.0
MAX_CONNECTIONS = 20
# Generous: the server must close well within this, but a busy machine is not a failure.
PATIENCE = READ_TIMEOUT * 8
HALF_HEADERS = b"GET /health/live HTTP/1.1\r\nHost: conveyor\r\nX-Slow: "


@pytest.fixture(scope="module")
def address(database_url: str, amqp_prefix: str) -> Iterator[tuple[str, int]]:
    """`conveyor api` in its own process, with a short read timeout and a small bound."""
    port = free_port()
    api = make_settings(
        database_url,
        amqp_prefix,
        api_port=port,
        api_run_relay=False,
        http_read_timeout_seconds=READ_TIMEOUT,
        http_max_connections=MAX_CONNECTIONS,
    )
    process = start_process(api, "api")
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process)
        yield "127.0.0.1", port
    finally:
        process.terminate()
        process.wait(timeout=30)


def closed_by_server(sock: socket.socket, within: float = PATIENCE) -> bool:
    """Read until the server closes the connection; False if it is still open at `within`."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def still_open(sock: socket.socket) -> bool:
    """True if the server has neither closed nor answered `sock` yet (without waiting)."""
    sock.settimeout(0)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False


@contextlib.contextmanager
def slow_connections(address: tuple[str, int], count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that each send half a request's headers, then nothing."""
    socks = [socket.create_connection(address, timeout=5) for _ in range(count)]
    try:
        for sock in socks:
            sock.sendall(HALF_HEADERS)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def get(connection: HTTPConnection, path: str = "/health/live") -> tuple[HTTPResponse, bytes]:
    """GET `path` on a kept-alive connection: the response and its body."""
    connection.request("GET", path)
    response = connection.getresponse()
    return response, response.read()


def status(address: tuple[str, int], path: str) -> int:
    """GET `path` on a connection of its own; answers the status."""
    connection = HTTPConnection(*address, timeout=PATIENCE * 2)
    try:
        return get(connection, path)[0].status
    finally:
        connection.close()


def test_a_connection_that_stops_sending_its_headers_is_closed(address: tuple[str, int]) -> None:
    with slow_connections(address, 1) as (sock,):
        assert closed_by_server(sock)


def test_a_connection_that_stops_sending_its_body_is_closed(address: tuple[str, int]) -> None:
    head = (
        b"POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(head + b'{"title": ')
        assert closed_by_server(sock)


def test_requests_are_answered_while_slow_connections_are_open(address: tuple[str, int]) -> None:
    with slow_connections(address, 15) as slow:
        assert status(address, "/health/live") == 200
        # Answered while every slow one was still open, and then the server cut them all.
        assert all(still_open(sock) for sock in slow)
        assert all(closed_by_server(sock) for sock in slow)


async def test_an_answer_slower_than_the_read_timeout_is_not_cut(
    address: tuple[str, int], database_url: str
) -> None:
    # The list waits on a lock held here: the app, not the client, is slow.
    holder = await connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            answer = asyncio.create_task(asyncio.to_thread(status, address, "/api/v1/tasks"))
            await until_a_lock_waiter(holder, PATIENCE)
            await asyncio.sleep(READ_TIMEOUT * 1.5)  # the time being tested, not a guess
        assert await answer == 200
    finally:
        await holder.close()


def test_requests_past_the_connection_bound_get_503_with_retry_after_but_probes_do_not(
    address: tuple[str, int],
) -> None:
    connections = [HTTPConnection(*address, timeout=5) for _ in range(MAX_CONNECTIONS + 2)]
    try:
        # Each one answered and kept alive, so the server holds them all open.
        served = [get(c)[0].status for c in connections[:MAX_CONNECTIONS]]
        assert served == [200] * MAX_CONNECTIONS
        refused, body = get(connections[-2], "/api/v1/tasks")
        assert refused.status == 503
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert json.loads(body)["type"] == "urn:conveyor:problem:overloaded"
        # Kubernetes' probes still get the truth, so a flood does not restart the pod.
        assert get(connections[-1], "/health/live")[0].status == 200
    finally:
        for connection in connections:
            connection.close()
