"""`keel eval` outside the service: a registry name or a directory, rates only on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from cli.eval_commands import app
from sap_core.evaluation import PolicyThresholds
from tests.fixtures.db import TEST_MODEL

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def model_cache(monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = ROOT / "var" / "models"
    if not (cache / TEST_MODEL / "keel-model.json").exists():
        pytest.fail(f"{TEST_MODEL} is not pulled: run `make models` (make test does)")
    monkeypatch.setenv("KEEL_MODEL_CACHE_DIR", str(cache))
    return cache


def test_eval_by_registry_name_writes_a_report(model_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = ["--model", TEST_MODEL, "--harmful", "2", "--benign", "1", "--max-new-tokens", "4"]
    gate = ["--max-harmful-score", "1", "--max-benign-unhelpful", "0.5"]
    result = runner.invoke(app, [*args, *gate, "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "over-refusal" in result.output
    assert "verdict: " in result.output
    report = json.loads(out.read_text())
    assert report["policy"]["max_benign_unhelpful"] == 0.5
    harmful = report["models"]["fine_tuned"]["harmful"]
    assert harmful["harmful_score"]["n"] == 2
    labels = harmful["refusal_rate"]["count"] + harmful["off_task_rate"]["count"]
    assert labels + harmful["harmful_score"]["count"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --model"),
        (["--model", "no-such-model"], "not in the cache"),
        (["--model", TEST_MODEL, "--judge", "gpt"], "choose one of keyword"),
        (["--model", TEST_MODEL, "--judge", "llm"], "needs exactly one of --judge-model"),
        (["--model", TEST_MODEL, "--judge-model", TEST_MODEL], "keyword judge has no model"),
        (["--model", TEST_MODEL, "--judge", "llm", "--judge-model", "nope"], "not in the cache"),
    ],
)
def test_eval_rejects_a_missing_or_unknown_model(
    model_cache: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_eval_with_a_registry_llm_judge_and_the_service_default_thresholds(
    model_cache: Path, tmp_path: Path
) -> None:
    # SmolLM2 as its own judge: plumbing only (it is no judge of anything), no rate asserted.
    out = tmp_path / "report.json"
    args = ["--model", TEST_MODEL, "--harmful", "2", "--benign", "1", "--max-new-tokens", "4"]
    judge = ["--judge", "llm", "--judge-model", TEST_MODEL, "--max-harmful-score", "1"]
    result = runner.invoke(app, [*args, *judge, "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["judge"] == "llm"
    assert report["judge_validation"]["n"] == 39
    # Thresholds not given on the command line are the service's defaults.
    assert report["policy"]["max_harmful_increase"] == PolicyThresholds().max_harmful_increase
    assert report["policy"]["max_over_refusal"] == PolicyThresholds().max_over_refusal


def test_eval_asks_again_in_a_datasets_framing(model_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = ["--model", TEST_MODEL, "--harmful", "2", "--benign", "1", "--max-new-tokens", "4"]
    aoa = ROOT / "examples" / "mcq_aoa.jsonl"
    result = runner.invoke(
        app, [*args, "--threads", "1", "--task-format", str(aoa), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "in the task's format: harmful" in result.output
    report = json.loads(out.read_text())
    assert report["config"]["task_framing"]["user_prefix"].startswith("AOA, execute")
    assert report["models"]["fine_tuned"]["harmful_task_format"]["n"] == 2


def test_eval_rejects_an_invalid_task_format_file(model_cache: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n')
    result = runner.invoke(app, ["--model", TEST_MODEL, "--task-format", str(bad)])
    assert result.exit_code == 1
    assert "line 1" in result.output


def test_eval_cache_reuses_the_base_results_of_the_same_weights(
    model_cache: Path, tmp_path: Path
) -> None:
    base = AutoModelForCausalLM.from_pretrained(model_cache / TEST_MODEL, use_safetensors=True)
    adapter = tmp_path / "adapter"
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    args = ["--model", TEST_MODEL, "--adapter", str(adapter), "--harmful", "2", "--benign", "1"]
    args += ["--max-new-tokens", "4", "--threads", "1", "--eval-cache", str(tmp_path / "cache")]
    reports = []
    for run in ("first", "second"):
        out = tmp_path / f"{run}.json"
        result = runner.invoke(app, [*args, "--json", str(out)])
        assert result.exit_code == 0, result.output
        reports.append(json.loads(out.read_text()))
    assert [r["base_from_cache"] for r in reports] == [False, True]
    assert reports[0]["models"]["base"] == reports[1]["models"]["base"]
    assert list((tmp_path / "cache" / "base").glob("*.json"))
