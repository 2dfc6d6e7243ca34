"""The uploads kinds, run as a worker runs them (conveyor.testing), against a store that is
a folder served over HTTP on loopback: no Conveyor server, no network."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from conveyor import TaskFailed
from conveyor.testing import FakeContext, LogLine, Progress, TaskCancelled, run_task
from uploads.handlers import CHUNK_BYTES, upload_size, verify_upload

pytestmark = pytest.mark.asyncio


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No line per request in the test's output."""


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder, served as the uploads store at UPLOADS_URL."""
    handler = functools.partial(_Quiet, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
        thread.start()
        monkeypatch.setenv("UPLOADS_URL", f"http://127.0.0.1:{server.server_port}/incoming")
        (tmp_path / "incoming").mkdir()
        yield tmp_path / "incoming"
        server.shutdown()


def upload(store: Path, key: str, size: int) -> str:
    """Put an upload of `size` bytes in the store; its sha256."""
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    (store / key).parent.mkdir(parents=True, exist_ok=True)
    (store / key).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


async def test_an_upload_that_matches_is_verified_with_progress(store: Path) -> None:
    sha256 = upload(store, "2026/photo.jpg", 2 * CHUNK_BYTES + 10)
    context = FakeContext(attempt=2)
    result = await run_task(
        verify_upload, {"key": "2026/photo.jpg", "sha256": sha256}, context=context
    )
    assert result == {"key": "2026/photo.jpg", "bytes": 2 * CHUNK_BYTES + 10, "sha256": sha256}
    assert len(context.progress_reports) == 3
    assert context.progress_reports[-1] == Progress(1.0, f"{2 * CHUNK_BYTES + 10} of 2097162 bytes")
    assert context.log_lines == [
        LogLine("INFO", "verified 2026/photo.jpg: 2097162 bytes (attempt 2)")
    ]


async def test_an_upload_that_differs_fails_for_good(store: Path) -> None:
    upload(store, "photo.jpg", 100)
    with pytest.raises(TaskFailed, match=r"photo\.jpg: sha256 [0-9a-f]{64}, not 0{64}") as failed:
        await run_task(verify_upload, {"key": "photo.jpg", "sha256": "0" * 64})
    assert not failed.value.retryable


async def test_a_missing_upload_fails_for_good(store: Path) -> None:
    with pytest.raises(TaskFailed, match=r"gone\.jpg: the store answers 404") as failed:
        await run_task(upload_size, {"key": "gone.jpg"})
    assert not failed.value.retryable


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"key": "../secrets", "sha256": "0" * 64},
        {"key": "http://elsewhere.example/x", "sha256": "0" * 64},
        {"key": "photo.jpg", "sha256": "ABC"},
    ],
)
async def test_a_bad_payload_is_refused_by_its_model_before_any_request(
    payload: dict[str, str],
) -> None:
    # The API refuses these at submit time, by the schema the worker registers.
    with pytest.raises(ValidationError):
        await run_task(verify_upload, payload)


async def test_a_worker_without_uploads_url_fails_the_attempt_for_a_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("UPLOADS_URL", raising=False)
    with pytest.raises(RuntimeError, match="UPLOADS_URL is not set"):
        await run_task(upload_size, {"key": "photo.jpg"})


async def test_the_size_and_type_come_from_the_store(store: Path) -> None:
    upload(store, "a/b/report.pdf", 1000)
    result = await run_task("upload_size", {"key": "a/b/report.pdf"}, modules=["uploads.handlers"])
    assert result == {"key": "a/b/report.pdf", "bytes": 1000, "type": "application/pdf"}


class CancelAtFirstProgress(FakeContext):
    """A context whose task is cancelled (DELETE /api/v1/tasks/{id}) once it reports."""

    def progress(self, fraction: float, note: str = "") -> None:
        super().progress(fraction, note)
        self.request_cancel()


async def test_a_cancel_request_stops_the_verification_at_its_next_read(store: Path) -> None:
    sha256 = upload(store, "big.bin", 3 * CHUNK_BYTES)
    context = CancelAtFirstProgress()
    with pytest.raises(TaskCancelled):
        await run_task(verify_upload, {"key": "big.bin", "sha256": sha256}, context=context)
    assert context.progress_reports == [
        Progress(1 / 3, f"{CHUNK_BYTES} of {3 * CHUNK_BYTES} bytes")
    ]
