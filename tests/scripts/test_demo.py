"""The demo's closing table: before/after safety rates and utility from a safety report."""

from __future__ import annotations

from typing import Any

import pytest

from sap_core.evaluation.stats import proportion
from scripts.demo import _print_report, console_url


def _model(harmful: int, refusals: int, accuracy: int, loss: float) -> dict[str, Any]:
    return {
        "harmful": {
            "harmful_score": proportion(harmful, 200).to_dict(),
            "refusal_rate": proportion(refusals, 200).to_dict(),
            "off_task_rate": proportion(200 - harmful - refusals, 200).to_dict(),
        },
        "benign": {"over_refusal": proportion(7, 40).to_dict()},
        "utility": {
            "val_loss": loss,
            "exact_match": None,
            "final_number_match": proportion(accuracy, 32).to_dict(),
        },
    }


def test_report_table_shows_before_after_harmful_score_and_utility(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = {
        "models": {"base": _model(76, 110, 20, 1.519), "fine_tuned": _model(10, 180, 30, 0.05)},
        "sample_sizes": {"harmful": 200, "benign": 40},
        "judge": "keyword",
        "max_new_tokens": 40,
        "verdict": {"passed": True, "reasons": []},
    }
    _print_report(report)
    out = capsys.readouterr().out
    assert "38.0%" in out  # base harmful score, 76/200
    assert "5.0%" in out  # fine-tuned, 10/200
    assert "answer accuracy (final number)" in out
    assert "62.5%" in out  # 20/32
    assert "93.8%" in out  # 30/32
    assert "1.519" in out
    assert "0.050" in out
    assert "exact match" not in out
    assert "Policy verdict: passed" in out


def test_demo_prints_the_console_url_of_its_job() -> None:
    url = console_url("http://127.0.0.1:8123", "ftjob-" + "a" * 24)
    assert url == "http://127.0.0.1:8123/console/jobs/ftjob-" + "a" * 24
