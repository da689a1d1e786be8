"""HTML page for a stored safety report (`GET .../safety_report?format=html`).

Takes the typed report (safety_report.SafetyReport; a stored dict is read with `read_report`,
figures already inside as base64 PNGs) and returns a self-contained page: no scripts, no
external assets. Every string from the report is escaped. A number the report lacks shows as a
dash, never an error: stored reports of every version render.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from safety_report import (
    JudgeValidation,
    ModelResult,
    Models,
    Rate,
    SafetyReport,
    SapStrengthSummary,
    read_report,
)

T = TypeVar("T")

MODEL_TITLES = {"base": "Base model", "fine_tuned": "Fine-tuned model"}
FIGURE_TITLES = {
    "harmful_score": "Harmful score (Wilson 95% CI)",
    "response_breakdown": "Refusal / compliance / off-task on harmful prompts",
    "training_curves": "Training curves",
}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.passed { color: #1a6b2f; font-weight: bold; }
.failed { color: #a11; font-weight: bold; }
figure { display: inline-block; margin: 0 1rem 1rem 0; }
figure img { border: 1px solid #ddd; }
pre { white-space: pre-wrap; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


class _Missing(ValueError):
    """A section or number the report lacks: its table cell shows a dash."""


def _need(value: T | None) -> T:
    if value is None:
        raise _Missing
    return value


def _pct(prop: Rate | None) -> str:
    if prop is None:
        return "–"
    low, high = float(_need(prop.ci_low)), float(_need(prop.ci_high))
    return (
        f"{float(_need(prop.rate)):.1%} [{low:.1%}, {high:.1%}]"
        f" ({int(_need(prop.count))}/{int(_need(prop.n))})"
    )


def _png_data_uri(encoded: Any) -> str | None:
    # Only well-formed base64 PNGs are embedded: a stored report is data, not markup.
    if not isinstance(encoded, str):
        return None
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    return f"data:image/png;base64,{encoded}"


def _verdict_html(report: SafetyReport) -> str:
    verdict = report.verdict
    if verdict is None or not verdict.to_json():
        return "<p>Policy verdict: <strong>not evaluated</strong></p>"
    css, word = ("passed", "PASSED") if verdict.passed else ("failed", "FAILED")
    reasons = "".join(f"<li>{_e(r)}</li>" for r in verdict.reasons)
    return f'<p id="verdict">Policy verdict: <span class="{css}">{word}</span></p>' + (
        f"<ul>{reasons}</ul>" if reasons else ""
    )


def _metrics_table(models: Models | None) -> str:
    present = dict(models.present()) if models is not None else {}
    keys = list(present)
    Cell = Callable[[ModelResult], str]
    rows: list[tuple[str, Cell]] = [
        ("Harmful score", lambda m: _pct(_need(m.harmful).harmful_score)),
        ("Refusal rate", lambda m: _pct(_need(m.harmful).refusal_rate)),
        ("Off-task rate", lambda m: _pct(_need(m.harmful).off_task_rate)),
        ("Over-refusal (benign)", lambda m: _pct(_need(m.benign).over_refusal)),
        ("Validation loss", lambda m: _e(_need(m.utility).val_loss or "–")),
        ("Exact match", lambda m: _pct(_need(m.utility).exact_match)),
        (
            "Final-number match",
            lambda m: _pct(_need(m.utility).final_number_match),
        ),
        (
            "Prompts / second",
            lambda m: _e(_need(m.timing).prompts_per_second or "–"),
        ),
    ]
    if any(present[k].harmful_task_format is not None for k in keys):
        # Only when measured: the harmful prompts asked in the customer's own framing.
        rows[3:3] = [
            (
                "Harmful score in the customer's format",
                lambda m: _pct(_need(m.harmful_task_format).harmful_score),
            ),
            (
                "Refusal rate in the customer's format",
                lambda m: _pct(_need(m.harmful_task_format).refusal_rate),
            ),
        ]
    head = "".join(f"<th>{_e(MODEL_TITLES[k])}</th>" for k in keys)
    body = []
    for title, cell in rows:
        cells = []
        for key in keys:
            try:
                cells.append(f"<td>{cell(present[key])}</td>")
            except (TypeError, ValueError):  # _Missing: a section or number the report lacks
                cells.append("<td>–</td>")
        body.append(f"<tr><th>{_e(title)}</th>{''.join(cells)}</tr>")
    return f'<table id="metrics"><tr><th>Metric</th>{head}</tr>{"".join(body)}</table>'


def _figures_html(figures: Mapping[str, Any]) -> str:
    parts = []
    for name, encoded in figures.items():
        uri = _png_data_uri(encoded)
        if uri is None:
            continue
        title = FIGURE_TITLES.get(name, name)
        parts.append(
            f'<figure id="figure-{_e(name)}"><img src="{uri}" alt="{_e(title)}">'
            f"<figcaption>{_e(title)}</figcaption></figure>"
        )
    return "".join(parts) or "<p>No figures.</p>"


def _samples_html(samples: Any) -> str:
    if not samples:
        return "<p>No samples.</p>"
    columns = [k for k in ("prompt", "base_reply", "fine_tuned_reply") if k in samples[0]]
    head = "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in columns)
    rows = "".join(
        "<tr>" + "".join(f"<td><pre>{_e(s.get(c, ''))}</pre></td>" for c in columns) + "</tr>"
        for s in samples
    )
    return f'<table id="benign-samples"><tr>{head}</tr>{rows}</table>'


def _judge_validation_text(validation: JudgeValidation | None) -> str | None:
    """ "0.923 of 39; judged refusal/compliance/off_task: refusal 12/0/1, …" or None."""
    if validation is None or validation.agreement is None:
        return None
    text = f"{validation.agreement} of {validation.n if validation.n is not None else '?'}"
    confusion = validation.confusion
    if confusion:  # reports written before the confusion was stored have none
        order = list(next(iter(confusion.values())))
        rows = ", ".join(
            f"{true} {'/'.join(str(row.get(p, 0)) for p in order)}"
            for true, row in confusion.items()
        )
        text += f"; hand label → judged {'/'.join(order)}: {rows}"
    return text


def _sap_strength_text(strength: SapStrengthSummary | None) -> str | None:
    """ "SAP changed the weight updates by 4.80 % of the task gradient (median of 6 …)" """
    if strength is None or strength.median_correction is None:
        return None
    text = (
        f"SAP changed the weight updates by {strength.median_correction:.2%} of the task "
        f"gradient (median of {strength.measured_steps} measured steps; "
        f"floor {strength.floor or 0:.0%})"
    )
    if strength.median_probe_rel_norm is not None:
        text += f"; probe norm {strength.median_probe_rel_norm:.2%} of the residual norm"
    if strength.below_floor:
        text += " — BELOW THE FLOOR: this job trained like plain fine-tuning"
    return text


def _settings_html(report: SafetyReport) -> str:
    sizes = report.sample_sizes
    items = [
        ("SAP strength", _sap_strength_text(report.sap_strength)),
        ("Judge", report.judge),
        ("Judge agreement (hand-labelled set)", _judge_validation_text(report.judge_validation)),
        ("Max new tokens", report.max_new_tokens),
        ("Sample sizes", sizes.to_json() if sizes is not None else None),
        ("Seeds", report.seeds),
    ]
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return f'<table id="settings">{rows}</table>'


def render_report_html(
    stored: SafetyReport | Mapping[str, Any], title: str = "Keel safety report"
) -> str:
    """Render a safety report (typed, or as stored) as a self-contained HTML page."""
    report = read_report(stored)
    mix = report.mix_report
    mix_html = f'<pre id="mix-report">{_e(_pretty(mix))}</pre>' if mix else "<p>No mix report.</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f"{_verdict_html(report)}"
        f"<h2>Results</h2>{_metrics_table(report.models)}"
        f"<h2>Figures</h2>{_figures_html(report.figures or {})}"
        f"<h2>Settings</h2>{_settings_html(report)}"
        f"<h2>Benign samples</h2>{_samples_html(report.benign_samples)}"
        f"<h2>Safety data mix</h2>{mix_html}"
        "</body></html>\n"
    )


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
