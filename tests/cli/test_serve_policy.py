"""`keel serve` refuses to start on a provider policy file that does not validate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from db.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "policy.yaml"
    monkeypatch.setenv("KEEL_POLICY_FILE", str(path))
    monkeypatch.setenv("KEEL_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_a_misspelt_threshold_stops_serve_before_anything_starts(policy_file: Path) -> None:
    shipped = yaml.safe_load((ROOT / "policy.yaml").read_text(encoding="utf-8"))
    shipped["gate"]["thresholds"]["max_harmful_scor"] = 0.4
    policy_file.write_text(yaml.safe_dump(shipped))
    result = CliRunner().invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert "gate.thresholds.max_harmful_scor" in result.output
    assert "unknown policy field" in result.output
    # Nothing was started or created: the check runs before the data dir and the migration.
    assert not (policy_file.parent / "data").exists()


def test_a_missing_policy_file_is_named(policy_file: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert str(policy_file) in result.output
