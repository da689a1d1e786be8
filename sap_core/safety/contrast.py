"""Benign look-alike requests with helpful answers: the mixer's contrast rows.

Refusal rows alone teach a small model "refuse whatever is not my task": the first measured
SAP + mixer run (docs/results.md) refused 100 % of benign look-alike prompts. Each contrast row
is a harmless request that borrows the vocabulary or subject of harmful ones ("kill", "bomb",
a poison, a real assassination, …) answered helpfully, rendered in the customer's format like
the refusal rows, so the model sees both sides of the line in the format it is trained on. The
same idea as the safe-but-scary prompts of XSTest (Röttger et al. 2024) and the helpful
counter-examples of Bianchi et al. (2024), whose over-refusal grew with safety data that had
none.

The pool is ``contrast_pool.json`` next to this module: 336 prompts in eight categories
(:data:`~sap_core.safety.lookalike_pool.LOOKALIKE_CATEGORIES`), each with a concise, factual
answer written for Keel (2-4 sentences; creative requests are answered in kind). They are the
fallback answers: a base model's own helpful answer to the same prompt can replace them. The
prompts are disjoint from the evaluation look-alikes in
:mod:`sap_core.evaluation.benign_prompts` under the rules of
:mod:`sap_core.evaluation.lookalike_overlap` (tested), so over-refusal is never measured on a
prompt, or a risky word aimed at a target, that the model was trained on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sap_core.safety.lookalike_pool import read_pool

CONTRAST_POOL_FILE = "contrast_pool.json"

# A sentence ends at . ! or ? (and a closing quote, if any) before whitespace and a capital,
# digit, quote, backtick or bracket: "...my gate." It works' splits, "0.5 g" does not.
_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019]))\s+(?=[A-Z0-9\"'`(\u201c\u2018])"
)


@dataclass(frozen=True)
class ContrastExample:
    """A benign request that sounds risky, and a short helpful answer to it."""

    id: str
    prompt: str
    answer: str
    # The answer's first sentence: the option text when the customer's task is multiple choice.
    short_answer: str
    # One of LOOKALIKE_CATEGORIES, so reports can count rows by kind of look-alike.
    category: str


def first_sentence(text: str) -> str:
    """The first sentence of ``text``, ending in its own punctuation (or a full stop)."""
    head = _SENTENCE_END.split(text.strip(), maxsplit=1)[0].strip()
    return head if head.endswith((".", "!", "?", '."', ".'", ".\u201d")) else head + "."


def load_contrast_examples() -> tuple[ContrastExample, ...]:
    """The packaged contrast pool, in file order (grouped by category)."""
    rows = read_pool(
        "sap_core.safety",
        CONTRAST_POOL_FILE,
        "examples",
        {"id": str, "category": str, "prompt": str, "answer": str},
    )
    return tuple(ContrastExample(**row, short_answer=first_sentence(row["answer"])) for row in rows)


CONTRAST_EXAMPLES: tuple[ContrastExample, ...] = load_contrast_examples()
