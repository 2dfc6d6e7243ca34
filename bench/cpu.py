"""CPU seconds per 1,000 tasks, process by process, read from /proc over a measured
interval: unlike a rate, it barely moves with how fast the machine is that day, so it
compares runs, commits and the anchor.

A process counts with its descendants, and with what it reaped (`cutime`, `cstime`): the
PostgreSQL backends that ended during the interval are in the postmaster's figure, less
what they had spent before it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
# Each group of processes, by what it is: a way to find its root processes.
Finder = Callable[[], list[int]]


def by_name(*names: str) -> Finder:
    """The processes whose command name (comm) is one of `names`, whoever started them."""
    return lambda: [pid for pid, comm, _ in _processes() if comm in names]


def by_pid(*pids: int) -> Finder:
    return lambda: list(pids)


POSTGRESQL = by_name("postgres", "postmaster")
RABBITMQ = by_name("beam.smp", "erl_child_setup", "epmd", "inet_gethost")


def _processes() -> Iterator[tuple[int, str, int]]:
    """(pid, command name, parent pid) of every process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        yield int(entry.name), comm, int(fields[1])


def _seconds(pid: int) -> float:
    """CPU seconds of `pid` and of the children it reaped; 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime, stime, cutime, cstime: fields 14 to 17 of proc(5), 12 to 15 after the name.
    return sum(int(value) for value in fields[11:15]) / _TICK


def _tree(roots: list[int]) -> set[int]:
    """`roots` and all their descendants, as they are now."""
    children: dict[int, list[int]] = {}
    for pid, _, parent in _processes():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def _cpu(finder: Finder) -> dict[int, float]:
    return {pid: _seconds(pid) for pid in _tree(finder())}


@dataclass
class Usage:
    """CPU seconds each group spent over the interval."""

    seconds: dict[str, float]

    def per_thousand(self, tasks: float) -> str:
        """`API 0.41 + PostgreSQL 0.30 + ... = 0.80 CPU s per 1,000 tasks`."""
        if tasks <= 0:
            return "no task"
        each = {name: spent * 1000 / tasks for name, spent in self.seconds.items()}
        parts = " + ".join(f"{name} {value:.2f}" for name, value in each.items())
        return f"CPU s per 1,000 tasks: {parts} = {sum(each.values()):.2f}"

    def of(self, name: str, tasks: float) -> float:
        return self.seconds[name] * 1000 / tasks if tasks > 0 else 0.0


@contextmanager
def measured(groups: dict[str, Finder]) -> Iterator[Usage]:
    """The CPU each group spends within the block; read the Usage after it. A process that
    starts within the block counts from its start."""
    before = {name: _cpu(finder) for name, finder in groups.items()}
    usage = Usage({})
    yield usage
    for name, finder in groups.items():
        # A process gone since is in its parent's cutime in full: its share from before
        # the interval comes off with everyone's.
        usage.seconds[name] = sum(_cpu(finder).values()) - sum(before[name].values())
