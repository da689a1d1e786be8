"""Format profile of a customer dataset: what the safety mixer must imitate.

The profile describes the *last* user turn and the *last* assistant turn of each conversation
(the turn pair the mixer renders), plus the system prompt distribution:

* system prompts and how often each occurs (an AOA-style wrapper shows up here);
* the user-turn template: a prefix and suffix shared by (nearly) all rows around the variable
  part, snapped to line / "label:" boundaries so a shared first word ("What is …") is not mistaken
  for a template;
* option lists (``A) …``, ``(B) …``, ``C. …`` one per line, or inline ``A) … B) …``);
* the answer style: ``choice`` (an option label), ``label`` (a small closed set), ``number`` or
  ``free_text``, with the answer template around a choice label and length statistics.

Pure functions over :class:`dataformats.Conversation`; no model or tokenizer is needed.
"""

from __future__ import annotations

import os
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dataformats import Conversation
from sap_core.errors import DataFormatError

# A template prefix/suffix must be shared by at least this fraction of rows.
TEMPLATE_MIN_SHARE = 0.8
# A "label" answer style: at most this many distinct answers, each at most LABEL_MAX_WORDS words.
LABEL_MAX_DISTINCT = 20
LABEL_MAX_WORDS = 4
# Answer style is the one that at least this fraction of answers fits.
STYLE_MIN_SHARE = 0.8
TOP_SYSTEM_PROMPTS = 10

# One option per line: "A) text", "(A) text", "A. text", "A: text". Labels A-J or 1-9.
_OPTION_LINE = re.compile(r"^[ \t]*(\(?)([A-J]|[1-9])([\).:])[ \t]+(\S.*)$", re.MULTILINE)
# Inline options: "A) x B) y C) z" on one line (at least two).
_OPTION_INLINE = re.compile(r"(?:^|\s)(\(?)([A-J])(\))\s+")
# A choice answer: optional prefix, the label, optional closing bracket/dot and option text.
_CHOICE_ANSWER = re.compile(
    r"^(?P<prefix>.*?)\(?(?P<label>[A-J]|[1-9])(?:[\).:](?P<rest>.*))?$", re.S
)
_NUMBER = re.compile(r"^[-+]?[$€£]?\d[\d,]*(?:\.\d+)?%?$")


@dataclass(frozen=True)
class OptionFormat:
    """How options are written: ``labels`` in order, ``open``/``close`` around each label."""

    labels: tuple[str, ...]
    open: str = ""
    close: str = ")"
    layout: str = "lines"  # "lines" | "inline"

    def render(self, texts: Sequence[str]) -> str:
        items = [
            f"{self.open}{label}{self.close} {text}"
            for label, text in zip(self.labels, texts, strict=True)
        ]
        return ("\n" if self.layout == "lines" else " ").join(items)


@dataclass(frozen=True)
class FormatProfile:
    """What a dataset looks like; see the module docstring. All fields are JSON-friendly."""

    rows: int
    multi_turn_fraction: float
    system_prompts: tuple[tuple[str, int], ...]  # most common first, (text, count)
    no_system_prompt_count: int
    user_prefix: str
    user_suffix: str
    options: OptionFormat | None
    options_suffix: str  # text after the option block, e.g. "\nAnswer:"
    options_fraction: float
    answer_style: str  # "choice" | "label" | "number" | "free_text"
    answer_prefix: str  # text before a choice label, e.g. "Answer: "
    answer_includes_option_text: bool
    labels: tuple[str, ...]  # the closed label set for "label" style
    # Multiple choice: how often each option label is the customer's answer, (label, count)
    # sorted by label. The mixer draws its gold labels from this so the mix does not shift the
    # letter prior the customer's task teaches (a skewed prior is how an adapter collapses onto
    # one letter).
    gold_label_counts: tuple[tuple[str, int], ...] = ()
    answer_chars: dict[str, float] = field(default_factory=dict)
    user_chars: dict[str, float] = field(default_factory=dict)

    @property
    def system_prompt_fraction(self) -> float:
        return 1.0 - self.no_system_prompt_count / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "multi_turn_fraction": round(self.multi_turn_fraction, 4),
            "system_prompt_fraction": round(self.system_prompt_fraction, 4),
            "system_prompts": [{"text": t, "count": c} for t, c in self.system_prompts],
            "no_system_prompt_count": self.no_system_prompt_count,
            "user_template": {"prefix": self.user_prefix, "suffix": self.user_suffix},
            "options": None
            if self.options is None
            else {
                "labels": list(self.options.labels),
                "open": self.options.open,
                "close": self.options.close,
                "layout": self.options.layout,
                "suffix": self.options_suffix,
                "fraction": round(self.options_fraction, 4),
            },
            "answer": {
                "style": self.answer_style,
                "prefix": self.answer_prefix,
                "includes_option_text": self.answer_includes_option_text,
                "labels": list(self.labels),
                "gold_label_counts": dict(self.gold_label_counts),
                "chars": self.answer_chars,
            },
            "user_chars": self.user_chars,
        }


