"""Training-data formats shared by the API (upload validation), the mixer and the trainer.

Pure Python (pydantic only): the API may import it without pulling in the ML stack.
"""

from dataformats.conversation import Conversation, Message, Role
from dataformats.jsonl import (
    DatasetFormat,
    RowError,
    ValidationReport,
    parse_row,
    validate_jsonl,
)

__all__ = [
    "Conversation",
    "DatasetFormat",
    "Message",
    "Role",
    "RowError",
    "ValidationReport",
    "parse_row",
    "validate_jsonl",
]
