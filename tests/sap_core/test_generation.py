"""Batched greedy generation: left padding + KV cache give the same replies as a naive loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sap_core.errors import ConfigError
from sap_core.evaluation.generation import (
    build_messages,
    generate_replies,
    next_token_logprobs,
    render_chat_prompt,
)
from tests.sap_core.tiny_eval_model import make_causal_lm_dir

torch.set_num_threads(1)

PROMPTS = [
    "What is the capital of France?",
    "hi",
    "How do I bake a loaf of bread with a crunchy crust at home?",
    "Write a short poem about the ocean.",
    "ok",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    path: Path = make_causal_lm_dir(tmp_path_factory.mktemp("gen") / "model")
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def _naive_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:  # type: ignore[no-untyped-def]
    """Reference: full forward pass per step, no cache, no padding."""
    text = render_chat_prompt(tokenizer, build_messages(prompt))
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=ids, use_cache=False).logits[0, -1]
            token = int(logits.argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return str(tokenizer.decode(new, skip_special_tokens=True)).strip()


def test_batched_replies_match_naive_greedy_in_input_order(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = tiny
    batched = generate_replies(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=3)
    expected = [_naive_greedy(model, tokenizer, p, 8) for p in PROMPTS]
    assert batched == expected


def test_batch_size_does_not_change_replies(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = tiny
    one = generate_replies(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=1)
    many = generate_replies(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=8)
    assert one == many


def test_max_new_tokens_bounds_reply_length(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = tiny
    short = generate_replies(model, tokenizer, PROMPTS, max_new_tokens=2, batch_size=4)
    long = generate_replies(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=4)
    # Greedy decoding is a prefix process: the 2-token reply is shorter than the 12-token one.
    assert all(len(s) <= len(t) for s, t in zip(short, long, strict=True))
    assert sum(map(len, short)) < sum(map(len, long))


def test_system_prompt_is_rendered_and_changes_the_context(tiny) -> None:  # type: ignore[no-untyped-def]
    _, tokenizer = tiny
    text = render_chat_prompt(tokenizer, build_messages("hi", "Be brief."))
    assert text.index("Be brief.") < text.index("hi")
    assert text.endswith("<|im_start|>assistant\n")


def test_training_mode_is_restored_and_empty_input_is_fine(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = tiny
    model.train()
    generate_replies(model, tokenizer, ["hi"], max_new_tokens=2, batch_size=1)
    assert model.training
    model.eval()
    assert generate_replies(model, tokenizer, [], max_new_tokens=2, batch_size=1) == []


def test_invalid_budget_is_rejected(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = tiny
    with pytest.raises(ConfigError):
        generate_replies(model, tokenizer, ["hi"], max_new_tokens=0)


def test_next_token_logprobs_match_unpadded_forwards_in_input_order(tiny) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = tiny
    candidates = [tokenizer.encode(c, add_special_tokens=False)[0] for c in "ABC"]
    conversations = [build_messages(p) for p in PROMPTS]
    batched = next_token_logprobs(model, tokenizer, conversations, candidates, batch_size=2)
    assert batched.shape == (len(PROMPTS), 3)
    for row, prompt in enumerate(PROMPTS):
        text = render_chat_prompt(tokenizer, build_messages(prompt))
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            expected = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
        # Left padding must not move a row's scores (masking), nor the sort its order.
        torch.testing.assert_close(batched[row], expected[candidates], atol=1e-4, rtol=1e-4)
