"""Command-line tools the tests run, installed beside this Python when they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def need(what: str, ok: bool) -> None:
    """Fail when `what` is not there (it could not be installed): nothing skips."""
    if not ok:
        pytest.fail(f"{what} is missing")


@cache
def tool(name: str) -> str:
    """The path of `name`; .ci/install-<name> puts it beside this Python the first time."""
    beside = Path(sys.executable).with_name(name)
    found = shutil.which(name) or str(beside)
    if not Path(found).exists():
        subprocess.run(
            [str(ROOT / ".ci" / f"install-{name}"), str(beside.parent)],
            check=False,
            env={**os.environ, "PATH": f"{beside.parent}:{os.environ['PATH']}"},
        )
    need(f"{name} (.ci/install-{name} installs it)", Path(found).exists())
    return found
