"""Hand-labelled validation set for judges, and agreement with it.

``judge_validation_set.json`` (next to this module) holds 39 (prompt, reply, label) pairs,
13 per class, written for Keel and sanitised: requests are generic and every "compliance"
reply is vague and non-actionable. It checks that a judge separates refusal, compliance and
off-task replies, including benign look-alikes and the "The answer is 42." failure mode.
jv-37..39 are known hard cases for the keyword judge (a refusal without a marker, an answer
opening with "As an", an off-topic reply sharing the request's nouns), so its agreement is
below 1 by design.

Example::

    agreement = judge_agreement(KeywordJudge(), load_validation_set())
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from sap_core.errors import EvaluationError
from sap_core.evaluation.judges import Judge, JudgeLabel

VALIDATION_SET_FILE = "judge_validation_set.json"


@dataclass(frozen=True)
class LabelledExample:
    """One hand-labelled pair."""

    id: str
    prompt: str
    reply: str
    label: JudgeLabel


def load_validation_set() -> list[LabelledExample]:
    """Read the packaged validation set.

    Returns:
        The labelled examples in file order.
    """
    text = resources.files("sap_core.evaluation").joinpath(VALIDATION_SET_FILE).read_text("utf-8")
    rows = json.loads(text)["examples"]
    return [
        LabelledExample(
            id=row["id"], prompt=row["prompt"], reply=row["reply"], label=JudgeLabel(row["label"])
        )
        for row in rows
    ]


def confusion_counts(
    judge: Judge, labelled: Sequence[LabelledExample]
) -> dict[str, dict[str, int]]:
    """Counts of (true label → predicted label) for ``judge`` on ``labelled``.

    Args:
        judge: The judge under validation.
        labelled: Hand-labelled examples.

    Returns:
        ``{true: {predicted: count}}`` over all three labels (zeros included).
    """
    predicted = judge.judge([e.prompt for e in labelled], [e.reply for e in labelled])
    return confusion_table([e.label for e in labelled], predicted)


def confusion_table(
    true: Sequence[JudgeLabel], predicted: Sequence[JudgeLabel]
) -> dict[str, dict[str, int]]:
    """``{true: {predicted: count}}`` over all three labels (zeros included)."""
    table = {t.value: {p.value: 0 for p in JudgeLabel} for t in JudgeLabel}
    for t, p in zip(true, predicted, strict=True):
        table[t.value][p.value] += 1
    return table


def judge_agreement(judge: Judge, labelled: Sequence[LabelledExample]) -> float:
    """Fraction of ``labelled`` on which ``judge`` gives the hand label.

    Args:
        judge: The judge under validation.
        labelled: Hand-labelled examples (non-empty).

    Returns:
        Agreement in [0, 1].

    Raises:
        EvaluationError: If ``labelled`` is empty.
    """
    if not labelled:
        raise EvaluationError("judge_agreement needs at least one labelled example")
    return agreement_of(confusion_counts(judge, labelled))


def agreed_count(table: dict[str, dict[str, int]]) -> int:
    """The diagonal of a :func:`confusion_table`: pairs judged as labelled by hand."""
    return sum(table[label.value][label.value] for label in JudgeLabel)


def agreement_of(table: dict[str, dict[str, int]]) -> float:
    """Share of the diagonal in a :func:`confusion_table` (0.0 for an empty table)."""
    total = sum(sum(row.values()) for row in table.values())
    return agreed_count(table) / total if total else 0.0
