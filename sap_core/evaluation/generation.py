"""Batched greedy generation for safety evaluation.

Prompts are rendered with the tokenizer's chat template, sorted by length (so each batch carries
little padding), left-padded (so every row's last prompt token sits at the same position and the
first generated token follows it directly) and decoded greedily with the KV cache on. Replies
come back in the caller's order.

Decoding itself is :func:`sap_core.evaluation.decoding.greedy_decode` (batches sized by memory,
finished rows dropped). ``legacy=True`` keeps the previous path (fixed batches through
transformers' ``generate``) callable for the benchmark and the fidelity test.

Example::

    replies = generate_replies(model, tokenizer, ["What is the capital of France?"],
                               max_new_tokens=40, batch_size=8)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from sap_core.errors import ConfigError
from sap_core.evaluation.decoding import greedy_decode

ChatMessages = list[dict[str, str]]


def render_chat_prompt(tokenizer: PreTrainedTokenizerBase, messages: ChatMessages) -> str:
    """Render a conversation that ends with a user turn into the text the model continues.

    Args:
        tokenizer: Tokenizer; its chat template is used when it has one.
        messages: ``[{"role": ..., "content": ...}, ...]`` ending with a user message.

    Returns:
        The prompt text including the assistant generation header. Without a chat template
        the turns are joined as ``role: content`` lines ending in ``assistant:``.
    """
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return str(rendered)
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def build_messages(prompt: str, system_prompt: str | None = None) -> ChatMessages:
    """Single-turn chat messages for ``prompt`` with an optional system prompt."""
    messages: ChatMessages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": prompt})
    return messages


def _pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # Many chat tokenizers ship without a pad token; padding positions are masked out anyway,
    # so reusing EOS is safe for generation.
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise ConfigError("tokenizer has neither a pad nor an eos token; cannot batch prompts")
    return int(pad)


def _eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    # Chat models often stop on an end-of-turn token (e.g. <|im_end|>) that differs from the
    # tokenizer's eos; the model's own generation config lists it, so honour both.
    ids: set[int] = set()
    model_eos: Any = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(model_eos, int):
        ids.add(model_eos)
    elif isinstance(model_eos, list):
        ids.update(int(i) for i in model_eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def _encode_conversations(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[ChatMessages]
) -> list[list[int]]:
    """Token ids of each rendered conversation (generation header included)."""
    texts = [render_chat_prompt(tokenizer, messages) for messages in conversations]
    has_template = bool(getattr(tokenizer, "chat_template", None))
    # The chat template already contains BOS where the model wants one; adding special tokens
    # again would double it.
    return [tokenizer(text, add_special_tokens=not has_template)["input_ids"] for text in texts]


def _left_padded(batch: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, both [batch, width], padded on the left.

    Left padding puts every row's last prompt token at position ``width - 1``, so the next
    token's logits of all rows sit in the same column.
    """
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)  # 0 on the pad prefix
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def _longest_first(token_ids: Sequence[list[int]]) -> list[int]:
    # Longest first: batches hold similar lengths (little padding), and an out-of-memory error
    # shows up on the first batch rather than the last.
    return sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))


