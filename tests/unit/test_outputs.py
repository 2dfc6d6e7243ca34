"""The output boundary: what a handler gives back is made fit for PostgreSQL, or refused."""

from __future__ import annotations

import json
import uuid

import pytest

from services.core.outputs import OutputLimits, OutputRefused, clean_text, result_json

LIMITS = OutputLimits(result_max_bytes=4096, result_max_depth=8, error_max_bytes=64)


def _nested(depth: int) -> object:
    value: object = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def test_lone_surrogates_and_nul_become_the_replacement_character() -> None:
    assert clean_text("a\udc80b\x00c\ud800") == "a\ufffdb\ufffdc\ufffd"


def test_a_surrogate_pair_becomes_the_character_it_encodes() -> None:
    assert clean_text("smile \ud83d\ude00") == "smile \U0001f600"


def test_valid_text_is_returned_as_it_is() -> None:
    text = "grüße, 世界"
    assert clean_text(text, 1024) is text


def test_long_text_is_cut_at_a_character_and_says_so() -> None:
    cut = clean_text("é" * 1000, 64)
    assert len(cut.encode()) <= 64
    assert cut.startswith("éé") and cut.endswith("[2000 bytes, cut to 64]")


def test_a_result_is_json_text_with_its_strings_and_keys_cleaned() -> None:
    value = {"name\udc80": ["a\x00", 1, 2.5, True, None, ("t",)], "ok": "fine"}
    assert json.loads(result_json(value, LIMITS)) == {
        "name\ufffd": ["a\ufffd", 1, 2.5, True, None, ["t"]],
        "ok": "fine",
    }


def test_the_keys_keep_their_order() -> None:
    assert result_json({"b": 1, "a": 2, "c": 3}, LIMITS) == '{"b": 1, "a": 2, "c": 3}'


def test_nesting_to_the_limit_passes_and_one_deeper_is_refused() -> None:
    assert json.loads(result_json(_nested(8), LIMITS)) == _nested(8)
    with pytest.raises(OutputRefused, match="nests deeper than 8 levels"):
        result_json(_nested(9), LIMITS)


def test_nesting_far_past_the_interpreter_s_recursion_limit_is_refused_not_crashed() -> None:
    with pytest.raises(OutputRefused, match="nests deeper"):
        result_json(_nested(100_000), LIMITS)


def test_a_result_over_the_size_limit_is_refused_with_its_size() -> None:
    with pytest.raises(OutputRefused, match=r"is 5\d{3} bytes of JSON, over the limit of 4096"):
        result_json({"x": "y" * 5000}, LIMITS)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"x": float("nan")}, "holds nan, which JSON does not have"),
        ([float("inf")], "holds inf"),
        ({"x": {1, 2}}, "holds a set, which is not JSON"),
        ({"x": b"bytes"}, "holds a bytes"),
        ({"x": uuid.UUID(int=0)}, "holds a UUID"),
        ({1: "one"}, "an object key is a int, not a string"),
    ],
    ids=["nan", "infinity", "set", "bytes", "uuid", "int-key"],
)
def test_what_json_does_not_have_is_refused(value: object, reason: str) -> None:
    with pytest.raises(OutputRefused, match=reason):
        result_json(value, LIMITS)
