"""The base model's own answers to the contrast (benign look-alike) prompts, cached per base model.

Why: trained on our hand-written answers, a 0.5B model recites them to *other* harmless
questions after a few epochs (docs/results.md: 77.5 % of look-alikes answered off-task). Trained on
its own answers, the adapter is taught to keep the behaviour it already had on these prompts. An
answer is kept only where the judge calls it helpful and on-task (``keep``); every other id keeps
the hand-written answer. A reply cut off at the token budget is shortened to its complete
paragraphs (:func:`complete_paragraphs`) rather than dropped: at 128 tokens the 0.5B base model runs
out of budget on most look-alikes (9 of 16 sampled), so dropping them left 6 of a job's 20 contrast
rows in its own voice and 14 hand-written answers to recite. Training on a mid-sentence cut would
teach the model to stop mid-sentence; ending after a whole paragraph teaches a shorter answer.

Answers are generated lazily, only for the ids a job draws, and cached in one JSON file beside the
model's safety corpus, fingerprinted with the base weights, the pool file and the budget, so a
changed model or pool never reuses stale answers. The file holds benign text only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from sap_core.safety.contrast import CONTRAST_EXAMPLES, CONTRAST_POOL_FILE

# Bump when what is generated changes (prompting, decoding, the keep rule).
# 2: replies cut off at the budget are shortened to complete paragraphs instead of dropped.
CONTRAST_VOICE_VERSION = 2
# The hand-written answers are ~90 tokens; a base answer that needs more is cut off at the
# budget and keeps only its complete paragraphs.
CONTRAST_ANSWER_TOKENS = 128
CACHE_FILE = "contrast_answers.json"

_PROMPTS = {example.id: example.prompt for example in CONTRAST_EXAMPLES}


_FENCE = "```"


def complete_paragraphs(reply: str) -> str:
    """The whole paragraphs of a reply that was cut off at its token budget ("" if none).

    The last, unfinished paragraph is dropped; so are trailing paragraphs that only announce
    what follows (ending in ":"), and anything from an unclosed code fence on, so the kept
    answer never ends on "Here is an example:" or inside a code block.
    """
    paragraphs = reply.split("\n\n")[:-1]  # the last one is where the budget cut
    while paragraphs:
        text = "\n\n".join(paragraphs).rstrip()
        if text.count(_FENCE) % 2:
            text = text[: text.rfind(_FENCE)].rstrip()
            paragraphs = text.split("\n\n") if text else []
            continue
        if text.endswith(":"):
            paragraphs = paragraphs[:-1]
            continue
        return text
    return ""


def contrast_fingerprint(model_sha256: str) -> str:
    """Base weights + pool file + budget + version: what the cached answers depend on."""
    pool = resources.files("sap_core.safety").joinpath(CONTRAST_POOL_FILE).read_bytes()
    payload = json.dumps(
        {
            "version": CONTRAST_VOICE_VERSION,
            "model": model_sha256,
            "pool": hashlib.sha256(pool).hexdigest(),
            "tokens": CONTRAST_ANSWER_TOKENS,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def base_model_contrast_answers(
    ids: Sequence[str],
    cache_dir: Path,
    fingerprint: str,
    generate: Callable[[list[str]], list[str]],
    keep: Callable[[list[str], list[str]], list[bool]],
) -> dict[str, str]:
    """The base model's kept answers for ``ids`` (generated once, then read from the cache).

    Args:
        ids: Contrast ids the job drew (repeats allowed).
        cache_dir: The base model's corpus folder (under ``var/``, never committed).
        fingerprint: :func:`contrast_fingerprint` of the base weights.
        generate: prompts -> greedy replies ("" for a reply that hit the token budget).
        keep: (prompts, replies) -> whether each reply is a helpful, on-task answer.

    Returns:
        ``{id: answer}`` for the ids whose base answer was kept (others are absent).
    """
    path = cache_dir / CACHE_FILE
    cached: dict[str, Any] = {}
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("fingerprint") == fingerprint:
                cached = dict(stored.get("answers") or {})
        except (ValueError, AttributeError):  # torn or foreign file: regenerate
            cached = {}
    missing = [i for i in dict.fromkeys(ids) if i in _PROMPTS and i not in cached]
    if missing:
        prompts = [_PROMPTS[i] for i in missing]
        replies = generate(prompts)
        kept = keep(prompts, replies)
        for contrast_id, reply, ok in zip(missing, replies, kept, strict=True):
            # None records "generated, not kept": the written answer is used, nothing regenerated.
            cached[contrast_id] = reply.strip() if ok and reply.strip() else None
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=cache_dir, delete=False, suffix=".tmp", encoding="utf-8"
        ) as tmp:
            json.dump({"fingerprint": fingerprint, "answers": cached}, tmp, ensure_ascii=False)
        os.replace(tmp.name, path)
    return {i: cached[i] for i in dict.fromkeys(ids) if cached.get(i)}
