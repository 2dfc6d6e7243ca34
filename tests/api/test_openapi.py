"""The OpenAPI document: valid, named, every problem and header documented, and a client
generated from it by a standard generator works against the server."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from openapi_spec_validator import validate

CAMEL = re.compile(r"^[a-z]+(?:[A-Z][a-z]*)*$")


async def _document(api: httpx.AsyncClient) -> dict[str, Any]:
    return (await api.get("/openapi.json")).json()  # type: ignore[no-any-return]


async def test_the_document_is_valid_and_every_operation_is_named(api: httpx.AsyncClient) -> None:
    spec = await _document(api)
    validate(spec)
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)) and all(CAMEL.match(i) for i in ids), ids
    assert {"submitTask", "listTasks", "getTask", "cancelTask", "retryTask", "submitTasks"} <= set(
        ids
    )
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_problems_headers_examples_and_descriptions_are_documented(
    api: httpx.AsyncClient,
) -> None:
    spec = await _document(api)
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            where = f"{method.upper()} {path}"
            for status, response in operation["responses"].items():
                if status >= "400":
                    assert list(response["content"]) == ["application/problem+json"], where
                if status in ("429", "503"):
                    assert "Retry-After" in response["headers"], where
                if status == "401":
                    assert "WWW-Authenticate" in response["headers"], where
            if "requestBody" in operation:
                assert "400" in operation["responses"], where
    created = spec["paths"]["/api/v1/tasks"]["post"]
    assert "Location" in created["responses"]["201"]["headers"]
    assert any(p["name"].lower() == "idempotency-key" for p in created["parameters"])
    for name, schema in spec["components"]["schemas"].items():
        if schema.get("type") == "object":
            assert schema.get("examples"), name
        for field, prop in (schema.get("properties") or {}).items():
            assert prop.get("description"), f"{name}.{field}"


async def test_a_wrong_method_is_told_every_allowed_one(api: httpx.AsyncClient) -> None:
    answer = await api.put("/api/v1/tasks")
    assert answer.status_code == 405
    assert set(answer.headers["allow"].split(", ")) >= {"GET", "POST"}
    assert answer.headers["content-type"] == "application/problem+json"


async def test_a_client_generated_from_the_document_round_trips(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    (tmp_path / "spec.json").write_text(json.dumps(await _document(api)))
    (tmp_path / "config.yaml").write_text(
        "package_name_override: conveyor_generated\nproject_name_override: conveyor-generated\n"
    )
    generator = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    assert generator is not None
    done = await asyncio.to_thread(
        subprocess.run,
        [
            generator,
            "generate",
            "--path",
            str(tmp_path / "spec.json"),
            "--config",
            str(tmp_path / "config.yaml"),
            "--output-path",
            str(tmp_path / "conveyor_generated"),
            "--meta",
            "none",
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        generated = importlib.import_module("conveyor_generated")
        submit = importlib.import_module("conveyor_generated.api.tasks.submit_task")
        get = importlib.import_module("conveyor_generated.api.tasks.get_task")
        listing = importlib.import_module("conveyor_generated.api.tasks.list_tasks")
        models = importlib.import_module("conveyor_generated.models")
    finally:
        sys.path.remove(str(tmp_path))
    client = generated.Client(base_url=str(api.base_url))
    body = models.TaskCreate(title="generated", kind="echo", priority=models.Priority.HIGH)
    task = await submit.asyncio(client=client, body=body)
    assert isinstance(task, models.Task) and task.title == "generated"
    again = await get.asyncio(task_id=task.id, client=client)
    assert again.id == task.id and again.priority == models.Priority.HIGH
    page = await listing.asyncio(client=client, limit=5)
    assert task.id in [item.id for item in page.items]
    missing = await get.asyncio_detailed(
        task_id="00000000-0000-0000-0000-000000000000", client=client
    )
    assert (
        missing.status_code == 404 and missing.parsed.type_ == "urn:conveyor:problem:task-not-found"
    )
