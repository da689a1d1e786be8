"""SafetyAwareTrainer: LoRA fine-tuning with Safety-Aware Probing (SAP), or plain SFT with SAP off.

A recipe with an explicit loop: `setup()` (model, LoRA, optimiser, data order), `train()`,
`save_checkpoint(step)` / `resume_from(dir)`, `save_adapter(dir)`, `cleanup()`. Plain SFT is
`SapConfig(enabled=False)`; the SAP passes run under `torch.random.fork_rng`, so with rho=0 or probe
step 0 the loop produces bit-identical weights to SFT (tested).

One SAP step per micro-batch B (paper-faithful mode; docs/sap.md has the derivation and deviations):

1. every `direction_refresh_every` steps: g_s = grad_theta L_safe(theta) on a safety batch,
   probe off; g_hat = g_s / ||g_s|| (global over all LoRA tensors; must be finite and > 0).
2. snapshot theta; theta <- theta + rho * ||theta|| * g_hat.
3. gap = grad_V L_u(theta+eps, V) at V=0 on a fraction of B.
4. restore theta by copying the snapshot (bit-exact); gap -= grad_V L_u(theta, V) at V=0 (same
   dropout RNG as in 3).
5. V* = ascent step from 0 on gap (sgd | sign | adam_persistent).
6. L_u(theta, V*) backward into theta only; AdamW step; probe hooks removed.

`lagged_probe=True` (and `reference_compat=True`, the reference code's order) uses V_t computed from
the previous micro-batch, takes the clean gap term from the weight pass itself (per-row probe
vectors give per-row gradients in the same backward) and saves one pass.

Data-parallel (``dist`` with several ranks, launched by torchrun): every rank builds the same
global micro-batch and trains on its rows (sap_core.batch.ShardedBatch); each loss is its share
of the global one, and the safety gradient, the probe gap, the residual norms, the LoRA gradients
and the loss metrics are summed over ranks (sap_core.distributed), so every rank takes the
single-process step. Rank 0 alone reports to the callback and writes checkpoints and the adapter.

Run (for a local HF model dir)::

    trainer = SafetyAwareTrainer(cfg, train_examples, safety_pairs, NullCallback())
    trainer.setup(); result = trainer.train(); trainer.save_adapter(out); trainer.cleanup()
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from sap_core import checkpoint as ckpt
from sap_core import objectives
from sap_core.batch import Batch, ShardedBatch, TokenSequence, pad_batch, pad_id_of
from sap_core.callbacks import NullCallback, TrainingCallback
from sap_core.config import SapConfig, TrainConfig
from sap_core.distributed import LOCAL, DistContext
from sap_core.errors import (
    ConfigError,
    DataFormatError,
    TrainingCancelled,
    TrainingDeadlineExceeded,
    TrainingDivergedError,
)
from sap_core.probe import ResidualProbe, default_probe_layers, find_decoder_layers


class ContrastivePair(Protocol):
    """A (prompt, safe response, harmful response) triple as two full sequences."""

    @property
    def chosen(self) -> TokenSequence: ...

    @property
    def rejected(self) -> TokenSequence: ...


class SafetyDirection(NamedTuple):
    """g_hat = g_s / ||g_s|| over all LoRA tensors, with ||g_s|| and L_safe where it was taken."""

    unit: list[torch.Tensor]
    grad_norm: float
    safety_loss: float


@dataclass(frozen=True)
class WeightGradient:
    """One micro-step's LoRA gradient (``weight_gradient``) and the probe that shaped it.

    Attributes:
        grads: d loss / d theta per LoRA tensor, as the optimizer would receive it.
        probe: V* per probe layer ([hidden] each); empty for plain SFT.
        gap_norm: ||grad_V L_su|| the probe step was taken on (0.0 for SFT).
        task_loss: The micro-batch's task loss (at V* under SAP).
    """

    grads: list[torch.Tensor]
    probe: list[torch.Tensor]
    gap_norm: float
    task_loss: float


@dataclass
class TrainResult:
    """What `train()` returns: final metrics and the per-step history (one dict per step)."""

    steps: int
    final_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def _lr_lambda(schedule: str, warmup: int, total: int) -> Any:
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class SafetyAwareTrainer:
    """The SAP / SFT LoRA trainer. See the module docstring for the algorithm.

    Args:
        config: the validated run config.
        train_examples: useful (customer) sequences.
        safety_pairs: contrastive triples; required when `config.sap.enabled`.
        callback: progress / checkpoint / cancel protocol (default `NullCallback`).
        eval_examples: optional held-out sequences for `evaluate()`.
        model, tokenizer: an already-loaded HF model (tests, benchmarks); otherwise `setup()` loads
            `config.model_path` (local dir, safetensors only, never trust_remote_code).
        dist: this process's place in a data-parallel group (sap_core.distributed); LOCAL (one
            process) by default. With several ranks each takes its shard of every global batch
            and every gradient SAP uses is summed over ranks, so all ranks take the same step.
    """

    def __init__(
        self,
        config: TrainConfig,
        train_examples: Sequence[TokenSequence],
        safety_pairs: Sequence[ContrastivePair],
        callback: TrainingCallback | None = None,
        eval_examples: Sequence[TokenSequence] | None = None,
        model: nn.Module | None = None,
        tokenizer: Any = None,
        dist: DistContext | None = None,
    ) -> None:
        if not train_examples:
            raise DataFormatError("no training examples")
        if config.sap.enabled and not safety_pairs:
            raise ConfigError("SAP is enabled but no safety pairs were given; add safety triples")
        if model is None and not config.model_path:
            raise ConfigError("set config.model_path to a local HF directory or pass a model")
        self.config = config
        self.train_examples = list(train_examples)
        self.safety_pairs = list(safety_pairs)
        self.eval_examples = list(eval_examples or [])
        self.dist = dist or LOCAL
        # Data-parallel: rank 0 alone reports progress, is asked to stop and writes files.
        self.callback: TrainingCallback = (
            callback if self.dist.is_main else None
        ) or NullCallback()
        self._given_model = model
        self.tokenizer = tokenizer
        self.model: nn.Module | None = None
        self.probe: ResidualProbe | None = None
        self.step = 0  # optimizer steps done
        self._safety_batches_used = 0
        self._g_hat: list[torch.Tensor] | None = None
        self._lagged_v: list[torch.Tensor] | None = None
        self._probe_params: list[torch.Tensor] = []
        self._probe_opt: torch.optim.Optimizer | None = None
        self.history: list[dict[str, float]] = []
        self._accum = 1
        self._last_gap_norm = 0.0
        # Mean per-token residual norm at each probe layer in the last clean probe pass.
        self._last_residual_norms: list[float] = []

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Seed, load the model, apply LoRA, build optimiser, scheduler and probe."""
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        cfg = self.config
        self.device = torch.device(cfg.device)
        self._seed_everything(cfg.seed)
        base = self._given_model if self._given_model is not None else self._load_model()
        base.to(self.device)
        lora = PeftLoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        # LoRA A init draws from the torch RNG seeded just above: same seed => same adapter init.
        self.model = get_peft_model(base, lora)
        self.model.train()
        self._named_lora = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not self._named_lora:
            raise ConfigError(f"LoRA matched no modules for targets {cfg.lora.target_modules}")
        self.lora_params = [p for _, p in self._named_lora]
        if self.dist.active:
            if cfg.sap.enabled and cfg.sap.lagged_probe:
                # Its clean gap term comes from per-row probe copies of the local weight pass;
                # not reduced across ranks (yet), so refused rather than silently different.
                raise ConfigError(
                    "sap.lagged_probe (and reference_compat) is single-process only; "
                    "use the exact probe (lagged_probe=False) with n_processes > 1"
                )
            # One init on every rank, whatever their RNGs did before.
            self.dist.broadcast_tensors_(self.lora_params)
        self.optimizer = torch.optim.AdamW(
            self.lora_params,
            lr=cfg.optim.lr,
            betas=cfg.optim.betas,
            eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay,
        )
        self.total_steps = self._compute_total_steps()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            _lr_lambda(cfg.optim.schedule, cfg.optim.warmup_steps, self.total_steps),
        )
        layers = cfg.sap.probe_layers or default_probe_layers(len(find_decoder_layers(self.model)))
        self.probe = ResidualProbe(self.model, layers)
        if cfg.sap.enabled and cfg.sap.probe_step_rule == "adam_persistent":
            self._probe_params = [v.requires_grad_(True) for v in self.probe.zeros()]
            # weight_decay 0.01 = torch default the reference code used; a no-op on a zeroed param.
            self._probe_opt = torch.optim.AdamW(
                self._probe_params, lr=cfg.sap.probe_step_size, weight_decay=0.01
            )
        self.pad_id = self._pad_id()

    def _load_model(self) -> nn.Module:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(self.config.model_path)
        if not path.is_dir():
            raise ConfigError(f"model_path {path} is not a local directory")
        dtype = getattr(torch, self.config.dtype)
        model = AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=dtype,
            trust_remote_code=False,
            use_safetensors=True,
            local_files_only=True,
        )
        if self.tokenizer is None:
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(path), trust_remote_code=False, local_files_only=True
            )
        return model

    def _pad_id(self) -> int:
        return pad_id_of(self.tokenizer)

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        torch.manual_seed(seed)
        try:
            import numpy as np

            np.random.seed(seed % (2**32))
        except ImportError:  # pragma: no cover - numpy is in the ml extra
            pass

    def _compute_total_steps(self) -> int:
        cfg = self.config
        if cfg.max_steps is not None:
            return cfg.max_steps
        per_epoch = math.ceil(len(self.train_examples) / cfg.batch_size)
        return math.ceil(cfg.epochs * per_epoch / cfg.gradient_accumulation)

    # ------------------------------------------------------------------ data order
    def _micro_batches_per_epoch(self) -> int:
        return math.ceil(len(self.train_examples) / self.config.batch_size)

    def _epoch_order(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_examples), generator=gen).tolist()

    def micro_batches_for_step(self, step: int) -> list[Batch]:
        """The useful micro-batches of optimizer step `step` (0-based): a pure function of seed."""
        cfg = self.config
        per_epoch = self._micro_batches_per_epoch()
        out = []
        for m in range(step * cfg.gradient_accumulation, (step + 1) * cfg.gradient_accumulation):
            epoch, k = divmod(m, per_epoch)
            order = self._epoch_order(epoch)
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            full = pad_batch([self.train_examples[i] for i in idx], self.pad_id, cfg.max_length)
            # Every rank builds the same global batch and keeps its rows of it.
            out.append(
                ShardedBatch.of(full, *self.dist.shard(full.rows)) if self.dist.active else full
            )
        return out

    def _safety_batch(self, counter: int) -> Batch:
        """Chosen rows then rejected rows of safety batch number `counter` (one forward pass)."""
        return self._pad_pairs(self._safety_pairs(counter))

    def _pad_pairs(self, pairs: Sequence[ContrastivePair]) -> Batch:
        seqs = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        return pad_batch(seqs, self.pad_id, self.config.max_length)

    def _local_safety_batch(self, counter: int) -> tuple[Batch, float]:
        """This rank's pairs of safety batch `counter` and their share of the batch's pairs.

        A rank with no pair gets a filler (its labels masked: the pass contributes zero).
        """
        pairs = self._safety_pairs(counter)
        start, stop = self.dist.shard(len(pairs))
        mine = pairs[start:stop]
        batch = self._pad_pairs(mine or pairs[:1])
        if not mine:
            batch = Batch(
                batch.input_ids, batch.attention_mask, torch.full_like(batch.labels, -100)
            )
        return batch, len(mine) / len(pairs)

    def _safety_pairs(self, counter: int) -> list[ContrastivePair]:
        """The pairs of safety batch number `counter`.

        Reshuffled every pass over the pairs (B11 fix); reference_compat replays the first pass's
        order forever, like the reference code's itertools.cycle.
        """
        sap = self.config.sap
        size = min(sap.safety_batch_size, len(self.safety_pairs))
        per_pass = math.ceil(len(self.safety_pairs) / size)
        epoch, k = divmod(counter, per_pass)
        if sap.reference_compat:
            epoch = 0
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + 7_919 + epoch)
        order = torch.randperm(len(self.safety_pairs), generator=gen).tolist()
        return [self.safety_pairs[i] for i in order[k * size : (k + 1) * size]]

    # ------------------------------------------------------------------ passes
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.config.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _fork_rng(self) -> contextlib.AbstractContextManager[Any]:
        """RNG fork for SAP-only passes: they see the same dropout RNG and leave it untouched."""
        if self.device.type == "cuda":
            return torch.random.fork_rng(devices=[self.device], device_type="cuda")
        return torch.random.fork_rng(devices=[])

    def _logits(self, batch: Batch) -> torch.Tensor:
        assert self.model is not None
        with self._autocast():
            out = self.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            )
        return out.logits  # [batch, seq, vocab]

    def task_loss(self, batch: Batch) -> torch.Tensor:
        """Mean NLL of the response tokens of ``batch`` under the current weights (a graph).

        For a rank's shard: its rows' summed NLL over the *global* batch's label tokens, so the
        sum over ranks (of the loss and of every gradient of it) is the global mean's.
        """
        if isinstance(batch, ShardedBatch):
            nll, _ = objectives.sequence_nll(self._logits(batch), batch.labels)
            return nll.sum() / max(1, batch.global_label_tokens)
        return objectives.mean_response_nll(self._logits(batch), batch.labels)

    def _next_safety_direction(self) -> SafetyDirection:
        direction = self.safety_direction(self._safety_batches_used)
        self._safety_batches_used += 1
        return direction

    def safety_direction(self, batch_index: int) -> SafetyDirection:
        """Unit safety gradient g_hat on safety batch ``batch_index``, probe off (V_t in compat).

        The same index gives the same batch, so callers can hold the direction fixed while they
        compare settings (``weight_gradient``).
        """
        assert self.probe is not None
        sap = self.config.sap
        share = 1.0
        if self.dist.active:
            local, share = self._local_safety_batch(batch_index)
            batch = local.to(self.device)
        else:
            batch = self._safety_batch(batch_index).to(self.device)
        probe_ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if sap.reference_compat and self._lagged_v is not None:
            probe_ctx = self.probe.active(self._lagged_v)  # B5(c): the code's stale probe is on
        with self._fork_rng(), probe_ctx:
            nll, _ = objectives.sequence_nll(self._logits(batch), batch.labels)  # [2S]
            half = nll.shape[0] // 2
            loss = objectives.safety_loss(nll[:half], nll[half:], sap.contrastive_form)
            if self.dist.active:
                loss = loss * share  # this rank's pairs' part of the mean over all pairs
            grads = torch.autograd.grad(loss, self.lora_params, allow_unused=True)
        grads_filled = [
            torch.zeros_like(p) if g is None else g
            for g, p in zip(grads, self.lora_params, strict=True)
        ]
        if self.dist.active:
            self.dist.all_reduce_(grads_filled)
            loss = torch.tensor(self.dist.sum_floats([float(loss.detach())], self.device)[0])
        if sap.reference_compat:
            # utils.normalize_dict: g / (||g|| + 1e-8)
            norm = float(objectives.global_norm(grads_filled))
            if not (0.0 < norm < float("inf")):
                raise TrainingDivergedError(f"safety gradient norm is {norm}")
            unit = [g.detach() / (norm + 1e-8) for g in grads_filled]
            return SafetyDirection(unit, norm, float(loss.detach()))
        g_hat, norm = objectives.unit_direction(grads_filled)
        return SafetyDirection(g_hat, norm, float(loss.detach()))

    def _probe_grad(
        self, batch: Batch, vectors: list[torch.Tensor], record_norms: bool = False
    ) -> list[torch.Tensor]:
        """grad_V L_u(current theta, V) at V = vectors; only V's gradient is computed.

        With ``record_norms`` the residual norms at the probe layers are kept for the step rule
        and the step's metrics (``_last_residual_norms``).
        """
        assert self.probe is not None
        leaves = [v.detach().clone().requires_grad_(True) for v in vectors]
        mask = batch.attention_mask if record_norms else None
        with self._fork_rng(), self.probe.active(leaves, token_mask=mask):
            loss = self.task_loss(batch)
            grads = torch.autograd.grad(loss, leaves)
        if record_norms:
            norms = [float(n) for n in self.probe.residual_norms]
            if isinstance(batch, ShardedBatch):
                # Mean per token over the global batch: each rank's mean weighted by its tokens.
                weight = batch.token_share
                norms = self.dist.sum_floats([n * weight for n in norms], self.device)
            self._last_residual_norms = norms
        return [g.detach() for g in grads]

    @contextlib.contextmanager
    def _perturbed(self, eps: list[torch.Tensor]) -> Iterator[None]:
        """theta <- theta + eps inside the block; restored bit-exactly from a snapshot (B6 fix).

        reference_compat restores by subtracting eps, like the reference code (not bit-exact).
        """
        compat = self.config.sap.reference_compat
        snapshot = [] if compat else [p.detach().clone() for p in self.lora_params]
        with torch.no_grad():
            for p, e in zip(self.lora_params, eps, strict=True):
                p.add_(e.to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                if compat:
                    for p, e in zip(self.lora_params, eps, strict=True):
                        p.sub_(e.to(p.dtype))
                else:
                    for p, saved in zip(self.lora_params, snapshot, strict=True):
                        p.copy_(saved)

    def _probe_step(self, gap: list[torch.Tensor], sap: SapConfig) -> list[torch.Tensor]:
        """V* = one ascent step on L_su from V = 0 (gap = grad_V L_su)."""
        if sap.probe_step_rule != "adam_persistent":
            norms: list[float | None] = list(self._last_residual_norms) or [None] * len(gap)
            return [
                objectives.probe_ascent_step(g, sap.probe_step_rule, sap.probe_step_size, r)
                for g, r in zip(gap, norms, strict=True)
            ]
        assert self._probe_opt is not None
        # The reference code's rule: zero the param, grad = -gap, one AdamW step whose moments
        # persist across steps (B5b).
        with torch.no_grad():
            for p, g in zip(self._probe_params, gap, strict=True):
                p.zero_()
                p.grad = -g.to(p.dtype)
        self._probe_opt.step()
        self._probe_opt.zero_grad(set_to_none=True)
        return [p.detach().clone() for p in self._probe_params]

    # ------------------------------------------------------------------ one step
    def train_step(self, micro_batches: Sequence[Batch]) -> dict[str, float]:
        """One optimizer step over these micro-batches; returns the step's metrics."""
        assert self.model is not None
        assert self.probe is not None
        cfg, sap = self.config, self.config.sap
        started = time.perf_counter()
        self._accum = len(micro_batches)
        metrics: dict[str, float] = {"task_loss": 0.0, "tokens": 0.0}
        sap_on = sap.enabled
        eps: list[torch.Tensor] | None = None
        refresh = False
        if sap_on:
            if self._g_hat is None or self.step % sap.direction_refresh_every == 0:
                self._g_hat, g_norm, s_loss = self._next_safety_direction()
                metrics["safety_grad_norm"] = g_norm
                metrics["safety_loss"] = s_loss
                refresh = True
            theta_norm = float(objectives.global_norm(self.lora_params))
            eps = objectives.perturbation(self._g_hat, theta_norm, sap.rho, sap.relative_rho)
        probe_norm = 0.0
        for index, batch_cpu in enumerate(micro_batches):
            batch = batch_cpu.to(self.device)
            metrics["tokens"] += float(
                batch.global_tokens
                if isinstance(batch, ShardedBatch)
                else batch.attention_mask.sum()
            )
            # On refresh steps the first micro-batch also measures how far SAP moved the update.
            measure = refresh and index == 0 and self._measures_correction(sap)
            grad_before = self._grads_snapshot() if measure else None
            if sap_on and eps is not None and sap.lagged_probe:
                loss, v_used = self._lagged_micro_step(batch, eps)
            elif sap_on and eps is not None:
                loss, v_used = self._exact_micro_step(batch, eps, sap, self._accum)
            else:
                loss = self.task_loss(batch)
                (loss / self._accum).backward()
                loss = loss.detach()
                v_used = None
            if v_used is not None:
                probe_norm = float(objectives.global_norm(v_used))
                metrics["probe_gap_norm"] = self._last_gap_norm
                metrics["probe_rel_norm"] = self._relative_probe_norm(v_used)
            if grad_before is not None:
                metrics["sap_correction"] = self._sap_correction(batch, grad_before)
            metrics["task_loss"] += float(loss) / len(micro_batches)
        if self.dist.active:  # micro-batches are shards exactly then
            # Each rank holds its share of every loss and gradient: summed, the global ones.
            self._all_reduce_grads()
            metrics["task_loss"] = self.dist.sum_floats([metrics["task_loss"]], self.device)[0]
        if not math.isfinite(metrics["task_loss"]):
            raise TrainingDivergedError(f"task loss is {metrics['task_loss']} at step {self.step}")
        max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.lora_params, max_norm)
        metrics["grad_norm"] = float(grad_norm)
        metrics["lr"] = float(self.scheduler.get_last_lr()[0])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        metrics["probe_norm"] = probe_norm
        metrics["step_time"] = time.perf_counter() - started
        return metrics

    def _measures_correction(self, sap: SapConfig) -> bool:
        """Whether this step pays the extra SFT pass that measures SAP's correction: the first
        step, every ``correction_every``-th (1-based, the steps the service logs as events) and
        the last. With the direction refreshed every step, measuring every step cost a fifth of
        a SAP step on Qwen2.5-0.5B for numbers nobody saw."""
        done = self.step + 1  # the step number this call completes, as callbacks see it
        return sap.measure_correction and (
            done == 1 or done % sap.correction_every == 0 or done == self.total_steps
        )

    def _all_reduce_grads(self) -> None:
        grads = []
        for p in self.lora_params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)  # a rank whose rows never reached it still joins
            grads.append(p.grad)
        self.dist.all_reduce_(grads)

    def _relative_probe_norm(self, vectors: Sequence[torch.Tensor]) -> float:
        """Mean over probe layers of ||V_j|| / (mean per-token residual norm at layer j).

        The probe's strength on the scale of what it shifts: ~1e-7 is a no-op, ~1e-2 is a
        perturbation the layers above feel. NaN when no residual norm was recorded.
        """
        norms = self._last_residual_norms
        if len(norms) != len(vectors) or not all(r > 0 for r in norms):
            return float("nan")
        return sum(float(v.float().norm()) / r for v, r in zip(vectors, norms, strict=True)) / len(
            norms
        )

    def _grads_snapshot(self) -> list[torch.Tensor | None]:
        return [None if p.grad is None else p.grad.detach().clone() for p in self.lora_params]

    def _sap_correction(self, batch: Batch, before: Sequence[torch.Tensor | None]) -> float:
        """||g_SAP - g_SFT|| / ||g_SFT|| on ``batch``: how much SAP changed this micro-step.

        g_SAP is what the micro-step just added to ``.grad``; g_SFT comes from one extra
        probe-off forward/backward under a forked RNG, so training itself is unchanged
        (the extra pass costs one SFT pass; it runs on the steps ``_measures_correction``
        picks, and ``measure_correction=False`` skips it).
        """
        g_sap = [
            torch.zeros_like(p) if p.grad is None else p.grad - (0 if b is None else b)
            for p, b in zip(self.lora_params, before, strict=True)
        ]
        with self._fork_rng():
            loss = self.task_loss(batch) / self._accum
            g_sft = torch.autograd.grad(loss, self.lora_params, allow_unused=True)
        g_sft_filled = [
            torch.zeros_like(p) if g is None else g.detach()
            for g, p in zip(g_sft, self.lora_params, strict=True)
        ]
        self.dist.all_reduce_(g_sap + g_sft_filled)  # both are this rank's shares
        sft_norm = float(objectives.global_norm(g_sft_filled))
        if sft_norm == 0.0:
            return float("nan")
        diff = [a - b for a, b in zip(g_sap, g_sft_filled, strict=True)]
        return float(objectives.global_norm(diff)) / sft_norm

    def probe_gap(self, batch: Batch, eps: list[torch.Tensor]) -> list[torch.Tensor]:
        """grad_V L_su(0) = grad_V [L_u(theta+eps, V) - L_u(theta, V)] at V = 0, per probe layer.

        Both passes see the same dropout RNG state (B10 fix); theta is restored bit-exactly.
        """
        assert self.probe is not None
        zeros = self.probe.zeros()
        with self._perturbed(eps):
            g_pert = self._probe_grad(batch, zeros)
        g_clean = self._probe_grad(batch, zeros, record_norms=True)
        gap = [a - b for a, b in zip(g_pert, g_clean, strict=True)]  # [hidden] each
        self.dist.all_reduce_(gap)  # each rank's share of the global gap: summed, every rank's V*
        return gap

    def weight_gradient(
        self, batch: Batch, g_hat: list[torch.Tensor] | None = None, sap: SapConfig | None = None
    ) -> WeightGradient:
        """The LoRA gradient one exact training micro-step would take on ``batch`` alone.

        For analysis (``scripts/sap_screen.py``): nothing is stepped, ``.grad`` is left cleared
        and the weights untouched. With ``g_hat`` None or SAP disabled in ``sap`` it is the plain
        SFT gradient; otherwise the perturbation is built on ``g_hat`` (see ``safety_direction``)
        with ``sap``'s rho and probe rule, so one direction can be held fixed across settings.

        Raises:
            ConfigError: ``adam_persistent``: its moments persist across steps, so one batch's
                gradient depends on the run's history; measure it in a training run.
        """
        assert self.model is not None
        sap = sap if sap is not None else self.config.sap
        self.optimizer.zero_grad(set_to_none=True)
        batch = batch.to(self.device)
        if g_hat is None or not sap.enabled:
            loss = self.task_loss(batch)
            loss.backward()
            v_star: list[torch.Tensor] = []
            gap_norm = 0.0
        else:
            if sap.probe_step_rule == "adam_persistent":
                raise ConfigError("weight_gradient needs a stateless probe rule (sgd or sign)")
            theta_norm = float(objectives.global_norm(self.lora_params))
            eps = objectives.perturbation(g_hat, theta_norm, sap.rho, sap.relative_rho)
            loss, v_star = self._exact_micro_step(batch, eps, sap, accum=1)
            gap_norm = self._last_gap_norm
        grads = [
            torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
            for p in self.lora_params
        ]
        self.optimizer.zero_grad(set_to_none=True)
        return WeightGradient(grads, v_star, gap_norm, float(loss.detach()))

    def _check_gap(self, gap: list[torch.Tensor], eps: list[torch.Tensor]) -> None:
        """Refuse a probe gradient that is exactly 0 although eps is not (silent SFT otherwise).

        Happens when eps is below the compute precision: e.g. rho=2e-5 under bf16 autocast gives
        bit-identical perturbed and clean passes (measured on CPU; see docs/sap.md).
        """
        self._last_gap_norm = float(objectives.global_norm(gap))
        if self._last_gap_norm == 0.0 and any(bool(e.any()) for e in eps):
            raise TrainingDivergedError(
                f"SAP probe gradient is exactly 0 at step {self.step} although the perturbation "
                f"is not: rho={self.config.sap.rho} is below the compute precision "
                f"(autocast={self.config.autocast}, dtype={self.config.dtype}); increase sap.rho "
                "(1e-2 works under bf16) or train in float32"
            )

    def _exact_micro_step(
        self, batch: Batch, eps: list[torch.Tensor], sap: SapConfig, accum: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Steps 3-6 on one micro-batch: adds grad L_u(theta, V*) / accum to theta's .grad."""
        assert self.probe is not None
        gap = self.probe_gap(self._probe_batch(batch, sap), eps)
        self._check_gap(gap, eps)
        v_star = self._probe_step(gap, sap)
        if all(not bool(v.any()) for v in v_star):
            # V* = 0 exactly (rho = 0 or beta = 0): the un-hooked forward is literally SFT's.
            loss = self.task_loss(batch)
        else:
            with self.probe.active(v_star):
                loss = self.task_loss(batch)
        (loss / accum).backward()
        return loss.detach(), v_star

    def _probe_batch(self, batch: Batch, sap: SapConfig) -> Batch:
        """The first ``probe_batch_fraction`` of the (global) micro-batch's rows: for a shard,
        this rank's part of them."""
        if isinstance(batch, ShardedBatch):
            n_probe = max(1, round(sap.probe_batch_fraction * batch.full.rows))
            return (
                batch if n_probe >= batch.full.rows else batch.global_head(n_probe).to(self.device)
            )
        n_probe = max(1, round(sap.probe_batch_fraction * batch.rows))
        return batch if n_probe >= batch.rows else batch.head(n_probe)

    def _lagged_micro_step(
        self, batch: Batch, eps: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Weight step with V_t; gap for V_{t+1} from the perturbed pass + this weight pass."""
        assert self.probe is not None
        sap = self.config.sap
        v_t = self._lagged_v if self._lagged_v is not None else self.probe.zeros()
        n_probe = max(1, round(sap.probe_batch_fraction * batch.rows))
        probe_batch = batch if n_probe >= batch.rows else batch.head(n_probe)
        with self._perturbed(eps):
            g_pert = self._probe_grad(probe_batch, v_t)
        # Per-row copies of V_t: one backward gives theta.grad and each row's grad_V.
        rows = [v.detach().unsqueeze(0).repeat(batch.rows, 1).requires_grad_(True) for v in v_t]
        with self.probe.active(rows, token_mask=batch.attention_mask):
            logits = self._logits(batch)
        self._last_residual_norms = [float(n) for n in self.probe.residual_norms]
        loss = objectives.mean_response_nll(logits, batch.labels)
        (loss / self._accum).backward()
        # d(loss_full)/dV over the probe rows, rescaled to the probe sub-batch's own mean loss.
        scale = self._accum * batch.label_tokens() / max(1, probe_batch.label_tokens())
        g_clean = [r.grad[:n_probe].sum(dim=0).float() * scale for r in rows]  # type: ignore[index]
        if all(not bool(e.any()) for e in eps):
            # eps = 0 => L_su is identically 0. The two gradient terms come from differently
            # ordered reductions (shared vs per-row V), so their rounding noise would not cancel
            # and a normalising step rule (sign, Adam) would blow it up to a full-size probe.
            gap = [torch.zeros_like(g) for g in g_pert]
        else:
            gap = [a - b for a, b in zip(g_pert, g_clean, strict=True)]
            self._check_gap(gap, eps)
        self._lagged_v = self._probe_step(gap, sap)
        return loss.detach(), v_t

    # ------------------------------------------------------------------ loop
    def train(self) -> TrainResult:
        """Run from `self.step` to `total_steps`; callbacks each step; checkpoints if configured."""
        if self.model is None:
            raise ConfigError("call setup() before train()")
        cfg = self.config
        self.callback.on_train_start(self.total_steps)
        metrics: dict[str, float] = {}
        while self.step < self.total_steps:
            metrics = self.train_step(self.micro_batches_for_step(self.step))
            metrics["step"] = float(self.step)
            self.history.append(metrics)
            self.callback.on_step(self.step, self.total_steps, metrics)
            saved = bool(cfg.checkpoint_every) and self.step % (cfg.checkpoint_every or 1) == 0
            if saved:
                self.save_checkpoint(self.step)
            request = self.callback.should_stop() if self.dist.is_main else None
            request = self.dist.broadcast(request)  # every rank stops at the same step
            if request == "checkpoint":
                # The caller's own policy (a time interval, the last step): save and go on.
                if not saved:
                    self.save_checkpoint(self.step)
                continue
            if request in ("pause", "shutdown"):
                if not saved:
                    self.save_checkpoint(self.step)
                raise TrainingCancelled(request)
            if request == "cancel":
                raise TrainingCancelled("cancel")
            if request == "deadline":
                # Kept, like a pause's: the work done so far is not thrown away.
                self.save_checkpoint(self.step)
                raise TrainingDeadlineExceeded(
                    f"training stopped at step {self.step} of {self.total_steps}: its time "
                    "limit passed (a checkpoint of this step is kept)"
                )
        final = dict(metrics)
        if self.eval_examples and self.dist.is_main:
            final["eval_loss"] = self.evaluate()
        return TrainResult(steps=self.step, final_metrics=final, history=list(self.history))

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean response NLL over eval_examples, probe off (B8 fix), dropout off."""
        assert self.model is not None
        assert self.probe is not None
        self.probe.detach()
        self.model.eval()
        try:
            total, tokens = 0.0, 0
            bs = self.config.batch_size
            for i in range(0, len(self.eval_examples), bs):
                batch = pad_batch(
                    self.eval_examples[i : i + bs], self.pad_id, self.config.max_length
                ).to(self.device)
                nll, n = objectives.sequence_nll(self._logits(batch), batch.labels)
                total += float(nll.sum())
                tokens += int(n.sum())
        finally:
            self.model.train()
        return total / max(1, tokens)

    # ------------------------------------------------------------------ persistence
    def lora_state(self) -> dict[str, torch.Tensor]:
        """Detached copies of the LoRA tensors by parameter name."""
        return {n: p.detach().clone() for n, p in self._named_lora}

    def save_adapter(self, out_dir: str | Path) -> Path:
        """Write only adapter_config.json + adapter_model.safetensors (probe hooks removed)."""
        assert self.model is not None
        assert self.probe is not None
        self.probe.detach()
        out = Path(out_dir)
        if not self.dist.is_main:
            return out  # every rank holds the same weights: rank 0 writes them
        out.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            self.model.save_pretrained(str(tmp), safe_serialization=True)  # type: ignore[union-attr,operator]

        staged = ckpt.write_atomically(out / ".adapter-staging", write)
        for name in ckpt.ADAPTER_FILES:
            (staged / name).replace(out / name)
        import shutil

        shutil.rmtree(staged)
        return out

    def save_checkpoint(self, step: int) -> Path:
        """Atomically write a resumable checkpoint for `step`; calls `callback.on_checkpoint`."""
        assert self.model is not None
        if not self.config.output_dir:
            raise ConfigError("set config.output_dir to save checkpoints")
        final = Path(self.config.output_dir) / "checkpoints" / ckpt.checkpoint_dir_name(step)
        if not self.dist.is_main:
            # Same weights, optimizer and RNG state on every rank: rank 0's copy is the run's.
            # The barrier: no rank goes on (a pause would end the group) before it is stored.
            self.dist.barrier()
            return final

        def write(tmp: Path) -> None:
            self.save_adapter(tmp / "adapter")
            ckpt.save_state_dict(tmp / "optimizer.pt", self.optimizer.state_dict())
            if self._probe_opt is not None:
                ckpt.save_state_dict(tmp / "probe_optimizer.pt", self._probe_opt.state_dict())
            tensors: dict[str, torch.Tensor] = {"rng_cpu": torch.get_rng_state()}
            if self.device.type == "cuda":
                tensors["rng_cuda"] = torch.cuda.get_rng_state(self.device)
            for i, g in enumerate(self._g_hat or []):
                tensors[f"g_hat.{i}"] = g
            for i, v in enumerate(self._lagged_v or []):
                tensors[f"lagged_v.{i}"] = v
            ckpt.save_tensors(tmp / "tensors.safetensors", tensors)
            state = {
                "step": self.step,
                "safety_batches_used": self._safety_batches_used,
                "scheduler": self.scheduler.state_dict(),
                "python_random": _jsonable_random_state(random.getstate()),
                "history": self.history,
            }
            ckpt.save_json(tmp / "state.json", state)
            ckpt.save_json(tmp / "config.json", self.config.to_dict())

        path = ckpt.write_atomically(final, write)
        self.callback.on_checkpoint(step, path)
        self.dist.barrier()
        return path

    def resume_from(self, checkpoint_dir: str | Path) -> None:
        """Load a checkpoint written by `save_checkpoint` into a set-up trainer."""
        from peft import set_peft_model_state_dict

        assert self.model is not None
        root = Path(checkpoint_dir)
        adapter = ckpt.load_tensors(root / "adapter" / "adapter_model.safetensors")
        result = set_peft_model_state_dict(self.model, adapter)
        missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
        if missing:
            raise ConfigError(f"checkpoint adapter does not fit this model: {missing[:3]}")
        self.optimizer.load_state_dict(ckpt.load_state_dict(root / "optimizer.pt"))
        if self._probe_opt is not None:
            self._probe_opt.load_state_dict(ckpt.load_state_dict(root / "probe_optimizer.pt"))
        tensors = ckpt.load_tensors(root / "tensors.safetensors")
        torch.set_rng_state(tensors["rng_cpu"])
        if "rng_cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng_cuda"], self.device)
        g_keys = sorted((k for k in tensors if k.startswith("g_hat.")), key=_index)
        v_keys = sorted((k for k in tensors if k.startswith("lagged_v.")), key=_index)
        self._g_hat = [tensors[k].to(self.device) for k in g_keys] or None
        self._lagged_v = [tensors[k].to(self.device) for k in v_keys] or None
        state = ckpt.load_json(root / "state.json")
        self.step = int(state["step"])
        self._safety_batches_used = int(state["safety_batches_used"])
        self.scheduler.load_state_dict(state["scheduler"])
        random.setstate(_random_state_from_json(state["python_random"]))
        self.history = list(state.get("history", []))

    def cleanup(self) -> None:
        """Remove hooks and drop model references (frees GPU memory in the worker)."""
        if self.probe is not None:
            self.probe.detach()
        self.model = None
        self._given_model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _index(key: str) -> int:
    return int(key.rsplit(".", 1)[1])


def _jsonable_random_state(state: Any) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _random_state_from_json(data: list[Any]) -> Any:
    return (data[0], tuple(data[1]), data[2])


def to_json(result: TrainResult) -> str:
    """A TrainResult as JSON (for job events)."""
    return json.dumps(
        {"steps": result.steps, "final_metrics": result.final_metrics, "history": result.history}
    )
