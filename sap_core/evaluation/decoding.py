"""Greedy decoding at the speed of the hardware: the evaluation's generation engine.

The safety evaluation generates a few hundred short greedy replies per job; the loop here does
only what greedy decoding needs, and avoids the costs a general-purpose ``generate`` pays:

* **Batches sized by memory**, not a fixed count: a 0.5B model's decode step is bound by
  reading its weights (about 2 GB in fp32 per step), so every extra row in a step is almost
  free until the matmuls turn compute-bound; the batch is as large as a memory budget for the
  KV cache and the prefill activations allows (capped, see :data:`DEFAULT_MAX_ROWS`).
* **Length-sorted, left-padded** batches (longest first): little padding per batch, every
  row's next-token logits in the last column, an out-of-memory error on the first batch.
* **Finished rows leave the batch**: when a row emits an end-of-turn token its row is dropped
  from the inputs and from every layer's KV cache, so a batch of short refusals and a few long
  answers costs the long answers' steps on a handful of rows only. Padding columns no remaining
  row needs are trimmed from the cache at the same time.
* **The shared prompt prefix is prefilled once** per batch: every evaluation prompt starts
  with the same chat-template head (Qwen2.5's system prompt and turn markers: 24 of an average
  43 prompt tokens), so its keys and values are computed for one row and expanded to all rows;
  only the rows' own suffixes are prefilled in batch. Rows are then ``[prefix][pad][suffix]``:
  the padding sits between the two parts, masked, and position ids count real tokens only, so
  each row sees exactly the positions it would see alone.
* **Logits for the last position only** during prefill (``logits_to_keep=1``): the LM head of a
  152k-token vocabulary over every prompt position is a large share of prefill otherwise.
* **The adapter merged into a copy of the weights** (:func:`merged_for_evaluation`): unmerged
  LoRA runs a second pair of small matmuls plus Python dispatch on every adapted linear layer
  at every step. The merge happens on a deep copy in memory; nothing is written to disk, so the
  adapter file (and its sha256) that is served is exactly the one that was evaluated.

Example::

    new_ids = greedy_decode(model, [[1, 2, 3], [4, 5]], max_new_tokens=40, pad_id=0,
                            eos_ids=[2])

Numerics: greedy replies equal the previous ``generate``-based path's token for token except
where two logits are within fp32 reduction-order noise of each other; a different batch shape
(or merged vs. unmerged LoRA) changes the summation order of the matmuls, which can flip such
a near-tie (tests/sap_core/test_decoding.py measures it).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from sap_core.errors import ConfigError

# Rows per batch at most (the memory budget usually allows more). Even on a 2-core CPU larger
# batches keep paying: CPU seconds per prompt on Qwen2.5-0.5B fell from 8 rows to 96 rows
# (docs/benchmarks.md), since every decode step reads all weights once whatever the row count.
# An evaluation (~100-300 prompts) then runs in one to three batches on either device.
DEFAULT_MAX_ROWS = {"cpu": 128, "cuda": 128}
# Share of free accelerator memory (or of a fixed CPU allowance) the batch may occupy.
_CUDA_MEMORY_SHARE = 0.5
_CPU_MEMORY_BUDGET = 2 * 1024**3


def _bytes_per_element(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 8


def row_memory_bytes(config: Any, width: int, max_new_tokens: int, dtype: torch.dtype) -> int:
    """Peak memory one batch row needs: its KV cache at full length plus prefill activations.

    Args:
        config: The model's ``PretrainedConfig`` (layers, heads, hidden and MLP sizes).
        width: Padded prompt length of the batch.
        max_new_tokens: Generation budget.
        dtype: The model's parameter dtype.

    Returns:
        Bytes; an estimate on the safe side (attention scores assume eager [heads, w, w]).
    """
    size = _bytes_per_element(dtype)
    layers = int(getattr(config, "num_hidden_layers", 1))
    heads = int(getattr(config, "num_attention_heads", 1))
    hidden = int(getattr(config, "hidden_size", 1))
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    intermediate = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    vocab = int(getattr(config, "vocab_size", 1))
    total = width + max_new_tokens
    kv_cache = 2 * layers * kv_heads * head_dim * total * size  # keys + values, every layer
    # One layer's prefill working set at a time: hidden states (a few copies), the MLP's
    # gate/up/down activations and the attention scores.
    prefill = width * (6 * hidden + 3 * intermediate) * size + heads * width * width * size
    logits = vocab * 4  # last position only, upcast to fp32 for argmax
    return kv_cache + prefill + logits


def memory_budget_bytes(device: torch.device) -> int:
    """Bytes the decoding batch may use on ``device``.

    On CUDA: half of the memory free right now (the weights are already resident). On the CPU:
    a fixed 2 GiB, far below any machine that can hold the model at all.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * _CUDA_MEMORY_SHARE)
    return _CPU_MEMORY_BUDGET


