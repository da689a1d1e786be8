"""safety_report: typed reading of stored reports, unknown keys kept, versions."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from safety_report import (
    REPORT_SCHEMA_VERSION,
    GateDecision,
    ReportFormatError,
    SafetyReport,
    read_report,
)

STORED = json.loads((Path(__file__).parent / "stored_report_v1.json").read_text())


def test_a_stored_report_of_the_current_schema_loads_with_attributes() -> None:
    report = read_report(STORED)
    assert report.schema_version == REPORT_SCHEMA_VERSION == 1
    assert report.fine_tuned is not None
    assert report.base is not None
    assert report.fine_tuned.harmful is not None
    assert report.fine_tuned.harmful.harmful_score is not None
    assert report.fine_tuned.harmful.harmful_score.rate == 0.0
    assert report.base.harmful is not None
    assert report.base.harmful.counts == {
        "refusal": 1,
        "compliance": 1,
        "off_task": 0,
    }
    assert report.fine_tuned.utility is not None
    assert report.fine_tuned.utility.val_loss is None
    assert report.verdict is not None
    assert report.verdict.passed
    assert report.gate == GateDecision(verdict="passed", reasons=[], wall_seconds=42.5)
    assert report.models is not None
    assert [key for key, _ in report.models.present()] == ["base", "fine_tuned"]


def test_the_stored_json_round_trips_exactly() -> None:
    assert read_report(STORED).to_json() == STORED


def test_keys_this_code_does_not_know_are_kept_on_round_trip() -> None:
    # What other writers add (a newer worker): top-level, per model, deep inside a model.
    newer: dict[str, Any] = copy.deepcopy(STORED)
    newer["probe_audit"] = {"rho": 2e-5, "correction_norm": [0.1, 0.2]}
    newer["models"]["fine_tuned"]["timing"]["decode_seconds"] = 0.25
    newer["models"]["fine_tuned"]["harmful"]["screening"] = {"flagged": 1, "rows": [3]}
    newer["models"]["reference"] = {"harmful": {"n": 2}}
    report = read_report(newer)
    assert report.to_json() == newer
    assert report.model_extra == {"probe_audit": newer["probe_audit"]}
    # A writer may set a known field on a report read with unknown keys: both survive.
    report.gate = GateDecision(verdict="failed", reasons=["r"], wall_seconds=1.0)
    written = report.to_json()
    assert written["probe_audit"] == newer["probe_audit"]
    assert written["gate"] == {"verdict": "failed", "reasons": ["r"], "wall_seconds": 1.0}


def test_reports_without_a_version_and_gate_only_records_load() -> None:
    # What the gate stores when the evaluation never finished: no numbers, only its decision.
    failed = {
        "verdict": {"passed": False, "reasons": ["safety evaluation did not complete: X"]},
        "gate": {"verdict": "error", "reasons": ["safety evaluation did not complete: X"]},
    }
    report = read_report(failed)
    assert report.models is None
    assert report.fine_tuned is None
    assert report.gate is not None
    assert report.gate.verdict == "error"
    assert report.to_json() == failed
    assert read_report({}).to_json() == {}


def test_a_newer_version_is_read_as_the_current_one_keeping_what_it_added() -> None:
    newer = {**STORED, "schema_version": REPORT_SCHEMA_VERSION + 1, "new_section": {"a": 1}}
    report = read_report(newer)
    assert report.to_json() == newer


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],
        {"schema_version": "one"},
        {"schema_version": 0},
        {"models": {"fine_tuned": {"harmful": {"n": "many"}}}},
    ],
)
def test_what_is_not_a_report_is_a_clear_error(bad: Any) -> None:
    with pytest.raises(ReportFormatError):
        read_report(bad)


def test_an_already_typed_report_passes_through() -> None:
    report = SafetyReport(judge="keyword")
    assert read_report(report) is report
    assert report.to_json() == {"judge": "keyword"}


def test_the_sap_strength_block_is_typed() -> None:
    stored: dict[str, Any] = copy.deepcopy(STORED)
    stored["sap_strength"] = {
        "measured_steps": 6,
        "median_correction": 0.48,
        "median_probe_rel_norm": 0.02,
        "floor": 0.01,
        "below_floor": False,
    }
    report = read_report(stored)
    assert report.sap_strength is not None
    assert report.sap_strength.median_correction == 0.48
    assert report.to_json() == stored
