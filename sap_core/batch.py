"""Training batches: right-padded tensors, and one rank's shard of a global batch.

`Batch` is what the single-process trainer feeds the model. `ShardedBatch` is a `Batch` holding
only this rank's rows of a global batch (data-parallel training, sap_core.distributed), plus the
global batch itself so every loss can be normalised by *global* counts: each rank's loss is its
share of the single-process loss, and the all-reduced sum is that loss exactly (up to fp32
reduction order).

A rank whose shard is empty (a last micro-batch with fewer rows than ranks) gets a *filler*: one
real row with every label masked. It runs the same forward/backward as the other ranks (so every
collective still lines up) and contributes exact zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from sap_core import objectives
from sap_core.errors import DataFormatError


class TokenSequence(Protocol):
    """One tokenised sequence: full prompt+response ids, labels -100 outside the response."""

    @property
    def input_ids(self) -> Sequence[int]: ...

    @property
    def labels(self) -> Sequence[int]: ...


@dataclass(frozen=True)
class Batch:
    """A right-padded batch (padding only to the longest row: no padding to max_length)."""

    input_ids: torch.Tensor  # [batch, seq] long
    attention_mask: torch.Tensor  # [batch, seq] long, 0 on padding
    labels: torch.Tensor  # [batch, seq] long, -100 on prompt and padding

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])

    def head(self, n: int) -> Batch:
        """The first n rows, trimmed to their longest row."""
        return self.rows_between(0, n)

    def rows_between(self, start: int, stop: int) -> Batch:
        """Rows [start, stop), trimmed to their longest row (needs at least one row)."""
        width = int(self.attention_mask[start:stop].sum(dim=1).max())
        return Batch(
            self.input_ids[start:stop, :width],
            self.attention_mask[start:stop, :width],
            self.labels[start:stop, :width],
        )

    def label_tokens(self) -> int:
        return int((self.labels[:, 1:] != objectives.IGNORE_INDEX).sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device)
        )


def pad_batch(examples: Sequence[TokenSequence], pad_id: int, max_length: int) -> Batch:
    """Right-pad (truncating at max_length) to the longest example; labels -100 on padding."""
    if not examples:
        raise DataFormatError("empty batch")
    rows = [(list(e.input_ids)[:max_length], list(e.labels)[:max_length]) for e in examples]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), objectives.IGNORE_INDEX, dtype=torch.long)
    for i, (ids, labs) in enumerate(rows):
        if len(ids) != len(labs):
            raise DataFormatError(f"example {i}: input_ids and labels differ in length")
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, : len(ids)] = 1
        labels[i, : len(labs)] = torch.tensor(labs, dtype=torch.long)
    return Batch(input_ids, attention, labels)


def pad_id_of(tokenizer: object) -> int:
    """The tokenizer's pad id, else its eos id, else 0 (padding is masked, so any id works)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None) if tokenizer is not None else None
        if isinstance(value, int):
            return value
    return 0


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [start, stop) of n that rank takes: contiguous, sizes differing by at most one."""
    return (n * rank) // world_size, (n * (rank + 1)) // world_size


def filler_of(batch: Batch) -> Batch:
    """Row 0 of ``batch`` with every label masked: a forward pass that contributes zero."""
    one = batch.head(1)
    return Batch(one.input_ids, one.attention_mask, torch.full_like(one.labels, -100))


@dataclass(frozen=True)
class ShardedBatch(Batch):
    """This rank's rows [start, stop) of ``full`` (its own tensors are those rows, trimmed).

    Attributes:
        full: The global batch every rank built identically (CPU); counts come from it.
        start, stop: This rank's rows of ``full``.
        filler: True when the shard is empty and the tensors are `filler_of(full)`.
    """

    full: Batch
    start: int
    stop: int
    filler: bool

    @classmethod
    def of(cls, full: Batch, start: int, stop: int) -> ShardedBatch:
        start, stop = min(start, full.rows), min(stop, full.rows)
        filler = stop <= start
        local = filler_of(full) if filler else full.rows_between(start, stop)
        return cls(local.input_ids, local.attention_mask, local.labels, full, start, stop, filler)

    @property
    def global_label_tokens(self) -> int:
        """Labelled (shifted) tokens of the global batch: the single-process loss's divisor."""
        return self.full.label_tokens()

    @property
    def global_tokens(self) -> int:
        """Non-padding tokens of the global batch."""
        return int(self.full.attention_mask.sum())

    @property
    def token_share(self) -> float:
        """This rank's fraction of the global non-padding tokens (0 for a filler)."""
        if self.filler:
            return 0.0
        return int(self.attention_mask.sum()) / max(1, self.global_tokens)

    def global_head(self, n: int) -> ShardedBatch:
        """This rank's part of the global batch's first n rows (what `Batch.head` is globally)."""
        return ShardedBatch.of(self.full.head(n), self.start, self.stop)

    def to(self, device: torch.device) -> ShardedBatch:
        return ShardedBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            self.full,
            self.start,
            self.stop,
            self.filler,
        )