def rows_for_budget(
    config: Any,
    width: int,
    max_new_tokens: int,
    dtype: torch.dtype,
    budget: int,
    max_rows: int,
) -> int:
    """How many rows of prompt width ``width`` fit ``budget`` (at least 1, at most ``max_rows``)."""
    per_row = row_memory_bytes(config, width, max_new_tokens, dtype)
    return max(1, min(max_rows, budget // max(per_row, 1)))


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    # Same convention as transformers' generate: a real token's position counts the real tokens
    # before it; padding positions get 1 (they are masked, the value only has to be valid).
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def _can_drop_rows(cache: DynamicCache) -> bool:
    # Only plain full-attention layers hold nothing but [batch, kv_heads, seq, head_dim] keys and
    # values; sliding-window or linear-attention layers keep state that slicing would corrupt.
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _select_rows(cache: DynamicCache, keep: torch.Tensor, first_column: int) -> None:
    """Keep rows ``keep`` and the columns from ``first_column`` on, in every layer's KV cache.

    Each layer holds keys and values as [batch, kv_heads, seq, head_dim].
    """
    for layer in cache.layers:
        if not isinstance(layer, DynamicLayer):
            continue  # not reached: _can_drop_rows admits plain DynamicLayers only
        keys, values = layer.keys, layer.values
        if keys is None or values is None or keys.numel() == 0:
            continue
        layer.keys = keys[keep, :, first_column:, :]
        layer.values = values[keep, :, first_column:, :]


def shared_prefix_length(batch: Sequence[list[int]]) -> int:
    """Tokens every prompt of ``batch`` starts with, leaving each row at least one of its own.

    The last prompt token must go through the batched prefill (its logits are the first reply
    token's), hence the cap of the shortest prompt's length minus one.
    """
    if not batch:
        return 0
    first, limit = batch[0], min(len(ids) for ids in batch) - 1
    length = 0
    while length < limit and all(ids[length] == first[length] for ids in batch):
        length += 1
    return length


def _prefill_shared_prefix(
    model: PreTrainedModel, prefix: list[int], rows: int, cache: DynamicCache, device: torch.device
) -> None:
    """Fill ``cache`` with the prefix's keys and values, computed once and shared by ``rows``.

    The prefix runs as one row ([1, prefix_len]); each layer's [1, kv_heads, prefix_len,
    head_dim] keys and values are then expanded (a view, no copy) to ``rows`` rows. The first
    ``torch.cat`` the cache does on the next forward pass materialises them per row.
    """
    model(
        input_ids=torch.tensor([prefix], dtype=torch.long, device=device),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    for layer in cache.layers:
        if not isinstance(layer, DynamicLayer):
            continue  # not reached: only plain full-attention caches share a prefix
        keys, values = layer.keys, layer.values
        if keys is not None and values is not None and keys.numel():
            layer.keys = keys.expand(rows, -1, -1, -1)
            layer.values = values.expand(rows, -1, -1, -1)


def _decode_batch(
    model: PreTrainedModel,
    batch: Sequence[list[int]],
    max_new_tokens: int,
    pad_id: int,
    eos: torch.Tensor,
    device: torch.device,
) -> list[list[int]]:
    """Greedy new tokens (end-of-turn excluded) for one batch of prompts, in batch order."""
    rows = len(batch)
    cache = DynamicCache(config=model.config)
    droppable = _can_drop_rows(cache)
    # Shared-prefix reuse expands plain full-attention caches only (like dropping rows).
    prefix_len = shared_prefix_length(batch) if droppable and rows > 1 else 0
    if prefix_len:
        _prefill_shared_prefix(model, batch[0][:prefix_len], rows, cache, device)
    suffixes = [ids[prefix_len:] for ids in batch]
    width = max(len(ids) for ids in suffixes)
    # [rows, width] left-padded suffix ids and mask: the last column holds every row's last token.
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    suffix_mask = torch.zeros((rows, width), dtype=torch.long)
    for row, ids in enumerate(suffixes):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        suffix_mask[row, width - len(ids) :] = 1
    input_ids, suffix_mask = input_ids.to(device), suffix_mask.to(device)
    # The mask covers the cached prefix and the suffix: [rows, prefix_len + width].
    attention_mask = torch.cat([suffix_mask.new_ones((rows, prefix_len)), suffix_mask], dim=1)
    positions = _position_ids(suffix_mask) + prefix_len
    positions = positions.masked_fill(suffix_mask == 0, 1)
    out: list[list[int]] = [[] for _ in batch]
    alive = torch.arange(rows, device=device)  # batch index of each remaining row
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits  # [rows, 1, vocab]
    next_pos = positions[:, -1] + 1  # [rows]
    # Rows that ended but stay in the batch (only where the cache cannot drop rows).
    ended = torch.zeros(rows, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        tokens = logits[:, -1, :].argmax(dim=-1)  # [alive]
        finished = torch.isin(tokens, eos) | ended
        for row, token, done in zip(
            alive.tolist(), tokens.tolist(), finished.tolist(), strict=True
        ):
            if not done:
                out[row].append(token)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        if not droppable:
            ended = finished
        elif bool(finished.any()):
            keep = (~finished).nonzero().squeeze(-1)
            alive, tokens, next_pos, ended = alive[keep], tokens[keep], next_pos[keep], ended[keep]
            attention_mask = attention_mask[keep]
            # Columns that are padding in every remaining row carry no information: drop them.
            first_column = int((attention_mask.sum(dim=0) > 0).nonzero()[0])
            attention_mask = attention_mask[:, first_column:]
            _select_rows(cache, keep, first_column)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(alive), 1))], 1)
        logits = model(
            input_ids=tokens[:, None],
            attention_mask=attention_mask,
            position_ids=next_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        ).logits  # [alive, 1, vocab]
        next_pos = next_pos + 1
    return out


