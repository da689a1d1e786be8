"""SapStrengthMonitor: the job-level verdict on whether SAP changed the updates at all."""

from __future__ import annotations

import math

import pytest

from sap_core.sap_strength import SAP_CORRECTION_FLOOR, SapStrengthMonitor


def test_warns_once_after_consecutive_low_corrections() -> None:
    monitor = SapStrengthMonitor(floor=0.01, warn_after=3)
    steps = [
        {"sap_correction": 1e-6, "probe_rel_norm": 1e-7},
        {"probe_rel_norm": 1e-7},  # not a refresh step: no reading, the run continues
        {"sap_correction": 2e-6, "probe_rel_norm": 1e-7},
    ]
    assert [monitor.observe(m) for m in steps] == [None, None, None]
    warning = monitor.observe({"sap_correction": 3e-6, "probe_rel_norm": 1e-7})
    assert warning is not None
    assert "less than 1%" in warning
    assert monitor.observe({"sap_correction": 1e-6}) is None  # said once
    summary = monitor.summary()
    assert summary.measured_steps == 4
    assert summary.below_floor
    assert summary.median_correction == pytest.approx(1.5e-6)
    assert summary.median_probe_rel_norm == pytest.approx(1e-7)


def test_a_strong_reading_resets_the_run_and_a_strong_job_is_not_below_the_floor() -> None:
    monitor = SapStrengthMonitor(floor=0.01, warn_after=2)
    readings = [1e-3, 0.2, 1e-3, 0.3, 0.15]
    assert all(monitor.observe({"sap_correction": r}) is None for r in readings)
    summary = monitor.summary()
    assert not summary.below_floor
    assert summary.median_correction == pytest.approx(0.15)
    assert summary.as_dict()["floor"] == 0.01


def test_no_readings_means_no_verdict() -> None:
    monitor = SapStrengthMonitor()
    assert monitor.observe({"task_loss": 1.0, "sap_correction": math.nan}) is None
    summary = monitor.summary()
    assert summary.measured_steps == 0
    assert summary.median_correction is None
    assert not summary.below_floor
    assert summary.floor == SAP_CORRECTION_FLOOR
