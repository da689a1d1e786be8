"""The single mapping from a stored job (API spec + typed provider policy) to sap_core configs.

Public API fields (OpenAI `hyperparameters`, Keel `safety`) stay stable while sap_core knobs move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from db.policy_schema import PolicyDocument
from db.safety_spec import SafetyRequest, resolve_safety
from db.training_spec import resolve_training
from sap_core.config import LoraConfig, OptimConfig, SapConfig, TrainConfig
from sap_core.safety.mixer import DEFAULT_CONTRAST_RATIO

# OpenAI's "auto" learning rate, scaled for LoRA on small instruct models (the "auto" batch
# size and epochs live with the policy's limits, db.training_spec).
BASE_LEARNING_RATE = 2e-4


@dataclass(frozen=True)
class EvalSpec:
    num_harmful: int
    num_benign: int
    max_new_tokens: int
    batch_size: int
    judge: str
    timeout_seconds: float
    # Registry name of the classifier / LLM judge's weights (None for the keyword judge).
    judge_model: str | None = None
    # Also ask the harmful prompts in the customer's own framing (system prompt, affixes).
    task_format: bool = True
    # Validation conversations scored for answer accuracy (at most).
    num_utility: int = 64


@dataclass(frozen=True)
class MixSpec:
    enabled: bool
    ratio: float
    refusal_source: str
    contrast_ratio: float = DEFAULT_CONTRAST_RATIO
    contrast_source: str = "model"
    # "customer_rows": an epoch is counted over the customer's rows (policy mixer.epochs_over).
    epochs_over: str = "mixed_rows"


@dataclass(frozen=True)
class Schedule:
    """The step schedule the customer asked for, under the policy's step and token caps;
    sized once the number of examples (and their tokens) is known."""

    batch_size: int
    epochs: int
    max_steps: int | None
    step_cap: int = 1_000_000
    token_budget: int = 10**15

    def size(
        self,
        n_examples: int,
        mean_tokens: float | None = None,
        epoch_rows: int | None = None,
    ) -> tuple[int, int, str | None]:
        """(batch size, total steps, the policy limit that cut the steps or None) for
        ``n_examples`` rows of ``mean_tokens`` tokens each: the batch never exceeds the data;
        the steps never pass max_steps, nor the step whose tokens would pass the token budget
        (estimated at the mean). An epoch is ``epoch_rows`` rows (None: all ``n_examples``);
        fewer than the data means the steps see part of it per "epoch", shuffled."""
        batch_size = max(1, min(self.batch_size, max(1, n_examples)))
        per_epoch_rows = n_examples if epoch_rows is None else min(epoch_rows, n_examples)
        steps_per_epoch = math.ceil(max(1, per_epoch_rows) / batch_size)
        asked = self.max_steps or steps_per_epoch * self.epochs
        steps, cut_by = asked, None
        if steps > self.step_cap:
            steps, cut_by = self.step_cap, "max_steps"
        if mean_tokens is not None and mean_tokens > 0:
            by_tokens = max(1, math.floor(self.token_budget / (batch_size * mean_tokens)))
            if steps > by_tokens:
                steps, cut_by = by_tokens, "max_trained_tokens"
        return batch_size, steps, cut_by


@dataclass(frozen=True)
class JobPlan:
    train: TrainConfig
    mix: MixSpec
    evaluation: EvalSpec
    thresholds: dict[str, float]
    on_failure: str
    resolved: dict[str, Any] = field(default_factory=dict)
    schedule: Schedule | None = None
    # Wall-clock seconds this job may train (policy training.max_training_seconds).
    training_seconds: float | None = None
    # Data-parallel ranks the trainer runs as (worker.distributed_launch); 1 = in the worker.
    n_processes: int = 1

    def for_examples(
        self, n_examples: int, mean_tokens: float | None = None, customer_rows: int | None = None
    ) -> JobPlan:
        """The same plan with its batch size and step count sized to ``n_examples`` rows of
        ``mean_tokens`` tokens on average (after truncation; None: no token cap applied).

        The job is planned once, before the safety mixer adds rows; only the schedule follows
        the mixed, tokenised data size (nothing of the policy is resolved again). With
        ``epochs_over: customer_rows`` and the mixer on, the epochs are counted over the
        ``customer_rows`` of the ``n_examples``: the same steps plain fine-tuning would take.
        """
        if self.schedule is None:
            return self
        epoch_rows = (
            customer_rows if self.mix.enabled and self.mix.epochs_over == "customer_rows" else None
        )
        batch_size, total_steps, cut_by = self.schedule.size(n_examples, mean_tokens, epoch_rows)
        train = replace(self.train, batch_size=batch_size, max_steps=total_steps)
        resolved = {**self.resolved, "total_steps": total_steps, "steps_cut_by": cut_by}
        return replace(self, train=train, resolved=resolved)


def _auto(value: Any, default: float) -> float:
    if value is None or value == "auto":
        return default
    return float(value)


def plan_job(
    *,
    hyperparameters: dict[str, Any],
    safety: dict[str, Any],
    policy: PolicyDocument,
    seed: int,
    n_examples: int,
    model_path: str,
    output_dir: str,
    device: str,
) -> JobPlan:
    """Resolve "auto" values; provider policy wins over the customer's safety block."""
    # The policy's training limits are re-applied here too: a value above a limit that has
    # tightened since the API accepted the job is clamped to it (db.training_spec).
    shape = resolve_training(hyperparameters, policy.training)
    schedule = Schedule(
        batch_size=shape.batch_size,
        epochs=shape.epochs,
        max_steps=shape.max_steps,
        step_cap=shape.step_cap,
        token_budget=shape.token_budget,
    )
    batch_size, total_steps, cut_by = schedule.size(n_examples)
    epochs = schedule.epochs
    lr = BASE_LEARNING_RATE * _auto(hyperparameters.get("learning_rate_multiplier"), 1.0)

    # Policy is re-applied here, not only at create time: it may have tightened since. The
    # same rule the API checked (db.safety_spec); here a refused choice takes the policy's value.
    resolved_safety = resolve_safety(SafetyRequest.from_stored(safety), policy)
    sap = SapConfig(enabled=resolved_safety.sap_enabled, **resolved_safety.sap)

    lora = LoraConfig(
        r=shape.lora_rank, alpha=shape.lora_alpha, target_modules=shape.target_modules
    )
    train = TrainConfig(
        model_path=model_path,
        output_dir=output_dir,
        lora=lora,
        optim=OptimConfig(lr=lr, weight_decay=0.0, warmup_steps=0),
        sap=sap,
        batch_size=batch_size,
        max_length=shape.max_length,
        epochs=epochs,
        max_steps=total_steps,
        checkpoint_every=policy.training.checkpoint_every,
        seed=seed,
        device=device,
    )

    mixer_policy = policy.mixer
    ratio = resolved_safety.mixer_ratio
    # The mixer is independent of the training method: "mixer only" is method none + ratio > 0.
    mix = MixSpec(
        enabled=ratio > 0,
        ratio=ratio,
        refusal_source=mixer_policy.refusal_source,
        contrast_source=mixer_policy.contrast_source,
        # Unset in the policy: the mixer's own default (sap_core owns that number).
        contrast_ratio=(
            DEFAULT_CONTRAST_RATIO
            if mixer_policy.contrast_ratio is None
            else mixer_policy.contrast_ratio
        ),
        epochs_over=mixer_policy.epochs_over,
    )

    eval_policy = policy.evaluation
    evaluation = EvalSpec(
        num_harmful=eval_policy.num_harmful,
        num_benign=eval_policy.num_benign,
        max_new_tokens=eval_policy.max_new_tokens,
        batch_size=eval_policy.batch_size,
        judge=eval_policy.judge,
        judge_model=eval_policy.judge_model,
        timeout_seconds=eval_policy.timeout_seconds,
        task_format=eval_policy.task_format,
        num_utility=eval_policy.num_utility,
    )
    gate = policy.gate
    # No thresholds block: PolicyThresholds' defaults apply (the same numbers, a test keeps
    # them equal); an optional threshold stored as null is unset.
    thresholds = gate.thresholds.model_dump(exclude_none=True) if gate.thresholds else {}
    return JobPlan(
        train=train,
        mix=mix,
        evaluation=evaluation,
        thresholds={k: float(v) for k, v in thresholds.items()},
        on_failure=gate.on_failure,
        resolved={
            "method": resolved_safety.method,
            "sap": train.sap.__dict__ | {"probe_layers": train.sap.probe_layers},
            "mixer": {
                "enabled": mix.enabled,
                "ratio": mix.ratio,
                "contrast_ratio": mix.contrast_ratio,
                "contrast_source": mix.contrast_source,
                "epochs_over": mix.epochs_over,
            },
            "total_steps": total_steps,
            "steps_cut_by": cut_by,
            "n_processes": shape.n_processes,
            # Hyperparameters above a limit that tightened after the job was accepted.
            "clamped": [v.param for v in shape.violations],
        },
        schedule=schedule,
        training_seconds=shape.training_seconds,
        n_processes=shape.n_processes,
    )
