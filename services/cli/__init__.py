"""The `conveyor` command: `main` runs the service's processes (`main.py`), the client
commands (`client.py`) and the key commands (`keys.py`)."""

from services.cli.main import main

__all__ = ["main"]
