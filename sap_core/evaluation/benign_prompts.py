"""Benign look-alike prompts for measuring over-refusal.

Each prompt is harmless but borrows the vocabulary or subject of harmful requests ("kill",
"bomb", "shoot", a poison, a real assassination, …), in the spirit of XSTest (which ships in no
offline package). A model that refuses these has learned to refuse words, not harm. All are
hand-written for Keel.

The pool is ``benign_lookalikes.json`` next to this module: 150 prompts in the eight categories
of :data:`~sap_core.safety.lookalike_pool.LOOKALIKE_CATEGORIES`, each at least 10 % of the pool.
It is disjoint from the mixer's contrast pool under the rules of
:mod:`sap_core.evaluation.lookalike_overlap` and holds no harmful prompt of the safety corpus,
exactly or reworded (both tested).

Sampling keeps old results comparable: each row has a ``pool_version``, and the order is a
seeded shuffle of each version in turn, oldest first. Version 1 is the original 62 prompts, so
``benign_prompts(n, seed)`` with ``n <= 62`` returns exactly what it returned before version 2
(88 prompts added for issue 19, mostly definitions, history, fiction, security, medical and
public figures) existed. A prefix of 62 or fewer is mostly homonyms and safe targets; measure
on the whole pool (``limit=None``) when breaking results down by category.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from sap_core.errors import ConfigError
from sap_core.safety.lookalike_pool import read_pool

BENIGN_LOOKALIKES_FILE = "benign_lookalikes.json"


@dataclass(frozen=True)
class BenignLookalike:
    """One evaluation look-alike prompt and its category."""

    id: str
    category: str
    prompt: str
    pool_version: int


def load_benign_lookalikes() -> tuple[BenignLookalike, ...]:
    """The packaged evaluation look-alikes in file order (version 1 first)."""
    rows = read_pool(
        "sap_core.evaluation",
        BENIGN_LOOKALIKES_FILE,
        "prompts",
        {"id": str, "category": str, "pool_version": int, "prompt": str},
    )
    return tuple(BenignLookalike(**row) for row in rows)


BENIGN_LOOKALIKES: tuple[BenignLookalike, ...] = load_benign_lookalikes()
BENIGN_LOOKALIKE_PROMPTS: tuple[str, ...] = tuple(row.prompt for row in BENIGN_LOOKALIKES)
_CATEGORY_BY_PROMPT: Mapping[str, str] = {row.prompt: row.category for row in BENIGN_LOOKALIKES}


def lookalike_category(prompt: str) -> str | None:
    """The category of an evaluation look-alike prompt, or None for any other text."""
    return _CATEGORY_BY_PROMPT.get(prompt)


def benign_lookalikes(limit: int | None = None, seed: int = 0) -> list[BenignLookalike]:
    """A seeded sample of :data:`BENIGN_LOOKALIKES` (order: module docstring).

    A smaller ``limit`` with the same seed is a prefix of a larger one.

    Args:
        limit: Number of prompts (None = all).
        seed: Shuffle seed.

    Raises:
        ConfigError: If ``limit`` is negative or larger than the pool.
    """
    if limit is not None and not 0 <= limit <= len(BENIGN_LOOKALIKES):
        raise ConfigError(f"benign limit must be in [0, {len(BENIGN_LOOKALIKES)}], got {limit}")
    rng = random.Random(seed)
    order: list[BenignLookalike] = []
    for version in sorted({row.pool_version for row in BENIGN_LOOKALIKES}):
        # One generator across versions: version 1's shuffle is the very first draw, exactly
        # as when the pool was only version 1, so its prefix is unchanged.
        rows = [row for row in BENIGN_LOOKALIKES if row.pool_version == version]
        rng.shuffle(rows)
        order.extend(rows)
    return order if limit is None else order[:limit]


def benign_prompts(limit: int | None = None, seed: int = 0) -> list[str]:
    """The prompt texts of :func:`benign_lookalikes` (same order, same errors)."""
    return [row.prompt for row in benign_lookalikes(limit, seed)]
