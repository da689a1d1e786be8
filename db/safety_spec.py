"""The customer's `safety` block under the provider policy: one pure rule, two users.

The API calls `resolve_safety` at create time and refuses the job on the first violation (a 400
naming the field); the worker calls it again when the job starts, because the policy may have
tightened since, and applies what it resolves (a choice no longer allowed falls back to the
policy's value, a ratio is clamped into the policy's range) without failing the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from db.policy_schema import PolicyDocument, SapKnobs

DEFAULT_METHOD = "sap"


@dataclass(frozen=True)
class SafetyRequest:
    """What the customer asked for (None / empty: the policy decides)."""

    method: str | None = None
    sap: dict[str, Any] = field(default_factory=dict)
    mixer_ratio: float | None = None

    @classmethod
    def from_stored(cls, safety: dict[str, Any]) -> SafetyRequest:
        """The request from a job's stored `safety` column (what the API resolved)."""
        ratio = safety.get("mixer_ratio")
        return cls(
            method=safety.get("method"),
            sap=dict(safety.get("sap") or {}),
            mixer_ratio=None if ratio is None else float(ratio),
        )


@dataclass(frozen=True)
class SafetyViolation:
    """A customer choice the policy does not allow; `param`/`code` are the API's error fields."""

    param: str
    code: str
    message: str


@dataclass(frozen=True)
class ResolvedSafety:
    method: str
    mixer_ratio: float
    # The customer's SAP knobs that apply (empty when the policy does not let them change any).
    customer_sap: dict[str, Any]
    # The SAP settings to train with: the policy's defaults, then the customer's knobs.
    sap: dict[str, Any]
    violations: tuple[SafetyViolation, ...] = ()

    @property
    def sap_enabled(self) -> bool:
        return self.method == "sap"

    def stored(self) -> dict[str, Any]:
        """The job's `safety` column: what the customer's choices resolved to."""
        return {"method": self.method, "mixer_ratio": self.mixer_ratio, "sap": self.customer_sap}


def resolve_safety(request: SafetyRequest, policy: PolicyDocument) -> ResolvedSafety:
    """The safety settings a job runs with; the policy wins over the customer.

    Every refused choice is listed in `violations` (in the order the API reports them) and
    replaced by the policy's value; a ratio outside [min_ratio, max_ratio] is clamped.
    """
    may_change = policy.customer_may_change
    mixer = policy.mixer
    violations: list[SafetyViolation] = []

    method = request.method or DEFAULT_METHOD
    if method != DEFAULT_METHOD and not may_change.method:
        violations.append(
            SafetyViolation(
                "safety.method",
                "safety_method_not_allowed",
                "The provider policy does not allow changing the safety method.",
            )
        )
        method = DEFAULT_METHOD

    customer_sap = dict(request.sap)
    if customer_sap and not may_change.sap_knobs:
        violations.append(
            SafetyViolation(
                "safety.sap",
                "safety_knobs_not_allowed",
                "The provider policy does not allow changing SAP settings.",
            )
        )
        customer_sap = {}

    ratio = request.mixer_ratio
    if ratio is not None and not may_change.mixer_ratio:
        violations.append(
            SafetyViolation(
                "safety.mixer_ratio",
                "safety_knobs_not_allowed",
                "The provider policy does not allow changing the mixer ratio.",
            )
        )
        ratio = None
    if ratio is None:
        ratio = mixer.default_ratio
    elif not mixer.min_ratio <= ratio <= mixer.max_ratio:
        violations.append(
            SafetyViolation(
                "safety.mixer_ratio",
                "invalid_mixer_ratio",
                f"safety.mixer_ratio must be within [{mixer.min_ratio}, {mixer.max_ratio}].",
            )
        )
    ratio = min(max(float(ratio), mixer.min_ratio), mixer.max_ratio)

    sap = {**policy.sap.defaults.model_dump(mode="json", exclude_none=True), **customer_sap}
    return ResolvedSafety(
        method=method,
        mixer_ratio=ratio,
        customer_sap=customer_sap,
        sap=sap,
        violations=tuple(violations),
    )


def sap_knobs_json(knobs: SapKnobs | None) -> dict[str, Any]:
    """A customer's typed SAP knobs as they are stored (JSON, unset knobs left out)."""
    return knobs.model_dump(mode="json", exclude_none=True) if knobs else {}
