"""The safety report's types: what the evaluator writes, the gate decides on, the API serves.

Every model is *open* (``extra="allow"``): a key this module does not name yet (a new timing
field, ``sap_strength``, screening details) is kept as it was and written back unchanged, so a
newer worker's report passes through an older API intact, and a field can be added here after
the writer without a data migration. Every named field is optional: a report is also what is
stored when the evaluation failed (only the gate's decision), and readers must fail closed on a
missing number rather than crash -- the gate withholds an adapter whose report lacks what the
policy checks.

Serialise with `SafetyReport.to_json()`: it writes the keys that were set (built or read), so a
stored report round-trips byte for byte and no reader sees a ``null`` the writer never wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

# The report layout this package reads and the evaluator writes (see reader.read_report).
REPORT_SCHEMA_VERSION = 1

# The evaluated models, in report order.
MODEL_KEYS: tuple[str, ...] = ("base", "fine_tuned")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The JSON object as written: set fields and unknown keys, nothing invented."""
        return self.model_dump(mode="json", exclude_unset=True)


class Rate(_Open):
    """A counted share with its Wilson 95 % interval (sap_core.evaluation.stats.Proportion)."""

    count: int | None = None
    n: int | None = None
    rate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


class JudgedPrompts(_Open):
    """The judge's labels of the replies to held-out harmful prompts (one framing)."""

    n: int | None = None
    # Judge label ("refusal" / "compliance" / "off_task") -> replies with that label.
    counts: dict[str, int] | None = None
    harmful_score: Rate | None = None
    refusal_rate: Rate | None = None
    off_task_rate: Rate | None = None
    # Prompt id -> label; the replies themselves are never stored.
    labels: dict[str, str] | None = None


class BenignPrompts(_Open):
    """The judge's labels of the replies to benign look-alike prompts."""

    n: int | None = None
    counts: dict[str, int] | None = None
    over_refusal: Rate | None = None


class Utility(_Open):
    val_loss: float | None = None
    val_tokens: int | None = None
    exact_match: Rate | None = None
    final_number_match: Rate | None = None


class Timing(_Open):
    generated_prompts: int | None = None
    generation_seconds: float | None = None
    prompts_per_second: float | None = None
    # Beside generation: the judge's and the utility pass's seconds, and whether (and how long)
    # the adapter was merged into a copy of the weights for the evaluation.
    judge_seconds: float | None = None
    utility_seconds: float | None = None
    adapter_merged: bool | None = None
    merge_seconds: float | None = None


class ModelResult(_Open):
    """One evaluated model: harmful prompts (bare, and in the customer's framing), benign
    look-alikes, utility and how long generation took."""

    harmful: JudgedPrompts | None = None
    harmful_task_format: JudgedPrompts | None = None
    benign: BenignPrompts | None = None
    utility: Utility | None = None
    timing: Timing | None = None


class Models(_Open):
    base: ModelResult | None = None
    fine_tuned: ModelResult | None = None

    def present(self) -> Iterator[tuple[str, ModelResult]]:
        """(key, result) of the models the report holds, base first."""
        for key in MODEL_KEYS:
            result = getattr(self, key)
            if result is not None:
                yield key, result


class SampleSizes(_Open):
    harmful: int | None = None
    benign: int | None = None
    utility: int | None = None


class Verdict(_Open):
    """The policy's verdict on the numbers (sap_core.evaluation.policy.decide)."""

    passed: bool = False
    reasons: list[str] = []


class JudgeValidation(_Open):
    agreement: float | None = None
    n: int | None = None
    confusion: dict[str, Any] | None = None
    # Wall seconds the judge took on the hand-labelled set.
    seconds: float | None = None


class GateDecision(_Open):
    """What the worker's gate did with the adapter: separate from the evaluator's verdict,
    which it extends with what only the gate knows (an evaluation that never finished, bytes
    that changed after evaluation, quarantine instead of fail)."""

    verdict: str
    reasons: list[str] = []
    wall_seconds: float | None = None


class SapStrengthSummary(_Open):
    """How much SAP changed the job's updates (sap_core.sap_strength; docs/sap.md)."""

    measured_steps: int = 0
    # Median ||g_SAP - g_SFT|| / ||g_SFT|| over the measured direction-refresh steps.
    median_correction: float | None = None
    # Median ||V*|| / residual norm over SAP steps.
    median_probe_rel_norm: float | None = None
    floor: float | None = None
    below_floor: bool = False


class SafetyReport(_Open):
    """The JSON safety report of one job (docs/architecture.md, "Types at the seams")."""

    schema_version: int | None = None
    judge: str | None = None
    config: dict[str, Any] | None = None
    seeds: dict[str, int] | None = None
    sample_sizes: SampleSizes | None = None
    max_new_tokens: int | None = None
    harmful_prompt_ids: list[str] | None = None
    utility_categorical: bool | None = None
    # How answers were scored: "exact_match", "final_number_match" or None (val loss only).
    utility_answer_rule: str | None = None
    models: Models | None = None
    base_from_cache: bool | None = None
    benign_samples: list[dict[str, Any]] | None = None
    # Series name -> values; a non-finite value is stored as null (JSON has no NaN).
    training_curves: dict[str, list[float | None]] | None = None
    mix_report: dict[str, Any] | None = None
    # The thresholds the verdict was decided with (PolicyThresholds as a dict).
    policy: dict[str, float | None] | None = None
    verdict: Verdict | None = None
    judge_validation: JudgeValidation | None = None
    # Figure name -> base64 PNG.
    figures: dict[str, str] | None = None
    # Added by the worker: the sha256 of the adapter zip that was evaluated, and where the
    # utility conversations came from ("validation_file" / "training_sample").
    evaluated_adapter_sha256: str | None = None
    utility_source: str | None = None
    # Only for SAP jobs: the per-job strength summary (None for plain fine-tuning).
    sap_strength: SapStrengthSummary | None = None
    gate: GateDecision | None = None

    def model(self, key: str) -> ModelResult | None:
        """The result of model ``key`` ("base" / "fine_tuned"), None when not evaluated."""
        return getattr(self.models, key, None) if self.models is not None else None

    @property
    def base(self) -> ModelResult | None:
        return self.model("base")

    @property
    def fine_tuned(self) -> ModelResult | None:
        return self.model("fine_tuned")
