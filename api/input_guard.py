"""One rule for hostile text: control bytes never reach storage or a query.

Postgres refuses NUL in text and in jsonb (a 500 if it gets that far); SQLite stores it silently.
Ids, cursors, names, purposes, metadata and every string inside a JSON body are checked here,
before any query, and refused with 400 ``invalid_characters`` naming the field. Tab, newline and
carriage return are allowed only where text legitimately carries them (JSON values nested in
free-form documents); identifiers and names allow none.

Three ways in, one predicate (:func:`control_char_at`):
- :data:`SafeStr` / :data:`FreeText`: pydantic annotated types for request-body fields;
- :func:`check_path_and_query`: an app-wide dependency over path parameters and query strings;
- :func:`check_json_value`: a bounded walk over free-form JSON (policy documents, integrations).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Request
from pydantic import AfterValidator, BeforeValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from api.errors import InvalidRequest

INVALID_CHARACTERS = "invalid_characters"
TOO_COMPLEX = "json_too_complex"
TEXT_WHITESPACE = frozenset("\t\n\r")
# Free-form JSON in a request body (policy, integrations, method options): generous for real
# documents, small enough that a walk over it is cheap and its storage bounded.
MAX_JSON_DEPTH = 16
MAX_JSON_NODES = 10_000
# The same rule for the OpenAPI document (ECMA and Python regex): no C0/C1 control or DEL.
NO_CONTROL_CHARS_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
FREE_TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"


def control_char_at(text: str, *, allow_whitespace: bool = False) -> int | None:
    """Index of the first C0/C1 control character, DEL or lone surrogate in ``text``, else None.

    Lone surrogates (U+D800–U+DFFF) arrive through JSON escapes such as ``"\\ud800"``; they are
    not encodable as UTF-8, so the database driver would fail on them (a 500) like on NUL.
    """
    for index, ch in enumerate(text):
        code = ord(ch)
        if code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF:
            if allow_whitespace and ch in TEXT_WHITESPACE:
                continue
            return index
    return None


def _describe(text: str, index: int) -> str:
    return (
        "must not contain control characters or unpaired surrogates "
        f"(U+{ord(text[index]):04X} at position {index})"
    )


# Before-validators: they run ahead of a field's own pattern / length constraints, so a NUL is
# reported as invalid_characters, not as a pattern mismatch. Non-strings pass through to the
# type check.
def strict_text(value: Any) -> Any:
    if isinstance(value, str):
        index = control_char_at(value)
        if index is not None:
            raise PydanticCustomError(INVALID_CHARACTERS, _describe(value, index))
    return value


def _free(value: Any) -> Any:
    if isinstance(value, str):
        index = control_char_at(value, allow_whitespace=True)
        if index is not None:
            raise PydanticCustomError(INVALID_CHARACTERS, _describe(value, index))
    return value


class _DocumentPattern:
    """Puts the rule in the field's JSON schema (unless the field has a pattern of its own), so
    the OpenAPI document says what the validator enforces."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.setdefault("pattern", self.pattern)
        return schema


# Ids, names, purposes, metadata keys and values: no control character at all.
SafeStr = Annotated[str, BeforeValidator(strict_text), _DocumentPattern(NO_CONTROL_CHARS_PATTERN)]
# Prose-like text (may hold tab / newline / CR, never NUL or other controls).
FreeText = Annotated[str, BeforeValidator(_free), _DocumentPattern(FREE_TEXT_PATTERN)]


class JsonShapeError(ValueError):
    def __init__(self, path: str, message: str, code: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.code = code


def check_json_value(value: Any, path: str = "") -> None:
    """Raise JsonShapeError if free-form JSON is too deep, too big or holds control characters.

    Keys are checked like identifiers, string values like prose. Iterative (an explicit stack),
    so a hostile depth cannot exhaust the interpreter's recursion limit before the check fires.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    nodes = 0
    while stack:
        item, where, depth = stack.pop()
        nodes += 1
        if nodes > MAX_JSON_NODES:
            raise JsonShapeError(
                path or "body", f"holds more than {MAX_JSON_NODES} values", TOO_COMPLEX
            )
        if depth > MAX_JSON_DEPTH:
            raise JsonShapeError(
                where or "body", f"nests deeper than {MAX_JSON_DEPTH} levels", TOO_COMPLEX
            )
        if isinstance(item, str):
            index = control_char_at(item, allow_whitespace=True)
            if index is not None:
                raise JsonShapeError(where or "body", _describe(item, index), INVALID_CHARACTERS)
        elif isinstance(item, Mapping):
            for key, child in item.items():
                key_text = str(key)
                index = control_char_at(key_text)
                if index is not None:
                    raise JsonShapeError(
                        where or "body", f"a key {_describe(key_text, index)}", INVALID_CHARACTERS
                    )
                stack.append((child, f"{where}.{key_text}" if where else key_text, depth + 1))
        elif isinstance(item, list | tuple):
            for position, child in enumerate(item):
                stack.append((child, f"{where}[{position}]", depth + 1))


def _json_shape(value: Any) -> Any:
    try:
        check_json_value(value)
    except JsonShapeError as exc:
        # The path inside the document goes into the message; pydantic's loc names the field.
        raise PydanticCustomError(
            exc.code, "{where}: {message}", {"where": exc.path, "message": exc.message}
        ) from None
    return value


# A free-form JSON object or list in a request schema (bounded depth, size, no control bytes).
BoundedJson = AfterValidator(_json_shape)


def _query_param_name(key: str) -> str:
    # `metadata[k]` filters are named by their family when the key itself is the problem.
    if control_char_at(key) is not None:
        head = key.split("[", 1)[0]
        return head if head and control_char_at(head) is None else "query"
    return key


def check_path_and_query(request: Request) -> None:
    """App-wide dependency: every path parameter and query key/value is control-free.

    Runs before the route's own dependencies (auth, the session), so a NUL in an id or an
    `after` cursor never reaches a query.
    """
    for name, value in request.path_params.items():
        index = control_char_at(str(value))
        if index is not None:
            raise InvalidRequest(
                f"Invalid parameter '{name}': {_describe(str(value), index)}.",
                param=name,
                code=INVALID_CHARACTERS,
            )
    for key, value in request.query_params.multi_items():
        name = _query_param_name(key)
        for text in (key, value):
            index = control_char_at(text)
            if index is not None:
                raise InvalidRequest(
                    f"Invalid parameter '{name}': {_describe(text, index)}.",
                    param=name,
                    code=INVALID_CHARACTERS,
                )
