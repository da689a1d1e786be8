"""Typed safety report: a pure-pydantic leaf that the API, the worker and sap_core all import.

`SafetyReport` (open models, unknown keys kept), `read_report` (versioned reader of stored
reports), `GateDecision` (the worker gate's outcome, separate from the evaluator's `Verdict`).
"""

from safety_report.models import (
    MODEL_KEYS,
    REPORT_SCHEMA_VERSION,
    BenignPrompts,
    GateDecision,
    JudgedPrompts,
    JudgeValidation,
    ModelResult,
    Models,
    Rate,
    SafetyReport,
    SampleSizes,
    SapStrengthSummary,
    Timing,
    Utility,
    Verdict,
)
from safety_report.reader import ReportFormatError, read_report

__all__ = [
    "MODEL_KEYS",
    "REPORT_SCHEMA_VERSION",
    "BenignPrompts",
    "GateDecision",
    "JudgeValidation",
    "JudgedPrompts",
    "ModelResult",
    "Models",
    "Rate",
    "ReportFormatError",
    "SafetyReport",
    "SampleSizes",
    "SapStrengthSummary",
    "Timing",
    "Utility",
    "Verdict",
    "read_report",
]
