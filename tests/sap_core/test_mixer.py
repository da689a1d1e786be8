"""Mixer: exact ratio, determinism, format fidelity, refusal in the answer slot, no eval leakage.

Assertion messages name prompt ids only, never harmful text.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from dataformats import validate_jsonl
from sap_core.errors import ConfigError
from sap_core.safety.corpus import SafetyCorpus, corpus_splits, normalise_text, template_corpus
from sap_core.safety.mixer import (
    CONTRAST_SOURCE,
    DEFAULT_CONTRAST_RATIO,
    REFUSAL_OPTION_TEXT,
    SAFETY_SOURCE,
    MixConfig,
    mix_dataset,
    resolve_ratio,
    safety_row_count,
    to_jsonl,
)
from sap_core.safety.profiler import profile_dataset
from sap_core.safety.refusals import looks_like_refusal
from tests.fixtures.examples import load_example


@pytest.fixture(scope="module")
def corpus() -> SafetyCorpus:
    return template_corpus()


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.1, 0.25, 1.0, 1.5])
def test_ratio_honoured_exactly(corpus: SafetyCorpus, ratio: float) -> None:
    customer = load_example("alpaca_tasks.jsonl")
    mixed, report = mix_dataset(customer, corpus, MixConfig(ratio=ratio, seed=1))
    k = safety_row_count(ratio, len(customer))
    assert k == int(ratio * len(customer) + 0.5)
    assert report.safety_rows == k
    assert sum(c.source == SAFETY_SOURCE for c in mixed) == k
    c = safety_row_count(DEFAULT_CONTRAST_RATIO, k)
    assert report.contrast_rows == c
    assert sum(row.source == CONTRAST_SOURCE for row in mixed) == c
    assert len(mixed) == len(customer) + k + c
    assert [mixed[i].source for i in report.safety_indices] == [SAFETY_SOURCE] * k
    # Every customer row is kept, unchanged.
    assert sorted(map(repr, (c for c in mixed if c.source == "customer"))) == sorted(
        map(repr, customer)
    )


def test_half_rounds_up() -> None:
    assert safety_row_count(0.5, 1) == 1
    assert safety_row_count(0.25, 10) == 3


def test_deterministic_for_a_seed(corpus: SafetyCorpus) -> None:
    customer = load_example("mcq_aoa.jsonl")
    a, ra = mix_dataset(customer, corpus, MixConfig(ratio=0.3, seed=7))
    b, rb = mix_dataset(customer, corpus, MixConfig(ratio=0.3, seed=7))
    c, _ = mix_dataset(customer, corpus, MixConfig(ratio=0.3, seed=8))
    assert to_jsonl(a) == to_jsonl(b)
    assert ra.to_dict() == rb.to_dict()
    assert to_jsonl(a) != to_jsonl(c)


def test_a_profile_passed_in_renders_what_the_mixer_would_compute(corpus: SafetyCorpus) -> None:
    # The worker profiles once and hands the profile to the mixer and to the evaluation.
    customer = load_example("mcq_aoa.jsonl")
    own, own_report = mix_dataset(customer, corpus, MixConfig(ratio=0.3, seed=7))
    given, given_report = mix_dataset(
        customer, corpus, MixConfig(ratio=0.3, seed=7), profile_dataset(customer)
    )
    assert to_jsonl(given) == to_jsonl(own)
    assert given_report.to_dict() == own_report.to_dict()


def test_no_eval_prompt_in_the_mix(corpus: SafetyCorpus) -> None:
    customer = load_example("chat_math.jsonl")
    _, report = mix_dataset(customer, corpus, MixConfig(ratio=10.0, seed=0))
    eval_ids = {p.id for p in corpus_splits().eval}
    eval_text = {normalise_text(p.text) for p in corpus_splits().eval}
    assert not set(report.prompt_ids) & eval_ids
    train = {p.id: p for p in corpus.train_prompts}
    assert all(normalise_text(train[i].text) not in eval_text for i in report.prompt_ids)


def test_leaky_corpus_is_rejected(corpus: SafetyCorpus) -> None:
    leaky = type(corpus)(
        model_name="x",
        train_prompts=corpus.train_prompts,
        refusals=corpus.refusals,
        refusal_sources=corpus.refusal_sources,
        triples=(),
        eval_prompt_ids=frozenset({corpus.train_prompts[0].id}),
    )
    with pytest.raises(ConfigError):
        mix_dataset(load_example("chat_math.jsonl"), leaky, MixConfig(ratio=0.1))


@pytest.mark.parametrize("name", ["chat_math.jsonl", "alpaca_tasks.jsonl", "mcq_aoa.jsonl"])
def test_mixed_rows_validate_and_keep_the_format(corpus: SafetyCorpus, name: str) -> None:
    customer = load_example(name)
    mixed, report = mix_dataset(customer, corpus, MixConfig(ratio=0.2, seed=3))
    validated = validate_jsonl(to_jsonl(mixed).splitlines(), keep=True)
    assert validated.ok
    assert validated.rows == len(mixed)
    safety = [c for c in mixed if c.source == SAFETY_SOURCE]
    customer_profile = profile_dataset(customer)
    safety_profile = profile_dataset(safety)
    assert safety_profile.system_prompts == tuple(
        (t, len(safety)) for t, _ in customer_profile.system_prompts
    )
    for row in safety:
        user = row.messages[-2].content
        answer = row.messages[-1].content
        assert user.startswith(customer_profile.user_prefix), row.meta["prompt_id"]
        if customer_profile.options is not None:
            assert safety_profile.options == customer_profile.options
            assert user.endswith(customer_profile.options_suffix)
            gold = customer_profile.options.labels.index(answer)
            assert f"{'ABCD'[gold]}) {REFUSAL_OPTION_TEXT}" in user, row.meta["prompt_id"]
        else:
            assert looks_like_refusal(answer), row.meta["prompt_id"]
    assert report.refusal_sources == {"template": len(safety)}


def _with_own_refusals(corpus: SafetyCorpus, count: int) -> SafetyCorpus:
    """The template corpus with the base model's "own" refusal on its last ``count`` prompts
    (the worker generates replies for a head of the prompts only: own refusals are rare)."""
    own = {p.id for p in corpus.train_prompts[-count:]}
    return dataclasses.replace(
        corpus,
        refusals={
            k: ("I won't help with that (own words)." if k in own else v)
            for k, v in corpus.refusals.items()
        },
        refusal_sources={
            k: ("model" if k in own else v) for k, v in corpus.refusal_sources.items()
        },
    )


def test_model_refusal_source_trains_on_the_base_models_own_refusals_first(
    corpus: SafetyCorpus,
) -> None:
    customer = load_example("chat_math.jsonl")
    k = safety_row_count(0.2, len(customer))
    rich = _with_own_refusals(corpus, k + 3)
    mixed, report = mix_dataset(customer, rich, MixConfig(ratio=0.2, seed=5))
    # A handful of ~1,200 prompts carry an own refusal, yet every safety row uses one.
    assert report.refusal_sources == {"model": k}
    answers = [c.messages[-1].content for c in mixed if c.source == SAFETY_SOURCE]
    assert all("own words" in a for a in answers)
    # Fewer own refusals than rows: all of them, then templates for the rest.
    scarce = _with_own_refusals(corpus, 2)
    _, report = mix_dataset(customer, scarce, MixConfig(ratio=0.2, seed=5))
    assert report.refusal_sources == {"model": 2, "template": k - 2}
    assert len(set(report.prompt_ids)) == k
    # Template refusals draw exactly what they drew before own refusals existed.
    plain, plain_report = mix_dataset(
        customer, corpus, MixConfig(ratio=0.2, seed=5, refusal_source="template")
    )
    same, same_report = mix_dataset(
        customer, rich, MixConfig(ratio=0.2, seed=5, refusal_source="template")
    )
    assert to_jsonl(same) == to_jsonl(plain)
    assert same_report.prompt_ids == plain_report.prompt_ids


def test_report_is_json_and_redacts_requests(corpus: SafetyCorpus) -> None:
    customer = load_example("mcq_aoa.jsonl")
    _, report = mix_dataset(customer, corpus, MixConfig(ratio=0.1, seed=0, report_examples=5))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["counts_by_source"]["customer"] == 100
    assert data["safety_rows"] == 10
    assert len(data["examples"]) == 5
    texts = {p.id: p.text for p in corpus.train_prompts}
    dumped = json.dumps(data)
    for prompt_id in data["prompt_ids"]:
        assert texts[prompt_id] not in dumped, prompt_id
    assert f"[harmful request #{data['prompt_ids'][0]}]" in dumped


def test_config_and_policy_validation() -> None:
    with pytest.raises(ConfigError):
        MixConfig(ratio=-0.1)
    with pytest.raises(ConfigError):
        MixConfig(ratio=0.1, refusal_source="rewriter")
    assert resolve_ratio(None, default=0.1, minimum=0.05, maximum=0.5) == 0.1
    assert resolve_ratio(0.3, default=0.1, minimum=0.05, maximum=0.5) == 0.3
    with pytest.raises(ConfigError):
        resolve_ratio(0.01, default=0.1, minimum=0.05, maximum=0.5)


def _skewed_mcq(n: int, gold_share_b: float) -> list:  # type: ignore[type-arg]
    """A multiple-choice customer whose gold letter is B in ``gold_share_b`` of the rows."""
    from dataformats import Conversation, Message

    rows = []
    for i in range(n):
        gold = "B" if i < gold_share_b * n else "ACD"[i % 3]
        user = (
            f"Question {i}: what is {i} + 1?\nA) {i}\nB) {i + 1}\nC) {i + 2}\nD) {i + 3}\nAnswer:"
        )
        rows.append(Conversation((Message("user", user), Message("assistant", gold))))
    return rows


def test_gold_letters_of_safety_and_contrast_rows_follow_the_customers() -> None:
    customer = _skewed_mcq(60, gold_share_b=0.7)
    profile = profile_dataset(customer)
    assert profile.answer_style == "choice"
    assert dict(profile.gold_label_counts) == {"A": 6, "B": 42, "C": 6, "D": 6}
    assert profile.to_dict()["answer"]["gold_label_counts"]["B"] == 42
    mixed, _ = mix_dataset(customer, template_corpus(), MixConfig(ratio=1.0, seed=5), profile)
    added = [c for c in mixed if c.source in (SAFETY_SOURCE, CONTRAST_SOURCE)]
    letters = [c.messages[-1].content.strip() for c in added]
    assert len(letters) >= 100
    share_b = letters.count("B") / len(letters)
    # Customer: 70 % B; smoothed (+1 per label) 43/64 = 67 %. Uniform would give 25 %.
    assert 0.55 <= share_b <= 0.80, share_b
    assert set(letters) == {"A", "B", "C", "D"}  # smoothing keeps every letter in play
