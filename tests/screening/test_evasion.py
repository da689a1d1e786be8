"""Each cheap evasion of a known harmful prompt is still caught; ordinary text still is not.

The harmful examples are built here, at test time, from the package reference prompts by the
deterministic transformations of :mod:`screening.evasion`; no harmful text is in the repo.
"""

from __future__ import annotations

import pytest

from dataformats import Conversation, Message
from screening import default_index, load_reference_prompts, screen_conversations
from screening.evasion import TRANSFORMS, paraphrase

CHARACTER_LEVEL = ("lookalike", "spaced", "dotted", "leetspeak", "zero_width")


def _conv(user: str, assistant: str = "ok") -> Conversation:
    return Conversation((Message("user", user), Message("assistant", assistant)))


def _sample(n: int = 12) -> list[str]:
    refs = load_reference_prompts()
    return [r.text for r in refs if r.source == "advbench"][:n] + [
        r.text for r in refs if r.source == "harmbench"
    ][:n]


@pytest.mark.parametrize("name", CHARACTER_LEVEL)
def test_character_level_evasions_of_known_prompts_are_flagged(name: str) -> None:
    transform = TRANSFORMS[name]
    texts = [transform(text, i) for i, text in enumerate(_sample())]
    assert all(t != s for t, s in zip(texts, _sample(), strict=True))  # the evasion did something
    results = screen_conversations([_conv(t) for t in texts], default_index())
    assert all(r.flagged and r.score > 0.9 for r in results), [round(r.score, 3) for r in results]
    assert all(r.turn == "user" for r in results)


def test_paraphrase_wrapped_known_prompts_are_flagged() -> None:
    texts = [paraphrase(text, i) for i, text in enumerate(_sample())]
    results = screen_conversations([_conv(t) for t in texts], default_index())
    assert sum(r.flagged for r in results) >= len(results) - 1


def test_the_issue_example_lookalike_advbench_prompt() -> None:
    # The issue's figure: an AdvBench prompt flagged at 1.0 scored 0.072 with a few Cyrillic
    # letters. A *few* letters (every third eligible one), not all of them.
    text = next(r.text for r in load_reference_prompts() if r.source == "advbench")
    swapped = "".join(
        TRANSFORMS["lookalike"](ch, 0) if i % 3 == 0 else ch for i, ch in enumerate(text)
    )
    assert swapped != text
    assert default_index().screen_text(swapped).score > 0.99
