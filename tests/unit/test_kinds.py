"""Kinds: the built-in ones, and user kinds loaded from a module named in settings."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from services.core.errors import TaskFailed
from services.core.kinds import load_kinds
from services.core.settings import Settings


def test_builtin_kinds_are_loaded() -> None:
    assert set(load_kinds()) == {"demo", "noop", "sleep", "echo", "fail"}


async def test_builtin_handlers_do_what_api_md_says() -> None:
    kinds = load_kinds()
    assert await kinds["noop"].handler({}) == {}
    assert await kinds["echo"].handler({"a": [1, 2]}) == {"a": [1, 2]}
    assert await kinds["sleep"].handler({"seconds": 0}) == {"slept": 0.0}
    assert (await kinds["demo"].handler({"seconds": 0}))["slept"] == 0.0
    with pytest.raises(TaskFailed) as failed:
        await kinds["fail"].handler({"message": "no", "retryable": False})
    assert str(failed.value) == "no" and not failed.value.retryable
    with pytest.raises(TaskFailed) as bad:
        await kinds["sleep"].handler({"seconds": "x"})
    assert not bad.value.retryable


def test_user_kinds_load_from_the_modules_named_in_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_kinds.py").write_text(
        textwrap.dedent("""
        from services.core.kinds import kind

        @kind("resize", timeout_seconds=30)
        async def resize(payload):
            return {"width": payload["width"] // 2}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CONVEYOR_TASK_MODULES", "my_kinds")
    try:
        kinds = load_kinds(Settings().task_modules)
    finally:
        sys.modules.pop("my_kinds", None)
    assert kinds["resize"].timeout_seconds == 30
    assert "demo" in kinds


def test_a_kind_defined_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clash.py").write_text(
        "from services.core.kinds import kind\n"
        "@kind('echo')\nasync def echo(payload):\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="echo"):
        load_kinds(["clash"])
    sys.modules.pop("clash", None)


def test_a_sync_function_cannot_be_a_kind() -> None:
    from services.core.kinds import kind

    with pytest.raises(TypeError):
        kind("bad")(lambda payload: payload)  # type: ignore[arg-type]


def test_handler_authors_have_one_stable_import() -> None:
    import conveyor
    from services.core.errors import TaskFailed
    from services.core.kinds import TaskContext, kind

    assert sorted(conveyor.__all__) == ["TaskContext", "TaskFailed", "kind"]
    assert (conveyor.kind, conveyor.TaskContext, conveyor.TaskFailed) == (
        kind,
        TaskContext,
        TaskFailed,
    )
