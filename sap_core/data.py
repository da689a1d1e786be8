"""Tokenisation for training: full conversations with assistant-only labels, and collation.

Every sequence is the FULL conversation rendered with the tokenizer's own chat template, so the
model sees exactly the format it will be served with. ``labels`` equal ``input_ids`` on the tokens
of trained assistant turns (``weight == 1``), including the turn's real end-of-turn token, and
``-100`` everywhere else (system, user, weight-0 turns, template scaffolding such as
``<|im_start|>assistant\\n``). This fixes the reference-code bugs (SAP notes):

- B1/B2: ``input_ids`` hold prompt AND response (never the prompt alone); the trainer shifts.
- B3: padding is masked through the attention mask, never by ``token_id == pad_id``, because
  pad == eos in these models and the real EOS must stay a label or the model never learns to stop.
- B14: an example whose prompt fills ``max_length`` is skipped (``None``), never trained on
  truncated; only the response side is truncated.

Assistant spans are found in character space: each prefix of the conversation is rendered with the
chat template as a string, and tokens are assigned to spans through the fast tokenizer's offset
mapping. This is robust to BPE merges that a token-count diff of separately tokenised prefixes
would get wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from dataformats import Conversation, Message
from sap_core.errors import ConfigError, DataFormatError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedExample:
    """One tokenised training sequence.

    Attributes:
        input_ids: Token ids of the full rendered conversation (possibly truncated), length T.
        labels: Same length T; the token id on trained assistant tokens, ``-100`` elsewhere.
        source: Where the conversation came from ("customer", "safety_mixer", ...).
    """

    input_ids: list[int]
    labels: list[int]
    source: str = "customer"

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise DataFormatError("input_ids and labels differ in length")

    @property
    def num_label_tokens(self) -> int:
        """Number of trained positions (labels != -100)."""
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    @property
    def prompt_length(self) -> int:
        """Index of the first trained token (== len(input_ids) when nothing is trained)."""
        for index, label in enumerate(self.labels):
            if label != IGNORE_INDEX:
                return index
        return len(self.labels)


@dataclass(frozen=True)
class ContrastiveTriple:
    """A prompt with a safe (chosen) and a harmful (rejected) assistant response.

    Attributes:
        prompt_messages: The conversation up to (not including) the response; any assistant turns
            in it are context only.
        safe: The safe response text (e.g. a refusal).
        harmful: The harmful response text. Never log it.
    """

    prompt_messages: tuple[Message, ...]
    safe: str
    harmful: str


@dataclass(frozen=True)
class EncodedPair:
    """A triple as two full sequences sharing the same prompt prefix.

    Attributes:
        chosen: prompt + safe response, labels on the response only.
        rejected: prompt + harmful response, labels on the response only.
        prompt_length: Number of shared prompt tokens (identical in both sequences).
    """

    chosen: EncodedExample
    rejected: EncodedExample
    prompt_length: int


class TokenSequence(Protocol):
    """Anything with ``input_ids`` and ``labels`` of equal length (EncodedExample and the like)."""

    @property
    def input_ids(self) -> Sequence[int]: ...

    @property
    def labels(self) -> Sequence[int]: ...


def _as_dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _render(tokenizer: Any, messages: Sequence[Message], *, generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(
        _as_dicts(messages), tokenize=False, add_generation_prompt=generation_prompt
    )
    if not isinstance(text, str):
        raise DataFormatError("the chat template did not render to a string")
    return text


def _trained_char_spans(
    tokenizer: Any, messages: Sequence[Message], full_text: str
) -> list[tuple[int, int]]:
    """Character ranges [start, end) of trained assistant turns inside ``full_text``.

    A turn's range starts after the generation prompt (``render(messages[:i], gen=True)``) and
    ends right after its end-of-turn token: the last eos string inside ``render(messages[:i+1])``
    beyond the start. Text the template adds after eos (ChatML's trailing newline) is not trained.
    """
    eos = tokenizer.eos_token if isinstance(tokenizer.eos_token, str) else None
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message.role != "assistant" or message.weight != 1:
            continue
        before = _render(tokenizer, messages[:index], generation_prompt=True)
        through = _render(tokenizer, messages[: index + 1], generation_prompt=False)
        if not (full_text.startswith(before) and full_text.startswith(through)):
            # Templates that rewrite earlier turns (e.g. strip reasoning from history) cannot
            # be split into prefixes; refuse rather than train on the wrong tokens.
            raise DataFormatError(
                "the chat template does not render conversation prefixes as text prefixes"
            )
        start, end = len(before), len(through)
        turn = full_text[start:end]
        eos_at = turn.rfind(eos) if eos else -1
        if eos_at >= 0:
            end = start + eos_at + len(eos or "")
        else:
            # No eos string in the turn (template ends turns differently): train up to the last
            # non-whitespace character.
            end = start + len(turn.rstrip())
        if end > start:
            spans.append((start, end))
    return spans


def encode_conversation(
    tokenizer: Any, conversation: Conversation, max_length: int
) -> EncodedExample | None:
    """Tokenise a conversation with assistant-only labels.

    Args:
        tokenizer: A *fast* Hugging Face tokenizer with a chat template.
        conversation: The conversation; assistant turns with ``weight == 1`` are trained.
        max_length: Maximum sequence length in tokens; the response side is truncated to it.

    Returns:
        The encoded example, or ``None`` when no trained token fits within ``max_length``
        (the prompt alone fills it, bug B14) or nothing is trained at all.

    Raises:
        ConfigError: ``max_length < 2``.
        DataFormatError: The tokenizer is not fast or the template cannot be split into prefixes.
    """
    if max_length < 2:
        raise ConfigError(f"max_length must be >= 2, got {max_length}")
    if not getattr(tokenizer, "is_fast", False):
        raise DataFormatError("encode_conversation needs a fast tokenizer (offset mapping)")
    messages = list(conversation.messages)
    full_text = _render(tokenizer, messages, generation_prompt=False)
    spans = _trained_char_spans(tokenizer, messages, full_text)
    # add_special_tokens=False: the template already contains BOS etc. where the model wants it.
    encoding = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = list(encoding["input_ids"])
    offsets: list[tuple[int, int]] = list(encoding["offset_mapping"])
    labels = [IGNORE_INDEX] * len(input_ids)
    for token_index, (char_start, _char_end) in enumerate(offsets):
        # A token belongs to a span when it starts inside it; a token straddling the span start
        # (a BPE merge across the template boundary) is conservatively left untrained.
        if any(start <= char_start < end for start, end in spans):
            labels[token_index] = input_ids[token_index]
    example = EncodedExample(input_ids[:max_length], labels[:max_length], conversation.source)
    if example.num_label_tokens == 0:
        return None
    return example


def tokenize_dataset(
    tokenizer: Any, conversations: Sequence[Conversation], max_length: int
) -> tuple[list[EncodedExample], int]:
    """Encode every conversation; returns (examples, number skipped because of B14)."""
    examples: list[EncodedExample] = []
    skipped = 0
    for conversation in conversations:
        encoded = encode_conversation(tokenizer, conversation, max_length)
        if encoded is None:
            skipped += 1
        else:
            examples.append(encoded)
    return examples, skipped


def encode_triple(
    tokenizer: Any,
    prompt_messages: Sequence[Message],
    safe: str,
    harmful: str,
    max_length: int,
) -> EncodedPair | None:
    """Encode prompt+safe and prompt+harmful as two full sequences with response-only labels.

    Assistant turns inside ``prompt_messages`` are context (weight 0). Returns ``None`` when the
    prompt fills ``max_length`` in either sequence.

    Raises:
        DataFormatError: The two sequences do not share the same prompt tokens.
    """
    context = tuple(
        Message(m.role, m.content, weight=0) if m.role == "assistant" else m
        for m in prompt_messages
    )
    chosen = encode_conversation(
        tokenizer, Conversation(context + (Message("assistant", safe),), "safety"), max_length
    )
    rejected = encode_conversation(
        tokenizer, Conversation(context + (Message("assistant", harmful),), "safety"), max_length
    )
    if chosen is None or rejected is None:
        return None
    prompt_length = chosen.prompt_length
    if (
        rejected.prompt_length != prompt_length
        or chosen.input_ids[:prompt_length] != rejected.input_ids[:prompt_length]
    ):
        raise DataFormatError("chosen and rejected sequences do not share the prompt prefix")
    return EncodedPair(chosen=chosen, rejected=rejected, prompt_length=prompt_length)


def encode_contrastive(
    tokenizer: Any, triple: ContrastiveTriple, max_length: int
) -> EncodedPair | None:
    """``encode_triple`` for a :class:`ContrastiveTriple`."""
    return encode_triple(tokenizer, triple.prompt_messages, triple.safe, triple.harmful, max_length)


def collate(examples: Sequence[TokenSequence], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example.

    Returns:
        ``input_ids`` [B, T] long (pad_token_id on padding), ``attention_mask`` [B, T] long
        (0 on padding), ``labels`` [B, T] long (-100 on padding and prompt). Padding is located
        by length / attention mask, never by comparing ids with pad_token_id (bug B3).

    Raises:
        DataFormatError: Empty batch or an example with mismatched lengths.
    """
    if not examples:
        raise DataFormatError("cannot collate an empty batch")
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        if len(example.labels) != length:
            raise DataFormatError(f"example {row}: input_ids and labels differ in length")
        input_ids[row, :length] = torch.tensor(list(example.input_ids), dtype=torch.long)
        attention_mask[row, :length] = 1
        labels[row, :length] = torch.tensor(list(example.labels), dtype=torch.long)
    labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def pack_examples(
    examples: Sequence[EncodedExample], max_tokens: int
) -> list[list[EncodedExample]]:
    """Greedy length bucketing: batches whose padded size (rows x longest) stays <= max_tokens.

    Examples are sorted by length (longest first, stable), so each batch holds similar lengths
    and wastes little padding. An example longer than ``max_tokens`` gets a batch of its own.
    Every example appears exactly once.
    """
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
    ordered = sorted(examples, key=lambda e: len(e.input_ids), reverse=True)
    batches: list[list[EncodedExample]] = []
    current: list[EncodedExample] = []
    width = 0
    for example in ordered:
        if current and (len(current) + 1) * width > max_tokens:
            batches.append(current)
            current = []
        if not current:
            # Sorted longest first, so the first example of a batch sets its padded width.
            width = len(example.input_ids)
        current.append(example)
    if current:
        batches.append(current)
    return batches
