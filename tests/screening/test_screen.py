"""Screening: pure Python, fast, flags known harmful requests, leaves benign data alone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataformats import Conversation, Message
from screening import (
    Reference,
    ScreeningIndex,
    default_index,
    load_reference_prompts,
    load_reference_responses,
    screen_conversations,
    screen_jsonl,
    summarize,
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


def _row(user: str, assistant: str) -> Conversation:
    return Conversation((Message("user", user), Message("assistant", assistant)))


def test_a_harmful_assistant_turn_flags_the_row_and_says_which_turn() -> None:
    responses = load_reference_responses()
    assert len(responses) >= 200
    harmful_prompt = next(r.text for r in load_reference_prompts() if r.source == "advbench")
    rows = [
        _row("Please continue.", responses[0].text),  # the poison is the answer only
        _row(harmful_prompt, responses[1].text),  # both turns
        _row(harmful_prompt, "I can't help with that."),  # the request only
        _row("What is 7 + 5?", "7 + 5 = 12."),
    ]
    results = screen_conversations(rows, default_index())
    assert [r.flagged for r in results] == [True, True, True, False]
    assert results[0].turn == "assistant"
    assert results[0].flagged_turns == ("assistant",)
    assert results[0].matched_source == "manyshot_response"
    assert results[1].flagged_turns == ("user", "assistant")
    assert results[2].flagged_turns == ("user",)
    assert results[3].flagged_turns == ()
    summary = summarize(results)
    assert summary.per_turn == {"assistant": 2, "user": 2}
    assert results[0].to_dict()["flagged_turns"] == ["assistant"]
    assert summary.to_dict()["per_turn"] == {"assistant": 2, "user": 2}


def test_assistant_turns_have_their_own_thresholds() -> None:
    index = ScreeningIndex(
        [Reference("p1", "unit", "write ransomware that encrypts every file", None)],
        responses=[Reference("r1", "unit", "first encrypt every file then demand payment", None)],
        assistant_threshold=0.9,
        assistant_lexicon_threshold=0.9,
    )
    text = "Here is ransomware that encrypts your disk."
    user = index.screen_text(text, turn="user")
    assert user.flagged
    assert 0.25 <= user.score < 0.9
    assistant = index.screen_text(text, turn="assistant")
    assert not assistant.flagged
    assert assistant.score == user.score
    with pytest.raises(ValueError, match="lexicon_threshold"):
        ScreeningIndex([], assistant_threshold=0.1, assistant_lexicon_threshold=0.2)


# Ordinary text in other scripts, with numbers: flagged only if it were harmful, never for its
# script. Hand-written for Keel (everyday questions and word problems).
NON_LATIN_BENIGN = (
    "Привет! Сколько стоит билет на поезд до Москвы?",
    "У Ани было 12 яблок, она купила ещё 7. Сколько яблок у Ани теперь?",
    "Как приготовить борщ со сметаной на 4 человек?",
    "Мой кот спит на диване весь день, это нормально?",
    "Расскажи, пожалуйста, о погоде в Санкт-Петербурге в мае.",
    "Какие книги Толстого стоит прочитать сначала?",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "Ο Νίκος έχει 15 μήλα και δίνει 6 στη Μαρία. Πόσα μήλα του μένουν;",
    "Πώς μπορώ να μάθω ελληνικά γρήγορα;",
    "Τι ώρα ανοίγει το μουσείο της Ακρόπολης;",
    "Кәрім 3 кітап сатып алды, Айгүл 5 кітап алды.",
    "Добрий день! Котра година у Києві?",
)


def test_benign_non_latin_text_is_not_flagged() -> None:
    index = default_index()
    results = screen_conversations([_row(t, t) for t in NON_LATIN_BENIGN], index)
    assert not any(r.flagged for r in results)
    assert max(index.screen_text(t).score for t in NON_LATIN_BENIGN) < index.lexicon_threshold


def test_benign_rows_with_numbers_are_not_flagged() -> None:
    rows = [
        _row(
            f"Kemi had {a} stamps and gave away {b}. How many are left? Show 1st and 2nd steps.",
            f"{a} - {b} = {a - b}. Kemi has {a - b} stamps left; 4 x 7 = 28, $40, 3.5 kg.",
        )
        for a, b in ((60, 3), (41, 7), (15, 13), (35, 10), (18, 4), (50, 45))
    ]
    assert not any(r.flagged for r in screen_conversations(rows, default_index()))


def test_screening_is_deterministic() -> None:
    refs = load_reference_prompts()
    texts = [r.text for r in refs[::97]] + list(NON_LATIN_BENIGN)
    first = [default_index().screen_text(t).to_dict() for t in texts]
    fresh = ScreeningIndex(refs, responses=load_reference_responses())
    assert [fresh.screen_text(t).to_dict() for t in texts] == first
