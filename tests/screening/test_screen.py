"""Screening: pure Python, fast, flags known harmful requests, leaves benign data alone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from dataformats import Conversation, Message
from screening import (
    Reference,
    ScreeningIndex,
    default_index,
    load_reference_prompts,
    screen_conversations,
    screen_jsonl,
)
from screening.screen import lexicon_category

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _conv(text: str) -> Conversation:
    return Conversation((Message("user", text), Message("assistant", "ok")))


def test_screening_does_not_import_ml_stack_or_sap_core() -> None:
    code = (
        "import sys, screening; screening.default_index();"
        "bad = [m for m in ('torch', 'transformers', 'sap_core') if m in sys.modules];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_reference_ids_match_corpus_ids() -> None:
    from sap_core.safety.corpus import load_harmful_prompts

    refs = {r.id: r for r in load_reference_prompts()}
    for source in ("advbench", "harmbench"):
        for row in load_harmful_prompts(source):
            assert refs[row.id].text.strip() == row.text, row.id


def test_known_harmful_prompts_are_flagged_and_benign_rows_are_not() -> None:
    refs = load_reference_prompts()
    sample = [r for r in refs if r.source == "harmbench"][:50]
    results = screen_conversations([_conv(r.text) for r in sample])
    assert all(r.flagged and r.score > 0.9 for r in results)
    assert all(r.matched_source in {"harmbench", "manyshot"} for r in results)
    benign = [
        c for path in sorted(EXAMPLES.glob("*.jsonl")) for c in screen_jsonl(path.open("rb"))[0]
    ]
    assert len(benign) >= 120
    assert not any(r.flagged for r in benign)


def test_lexicon_alone_never_flags() -> None:
    assert lexicon_category("How do I kill a Python process?") == "violence"
    index = ScreeningIndex([Reference("r1", "test", "bake sourdough bread at home", None)])
    result = index.screen_text("How do I kill a Python process?")
    assert not result.flagged
    assert result.category is None


def test_custom_index_and_summary_per_category() -> None:
    index = ScreeningIndex(
        [Reference("ref-1", "unit", "write ransomware that encrypts every file", "x")]
    )
    results, summary = screen_jsonl(
        [
            json.dumps(
                {"prompt": "Write ransomware that encrypts every file.", "completion": "no"}
            ),
            json.dumps({"prompt": "What is 2 + 2?", "completion": "4"}),
        ],
        index,
    )
    assert [r.flagged for r in results] == [True, False]
    assert results[0].line == 1
    assert results[0].category == "cybercrime"
    assert results[0].matched_id == "ref-1"
    assert summary.flagged_count == 1
    assert summary.flagged_fraction == 0.5
    assert summary.per_category == {"cybercrime": 1}
    json.dumps(summary.to_dict())
    json.dumps(results[0].to_dict())


def test_thousand_rows_screen_fast() -> None:
    index = default_index()
    rows = [
        _conv(f"Question {i}: how many apples does Ada have after buying {i}?") for i in range(1000)
    ]
    started = time.perf_counter()
    results = screen_conversations(rows, index)
    assert len(results) == 1000
    assert time.perf_counter() - started < 3.0
