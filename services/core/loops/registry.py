"""Which process runs which loop, and under which setting.

`conveyor api` runs its loops beside the requests, `conveyor worker` beside its tasks, and
`conveyor relay` and `conveyor recover` run theirs on their own; `conveyor dev` runs the
API's and the worker's in one process. The order of the lines is the order of starting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

from services.core.loops.consume import Consumer
from services.core.loops.heartbeat import Heartbeat
from services.core.loops.listen import Listen
from services.core.loops.loop import Loop, Parts
from services.core.loops.recovery import RecoverySweep
from services.core.loops.relay import RelayLoop
from services.core.loops.retention import RetentionSweep
from services.core.loops.schedules import ScheduleLoop
from services.core.settings import Settings

Process = Literal["api", "relay", "recover", "worker"]
Switch = Callable[[Settings], bool]


def always(_: Settings) -> bool:
    return True


def retention_in_api(settings: Settings) -> bool:
    """Switched on, and some finished status is not kept for ever."""
    return settings.api_run_retention and bool(settings.retention_days())


@dataclass(frozen=True, slots=True)
class Line:
    build: Callable[[Parts], Loop]
    # The processes that run the loop, each with the setting that switches it on there.
    runs_in: Mapping[Process, Switch]


REGISTRY: tuple[Line, ...] = (
    Line(Listen.of, {"api": always}),
    Line(RelayLoop.of, {"api": attrgetter("api_run_relay"), "relay": always}),
    Line(ScheduleLoop.of, {"api": attrgetter("api_run_relay"), "relay": always}),
    Line(RecoverySweep.of, {"api": attrgetter("api_run_recovery"), "recover": always}),
    Line(RetentionSweep.of, {"api": retention_in_api}),
    Line(Heartbeat.of, {"worker": always}),
    Line(Consumer.of, {"worker": always}),
)


def loops_of(process: Process, parts: Parts) -> list[Loop]:
    """The loops `process` runs with its settings, built from its parts."""
    return [line.build(parts) for line in REGISTRY if _switched_on(line, process, parts.settings)]


def _switched_on(line: Line, process: Process, settings: Settings) -> bool:
    switch = line.runs_in.get(process)
    return switch is not None and switch(settings)
