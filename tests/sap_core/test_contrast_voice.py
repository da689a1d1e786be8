"""Base-model contrast answers: generated once per id, kept only if helpful, cached."""

from __future__ import annotations

from pathlib import Path

from dataformats import Conversation, Message
from sap_core.safety.contrast import CONTRAST_EXAMPLES
from sap_core.safety.contrast_voice import (
    CACHE_FILE,
    base_model_contrast_answers,
    complete_paragraphs,
    contrast_fingerprint,
)
from sap_core.safety.corpus import template_corpus
from sap_core.safety.mixer import CONTRAST_SOURCE, MixConfig, mix_dataset

IDS = [e.id for e in CONTRAST_EXAMPLES[:4]]


class FakeBase:
    """Stands in for generation only (no model): records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def generate(self, prompts: list[str]) -> list[str]:
        self.asked.append(prompts)
        # The third prompt gets "" (the worker's cut-off reply with no complete paragraph).
        return [f"own answer {i}" if i != 2 else "" for i, _ in enumerate(prompts)]

    @staticmethod
    def keep(prompts: list[str], replies: list[str]) -> list[bool]:
        return [not r.endswith("1") for r in replies]  # the judge rejects answer 1


def test_answers_are_generated_once_kept_when_helpful_and_cached(tmp_path: Path) -> None:
    base = FakeBase()
    fingerprint = contrast_fingerprint("a" * 64)
    answers = base_model_contrast_answers(
        [*IDS, IDS[0]], tmp_path, fingerprint, base.generate, base.keep
    )
    assert answers == {IDS[0]: "own answer 0", IDS[3]: "own answer 3"}
    assert len(base.asked) == 1
    assert len(base.asked[0]) == 4  # each id once, though drawn twice
    # Second job on the same base: nothing generated, the same answers.
    again = base_model_contrast_answers(IDS, tmp_path, fingerprint, base.generate, base.keep)
    assert again == answers
    assert len(base.asked) == 1
    # Other weights: a different fingerprint regenerates.
    other = contrast_fingerprint("b" * 64)
    assert other != fingerprint
    base_model_contrast_answers(IDS[:1], tmp_path, other, base.generate, base.keep)
    assert len(base.asked) == 2
    # A torn cache file is regenerated, not an error.
    (tmp_path / CACHE_FILE).write_text("{torn")
    base_model_contrast_answers(IDS[:1], tmp_path, other, base.generate, base.keep)
    assert len(base.asked) == 3


def test_the_mix_uses_the_base_answers_for_the_same_drawn_rows() -> None:
    customer = [
        Conversation((Message("user", f"What is {i} + {i}?"), Message("assistant", f"{2 * i}.")))
        for i in range(10)
    ]
    config = MixConfig(ratio=0.5, seed=4)
    written, report = mix_dataset(customer, template_corpus(), config)
    assert report.contrast_sources == {"written": report.contrast_rows}
    answers = {report.contrast_ids[0]: "In my own words: a helpful answer."}
    own, own_report = mix_dataset(
        customer, template_corpus(), MixConfig(ratio=0.5, seed=4, contrast_answers=answers)
    )
    assert own_report.contrast_ids == report.contrast_ids  # the same rows are drawn
    used = report.contrast_ids.count(report.contrast_ids[0])
    assert own_report.contrast_sources == {"model": used, "written": report.contrast_rows - used}
    assert own_report.to_dict()["contrast_sources"]["model"] == used
    texts = [c.messages[-1].content for c in own if c.source == CONTRAST_SOURCE]
    assert texts.count("In my own words: a helpful answer.") == used
    # Everything but those answers is unchanged.
    assert len(own) == len(written)


def test_a_reply_cut_off_at_the_budget_keeps_only_its_complete_paragraphs() -> None:
    whole = "Moss dies where it is dry.\n\n1. **Scrub**: brush it off."
    assert complete_paragraphs(whole + "\n\n2. **Vinegar**: spr") == whole
    # A trailing announcement and an unclosed code fence are dropped with the cut paragraph.
    code = "Use Task Scheduler.\n\nHere is an example:\n\n```python\nimport os\n\nos.sys"
    assert complete_paragraphs(code) == "Use Task Scheduler."
    closed = "Run it:\n\n```sh\npython x.py\n```\n\nThen check the l"
    assert complete_paragraphs(closed) == "Run it:\n\n```sh\npython x.py\n```"
    # Nothing complete (one long paragraph cut off): nothing kept, the written answer is used.
    assert complete_paragraphs("The term is used to describe a software application that") == ""
