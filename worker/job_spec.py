"""The single mapping from a stored job (API spec + typed provider policy) to sap_core configs.

Public API fields (OpenAI `hyperparameters`, Keel `safety`) stay stable while sap_core knobs move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from db.policy_schema import PolicyDocument
from db.safety_spec import SafetyRequest, resolve_safety
from sap_core.config import LoraConfig, OptimConfig, SapConfig, TrainConfig
from sap_core.safety.mixer import DEFAULT_CONTRAST_RATIO

# OpenAI's "auto" values, scaled for LoRA on small instruct models.
BASE_LEARNING_RATE = 2e-4
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 4


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


@dataclass(frozen=True)
class MixSpec:
    enabled: bool
    ratio: float
    refusal_source: str
    contrast_ratio: float = DEFAULT_CONTRAST_RATIO
    contrast_source: str = "model"


@dataclass(frozen=True)
class Schedule:
    """The step schedule the customer asked for; sized once the number of examples is known."""

    batch_size: int
    epochs: int
    max_steps: int | None

    def size(self, n_examples: int) -> tuple[int, int]:
        """(batch size, total steps) for ``n_examples`` rows: the batch never exceeds the data."""
        batch_size = max(1, min(self.batch_size, max(1, n_examples)))
        steps_per_epoch = math.ceil(n_examples / batch_size)
        return batch_size, self.max_steps or steps_per_epoch * self.epochs


@dataclass(frozen=True)
class JobPlan:
    train: TrainConfig
    mix: MixSpec
    evaluation: EvalSpec
    thresholds: dict[str, float]
    on_failure: str
    resolved: dict[str, Any] = field(default_factory=dict)
    schedule: Schedule | None = None

    def for_examples(self, n_examples: int) -> JobPlan:
        """The same plan with its batch size and step count sized to ``n_examples`` rows.

        The job is planned once, before the safety mixer adds rows; only the schedule follows
        the mixed, tokenised data size (nothing of the policy is resolved again).
        """
        if self.schedule is None:
            return self
        batch_size, total_steps = self.schedule.size(n_examples)
        train = replace(self.train, batch_size=batch_size, max_steps=total_steps)
        resolved = {**self.resolved, "total_steps": total_steps}
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
    max_steps = hyperparameters.get("max_steps")
    schedule = Schedule(
        batch_size=int(_auto(hyperparameters.get("batch_size"), DEFAULT_BATCH_SIZE)),
        epochs=int(_auto(hyperparameters.get("n_epochs"), DEFAULT_EPOCHS)),
        max_steps=int(max_steps) if max_steps else None,
    )
    batch_size, total_steps = schedule.size(n_examples)
    epochs = schedule.epochs
    lr = BASE_LEARNING_RATE * _auto(hyperparameters.get("learning_rate_multiplier"), 1.0)

    # Policy is re-applied here, not only at create time: it may have tightened since. The
    # same rule the API checked (db.safety_spec); here a refused choice takes the policy's value.
    resolved_safety = resolve_safety(SafetyRequest.from_stored(safety), policy)
    sap = SapConfig(enabled=resolved_safety.sap_enabled, **resolved_safety.sap)

    training_policy = policy.training
    lora = LoraConfig(
        r=int(hyperparameters.get("lora_rank", training_policy.lora_rank)),
        alpha=int(hyperparameters.get("lora_alpha", training_policy.lora_alpha)),
        target_modules=tuple(
            hyperparameters.get("lora_target_modules", training_policy.lora_target_modules)
        ),
    )
    train = TrainConfig(
        model_path=model_path,
        output_dir=output_dir,
        lora=lora,
        optim=OptimConfig(lr=lr, weight_decay=0.0, warmup_steps=0),
        sap=sap,
        batch_size=batch_size,
        max_length=int(hyperparameters.get("max_length", training_policy.max_length)),
        epochs=epochs,
        max_steps=total_steps,
        checkpoint_every=training_policy.checkpoint_every,
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
            },
            "total_steps": total_steps,
        },
        schedule=schedule,
    )
