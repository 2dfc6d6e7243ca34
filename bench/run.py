"""Conveyor's benchmark: one command, the local servers, one table.

    python -m bench.run            (wrk must be installed: apt-get install wrk)

It measures this machine's raw limits first (PostgreSQL committed inserts, RabbitMQ
confirmed publishes and acked consumes) and prints each figure of the service beside the
limit it leans on, so the numbers mean something on any machine. It uses its own database
(conveyor_bench, made anew) and its own queue names, and stops what it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import aio_pika
import asyncpg
import httpx

from bench import bulk
from services.core.amqp.topology import delete_topology

ADMIN_DSN = os.environ.get(
    "CONVEYOR_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("CONVEYOR_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE = "conveyor_bench"
DSN = ADMIN_DSN.rsplit("/", 1)[0] + f"/{DATABASE}"
PREFIX = f"conveyor-bench-{uuid.uuid4().hex[:6]}"
API_PORT = 8787
API = f"http://127.0.0.1:{API_PORT}"
ROWS: list[tuple[str, str, str, str]] = []
# Requests carry an API key, as in the chart: its lookup and check are part of each figure.
AUTH: dict[str, str] = {}


# PostgreSQL's WAL per completed task when the bench first measured it; the goal halves it.
FIRST_WAL_PER_TASK = 4949


def row(what: str, figure: str, against: str = "", goal: str = "", met: bool | None = None) -> None:
    """One line of the table; `goal` with whether this run `met` it, when there is one."""
    if goal:
        goal = f"{goal}: {'met' if met else 'not met'}"
    ROWS.append((what, figure, goal, against))
    print(f"  {what}: {figure} {against} {goal}", file=sys.stderr, flush=True)


def ms(latency: str) -> float:
    """wrk's latency ("812.00us", "3.27ms", "1.02s") in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", latency).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def env(**more: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONVEYOR_DATABASE_URL": DSN.replace("postgresql://", "postgresql+asyncpg://"),
        "CONVEYOR_AMQP_URL": AMQP_URL,
        "CONVEYOR_AMQP_PREFIX": PREFIX,
        "CONVEYOR_API_PORT": str(API_PORT),
        "CONVEYOR_LOG_LEVEL": "WARNING",
        "CONVEYOR_WORKER_METRICS_PORT": "0",
        # One client sends everything here: a per-key limit would measure only itself.
        "CONVEYOR_RATE_LIMIT": "",
        **{f"CONVEYOR_{name}": value for name, value in more.items()},
    }


@contextmanager
def process(command: str, **settings: str) -> Iterator[subprocess.Popen[bytes]]:
    """`conveyor COMMAND` running for the block; SIGTERM and a wait after it."""
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", command], env=env(**settings))
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def peak_rss_mb(proc: subprocess.Popen[bytes]) -> float:
    status = Path(f"/proc/{proc.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def wait_ready(base: str = API) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the API did not become ready")


# --- the machine's limits ----------------------------------------------------------------


async def postgres_inserts(count: int = 4000) -> float:
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute("CREATE TEMP TABLE bench_rows (id uuid, body text)")
        started = time.perf_counter()
        for _ in range(count):
            await connection.execute("INSERT INTO bench_rows VALUES ($1, 'x')", uuid.uuid4())
        return count / (time.perf_counter() - started)
    finally:
        await connection.close()


