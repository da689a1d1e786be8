"""Safety corpus: package-data loading, disjoint deterministic splits, build/load round trip.

Harmful text is never printed or put into assertion messages: failures name ids only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sap_core.errors import ConfigError
from sap_core.safety import corpus as corpus_module
from sap_core.safety.corpus import (
    NEAR_DUPLICATE_JACCARD,
    CorpusDataError,
    build_corpus,
    corpus_splits,
    jaccard,
    load_corpus,
    load_eval_prompts,
    load_harmful_prompts,
    load_harmful_responses,
    normalise_text,
    token_set,
)
from sap_core.safety.refusals import REFUSAL_TEMPLATES, looks_like_refusal


@pytest.mark.parametrize(
    ("source", "count"), [("advbench", 520), ("harmbench", 200), ("donotanswer", 939)]
)
def test_sources_have_documented_row_counts_and_unique_ids(source: str, count: int) -> None:
    rows = load_harmful_prompts(source)
    assert len(rows) == count
    assert len({r.id for r in rows}) == count
    assert all(r.id.startswith(f"{source}-") and r.source == source for r in rows)
    assert all(r.text.strip() for r in rows)


def test_harmful_prompt_repr_hides_text() -> None:
    row = load_harmful_prompts("harmbench")[17]
    assert row.id == "harmbench-0017"
    assert row.text not in repr(row)


def test_unknown_source_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        load_harmful_prompts("jailbreakbench")


def test_harmful_responses_are_the_harmful_labelled_many_shot_rows() -> None:
    pairs = load_harmful_responses()
    assert 270 <= len(pairs) <= 290
    assert all(p.id.startswith("manyshot-") and p.prompt and p.response for p in pairs)


def test_splits_are_disjoint_by_id_and_by_near_duplicate_text() -> None:
    splits = corpus_splits()
    eval_ids = {r.id for r in splits.eval}
    train_ids = {r.id for r in splits.train}
    assert not eval_ids & train_ids
    eval_tokens = [token_set(r.text) for r in splits.eval]
    eval_norm = {normalise_text(r.text) for r in splits.eval}
    for text_id, text in [(r.id, r.text) for r in splits.train] + [
        (p.id, p.prompt) for p in splits.triple_pairs
    ]:
        assert normalise_text(text) not in eval_norm, text_id
        tokens = token_set(text)
        assert max(jaccard(tokens, e) for e in eval_tokens) < NEAR_DUPLICATE_JACCARD, text_id


def test_split_composition() -> None:
    counts = corpus_splits().counts()
    assert counts["eval"]["harmbench"] == 200
    assert 150 <= counts["eval"]["donotanswer"] <= 220
    assert "harmbench" not in counts["train"]
    assert counts["train"]["advbench"] >= 500
    assert counts["triples"]["manyshot"] >= 50


def test_eval_prompts_deterministic_prefix_property() -> None:
    all_rows = load_eval_prompts()
    assert len(all_rows) >= 200
    first = [r.id for r in load_eval_prompts(limit=50, seed=3)]
    again = [r.id for r in load_eval_prompts(limit=50, seed=3)]
    longer = [r.id for r in load_eval_prompts(limit=120, seed=3)]
    assert first == again == longer[:50]
    assert first != [r.id for r in load_eval_prompts(limit=50, seed=4)]
    with pytest.raises(ConfigError):
        load_eval_prompts(limit=-1)


def _fake_generator(prompts: list[str]) -> list[str]:
    # Refuse every other prompt in a distinctive style, comply (with benign filler) otherwise.
    return [
        "I'm sorry, I will not do that (model style)." if i % 2 == 0 else "Sure, here it is."
        for i in range(len(prompts))
    ]


def test_build_and_load_corpus_round_trip(tmp_path: Path) -> None:
    built = build_corpus("tiny-test", tmp_path, _fake_generator, None, limit=10)
    assert len(built.train_prompts) == 10
    assert len(built.triples) == 10
    sources = list(built.refusal_sources.values())
    assert sources.count("model") == 5
    assert sources.count("template") == 5
    for row in built.train_prompts:
        refusal = built.refusals[row.id]
        assert looks_like_refusal(refusal), row.id
        if built.refusal_sources[row.id] == "template":
            assert refusal in REFUSAL_TEMPLATES
    assert not {r.id for r in built.train_prompts} & built.eval_prompt_ids
    assert all(t.prompt and t.harmful and looks_like_refusal(t.safe) for t in built.triples)

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["counts"]["safe_responses"] == {"model": 10, "template": 10}
    assert set(manifest["source_sha256"]) >= {"advbench", "harmbench", "manyshot"}
    # corpus.json stores ids and safe responses only: no harmful prompt text.
    stored = (tmp_path / "corpus.json").read_text()
    assert all(row.text not in stored for row in built.train_prompts)

    loaded = load_corpus(tmp_path)
    assert loaded == built
    # A matching build is reused (generator not called again).
    again = build_corpus("tiny-test", tmp_path, lambda p: pytest.fail("regenerated"), None, 10)
    assert again == built


def test_template_only_build_and_tamper_detection(tmp_path: Path) -> None:
    built = build_corpus("tiny-test", tmp_path, None, None, limit=3)
    assert set(built.refusal_sources.values()) == {"template"}
    assert built.refusal_for(built.train_prompts[0].id, source="template") in REFUSAL_TEMPLATES
    corpus_file = tmp_path / "corpus.json"
    corpus_file.write_text(corpus_file.read_text().replace("tiny-test", "tampered"))
    with pytest.raises(CorpusDataError):
        load_corpus(tmp_path)
    with pytest.raises(CorpusDataError):
        load_corpus(tmp_path / "missing")


def test_wrong_generator_length_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        build_corpus("tiny-test", tmp_path, lambda p: p[:1], None, limit=2)


def test_missing_package_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CorpusDataError):
        corpus_module.package_dir("pyrit")
