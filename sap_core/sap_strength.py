"""How much SAP actually changed a job's updates, and the warning when it changed nothing.

SAP is only as strong as its probe: at the reference code's rho (2e-5) the probe on a 0.5B model
had norm ~1e-6 against residual-stream norms near 80 and the SAP update equalled SFT's to six
digits (docs/sap.md) — a job could be "trained with SAP" in name only. The trainer therefore logs,
on every direction-refresh step, ``sap_correction`` = ||g_SAP - g_SFT|| / ||g_SFT|| on the same
micro-batch, and every SAP step the probe's size relative to the activations it shifts
(``probe_rel_norm``). This module turns those metrics into a verdict for the job's events and its
safety report.

The floor: a correction below ``SAP_CORRECTION_FLOOR`` (1 % of the task gradient) is treated as a
no-op. Measured on Qwen2.5-Coder-0.5B (docs/sap.md): the reference defaults give ~1e-6; the
settings that moved the harmful score at all changed the update by several percent or more.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SAP_CORRECTION_FLOOR = 0.01
# Consecutive refresh steps below the floor before the warning: one low reading is noise (a batch
# whose task gradient happens to be large), several in a row are the setting.
WARN_AFTER_LOW_READINGS = 3


@dataclass(frozen=True)
class SapStrength:
    """Summary of a job's SAP strength, for its report.

    Attributes:
        measured_steps: refresh steps on which the correction was measured.
        median_correction: median ||g_SAP - g_SFT|| / ||g_SFT|| over those steps (None if none).
        median_probe_rel_norm: median ||V*|| / residual norm over SAP steps (None if none).
        floor: the floor the verdict used.
        below_floor: True when the median correction is below the floor (SAP was a no-op).
    """

    measured_steps: int
    median_correction: float | None
    median_probe_rel_norm: float | None
    floor: float
    below_floor: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "measured_steps": self.measured_steps,
            "median_correction": self.median_correction,
            "median_probe_rel_norm": self.median_probe_rel_norm,
            "floor": self.floor,
            "below_floor": self.below_floor,
        }


@dataclass
class SapStrengthMonitor:
    """Watches the trainer's per-step metrics; says once when SAP is not doing anything."""

    floor: float = SAP_CORRECTION_FLOOR
    warn_after: int = WARN_AFTER_LOW_READINGS
    corrections: list[float] = field(default_factory=list)
    probe_rel_norms: list[float] = field(default_factory=list)
    _low_run: int = 0
    _warned: bool = False

    def observe(self, metrics: Mapping[str, float]) -> str | None:
        """Record one step's metrics; return a warning message the first time SAP looks idle."""
        rel = metrics.get("probe_rel_norm")
        if rel is not None and math.isfinite(rel):
            self.probe_rel_norms.append(float(rel))
        correction = metrics.get("sap_correction")
        if correction is None or not math.isfinite(correction):
            return None
        self.corrections.append(float(correction))
        self._low_run = self._low_run + 1 if correction < self.floor else 0
        if self._warned or self._low_run < self.warn_after:
            return None
        self._warned = True
        return (
            f"SAP is changing the weight updates by less than {self.floor:.0%} "
            f"(||g_SAP - g_SFT|| / ||g_SFT|| = {correction:.2g} on the last {self._low_run} "
            "measured steps): at this probe setting SAP trains like plain fine-tuning"
        )

    def summary(self) -> SapStrength:
        corrections, rels = self.corrections, self.probe_rel_norms
        median = statistics.median(corrections) if corrections else None
        return SapStrength(
            measured_steps=len(corrections),
            median_correction=median,
            median_probe_rel_norm=statistics.median(rels) if rels else None,
            floor=self.floor,
            below_floor=median is not None and median < self.floor,
        )


def sap_strength_of(history: Iterable[Mapping[str, float]]) -> SapStrength:
    """The strength summary of a finished run from its per-step metrics (TrainResult.history)."""
    monitor = SapStrengthMonitor()
    for metrics in history:
        monitor.observe(metrics)
    return monitor.summary()
