"""Health, OpenAPI, unknown routes, and the answer while PostgreSQL is away."""

from __future__ import annotations

import httpx

from services.core.settings import Settings
from tests.support.services import free_port, running_api


async def test_health(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health/live")).status_code == 200
    ready = await api.get("/health/ready")
    assert ready.status_code == 200, ready.text


async def test_openapi_and_docs(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    assert {
        "/api/v1/tasks",
        "/api/v1/tasks/{task_id}",
        "/api/v1/tasks/{task_id}/status",
        "/health/live",
        "/health/ready",
    } <= set(spec["paths"])
    assert (await api.get("/docs")).status_code == 200


async def test_unknown_routes_and_methods_answer_problems(api: httpx.AsyncClient) -> None:
    missing = await api.get("/api/v1/nothing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await api.put("/api/v1/tasks")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == "application/problem+json"


async def test_postgresql_unreachable_answers_503_with_retry_after(settings: Settings) -> None:
    # Nothing listens on this port: the database is unreachable, not broken.
    away = settings.model_copy(
        update={"database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/conveyor"}
    )
    async with running_api(away, ready=False) as api:
        for response in [
            await api.post("/api/v1/tasks", json={"title": "t"}),
            await api.get("/api/v1/tasks"),
            await api.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000"),
        ]:
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"].isdigit()
            assert response.headers["content-type"] == "application/problem+json"
            assert "Traceback" not in response.text
        ready = await api.get("/health/ready")
        assert ready.status_code == 503
        assert "postgresql" in ready.json()["detail"]
