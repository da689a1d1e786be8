"""Tokenisation for training: full conversations with assistant-only labels, and safety pairs.

Each conversation is rendered with the tokenizer's own chat template (so the adapter learns the
format the base model is served with), then labelled: tokens of assistant messages with weight 1
— their content *and* the end-of-turn token that closes them — keep their id; everything else
(system, user, weight-0 assistant turns, template scaffolding such as `<|im_start|>assistant\n`)
is -100. This fixes reference bugs B1 (prompt-only inputs), B3 (the real EOS was masked because
pad == eos) and B14 (a prompt that fills the context is skipped, never trained on truncated).

Example::

    examples, skipped = tokenize_dataset(tokenizer, conversations, max_length=512)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dataformats import Conversation, Message
from sap_core.errors import DataFormatError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedExample:
    """One tokenised sequence: `input_ids` and `labels` have the same length."""

    input_ids: list[int]
    labels: list[int]
    source: str = "customer"

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass(frozen=True)
class EncodedPair:
    """A safety triple as two full sequences sharing the prompt: safe (chosen), harmful."""

    chosen: EncodedExample
    rejected: EncodedExample


def _as_chat(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _render_ids(
    tokenizer: Any, messages: Sequence[Message], *, generation_prompt: bool
) -> list[int]:
    text = tokenizer.apply_chat_template(
        _as_chat(messages), tokenize=False, add_generation_prompt=generation_prompt
    )
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def _end_of_turn_ids(tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return ids


def encode_conversation(
    tokenizer: Any, conversation: Conversation, max_length: int
) -> EncodedExample | None:
    """Tokenise a conversation with labels on trained assistant turns only.

    Args:
        tokenizer: A HF tokenizer with a chat template.
        conversation: The canonical conversation (from `dataformats`).
        max_length: Sequence cap; the response is truncated, the prompt never is.

    Returns:
        The encoded example, or None when the prompt before the first trained assistant turn
        leaves no room for a single response token (B14: never train on a truncated prompt).

    Raises:
        DataFormatError: If the chat template does not render prefixes consistently.
    """
    messages = conversation.messages
    full = _render_ids(tokenizer, messages, generation_prompt=False)
    labels = [IGNORE_INDEX] * len(full)
    end_ids = _end_of_turn_ids(tokenizer)
    first_trained_start: int | None = None
    for index, message in enumerate(messages):
        if message.role != "assistant" or message.weight == 0:
            continue
        start = len(_render_ids(tokenizer, messages[:index], generation_prompt=True))
        stop = len(_render_ids(tokenizer, messages[: index + 1], generation_prompt=False))
        if stop > len(full) or start > stop:
            raise DataFormatError("the chat template renders conversation prefixes inconsistently")
        # Keep the span up to and including the first end-of-turn token: trailing template
        # whitespace after it is not something the model should learn to emit.
        span_end = stop
        for position in range(start, stop):
            if full[position] in end_ids:
                span_end = position + 1
                break
        labels[start:span_end] = full[start:span_end]
        if first_trained_start is None:
            first_trained_start = start
    if first_trained_start is None:
        return None
    if first_trained_start >= max_length:
        return None
    return EncodedExample(
        input_ids=full[:max_length], labels=labels[:max_length], source=conversation.source
    )


def encode_triple(
    tokenizer: Any,
    prompt_messages: Sequence[Message],
    safe: str,
    harmful: str,
    max_length: int,
) -> EncodedPair | None:
    """Encode (prompt, safe response, harmful response) as two full sequences.

    Both sequences are the full `prompt + response` conversation with labels on the response
    only (reference bug B2 scored prompt-only inputs without a shift). None if the prompt fills
    `max_length`.
    """
    chosen = encode_conversation(
        tokenizer,
        Conversation(messages=(*prompt_messages, Message("assistant", safe)), source="safety"),
        max_length,
    )
    rejected = encode_conversation(
        tokenizer,
        Conversation(messages=(*prompt_messages, Message("assistant", harmful)), source="safety"),
        max_length,
    )
    if chosen is None or rejected is None:
        return None
    return EncodedPair(chosen=chosen, rejected=rejected)


def tokenize_dataset(
    tokenizer: Any, conversations: Sequence[Conversation], max_length: int
) -> tuple[list[EncodedExample], int]:
    """Encode every conversation; returns (examples, count skipped: prompt too long)."""
    examples: list[EncodedExample] = []
    skipped = 0
    for conversation in conversations:
        encoded = encode_conversation(tokenizer, conversation, max_length)
        if encoded is None or encoded.trained_tokens == 0:
            skipped += 1
            continue
        examples.append(encoded)
    return examples, skipped
