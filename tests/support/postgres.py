"""A private PostgreSQL on its own port, for tests that stop the database.

PostgreSQL refuses to run as root, so the cluster belongs to the `postgres` user and the
commands run as that user. The shared server on 5432 is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def _bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def postgres_available() -> bool:
    return _bin() is not None and shutil.which("runuser") is not None


class PrivatePostgres:
    def __init__(self, port: int) -> None:
        self.port = port
        self.folder = Path(tempfile.mkdtemp(prefix=f"conveyor-pg-{port}-"))
        shutil.chown(self.folder, "postgres", "postgres")
        os.chmod(self.folder, 0o700)
        self.data = self.folder / "data"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, program: str, *args: str, timeout: float = 120) -> None:
        binary = _bin()
        assert binary is not None
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(binary / program), *args],
            check=True,
            capture_output=True,
            timeout=timeout,
            cwd=self.folder,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        """Stop it at once, as a crash or a failover would (connections are cut)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)
