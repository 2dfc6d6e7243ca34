"""Workers: the worker processes of the installation, as the registry last saw them."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field

from services.api.schemas.common import ITEMS
from services.core.db.workers import GONE_KEPT_SECONDS, WorkerState


class WorkerOut(BaseModel):
    """A worker process: what it consumes and runs, how busy it is, and whether it is
    still there."""

    id: str = Field(
        description="The worker's id, which its tasks' attempts name as worker_id: its pod's "
        "name in Kubernetes"
    )
    host: str = Field(description="The host name it runs on")
    version: str = Field(description="The Conveyor version it runs")
    queues: list[str] = Field(description="The queues it takes tasks from")
    kinds: list[str] = Field(description="The kinds it can run")
    concurrency: int = Field(description="Tasks it may run at once: its slots")
    running: int = Field(description="Tasks it ran at its last heartbeat")
    state: WorkerState = Field(
        description=f"{WorkerState.ALIVE}: taking work; {WorkerState.DRAINING}: finishing what "
        f"it holds before it exits; {WorkerState.GONE}: not seen within its lease (it died or "
        f"lost the database), listed for {GONE_KEPT_SECONDS / 60:g} minutes more"
    )
    started_at: AwareDatetime = Field(description="When it started")
    last_seen_at: AwareDatetime = Field(description="When its last heartbeat was written")


class WorkerPage(BaseModel):
    items: list[WorkerOut] = Field(description=ITEMS)
