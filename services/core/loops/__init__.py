"""Background loops: a module each, one registry of who runs which, one way to run them.

Each loop is a small class (`Loop`): its name, its pass and its rest between passes.
`registry.py` says which process runs which loop under which setting; `running.py` starts
a process's loops in one TaskGroup under its Supervisor, the same way in every process.
A new loop is a module here and a line in the registry. `wiring.py` subscribes each
process's listeners to its store's status changes (services/core/events.py).
"""

from services.core.loops.loop import Loop, Parts
from services.core.loops.registry import loops_of
from services.core.loops.running import Running, run_loops, running
from services.core.loops.wiring import subscribe

__all__ = ["Loop", "Parts", "Running", "loops_of", "run_loops", "running", "subscribe"]
