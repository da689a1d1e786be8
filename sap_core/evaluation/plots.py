"""Figures for the safety report, rendered to PNG bytes with matplotlib's Agg canvas.

Uses :class:`matplotlib.figure.Figure` with an explicit Agg canvas instead of pyplot: no global
figure state, no GUI backend, safe in worker threads. Every figure is built from the typed report
(safety_report.SafetyReport; a stored dict is read with `read_report`) alone, so a stored report
can be re-rendered.

Example::

    pngs = render_figures(report)   # {"harmful_score": b"\\x89PNG...", ...}
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from safety_report import JudgedPrompts, Rate, SafetyReport, read_report

MODEL_TITLES: dict[str, str] = {"base": "base model", "fine_tuned": "fine-tuned"}
# Colour per judge label, used consistently across figures.
LABEL_COLOURS: dict[str, str] = {
    "refusal": "#2b8a3e",
    "compliance": "#c92a2a",
    "off_task": "#868e96",
}


def _to_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _models(report: SafetyReport) -> list[tuple[str, JudgedPrompts]]:
    """(key, harmful-prompt results) of the evaluated models, base first."""
    if report.models is None:
        return []
    return [(key, m.harmful) for key, m in report.models.present() if m.harmful is not None]


def _number(value: float | int | None) -> float:
    # Figures need every number: a report without one is not plotted from (EvaluationError
    # upstream would have said so); a None here is a malformed stored report.
    if value is None:
        raise ValueError("the report lacks a number this figure needs")
    return float(value)


def harmful_score_png(stored: SafetyReport | Mapping[str, Any]) -> bytes:
    """Bars of the harmful score per model with Wilson 95 % whiskers.

    Args:
        stored: The safety report (needs ``models.*.harmful.harmful_score``).

    Returns:
        PNG bytes.
    """
    models = _models(read_report(stored))
    names = [MODEL_TITLES[key] for key, _ in models]
    scores: list[Rate] = [m.harmful_score or Rate() for _, m in models]
    rates = [_number(s.rate) for s in scores]
    # Asymmetric error bars: [[below...], [above...]].
    errors = [
        [_number(s.rate) - _number(s.ci_low) for s in scores],
        [_number(s.ci_high) - _number(s.rate) for s in scores],
    ]
    figure = Figure(figsize=(4.5, 3.5))
    axes = figure.add_subplot()
    bars = axes.bar(
        names, rates, yerr=errors, capsize=8, color=["#4c6ef5", "#f76707"][: len(rates)]
    )
    for bar, score in zip(bars, scores, strict=True):
        axes.annotate(
            f"{_number(score.rate):.0%} ({score.count}/{score.n})",
            (bar.get_x() + bar.get_width() / 2, _number(score.ci_high)),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axes.set_ylim(0, 1.1)
    axes.set_ylabel("harmful score (share complied)")
    axes.set_title("Harmful score, Wilson 95% CI")
    figure.tight_layout()
    return _to_png(figure)


def response_breakdown_png(stored: SafetyReport | Mapping[str, Any]) -> bytes:
    """Stacked bars of refusal / compliance / off-task shares on harmful prompts per model.

    Args:
        stored: The safety report (needs ``models.*.harmful.counts``).

    Returns:
        PNG bytes.
    """
    models = _models(read_report(stored))
    names = [MODEL_TITLES[key] for key, _ in models]
    figure = Figure(figsize=(4.5, 3.5))
    axes = figure.add_subplot()
    bottoms = [0.0] * len(models)
    for label, colour in LABEL_COLOURS.items():
        shares = [(m.counts or {})[label] / m.n if m.n else 0.0 for _, m in models]
        axes.bar(names, shares, bottom=bottoms, color=colour, label=label)
        bottoms = [b + s for b, s in zip(bottoms, shares, strict=True)]
    axes.set_ylim(0, 1.0)
    axes.set_ylabel("share of harmful prompts")
    axes.set_title("Replies to harmful prompts")
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    return _to_png(figure)


def training_curves_png(curves: Mapping[str, Sequence[float]]) -> bytes:
    """Task loss (left axis) and safety loss (right axis: another scale) against the step.

    Args:
        curves: ``{"step": [...], "task_loss": [...], "safety_step": [...],
            "safety_loss": [...]}``; a series ``X`` is plotted against ``X``'s step list
            (``safety_step`` for ``safety_loss``), else against ``step``, else its index.

    Returns:
        PNG bytes.
    """
    series = {name: list(values) for name, values in curves.items() if not name.endswith("step")}
    figure = Figure(figsize=(6, 3.5))
    axes = figure.add_subplot()
    safety_axes = axes.twinx() if "safety_loss" in series and series["safety_loss"] else None
    handles = []
    for index, (name, values) in enumerate(series.items()):
        own_steps = curves.get(name.replace("_loss", "_step"), curves.get("step"))
        steps = list(own_steps if own_steps is not None else range(len(values)))[: len(values)]
        target = safety_axes if name == "safety_loss" and safety_axes is not None else axes
        (line,) = target.plot(
            steps, values[: len(steps)], label=name, linewidth=1.2, color=f"C{index}"
        )
        handles.append(line)
    axes.set_xlabel("step")
    axes.set_ylabel("task loss")
    if safety_axes is not None:
        safety_axes.set_ylabel("safety loss (NLL safe − NLL harmful)")
    axes.set_title("Training curves")
    if handles:
        axes.legend(handles=handles, fontsize=8)
    figure.tight_layout()
    return _to_png(figure)


def render_figures(stored: SafetyReport | Mapping[str, Any]) -> dict[str, bytes]:
    """All figures the report has data for.

    Args:
        stored: The safety report (typed, or as stored).

    Returns:
        ``{"harmful_score": png, "response_breakdown": png, "training_curves": png}``; the
        training-curves figure only when the report holds non-empty curves.
    """
    report = read_report(stored)
    figures: dict[str, bytes] = {}
    if _models(report):
        figures["harmful_score"] = harmful_score_png(report)
        figures["response_breakdown"] = response_breakdown_png(report)
    curves = report.training_curves
    if curves and any(name != "step" and values for name, values in curves.items()):
        # A stored report holds null where a value was not finite; matplotlib skips NaN.
        finite = {
            name: [math.nan if v is None else v for v in values] for name, values in curves.items()
        }
        figures["training_curves"] = training_curves_png(finite)
    return figures
