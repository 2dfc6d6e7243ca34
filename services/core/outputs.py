"""The one boundary for what a handler gives back: its result, its error, its progress.

A statement that serves many tasks (the lease renewal of every task a worker holds, a
batch of results) fails whole when one of its values cannot be stored, and PostgreSQL
keeps neither a NUL character nor a lone surrogate (what `os.fsdecode` makes of a file
name that is not UTF-8) in text or jsonb. So nothing a handler gives back reaches a
statement before it passes here: strings are made valid UTF-8 without NUL, and a result is
bounded in depth and size; what cannot be made fit (NaN, a type JSON does not have, too
deep, too large) is refused with a reason, which fails that attempt alone.

Pure Python: no framework, no I/O.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

REPLACEMENT = "\ufffd"


class OutputRefused(ValueError):
    """A handler's result that cannot be stored; the message says why."""


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """How large a handler's result and error may be, and how deep a result may nest."""

    result_max_bytes: int = 1_048_576
    result_max_depth: int = 32
    error_max_bytes: int = 16_384


def clean_text(text: str, max_bytes: int | None = None) -> str:
    """`text` as PostgreSQL can keep it: lone surrogates and NUL become U+FFFD (a valid
    surrogate pair becomes the character it encodes), and past `max_bytes` of UTF-8 it is
    cut at a character, with a note of how much was cut."""
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        size = len(text.encode())
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    if max_bytes is None or size <= max_bytes:
        return text
    return _cut(text, size, max_bytes)


def _cut(text: str, size: int, max_bytes: int) -> str:
    note = f" [{size} bytes, cut to {max_bytes}]"
    kept = text.encode()[: max(max_bytes - len(note.encode()), 0)]
    return kept.decode(errors="ignore") + note


def result_json(value: Any, limits: OutputLimits) -> str:
    """The JSON text to store for a handler's result: strings and keys cleaned as by
    clean_text, or OutputRefused for NaN or Infinity, a value JSON does not have, nesting
    deeper than `limits.result_max_depth`, or more than `limits.result_max_bytes` bytes."""
    text = json.dumps(_cleaned(value, limits.result_max_depth), ensure_ascii=False)
    size = len(text.encode())
    if size > limits.result_max_bytes:
        raise OutputRefused(
            f"the result is {size} bytes of JSON, over the limit of {limits.result_max_bytes}"
        )
    return text


def _cleaned(value: Any, max_depth: int) -> Any:
    """A copy of `value` with every string and key cleaned; no recursion, so no nesting
    can overflow the stack before the depth is checked."""
    top: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(value, top, 0, 0)]
    while stack:
        item, parent, slot, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                raise OutputRefused(f"the result nests deeper than {max_depth} levels")
            parent[slot] = _container(item, depth, stack)
        else:
            parent[slot] = _scalar(item)
    return top[0]


def _container(item: Any, depth: int, stack: list[tuple[Any, Any, Any, int]]) -> Any:
    """An empty copy of a list or object, its children put on `stack` to fill it."""
    if isinstance(item, dict):
        copy: dict[str, Any] = {}
        for key, child in item.items():
            if not isinstance(key, str):
                raise OutputRefused(f"an object key is a {type(key).__name__}, not a string")
            cleaned = clean_text(key)
            copy[cleaned] = None  # keeps the keys' order
            stack.append((child, copy, cleaned, depth + 1))
        return copy
    items: list[Any] = [None] * len(item)
    stack.extend((child, items, index, depth + 1) for index, child in enumerate(item))
    return items


def _scalar(item: Any) -> Any:
    if isinstance(item, str):
        return clean_text(item)
    if item is None or isinstance(item, bool | int):
        return item
    if isinstance(item, float):
        if not math.isfinite(item):
            raise OutputRefused(f"the result holds {item!r}, which JSON does not have")
        return item
    raise OutputRefused(f"the result holds a {type(item).__name__}, which is not JSON")
