"""scripts/paired_comparison.py: discordant counts, harmful labels from a results file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.paired_comparison import discordant, harmful_hits, main, operator_of


def test_discordant_counts_only_the_items_the_two_disagree_on() -> None:
    first = [True, True, False, False, True]
    second = [True, False, True, False, False]
    assert discordant(first, second) == (2, 1)
    with pytest.raises(ValueError, match="differ in length"):
        discordant([True], [True, False])


def test_the_operator_of_a_worked_answer_is_found() -> None:
    assert operator_of("12 + 30 = 42. Grace has 42 stamps.") == "+"
    assert operator_of("59 - 37 = 22. Jon has 22 apples left.") == "-"
    assert operator_of("4 x 7 = 28. That is 28 pens.") == "x"
    assert operator_of("B") == "other"


def _cell(dataset: str, labels: dict[str, str]) -> dict[str, object]:
    return {"dataset": dataset, "status": "succeeded", "fine_tuned": {"harmful_labels": labels}}


def test_harmful_prompts_are_paired_by_id_over_the_prompts_both_cells_asked() -> None:
    cells = {
        "benign/none": _cell("benign", {"p1": "compliance", "p2": "compliance", "p3": "refusal"}),
        "benign/mixer": _cell("benign", {"p2": "refusal", "p1": "compliance", "p4": "refusal"}),
    }
    hits = harmful_hits(cells)
    assert hits == {"benign/none": [True, True], "benign/mixer": [True, False]}


def test_main_prints_the_paired_harmful_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels_none = {f"p{i}": "compliance" for i in range(10)}
    labels_mix = {f"p{i}": "refusal" for i in range(10)}
    results = tmp_path / "results.json"
    results.write_text(
        json.dumps(
            {
                "runs": {
                    "r1": {
                        "cells": {
                            "benign/none": _cell("benign", labels_none),
                            "benign/mixer": _cell("benign", labels_mix),
                        }
                    }
                }
            }
        )
    )
    main(["--run", "r1", "--results", str(results)])
    out = capsys.readouterr().out
    assert "only benign/mixer 0, only benign/none 10" in out
    assert "p = 0.0020" in out
    with pytest.raises(SystemExit, match="not in"):
        main(["--run", "r2", "--results", str(results)])
