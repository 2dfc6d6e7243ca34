"""Settings read from the environment."""

from __future__ import annotations

import pydantic
import pytest

from services.core.settings import Settings


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@db/tasks", "postgres://u@db/tasks", "postgresql+asyncpg://u@db/tasks"],
)
def test_a_postgresql_url_gets_the_asyncpg_driver(url: str) -> None:
    assert Settings(database_url=url).database_url == "postgresql+asyncpg://u@db/tasks"


def test_another_driver_is_refused_naming_the_setting() -> None:
    with pytest.raises(pydantic.ValidationError, match="database_url"):
        Settings(database_url="postgresql+psycopg://u@db/tasks")
