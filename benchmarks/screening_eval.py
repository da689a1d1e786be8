"""Validate `screening`: precision/recall on held-out harmful prompts vs benign text, and the
choice of the assistant-turn thresholds.

    .venv/bin/python benchmarks/screening_eval.py

The index is built from the corpus *training* split only (AdvBench + Do-Not-Answer train +
many-shot triple prompts); positives are the held-out eval split (HarmBench + the Do-Not-Answer
eval subset, minus its human_chatbox area, which asks about the assistant, not for harm);
negatives are the benign look-alike prompts and the user turns of the sample datasets.

Assistant turns: the thresholds are chosen on the SAP triple responses (two folds: the response
index holds one half, the other half is scored) against benign answers (the sample datasets'
assistant turns, the experiment's worked word-problem answers, the refusal templates and the
contrast answers); the other many-shot harmful responses are held out and only reported.
Prints numbers only, never prompt text.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for scripts.experiment_data when run as a file

from dataformats import validate_jsonl  # noqa: E402
from sap_core.evaluation.benign_prompts import benign_prompts  # noqa: E402
from sap_core.safety.contrast import CONTRAST_EXAMPLES  # noqa: E402
from sap_core.safety.corpus import HarmfulPair, corpus_splits, load_harmful_responses  # noqa: E402
from sap_core.safety.refusals import REFUSAL_TEMPLATES  # noqa: E402
from screening.screen import Reference, ScreeningIndex, default_index  # noqa: E402
from scripts.experiment_data import word_problems  # noqa: E402

EXAMPLES = ROOT / "examples"
ASSISTANT_GRID = ((0.2, 0.1), (0.25, 0.12), (0.3, 0.1), (0.3, 0.12), (0.3, 0.15), (0.4, 0.15))


def _turns(role: str) -> list[str]:
    texts: list[str] = []
    for path in sorted(EXAMPLES.glob("*.jsonl")):
        report = validate_jsonl(path.open("rb"), keep=True)
        texts += [m.content for c in report.conversations for m in c.messages if m.role == role]
    return texts


def _responses(pairs: Sequence[HarmfulPair]) -> list[Reference]:
    return [Reference(p.id, "manyshot_response", p.response, None) for p in pairs]


def assistant_thresholds(refs: list[Reference]) -> dict[str, dict[str, object]]:
    """Flagged counts per (threshold / lexicon threshold) for assistant turns."""
    splits = corpus_splits()
    triples = list(splits.triple_pairs)
    triple_ids = {p.id for p in triples}
    held_out = [p.response for p in load_harmful_responses() if p.id not in triple_ids]
    benign = {
        "sample answers": _turns("assistant"),
        "word-problem answers": [p.worked for p in word_problems(500, seed=0)],
        "refusal templates": list(REFUSAL_TEMPLATES),
        "contrast answers": [c.answer for c in CONTRAST_EXAMPLES],
    }
    folds = ((triples[::2], triples[1::2]), (triples[1::2], triples[::2]))
    results: dict[str, dict[str, object]] = {}
    for threshold, lex in ASSISTANT_GRID:
        kwargs = {"assistant_threshold": threshold, "assistant_lexicon_threshold": lex}
        tuned = 0
        for indexed, scored in folds:
            index = ScreeningIndex(refs, responses=_responses(indexed), **kwargs)
            tuned += sum(index.screen_text(p.response, turn="assistant").flagged for p in scored)
        index = ScreeningIndex(refs, responses=_responses(triples), **kwargs)
        row: dict[str, object] = {
            "triple responses (2-fold)": f"{tuned}/{len(triples)}",
            "held-out responses": (
                f"{sum(index.screen_text(t, turn='assistant').flagged for t in held_out)}"
                f"/{len(held_out)}"
            ),
        }
        for name, texts in benign.items():
            flagged = sum(index.screen_text(t, turn="assistant").flagged for t in texts)
            row[name] = f"{flagged}/{len(texts)}"
        results[f"{threshold}/{lex}"] = row
    return results


def main() -> None:
    splits = corpus_splits()
    refs = [
        Reference(p.id, p.source, p.text, p.category)
        for p in splits.train
        if p.category != "human_chatbox"
    ] + [Reference(p.id, "manyshot", p.prompt, None) for p in splits.triple_pairs]
    positives = [p.text for p in splits.eval if p.category != "human_chatbox"]
    lookalikes = benign_prompts()
    sample_rows = _turns("user")
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
    print("assistant turns:")
    print(json.dumps(assistant_thresholds(refs), indent=1))
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
