"""A task's payload: documented as a JSON object, and checked for what PostgreSQL cannot
keep in one."""

from __future__ import annotations

import math
from json.encoder import encode_basestring
from typing import Annotated, Any

from pydantic import PlainValidator

PAYLOAD_LIMIT = 64 * 1024


def _json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


# Validated as a plain object (a recursive union would report every error of every branch
# of every item: megabytes of errors for a body of bad items), and documented as one:
# payload_problem() checks what JSON Schema says poorly and generators read worse (no NUL
# in strings and keys, no NaN, depth and size).
Payload = Annotated[
    dict[str, Any], PlainValidator(_json_object, json_schema_input_type=dict[str, Any])
]


class _Unfit(ValueError):
    """What PostgreSQL could not keep in a payload."""


_LITERALS = {None: 4, True: 4, False: 5}  # null, true, false


def payload_problem(
    payload: dict[str, Any], max_depth: int, max_bytes: int = PAYLOAD_LIMIT
) -> tuple[int, str] | None:
    """Why `payload` cannot be stored, as (HTTP status, message); None when it can.

    One pass without recursion, stopping at the first problem: nesting deeper than
    `max_depth`, a NUL or a lone surrogate in a string or key (jsonb keeps neither),
    NaN or Infinity, anything else that is not JSON (422), or more than `max_bytes` as
    compact JSON in UTF-8 (413).
    """
    size, stack = 0, [(payload, 1)]
    try:
        while stack:
            value, depth = stack.pop()
            size += _bytes(value, depth, max_depth, stack)
            if size > max_bytes:
                return 413, f"the payload is over {max_bytes} bytes as compact UTF-8 JSON"
    except _Unfit as problem:
        return 422, str(problem)
    return None


def _bytes(value: Any, depth: int, max_depth: int, stack: list[tuple[Any, int]]) -> int:
    """The size of `value` without its children, which go on `stack` one level deeper."""
    if not isinstance(value, dict | list):
        return _scalar_bytes(value)
    if depth > max_depth:
        raise _Unfit(f"the payload nests deeper than {max_depth} levels")
    if isinstance(value, list):
        stack.extend((child, depth + 1) for child in value)
        return 2 + max(len(value) - 1, 0)  # [] and commas
    stack.extend((child, depth + 1) for child in value.values())
    return 2 + max(2 * len(value) - 1, 0) + sum(map(_key_bytes, value))  # {}, : and commas


def _key_bytes(key: Any) -> int:
    if not isinstance(key, str):
        raise _Unfit("an object key is not a string")
    return _text_bytes(key)


def _scalar_bytes(value: Any) -> int:
    if isinstance(value, str):
        return _text_bytes(value)
    if value is None or isinstance(value, bool):
        return _LITERALS[value]
    if isinstance(value, int):
        return len(int.__repr__(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unfit("NaN and Infinity are not JSON numbers")
        return len(float.__repr__(value))
    raise _Unfit(f"a {type(value).__name__} is not a JSON value")


def _text_bytes(text: str) -> int:
    if "\x00" in text:
        raise _Unfit("a string or key holds a NUL character, which PostgreSQL cannot keep")
    try:
        return len(encode_basestring(text).encode())  # as json.dumps(ensure_ascii=False)
    except UnicodeEncodeError:
        raise _Unfit("a string or key holds a lone surrogate, which is not UTF-8") from None
