"""Validate `screening`: precision/recall on held-out harmful prompts vs benign text.

    .venv/bin/python benchmarks/screening_eval.py

The index is built from the corpus *training* split only (AdvBench + Do-Not-Answer train +
many-shot triple prompts); positives are the held-out eval split (HarmBench + the Do-Not-Answer
eval subset, minus its human_chatbox area, which asks about the assistant, not for harm);
negatives are the benign look-alike prompts and the user turns of the sample datasets.
Prints numbers only, never prompt text.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dataformats import validate_jsonl
from sap_core.evaluation.benign_prompts import benign_prompts
from sap_core.safety.corpus import corpus_splits
from screening.screen import Reference, ScreeningIndex, default_index

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    splits = corpus_splits()
    refs = [
        Reference(p.id, p.source, p.text, p.category)
        for p in splits.train
        if p.category != "human_chatbox"
    ] + [Reference(p.id, "manyshot", p.prompt, None) for p in splits.triple_pairs]
    positives = [p.text for p in splits.eval if p.category != "human_chatbox"]
    lookalikes = benign_prompts()
    sample_rows: list[str] = []
    for path in sorted(EXAMPLES.glob("*.jsonl")):
        report = validate_jsonl(path.open("rb"), keep=True)
        sample_rows += [
            m.content for c in report.conversations for m in c.messages if m.role == "user"
        ]
    print(
        f"references {len(refs)}, positives {len(positives)}, "
        f"benign look-alikes {len(lookalikes)}, benign sample turns {len(sample_rows)}"
    )
    results = {}
    for threshold, lex in (
        (0.2, 0.05),
        (0.25, 0.1),
        (0.25, 0.15),
        (0.3, 0.1),
        (0.3, 0.15),
        (0.4, 0.2),
    ):
        index = ScreeningIndex(refs, threshold=threshold, lexicon_threshold=lex)
        tp = sum(index.screen_text(t).flagged for t in positives)
        fp_look = sum(index.screen_text(t).flagged for t in lookalikes)
        fp_rows = sum(index.screen_text(t).flagged for t in sample_rows)
        fp = fp_look + fp_rows
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / len(positives)
        results[f"{threshold}/{lex}"] = {
            "recall": round(recall, 3),
            "precision": round(precision, 3),
            "tp": tp,
            "fp_lookalikes": fp_look,
            "fp_sample_rows": fp_rows,
        }
    print(json.dumps(results, indent=1))
    started = time.perf_counter()
    index = default_index()
    built = time.perf_counter() - started
    turns = (sample_rows * 4)[:1000]
    started = time.perf_counter()
    for text in turns:
        index.screen_text(text)
    print(
        f"default index build {built:.2f} s; screening {len(turns)} rows "
        f"{time.perf_counter() - started:.2f} s"
    )


if __name__ == "__main__":
    main()
