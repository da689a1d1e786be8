"""Parse and validate JSONL training rows: chat `messages`, prompt/completion and Alpaca.

Every problem is reported with its 1-based line number and the field it concerns, so a
customer can fix a 10,000-line file in one pass instead of one error at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from dataformats.conversation import Conversation, Message

MAX_REPORTED_ERRORS = 100
ROLES = ("system", "user", "assistant")
# A training row nests 3 deep ({"messages": [{...}]}); 32 leaves room for any honest row while
# keeping the C decoder far from the interpreter's recursion limit (a 100,000-deep line raised
# RecursionError, a 500).
MAX_JSON_DEPTH = 32
# No field of a row is a large integer (weights are 0/1). CPython refuses to convert integer
# literals over 4,300 digits with a ValueError (a 500 before this limit), and conversion is
# quadratic below that.
MAX_INT_DIGITS = 32
# Strings (C-speed match, escapes included) or single brackets: the depth scan's tokens.
_DEPTH_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class DatasetFormat(StrEnum):
    CHAT = "chat"
    PROMPT_COMPLETION = "prompt_completion"
    ALPACA = "alpaca"


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, field '{self.field}': {self.message}"


@dataclass
class ValidationReport:
    rows: int = 0
    format: DatasetFormat | None = None
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    conversations: list[Conversation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and self.rows > 0


class JsonLimitError(ValueError):
    """A line exceeds a decoding limit (depth, integer size, a non-standard constant)."""


def _max_depth(text: str, limit: int) -> int:
    """Nesting depth of a JSON text, stopping early once ``limit`` is passed.

    Brackets inside strings do not count. Cheap first: a line with at most ``limit`` opening
    brackets in total cannot nest deeper, and that count runs at C speed.
    """
    if text.count("[") + text.count("{") <= limit:
        return 0
    depth = deepest = 0
    for match in _DEPTH_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif token in "]}":
            depth -= 1
    return deepest


def _bounded_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JsonLimitError(f"has an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(literal)


def _no_constant(name: str) -> float:
    raise JsonLimitError(f"is not valid JSON: {name} is not a JSON number")


def decode_line(text: str) -> object:
    """json.loads with the upload's limits; raises JsonLimitError or json.JSONDecodeError."""
    if _max_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise JsonLimitError(f"nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except RecursionError:
        # Unreachable after the depth scan; kept so no decoder limit can ever surface as a 500.
        raise JsonLimitError(f"nests deeper than {MAX_JSON_DEPTH} levels") from None


class RowFormatError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


def _require_text(row: dict[str, object], key: str, *, allow_empty: bool = False) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise RowFormatError(key, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise RowFormatError(key, "must not be empty")
    return value


def _parse_chat(row: dict[str, object]) -> Conversation:
    raw = row["messages"]
    if not isinstance(raw, list) or not raw:
        raise RowFormatError("messages", "must be a non-empty list of {role, content} objects")
    messages: list[Message] = []
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise RowFormatError(where, "must be an object with 'role' and 'content'")
        role = item.get("role")
        if role not in ROLES:
            raise RowFormatError(
                f"{where}.role", f"must be one of {', '.join(ROLES)}, got {role!r}"
            )
        content = item.get("content")
        if not isinstance(content, str):
            raise RowFormatError(f"{where}.content", "must be a string")
        if role == "system" and index != 0:
            raise RowFormatError(f"{where}.role", "a system message may only come first")
        weight = item.get("weight", 1)
        if "weight" in item and role != "assistant":
            raise RowFormatError(f"{where}.weight", "only assistant messages may carry a weight")
        if weight not in (0, 1) or isinstance(weight, bool):
            raise RowFormatError(f"{where}.weight", "must be 0 or 1")
        unknown = set(item) - {"role", "content", "weight", "name"}
        if unknown:
            raise RowFormatError(where, f"unknown keys: {', '.join(sorted(unknown))}")
        messages.append(Message(role=role, content=content, weight=int(weight)))
    if not any(m.role == "assistant" and m.weight == 1 for m in messages):
        raise RowFormatError("messages", "needs at least one assistant message with weight 1")
    if not any(m.role == "user" for m in messages):
        raise RowFormatError("messages", "needs at least one user message")
    if messages[-1].role != "assistant":
        raise RowFormatError("messages", "the last message must be from the assistant")
    return Conversation(messages=tuple(messages))


def _parse_prompt_completion(row: dict[str, object]) -> Conversation:
    prompt = _require_text(row, "prompt")
    completion = _require_text(row, "completion")
    return Conversation(
        messages=(Message("user", prompt), Message("assistant", completion)),
    )


def _parse_alpaca(row: dict[str, object]) -> Conversation:
    instruction = _require_text(row, "instruction")
    extra = row.get("input", "")
    if not isinstance(extra, str):
        raise RowFormatError("input", "must be a string")
    output = _require_text(row, "output")
    # Instruction and input are joined by a blank line (the reference code glued them with no
    # separator, bug B13 in the SAP notes).
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return Conversation(messages=(Message("user", user), Message("assistant", output)))


def detect_format(row: dict[str, object]) -> DatasetFormat:
    if "messages" in row:
        return DatasetFormat.CHAT
    if "prompt" in row or "completion" in row:
        return DatasetFormat.PROMPT_COMPLETION
    if "instruction" in row or "output" in row:
        return DatasetFormat.ALPACA
    raise RowFormatError(
        "(row)",
        "unrecognised row: expected 'messages' (chat), 'prompt'+'completion', "
        "or 'instruction'+'output' (Alpaca)",
    )


_PARSERS = {
    DatasetFormat.CHAT: _parse_chat,
    DatasetFormat.PROMPT_COMPLETION: _parse_prompt_completion,
    DatasetFormat.ALPACA: _parse_alpaca,
}


def parse_row(row: object) -> tuple[DatasetFormat, Conversation]:
    """Convert one decoded JSON value to a Conversation, or raise RowFormatError."""
    if not isinstance(row, dict):
        raise RowFormatError("(row)", f"each line must be a JSON object, got {type(row).__name__}")
    fmt = detect_format(row)
    return fmt, _PARSERS[fmt](row)


def validate_jsonl(lines: Iterable[bytes | str], *, keep: bool = False) -> ValidationReport:
    """Validate every line; collect up to MAX_REPORTED_ERRORS errors with line and field.

    All rows of one file must share one format. Blank lines are errors (the OpenAI validator
    rejects them too), except a single trailing newline. With ``keep=True`` the parsed
    conversations are returned for training.
    """
    report = ValidationReport()

    def record(line_no: int, field_name: str, message: str) -> None:
        report.error_count += 1
        if len(report.errors) < MAX_REPORTED_ERRORS:
            report.errors.append(RowError(line_no, field_name, message))

    for line_no, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                record(line_no, "(line)", "is not valid UTF-8")
                continue
        else:
            text = raw
        text = text.rstrip("\r\n")
        if not text.strip():
            record(line_no, "(line)", "is empty; remove blank lines")
            continue
        report.rows += 1
        try:
            decoded = decode_line(text)
        except json.JSONDecodeError as exc:
            record(line_no, "(line)", f"is not valid JSON: {exc.msg} at column {exc.colno}")
            continue
        except JsonLimitError as exc:
            record(line_no, "(line)", str(exc))
            continue
        try:
            fmt, conversation = parse_row(decoded)
        except RowFormatError as exc:
            record(line_no, exc.field, exc.message)
            continue
        if report.format is None:
            report.format = fmt
        elif fmt != report.format:
            record(line_no, "(row)", f"is {fmt.value} but earlier rows are {report.format.value}")
            continue
        if keep:
            report.conversations.append(conversation)
    if report.rows == 0 and report.error_count == 0:
        record(0, "(file)", "contains no rows")
    return report
