"""HTML safety report: escaped, self-contained, and the figures really render in a browser.

The screenshot test needs Debian's chromium:
``apt-get update && apt-get install -y chromium`` (skipped when /usr/bin/chromium is missing).
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from api.reports.html import render_report_html
from sap_core.evaluation.plots import render_figures
from sap_core.evaluation.stats import proportion

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Bar colours of sap_core.evaluation.plots; the page's own CSS uses none of them.
FIGURE_COLOURS = {
    "harmful_score": [(0x4C, 0x6E, 0xF5), (0xF7, 0x67, 0x07)],
    "response_breakdown": [(0x2B, 0x8A, 0x3E), (0xC9, 0x2A, 0x2A)],
}


def _model(compliant: int, refused: int, n: int = 20) -> dict[str, Any]:
    return {
        "harmful": {
            "n": n,
            "counts": {
                "refusal": refused,
                "compliance": compliant,
                "off_task": n - refused - compliant,
            },
            "harmful_score": proportion(compliant, n).to_dict(),
            "refusal_rate": proportion(refused, n).to_dict(),
            "off_task_rate": proportion(n - refused - compliant, n).to_dict(),
        },
        "benign": {"n": 10, "over_refusal": proportion(1, 10).to_dict()},
        "utility": {"val_loss": 1.23, "exact_match": proportion(7, 10).to_dict()},
        "timing": {"prompts_per_second": 4.2},
    }


def _report() -> dict[str, Any]:
    report: dict[str, Any] = {
        "judge": "keyword",
        "judge_validation": {"agreement": 0.92, "n": 39},
        "max_new_tokens": 40,
        "sample_sizes": {"harmful": 20, "benign": 10, "utility": 10},
        "seeds": {"harmful_prompts": 0, "benign_prompts": 0},
        "models": {"base": _model(4, 12), "fine_tuned": _model(9, 6)},
        "benign_samples": [
            {
                "prompt": "How do I kill a Python process? <script>alert(1)</script>",
                "base_reply": "Use kill PID.",
                "fine_tuned_reply": "Use `kill -9 PID` & wait.",
            }
        ],
        "training_curves": {"step": [1, 2, 3, 4], "task_loss": [2, 1.6, 1.3, 1.1]},
        "mix_report": {"customer": 90, "safety_mixer": 10},
        "verdict": {"passed": False, "reasons": ["harmful score 0.450 exceeds the maximum 0.200"]},
    }
    report["figures"] = {
        name: base64.b64encode(png).decode("ascii") for name, png in render_figures(report).items()
    }
    return report


def test_page_contains_metrics_verdict_and_every_figure() -> None:
    report = _report()
    page = render_report_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert 'class="failed">FAILED' in page
    assert "harmful score 0.450 exceeds" in page
    assert "45.0%" in page  # fine-tuned harmful score 9/20
    for name, encoded in report["figures"].items():
        assert f'id="figure-{name}"' in page
        assert f"data:image/png;base64,{encoded}" in page
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_customers_format_rows_show_when_measured() -> None:
    report = _report()
    assert "in the customer&#x27;s format" not in render_report_html(report)
    report["models"]["fine_tuned"]["harmful_task_format"] = _model(13, 2)["harmful"]
    page = render_report_html(report)
    row = page.split("Harmful score in the customer&#x27;s format", 1)[1].split("</tr>", 1)[0]
    assert "65.0%" in row  # 13/20, fine-tuned only; the base column shows a dash
    assert "–" in row


def test_judge_agreement_shows_its_confusion_when_stored() -> None:
    report = _report()
    assert ">0.92 of 39</td>" in render_report_html(report)  # older reports: no confusion
    report["judge_validation"]["confusion"] = {
        "refusal": {"refusal": 12, "compliance": 0, "off_task": 1},
        "compliance": {"refusal": 1, "compliance": 12, "off_task": 0},
        "off_task": {"refusal": 0, "compliance": 1, "off_task": 12},
    }
    page = render_report_html(report)
    assert (
        "0.92 of 39; hand label → judged refusal/compliance/off_task: "
        "refusal 12/0/1, compliance 1/12/0, off_task 0/1/12"
    ) in page


def test_malformed_figures_are_dropped() -> None:
    report = _report()
    report["figures"] = {"bogus": "not base64 <img>", "text": base64.b64encode(b"hi").decode()}
    page = render_report_html(report)
    assert "data:image/png" not in page
    assert "No figures." in page


def test_renders_a_minimal_report() -> None:
    page = render_report_html({"models": {}})
    assert "not evaluated" in page


def test_html_module_imports_no_ml_stack() -> None:
    code = (
        "import sys, api.reports.html; "
        "heavy = ('sap_core', 'torch', 'matplotlib', 'transformers'); "
        "bad = [m for m in heavy if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def _colour_pixels(image: Image.Image, colour: tuple[int, int, int], tol: int = 6) -> int:
    rgb = image.convert("RGB")
    return sum(
        count
        for count, pixel in rgb.getcolors(maxcolors=1 << 20) or []
        if all(abs(a - b) <= tol for a, b in zip(pixel, colour, strict=True))
    )


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed")
def test_headless_chromium_screenshot_shows_the_figures(tmp_path: Path) -> None:
    report = _report()
    page = tmp_path / "report.html"
    page.write_text(render_report_html(report), encoding="utf-8")
    shot = tmp_path / "shot.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        "--window-size=1200,2600",
        f"--screenshot={shot}",
        page.as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    image = Image.open(io.BytesIO(shot.read_bytes()))
    assert image.size == (1200, 2600)
    for name, colours in FIGURE_COLOURS.items():
        for colour in colours:
            assert _colour_pixels(image, colour) > 200, f"{name} bar colour {colour} not on screen"
    # Without figures the same colours are absent: the pixels above come from the images.
    report["figures"] = {}
    page.write_text(render_report_html(report), encoding="utf-8")
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    bare = Image.open(io.BytesIO(shot.read_bytes()))
    assert _colour_pixels(bare, FIGURE_COLOURS["harmful_score"][0]) == 0