def _last(conversation: Conversation, role: str) -> str:
    for message in reversed(conversation.messages):
        if message.role == role:
            return message.content
    return ""


def _common_prefix(texts: Sequence[str]) -> str:
    return os.path.commonprefix(list(texts)) if texts else ""


def _majority_affix(texts: Sequence[str], *, suffix: bool) -> str:
    """Longest prefix (or suffix) shared by >= TEMPLATE_MIN_SHARE of the texts.

    Grows the candidate one character at a time from the majority's next character, so a few
    rows that deviate (a typo, a missing prefix) do not erase the template.
    """
    if not texts:
        return ""
    work = [t[::-1] for t in texts] if suffix else list(texts)
    need = max(1, int(TEMPLATE_MIN_SHARE * len(work) + 0.999999))
    affix = ""
    alive = work
    while True:
        nexts = Counter(t[len(affix)] for t in alive if len(t) > len(affix))
        if not nexts:
            break
        char, count = nexts.most_common(1)[0]
        if count < need:
            break
        affix += char
        alive = [t for t in alive if t.startswith(affix)]
    return affix[::-1] if suffix else affix


def _snap_prefix(prefix: str) -> str:
    """Cut a shared prefix back to the last line break or "Label: " so words stay whole."""
    cut = max(prefix.rfind("\n") + 1, _last_label_colon(prefix))
    return prefix[:cut]


def _last_label_colon(text: str) -> int:
    ends = [m.end() for m in re.finditer(r":[ \t]+", text)]
    return ends[-1] if ends else 0


def _snap_suffix(suffix: str) -> str:
    """Cut a shared suffix forward to its first line break (keep "\\nAnswer:" but not "?")."""
    index = suffix.find("\n")
    return suffix[index:] if index >= 0 else ""


def _options_of(text: str) -> tuple[OptionFormat, int, int] | None:
    """The option format and the (start, end) character span of the option block."""
    found = list(_OPTION_LINE.finditer(text))
    if len(found) >= 2:
        labels = tuple(m.group(2) for m in found)
        if _is_sequence(labels):
            opens = Counter(m.group(1) for m in found).most_common(1)[0][0]
            closes = Counter(m.group(3) for m in found).most_common(1)[0][0]
            span_start = found[0].start(2) - len(found[0].group(1))
            return OptionFormat(labels, opens, closes, "lines"), span_start, found[-1].end()
    inline = list(_OPTION_INLINE.finditer(text))
    if len(inline) >= 2:
        labels = tuple(m.group(2) for m in inline)
        if _is_sequence(labels):
            start = inline[0].start(2) - len(inline[0].group(1))
            line_end = text.find("\n", start)
            end = len(text) if line_end < 0 else line_end
            return OptionFormat(labels, inline[0].group(1), ")", "inline"), start, end
    return None


def _is_sequence(labels: Sequence[str]) -> bool:
    first = "A" if labels[0].isalpha() else "1"
    expected = [chr(ord(first) + i) for i in range(len(labels))]
    return list(labels) == expected


