"""A job's hyperparameters under the policy's `training` limits: one pure rule, two users.

Like db.safety_spec: the API calls `resolve_training` at create time and refuses the job on the
first violation (a 400 naming the field, e.g. ``hyperparameters.lora_rank``); the worker calls
it again when the job starts, because the policy may have tightened since, and applies what it
resolves (a value above its limit is clamped to the limit, a module off the allow-list is
dropped) without failing the job.

How values the customer leaves out (or sets to "auto") resolve:

- lora_rank, lora_alpha, max_length: the policy's value (each is the largest allowed);
- lora_target_modules: the policy's whole allow-list;
- batch_size: min(DEFAULT_BATCH_SIZE, max_batch_size); n_epochs: min(DEFAULT_EPOCHS, max_epochs);
- n_processes (data-parallel ranks, one per GPU): the policy's default_processes (1 unless the
  provider sets it), at most max_processes; the global batch is the same at any count;
- the step count (explicit max_steps, else epochs x steps per epoch) is cut at the policy's
  max_steps and at the step whose tokens would pass max_trained_tokens (`step_limit`, once
  the tokenised data is known). An explicit value above a limit is refused, never cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from db.policy_schema import PolicyDocument, TrainingSection

# OpenAI's "auto" values, scaled for LoRA on small instruct models.
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 4

ABOVE_LIMIT = "hyperparameter_above_limit"
MODULE_NOT_ALLOWED = "lora_target_module_not_allowed"


@dataclass(frozen=True)
class TrainingViolation:
    """A hyperparameter the policy does not allow; `param`/`code` are the API's error fields."""

    param: str
    code: str
    message: str


@dataclass(frozen=True)
class ResolvedTraining:
    lora_rank: int
    lora_alpha: int
    target_modules: tuple[str, ...]
    max_length: int
    batch_size: int
    epochs: int
    # The customer's explicit step count (already within the policy's), None for "by epochs".
    max_steps: int | None
    # The policy's caps that apply once the data is known (step_limit).
    step_cap: int
    token_budget: int
    training_seconds: float
    violations: tuple[TrainingViolation, ...] = ()
    n_processes: int = 1

    def steps_for(self, n_examples: int, batch_size: int) -> int:
        """Steps the customer asked for, before the policy's caps."""
        if self.max_steps:
            return self.max_steps
        return math.ceil(n_examples / batch_size) * self.epochs

    def step_limit(self, batch_size: int, mean_tokens_per_example: float | None) -> int:
        """The most steps the policy allows: max_steps, and max_trained_tokens at the data's
        mean tokens per (truncated) example; at least 1 step."""
        limit = self.step_cap
        if mean_tokens_per_example is not None and mean_tokens_per_example > 0:
            per_step = batch_size * mean_tokens_per_example
            limit = min(limit, math.floor(self.token_budget / per_step))
        return max(1, limit)


def _int_or_auto(value: Any) -> int | None:
    if value is None or value == "auto":
        return None
    return int(value)


def _hyper(field: str) -> str:
    return f"hyperparameters.{field}"


def resolve_training(hyperparameters: dict[str, Any], limits: TrainingSection) -> ResolvedTraining:
    """The training shape a job runs with; the policy's limits win over the customer.

    Every value above its limit is listed in `violations` (in field order: the API reports the
    first) and replaced by the limit; modules off the allow-list are dropped (all of them
    dropped: the allow-list).
    """
    violations: list[TrainingViolation] = []

    def capped(field: str, asked: int | None, limit: int, default: int) -> int:
        if asked is None:
            return min(default, limit)
        if asked > limit:
            violations.append(
                TrainingViolation(
                    _hyper(field),
                    ABOVE_LIMIT,
                    f"hyperparameters.{field} = {asked} is above the provider's limit of {limit}.",
                )
            )
            return limit
        return asked

    rank = capped(
        "lora_rank",
        _int_or_auto(hyperparameters.get("lora_rank")),
        limits.lora_rank,
        limits.lora_rank,
    )
    alpha = capped(
        "lora_alpha",
        _int_or_auto(hyperparameters.get("lora_alpha")),
        limits.lora_alpha,
        limits.lora_alpha,
    )

    allowed = tuple(limits.lora_target_modules)
    asked_modules = hyperparameters.get("lora_target_modules")
    modules = allowed
    if asked_modules:
        refused = [m for m in asked_modules if m not in allowed]
        if refused:
            violations.append(
                TrainingViolation(
                    _hyper("lora_target_modules"),
                    MODULE_NOT_ALLOWED,
                    f"LoRA target module(s) {', '.join(refused)} are not allowed by the "
                    f"provider policy; allowed: {', '.join(allowed)}.",
                )
            )
        kept = tuple(dict.fromkeys(m for m in asked_modules if m in allowed))
        modules = kept or allowed

    max_length = capped(
        "max_length",
        _int_or_auto(hyperparameters.get("max_length")),
        limits.max_length,
        limits.max_length,
    )
    batch_size = capped(
        "batch_size",
        _int_or_auto(hyperparameters.get("batch_size")),
        limits.max_batch_size,
        DEFAULT_BATCH_SIZE,
    )
    epochs = capped(
        "n_epochs", _int_or_auto(hyperparameters.get("n_epochs")), limits.max_epochs, DEFAULT_EPOCHS
    )
    asked_steps = _int_or_auto(hyperparameters.get("max_steps"))
    max_steps = (
        None
        if asked_steps is None
        else capped("max_steps", asked_steps, limits.max_steps, limits.max_steps)
    )
    n_processes = capped(
        "n_processes",
        _int_or_auto(hyperparameters.get("n_processes")),
        limits.max_processes,
        limits.default_processes,
    )
    return ResolvedTraining(
        n_processes=n_processes,
        lora_rank=rank,
        lora_alpha=alpha,
        target_modules=modules,
        max_length=max_length,
        batch_size=batch_size,
        epochs=epochs,
        max_steps=max_steps,
        step_cap=limits.max_steps,
        token_budget=limits.max_trained_tokens,
        training_seconds=limits.max_training_seconds,
        violations=tuple(violations),
    )


def within_daily_tokens(policy: PolicyDocument, used_24h: int) -> PolicyDocument | None:
    """The policy a starting job trains under: its per-job token budget cut to what the tenant
    has left of `quotas.max_trained_tokens_per_day` (tokens of its jobs ended in the last 24
    hours); None when nothing is left. Jobs starting at the same time each get the remainder:
    the daily quota bounds what starts, the per-job budget what each job trains."""
    daily = policy.quotas.max_trained_tokens_per_day
    if daily is None:
        return policy
    left = daily - used_24h
    if left <= 0:
        return None
    if left >= policy.training.max_trained_tokens:
        return policy
    training = policy.training.model_copy(update={"max_trained_tokens": left})
    return policy.model_copy(update={"training": training})
