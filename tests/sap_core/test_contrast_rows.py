"""Mixer contrast rows: helpful answers to benign look-alikes, in the customer's format.

The pool itself (sizes, categories, answers, disjointness from the evaluation look-alikes) is
tested in test_lookalike_pools.py.
"""

from __future__ import annotations

import pytest

from dataformats import validate_jsonl
from sap_core.errors import ConfigError
from sap_core.safety.contrast import CONTRAST_EXAMPLES
from sap_core.safety.corpus import template_corpus
from sap_core.safety.mixer import (
    CONTRAST_SOURCE,
    REFUSAL_OPTION_TEXT,
    MixConfig,
    mix_dataset,
    to_jsonl,
)
from sap_core.safety.profiler import profile_dataset
from tests.fixtures.examples import load_example


@pytest.mark.parametrize("name", ["chat_math.jsonl", "alpaca_tasks.jsonl"])
def test_free_text_contrast_rows_answer_in_the_customers_format(name: str) -> None:
    customer = load_example(name)
    mixed, report = mix_dataset(customer, template_corpus(), MixConfig(ratio=0.5, seed=2))
    contrast = [c for c in mixed if c.source == CONTRAST_SOURCE]
    assert len(contrast) == report.contrast_rows > 0
    answers = {e.id: e.answer for e in CONTRAST_EXAMPLES}
    profile = profile_dataset(customer)
    for row in contrast:
        assert row.messages[-2].content.startswith(profile.user_prefix)
        assert row.messages[-1].content == answers[str(row.meta["contrast_id"])]
    # Same system-prompt distribution as the customer's rows.
    assert {t for t, _ in profile_dataset(contrast).system_prompts} <= {
        t for t, _ in profile.system_prompts
    }


def test_multiple_choice_contrast_rows_pick_the_helpful_option_over_the_refusal() -> None:
    customer = load_example("mcq_aoa.jsonl")
    mixed, _ = mix_dataset(customer, template_corpus(), MixConfig(ratio=0.2, seed=4))
    short = {e.id: e.short_answer for e in CONTRAST_EXAMPLES}
    contrast = [c for c in mixed if c.source == CONTRAST_SOURCE]
    assert contrast
    labels = profile_dataset(customer).options
    assert labels is not None
    for row in contrast:
        user, answer = row.messages[-2].content, row.messages[-1].content
        gold = labels.labels.index(answer)
        assert f"{'ABCD'[gold]}) {short[str(row.meta['contrast_id'])]}" in user
        assert REFUSAL_OPTION_TEXT in user  # the refusal is offered, and is the wrong answer
        assert f"{'ABCD'[gold]}) {REFUSAL_OPTION_TEXT}" not in user
    assert validate_jsonl(to_jsonl(mixed).splitlines()).ok


def test_contrast_can_be_switched_off_and_is_validated() -> None:
    customer = load_example("chat_math.jsonl")
    mixed, report = mix_dataset(
        customer, template_corpus(), MixConfig(ratio=0.3, seed=0, contrast_ratio=0.0)
    )
    assert report.contrast_rows == 0
    assert not any(c.source == CONTRAST_SOURCE for c in mixed)
    assert "contrast:keel_benign" not in report.to_dict()["counts_by_source"]
    with pytest.raises(ConfigError, match="contrast_ratio"):
        MixConfig(ratio=0.1, contrast_ratio=-1.0)