def greedy_decode(
    model: PreTrainedModel,
    token_ids: Sequence[list[int]],
    *,
    max_new_tokens: int,
    pad_id: int,
    eos_ids: Sequence[int],
    max_rows: int | None = None,
    memory_budget: int | None = None,
) -> list[list[int]]:
    """Greedy continuation of every prompt, batched by memory, in the caller's order.

    Args:
        model: A causal LM already on its device, in eval mode.
        token_ids: Prompt token ids (chat template applied).
        max_new_tokens: Generation budget per prompt.
        pad_id: Token id used for left padding (masked out).
        eos_ids: Tokens that end a reply (not included in the result).
        max_rows: Rows per batch at most; default :data:`DEFAULT_MAX_ROWS` for the device.
        memory_budget: Bytes the batch may use; default :func:`memory_budget_bytes`.

    Returns:
        The generated token ids per prompt, in input order.

    Raises:
        ConfigError: If ``max_new_tokens`` or ``max_rows`` is not positive or ``eos_ids`` is
            empty.
    """
    if max_new_tokens < 1 or (max_rows is not None and max_rows < 1):
        raise ConfigError(f"max_new_tokens and max_rows must be >= 1, got {max_new_tokens}")
    if not eos_ids:
        raise ConfigError("greedy decoding needs at least one end-of-reply token id")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    cap = max_rows or DEFAULT_MAX_ROWS.get(device.type, DEFAULT_MAX_ROWS["cuda"])
    budget = memory_budget if memory_budget is not None else memory_budget_bytes(device)
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=device)
    order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
    results: list[list[int]] = [[] for _ in token_ids]
    start = 0
    with torch.inference_mode():
        while start < len(order):
            # The longest prompt of the batch comes first: it sets the width and the row count.
            width = len(token_ids[order[start]])
            rows = rows_for_budget(model.config, width, max_new_tokens, dtype, budget, cap)
            batch_idx = order[start : start + rows]
            replies = _decode_batch(
                model, [token_ids[i] for i in batch_idx], max_new_tokens, pad_id, eos, device
            )
            for i, reply in zip(batch_idx, replies, strict=True):
                results[i] = reply
            start += rows
    return results


def merged_for_evaluation(model: Any) -> Any:
    """A copy of ``model`` with its LoRA adapter merged into the weights, or ``model`` itself.

    A peft model whose active adapters are all LoRA is deep-copied and merged
    (``merge_and_unload``): the copy is a plain transformers model computing
    ``W' = W + scale * B @ A`` once instead of ``x @ W + scale * (x @ A) @ B`` at every step.
    The original model, its adapter weights and the adapter file are untouched; the copy lives
    only in memory and is dropped after evaluation. Anything else (a plain model, a model with a
    non-LoRA or quantized adapter) is returned unchanged.

    The copy doubles the model's memory for the length of the evaluation.
    """
    if not hasattr(model, "merge_and_unload") or not hasattr(model, "peft_config"):
        return model
    configs = getattr(model, "peft_config", {})
    if not configs or any(
        str(getattr(c, "peft_type", "")).split(".")[-1] != "LORA" for c in configs.values()
    ):
        return model
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return model
    merged = copy.deepcopy(model).merge_and_unload()
    merged.eval()
    return merged
