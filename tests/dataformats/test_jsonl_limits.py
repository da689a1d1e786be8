"""Upload decoding limits: depth, integer size and constants are line-level errors, not crashes."""

from __future__ import annotations

import json
import time

import pytest

from dataformats.jsonl import MAX_INT_DIGITS, MAX_JSON_DEPTH, validate_jsonl

GOOD = json.dumps({"prompt": "2+2?", "completion": "4"})


def _errors(*lines: str) -> list[tuple[int, str, str]]:
    report = validate_jsonl([line.encode() for line in lines])
    return [(e.line, e.field, e.message) for e in report.errors]


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_nesting_is_a_line_error(depth: int) -> None:
    started = time.perf_counter()
    errors = _errors(GOOD, "[" * depth + "]" * depth, GOOD)
    assert errors == [(2, "(line)", f"nests deeper than {MAX_JSON_DEPTH} levels")]
    # Linear in the line, never the decoder's recursion.
    assert time.perf_counter() - started < 5


def test_deep_object_nesting_inside_a_row() -> None:
    nested = '{"a":' * 40 + "1" + "}" * 40
    line = '{"prompt": "x", "completion": "y", "extra": ' + nested + "}"
    assert _errors(line) == [(1, "(line)", f"nests deeper than {MAX_JSON_DEPTH} levels")]


def test_brackets_inside_strings_do_not_count() -> None:
    text = "[" * 200 + '\\"{' * 50
    line = json.dumps({"prompt": text, "completion": "]]]"})
    report = validate_jsonl([line])
    assert report.ok, report.errors
    assert report.rows == 1


def test_depth_at_the_limit_is_accepted_by_the_decoder() -> None:
    # Depth exactly MAX_JSON_DEPTH decodes (the row itself is then checked for its format).
    line = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    [(line_no, field, message)] = _errors(line)
    assert (line_no, field) == (1, "(row)")
    assert "must be a JSON object" in message


@pytest.mark.parametrize("digits", [MAX_INT_DIGITS + 1, 5_000, 100_000])
def test_huge_integer_literals_are_line_errors(digits: int) -> None:
    line = '{"prompt": "x", "completion": "y", "n": ' + "9" * digits + "}"
    assert _errors(GOOD, line) == [
        (2, "(line)", f"has an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    ]


def test_integer_at_the_limit_and_negative_integers_pass() -> None:
    line = '{"prompt": "x", "completion": "y", "n": -' + "9" * MAX_INT_DIGITS + "}"
    assert validate_jsonl([line]).ok


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_constants_are_refused(constant: str) -> None:
    line = '{"prompt": "x", "completion": "y", "n": ' + constant + "}"
    assert _errors(line) == [(1, "(line)", f"is not valid JSON: {constant} is not a JSON number")]
