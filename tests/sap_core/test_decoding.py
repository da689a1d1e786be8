"""The evaluation's decoder: memory-sized batches, finished rows dropped, adapter merged on a copy.

The fidelity tests run the real SmolLM2-135M (var/models, pulled by ``make models``) through the
previous ``generate``-based path and the new decoder on the same prompts and compare replies
token for token, for the base model and for a non-zero LoRA adapter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from sap_core.errors import ConfigError
from sap_core.evaluation import decoding
from sap_core.evaluation.benign_prompts import benign_prompts
from sap_core.evaluation.decoding import (
    greedy_decode,
    merged_for_evaluation,
    row_memory_bytes,
    rows_for_budget,
)
from sap_core.evaluation.generation import generate_replies
from sap_core.evaluation.judges import KeywordJudge
from sap_core.models import pull_model
from sap_core.safety.corpus import load_eval_prompts
from tests.sap_core.tiny_eval_model import make_causal_lm_dir

MODELS = Path(__file__).resolve().parents[2] / "var" / "models"
SMOLLM = "smollm2-135m-instruct"
# Small enough to stay quick on two shared cores, large enough that batches mix lengths,
# rows finish at different steps and the row/column dropping is exercised many times.
# The 100-prompt comparison: `benchmarks/bench_eval.py --prompts 100` (docs/benchmarks.md).
FIDELITY_PROMPTS = 16
FIDELITY_TOKENS = 24


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    path = make_causal_lm_dir(tmp_path_factory.mktemp("dec") / "model")
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def _ids(n: int) -> list[list[int]]:
    # Prompts of lengths 1..n+? in a shuffled order, tokens away from the special ids.
    return [[5 + (7 * i + j) % 40 for j in range(1 + (5 * i) % 11)] for i in range(n)]


def _partial_stop(model, prompts: list[list[int]]) -> int:  # type: ignore[no-untyped-def]
    """A token some rows emit (within 10 steps) and others never: a stop that splits a batch."""
    full = greedy_decode(model, prompts, max_new_tokens=10, pad_id=0, eos_ids=[10_000])
    return next(t for reply in full for t in reply if any(t not in other for other in full))


def test_batch_shape_and_memory_budget_do_not_change_tokens(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _ = tiny
    prompts = _ids(9)
    stop = _partial_stop(model, prompts)  # some rows finish early and leave their batch
    kwargs = {"max_new_tokens": 10, "pad_id": 0, "eos_ids": [stop]}
    one_by_one = greedy_decode(model, prompts, max_rows=1, **kwargs)
    batched = greedy_decode(model, prompts, max_rows=9, **kwargs)
    starved = greedy_decode(model, prompts, memory_budget=1, **kwargs)  # one row per batch
    assert batched == one_by_one == starved
    assert all(len(reply) <= 10 and stop not in reply for reply in batched)
    assert any(len(reply) < 10 for reply in batched)
    assert any(len(reply) == 10 for reply in batched)


def test_shared_prefix_is_prefilled_once_and_changes_no_token(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _ = tiny
    head = [7, 8, 9, 10, 11, 12]  # a chat-template-like head every prompt starts with
    prompts = [head + ids for ids in _ids(9)]
    assert decoding.shared_prefix_length(prompts) == len(head)
    stop = _partial_stop(model, prompts)
    kwargs = {"max_new_tokens": 10, "pad_id": 0, "eos_ids": [stop]}
    one_by_one = greedy_decode(model, prompts, max_rows=1, **kwargs)  # no prefix to share
    calls: list[tuple[int, ...]] = []
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        batched = greedy_decode(model, prompts, max_rows=9, **kwargs)
    finally:
        handle.remove()
    assert batched == one_by_one
    # The head ran once as one row; the batched prefill saw only the rows' own suffixes.
    assert calls[0] == (1, len(head))
    assert calls[1] == (9, max(len(p) for p in prompts) - len(head))


def test_shared_prefix_leaves_every_row_one_token_of_its_own() -> None:
    assert decoding.shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert decoding.shared_prefix_length([[1, 2], [3, 4]]) == 0
    assert decoding.shared_prefix_length([[5]]) == 0
    assert decoding.shared_prefix_length([]) == 0


def test_rows_finishing_early_leave_the_batch(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _ = tiny
    prompts = _ids(6)
    full = greedy_decode(model, prompts, max_new_tokens=8, pad_id=0, eos_ids=[10_000])
    # A stop token some rows emit and others never do: those rows leave, the others go on,
    # and every reply equals its uncut one, cut where the stop token is.
    stop = next(t for reply in full for t in reply if any(t not in other for other in full))
    rows_per_step: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: rows_per_step.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        cut = greedy_decode(model, prompts, max_new_tokens=8, pad_id=0, eos_ids=[stop])
    finally:
        hook.remove()
    for reply, whole in zip(cut, full, strict=True):
        assert reply == whole[: whole.index(stop) if stop in whole else len(whole)]
    assert rows_per_step[0] == 6
    assert min(rows_per_step) < 6, "a finished row must leave the batch"
    # Declare the first token each row produced its end of reply: every row stops at once.
    firsts = [reply[0] for reply in full]
    stopped = greedy_decode(model, prompts, max_new_tokens=8, pad_id=0, eos_ids=firsts)
    for reply, first in zip(stopped, firsts, strict=True):
        assert first not in reply
    # Rows whose first token is another row's stop token end empty; the others are cut at
    # the first stop token of theirs, exactly as in the unstopped run.
    for reply, whole in zip(stopped, full, strict=True):
        cut = next((k for k, t in enumerate(whole) if t in firsts), len(whole))
        assert reply == whole[:cut]


def test_caches_that_cannot_drop_rows_keep_them_and_give_the_same_tokens(  # type: ignore[no-untyped-def]
    tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = tiny
    prompts = _ids(7)
    kwargs = {"max_new_tokens": 10, "pad_id": 0, "eos_ids": [_partial_stop(model, prompts)]}
    dropping = greedy_decode(model, prompts, **kwargs)
    monkeypatch.setattr(decoding, "_can_drop_rows", lambda _cache: False)
    assert greedy_decode(model, prompts, **kwargs) == dropping


def test_rows_for_budget_scales_with_memory_and_is_bounded(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _ = tiny
    per_row = row_memory_bytes(model.config, 50, 40, torch.float32)
    assert per_row > row_memory_bytes(model.config, 10, 40, torch.float32)
    assert rows_for_budget(model.config, 50, 40, torch.float32, 0, 32) == 1
    assert rows_for_budget(model.config, 50, 40, torch.float32, 5 * per_row, 32) == 5
    assert rows_for_budget(model.config, 50, 40, torch.float32, 10**15, 32) == 32
    # bf16 halves the cache: twice the rows in the same budget.
    bf16 = rows_for_budget(model.config, 50, 40, torch.bfloat16, 10 * per_row, 1000)
    assert bf16 > 10


def test_bad_arguments_are_config_errors(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _ = tiny
    with pytest.raises(ConfigError):
        greedy_decode(model, [[5]], max_new_tokens=0, pad_id=0, eos_ids=[3])
    with pytest.raises(ConfigError):
        greedy_decode(model, [[5]], max_new_tokens=2, pad_id=0, eos_ids=[])
    with pytest.raises(ConfigError):
        greedy_decode(model, [[5]], max_new_tokens=2, pad_id=0, eos_ids=[3], max_rows=0)


def test_merge_is_a_copy_and_leaves_the_adapter_untouched(tiny) -> None:  # type: ignore[no-untyped-def]
    model, _ = tiny
    assert merged_for_evaluation(model) is model  # a plain model is used as it is
    torch.manual_seed(3)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model.name_or_path, use_safetensors=True),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    ).eval()
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    merged = merged_for_evaluation(peft_model)
    assert merged is not peft_model
    assert not any("lora" in name for name, _ in merged.named_parameters())
    after = peft_model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    ids = torch.tensor([[5, 9, 12, 7]])
    with torch.inference_mode():
        reference = peft_model(input_ids=ids).logits
        merged_logits = merged(input_ids=ids).logits
    torch.testing.assert_close(merged_logits, reference, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- fidelity


@pytest.fixture(scope="module")
def smollm() -> tuple[object, object]:
    path = pull_model(SMOLLM, MODELS)
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def _fidelity_prompts() -> list[str]:
    harmful = [p.text for p in load_eval_prompts(FIDELITY_PROMPTS - 4, 0)]
    return harmful + benign_prompts(4, 0)


def _compare(old_model, new_model, tokenizer, prompts: list[str]) -> tuple[int, float, list[str]]:  # type: ignore[no-untyped-def]
    """(replies that differ, share of keyword-judge labels that agree, the new replies)."""
    old = generate_replies(old_model, tokenizer, prompts, FIDELITY_TOKENS, 4, legacy=True)
    new = generate_replies(new_model, tokenizer, prompts, FIDELITY_TOKENS, 8)
    judge = KeywordJudge()
    old_labels, new_labels = judge.judge(prompts, old), judge.judge(prompts, new)
    agree = sum(a == b for a, b in zip(old_labels, new_labels, strict=True)) / len(prompts)
    assert all(reply for reply in new), "every prompt gets a reply"
    return sum(a != b for a, b in zip(old, new, strict=True)), agree, new


def test_fidelity_base_model_replies_are_token_identical(smollm) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = smollm
    differing, agree, _ = _compare(model, model, tokenizer, _fidelity_prompts())
    assert differing == 0
    assert agree == 1.0


def test_fidelity_merged_adapter_matches_the_unmerged_one(smollm) -> None:  # type: ignore[no-untyped-def]
    model, tokenizer = smollm
    torch.manual_seed(0)
    # A non-zero adapter (B is random too) that visibly changes the replies.
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, config).eval()
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            # ~3 % relative change of the logits: replies change, the model stays fluent.
            param.data.mul_(0.4)
    try:
        prompts = _fidelity_prompts()
        with peft_model.disable_adapter():
            base = generate_replies(peft_model, tokenizer, prompts, FIDELITY_TOKENS, 8)
        merged = merged_for_evaluation(peft_model)
        differing, agree, tuned = _compare(peft_model, merged, tokenizer, prompts)
    finally:
        peft_model.unload()  # gives the shared module fixture its plain layers back
    assert tuned != base, "the adapter must change the replies for this test to mean anything"
    # Merged weights sum W + BA once instead of x@W + (x@A)@B per step: fp32 reduction order
    # differs, which may flip a near-tie between two logits. None did on these prompts.
    assert differing == 0
    assert agree == 1.0
