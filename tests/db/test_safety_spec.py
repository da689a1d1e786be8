"""db.safety_spec.resolve_safety: the one rule the API checks and the worker applies."""

from __future__ import annotations

from typing import Any

from db.policy_schema import PolicyDocument, parse_policy
from db.safety_spec import SafetyRequest, resolve_safety


def _policy(**sections: Any) -> PolicyDocument:
    return parse_policy({"allowed_models": ["m"], **sections})


STRICT = _policy(mixer={"min_ratio": 0.1, "default_ratio": 0.2, "max_ratio": 0.5})
OPEN = _policy(
    customer_may_change={"method": True, "sap_knobs": True, "mixer_ratio": True},
    mixer={"min_ratio": 0.1, "default_ratio": 0.2, "max_ratio": 0.5},
    sap={"defaults": {"rho": 2e-5, "probe_layers": [3]}},
)


def test_nothing_asked_takes_the_policy_values() -> None:
    resolved = resolve_safety(SafetyRequest(), STRICT)
    assert resolved.violations == ()
    assert resolved.stored() == {"method": "sap", "mixer_ratio": 0.2, "sap": {}}
    assert resolved.sap_enabled
    assert resolved.sap == {}


def test_every_refused_choice_is_listed_in_the_api_order_and_replaced() -> None:
    asked = SafetyRequest(method="none", sap={"rho": 1.0}, mixer_ratio=0.3)
    resolved = resolve_safety(asked, STRICT)
    assert [(v.param, v.code) for v in resolved.violations] == [
        ("safety.method", "safety_method_not_allowed"),
        ("safety.sap", "safety_knobs_not_allowed"),
        ("safety.mixer_ratio", "safety_knobs_not_allowed"),
    ]
    # What the worker applies when the policy tightened after the job was created.
    assert resolved.stored() == {"method": "sap", "mixer_ratio": 0.2, "sap": {}}


def test_allowed_choices_apply_over_the_policy_defaults() -> None:
    asked = SafetyRequest(method="none", sap={"rho": 1e-4}, mixer_ratio=0.4)
    resolved = resolve_safety(asked, OPEN)
    assert resolved.violations == ()
    assert not resolved.sap_enabled
    assert resolved.mixer_ratio == 0.4
    assert resolved.customer_sap == {"rho": 1e-4}
    # Policy defaults first, the customer's knobs over them.
    assert resolved.sap == {"rho": 1e-4, "probe_layers": [3]}


def test_a_ratio_outside_the_range_is_a_violation_and_is_clamped() -> None:
    low = resolve_safety(SafetyRequest(mixer_ratio=0.01), OPEN)
    assert [(v.param, v.code) for v in low.violations] == [
        ("safety.mixer_ratio", "invalid_mixer_ratio")
    ]
    assert "[0.1, 0.5]" in low.violations[0].message
    assert low.mixer_ratio == 0.1
    assert resolve_safety(SafetyRequest(mixer_ratio=0.9), OPEN).mixer_ratio == 0.5


def test_the_stored_column_round_trips() -> None:
    stored = resolve_safety(SafetyRequest(sap={"rho": 1e-4}, mixer_ratio=0.3), OPEN).stored()
    again = resolve_safety(SafetyRequest.from_stored(stored), OPEN)
    assert again.stored() == stored
    assert again.violations == ()
