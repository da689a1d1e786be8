"""No look-alike is a harmful prompt of the safety corpus, exactly or reworded.

Needs the safety corpus package data (installed by `make install`, read in about a second).
Both pools are checked against every harmful prompt Keel uses: the held-out evaluation split,
the mixer's training split and the SAP triples. A look-alike that *was* a harmful prompt would
be scored as over-refusal when refused (evaluation pool) or teach compliance (contrast pool).
"""

from __future__ import annotations

from sap_core.evaluation.benign_prompts import BENIGN_LOOKALIKES
from sap_core.evaluation.lookalike_overlap import keys, overlaps_with_harmful, similar_pairs
from sap_core.safety.contrast import CONTRAST_EXAMPLES
from sap_core.safety.corpus import corpus_splits, jaccard


def test_no_lookalike_is_a_harmful_prompt_reworded() -> None:
    splits = corpus_splits()
    harmful = keys(
        [
            *((p.id, p.text, None) for p in splits.eval),
            *((p.id, p.text, None) for p in splits.train),
            *((p.id, p.prompt, None) for p in splits.triple_pairs),
        ]
    )
    lookalikes = keys(
        [
            *((e.id, e.prompt, e.category) for e in CONTRAST_EXAMPLES),
            *((row.id, row.prompt, row.category) for row in BENIGN_LOOKALIKES),
        ]
    )
    assert len(harmful) > 1000
    overlaps = overlaps_with_harmful(lookalikes, harmful)
    assert overlaps == [], overlaps[:5]  # ids and scores only, no harmful text


def test_similar_pairs_finds_exactly_what_comparing_every_pair_finds() -> None:
    # The prefix filter must not lose a pair: compare it with brute force on real prompts, at
    # thresholds low enough that there are pairs to find.
    splits = corpus_splits()
    left = [k.ngrams for k in keys((e.id, e.prompt, None) for e in CONTRAST_EXAMPLES[::6])]
    right = [k.ngrams for k in keys((p.id, p.text, None) for p in splits.eval)]
    found = 0
    for threshold in (0.1, 0.15, 0.2):
        fast = {(i, j) for i, j, _ in similar_pairs(left, right, threshold)}
        brute = {
            (i, j)
            for i, a in enumerate(left)
            for j, b in enumerate(right)
            if jaccard(a, b) >= threshold
        }
        assert fast == brute
        found += len(brute)
    assert found > 0
