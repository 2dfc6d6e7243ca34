"""Screenshots of every page of the console, from a seeded database, for the README.

    python scripts/console_screenshots.py          (writes docs/console/*.png)

It makes its own database (conveyor_screens) and queue names, runs an API and a worker
with keys off, seeds tasks of every status, attempts, schedules and a paused queue, then
photographs each page in Debian's headless Chromium (.ci/install-chromium), at desktop
size and one at phone size. It removes what it made.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from services.core.amqp.topology import delete_topology

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "console"
ADMIN_DSN = os.environ.get("CONVEYOR_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE = "conveyor_screens"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
QUEUES = ("default", "reports")
PORT = 8790
URL = f"http://127.0.0.1:{PORT}"
PREFIX = f"conveyor-screens-{uuid.uuid4().hex[:6]}"
ENV = {
    **os.environ,
    "CONVEYOR_DATABASE_URL": ADMIN_DSN.rsplit("/", 1)[0].replace(
        "postgresql://", "postgresql+asyncpg://"
    )
    + f"/{DATABASE}",
    "CONVEYOR_AMQP_PREFIX": PREFIX,
    "CONVEYOR_API_PORT": str(PORT),
    "CONVEYOR_AUTH_ENABLED": "false",
    "CONVEYOR_WORKER_METRICS_PORT": "0",
    "CONVEYOR_RETRY_BASE_SECONDS": "0.2",
    "CONVEYOR_QUEUES": '[{"name": "default"}, {"name": "reports", "max_running": 2}]',
    "CONVEYOR_WORKER_QUEUES": "default,reports",
    "CONVEYOR_TRACE_URL": "http://jaeger:16686/trace/{trace_id}",
    "CONVEYOR_LOG_LEVEL": "WARNING",
    # A worker named as in Kubernetes (its pod), running the example's kinds too.
    "CONVEYOR_WORKER_ID": "conveyor-worker-7d9c5b-x2k4q",
    "CONVEYOR_TASK_MODULES": "uploads.handlers",
    "PYTHONPATH": str(ROOT / "examples"),
}


async def _database(create: bool) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        if create:
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()


@contextmanager
def _process(command: str) -> Iterator[None]:
    process = subprocess.Popen([sys.executable, "-m", "services.cli", command], env=ENV)
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def _seed(client: httpx.Client) -> str:
    """Tasks of every status, a task retried twice, schedules, a paused queue; answers the
    id of the task whose page is photographed."""
    tasks = [
        {"title": f"Resize image {n:03}", "kind": "sleep", "payload": {"seconds": 0.2}}
        for n in range(24)
    ]
    tasks += [
        {
            "title": f"Monthly report {m}",
            "kind": "sleep",
            "queue": "reports",
            "priority": "LOW",
            "payload": {"seconds": 40},
        }
        for m in ("January", "February", "March", "April")
    ]
    tasks += [
        {
            "title": f"Send invoice {n}",
            "kind": "echo",
            "priority": "HIGH",
            "payload": {"invoice": n},
        }
        for n in range(1200, 1210)
    ]
    client.post("/api/v1/tasks:batch", json={"tasks": tasks}).raise_for_status()
    failing = client.post(
        "/api/v1/tasks",
        json={
            "title": "Charge card for order 1234",
            "kind": "fail",
            "priority": "HIGH",
            "description": "The payment provider refuses the card.",
            "payload": {"order": 1234, "message": "card declined by the issuer", "retryable": True},
        },
    ).json()
    for n in range(3):
        cancelled = client.post(
            "/api/v1/tasks",
            json={
                "title": f"Rebuild search index {n}",
                "kind": "sleep",
                "payload": {"seconds": 30},
                "scheduled_at": "2030-01-01T00:00:00Z",
            },
        ).json()
        client.delete(f"/api/v1/tasks/{cancelled['id']}")
    for name, cron, kind in [
        ("nightly-cleanup", "0 3 * * *", "noop"),
        ("weekday-report", "0 9 * * MON-FRI", "demo"),
        ("heartbeat", "*/30 * * * * *", "noop"),
    ]:
        client.post(
            "/api/v1/schedules",
            json={
                "name": name,
                "cron": cron,
                "timezone": "Europe/Berlin",
                "task": {"title": name.replace("-", " "), "kind": kind},
            },
        ).raise_for_status()
    client.post("/api/v1/queues/reports:pause")
    for name, scopes in [
        ("billing jobs", ["submit", "read"]),
        ("support desk", ["read", "cancel"]),
    ]:
        client.post("/api/v1/keys", json={"name": name, "scopes": scopes}).raise_for_status()
    return str(failing["id"])


def _browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def _shoot(
    driver: webdriver.Chrome, path: str, name: str, size: tuple[int, int] = (1280, 900)
) -> None:
    driver.set_window_size(*size)
    driver.get(f"{URL}{path}")
    time.sleep(1.5)  # the page's first answers, and its fonts
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size[0], min(max(height + 20, size[1]), 2400))
    time.sleep(0.3)
    driver.save_screenshot(str(OUT / f"{name}.png"))
    print(f"docs/console/{name}.png", file=sys.stderr)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    asyncio.run(_database(create=True))
    subprocess.run([sys.executable, "-m", "services.cli", "migrate"], env=ENV, check=True)
    try:
        with _process("api"), _process("worker"):
            with httpx.Client(base_url=URL, timeout=10) as client:
                for _ in range(100):
                    try:
                        if client.get("/health/ready").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.2)
                failing = _seed(client)
                time.sleep(6)  # the quick tasks finish, the failing one runs out of attempts
                driver = _browser()
                try:
                    _shoot(driver, "/ui", "overview")
                    _shoot(driver, "/ui/tasks?limit=20", "tasks")
                    _shoot(driver, f"/ui/tasks/{failing}", "task")
                    _shoot(driver, "/ui/schedules", "schedules")
                    _shoot(driver, "/ui/queues", "queues")
                    _shoot(driver, "/ui/workers", "workers")
                    _shoot(driver, "/ui/keys", "keys")
                    _shoot(driver, "/ui/tasks", "phone", (390, 844))
                finally:
                    driver.quit()
    finally:
        asyncio.run(_database(create=False))
        asyncio.run(delete_topology(ENV.get("CONVEYOR_AMQP_URL", AMQP_URL), PREFIX, queues=QUEUES))


if __name__ == "__main__":
    main()
