"""Task kinds of an uploads service: checking files that users uploaded to an object store.

A task names an upload by its `key` under UPLOADS_URL, a setting of the worker (for
example https://uploads.example.com/incoming/), never by a URL of its own: a tenant cannot
point the worker at another host. Each kind's payload is a pydantic model: the worker
registers its JSON Schema, and the API refuses a payload that does not fit, naming the
field, before any task is stored. An upload that is not there fails for good (TaskFailed,
not retryable); a store that is away or answers 5xx raises, and the worker tries again.
Blocking reads run in a thread, so the worker's other tasks go on meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPResponse
from typing import Annotated, Any

from pydantic import BaseModel, Field

from conveyor import TaskContext, TaskFailed, kind

CHUNK_BYTES = 1 << 20
READ_TIMEOUT_SECONDS = 30
# What the store answers for an upload that will not appear by trying again.
_FOR_GOOD = frozenset({400, 401, 403, 404, 410})

# A path under UPLOADS_URL: segments that start with a letter or digit, so never . or ..
Key = Annotated[
    str,
    Field(
        max_length=512,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$",
        description="The upload's path under the store's address",
    ),
]


class Upload(BaseModel):
    key: Key


class Verification(Upload):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Its expected SHA-256, in hex")


@kind("verify_upload", payload=Verification, timeout_seconds=600)
async def verify_upload(payload: Verification, context: TaskContext) -> dict[str, Any]:
    """Read the upload `key` and check it against its `sha256`, reporting progress."""
    key, expected = payload.key, payload.sha256
    digest, size = hashlib.sha256(), 0
    response = await _open(key, "GET")
    try:
        total = int(response.headers.get("Content-Length") or 0)
        while chunk := await asyncio.to_thread(response.read, CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            if total:
                context.progress(min(size / total, 1.0), f"{size} of {total} bytes")
    finally:
        response.close()
    if digest.hexdigest() != expected:
        raise TaskFailed(f"{key}: sha256 {digest.hexdigest()}, not {expected}", retryable=False)
    context.logger.info("verified %s: %d bytes (attempt %d)", key, size, context.attempt)
    return {"key": key, "bytes": size, "sha256": expected}


@kind("upload_size", payload=Upload, timeout_seconds=30)
async def upload_size(payload: Upload) -> dict[str, Any]:
    """The size and type of the upload `key`, as the store tells them (a HEAD request)."""
    key = payload.key
    response = await _open(key, "HEAD")
    response.close()
    size = response.headers.get("Content-Length")
    return {
        "key": key,
        "bytes": int(size) if size is not None else None,
        "type": response.headers.get_content_type(),
    }


async def _open(key: str, method: str) -> HTTPResponse:
    """The store's answer for `key`; TaskFailed for good when the upload is not there."""
    base = os.environ.get("UPLOADS_URL")
    if not base:  # the worker's configuration: fixed, the task's next attempt succeeds
        raise RuntimeError("UPLOADS_URL is not set on this worker")
    url = urllib.parse.urljoin(base.rstrip("/") + "/", urllib.parse.quote(key))
    request = urllib.request.Request(url, method=method)
    try:
        response: HTTPResponse = await asyncio.to_thread(
            urllib.request.urlopen, request, timeout=READ_TIMEOUT_SECONDS
        )
    except urllib.error.HTTPError as error:
        error.close()
        if error.code in _FOR_GOOD:
            raise TaskFailed(f"{key}: the store answers {error.code}", retryable=False) from None
        raise
    return response
