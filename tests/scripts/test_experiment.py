"""Pure parts of scripts/experiment.py: job specs, cache fingerprint, markdown rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from db.policy_schema import validate_policy
from sap_core.config import SapConfig
from scripts.experiment import (
    TABLE_END,
    TABLE_START,
    ExperimentConfig,
    config_from_args,
    experiment_policy,
    job_body,
    parse_args,
    render_table,
    safety_block,
    summarise_model,
    target_checks,
    write_markdown,
)


def _rate(count: int, n: int, low: float, high: float) -> dict[str, Any]:
    return {"count": count, "n": n, "rate": count / n, "ci_low": low, "ci_high": high}


def test_settings_map_to_the_issue_safety_blocks() -> None:
    assert safety_block("none", 0.2) == {"method": "none", "mixer_ratio": 0.0}
    assert safety_block("mixer", 0.2) == {"method": "none", "mixer_ratio": 0.2}
    assert safety_block("sap", 0.2) == {"method": "sap", "mixer_ratio": 0.0}
    assert safety_block("sap_mixer", 0.2) == {"method": "sap", "mixer_ratio": 0.2}


def test_job_body_uses_eroding_training_settings() -> None:
    body = job_body(ExperimentConfig(steps=2), "sap", "file-a", "file-b")
    hyper = body["hyperparameters"]
    assert hyper["learning_rate_multiplier"] == 5.0
    assert hyper["max_steps"] == 2
    assert set(hyper["lora_target_modules"]) >= {"q_proj", "down_proj", "gate_proj"}
    assert body["validation_file"] == "file-b"


def test_full_flag_gives_the_issue_grid_and_fingerprints_differ() -> None:
    quick, _, quick_settings = config_from_args(parse_args([]))
    full, datasets, settings = config_from_args(parse_args(["--full"]))
    assert full.harmful >= 200
    assert len(datasets) * len(settings) == 16
    assert len(quick_settings) == 2
    assert quick.fingerprint() != full.fingerprint()
    assert quick.fingerprint() == ExperimentConfig().fingerprint()


def test_sap_knobs_reach_the_policy_and_keep_old_run_ids() -> None:
    # The run quoted in docs/results.md was made before the SAP knobs existed, at the reference
    # rho and the "sgd" rule: spelled out, those values must not change its id, so its cached
    # cells are still found. The product default since then is a different (hashed) setting.
    legacy = ["--sap-rho", "2e-5", "--sap-probe-rule", "sgd", "--sap-probe-step-size", "0.05"]
    reference = ["--rows", "24", "--harmful", "200", "--benign", "40", "--contrast-ratio", "0.5"]
    old, _, _ = config_from_args(parse_args([*reference, *legacy]))
    assert old.fingerprint() == "0cd0098d2025"
    product, _, _ = config_from_args(parse_args(reference))
    assert product.fingerprint() != old.fingerprint()
    assert experiment_policy(product)["sap"]["defaults"]["probe_step_rule"] == "relative"
    reference = [*reference, *legacy]
    adam, _, _ = config_from_args(parse_args([*reference, "--sap-probe-rule", "adam_persistent"]))
    assert adam.fingerprint() != old.fingerprint()
    defaults = experiment_policy(adam)["sap"]["defaults"]
    assert defaults["probe_step_rule"] == "adam_persistent"
    assert defaults["rho"] == 2e-5
    # The policy block is what the worker passes to SapConfig: it must be accepted as is.
    assert SapConfig(**defaults).probe_step_rule == "adam_persistent"
    # ... and the whole document passes the admin API's policy schema unchanged.
    assert validate_policy(experiment_policy(adam)) == experiment_policy(adam)


def test_refusal_source_reaches_the_policy_and_keeps_old_run_ids() -> None:
    # Every run before the knob existed trained on template refusals: spelling that out keeps its
    # id; the base model's own refusals are a different, hashed setting the policy schema accepts.
    template, _, _ = config_from_args(parse_args(["--refusal-source", "template"]))
    assert template.fingerprint() == ExperimentConfig().fingerprint()
    model, _, _ = config_from_args(parse_args(["--refusal-source", "model"]))
    assert model.fingerprint() != template.fingerprint()
    policy = experiment_policy(model)
    assert policy["mixer"]["refusal_source"] == "model"
    assert validate_policy(policy)["mixer"]["refusal_source"] == "model"


def test_markdown_is_replaced_between_markers_only(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    path.write_text(f"# Title\n\n{TABLE_START}\nold\n{TABLE_END}\n\nStatus stays.\n")
    write_markdown(path, "new table\n")
    text = path.read_text()
    assert "old" not in text
    assert text.startswith("# Title")
    assert text.endswith("Status stays.\n")
    assert f"{TABLE_START}\nnew table\n{TABLE_END}" in text


def test_render_and_targets_from_cached_cells() -> None:
    base = {"harmful_score": _rate(17, 40, 0.28, 0.57), "refusal_rate": _rate(23, 40, 0.4, 0.7)}

    def cell(setting: str, harmful: dict[str, Any], acc: float) -> dict[str, Any]:
        return {
            "dataset": "aoa_mcq",
            "setting": setting,
            "job_id": f"ftjob-{setting}",
            "status": "succeeded",
            "train_rows": 40,
            "harmful_train_rows": 0,
            "wall_seconds": 600.0,
            "warnings": [],
            "fine_tuned": {
                "harmful_score": harmful,
                "exact_match": {"rate": acc, "count": 0, "n": 32, "ci_low": 0, "ci_high": 1},
            },
        }

    cells = {
        "aoa_mcq/none": cell("none", _rate(38, 40, 0.84, 0.99), 0.90),
        "aoa_mcq/sap_mixer": cell("sap_mixer", _rate(16, 40, 0.26, 0.55), 0.89),
    }
    checks = target_checks(cells, base)
    assert len(checks) == 1
    assert "plain FT erodes" in checks[0]
    assert "SAP+mixer vs base: PASS" in checks[0]
    assert "clearly below plain FT: PASS" in checks[0]
    assert "utility gap +1.0 pts: PASS" in checks[0]
    entry = {
        "config": vars(ExperimentConfig()) | {"lora_target_modules": ["q_proj"]},
        "cells": cells,
        "base": base,
        "base_job": "ftjob-none",
    }
    table = render_table(entry)
    assert "acc 90.0 %" in table
    assert "| *base model* |" in table
    assert table.count("| aoa_mcq (40 rows, 0 harmful) |") == 2
    assert "95.0 [84–99]" in table


def test_the_task_format_column_and_its_targets() -> None:
    def cell(setting: str, plain: int, framed: int) -> dict[str, Any]:
        return {
            "dataset": "aoa_mcq",
            "setting": setting,
            "job_id": f"ftjob-{setting}",
            "status": "succeeded",
            "train_rows": 24,
            "harmful_train_rows": 0,
            "base": {"task_format_harmful_score": _rate(20, 200, 0.07, 0.15)},
            "fine_tuned": {
                "harmful_score": _rate(plain, 200, 0.1, 0.3),
                "task_format_harmful_score": _rate(framed, 200, framed / 250, framed / 170),
            },
        }

    cells = {"aoa_mcq/none": cell("none", 50, 150), "aoa_mcq/sap_mixer": cell("sap_mixer", 10, 12)}
    checks = target_checks(cells, {"harmful_score": _rate(76, 200, 0.32, 0.45)})
    assert "in the task's format plain FT erodes" in checks[0]
    assert "SAP+mixer vs base: PASS; below plain FT: PASS" in checks[0]
    entry = {
        "config": vars(ExperimentConfig()) | {"lora_target_modules": ["q_proj"]},
        "cells": cells,
        "base": None,
    }
    table = render_table(entry)
    assert "| 75.0 [60–88] (10.0) |" in table  # fine-tuned 150/200 in the framing, base 20/200
    old = dict(cells["aoa_mcq/none"], fine_tuned={"harmful_score": _rate(1, 2, 0, 1)})
    assert "| – |" in render_table(entry | {"cells": {"aoa_mcq/none": old}})


def test_final_number_accuracy_is_the_utility_of_worked_answers() -> None:
    result = {"utility": {"val_loss": 0.1, "exact_match": None, "final_number_match": None}}

    def cell(setting: str, hits: int) -> dict[str, Any]:
        result["utility"]["final_number_match"] = _rate(hits, 32, 0, 1)
        return {"dataset": "benign", "setting": setting, "fine_tuned": summarise_model(result)}

    cells = {"benign/none": cell("none", 30), "benign/sap_mixer": cell("sap_mixer", 29)}
    (line,) = target_checks(cells, None)
    assert "utility gap +3.1 pts: MISS" in line
    cells["benign/sap_mixer"] = cell("sap_mixer", 30)
    (line,) = target_checks(cells, None)
    assert "utility gap +0.0 pts: PASS" in line


def test_benign_off_task_is_summarised_and_shown() -> None:
    summary = summarise_model({"benign": {"n": 40, "counts": {"refusal": 0, "off_task": 37}}})
    assert summary["benign_off_task_rate"] == {"count": 37, "n": 40, "rate": 0.925}
    assert summarise_model({})["benign_off_task_rate"] is None
    cell = {
        "dataset": "aoa_mcq",
        "setting": "none",
        "job_id": "ftjob-none",
        "status": "succeeded",
        "train_rows": 24,
        "harmful_train_rows": 0,
        "fine_tuned": summary,
    }
    entry = {
        "config": vars(ExperimentConfig()) | {"lora_target_modules": ["q_proj"]},
        "cells": {"aoa_mcq/none": cell},
        "base": None,
    }
    assert "| 92.5 |" in render_table(entry)


def test_targets_warn_when_a_low_harmful_score_is_collapse() -> None:
    def cell(setting: str, off_task: int) -> dict[str, Any]:
        return {
            "dataset": "aoa_mcq",
            "setting": setting,
            "fine_tuned": {
                "harmful_score": _rate(15, 200, 0.05, 0.12),
                "off_task_rate": _rate(off_task, 200, 0, 1),
            },
        }

    cells = {"aoa_mcq/none": cell("none", 20), "aoa_mcq/sap_mixer": cell("sap_mixer", 185)}
    (line,) = target_checks(cells, {"harmful_score": _rate(76, 200, 0.32, 0.45)})
    assert "⚠ SAP+mixer answers 92 % of harmful prompts off-task" in line
    assert "plain FT answers" not in line
