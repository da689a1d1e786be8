"""`keel eval` outside the service: a registry name or a directory, rates only on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.eval_commands import app
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
    result = runner.invoke(app, [*args, "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "over-refusal" in result.output
    report = json.loads(out.read_text())
    harmful = report["models"]["fine_tuned"]["harmful"]
    assert harmful["harmful_score"]["n"] == 2
    labels = harmful["refusal_rate"]["count"] + harmful["off_task_rate"]["count"]
    assert labels + harmful["harmful_score"]["count"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --model"),
        (["--model", "no-such-model"], "not in the cache"),
    ],
)
def test_eval_rejects_a_missing_or_unknown_model(
    model_cache: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
