"""The example task code (examples/uploads) on a real API and worker: named in the task
modules setting, its kinds are accepted, run, and their results and failures recorded."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.core.settings import Settings
from tests.support.services import running_api, running_worker, submit, wait_for

EXAMPLES = Path(__file__).parents[2] / "examples"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No line per request in the test's output."""


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The uploads store: a folder served on loopback at UPLOADS_URL."""
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        monkeypatch.setenv("UPLOADS_URL", f"http://127.0.0.1:{server.server_port}/")
        yield tmp_path
        server.shutdown()


async def test_the_example_kinds_run_on_a_worker_that_names_their_module(
    settings: Settings, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    settings = settings.model_copy(update={"task_modules": ["uploads.handlers"]})
    (store / "photo.jpg").write_bytes(b"\xff\xd8" * 1000)
    sha256 = hashlib.sha256(b"\xff\xd8" * 1000).hexdigest()
    async with running_api(settings) as api, running_worker(settings):
        verify = await submit(
            api, kind="verify_upload", payload={"key": "photo.jpg", "sha256": sha256}
        )
        missing = await submit(api, kind="upload_size", payload={"key": "gone.jpg"})
        bad = {
            "title": "t",
            "kind": "verify_upload",
            "payload": {"key": "../etc/passwd", "sha256": "0" * 64},
        }
        refused = await api.post("/api/v1/tasks", json=bad)
        verified, failed = await wait_for(api, verify["id"]), await wait_for(api, missing["id"])
    assert verified["status"] == "COMPLETED", verified["error"]
    assert verified["result"] == {"key": "photo.jpg", "bytes": 2000, "sha256": sha256}
    assert verified["progress"] == {"fraction": 1.0, "note": "2000 of 2000 bytes"}
    assert (failed["status"], failed["attempts"]) == ("FAILED", 1)  # not retried
    assert failed["error"] == "gone.jpg: the store answers 404"
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"] == ["body", "payload", "key"]
