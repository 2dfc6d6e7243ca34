"""The one boundary for what a handler gives back: its result, its error (with its
traceback), its progress, its log lines.

A statement that serves many tasks (the lease renewal of every task a worker holds, a
batch of results) fails whole when one of its values cannot be stored, and PostgreSQL
keeps neither a NUL character nor a lone surrogate (what `os.fsdecode` makes of a file
name that is not UTF-8) in text or jsonb. So nothing a handler gives back reaches a
statement before it passes here: strings are made valid UTF-8 without NUL, and a result is
bounded in depth and size; what cannot be made fit (NaN, a type JSON does not have, too
deep, too large) is refused with a reason, which fails that attempt alone. A traceback
is cut at its start (its last lines say most), and an attempt's log keeps its last lines.

Pure Python: no framework, no I/O.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import traceback
from collections import deque
from dataclasses import dataclass
from datetime import datetime
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
    # An attempt keeps the last lines its handler logged, up to this many bytes of JSON.
    log_max_bytes: int = 65_536


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


def clean_tail(text: str, max_bytes: int) -> str:
    """`text` cleaned as by clean_text, but past `max_bytes` its end is kept, after a
    note of how much was cut: what a traceback's last lines say matters most."""
    text = clean_text(text)
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    note = f"[{len(encoded)} bytes, cut to {max_bytes}] "
    keep = max(max_bytes - len(note.encode()), 0)
    return note + encoded[len(encoded) - keep :].decode(errors="ignore")


def error_type(error: BaseException) -> str:
    """The class of `error` as a traceback names it: `module.Name`, a built-in's bare."""
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def traceback_text(error: BaseException, max_bytes: int) -> str | None:
    """The traceback of `error` (with its causes), its files named as imported, cleaned and
    cut to `max_bytes` as by clean_tail; None when it cannot be formatted."""
    try:
        shown = traceback.TracebackException.from_exception(error)
        chain: list[traceback.TracebackException | None] = [shown]
        while chain:  # the exception and its causes and contexts, each with its frames
            link = chain.pop()
            if link is not None:
                imported(link.stack)
                chain += [link.__cause__, link.__context__]
        text = "".join(shown.format())
    except Exception:  # noqa: BLE001 - a handler's exception may break even this
        return None
    return clean_tail(text, max_bytes)


def imported(stack: traceback.StackSummary) -> traceback.StackSummary:
    """`stack` with each file named by its import path (`services/core/kinds.py`,
    `my_company/tasks.py`), not where it is installed: a traceback shown to a tenant says
    nothing of the worker's file system, and reads the same from every image."""
    roots = sorted((entry.rstrip("/") + "/" for entry in sys.path if entry), key=len, reverse=True)
    for frame in stack:
        root = next((r for r in roots if frame.filename.startswith(r)), None)
        if root is not None:
            frame.filename = frame.filename[len(root) :]
    return stack


@dataclass(frozen=True, slots=True)
class LogWindow:
    """An attempt's kept log lines, to store: a JSON array of {logged_at, level, message},
    oldest first, and how many lines the attempt logged in all (those pushed out too)."""

    lines: str
    logged: int


# No single line takes more of an attempt's log than this (nor more than a quarter).
LINE_MAX_BYTES = 8192


class AttemptLog:
    """The last lines a handler logged in one attempt, within `max_bytes` of JSON: a new
    line pushes the oldest out. Each message is cleaned as by clean_text and cut to
    LINE_MAX_BYTES. Handlers may log from threads of their own, hence the lock."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._line_max = min(LINE_MAX_BYTES, max_bytes // 4)
        self._lines: deque[tuple[str, int]] = deque()  # each line's JSON, and its size
        self._size = 2  # the array's brackets
        self._lock = threading.Lock()
        self.logged = 0
        # What was last taken to store: how many lines had been logged, and when.
        self._taken = 0
        self._taken_at = float("-inf")

    def add(self, at: datetime, level: str, message: str) -> None:
        """Keep one line, logged `at`, pushing out the oldest past the bound."""
        line = {"logged_at": at.isoformat(), "level": level}
        text = json.dumps({**line, "message": clean_text(message, self._line_max)})
        size = len(text) + 1  # ASCII (json.dumps escapes the rest), and its comma
        with self._lock:
            self._lines.append((text, size))
            self._size += size
            self.logged += 1
            while self._size > self._max_bytes:
                self._size -= self._lines.popleft()[1]

    def window(self) -> LogWindow | None:
        """Every kept line, to store with the attempt's end; None when it logged none."""
        with self._lock:
            if not self.logged:
                return None
            self._taken = self.logged
            return LogWindow(f"[{','.join(text for text, _ in self._lines)}]", self.logged)

    def due(self, now: float, every: float) -> LogWindow | None:
        """The kept lines while the attempt runs, when some are new since they were last
        taken, at least `every` seconds before `now` (a monotonic clock's); else None."""
        if self.logged == self._taken or now - self._taken_at < every:
            return None
        self._taken_at = now
        return self.window()


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
