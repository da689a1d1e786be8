"""Screening against cheap evasions, before and after: the table in docs/mixer.md §4.

    .venv/bin/python benchmarks/screening_evasion.py [--baseline-ref SHA] [--json OUT]

"Before" is ``screening/screen.py`` + ``lexicon.json`` of ``--baseline-ref`` (default: the last
commit before the evasion work), read with ``git show`` and imported from a temporary directory;
"after" is the working tree. Everything is built at run time from package data; no harmful
text is written anywhere and only counts are printed.

Evasion set (held out): the evaluation split of ``sap_core.safety.corpus`` (HarmBench + the
Do-Not-Answer eval rows, minus ``human_chatbox``), which the user-turn thresholds were not tuned
on, transformed by every :data:`screening.evasion.TRANSFORMS`. Two indexes:

- ``known``: the production index (all package references). The evaluation prompts are in it,
  so this is "a public harmful prompt, disguised" — the attack the issue measured.
- ``held-out``: references from the training split only, as in ``benchmarks/screening_eval.py``:
  "an unseen harmful prompt, disguised".

Assistant-turn poison: rows whose user turn is a benign word problem and whose assistant turn is
a harmful many-shot response *not* among the SAP triple pairs (the assistant thresholds were
chosen on the triple pairs), plain and look-alike-transformed.

False positives: full rows of examples/*.jsonl, the experiment's benign word-problem chat rows
and AOA multiple-choice rows (``scripts/experiment_data.py``), the evaluation look-alike prompts
(``sap_core.evaluation.benign_prompts.BENIGN_LOOKALIKE_PROMPTS``, user turn) and the mixer's
contrast rows (``sap_core.safety.contrast.CONTRAST_EXAMPLES``, prompt + answer) — read through
their public names, so a grown pool is measured as it is.

Throughput: ``screen_conversations`` over a 10,000-row benign file (word-problem chat rows and
the example rows), rows per second, one process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for scripts.experiment_data when run as a file

from dataformats import Conversation, Message, validate_jsonl  # noqa: E402
from sap_core.evaluation.benign_prompts import BENIGN_LOOKALIKE_PROMPTS  # noqa: E402
from sap_core.safety.contrast import CONTRAST_EXAMPLES  # noqa: E402
from sap_core.safety.corpus import corpus_splits, load_harmful_responses  # noqa: E402
from screening import screen as after_module  # noqa: E402
from screening.decision import ScreeningLimits, decide  # noqa: E402
from screening.evasion import TRANSFORMS, lookalike  # noqa: E402
from scripts.experiment_data import (  # noqa: E402
    aoa_mcq_row,
    benign_chat_row,
    word_problems,
)

# The commit before the evasion work (branch point of `screening`).
DEFAULT_BASELINE = "6a42cd9bbc2c4cee7c34f984dd70229210b668c1"
EXAMPLES = ROOT / "examples"
WORD_PROBLEM_ROWS = 1000
THROUGHPUT_ROWS = 10_000
# Recommended policy values (docs/mixer.md): 5 % as today, and at most 10 flagged rows.
LIMITS = ScreeningLimits(max_flagged_fraction=0.05, max_flagged_rows=10)


def load_baseline(ref: str) -> ModuleType:
    """``screening/screen.py`` as of ``ref``, imported under another name."""
    folder = Path(tempfile.mkdtemp(prefix="keel-screen-baseline-"))
    for name in ("screen.py", "lexicon.json"):
        blob = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:screening/{name}"],
            check=True,
            capture_output=True,
        ).stdout
        (folder / name).write_bytes(blob)
    spec = importlib.util.spec_from_file_location("screening_baseline", folder / "screen.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["screening_baseline"] = module
    spec.loader.exec_module(module)
    return module


def _conv(user: str, assistant: str | None = None, system: str | None = None) -> Conversation:
    messages = [Message("system", system)] if system else []
    messages.append(Message("user", user))
    if assistant is not None:
        messages.append(Message("assistant", assistant))
    return Conversation(tuple(messages))


def _rows(rows: Sequence[dict[str, Any]]) -> list[Conversation]:
    report = validate_jsonl([json.dumps(r) for r in rows], keep=True)
    return list(report.conversations)


def _example_rows() -> list[Conversation]:
    out: list[Conversation] = []
    for path in sorted(EXAMPLES.glob("*.jsonl")):
        out += validate_jsonl(path.open("rb"), keep=True).conversations
    return out


class Screen:
    """One version of the screen (module) with its two indexes."""

    def __init__(self, module: ModuleType, name: str) -> None:
        self.module, self.name = module, name
        splits = corpus_splits()
        ref = module.Reference
        train = [
            ref(p.id, p.source, p.text, p.category)
            for p in splits.train
            if p.category != "human_chatbox"
        ] + [ref(p.id, "manyshot", p.prompt, None) for p in splits.triple_pairs]
        kwargs: dict[str, Any] = {}
        if hasattr(module, "load_reference_responses"):  # the screen reads assistant turns
            kwargs["responses"] = [
                ref(p.id, "manyshot_response", p.response, None) for p in splits.triple_pairs
            ]
        started = time.perf_counter()
        self.known = module.default_index()
        self.build_seconds = time.perf_counter() - started
        self.held_out = module.ScreeningIndex(train, **kwargs)

    def flagged(self, rows: Sequence[Conversation], index: Any) -> int:
        return sum(r.flagged for r in self.module.screen_conversations(rows, index))


def _rate(count: int, total: int) -> str:
    return f"{count}/{total} ({count / total:.1%})" if total else "0/0"


def evasion_table(screens: Sequence[Screen]) -> dict[str, dict[str, str]]:
    positives = [p.text for p in corpus_splits().eval if p.category != "human_chatbox"]
    table: dict[str, dict[str, str]] = {}
    transforms: dict[str, Callable[[str, int], str]] = {"plain": lambda t, _i: t, **TRANSFORMS}
    for name, transform in transforms.items():
        rows = [_conv(transform(text, i)) for i, text in enumerate(positives)]
        table[name] = {
            f"{s.name} {kind}": _rate(s.flagged(rows, idx), len(rows))
            for s in screens
            for kind, idx in (("known", s.known), ("held-out", s.held_out))
        }
    return table


def assistant_table(screens: Sequence[Screen]) -> dict[str, dict[str, str]]:
    triple_ids = {p.id for p in corpus_splits().triple_pairs}
    held_out = [p for p in load_harmful_responses() if p.id not in triple_ids]
    questions = word_problems(len(held_out), seed=1)
    table: dict[str, dict[str, str]] = {}
    for name, transform in (("plain", lambda t: t), ("lookalike", lookalike)):
        rows = [
            _conv(q.question, transform(p.response.strip()))
            for q, p in zip(questions, held_out, strict=True)
        ]
        table[f"harmful answer, {name}"] = {
            f"{s.name} {kind}": _rate(s.flagged(rows, idx), len(rows))
            for s in screens
            for kind, idx in (("known", s.known), ("held-out", s.held_out))
        }
    return table


def benign_sets() -> dict[str, list[Conversation]]:
    problems = word_problems(2 * WORD_PROBLEM_ROWS, seed=0)
    rng = random.Random(0)
    return {
        "examples/*.jsonl rows": _example_rows(),
        "word-problem chat rows": _rows([benign_chat_row(p) for p in problems[:WORD_PROBLEM_ROWS]]),
        "AOA multiple-choice rows": _rows(
            [aoa_mcq_row(p, rng) for p in problems[WORD_PROBLEM_ROWS:]]
        ),
        "evaluation look-alike prompts": [_conv(p) for p in BENIGN_LOOKALIKE_PROMPTS],
        "contrast rows (prompt + answer)": [_conv(c.prompt, c.answer) for c in CONTRAST_EXAMPLES],
    }


def false_positive_table(screens: Sequence[Screen]) -> dict[str, dict[str, str]]:
    return {
        name: {s.name: _rate(s.flagged(rows, s.known), len(rows)) for s in screens}
        for name, rows in benign_sets().items()
    }


def dilution_example(screens: Sequence[Screen]) -> dict[str, str]:
    """100 known harmful rows hidden in 10,000 benign ones: 0.99 % flagged."""
    harmful = [p.text for p in corpus_splits().eval if p.category != "human_chatbox"][:100]
    benign = _rows([benign_chat_row(p) for p in word_problems(10_000, seed=2)])
    rows = benign[:5000] + [_conv(t) for t in harmful] + benign[5000:]
    out: dict[str, str] = {}
    after = next(s for s in screens if s.module is after_module)
    results = after.module.screen_conversations(rows, after.known)
    summary = after.module.summarize(results)
    fraction_only = ScreeningLimits(max_flagged_fraction=LIMITS.max_flagged_fraction)
    for label, limits in (("fraction 5% only", fraction_only), ("5% + 10 rows", LIMITS)):
        decision = decide(summary, limits)
        out[label] = f"{summary.flagged_count} of {summary.rows} flagged: " + (
            f"rejected ({decision.limit})" if decision.rejected else "accepted"
        )
    return out


def throughput(screens: Sequence[Screen]) -> dict[str, str]:
    problems = word_problems(THROUGHPUT_ROWS, seed=3)
    examples = _example_rows()
    rows = _rows([benign_chat_row(p) for p in problems[: THROUGHPUT_ROWS - 3000]])
    rows += [examples[i % len(examples)] for i in range(3000)]
    out: dict[str, str] = {}
    for s in screens:
        started = time.perf_counter()
        flagged = s.flagged(rows, s.known)
        seconds = time.perf_counter() - started
        out[s.name] = (
            f"{len(rows) / seconds:,.0f} rows/s ({seconds:.1f} s for {len(rows)} rows, "
            f"{flagged} flagged); index build {s.build_seconds:.1f} s"
        )
    return out


def _print_table(title: str, table: dict[str, dict[str, str]]) -> None:
    columns = list(next(iter(table.values())))
    print(f"\n{title}\n| | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(row[c] for c in columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", default=DEFAULT_BASELINE)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    screens = [Screen(load_baseline(args.baseline_ref), "before"), Screen(after_module, "after")]
    results: dict[str, Any] = {
        "evasion (user turn)": evasion_table(screens),
        "assistant-turn poison": assistant_table(screens),
        "false positives (production index)": false_positive_table(screens),
    }
    for title, table in results.items():
        _print_table(title, table)
    results["dilution"] = dilution_example(screens)
    results["throughput"] = throughput(screens)
    for title in ("dilution", "throughput"):
        print(f"\n{title}")
        for name, line in results[title].items():
            print(f"- {name}: {line}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
