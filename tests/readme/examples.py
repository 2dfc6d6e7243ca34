"""The README's shell and Python blocks, read as the test runs them.

A block runs as written, after these named placeholders are filled in (`PLACEHOLDERS`);
a block that cannot run on a test machine is preceded by a comment saying why:

    <!-- not run: needs a Docker engine (the image check builds the same images) -->
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"
_FENCE = re.compile(r"^```(\w*)\s*$")
_NOT_RUN = re.compile(r"^<!-- not run: (?P<why>.+?) -->$")

# What the test fills in, by what the README writes.
PLACEHOLDERS = {
    "localhost:8000": "the test's own `conveyor dev`, on a free port",
    "127.0.0.1:8000": "the same",
    "$API": "the same, as a URL",
    "$KEY, CONVEYOR_API_KEY=cvk_...": "a key of the tenant team-a with every scope",
    "$KEY_ID": "that key's id",
    "$ID": "a task submitted before the block runs",
    "$NEXT": "the cursor of a listing's first page",
    "$SCHEDULE_ID": "the id of the schedule the README made, read when a block names it",
    "fetch_rows, upsert": "a user's own functions: three rows read, each stored nowhere",
}


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block: its language, where it starts (line number), its text, and why
    it is not run (None: it runs)."""

    language: str
    line: int
    text: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def blocks(path: Path = README) -> list[Block]:
    """Every fenced block of `path`, in order."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    start: int | None = None
    language = ""
    for number, line in enumerate(lines, 1):
        fence = _FENCE.match(line)
        if fence is None:
            continue
        if start is None:
            start, language = number, fence[1]
            continue
        previous = next((lines[n] for n in range(start - 2, -1, -1) if lines[n].strip()), "")
        marked = _NOT_RUN.match(previous.strip())
        text = "\n".join(lines[start : number - 1]) + "\n"
        found.append(Block(language, start, text, marked["why"] if marked else None))
        start = None
    return found


def runnable(path: Path = README) -> list[Block]:
    """The shell and Python blocks a test runs."""
    return [b for b in blocks(path) if b.language in ("sh", "bash", "python") and not b.not_run]
