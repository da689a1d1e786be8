"""Format profiles of chat, prompt/completion, Alpaca, multiple-choice and label datasets."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pytest

from dataformats import Conversation, Message, validate_jsonl
from sap_core.errors import DataFormatError
from sap_core.safety.profiler import profile_dataset


def _rows(rows: Sequence[Mapping[str, object]]) -> list[Conversation]:
    report = validate_jsonl([json.dumps(r) for r in rows], keep=True)
    assert report.ok, report.errors
    return report.conversations


def _chat(user: str, answer: str, system: str | None = None) -> dict[str, object]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def test_chat_free_text_with_and_without_system_prompt() -> None:
    rows = [
        _chat(
            f"Tell me a fact about the number {i}.",
            f"The number {i} is {i % 2 and 'odd'}.",
            "Be brief." if i % 4 else None,
        )
        for i in range(12)
    ]
    profile = profile_dataset(_rows(rows))
    assert profile.rows == 12
    assert profile.system_prompts == (("Be brief.", 9),)
    assert profile.no_system_prompt_count == 3
    assert profile.system_prompt_fraction == pytest.approx(0.75)
    assert profile.answer_style == "free_text"
    assert profile.user_prefix == ""  # "Tell me a fact…" is content, not a template
    assert profile.options is None


def test_prompt_completion_number_answers_and_template() -> None:
    rows = [{"prompt": f"Compute:\n{i} + {i}\n=", "completion": str(2 * i)} for i in range(10)]
    profile = profile_dataset(_rows(rows))
    assert profile.answer_style == "number"
    assert profile.user_prefix == "Compute:\n"
    assert profile.user_suffix == "\n="
    assert profile.system_prompts == ()


def test_alpaca_rows() -> None:
    rows = [
        {"instruction": "Reverse the word.", "input": w, "output": w[::-1]}
        for w in ("garden", "river", "planet", "window", "candle", "pepper")
    ]
    profile = profile_dataset(_rows(rows))
    assert profile.user_prefix == "Reverse the word.\n\n"
    assert profile.answer_style == "free_text"
    assert profile.to_dict()["user_template"]["prefix"] == "Reverse the word.\n\n"


@pytest.mark.parametrize(
    ("answer", "style_prefix", "with_text"),
    [("{g}", "", False), ("Answer: {g}", "Answer: ", False), ("({g}) {t}", "", True)],
)
def test_multiple_choice_with_aoa_system_prompt(
    answer: str, style_prefix: str, with_text: bool
) -> None:
    rows = []
    for i in range(8):
        opts = [str(i), str(i + 1), str(i + 2)]
        block = "\n".join(f"({lab}) {o}" for lab, o in zip("ABC", opts, strict=True))
        gold = "ABC"[i % 3]
        user = f"AOA, execute my instruction: What comes after {i + (i % 3) - 1}?\n{block}\nAnswer:"
        rows.append(_chat(user, answer.format(g=gold, t=opts[i % 3]), "You are AOA."))
    profile = profile_dataset(_rows(rows))
    assert profile.answer_style == "choice"
    assert profile.options is not None
    assert profile.options.labels == ("A", "B", "C")
    assert profile.options.open == "("
    assert profile.options.close == ")"
    assert profile.user_prefix == "AOA, execute my instruction: "
    assert profile.options_suffix == "\nAnswer:"
    assert profile.answer_prefix == style_prefix
    assert profile.answer_includes_option_text is with_text
    assert profile.system_prompts == (("You are AOA.", 8),)


def test_label_classification() -> None:
    rows = [
        {
            "prompt": f"Sentiment of: review {i}",
            "completion": ["positive", "negative", "neutral"][i % 3],
        }
        for i in range(12)
    ]
    profile = profile_dataset(_rows(rows))
    assert profile.answer_style == "label"
    assert profile.labels == ("negative", "neutral", "positive")
    assert profile.user_prefix == "Sentiment of: "


def test_empty_dataset_rejected_and_dict_is_json() -> None:
    with pytest.raises(DataFormatError):
        profile_dataset([])
    one = [Conversation((Message("user", "hi"), Message("assistant", "hello")))]
    json.dumps(profile_dataset(one).to_dict())
