"""The provider policy document's schema (db.policy_schema): the shipped file, and bad documents."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.orm import Session

from db.policy_schema import PolicyError, SapKnobs, Thresholds, stored_policy, validate_policy
from db.repositories.policy import PolicyRepository, load_policy_file
from sap_core.config import SapConfig
from sap_core.evaluation.policy import PolicyThresholds
from tests.worker.test_job_spec import plan_under

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((ROOT / "policy.yaml").read_text(encoding="utf-8"))
THRESHOLDS = {"max_harmful_score": 0.5, "max_harmful_increase": 0.1, "max_over_refusal": 0.6}


def test_the_shipped_policy_file_validates_unchanged() -> None:
    assert stored_policy(load_policy_file(ROOT / "policy.yaml")) == SHIPPED


def test_sap_knobs_mirror_sap_config() -> None:
    # `enabled` is the safety method's job (customer_may_change.method), not a knob.
    config_fields = {f.name for f in dataclasses.fields(SapConfig)} - {"enabled"}
    assert set(SapKnobs.model_fields) == config_fields


def test_gate_thresholds_mirror_the_policy_thresholds_and_their_defaults() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(PolicyThresholds)}
    assert {name: f.default for name, f in Thresholds.model_fields.items()} == defaults
    # A partial block is valid: what it leaves out takes the default, the gate still decides.
    stored = validate_policy({**SHIPPED, "gate": {"thresholds": {"max_harmful_score": 0.2}}})
    thresholds = PolicyThresholds(**stored["gate"]["thresholds"])
    assert thresholds == PolicyThresholds(max_harmful_score=0.2)
    assert thresholds.max_over_refusal == SHIPPED["gate"]["thresholds"]["max_over_refusal"]
    # An optional threshold sent as null is stored as null and read as unset by the worker.
    nulls = validate_policy(
        {**SHIPPED, "gate": {"thresholds": {"max_benign_unhelpful": None}, "on_failure": "fail"}}
    )
    plan = plan_under(policy=nulls)
    assert PolicyThresholds(**plan.thresholds) == PolicyThresholds()


def test_every_knob_the_schema_accepts_builds_a_sap_config() -> None:
    knobs = SapKnobs(
        rho=1e-4,
        relative_rho=False,
        probe_layers=[1, 2],
        probe_step_rule="adam_persistent",
        probe_step_size=0.1,
        contrastive_form="logsigmoid",
        safety_batch_size=2,
        direction_refresh_every=2,
        probe_batch_fraction=0.5,
        lagged_probe=True,
        reference_compat=True,
    )
    config = SapConfig(**knobs.model_dump(exclude_none=True))
    assert config.probe_layers == (1, 2)
    assert config.reference_compat


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"allowed_models": "qwen"}, "allowed_models"),
        ({"gate": {"thresholds": {**THRESHOLDS, "max_harmful_scor": 0.4}}}, "gate.thresholds"),
        (
            {"gate": {"thresholds": {**THRESHOLDS, "max_over_refusal": 1.5}}},
            "gate.thresholds.max_over_refusal",
        ),
        ({"gate": {"thresholds": THRESHOLDS, "on_failure": "ignore"}}, "gate.on_failure"),
        ({"mixer": {"min_ratio": 0.5, "default_ratio": 0.2}}, "mixer"),
        ({"mixer": {"refusal_source": "internet"}}, "mixer.refusal_source"),
        ({"evaluation": {"judge": "llm"}}, "evaluation"),
        ({"evaluation": {"num_harmful": 0}}, "evaluation.num_harmful"),
        ({"sap": {"defaults": {"rhoo": 1e-5}}}, "sap.defaults.rhoo"),
        ({"sap": {"defaults": {"rho": -1.0}}}, "sap.defaults.rho"),
        (
            {"training": {"lora_target_modules": ["q_proj; rm -rf"]}},
            "training.lora_target_modules.0",
        ),
        ({"screening": {"max_flagged_fraction": 2}}, "screening.max_flagged_fraction"),
        ({"customer_may_change": {"everything": True}}, "customer_may_change.everything"),
    ],
)
def test_bad_documents_name_the_field(change: dict[str, Any], param: str) -> None:
    with pytest.raises(PolicyError) as caught:
        validate_policy({**SHIPPED, **change})
    assert caught.value.param.startswith(param), caught.value


def test_the_stored_document_keeps_only_what_was_set() -> None:
    stored = validate_policy({"allowed_models": ["m"], "evaluation": {"num_harmful": "8"}})
    assert stored == {"allowed_models": ["m"], "evaluation": {"num_harmful": 8}}
    # A minimal policy is a real one: the worker's defaults fill in the rest.
    plan = plan_under(policy=stored)
    assert plan.evaluation.num_harmful == 8
    assert plan.thresholds == {}


def test_a_bad_policy_file_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({**SHIPPED, "gate": {"thresholds": {"max_harmful_score": 2}}}))
    with pytest.raises(ValueError, match=r"policy\.yaml: gate\.thresholds"):
        load_policy_file(path)
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_policy_file(path)


def test_the_repository_refuses_to_store_a_bad_version(session: Session) -> None:
    policies = PolicyRepository(session)
    before = policies.current_versioned()
    with pytest.raises(PolicyError):
        policies.set({"allowed_models": ["m"], "gate": {"on_failure": "release"}})
    assert policies.current_versioned() == before
