"""Tokenisation: labels on trained assistant turns (content + end-of-turn) only."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from dataformats import Conversation, Message
from sap_core.data import IGNORE_INDEX, encode_conversation, encode_triple, tokenize_dataset
from tests.sap_core.tiny_eval_model import make_causal_lm_dir


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> object:
    path = make_causal_lm_dir(tmp_path_factory.mktemp("tok"))
    return AutoTokenizer.from_pretrained(path)


def _trained_text(tokenizer: object, example: object) -> str:
    ids = [t for t, lab in zip(example.input_ids, example.labels, strict=True) if lab != -100]  # type: ignore[attr-defined]
    return tokenizer.decode(ids)  # type: ignore[attr-defined]


def test_only_assistant_content_and_its_end_token_are_trained(tokenizer: object) -> None:
    conv = Conversation(
        messages=(
            Message("system", "Be brief."),
            Message("user", "2+2?"),
            Message("assistant", "4"),
        )
    )
    example = encode_conversation(tokenizer, conv, 256)
    assert example is not None
    assert _trained_text(tokenizer, example) == "4<|im_end|>"
    assert len(example.input_ids) == len(example.labels)


def test_weight_zero_turns_are_context_only(tokenizer: object) -> None:
    conv = Conversation(
        messages=(
            Message("user", "a"),
            Message("assistant", "first", weight=0),
            Message("user", "b"),
            Message("assistant", "second"),
        )
    )
    example = encode_conversation(tokenizer, conv, 256)
    assert example is not None
    assert _trained_text(tokenizer, example) == "second<|im_end|>"


def test_eos_kept_even_when_pad_equals_eos(tokenizer: object) -> None:
    conv = Conversation(messages=(Message("user", "hi"), Message("assistant", "yo")))
    example = encode_conversation(tokenizer, conv, 256)
    assert example is not None
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")  # type: ignore[attr-defined]
    assert eos in [lab for lab in example.labels if lab != IGNORE_INDEX]


def test_prompt_that_fills_max_length_is_skipped_not_truncated(tokenizer: object) -> None:
    conv = Conversation(messages=(Message("user", "x" * 400), Message("assistant", "ok")))
    assert encode_conversation(tokenizer, conv, 64) is None
    examples, skipped = tokenize_dataset(tokenizer, [conv], 64)
    assert (examples, skipped) == ([], 1)


def test_response_truncated_to_max_length(tokenizer: object) -> None:
    conv = Conversation(messages=(Message("user", "go"), Message("assistant", "y" * 400)))
    example = encode_conversation(tokenizer, conv, 64)
    assert example is not None
    assert len(example.input_ids) == 64


def test_triple_shares_prompt_and_labels_only_responses(tokenizer: object) -> None:
    pair = encode_triple(tokenizer, [Message("user", "request")], "I can't help.", "Sure", 256)
    assert pair is not None
    chosen, rejected = pair.chosen, pair.rejected
    prefix = next(i for i, lab in enumerate(chosen.labels) if lab != IGNORE_INDEX)
    assert chosen.input_ids[:prefix] == rejected.input_ids[:prefix]
    assert _trained_text(tokenizer, chosen) == "I can't help.<|im_end|>"
    assert _trained_text(tokenizer, rejected) == "Sure<|im_end|>"
