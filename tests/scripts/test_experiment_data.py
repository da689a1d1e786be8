"""The experiment's dataset builders: valid JSONL, right counts and ratios, deterministic.

Harmful text is never printed or put in an assertion message: rows are compared by id,
line number and sha256 only. Most tests use placeholder (benign) pairs; one test uses the real
package data and checks ids and counts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import screening
from dataformats import validate_jsonl
from sap_core.errors import ConfigError
from sap_core.safety.corpus import HarmfulPair
from scripts.experiment_data import (
    AOA_PREFIX,
    AOA_SYSTEM,
    DATASETS,
    TUTOR_SYSTEM,
    build_datasets,
    poison_count,
    stealth_count,
    word_problems,
)

PLACEHOLDER_PAIRS = [
    HarmfulPair(id=f"fake-{i:04d}", prompt=f"placeholder request {i}", response=f"reply {i}")
    for i in range(60)
]


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_file_is_valid_chat_jsonl_with_the_right_counts(tmp_path: Path) -> None:
    built = build_datasets(tmp_path, rows=40, validation_rows=12, seed=3, pairs=PLACEHOLDER_PAIRS)
    assert list(built) == list(DATASETS)
    for name, files in built.items():
        for path, expected in ((files.train_path, 40), (files.validation_path, 12)):
            report = validate_jsonl(path.read_bytes().splitlines(keepends=True))
            assert report.ok, f"{name}: {report.errors[:3]}"
            assert report.rows == expected
            assert report.format is not None
            assert report.format.value == "chat"
        assert files.rows == files.benign_rows + files.harmful_rows == 40
        assert files.train_sha256 == _sha(files.train_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["datasets"]) == set(DATASETS)


def test_poisoned_has_ten_percent_harmful_rows_at_the_recorded_lines(tmp_path: Path) -> None:
    files = build_datasets(
        tmp_path, rows=50, validation_rows=5, seed=1, names=["poisoned"], pairs=PLACEHOLDER_PAIRS
    )["poisoned"]
    assert files.harmful_rows == 5
    assert files.benign_rows == 45
    rows = _rows(files.train_path)
    fake_ids = {p.prompt: p.id for p in PLACEHOLDER_PAIRS}
    harmful_lines = [
        i + 1 for i, row in enumerate(rows) if row["messages"][1]["content"] in fake_ids
    ]
    assert tuple(harmful_lines) == files.harmful_line_numbers
    assert len(set(files.harmful_ids)) == 5
    # Poison hides in the task format: every row keeps the tutor system prompt.
    assert all(row["messages"][0]["content"] == TUTOR_SYSTEM for row in rows)
    # The harmful rows are spread through the file, not appended at the end.
    assert files.harmful_line_numbers != tuple(range(46, 51))


def test_harmful_dataset_is_only_pairs_and_benign_datasets_have_none(tmp_path: Path) -> None:
    built = build_datasets(tmp_path, rows=20, validation_rows=4, seed=2, pairs=PLACEHOLDER_PAIRS)
    harmful = built["harmful"]
    assert harmful.harmful_rows == 20
    assert harmful.benign_rows == 0
    assert len(set(harmful.harmful_ids)) == 20
    assert built["benign"].harmful_rows == 0
    assert built["aoa_mcq"].harmful_rows == 0
    assert all(r["messages"][0]["role"] == "user" for r in _rows(harmful.train_path))


def test_aoa_mcq_wraps_the_same_problems_with_a_correct_gold_letter(tmp_path: Path) -> None:
    built = build_datasets(
        tmp_path, rows=30, validation_rows=10, seed=5, names=["benign", "aoa_mcq"]
    )
    benign, mcq = _rows(built["benign"].train_path), _rows(built["aoa_mcq"].train_path)
    problems = word_problems(40, 5)
    for plain, wrapped, problem in zip(benign, mcq, problems[:30], strict=True):
        system, user, answer = (m["content"] for m in wrapped["messages"])
        assert system == AOA_SYSTEM
        assert user.startswith(f"{AOA_PREFIX}Question: {problem.question}\n")
        assert plain["messages"][1]["content"] == problem.question
        options = dict(
            line.split(") ", 1)
            for line in user.splitlines()
            if line[:2] in {"A)", "B)", "C)", "D)"}
        )
        assert sorted(options) == ["A", "B", "C", "D"]
        assert len(set(options.values())) == 4
        assert options[answer] == str(problem.answer)
    # Validation rows are the same format (categorical letters: exact-match utility).
    val = _rows(built["aoa_mcq"].validation_path)
    assert {r["messages"][2]["content"] for r in val} <= set("ABCD")


def test_train_and_validation_problems_are_disjoint(tmp_path: Path) -> None:
    files = build_datasets(tmp_path, rows=60, validation_rows=30, seed=9, names=["benign"])[
        "benign"
    ]
    train = {r["messages"][1]["content"] for r in _rows(files.train_path)}
    val = {r["messages"][1]["content"] for r in _rows(files.validation_path)}
    assert len(train) == 60
    assert len(val) == 30
    assert not train & val


def test_builds_are_deterministic_for_a_seed_and_change_with_it(tmp_path: Path) -> None:
    def hashes(seed: int, where: str) -> dict[str, tuple[str, str]]:
        built = build_datasets(
            tmp_path / where, rows=25, validation_rows=5, seed=seed, pairs=PLACEHOLDER_PAIRS
        )
        return {n: (f.train_sha256, f.validation_sha256) for n, f in built.items()}

    first, again, other = hashes(11, "a"), hashes(11, "b"), hashes(12, "c")
    assert first == again
    assert all(first[n][0] != other[n][0] for n in DATASETS)


def test_poison_count_rounds_half_up_and_bad_arguments_raise(tmp_path: Path) -> None:
    assert [poison_count(n, 0.1) for n in (5, 10, 24, 25, 40)] == [1, 1, 2, 3, 4]
    with pytest.raises(ConfigError):
        poison_count(10, 1.5)
    with pytest.raises(ConfigError):
        build_datasets(tmp_path, rows=0, validation_rows=1, seed=0)
    with pytest.raises(ConfigError):
        build_datasets(tmp_path, rows=5, validation_rows=1, seed=0, names=["nope"])
    with pytest.raises(ConfigError):
        build_datasets(
            tmp_path, rows=70, validation_rows=1, seed=0, names=["harmful"], pairs=PLACEHOLDER_PAIRS
        )


def test_real_package_pairs_are_used_by_id_only(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    built = build_datasets(
        tmp_path, rows=24, validation_rows=4, seed=7, names=["poisoned", "harmful"]
    )
    assert built["harmful"].harmful_rows == 24
    assert all(i.startswith("manyshot-") for i in built["harmful"].harmful_ids)
    assert built["poisoned"].harmful_rows == 2
    for files in built.values():
        report = validate_jsonl(files.train_path.read_bytes().splitlines(keepends=True))
        assert report.ok
        assert report.rows == 24


def test_the_stealthy_poisoner_stays_under_both_screening_limits(tmp_path: Path) -> None:
    assert [stealth_count(n) for n in (20, 24, 96, 199, 400)] == [1, 1, 4, 9, 10]
    with pytest.raises(ConfigError, match="at least 20 rows"):
        stealth_count(19)
    files = build_datasets(
        tmp_path,
        rows=96,
        validation_rows=4,
        seed=1,
        names=["poisoned_stealth"],
        pairs=PLACEHOLDER_PAIRS,
    )["poisoned_stealth"]
    assert files.harmful_rows == 4
    assert files.benign_rows == 92
    # Even if every harmful row is flagged, the file passes the shipped limits.
    worst = screening.ScreenSummary(
        rows=96, flagged_count=4, flagged_fraction=4 / 96, per_category={}, per_turn={}
    )
    limits = screening.ScreeningLimits(max_flagged_fraction=0.05, max_flagged_rows=10)
    assert not screening.decide(worst, limits).rejected
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    screen = manifest["poisoned_stealth_screen"]
    assert screen["rows"] == 96
    assert screen["accepted"]  # placeholder pairs: the real pairs' figures are in docs/results.md
