"""The chart's values reference (charts/conveyor/VALUES.md), made from values.yaml: each
key's one-line comment and its default. `python -m tests.chart.reference` writes it; a
test fails while it is out of date."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).parents[2] / "charts" / "conveyor"
REFERENCE = CHART / "VALUES.md"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):")


def _default(values: dict[str, Any], path: list[str]) -> Any:
    for key in path:
        values = values[key]
    return values


def rows() -> list[tuple[str, str, str]]:
    """(key path, default as JSON, description) for every key that has a comment."""
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    found: list[tuple[str, str, str]] = []
    comments: list[str] = []
    stack: list[str] = []
    in_list = 10**6  # the indent of a list being skipped: its items are examples, not keys
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            comments.append(stripped.lstrip("#").strip())
            continue
        if stripped and indent <= in_list and not stripped.startswith("-"):
            in_list = 10**6
        match = _KEY.match(line)
        if stripped.startswith("-"):
            in_list = min(in_list, indent)
        if not match or indent > in_list:
            comments = []
            continue
        depth = len(match["indent"]) // 2
        stack = [*stack[:depth], match["key"]]
        default = _default(values, stack)
        if comments and not comments[0].startswith("yaml-language-server"):
            shown = "(a section)" if isinstance(default, dict) and default else json.dumps(default)
            found.append((".".join(stack), shown, " ".join(comments)))
        comments = []
    return found


def render() -> str:
    lines = [
        "# Values of the conveyor chart",
        "",
        "Made from `values.yaml` by `python -m tests.chart.reference`; `values.schema.json`",
        "holds the types and limits, and refuses unknown keys.",
        "",
        "| key | default | what it does |",
        "|---|---|---|",
    ]
    for key, default, text in rows():
        lines.append(f"| `{key}` | `{default}` | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    REFERENCE.write_text(render())
