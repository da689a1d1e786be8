"""The API spec + provider policy → sap_core config mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from db.policy_schema import parse_policy
from worker.job_spec import BASE_LEARNING_RATE, JobPlan, plan_job

POLICY = yaml.safe_load((Path(__file__).resolve().parents[2] / "policy.yaml").read_text())


def plan_under(
    hyper: dict[str, object] | None = None,
    safety: dict[str, object] | None = None,
    policy: dict[str, Any] | None = None,
    n: int = 10,
) -> JobPlan:
    """The plan of a job (spec ``hyper`` / ``safety``) under ``policy`` (default: policy.yaml)."""
    return plan_job(
        hyperparameters=hyper or {},
        safety=safety or {},
        policy=parse_policy(policy or POLICY),
        seed=3,
        n_examples=n,
        model_path="/m",
        output_dir="/o",
        device="cpu",
    )


def test_auto_values_resolve_to_documented_defaults() -> None:
    auto = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    plan = plan_under(auto)
    assert plan.train.optim.lr == BASE_LEARNING_RATE
    assert plan.train.batch_size == 4
    assert plan.train.max_steps == 3 * 3  # ceil(10 / 4) steps per epoch, 3 epochs
    assert plan.train.sap.enabled


def test_customer_values_are_used() -> None:
    plan = plan_under({"n_epochs": 2, "batch_size": 5, "learning_rate_multiplier": 0.5})
    assert plan.train.optim.lr == pytest.approx(BASE_LEARNING_RATE / 2)
    assert plan.train.max_steps == 4
    assert plan.train.seed == 3


def test_mixer_ratio_is_clamped_to_policy_minimum() -> None:
    plan = plan_under(safety={"mixer_ratio": 0.0})
    assert plan.mix.enabled
    assert plan.mix.ratio == POLICY["mixer"]["min_ratio"]


def test_thresholds_and_action_come_from_policy() -> None:
    plan = plan_under()
    assert plan.thresholds == {k: float(v) for k, v in POLICY["gate"]["thresholds"].items()}
    assert plan.on_failure == "fail"


def test_method_none_needs_policy_permission() -> None:
    assert plan_under(safety={"method": "none"}).train.sap.enabled
    permissive = {**POLICY, "customer_may_change": {"method": True}}
    assert not plan_under(safety={"method": "none"}, policy=permissive).train.sap.enabled


def test_task_format_evaluation_is_on_by_default_and_the_policy_can_switch_it_off() -> None:
    assert POLICY["evaluation"]["task_format"] is True
    assert plan_under().evaluation.task_format
    assert plan_under(policy={**POLICY, "evaluation": {}}).evaluation.task_format
    off = {**POLICY, "evaluation": {**POLICY["evaluation"], "task_format": False}}
    assert not plan_under(policy=off).evaluation.task_format


def test_the_accuracy_sample_defaults_to_64_rows_and_the_policy_can_raise_it() -> None:
    assert plan_under(policy={**POLICY, "evaluation": {}}).evaluation.num_utility == 64
    more = {**POLICY, "evaluation": {**POLICY["evaluation"], "num_utility": 200}}
    assert plan_under(policy=more).evaluation.num_utility == 200


def test_sizing_for_the_mixed_data_equals_planning_for_it() -> None:
    hyper = {"n_epochs": 2, "batch_size": 8}
    # Planned on the customer's 5 rows, sized once the mixer made them 30.
    sized = plan_under(hyper, n=5).for_examples(30)
    direct = plan_under(hyper, n=30)
    assert sized.train == direct.train
    assert sized.resolved == direct.resolved
    assert (sized.train.batch_size, sized.train.max_steps) == (8, 2 * 4)  # ceil(30 / 8) = 4


def test_epochs_over_customer_rows_keeps_plain_fine_tunings_steps_for_a_mixed_job() -> None:
    hyper = {"n_epochs": 5, "batch_size": 2}
    # 24 customer rows mixed up to 49: by default an epoch passes over all 49 rows ...
    assert POLICY["mixer"]["epochs_over"] == "mixed_rows"
    mixed = plan_under(hyper, n=24).for_examples(49, customer_rows=24)
    assert mixed.train.max_steps == 5 * 25  # ceil(49 / 2) steps per epoch
    assert mixed.resolved["mixer"]["epochs_over"] == "mixed_rows"
    # ... with "customer_rows" the job takes the steps plain fine-tuning on 24 rows takes.
    policy = {**POLICY, "mixer": {**POLICY["mixer"], "epochs_over": "customer_rows"}}
    customer = plan_under(hyper, policy=policy, n=24).for_examples(49, customer_rows=24)
    assert customer.train.max_steps == 5 * 12
    assert customer.train.batch_size == 2
    assert customer.resolved["total_steps"] == 60
    assert customer.resolved["mixer"]["epochs_over"] == "customer_rows"
    # The caps still apply to the shorter schedule, and a job without the mixer is unchanged.
    capped = {**policy, "training": {**POLICY["training"], "max_steps": 40}}
    assert plan_under(hyper, policy=capped, n=24).for_examples(49, 10.0, 24).train.max_steps == 40
    unmixed = {
        **policy,
        "customer_may_change": {"mixer_ratio": True},
        "mixer": {**policy["mixer"], "min_ratio": 0.0},
    }
    plain = plan_under(hyper, {"mixer_ratio": 0.0}, policy=unmixed, n=24).for_examples(24, None, 24)
    assert not plain.mix.enabled
    assert plain.train.max_steps == 60


def test_the_issue_job_is_clamped_to_the_policy_limits_by_the_worker() -> None:
    # The API refuses this job; a job accepted under a looser policy that has since tightened
    # trains within the current limits (rank 256 / 195,350 steps before issue 23).
    hyper = {
        "lora_rank": 256,
        "lora_target_modules": ["q_proj", "embed_tokens", "lm_head"],
        "max_length": 32_768,
        "batch_size": 256,
        "n_epochs": 50,
    }
    plan = plan_under(hyper, n=1_000_000)
    limits = POLICY["training"]
    assert plan.train.lora.r == limits["lora_rank"]
    assert plan.train.lora.target_modules == ("q_proj",)
    assert plan.train.max_length == limits["max_length"]
    assert plan.train.batch_size == limits["max_batch_size"]
    assert plan.train.max_steps == limits["max_steps"]
    assert plan.resolved["steps_cut_by"] == "max_steps"
    assert plan.resolved["clamped"] == [
        "hyperparameters.lora_rank",
        "hyperparameters.lora_target_modules",
        "hyperparameters.max_length",
        "hyperparameters.batch_size",
        "hyperparameters.n_epochs",
    ]
    assert plan.training_seconds == limits["max_training_seconds"]


def test_the_token_budget_cuts_the_schedule_once_the_data_is_known() -> None:
    policy = {**POLICY, "training": {**POLICY["training"], "max_trained_tokens": 10_000}}
    plan = plan_under({"n_epochs": 3, "batch_size": 4}, policy=policy, n=400)
    assert plan.train.max_steps == 300  # 100 steps per epoch; no token count known yet
    # 400 rows of 50 tokens: 200 tokens per step, so 10,000 tokens allow 50 steps.
    sized = plan.for_examples(400, mean_tokens=50.0)
    assert sized.train.max_steps == 50
    assert sized.resolved["steps_cut_by"] == "max_trained_tokens"
    # Under the budget nothing is cut.
    assert plan.for_examples(40, mean_tokens=10.0).train.max_steps == 30
    assert plan.for_examples(40, mean_tokens=10.0).resolved["steps_cut_by"] is None
