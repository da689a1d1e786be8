"""Per-example screening of customer datasets for harmful requests.

Pure Python (stdlib + PyYAML + ``disarm`` for Unicode confusables + ``dataformats``): the API
process imports it without any ML stack.
"""

from screening.decision import ScreeningDecision, ScreeningLimits, decide
from screening.fingerprint import fingerprint, screener_version
from screening.screen import (
    Reference,
    ScreeningIndex,
    ScreenResult,
    ScreenSummary,
    default_index,
    load_reference_prompts,
    load_reference_responses,
    screen_conversation,
    screen_conversations,
    screen_jsonl,
    summarize,
)

__all__ = [
    "Reference",
    "ScreeningDecision",
    "ScreeningLimits",
    "ScreenResult",
    "ScreenSummary",
    "ScreeningIndex",
    "decide",
    "fingerprint",
    "default_index",
    "load_reference_prompts",
    "load_reference_responses",
    "screen_conversation",
    "screen_conversations",
    "screen_jsonl",
    "screener_version",
    "summarize",
]
