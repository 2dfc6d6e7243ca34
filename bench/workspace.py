"""What a run makes before its first section and removes after its last: its database
(made anew and migrated), an API key, and its queues and exchanges."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aio_pika
import asyncpg

from bench import database
from bench.context import DATABASE, Bench
from services.core.amqp.topology import Topology, delete_topology


def prepare(bench: Bench) -> None:
    """A fresh, migrated database and an API key of tenant "default", which the tasks
    preloaded straight into the table belong to."""
    asyncio.run(_fresh_database(bench.admin_dsn))
    _conveyor(bench, "migrate")
    key = _conveyor(
        bench, "keys", "create", "--tenant", "default", "--scopes", "submit,read,cancel"
    )
    bench.auth["Authorization"] = f"Bearer {key}"


def empty(bench: Bench) -> None:
    """No task in the table and no message in the queue: a section starts from an empty
    system, and no worker spends its time on the tickets of an earlier section's tasks."""
    asyncio.run(database.truncate(bench.dsn))
    asyncio.run(_purge(bench))


async def _purge(bench: Bench) -> None:
    async with await aio_pika.connect(bench.amqp_url) as connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(Topology(bench.prefix).queue(), passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return  # not declared yet: no section has published
        await queue.purge()


async def clean_up(bench: Bench) -> None:
    """Remove the database, queues and exchange this run made."""
    await delete_topology(bench.amqp_url, bench.prefix, f"{bench.prefix}-celery")
    await _drop(bench.admin_dsn)


def _conveyor(bench: Bench, *args: str) -> str:
    """What `conveyor ARGS` prints, run against this run's database."""
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=bench.env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


async def _fresh_database(admin_dsn: str) -> None:
    await _drop(admin_dsn)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()


async def _drop(admin_dsn: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()
