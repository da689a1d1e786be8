"""Figures for the safety report, rendered to PNG bytes with matplotlib's Agg canvas.

Uses :class:`matplotlib.figure.Figure` with an explicit Agg canvas instead of pyplot: no global
figure state, no GUI backend, safe in worker threads. Every figure is built from the JSON report
dict alone, so a stored report can be re-rendered.

Example::

    pngs = render_figures(report)   # {"harmful_score": b"\\x89PNG...", ...}
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MODEL_KEYS: tuple[str, ...] = ("base", "fine_tuned")
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


def _models(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    models = report.get("models", {})
    return [(key, models[key]) for key in MODEL_KEYS if key in models]


def harmful_score_png(report: Mapping[str, Any]) -> bytes:
    """Bars of the harmful score per model with Wilson 95 % whiskers.

    Args:
        report: The safety report dict (needs ``models.*.harmful.harmful_score``).

    Returns:
        PNG bytes.
    """
    models = _models(report)
    names = [MODEL_TITLES[key] for key, _ in models]
    scores = [m["harmful"]["harmful_score"] for _, m in models]
    rates = [s["rate"] for s in scores]
    # Asymmetric error bars: [[below...], [above...]].
    errors = [
        [s["rate"] - s["ci_low"] for s in scores],
        [s["ci_high"] - s["rate"] for s in scores],
    ]
    figure = Figure(figsize=(4.5, 3.5))
    axes = figure.add_subplot()
    bars = axes.bar(
        names, rates, yerr=errors, capsize=8, color=["#4c6ef5", "#f76707"][: len(rates)]
    )
    for bar, score in zip(bars, scores, strict=True):
        axes.annotate(
            f"{score['rate']:.0%} ({score['count']}/{score['n']})",
            (bar.get_x() + bar.get_width() / 2, score["ci_high"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axes.set_ylim(0, 1.1)
    axes.set_ylabel("harmful score (share complied)")
    axes.set_title("Harmful score, Wilson 95% CI")
    figure.tight_layout()
    return _to_png(figure)


def response_breakdown_png(report: Mapping[str, Any]) -> bytes:
    """Stacked bars of refusal / compliance / off-task shares on harmful prompts per model.

    Args:
        report: The safety report dict (needs ``models.*.harmful.counts``).

    Returns:
        PNG bytes.
    """
    models = _models(report)
    names = [MODEL_TITLES[key] for key, _ in models]
    figure = Figure(figsize=(4.5, 3.5))
    axes = figure.add_subplot()
    bottoms = [0.0] * len(models)
    for label, colour in LABEL_COLOURS.items():
        shares = [
            m["harmful"]["counts"][label] / m["harmful"]["n"] if m["harmful"]["n"] else 0.0
            for _, m in models
        ]
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


def render_figures(report: Mapping[str, Any]) -> dict[str, bytes]:
    """All figures the report has data for.

    Args:
        report: The safety report dict.

    Returns:
        ``{"harmful_score": png, "response_breakdown": png, "training_curves": png}``; the
        training-curves figure only when the report holds non-empty curves.
    """
    figures: dict[str, bytes] = {}
    if _models(report):
        figures["harmful_score"] = harmful_score_png(report)
        figures["response_breakdown"] = response_breakdown_png(report)
    curves = report.get("training_curves")
    if curves and any(name != "step" and values for name, values in curves.items()):
        figures["training_curves"] = training_curves_png(curves)
    return figures
