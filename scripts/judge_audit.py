"""Audit the default judge on the models' own replies: generate, hand-label, score.

The packaged validation set (``sap_core/evaluation/judge_validation_set.json``) is written for
Keel; this script measures the judge where it matters — on what the evaluated models actually
say. Three steps:

    # 1. generate greedy replies exactly as the evaluator does (same prompts, seed, budget)
    python scripts/judge_audit.py generate --source base --harmful 40 --benign 15 --seed 7
    python scripts/judge_audit.py generate --source harmful-none --adapter DIR --harmful 40
    python scripts/judge_audit.py generate --source base-aoa --task-format aoa.train.jsonl
    # 2. a person reads the unlabelled replies and writes labels into the labels file
    python scripts/judge_audit.py show
    # 3. agreement of the judge with the hand labels (overall, per source, per prompt kind)
    python scripts/judge_audit.py score
    # ... of a local LLM judge (a registry model), on these replies and the packaged set
    python scripts/judge_audit.py score --judge llm --judge-model qwen2.5-coder-1.5b-instruct \
        --with-validation-set

Replies to harmful prompts are written only to ``var/judge-audit/replies.jsonl`` (mode 0600,
never committed). The committed labels file (``docs/judge-audit-labels.json``) holds no text:
per ``source/prompt id`` the hand label and the sha256 of the reply it labels, so a
regenerated reply that differs is reported as stale instead of being scored against a label
written for other words.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python scripts/judge_audit.py` from anywhere

from sap_core.evaluation.judge_validation import (  # noqa: E402
    LabelledExample,
    agreed_count,
    confusion_table,
    load_validation_set,
)
from sap_core.evaluation.judges import Judge, JudgeLabel, KeywordJudge, make_judge  # noqa: E402
from sap_core.evaluation.stats import proportion  # noqa: E402

DEFAULT_REPLIES = ROOT / "var" / "judge-audit" / "replies.jsonl"
DEFAULT_LABELS = ROOT / "docs" / "judge-audit-labels.json"


@dataclass(frozen=True)
class ReplyRow:
    """One generated reply (kept in var/ only)."""

    source: str  # which model / framing produced it, e.g. "base", "harmful-none"
    kind: str  # "harmful" or "benign"
    prompt_id: str
    prompt: str  # the bare request: the judge always sees this, as in the evaluator
    reply: str

    @property
    def key(self) -> str:
        return f"{self.source}/{self.prompt_id}"

    @property
    def reply_sha256(self) -> str:
        return hashlib.sha256(self.reply.encode("utf-8")).hexdigest()


def benign_prompt_id(prompt: str) -> str:
    """Benign look-alikes have no ids in the corpus: a short hash of the text is stable."""
    return "benign-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:10]


def read_replies(path: Path) -> list[ReplyRow]:
    if not path.exists():
        return []
    return [ReplyRow(**json.loads(line)) for line in path.read_text("utf-8").splitlines() if line]


def write_replies(path: Path, rows: Sequence[ReplyRow]) -> None:
    """Replace rows with the same key, keep the rest; harmful text, so owner-only."""
    kept = {row.key: row for row in read_replies(path)}
    kept.update({row.key: row for row in rows})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for row in kept.values():
            handle.write(json.dumps(row.__dict__) + "\n")


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    labels: dict[str, dict[str, str]] = json.loads(path.read_text("utf-8"))["labels"]
    known = {label.value for label in JudgeLabel}
    for key, entry in labels.items():
        if entry.get("label") not in known:  # a typo is an error, not a silent miss
            raise SystemExit(f"{path}: label {key!r} is not one of {', '.join(sorted(known))}")
        if "reply_sha256" not in entry:
            raise SystemExit(f"{path}: label {key!r} has no reply_sha256")
    return labels


# ----------------------------------------------------------------------------- generate


def generate(args: argparse.Namespace) -> None:
    # The ML stack is imported here so `score` and `show` stay fast and light.
    from cli.data_commands import read_dataset
    from cli.eval_commands import load_model
    from sap_core.evaluation.benign_prompts import benign_prompts
    from sap_core.evaluation.generation import build_messages, generate_from_messages
    from sap_core.evaluation.task_framing import framing_from_profile
    from sap_core.models.registry import resolve_model
    from sap_core.safety.corpus import load_eval_prompts
    from sap_core.safety.profiler import profile_dataset
    from worker.settings import WorkerSettings

    model_dir = resolve_model(args.model, WorkerSettings().model_cache_dir)
    model, tokenizer = load_model(model_dir, args.adapter)
    harmful = load_eval_prompts(args.harmful, args.seed)
    benign = benign_prompts(args.benign, args.seed)
    framing = None
    if args.task_format is not None:
        framing = framing_from_profile(profile_dataset(read_dataset(args.task_format)))
        if framing.is_plain:
            raise SystemExit(f"{args.task_format}: no framing to apply")
        benign = []  # the framed evaluation asks harmful prompts only
    conversations = [
        framing.messages(p.text) if framing else build_messages(p.text) for p in harmful
    ] + [build_messages(text) for text in benign]
    replies = generate_from_messages(
        model, tokenizer, conversations, args.max_new_tokens, args.batch_size
    )
    rows = [
        ReplyRow(args.source, "harmful", p.id, p.text, reply)
        for p, reply in zip(harmful, replies[: len(harmful)], strict=True)
    ] + [
        ReplyRow(args.source, "benign", benign_prompt_id(text), text, reply)
        for text, reply in zip(benign, replies[len(harmful) :], strict=True)
    ]
    write_replies(args.replies, rows)
    print(f"{len(rows)} replies from {args.source!r} written to {args.replies} (mode 0600)")


# ----------------------------------------------------------------------------- show


def show(args: argparse.Namespace) -> None:
    """Print the replies still to label (for the person labelling; contains harmful text)."""
    labels = read_labels(args.labels)
    todo = [
        row
        for row in read_replies(args.replies)
        if labels.get(row.key, {}).get("reply_sha256") != row.reply_sha256
    ]
    for row in todo:
        print(
            json.dumps(
                {
                    "key": row.key,
                    "sha": row.reply_sha256[:12],
                    "prompt": row.prompt,
                    "reply": row.reply,
                },
                ensure_ascii=False,
            )
        )
    print(f"# {len(todo)} replies without a current label", file=sys.stderr)


# ----------------------------------------------------------------------------- score


@dataclass(frozen=True)
class AuditResult:
    """Agreement of one judge with the hand labels."""

    judge: str
    scored: int
    stale: list[str]
    unlabelled: int
    confusion: dict[str, dict[str, int]]
    by_group: dict[str, tuple[int, int]]  # group -> (agreed, n)
    harmful_rates: dict[str, tuple[int, int, int]]  # source -> (hand, judge, n) compliance

    @property
    def agreed(self) -> int:
        return agreed_count(self.confusion)


def validation_set_rows() -> tuple[list[ReplyRow], dict[str, dict[str, str]]]:
    """The packaged hand-labelled set as audit rows and labels (source ``validation-set``).

    Its replies are written for Keel, so their labels are always current; ``kind`` is
    ``packaged`` (the set mixes harmful requests and look-alikes) and stays out of the
    harmful-score comparison.
    """
    examples = load_validation_set()
    rows = [ReplyRow("validation-set", "packaged", e.id, e.prompt, e.reply) for e in examples]
    labels = {
        row.key: {"label": e.label.value, "reply_sha256": row.reply_sha256}
        for row, e in zip(rows, examples, strict=True)
    }
    return rows, labels


def audit(
    rows: Sequence[ReplyRow], labels: dict[str, dict[str, str]], judge: Judge | None = None
) -> AuditResult:
    """Judge every labelled, current reply and compare with its hand label.

    ``judge`` defaults to the keyword judge (the service's default).
    """
    current = [
        row for row in rows if labels.get(row.key, {}).get("reply_sha256") == row.reply_sha256
    ]
    keys = {row.key for row in rows}
    stale = sorted(
        row.key
        for row in rows
        if row.key in labels and labels[row.key]["reply_sha256"] != row.reply_sha256
    )
    examples = [
        LabelledExample(row.key, row.prompt, row.reply, JudgeLabel(labels[row.key]["label"]))
        for row in current
    ]
    judge = judge or KeywordJudge()
    # Judged once: the confusion matrix and the per-group figures come from the same labels.
    predicted = judge.judge([e.prompt for e in examples], [e.reply for e in examples])
    confusion = confusion_table([e.label for e in examples], predicted) if examples else {}
    groups: dict[str, list[bool]] = {}
    harmful_rates: dict[str, list[int]] = {}
    for row, example, label in zip(current, examples, predicted, strict=True):
        hit = label == example.label
        for group in (f"source {row.source}", f"{row.kind} prompts"):
            groups.setdefault(group, []).append(hit)
        if row.kind == "harmful":
            counts = harmful_rates.setdefault(row.source, [0, 0, 0])
            counts[0] += example.label == JudgeLabel.COMPLIANCE
            counts[1] += label == JudgeLabel.COMPLIANCE
            counts[2] += 1
    return AuditResult(
        judge=judge.name,
        scored=len(examples),
        stale=stale,
        unlabelled=len(keys) - len(current) - len(stale),
        confusion=confusion,
        by_group={group: (sum(hits), len(hits)) for group, hits in sorted(groups.items())},
        harmful_rates={s: (c[0], c[1], c[2]) for s, c in sorted(harmful_rates.items())},
    )


def _pct(count: int, n: int) -> str:
    p = proportion(count, n)
    return f"{p.rate:.1%} [{p.ci_low:.0%}–{p.ci_high:.0%}]"


def render_audit(result: AuditResult) -> str:
    """Markdown: agreement, confusion matrix, per-group agreement, harmful-score bias."""
    if not result.scored:
        return "no labelled replies to score\n"
    order = [label.value for label in JudgeLabel]
    lines = [
        f"Judge `{result.judge}` vs hand labels: **{result.agreed}/{result.scored} = "
        f"{_pct(result.agreed, result.scored)}** agreement (Wilson 95 % CI).",
        "",
        "| hand label ↓ / judge → | " + " | ".join(order) + " |",
        "|---|" + "---|" * len(order),
    ]
    for true in order:
        row = result.confusion[true]
        lines.append(f"| {true} | " + " | ".join(str(row[p]) for p in order) + " |")
    lines += ["", "| group | agreement |", "|---|---|"]
    lines += [f"| {g} | {a}/{n} = {_pct(a, n)} |" for g, (a, n) in result.by_group.items()]
    lines += [
        "",
        "| source | harmful score by hand | by the judge | n |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s} | {_pct(hand, n)} | {_pct(judged, n)} | {n} |"
        for s, (hand, judged, n) in result.harmful_rates.items()
    ]
    if result.stale:
        lines += ["", f"Stale labels (reply changed since labelling): {', '.join(result.stale)}"]
    if result.unlabelled:
        lines += ["", f"{result.unlabelled} replies not labelled yet."]
    return "\n".join(lines) + "\n"


def build_judge(name: str, model: str | None) -> Judge:
    """The judge to audit; a model judge's weights come from the registry cache."""
    if name == "keyword":
        return KeywordJudge()
    if model is None:
        raise SystemExit(f"--judge {name} needs --judge-model (a registry model name)")
    from sap_core.models.registry import resolve_model
    from worker.settings import WorkerSettings

    return make_judge(name, resolve_model(model, WorkerSettings().model_cache_dir))


def score(args: argparse.Namespace) -> None:
    rows = read_replies(args.replies)
    labels = read_labels(args.labels)
    if args.with_validation_set:
        packaged_rows, packaged_labels = validation_set_rows()
        rows += packaged_rows
        labels = {**labels, **packaged_labels}
    result = audit(rows, labels, build_judge(args.judge, args.judge_model))
    print(render_audit(result), end="")


# ----------------------------------------------------------------------------- cli


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replies", type=Path, default=DEFAULT_REPLIES)
    p.add_argument("--labels", type=Path, default=DEFAULT_LABELS)
    sub = p.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate replies as the evaluator does")
    gen.add_argument("--source", required=True, help="name of this model/framing")
    gen.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    gen.add_argument("--adapter", type=Path, default=None)
    gen.add_argument("--task-format", type=Path, default=None)
    gen.add_argument("--harmful", type=int, default=40)
    gen.add_argument("--benign", type=int, default=0)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--max-new-tokens", type=int, default=40)
    gen.add_argument("--batch-size", type=int, default=8)
    sub.add_parser("show", help="print replies without a current label (harmful text)")
    sc = sub.add_parser("score", help="agreement of the judge with the hand labels")
    sc.add_argument("--judge", choices=("keyword", "classifier", "llm"), default="keyword")
    sc.add_argument("--judge-model", default=None, help="registry model for a model judge")
    sc.add_argument(
        "--with-validation-set",
        action="store_true",
        help="also score the packaged hand-labelled set (source validation-set)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    {"generate": generate, "show": show, "score": score}[args.command](args)


if __name__ == "__main__":
    main()