def next_token_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[ChatMessages],
    candidate_ids: Sequence[int],
    batch_size: int,
) -> torch.Tensor:
    """Log-probabilities of ``candidate_ids`` as the first token of the assistant's reply.

    One forward pass per batch, no generation: the judge's way of choosing among fixed
    answers without parsing free text.

    Args:
        model: A causal LM already on its device.
        tokenizer: Its tokenizer.
        conversations: Chat message lists, each ending with a user turn.
        candidate_ids: Token ids to score.
        batch_size: Conversations per forward pass.

    Returns:
        Float tensor [len(conversations), len(candidate_ids)] on the CPU, in input order
        (log-softmax over the whole vocabulary, so rows are comparable).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    token_ids = _encode_conversations(tokenizer, conversations)
    pad_id = _pad_token_id(tokenizer)
    device = next(model.parameters()).device
    candidates = torch.tensor(list(candidate_ids), dtype=torch.long)
    scores = torch.zeros((len(token_ids), len(candidates)))
    order = _longest_first(token_ids)
    for start in range(0, len(order), batch_size):
        batch_idx = order[start : start + batch_size]
        input_ids, attention_mask = _left_padded([token_ids[i] for i in batch_idx], pad_id)
        with torch.inference_mode():
            logits = model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
            ).logits  # [batch, width, vocab]
        # float32 before log-softmax: a bf16 model's logits lose the small differences that
        # separate the candidates.
        logprobs = torch.log_softmax(logits[:, -1, :].float(), dim=-1).cpu()  # [batch, vocab]
        scores[batch_idx] = logprobs[:, candidates]
    return scores


def generate_from_messages(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[ChatMessages],
    max_new_tokens: int,
    batch_size: int | None = None,
    *,
    legacy: bool = False,
) -> list[str]:
    """Greedy replies to several conversations, batched with left padding and a KV cache.

    Args:
        model: A causal LM (plain or peft-wrapped) already on its device.
        tokenizer: Its tokenizer.
        conversations: Chat message lists, each ending with a user turn.
        max_new_tokens: Generation budget per reply.
        batch_size: Rows per batch at most; None sizes batches by memory
            (:func:`~sap_core.evaluation.decoding.greedy_decode`). With ``legacy`` the fixed
            number of prompts per ``generate`` call (default 8).
        legacy: Use the previous ``generate``-based path (benchmark and fidelity test).

    Returns:
        The decoded replies (special tokens removed, whitespace stripped), in input order.

    Raises:
        ConfigError: If ``max_new_tokens`` or ``batch_size`` is not positive.
    """
    if max_new_tokens < 1 or (batch_size is not None and batch_size < 1):
        raise ConfigError(
            f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}"
        )
    if not conversations:
        return []
    token_ids = _encode_conversations(tokenizer, conversations)
    pad_id = _pad_token_id(tokenizer)
    if not legacy:
        was_training = model.training
        model.eval()
        try:
            new_ids = greedy_decode(
                model,
                token_ids,
                max_new_tokens=max_new_tokens,
                pad_id=pad_id,
                eos_ids=_eos_token_ids(model, tokenizer),
                max_rows=batch_size,
            )
        finally:
            if was_training:
                model.train()
        return [str(tokenizer.decode(ids, skip_special_tokens=True)).strip() for ids in new_ids]
    return _legacy_generate(model, tokenizer, token_ids, pad_id, max_new_tokens, batch_size or 8)


def _legacy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    token_ids: list[list[int]],
    pad_id: int,
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """The previous path: fixed batches of ``batch_size`` through transformers' ``generate``."""
    generation_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        pad_token_id=pad_id,
        eos_token_id=_eos_token_ids(model, tokenizer),
    )
    device = next(model.parameters()).device
    order = _longest_first(token_ids)
    replies: list[str] = [""] * len(token_ids)
    # `generate` is attached by GenerationMixin (and proxied by peft); typed loosely there.
    generate: Any = model.generate
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch_idx = order[start : start + batch_size]
            input_ids, attention_mask = _left_padded([token_ids[i] for i in batch_idx], pad_id)
            width = input_ids.shape[1]
            with torch.inference_mode():
                output = generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=generation_config,
                )
            # output: [batch, width + generated]; everything after `width` is new.
            new_tokens = output[:, width:].cpu()
            for row, i in enumerate(batch_idx):
                text = tokenizer.decode(new_tokens[row].tolist(), skip_special_tokens=True)
                replies[i] = str(text).strip()
    finally:
        if was_training:
            model.train()
    return replies


def generate_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 40,
    batch_size: int | None = None,
    system_prompt: str | None = None,
    *,
    legacy: bool = False,
) -> list[str]:
    """Greedy single-turn replies to ``prompts`` (see :func:`generate_from_messages`).

    Args:
        model: A causal LM (plain or peft-wrapped).
        tokenizer: Its tokenizer.
        prompts: User messages.
        max_new_tokens: Generation budget per reply.
        batch_size: Rows per batch at most (None: sized by memory).
        system_prompt: Optional system message put before every prompt.
        legacy: Use the previous ``generate``-based path.

    Returns:
        One reply per prompt, in input order.
    """
    conversations = [build_messages(p, system_prompt) for p in prompts]
    return generate_from_messages(
        model, tokenizer, conversations, max_new_tokens, batch_size, legacy=legacy
    )
