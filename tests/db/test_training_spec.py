"""db.training_spec.resolve_training: the policy's training values are limits, not defaults."""

from __future__ import annotations

from typing import Any

import pytest

from db.policy_schema import TrainingSection
from db.training_spec import (
    ABOVE_LIMIT,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    MODULE_NOT_ALLOWED,
    resolve_training,
)

LIMITS = TrainingSection(
    lora_rank=8,
    lora_alpha=16,
    lora_target_modules=["q_proj", "v_proj"],
    max_length=384,
    max_batch_size=16,
    max_epochs=10,
    max_steps=5000,
    max_trained_tokens=1_000_000,
)


def test_nothing_asked_takes_the_limits_or_the_auto_defaults_under_them() -> None:
    resolved = resolve_training({"n_epochs": "auto", "batch_size": "auto"}, LIMITS)
    assert resolved.violations == ()
    assert (resolved.lora_rank, resolved.lora_alpha, resolved.max_length) == (8, 16, 384)
    assert resolved.target_modules == ("q_proj", "v_proj")
    assert (resolved.batch_size, resolved.epochs) == (DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS)
    assert resolved.max_steps is None
    # "auto" under a tighter limit takes the limit.
    tight = LIMITS.model_copy(update={"max_batch_size": 2, "max_epochs": 1})
    assert (resolve_training({}, tight).batch_size, resolve_training({}, tight).epochs) == (2, 1)


def test_the_issue_job_is_refused_field_by_field_and_clamped_for_the_worker() -> None:
    # The job from issue 23: rank 256, embed_tokens + lm_head, 32k length, batch 256, 50 epochs.
    asked = {
        "lora_rank": 256,
        "lora_alpha": 512,
        "lora_target_modules": ["q_proj", "embed_tokens", "lm_head"],
        "max_length": 32_768,
        "batch_size": 256,
        "n_epochs": 50,
        "max_steps": 100_000,
    }
    resolved = resolve_training(asked, LIMITS)
    assert [(v.param, v.code) for v in resolved.violations] == [
        ("hyperparameters.lora_rank", ABOVE_LIMIT),
        ("hyperparameters.lora_alpha", ABOVE_LIMIT),
        ("hyperparameters.lora_target_modules", MODULE_NOT_ALLOWED),
        ("hyperparameters.max_length", ABOVE_LIMIT),
        ("hyperparameters.batch_size", ABOVE_LIMIT),
        ("hyperparameters.n_epochs", ABOVE_LIMIT),
        ("hyperparameters.max_steps", ABOVE_LIMIT),
    ]
    assert "embed_tokens, lm_head" in resolved.violations[2].message
    assert "limit of 8" in resolved.violations[0].message
    # What the worker trains with if the limits tightened after the job was accepted.
    assert (resolved.lora_rank, resolved.lora_alpha, resolved.max_length) == (8, 16, 384)
    assert resolved.target_modules == ("q_proj",)
    assert (resolved.batch_size, resolved.epochs, resolved.max_steps) == (16, 10, 5000)


@pytest.mark.parametrize(
    "asked",
    [
        {"lora_rank": 8, "lora_alpha": 16, "max_length": 384},
        {"batch_size": 16, "n_epochs": 10, "max_steps": 5000},
        {"lora_target_modules": ["v_proj"]},
    ],
)
def test_values_at_or_under_the_limits_are_used_as_asked(asked: dict[str, Any]) -> None:
    resolved = resolve_training(asked, LIMITS)
    assert resolved.violations == ()
    shown = {
        "lora_rank": resolved.lora_rank,
        "lora_alpha": resolved.lora_alpha,
        "max_length": resolved.max_length,
        "batch_size": resolved.batch_size,
        "n_epochs": resolved.epochs,
        "max_steps": resolved.max_steps,
        "lora_target_modules": list(resolved.target_modules),
    }
    assert {k: shown[k] for k in asked} == asked


def test_embeddings_and_head_are_allowed_only_when_listed() -> None:
    listed = LIMITS.model_copy(update={"lora_target_modules": ["q_proj", "lm_head"]})
    resolved = resolve_training({"lora_target_modules": ["lm_head"]}, listed)
    assert resolved.violations == ()
    assert resolved.target_modules == ("lm_head",)
    refused = resolve_training({"lora_target_modules": ["embed_tokens"]}, listed)
    assert [v.param for v in refused.violations] == ["hyperparameters.lora_target_modules"]
    # Nothing allowed was asked for: the worker falls back to the allow-list.
    assert refused.target_modules == ("q_proj", "lm_head")


def test_a_starting_job_gets_what_is_left_of_the_daily_token_quota() -> None:
    from db.policy_schema import parse_policy
    from db.training_spec import within_daily_tokens

    policy = parse_policy(
        {
            "allowed_models": ["m"],
            "training": {"max_trained_tokens": 1000},
            "quotas": {"max_trained_tokens_per_day": 5000},
        }
    )
    assert within_daily_tokens(policy, 0) is policy  # the per-job budget is the smaller
    cut = within_daily_tokens(policy, 4700)
    assert cut is not None
    assert cut.training.max_trained_tokens == 300
    assert cut.training.lora_rank == policy.training.lora_rank  # nothing else changes
    assert within_daily_tokens(policy, 5000) is None
    unlimited = policy.model_copy(
        update={"quotas": policy.quotas.model_copy(update={"max_trained_tokens_per_day": None})}
    )
    assert within_daily_tokens(unlimited, 10**12) is unlimited


def test_n_processes_is_capped_by_max_processes_and_defaults_to_default_processes() -> None:
    # Single-process by default: a job names none, the shipped policy allows none more.
    assert resolve_training({}, LIMITS).n_processes == 1
    refused = resolve_training({"n_processes": 2}, LIMITS)
    assert [(v.param, v.code) for v in refused.violations] == [
        ("hyperparameters.n_processes", ABOVE_LIMIT)
    ]
    assert "limit of 1" in refused.violations[0].message
    assert refused.n_processes == 1  # the worker clamps a job whose limit tightened
    eight = LIMITS.model_copy(update={"max_processes": 8, "default_processes": 4})
    assert resolve_training({}, eight).n_processes == 4
    assert resolve_training({"n_processes": "auto"}, eight).n_processes == 4
    asked = resolve_training({"n_processes": 8}, eight)
    assert (asked.n_processes, asked.violations) == (8, ())


def test_default_processes_must_be_within_max_processes() -> None:
    with pytest.raises(ValueError, match="default_processes"):
        TrainingSection(max_processes=2, default_processes=4)