def _stats(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
    return {
        "mean": round(statistics.fmean(values), 1),
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def _choice_answer(answer: str, options: OptionFormat | None) -> tuple[str, bool, str] | None:
    """(prefix, includes option text, label) when the answer names an option label, else None."""
    if options is None:
        return None
    match = _CHOICE_ANSWER.match(answer.strip())
    if not match or match.group("label") not in options.labels:
        return None
    prefix = match.group("prefix")
    # The prefix is decoration like "Answer: " or "The answer is ", never a word that ends in
    # a capital letter (which would make "AB" parse as prefix "A", label "B").
    if prefix and not re.search(r"[\s:(]$", prefix):
        return None
    rest = (match.group("rest") or "").strip()
    return prefix, bool(rest), match.group("label")


def chosen_label(answer: str, options: OptionFormat) -> str | None:
    """The option label ``answer`` chooses ("B", "Answer: B) text", "(B)"), or None."""
    choice = _choice_answer(answer, options)
    return None if choice is None else choice[2]


def profile_dataset(conversations: Sequence[Conversation]) -> FormatProfile:
    """Profile a customer dataset (see the module docstring for what is measured).

    Raises:
        DataFormatError: empty dataset.
    """
    if not conversations:
        raise DataFormatError("cannot profile an empty dataset")
    n = len(conversations)
    systems = Counter(c.system_prompt for c in conversations)
    no_system = systems.pop(None, 0)
    system_prompts = tuple(
        (text, count) for text, count in systems.most_common(TOP_SYSTEM_PROMPTS) if text is not None
    )
    multi_turn = sum(1 for c in conversations if sum(m.role == "user" for m in c.messages) > 1)

    users = [_last(c, "user") for c in conversations]
    answers = [_last(c, "assistant").strip() for c in conversations]

    spans = [_options_of(u) for u in users]
    found = [span for span in spans if span is not None]
    options: OptionFormat | None = None
    if found and len(found) >= STYLE_MIN_SHARE * n:
        options = Counter(fmt for fmt, _, _ in found).most_common(1)[0][0]

    if options is not None:
        # Multiple choice: template = prefix + {question} + user_suffix + {options} + tail.
        # Rows without an option block do not vote on the template.
        heads = [u[: span[1]] for u, span in zip(users, spans, strict=True) if span]
        tails = [u[span[2] :] for u, span in zip(users, spans, strict=True) if span]
        prefix = _snap_prefix(_majority_affix(heads, suffix=False)) if len(heads) > 1 else ""
        suffix = _snap_suffix(_majority_affix(heads, suffix=True)) if len(heads) > 1 else ""
        options_suffix = _majority_affix(tails, suffix=True)
        variable = [h[len(prefix) : len(h) - len(suffix)] for h in heads]
    else:
        prefix = _snap_prefix(_majority_affix(users, suffix=False)) if n > 1 else ""
        suffix = _snap_suffix(_majority_affix(users, suffix=True)) if n > 1 else ""
        options_suffix = ""
        variable = [u[len(prefix) : len(u) - len(suffix)] for u in users]

    style, answer_prefix, with_text, labels = _answer_style(answers, options)
    gold_labels: Counter[str] = Counter()
    if style == "choice":
        for answer in answers:
            choice = _choice_answer(answer, options)
            if choice is not None:
                gold_labels[choice[2]] += 1
    return FormatProfile(
        rows=n,
        multi_turn_fraction=multi_turn / n,
        system_prompts=system_prompts,
        no_system_prompt_count=no_system,
        user_prefix=prefix,
        user_suffix=suffix,
        options=options,
        options_suffix=options_suffix,
        options_fraction=len(found) / n,
        answer_style=style,
        answer_prefix=answer_prefix,
        answer_includes_option_text=with_text,
        labels=labels,
        gold_label_counts=tuple(sorted(gold_labels.items())),
        answer_chars=_stats([len(a) for a in answers]),
        user_chars=_stats([len(v) for v in variable]),
    )


def _answer_style(
    answers: Sequence[str], options: OptionFormat | None
) -> tuple[str, str, bool, tuple[str, ...]]:
    n = len(answers)
    choices = [c for c in (_choice_answer(a, options) for a in answers) if c is not None]
    if options is not None and len(choices) >= STYLE_MIN_SHARE * n:
        prefix = Counter(p for p, _, _ in choices).most_common(1)[0][0]
        with_text = sum(1 for _, t, _ in choices if t) > len(choices) / 2
        return "choice", prefix, with_text, ()
    if sum(1 for a in answers if _NUMBER.match(a)) >= STYLE_MIN_SHARE * n:
        return "number", "", False, ()
    counts = Counter(answers)
    short = all(len(a.split()) <= LABEL_MAX_WORDS for a in counts)
    if n >= 4 and short and len(counts) <= min(LABEL_MAX_DISTINCT, max(2, n // 2)):
        return "label", "", False, tuple(sorted(counts))
    return "free_text", "", False, ()
