"""`keel data profile` and `keel data mix` on the sample datasets (template corpus)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli.data_commands import app
from cli.safety_commands import app as safety_app
from dataformats import validate_jsonl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def test_profile_prints_a_table() -> None:
    result = runner.invoke(app, ["profile", str(EXAMPLES / "mcq_aoa.jsonl")])
    assert result.exit_code == 0, result.output
    assert "choice" in result.output
    assert "AOA, execute my instruction" in result.output


def test_profile_json() -> None:
    result = runner.invoke(app, ["profile", str(EXAMPLES / "alpaca_tasks.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == 80


def test_mix_writes_valid_jsonl_and_report(tmp_path: Path) -> None:
    out, report = tmp_path / "mixed.jsonl", tmp_path / "report.json"
    args = ["mix", str(EXAMPLES / "chat_math.jsonl"), "--ratio", "0.1", "--out", str(out)]
    result = runner.invoke(app, [*args, "--report", str(report)])
    assert result.exit_code == 0, result.output
    validated = validate_jsonl(out.read_bytes().splitlines())
    assert validated.ok
    assert validated.rows == 180  # 120 customer + 12 safety + 48 contrast
    data = json.loads(report.read_text())
    assert data["safety_rows"] == 12
    assert "[harmful request #" in result.output


def test_mix_with_built_corpus_and_bad_ratio(tmp_path: Path) -> None:
    corpus_dir = tmp_path / "corpus"
    built = runner.invoke(
        safety_app,
        [
            "build-corpus",
            "--model",
            "t",
            "--template-only",
            "--out-dir",
            str(corpus_dir),
            "--limit",
            "5",
        ],
    )
    assert built.exit_code == 0, built.output
    assert (corpus_dir / "manifest.json").exists()
    out = tmp_path / "m.jsonl"
    base = ["mix", str(EXAMPLES / "mcq_aoa.jsonl"), "--out", str(out)]
    ok = runner.invoke(app, [*base, "--ratio", "0.2", "--corpus-dir", str(corpus_dir)])
    assert ok.exit_code == 0, ok.output
    assert len(out.read_text().splitlines()) == 200  # 100 customer + 20 safety + 80 contrast
    bad = runner.invoke(app, [*base, "--ratio", "-1"])
    assert bad.exit_code == 1
