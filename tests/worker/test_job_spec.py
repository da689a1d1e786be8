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


def test_sizing_for_the_mixed_data_equals_planning_for_it() -> None:
    hyper = {"n_epochs": 2, "batch_size": 8}
    # Planned on the customer's 5 rows, sized once the mixer made them 30.
    sized = plan_under(hyper, n=5).for_examples(30)
    direct = plan_under(hyper, n=30)
    assert sized.train == direct.train
    assert sized.resolved == direct.resolved
    assert (sized.train.batch_size, sized.train.max_steps) == (8, 2 * 4)  # ceil(30 / 8) = 4
