"""A file cache of base-model evaluation results.

Every job evaluates its base model on the same held-out prompts with greedy decoding, so the
base half of a report is a pure function of (base weights, evaluation settings, prompts,
validation rows, judge). Recomputing it per job doubled the evaluation time of every job; the
cache stores it once under a sha256 of exactly those inputs, so a change to any of them is a
miss, never a stale hit.

What is stored is what the report already holds (rates, per-prompt labels, utility) plus the
replies to the *benign* look-alike prompts (report samples); replies to harmful prompts are
never stored, as everywhere else in the evaluator.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

# 2: utility gained final_number_match; 3: its budget is capped at max_new_tokens;
# 4: timing gained judge_seconds and utility_seconds, replies come from the memory-batched
# decoder (sap_core.evaluation.decoding).
CACHE_FORMAT_VERSION = 4


def cache_key(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``payload`` (sorted keys, no whitespace variation)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class BaseEvaluationCache:
    """Base-model results in ``directory/<key>.json``, for one set of base weights.

    Args:
        directory: Where entries live (created on first store).
        model_fingerprint: Identifies the base weights, e.g. the sha256 of model.safetensors.
    """

    def __init__(self, directory: Path, model_fingerprint: str) -> None:
        if not model_fingerprint:
            raise ValueError("model_fingerprint must not be empty")
        self.directory = Path(directory)
        self.model_fingerprint = model_fingerprint

    def key(self, inputs: dict[str, Any]) -> str:
        return cache_key(
            {"format": CACHE_FORMAT_VERSION, "model": self.model_fingerprint, "inputs": inputs}
        )

    def load(self, key: str) -> tuple[dict[str, Any], list[str]] | None:
        """The cached (result, benign replies), or None when absent or unreadable."""
        try:
            entry = json.loads((self.directory / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        return entry["result"], list(entry["benign_replies"])

    def store(self, key: str, result: dict[str, Any], benign_replies: list[str]) -> None:
        """Write atomically (temp file + rename): a crash never leaves a half-written entry."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"key": key, "result": result, "benign_replies": benign_replies}
        handle, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(entry, out)
            os.replace(tmp, self.directory / f"{key}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
