"""The single mapping from a stored job (API spec + provider policy) to sap_core configs.

Public API fields (OpenAI `hyperparameters`, Keel `safety`) stay stable while sap_core knobs move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class JobPlan:
    train: TrainConfig
    mix: MixSpec
    evaluation: EvalSpec
    thresholds: dict[str, float]
    on_failure: str
    resolved: dict[str, Any] = field(default_factory=dict)


def _auto(value: Any, default: float) -> float:
    if value is None or value == "auto":
        return default
    return float(value)


def plan_job(
    *,
    hyperparameters: dict[str, Any],
    safety: dict[str, Any],
    policy: dict[str, Any],
    seed: int,
    n_examples: int,
    model_path: str,
    output_dir: str,
    device: str,
) -> JobPlan:
    """Resolve "auto" values; provider policy wins over the customer's safety block."""
    batch_size = int(_auto(hyperparameters.get("batch_size"), DEFAULT_BATCH_SIZE))
    batch_size = max(1, min(batch_size, max(1, n_examples)))
    epochs = int(_auto(hyperparameters.get("n_epochs"), DEFAULT_EPOCHS))
    lr = BASE_LEARNING_RATE * _auto(hyperparameters.get("learning_rate_multiplier"), 1.0)
    max_steps = hyperparameters.get("max_steps")
    steps_per_epoch = math.ceil(n_examples / batch_size)
    total_steps = int(max_steps) if max_steps else steps_per_epoch * epochs

    training_policy = policy.get("training", {})
    sap_policy = policy.get("sap", {})
    # Policy is re-applied here, not only at create time: it may have tightened since.
    may_change = policy.get("customer_may_change", {})
    method = str(safety.get("method", "sap")) if may_change.get("method") else "sap"
    sap_enabled = method == "sap"
    customer_knobs = (safety.get("sap") or {}) if may_change.get("sap_knobs") else {}
    sap_knobs = {**sap_policy.get("defaults", {}), **customer_knobs}
    sap = SapConfig(enabled=sap_enabled, **sap_knobs)

    lora = LoraConfig(
        r=int(hyperparameters.get("lora_rank", training_policy.get("lora_rank", 8))),
        alpha=int(hyperparameters.get("lora_alpha", training_policy.get("lora_alpha", 16))),
        target_modules=tuple(
            hyperparameters.get(
                "lora_target_modules",
                training_policy.get("lora_target_modules", ["q_proj", "v_proj"]),
            )
        ),
    )
    train = TrainConfig(
        model_path=model_path,
        output_dir=output_dir,
        lora=lora,
        optim=OptimConfig(lr=lr, weight_decay=0.0, warmup_steps=0),
        sap=sap,
        batch_size=batch_size,
        max_length=int(hyperparameters.get("max_length", training_policy.get("max_length", 384))),
        epochs=epochs,
        max_steps=total_steps,
        checkpoint_every=int(training_policy.get("checkpoint_every", 10)),
        seed=seed,
        device=device,
    )

    mixer_policy = policy.get("mixer", {})
    ratio = safety.get("mixer_ratio")
    min_ratio = float(mixer_policy.get("min_ratio", 0.0))
    # Same default as the API's check at create time: absent means customers may not change it.
    if ratio is None or not may_change.get("mixer_ratio", False):
        ratio = mixer_policy.get("default_ratio", 0.1)
    ratio = min(max(float(ratio), min_ratio), float(mixer_policy.get("max_ratio", 1.0)))
    # The mixer is independent of the training method: "mixer only" is method none + ratio > 0.
    mix = MixSpec(
        enabled=ratio > 0,
        ratio=ratio,
        refusal_source=str(mixer_policy.get("refusal_source", "template")),
        contrast_ratio=float(mixer_policy.get("contrast_ratio", DEFAULT_CONTRAST_RATIO)),
    )

    eval_policy = policy.get("evaluation", {})
    evaluation = EvalSpec(
        num_harmful=int(eval_policy.get("num_harmful", 40)),
        num_benign=int(eval_policy.get("num_benign", 20)),
        max_new_tokens=int(eval_policy.get("max_new_tokens", 40)),
        batch_size=int(eval_policy.get("batch_size", 8)),
        judge=str(eval_policy.get("judge", "keyword")),
        judge_model=eval_policy.get("judge_model"),
        timeout_seconds=float(eval_policy.get("timeout_seconds", 1800)),
        task_format=bool(eval_policy.get("task_format", True)),
    )
    gate = policy.get("gate", {})
    # An optional threshold stored as null is unset (PolicyThresholds' default applies).
    thresholds = {k: float(v) for k, v in (gate.get("thresholds") or {}).items() if v is not None}
    return JobPlan(
        train=train,
        mix=mix,
        evaluation=evaluation,
        thresholds=thresholds,
        on_failure=str(gate.get("on_failure", "fail")),
        resolved={
            "method": method,
            "sap": train.sap.__dict__ | {"probe_layers": train.sap.probe_layers},
            "mixer": {
                "enabled": mix.enabled,
                "ratio": mix.ratio,
                "contrast_ratio": mix.contrast_ratio,
            },
            "total_steps": total_steps,
        },
    )
