"""Request bodies for /v1/fine_tuning/jobs (OpenAI's create body plus Keel's `safety`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from api.input_guard import NO_CONTROL_CHARS_PATTERN, BoundedJson, SafeStr, strict_text
from db.policy_schema import SapKnobs
from safety_report import SafetyReport

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_INTEGRATIONS = 8
# Free-form objects Keel stores but does not interpret (bounded depth, size, no control bytes).
OpaqueObject = Annotated[dict[str, Any], BoundedJson]


def _metadata_schema(schema: dict[str, Any]) -> None:
    # pydantic writes the key rule as patternProperties, which leaves other keys unconstrained.
    schema.pop("patternProperties", None)
    schema["maxProperties"] = MAX_METADATA_PAIRS
    schema["propertyNames"] = {"maxLength": MAX_METADATA_KEY, "pattern": NO_CONTROL_CHARS_PATTERN}
    schema["additionalProperties"] = {
        "type": "string",
        "maxLength": MAX_METADATA_VALUE,
        "pattern": NO_CONTROL_CHARS_PATTERN,
    }


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(Strict):
    n_epochs: Literal["auto"] | Annotated[int, Field(ge=1, le=50)] = "auto"
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Literal["auto"] | Annotated[float, Field(gt=0, le=100)] = "auto"
    # Keel extensions (optional; provider policy supplies the defaults).
    lora_rank: Annotated[int, Field(ge=1, le=256)] | None = None
    lora_alpha: Annotated[int, Field(ge=1, le=1024)] | None = None
    lora_target_modules: (
        Annotated[
            list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]{1,64}$")]],
            Field(min_length=1, max_length=16),
        ]
        | None
    ) = None
    max_steps: Annotated[int, Field(ge=1, le=100_000)] | None = None
    max_length: Annotated[int, Field(ge=16, le=32_768)] | None = None
    # Data-parallel training processes (one per GPU); within the policy's training.max_processes.
    n_processes: Literal["auto"] | Annotated[int, Field(ge=1, le=1024)] | None = None


class SupervisedMethod(Strict):
    hyperparameters: Hyperparameters | None = None


class Method(Strict):
    # OpenAI's three names parse, so a `dpo` job gets 400 `unsupported_method` (service.py) rather
    # than a bare enum error; the document lists the one method Keel runs.
    type: Annotated[
        Literal["supervised", "dpo", "reinforcement"],
        Field(json_schema_extra={"enum": ["supervised"]}),
    ]
    supervised: SupervisedMethod | None = None
    dpo: OpaqueObject | None = None
    reinforcement: OpaqueObject | None = None


class SafetySpec(Strict):
    method: Literal["sap", "none"] | None = None
    # Checked field by field here (unknown knob or bad value: 400), not when the job starts.
    sap: SapKnobs | None = None
    mixer_ratio: Annotated[float, Field(ge=0, le=1)] | None = None


class JobCreate(Strict):
    model: Annotated[SafeStr, Field(min_length=1, max_length=200)]
    training_file: Annotated[SafeStr, Field(min_length=1, max_length=64)]
    validation_file: Annotated[SafeStr, Field(max_length=64)] | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    # The pattern inside the control-byte check: a NUL is still `invalid_characters`, and the
    # pattern stays in the OpenAPI document (outside, pydantic's JSON schema drops it).
    suffix: (
        Annotated[
            str,
            Field(max_length=64, pattern=r"^[A-Za-z0-9_.-]*$"),
            BeforeValidator(strict_text),
        ]
        | None
    ) = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    # Checked by _metadata_limits (OpenAI's wording and codes); the schema states the same bounds.
    metadata: (
        Annotated[dict[SafeStr, SafeStr], Field(json_schema_extra=_metadata_schema)] | None
    ) = None
    integrations: Annotated[list[OpaqueObject], Field(max_length=MAX_INTEGRATIONS)] | None = None
    safety: SafetySpec | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_PAIRS:
            raise ValueError(f"at most {MAX_METADATA_PAIRS} key-value pairs")
        for key, item in value.items():
            if len(key) > MAX_METADATA_KEY:
                raise ValueError(f"keys are at most {MAX_METADATA_KEY} characters")
            if len(item) > MAX_METADATA_VALUE:
                raise ValueError(f"values are at most {MAX_METADATA_VALUE} characters")
        return value


class SafetyReportObject(BaseModel):
    """GET /v1/fine_tuning/jobs/{id}/safety_report: the gate's outcome and the typed report.

    Served with ``response_model_exclude_unset``: the report as stored, keys it does not name
    included (safety_report's models are open), no null the worker never wrote.
    """

    object: Literal["fine_tuning.job.safety_report"]
    id: str
    job_id: str
    # "passed" | "failed" | "quarantined" | "error" (db.models.Verdict).
    verdict: str
    reasons: list[str]
    evaluated_sha256: str | None
    created_at: int | None
    released_at: int | None
    report: SafetyReport
