"""A private RabbitMQ node on its own ports, for tests that stop or break the broker.

The shared node on 5672 is never touched. The server drops to the `rabbitmq` user, so
its folder is handed to that user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def rabbitmq_available() -> bool:
    return shutil.which("rabbitmq-server") is not None and shutil.which("rabbitmqctl") is not None


class PrivateRabbit:
    def __init__(self, port: int, *, consumer_timeout_ms: int | None = None) -> None:
        self.port = port
        self.node = f"conveyor-test-{port}@localhost"
        self.folder = Path(tempfile.mkdtemp(prefix=f"conveyor-rabbit-{port}-"))
        config = [f"listeners.tcp.default = 127.0.0.1:{port}", "loopback_users = none"]
        # The broker checks consumer timeouts on each channel tick (once a minute by
        # default); a one-second tick lets a test see the timeout act in seconds.
        advanced = "[]."
        if consumer_timeout_ms is not None:
            config.append(f"consumer_timeout = {consumer_timeout_ms}")
            advanced = "[{rabbit, [{channel_tick_interval, 1000}]}]."
        (self.folder / "rabbitmq.conf").write_text("\n".join(config) + "\n")
        (self.folder / "advanced.config").write_text(advanced + "\n")
        (self.folder / "enabled_plugins").write_text("[].\n")
        shutil.chown(self.folder, "rabbitmq", "rabbitmq")
        os.chmod(self.folder, 0o755)
        for child in self.folder.iterdir():
            shutil.chown(child, "rabbitmq", "rabbitmq")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 20000),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.folder / "pid"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
        }

    def _ctl(self, *args: str, timeout: float = 90) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        """Start the node and return once it accepts connections."""
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=30,
        )
        self._ctl("wait", str(self.folder / "pid"), "--timeout", "90")

    def stop(self) -> None:
        """Stop the node (its data stays, so start() brings the same queues back)."""
        self._ctl("stop", timeout=60)

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)
