"""The anchor Conveyor is measured against: a FastAPI service that stores a job with
SQLAlchemy and hands it to Celery with send_task, as teams write it. Bench only.

    uvicorn bench.baseline:app            (one process)
    celery -A bench.baseline:celery worker -P prefork -c 2

BASELINE_DATABASE_URL (asyncpg), BASELINE_AMQP_URL and BASELINE_PREFIX say where.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from celery import Celery
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import create_async_engine

PREFIX = os.environ.get("BASELINE_PREFIX", "baseline")

celery = Celery("baseline", broker=os.environ.get("BASELINE_AMQP_URL", "amqp://"))
celery.conf.update(
    task_default_queue=f"{PREFIX}.tasks",
    task_default_exchange=PREFIX,
    task_default_routing_key="task",
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
)

metadata = sa.MetaData()
jobs = sa.Table(
    "baseline_jobs",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
engine = create_async_engine(
    os.environ.get("BASELINE_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1/postgres"),
    pool_size=10,
)


@celery.task(name="noop")
def noop(job_id: str) -> None:
    """Nothing: the bench measures the path, not the work."""


class JobIn(BaseModel):
    title: str
    kind: str = "noop"
    payload: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.post("/tasks", status_code=201)
async def create(job: JobIn) -> dict[str, str]:
    job_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            jobs.insert().values(
                id=job_id, title=job.title, kind=job.kind, payload=job.payload, status="PENDING"
            )
        )
    celery.send_task(job.kind, args=[str(job_id)])
    return {"id": str(job_id), "status": "PENDING"}
