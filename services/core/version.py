"""Which Conveyor this is: the installed distribution's version, read once."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("conveyor")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "unknown"
