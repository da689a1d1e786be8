"""Paired comparison of an experiment run's cells: the items one adapter gets and another does not.

Every cell of a run asks the same held-out harmful prompts and the same validation questions, so
two cells differ only on their *discordant* items. An exact McNemar test on those is far more
sensitive than two overlapping Wilson intervals, and it is the honest way to ask "did SAP + mixer
lose task accuracy against plain fine-tuning?" on a couple of hundred questions.

    # harmful prompts: from the per-prompt judge labels in var/experiment/results.json
    python scripts/paired_comparison.py --run 278df49d286d
    # ... and validation answers: regenerates each cell adapter's greedy answers exactly as the
    # evaluator scores them (sap_core.evaluation.evaluator.answer_hits), broken down by the
    # operator of the reference answer (the experiment's word problems: +, -, x)
    python scripts/paired_comparison.py --run 278df49d286d --answers

Adapters are read from the experiment's own service (``var/experiment/service/artifacts``), which
the next ``scripts/experiment.py`` invocation starts afresh: run ``--answers`` before that. Only
ids, counts and p-values are printed, never harmful text.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python scripts/paired_comparison.py` from anywhere

from sap_core.evaluation.stats import exact_mcnemar_p  # noqa: E402

EXPERIMENT_DIR = ROOT / "var" / "experiment"
_OPERATOR = re.compile(r"\d\s*([+\-x])\s*\d")


def discordant(first: Sequence[bool], second: Sequence[bool]) -> tuple[int, int]:
    """(items only ``first`` has, items only ``second`` has); the sequences are paired."""
    if len(first) != len(second):
        raise ValueError(f"paired sequences differ in length: {len(first)} vs {len(second)}")
    only_first = sum(a and not b for a, b in zip(first, second, strict=True))
    only_second = sum(b and not a for a, b in zip(first, second, strict=True))
    return only_first, only_second


def comparison_line(what: str, names: tuple[str, str], hits: tuple[Sequence[bool], ...]) -> str:
    only_first, only_second = discordant(hits[0], hits[1])
    return (
        f"{what}: {names[0]} {sum(hits[0])}/{len(hits[0])}, {names[1]} {sum(hits[1])}/"
        f"{len(hits[1])}; only {names[0]} {only_first}, only {names[1]} {only_second}; "
        f"exact McNemar p = {exact_mcnemar_p(only_first, only_second):.4f}"
    )


def harmful_hits(cells: Mapping[str, Any]) -> dict[str, list[bool]]:
    """Per cell, per shared harmful prompt id (sorted): did the fine-tuned model comply?"""
    labels = {name: cell["fine_tuned"].get("harmful_labels") or {} for name, cell in cells.items()}
    shared = sorted(set.intersection(*(set(v) for v in labels.values()))) if labels else []
    return {name: [labels[name][i] == "compliance" for i in shared] for name in labels}


def operator_of(answer: str) -> str:
    """The arithmetic operator a reference answer works with ("+", "-", "x"), or "other"."""
    found = _OPERATOR.search(answer)
    return found.group(1) if found else "other"


def _adapter_dir(job_id: str) -> Path:
    found = sorted((EXPERIMENT_DIR / "service" / "artifacts").glob(f"*/{job_id}/adapter"))
    if not found:
        raise SystemExit(f"no adapter for {job_id} under {EXPERIMENT_DIR / 'service'}")
    return found[0]


def answer_hits_per_cell(
    run_id: str, cells: Mapping[str, Any], model: str, max_new_tokens: int
) -> tuple[list[str], dict[str, list[bool]]]:
    """Regenerate every cell's validation answers; (operators per question, hits per cell)."""
    # The ML stack is imported here so the harmful-label comparison stays fast and light.
    from cli.data_commands import read_dataset
    from cli.eval_commands import load_model
    from sap_core.evaluation.evaluator import answer_hits, answer_rule, utility_items
    from sap_core.models.registry import resolve_model
    from worker.settings import WorkerSettings

    model_dir = resolve_model(model, WorkerSettings().model_cache_dir)
    datasets = {cell["dataset"] for cell in cells.values()}
    if len(datasets) != 1:
        raise SystemExit(f"--answers compares cells of one dataset, got {sorted(datasets)}")
    items = utility_items(
        read_dataset(EXPERIMENT_DIR / "data" / run_id / f"{datasets.pop()}.val.jsonl")
    )
    answers = [answer for _, answer in items]
    rule = answer_rule(answers)
    if rule is None:
        raise SystemExit("the validation answers are free text: no accuracy to compare")
    hits: dict[str, list[bool]] = {}
    for name, cell in cells.items():
        fine_tuned, tokenizer = load_model(model_dir, _adapter_dir(cell["job_id"]))
        hits[name] = answer_hits(fine_tuned, tokenizer, items, rule, max_new_tokens)
        print(f"{name}: {sum(hits[name])}/{len(items)} right ({rule})")
    return [operator_of(a) for a in answers], hits


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--run", required=True, help="run id in var/experiment/results.json")
    parser.add_argument("--results", type=Path, default=EXPERIMENT_DIR / "results.json")
    parser.add_argument("--cells", help="comma list of cells (dataset/setting); default: all")
    parser.add_argument("--answers", action="store_true", help="also compare validation answers")
    args = parser.parse_args(argv)

    run = json.loads(args.results.read_text(encoding="utf-8"))["runs"].get(args.run)
    if run is None:
        raise SystemExit(f"run {args.run} not in {args.results}")
    cells = {k: v for k, v in sorted(run["cells"].items()) if v.get("status") != "error"}
    if args.cells:
        wanted = args.cells.split(",")
        cells = {k: cells[k] for k in wanted if k in cells}
    if len(cells) < 2:
        raise SystemExit(f"need two finished cells to compare, have {sorted(cells)}")

    harmful = harmful_hits(cells)
    for a, b in combinations(cells, 2):
        print(comparison_line("harmful (complied)", (a, b), (harmful[a], harmful[b])))
    if not args.answers:
        return
    config = run["config"]
    operators, right = answer_hits_per_cell(
        args.run, cells, config["model"], config["max_new_tokens"]
    )
    for a, b in combinations(cells, 2):
        print(comparison_line("answers (right)", (a, b), (right[a], right[b])))
    for op in sorted(set(operators)):
        shown = ", ".join(
            f"{name} {sum(h for h, o in zip(hits, operators, strict=True) if o == op)}"
            for name, hits in right.items()
        )
        print(f"  questions with '{op}' ({operators.count(op)}): {shown}")


if __name__ == "__main__":
    main()
