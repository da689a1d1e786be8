"""The job page's loss chart: an inline SVG drawn on the server from the job's metrics events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

# The trainer's per-step loss (sap_core.trainer); the first of these present is charted.
LOSS_KEYS = ("task_loss", "loss", "train_loss")
WIDTH, HEIGHT, PAD = 640, 240, 40


@dataclass(frozen=True)
class LossPoint:
    step: float
    loss: float


def loss_points(event_data: Sequence[dict[str, Any] | None]) -> list[LossPoint]:
    """(step, loss) from metrics events' data, in step order, one point per step."""
    by_step: dict[float, float] = {}
    for data in event_data:
        if not data or not isinstance(data.get("step"), int | float):
            continue
        for key in LOSS_KEYS:
            value = data.get(key)
            if isinstance(value, int | float) and value == value:  # NaN is not drawn
                by_step[float(data["step"])] = float(value)
                break
    return [LossPoint(step, loss) for step, loss in sorted(by_step.items())]


def loss_chart_svg(points: Sequence[LossPoint]) -> Markup:
    """A self-contained SVG (scales to its container's width); empty when there is no point."""
    if not points:
        return Markup("")
    steps = [p.step for p in points]
    losses = [p.loss for p in points]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(losses), max(losses)
    x_span = (x1 - x0) or 1.0
    y_span = (y1 - y0) or 1.0

    def x(step: float) -> float:
        return PAD + (step - x0) / x_span * (WIDTH - 2 * PAD)

    def y(loss: float) -> float:
        return HEIGHT - PAD - (loss - y0) / y_span * (HEIGHT - 2 * PAD)

    line = " ".join(f"{x(p.step):.1f},{y(p.loss):.1f}" for p in points)
    dots = "".join(
        f'<circle cx="{x(p.step):.1f}" cy="{y(p.loss):.1f}" r="3"><title>step {p.step:g}: '
        f"loss {p.loss:.4g}</title></circle>"
        for p in points
    )
    # Only numbers are formatted into this markup: nothing from the customer reaches it.
    svg = (
        f'<svg id="loss-chart" role="img" aria-label="Training loss by step" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet">'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        f'stroke="#888"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>'
        f'<text x="{PAD}" y="{PAD - 10}" font-size="12">loss {y1:.4g}</text>'
        f'<text x="{PAD}" y="{HEIGHT - 8}" font-size="12">step {x0:g}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" font-size="12" text-anchor="end">'
        f"step {x1:g} (loss {losses[-1]:.4g})</text>"
        f'<polyline fill="none" stroke="#4c6ef5" stroke-width="2" points="{line}"/>'
        f'<g fill="#4c6ef5">{dots}</g></svg>'
    )
    return Markup(svg)  # noqa: S704 - numbers only, see above