async def rabbitmq_limits(count: int = 10_000) -> tuple[float, float]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            f"{PREFIX}.raw", durable=True, arguments={"x-queue-type": "quorum"}
        )
        message = aio_pika.Message(b"x", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        started = time.perf_counter()
        for offset in range(0, count, 200):  # confirms pipelined, 200 in flight
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(message, queue.name)
                    for _ in range(min(200, count - offset))
                )
            )
        published = count / (time.perf_counter() - started)
        await channel.set_qos(prefetch_count=200)
        done = asyncio.Event()
        seen = 0

        async def take(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            await incoming.ack()
            seen += 1
            if seen == count:
                done.set()

        started = time.perf_counter()
        await queue.consume(take)
        await done.wait()
        consumed = count / (time.perf_counter() - started)
        await queue.delete(if_unused=False, if_empty=False)
    return published, consumed


# --- the service --------------------------------------------------------------------------


def wrk(
    path: str, connections: int, seconds: int = 10, post: str = "", base: str = API
) -> tuple[float, str, str]:
    """Requests per second, p50 and p99 of `base` + `path`; `post` names a script in bench/."""
    args = [
        "wrk",
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"Authorization: {AUTH['Authorization']}",
    ]
    if post:
        args += ["-s", str(Path(__file__).with_name(post))]
    done = subprocess.run([*args, f"{base}{path}"], capture_output=True, text=True, check=True)
    out = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    distribution = out.split("Latency Distribution", 1)[1]
    p50 = re.search(r"50%\s+(\S+)", distribution).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", distribution).group(1)  # type: ignore[union-attr]
    if "Non-2xx" in out:
        raise SystemExit(f"errors under load:\n{out}")
    return rate, p50, p99


async def preload(
    count: int, *, kind: str = "noop", priorities: tuple[int, ...] = (2,), status: str = "NEW"
) -> None:
    """Insert `count` tasks straight into the table, as if submitted (NEW: relayed next),
    a million per statement. Their ids rise with n, so ten million load in minutes."""
    connection = await asyncpg.connect(DSN)
    try:
        for first in range(1, count + 1, 1_000_000):
            last = min(first + 999_999, count)
            await connection.execute(f"""
                INSERT INTO tasks (id, title, priority, status, kind, created_at, updated_at,
                                   available_at, finished_at)
                SELECT CAST(lpad(to_hex(n), 32, '0') AS uuid), 'bench ' || n,
                       (ARRAY{list(priorities)})[1 + n % {len(priorities)}],
                       '{status}', '{kind}', now() - (n || ' ms')::interval, now(), now(),
                       CASE WHEN '{status}' IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN now() END
                FROM generate_series({first}, {last}) AS n
            """)
    finally:
        await connection.close()


async def count_status(status: str) -> int:
    connection = await asyncpg.connect(DSN)
    try:
        query = "SELECT count(*) FROM tasks WHERE status = $1"
        return int(await connection.fetchval(query, status))
    finally:
        await connection.close()


async def until(status: str, count: int, patience: float) -> float:
    started = time.perf_counter()
    while await count_status(status) < count:
        if time.perf_counter() - started > patience:
            raise SystemExit(f"timed out waiting for {count} {status}")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def truncate() -> None:
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute("TRUNCATE tasks, task_attempts")
    finally:
        await connection.close()


def drain(workers: int, count: int) -> float:
    asyncio.run(truncate())
    with process("relay"):
        asyncio.run(preload(count))
        asyncio.run(until("PENDING", count, 120))
    asyncio.run(_analyze())
    with ExitStack() as stack:
        for _ in range(workers):
            stack.enter_context(process("worker", WORKER_CONCURRENCY="64"))
        elapsed = asyncio.run(until("COMPLETED", count, 600))
    return count / elapsed


async def submit_to_start(rate: float, seconds: float) -> tuple[float, float]:
    async with httpx.AsyncClient(base_url=API, timeout=10, headers=AUTH) as client:
        ids = []
        started = time.perf_counter()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            response = await client.post("/api/v1/tasks", json={"title": "t", "kind": "noop"})
            ids.append(response.json()["id"])
        await asyncio.sleep(1)
    connection = await asyncpg.connect(DSN)
    try:
        waits = await connection.fetch(
            "SELECT extract(epoch FROM started_at - created_at) * 1000 AS ms FROM tasks "
            "WHERE id = ANY($1::uuid[]) AND started_at IS NOT NULL",
            ids,
        )
    finally:
        await connection.close()
    values = sorted(float(w["ms"]) for w in waits)
    return statistics.median(values), values[int(len(values) * 0.99) - 1]


async def database_counters() -> dict[str, float]:
    """WAL written so far (whole server), and this database's commits, row writes and,
    where pg_stat_statements is loaded, statements."""
    connection = await asyncpg.connect(DSN)
    try:
        row = await connection.fetchrow(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') AS wal, xact_commit,"
            " tup_inserted + tup_updated + tup_deleted AS writes"
            " FROM pg_stat_database WHERE datname = current_database()"
        )
        counters = {key: float(value) for key, value in row.items()}
        try:
            counters["statements"] = float(
                await connection.fetchval(
                    "SELECT sum(calls) FROM pg_stat_statements"
                    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
                or 0
            )
        except asyncpg.PostgresError:  # the extension is not loaded on this server
            pass
        return counters
    finally:
        await connection.close()


async def submit_many(count: int, concurrency: int = 16) -> None:
    """`count` single submits through the API, `concurrency` at a time."""
    numbers = iter(range(count))
    async with httpx.AsyncClient(base_url=API, timeout=30, headers=AUTH) as client:

        async def sender() -> None:
            for _ in numbers:
                response = await client.post("/api/v1/tasks", json={"title": "t", "kind": "noop"})
                response.raise_for_status()

        await asyncio.gather(*(sender() for _ in range(concurrency)))


def cost_per_task(count: int) -> tuple[str, float]:
    """PostgreSQL's work for one task's whole path: submit, relay, claim, complete."""
    asyncio.run(truncate())
    with process("api"), process("worker"):
        wait_ready()
        before = asyncio.run(database_counters())
        asyncio.run(submit_many(count))
        asyncio.run(until("COMPLETED", count, 300))
        time.sleep(1.5)  # PostgreSQL publishes a backend's counters within a second
        after = asyncio.run(database_counters())
    per = {key: (after[key] - before[key]) / count for key in after}
    figure = (
        f"{per['wal']:,.0f} WAL bytes, {per['xact_commit']:.2f} commits, "
        f"{per['writes']:.2f} row writes"
    )
    if "statements" in per:
        figure += f", {per['statements']:.1f} statements"
    return figure, per["wal"]


BASELINE_PORT = 8788


@contextmanager
def baseline() -> Iterator[None]:
    """FastAPI + SQLAlchemy + Celery (bench/baseline.py): uvicorn, one process, and a
    Celery worker, prefork with 2 processes, on the same servers."""
    settings = {
        **os.environ,
        "BASELINE_DATABASE_URL": DSN.replace("postgresql://", "postgresql+asyncpg://"),
        "BASELINE_AMQP_URL": AMQP_URL,
        "BASELINE_PREFIX": f"{PREFIX}-celery",
    }
    commands = [
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.baseline:app",
            "--port",
            str(BASELINE_PORT),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.baseline:celery",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
    ]
    procs = [subprocess.Popen(command, env=settings) for command in commands]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{BASELINE_PORT}/docs").raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("the baseline did not start") from None
                time.sleep(0.2)
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def start_order(per_level: int) -> str:
    connection = await asyncpg.connect(DSN)
    try:
        rows = await connection.fetch("SELECT priority FROM tasks ORDER BY started_at")
    finally:
        await connection.close()
    names = {1: "LOW", 2: "MEDIUM", 3: "HIGH"}
    runs: list[list[object]] = []
    for r in rows:
        if runs and runs[-1][0] == r["priority"]:
            runs[-1][1] += 1  # type: ignore[operator]
        else:
            runs.append([r["priority"], 1])
    return " > ".join(f"{names[p]}x{n}" for p, n in runs)  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--drain-tasks", type=int, default=20_000)
    parser.add_argument("--list-rows", type=int, default=10_000_000)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        help="run these sections only (the machine's limits always run)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None and (not args.only or WITH_WRK & set(args.only)):
        raise SystemExit("wrk is needed: apt-get install wrk")
    try:
        run(args)
    finally:
        asyncio.run(clean_up())


async def clean_up() -> None:
    """Remove the database, queues and exchange this run made."""
    await delete_topology(AMQP_URL, PREFIX, f"{PREFIX}-celery")
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()


def api_section(inserts: float) -> tuple[float, float]:
    """Single creates at 1, 8 and 32 connections, then the bulk path; answers the rate at
    32 connections and the API's peak memory."""
    print("API", file=sys.stderr)
    with process("api") as api:
        wait_ready()
        for connections in (1, 8, 32):
            rate, p50, p99 = wrk("/api/v1/tasks", connections, post="post.lua")
            at_32 = connections == 32
            row(
                f"API create, {connections} connection(s)",
                f"{rate:,.0f}/s, p50 {p50}, p99 {p99}",
                f"{rate / inserts:.0%} of PostgreSQL inserts",
                "≥ 2,500/s, p99 < 50 ms" if at_32 else "",
                rate >= 2500 and ms(p99) < 50,
            )
            single = rate
        rate, p50, p99 = wrk("/api/v1/tasks:batch", 4, post="batch.lua")
        row(
            "API bulk submit, 1,000 tasks a request, 4 connections",
            f"{rate * 1000:,.0f} tasks/s, p50 {p50}, p99 {p99} a request",
            f"{rate * 1000 / inserts:.0%} of PostgreSQL inserts",
            "≥ 20,000 tasks/s",
            rate * 1000 >= 20_000,
        )
        api_peak = peak_rss_mb(api)

    return single, api_peak


def anchor_section(single: float | None) -> None:
    print("the anchor: FastAPI + SQLAlchemy + Celery", file=sys.stderr)
    with baseline():
        rate, p50, p99 = wrk(
            "/tasks", 32, post="post.lua", base=f"http://127.0.0.1:{BASELINE_PORT}"
        )
    row(
        "FastAPI + SQLAlchemy insert + Celery send_task, 32 connections (uvicorn 1 process)",
        f"{rate:,.0f}/s, p50 {p50}, p99 {p99}",
        f"Conveyor's single create does {single / rate:.1f} times this" if single else "",
        "Conveyor ≥ 5 times this" if single else "",
        bool(single and single >= 5 * rate),
    )


async def steady_load(rate: int, seconds: float, every: float) -> list[tuple[float, int, int]]:
    """Submit `rate` tasks a second (batches of a tenth of a second) for `seconds`; every
    `every` seconds, read the tasks table's rows and its size on disk (with its indexes)."""
    samples: list[tuple[float, int, int]] = []
    connection = await asyncpg.connect(DSN)
    body = {"tasks": [{"title": "t", "kind": "noop"} for _ in range(rate // 10)]}
    # Where the server's autovacuum is off (some CI images), vacuum as it would: a table
    # whose deleted rows are never vacuumed grows whatever retention does.
    vacuum = await connection.fetchval("SHOW autovacuum") == "off"
    if vacuum:
        print("    autovacuum is off here: the bench vacuums every 30 s", file=sys.stderr)
    vacuumed = 0.0
    try:
        async with httpx.AsyncClient(base_url=API, timeout=30, headers=AUTH) as client:
            started = time.perf_counter()
            n = 0
            while (elapsed := time.perf_counter() - started) < seconds:
                (await client.post("/api/v1/tasks:batch", json=body)).raise_for_status()
                if elapsed >= len(samples) * every:
                    rows = await connection.fetchval("SELECT count(*) FROM tasks")
                    size = await connection.fetchval("SELECT pg_total_relation_size('tasks')")
                    samples.append((elapsed, int(rows), int(size)))
                if vacuum and elapsed - vacuumed >= 30:
                    await connection.execute("VACUUM tasks, task_attempts")
                    vacuumed = elapsed
                n += 1
                await asyncio.sleep(max(0.0, started + n / 10 - time.perf_counter()))
    finally:
        await connection.close()
    return samples


def retention_section(rate: int = 200, keep_seconds: int = 30, seconds: float = 240) -> None:
    """A steady load with a short retention: the table's rows and size level off."""
    asyncio.run(truncate())
    keep = {
        "RETENTION_COMPLETED_DAYS": str(keep_seconds / 86_400),
        "RETENTION_INTERVAL_SECONDS": "5",
    }
    with process("api", **keep), process("worker"):
        wait_ready()
        samples = asyncio.run(steady_load(rate, seconds, seconds / 8))
    for elapsed, rows, size in samples:
        print(f"    {elapsed:5.0f} s: {rows:,} tasks, {size / 2**20:.1f} MiB", file=sys.stderr)
    third = len(samples) // 3
    middle, last = samples[-third - 1][2], max(size for _, _, size in samples[-third:])
    row(
        f"tasks table under {rate} tasks/s for {seconds:.0f} s, COMPLETED kept {keep_seconds} s",
        ", ".join(f"{rows:,} rows / {size / 2**20:.1f} MiB" for _, rows, size in samples[2::2]),
        f"{rate * seconds:,.0f} tasks submitted in all",
        "size levels off (last third grows < 10%)",
        last <= middle * 1.1,
    )


async def raw_wait(port: int, path: str) -> float:
    """GET `path` on a bare connection (no HTTP client library in the way); the wall time
    at which the answer's first byte arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = "".join(f"{name}: {value}\r\n" for name, value in AUTH.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b" ")
    arrived = time.time()
    status = (await reader.readuntil(b" ")).strip()
    writer.close()
    if head != b"HTTP/1.1 " or status != b"200":
        raise SystemExit(f"a waiter got {status!r}")
    return arrived


async def waiters_answer(ports: tuple[int, int], count: int) -> list[float]:
    """`count` requests wait for one task, spread over the API processes on `ports`; a
    worker runs it. Answers how long after its finish each waiter got its answer (s)."""
    async with httpx.AsyncClient(base_url=API, timeout=10, headers=AUTH) as client:
        body = {"title": "t", "kind": "sleep", "payload": {"seconds": 1.5}}
        task = (await client.post("/api/v1/tasks", json=body)).json()
        path = f"/api/v1/tasks/{task['id']}?wait=30"
        answers = await asyncio.gather(*(raw_wait(ports[n % 2], path) for n in range(count)))
        finished = (await client.get(f"/api/v1/tasks/{task['id']}")).json()["finished_at"]
    done = datetime.fromisoformat(finished).timestamp()
    return sorted(answer - done for answer in answers)


def wait_section(count: int = 200) -> None:
    """Requests waiting on `?wait=` over two API processes, answered after the finish."""
    asyncio.run(truncate())
    second = API_PORT + 2
    with process("api"), process("api", API_PORT=str(second)), process("worker"):
        wait_ready()
        wait_ready(f"http://127.0.0.1:{second}")
        late = asyncio.run(waiters_answer((API_PORT, second), count))
    p50, p99 = late[len(late) // 2] * 1000, late[int(len(late) * 0.99) - 1] * 1000
    row(
        f"{count} requests waiting (?wait=) for one task, 2 API processes",
        f"answered p50 {p50:.0f} ms, p99 {p99:.0f} ms, last {late[-1] * 1000:.0f} ms "
        "after its finish",
        goal="≤ 50 ms",
        met=late[-1] <= 0.05,
    )


async def page_times(pages: dict[str, list[str]], rounds: int) -> dict[str, list[float]]:
    """Each console page's API calls, made together as the page makes them, `rounds`
    times: how long each page waited for its last answer (ms)."""
    times: dict[str, list[float]] = {name: [] for name in pages}
    async with httpx.AsyncClient(base_url=API, timeout=30, headers=AUTH) as client:
        for _ in range(rounds):
            for name, calls in pages.items():
                started = time.perf_counter()
                answers = await asyncio.gather(*(client.get(call) for call in calls))
                times[name].append((time.perf_counter() - started) * 1000)
                for answer in answers:
                    answer.raise_for_status()
    return times


def console_section(rows: int = 1_000_000) -> None:
    """The console's pages, each its HTML and the API calls it makes, at `rows` tasks
    (all finished just now: the overview's busiest case)."""
    asyncio.run(truncate())
    asyncio.run(preload(rows, priorities=(1, 2, 3), status="COMPLETED"))
    asyncio.run(_analyze())
    with process("api", API_RUN_RELAY="false", API_RUN_RECOVERY="false"):
        wait_ready()
        newest = httpx.get(f"{API}/api/v1/tasks?limit=1", headers=AUTH).json()["items"][0]["id"]
        pages = {
            "overview": ["/ui", "/api/v1/whoami", "/api/v1/overview"],
            "tasks": ["/ui/tasks", "/api/v1/whoami", "/api/v1/tasks?limit=50"],
            "tasks, filtered": ["/api/v1/tasks?status=COMPLETED&priority=HIGH&kind=noop&limit=50"],
            "tasks, title search": ["/api/v1/tasks?title=bench%2099&limit=50"],
            "a task": [
                f"/api/v1/tasks/{newest}",
                f"/api/v1/tasks/{newest}/attempts",
                f"/api/v1/tasks/{newest}/trace",
            ],
            "schedules": ["/api/v1/schedules?limit=100"],
        }
        times = asyncio.run(page_times(pages, 40))
    worst = 0.0
    figures = []
    for name, values in times.items():
        values.sort()
        p99 = values[int(len(values) * 0.99) - 1]
        worst = max(worst, p99)
        figures.append(f"{name} p50 {statistics.median(values):.0f} / p99 {p99:.0f} ms")
    row(
        f"console pages, {rows:,} tasks (HTML and the page's API calls, 40 rounds)",
        "; ".join(figures),
        goal="every page < 200 ms",
        met=worst < 200,
    )


def bulk_section(count: int = 300_000) -> None:
    """One POST /api/v1/tasks:cancel by filter over a backlog of `count` queued tasks."""
    asyncio.run(truncate())
    asyncio.run(bulk.preload(DSN, count))
    asyncio.run(_analyze())
    with process("api", API_RUN_RELAY="false", API_RUN_RECOVERY="false"):
        wait_ready()
        seconds, cancelled = asyncio.run(bulk.cancel(API, AUTH, {"kind": "noop"}))
    row(
        f"bulk cancel by filter, {count:,} queued tasks, one request",
        f"{seconds:.1f} s ({cancelled / seconds:,.0f} tasks/s), {cancelled:,} cancelled",
        goal="all cancelled in < 60 s (clients give up at 300 s)",
        met=cancelled == count and seconds < 60,
    )


SECTIONS = [
    "api",
    "anchor",
    "drain",
    "start",
    "cost",
    "order",
    "list",
    "retention",
    "wait",
    "console",
    "bulk",
]
# The sections that load the API with wrk.
WITH_WRK = {"api", "anchor", "list"}


def run(args: argparse.Namespace) -> None:
    def want(section: str) -> bool:
        return not args.only or section in args.only

    async def fresh_database() -> None:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()

    asyncio.run(fresh_database())
    subprocess.run(
        [sys.executable, "-m", "services.cli", "migrate"],
        env=env(),
        check=True,
        capture_output=True,
    )
    # Tenant "default": the tasks preloaded straight into the table belong to it.
    key = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "keys",
            "create",
            "--tenant",
            "default",
            "--scopes",
            "submit,read,cancel",
        ],
        env=env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    AUTH["Authorization"] = f"Bearer {key}"

    print("limits of this machine", file=sys.stderr)
    inserts = asyncio.run(postgres_inserts())
    published, consumed = asyncio.run(rabbitmq_limits())
    row("PostgreSQL committed single-row inserts, 1 connection", f"{inserts:,.0f}/s")
    row("RabbitMQ confirmed persistent publishes (pipelined)", f"{published:,.0f}/s")
    row("RabbitMQ acked consumes", f"{consumed:,.0f}/s")

    single = api_peak = None
    if want("api"):
        single, api_peak = api_section(inserts)
    if want("anchor"):
        anchor_section(single)

    if want("drain"):
        print("workers", file=sys.stderr)
        for workers, goal in ((1, 4000), (2, 5000)):
            rate = drain(workers, args.drain_tasks)
            row(
                f"drain of noop tasks, {workers} worker process(es)",
                f"{rate:,.0f}/s",
                f"{rate / consumed:.0%} of RabbitMQ acked consumes",
                f"≥ {goal:,}/s",
                rate >= goal,
            )

    if want("start"):
        asyncio.run(truncate())
        with process("api"), process("worker") as worker:
            wait_ready()
            p50, p99 = asyncio.run(submit_to_start(50, 10))
            row(
                "submit to start at 50 tasks/s",
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                goal="p50 ≤ 5 ms, p99 ≤ 20 ms",
                met=p50 <= 5 and p99 <= 20,
            )
            worker_peak = peak_rss_mb(worker)
        api_figure = f"API {api_peak:.0f} MB, " if api_peak else ""
        row(
            "peak memory (RSS), the bulk path included",
            f"{api_figure}worker {worker_peak:.0f} MB",
            goal="API ≤ 100 MB, worker ≤ 80 MB",
            met=api_peak is not None and api_peak <= 100 and worker_peak <= 80,
        )

    if want("cost"):
        figure, wal = cost_per_task(2000)
        row(
            "PostgreSQL cost per completed task (submit, relay, claim, complete)",
            figure,
            goal=f"WAL ≤ {FIRST_WAL_PER_TASK // 2:,} bytes (half the first {FIRST_WAL_PER_TASK:,})",
            met=wal <= FIRST_WAL_PER_TASK / 2,
        )

    if want("order"):
        asyncio.run(truncate())
        with process("relay"):
            asyncio.run(preload(60, priorities=(1, 2, 3)))
            asyncio.run(until("PENDING", 60, 60))
        with process("worker", WORKER_CONCURRENCY="1"):
            asyncio.run(until("COMPLETED", 60, 120))
        row("start order, 60 queued LOW/MEDIUM/HIGH, 1 slot", asyncio.run(start_order(20)))

    if want("list"):
        asyncio.run(truncate())
        asyncio.run(preload(args.list_rows, priorities=(1, 2, 3), status="COMPLETED"))
        asyncio.run(_analyze())
        with process("api", API_RUN_RELAY="false", API_RUN_RECOVERY="false"):
            wait_ready()
            for label, path in [
                ("newest page", "/api/v1/tasks?limit=20"),
                ("filtered page", "/api/v1/tasks?status=COMPLETED&priority=HIGH&limit=20"),
            ]:
                rate, p50, p99 = wrk(path, 8)
                row(
                    f"list, {label}, {args.list_rows:,} tasks, 8 connections",
                    f"p50 {p50}, p99 {p99} ({rate:,.0f}/s)",
                    goal="p99 ≤ 15 ms at 10,000,000 tasks" if label == "newest page" else "",
                    met=ms(p99) <= 15 and args.list_rows >= 10_000_000,
                )

    if want("console"):
        print("console", file=sys.stderr)
        console_section()

    if want("wait"):
        print("waiting without polling", file=sys.stderr)
        wait_section()

    if want("retention"):
        print("retention", file=sys.stderr)
        retention_section()

    if want("bulk"):
        print("bulk actions", file=sys.stderr)
        bulk_section()

    print("\n| measure | figure | goal | against this machine's limit |\n|---|---|---|---|")
    for what, figure, goal, against in ROWS:
        print(f"| {what} | {figure} | {goal} | {against} |")


async def _analyze() -> None:
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute("VACUUM ANALYZE tasks")
    finally:
        await connection.close()


if __name__ == "__main__":
    main()
