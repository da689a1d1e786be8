"""Refuse at validation a job whose training file cannot fit the tenant's daily token quota.

`quotas.max_trained_tokens_per_day` is otherwise enforced only when a job starts: the worker
cuts its token budget to what the tenant has left (db.training_spec.within_daily_tokens), so a
job on a file bigger than the remainder would train on part of one epoch. The validator refuses
it instead, with the quota's code (`quota_trained_tokens_exceeded`, as the create request's 429),
when a LOWER BOUND of one epoch's trained tokens already passes the remainder: the sum over rows
of min(tokens of the row's message texts, the job's max_length), counted with the base model's
own tokenizer (`tokenizer.json`, the fast `tokenizers` library: no model, no torch). The chat
template, the epochs and the mixed-in safety rows only add tokens, so a job this refuses could
never have trained one full epoch today; one it lets through may still be cut at start.

Without the model's tokenizer on this machine (not pulled yet, or an API-only install) the check
is skipped and logged: the start-time cut still holds the quota.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from dataformats import Conversation

log = logging.getLogger("keel.validation")
_BATCH = 1024


def tokenizer_file(model_cache_dir: Path, model: str) -> Path | None:
    path = Path(model_cache_dir) / model / "tokenizer.json"
    return path if path.is_file() else None


@cache
def _tokenizer(path: str) -> Any:
    """Loaded once per validator process and file (~0.5 s each)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        log.warning("tokenizers is not installed; the daily token check at validation is skipped")
        return None
    return Tokenizer.from_file(path)


def one_epoch_tokens_lower_bound(
    conversations: Sequence[Conversation], tokenizer_path: Path, max_length: int
) -> int | None:
    """Σ min(tokens of the row's message texts, max_length); None without `tokenizers`."""
    tokenizer = _tokenizer(str(tokenizer_path))
    if tokenizer is None:
        return None
    texts = ["\n".join(m.content for m in c.messages) for c in conversations]
    total = 0
    for start in range(0, len(texts), _BATCH):
        encoded = tokenizer.encode_batch(texts[start : start + _BATCH], add_special_tokens=False)
        total += sum(min(len(e.ids), max_length) for e in encoded)
    return total
