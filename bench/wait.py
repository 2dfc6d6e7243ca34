"""Requests waiting on `?wait=` for one task over two API processes, and how long after
its finish each got its answer."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime

import httpx

from bench import workspace
from bench.context import Bench


def run(bench: Bench, count: int = 200) -> None:
    print("waiting without polling", file=sys.stderr)
    workspace.empty(bench)
    second = bench.api_port + 2
    with (
        bench.process("api"),
        bench.process("api", API_PORT=str(second)),
        bench.process("worker"),
    ):
        bench.wait_ready()
        bench.wait_ready(f"http://127.0.0.1:{second}")
        late = asyncio.run(waiters_answer(bench, (bench.api_port, second), count))
    p50, p99 = late[len(late) // 2] * 1000, late[int(len(late) * 0.99) - 1] * 1000
    bench.row(
        f"{count} requests waiting (?wait=) for one task, 2 API processes",
        f"answered p50 {p50:.0f} ms, p99 {p99:.0f} ms, last {late[-1] * 1000:.0f} ms "
        "after its finish",
        goal="≤ 50 ms",
        met=late[-1] <= 0.05,
    )


async def waiters_answer(bench: Bench, ports: tuple[int, int], count: int) -> list[float]:
    """`count` requests wait for one task, spread over the API processes on `ports`; a
    worker runs it. Answers how long after its finish each waiter got its answer (s)."""
    async with httpx.AsyncClient(base_url=bench.api, timeout=10, headers=bench.auth) as client:
        body = {"title": "t", "kind": "sleep", "payload": {"seconds": 1.5}}
        task = (await client.post("/api/v1/tasks", json=body)).json()
        path = f"/api/v1/tasks/{task['id']}?wait=30"
        answers = await asyncio.gather(*(raw_wait(bench, ports[n % 2], path) for n in range(count)))
        finished = (await client.get(f"/api/v1/tasks/{task['id']}")).json()["finished_at"]
    done = datetime.fromisoformat(finished).timestamp()
    return sorted(answer - done for answer in answers)


async def raw_wait(bench: Bench, port: int, path: str) -> float:
    """GET `path` on a bare connection (no HTTP client library in the way); the wall time
    at which the answer's first byte arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = "".join(f"{name}: {value}\r\n" for name, value in bench.auth.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b" ")
    arrived = time.time()
    status = (await reader.readuntil(b" ")).strip()
    writer.close()
    if head != b"HTTP/1.1 " or status != b"200":
        raise SystemExit(f"a waiter got {status!r}")
    return arrived
