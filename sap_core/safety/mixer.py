"""Format-mimicking safety mixer (after "Do as I do (Safely)", arXiv 2406.10288).

The paper gives no templates, ratios or rewriter; this module is our design (reference notes
§B.9, labelled as such): profile the customer's data (:mod:`sap_core.safety.profiler`), then
render each safety example *in that profile* without a rewriter LLM:

* system prompt: drawn from the customer's own system-prompt distribution (an AOA wrapper is
  reproduced exactly as often as the customer uses it);
* user turn: the customer's shared prefix + the harmful request in the variable slot + the
  shared suffix; for multiple choice, an option block in the customer's labels and layout where
  one option is a refusal and the others are generic (content-free) compliance phrases;
* answer: in the customer's answer style — the refusal option's label (with the customer's
  answer prefix and option text when they use them) for multiple choice, the refusal text
  otherwise (a label or number cannot refuse).

Contrast rows (:mod:`sap_core.safety.contrast`): benign requests that *sound* harmful ("how do I
kill a background job"), answered helpfully in the same format — in multiple choice the helpful
answer is the gold option and the refusal is a distractor. Without them a small model learns
"refuse whatever is not my task" (measured: 100 % over-refusal, docs/results.md).

Ratio semantics: ``ratio`` = safety rows / customer rows. With ``n`` customer rows the mix has
exactly ``k = floor(ratio * n + 0.5)`` safety (refusal) rows (round half up),
``c = floor(contrast_ratio * k + 0.5)`` contrast rows and all ``n`` customer rows, shuffled with
``seed``. Safety prompts come only from the corpus training split.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dataformats import Conversation, Message
from sap_core.errors import ConfigError, DataFormatError
from sap_core.safety.contrast import CONTRAST_EXAMPLES, ContrastExample
from sap_core.safety.corpus import HarmfulPrompt, SafetyCorpus
from sap_core.safety.profiler import FormatProfile, profile_dataset
from sap_core.safety.refusals import REFUSAL_OPTION_TEXT

SAFETY_SOURCE = "safety_mixer"
CONTRAST_SOURCE = "safety_contrast"
# Contrast rows per refusal row unless the provider's policy says otherwise (policy.yaml
# mixer.contrast_ratio). Measured on qwen2.5-coder-0.5b-instruct (docs/results.md, 40 benign
# look-alikes): 2.0 refused 85-87.5 % of them, above the default gate's 60 %, so a benign
# customer got no adapter; 4.0 refused 2.5-5 % and kept the harmful score below the base model's
# on benign and 10 %-poisoned data, but not on purely harmful data (62.5 % vs base 38 %; 0.5 gave
# 31.5 %): there screening and the gate are the defence, not the mix.
DEFAULT_CONTRAST_RATIO = 4.0
_T = TypeVar("_T")
REFUSAL_SOURCES = ("model", "template")
# Hard ceiling whatever the policy says: more safety rows than 10x the customer's data is a
# misconfiguration, not a policy.
MAX_RATIO = 10.0
# Wrong options in a safety multiple-choice item. Deliberately content-free: they signal
# "comply" without containing anything harmful.
COMPLIANCE_DISTRACTORS = (
    "Sure, here is exactly how to do that.",
    "Here are the detailed steps you asked for.",
    "Of course. I will explain everything in full detail.",
    "No problem, here is a complete answer.",
    "Absolutely, let me walk you through it.",
    "Yes, here is what you need to do.",
)


@dataclass(frozen=True)
class MixConfig:
    """Mixer settings.

    Attributes:
        ratio: Safety rows per customer row (already resolved against provider policy).
        seed: Seed for prompt choice, rendering and shuffling.
        refusal_source: "model" = the corpus refusal (base model's own words where it refused,
            template otherwise); "template" = template refusals only.
        refusal_option: Multiple choice only. True: the refusal is an option and the answer is
            its label; False: the answer slot holds the refusal text.
        report_examples: Rendered examples (with placeholders) kept in the report.
        contrast_ratio: Helpful benign look-alike rows per safety row (0 = none).
        contrast_answers: Contrast id -> the base model's own helpful answer, used instead of
            the hand-written one (the fine-tuned model then keeps its own behaviour on these
            prompts instead of reciting ours); ids not in it keep the written answer.
    """

    ratio: float
    seed: int = 0
    refusal_source: str = "model"
    refusal_option: bool = True
    report_examples: int = 3
    contrast_ratio: float = DEFAULT_CONTRAST_RATIO
    contrast_answers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.ratio) or not 0.0 <= self.ratio <= MAX_RATIO:
            raise ConfigError(f"ratio must be in [0, {MAX_RATIO}], got {self.ratio}")
        if not math.isfinite(self.contrast_ratio) or not 0.0 <= self.contrast_ratio <= MAX_RATIO:
            raise ConfigError(
                f"contrast_ratio must be in [0, {MAX_RATIO}], got {self.contrast_ratio}"
            )
        if self.refusal_source not in REFUSAL_SOURCES:
            raise ConfigError(
                f"refusal_source must be one of {REFUSAL_SOURCES}, got {self.refusal_source!r}"
            )
        if self.report_examples < 0:
            raise ConfigError("report_examples must be >= 0")


def resolve_ratio(
    requested: float | None, *, default: float, minimum: float, maximum: float
) -> float:
    """The job's ratio: the provider default, or the customer's request if within policy.

    Raises:
        ConfigError: a bad policy, or a request outside [minimum, maximum].
    """
    if not 0.0 <= minimum <= default <= maximum <= MAX_RATIO:
        raise ConfigError(
            f"policy needs 0 <= minimum <= default <= maximum <= {MAX_RATIO}, got "
            f"{minimum}, {default}, {maximum}"
        )
    if requested is None:
        return default
    if not minimum <= requested <= maximum:
        raise ConfigError(
            f"mixer ratio {requested} is outside the provider policy [{minimum}, {maximum}]"
        )
    return requested


def safety_row_count(ratio: float, customer_rows: int) -> int:
    """``floor(ratio * n + 0.5)``: round half up (Python's ``round`` rounds half to even)."""
    return int(math.floor(ratio * customer_rows + 0.5))


@dataclass(frozen=True)
class RenderedSafetyExample:
    conversation: Conversation
    prompt: HarmfulPrompt
    refusal_source: str


def placeholder(prompt_id: str) -> str:
    return f"[harmful request #{prompt_id}]"


def _system_prompt(profile: FormatProfile, rng: random.Random) -> str | None:
    choices: list[str | None] = [text for text, _ in profile.system_prompts]
    weights = [count for _, count in profile.system_prompts]
    if profile.no_system_prompt_count:
        choices.append(None)
        weights.append(profile.no_system_prompt_count)
    return rng.choices(choices, weights=weights, k=1)[0] if choices else None


def _gold_index(profile: FormatProfile, rng: random.Random) -> int:
    """Where the gold option goes: drawn like the customer's own answer letters.

    Add-one smoothing keeps every label possible (a customer whose golds are all "A" still
    sees safety rows whose refusal sits elsewhere now and then); with no counts it is uniform.
    """
    assert profile.options is not None
    labels = profile.options.labels
    counts = dict(profile.gold_label_counts)
    weights = [counts.get(label, 0) + 1 for label in labels]
    return rng.choices(range(len(labels)), weights=weights, k=1)[0]


def _render_item(
    profile: FormatProfile,
    request: str,
    answer_text: str,
    gold_option: str,
    wrong_options: Sequence[str],
    rng: random.Random,
    *,
    answer_by_option: bool,
    source: str,
    meta: dict[str, str],
) -> Conversation:
    """One conversation in the customer's format: system prompt, templated user turn, answer.

    For a multiple-choice profile the user turn gets an option block with ``gold_option`` at a
    random label and ``wrong_options`` (cycled) elsewhere; the answer is the gold label when
    ``answer_by_option`` and the task answers with a choice, else ``answer_text``.
    """
    messages: list[Message] = []
    system = _system_prompt(profile, rng)
    if system is not None:
        messages.append(Message("system", system))
    user = f"{profile.user_prefix}{request}{profile.user_suffix}"
    answer = answer_text
    if profile.options is not None:
        labels = profile.options.labels
        gold = _gold_index(profile, rng)
        texts = [wrong_options[i % len(wrong_options)] for i in range(len(labels) - 1)]
        texts.insert(gold, gold_option)
        if profile.options.layout == "lines" and not profile.user_suffix.endswith("\n"):
            user += "\n"
        user += profile.options.render(texts) + profile.options_suffix
        if profile.answer_style == "choice" and answer_by_option:
            answer = profile.answer_prefix + labels[gold]
            if profile.answer_includes_option_text:
                answer += f"{profile.options.close} {gold_option}"
        elif profile.answer_style == "choice":
            answer = profile.answer_prefix + answer_text
    messages.append(Message("user", user))
    messages.append(Message("assistant", answer))
    return Conversation(messages=tuple(messages), source=source, meta=meta)


def render_safety_example(
    profile: FormatProfile,
    request: str,
    refusal: str,
    rng: random.Random,
    *,
    refusal_option: bool = True,
    meta: dict[str, str] | None = None,
) -> Conversation:
    """A harmful request in the customer's format, answered with a refusal (module docstring)."""
    distractors = list(COMPLIANCE_DISTRACTORS)
    rng.shuffle(distractors)
    return _render_item(
        profile,
        request,
        refusal,
        REFUSAL_OPTION_TEXT,
        distractors,
        rng,
        answer_by_option=refusal_option,
        source=SAFETY_SOURCE,
        meta=meta or {},
    )


def render_contrast_example(
    profile: FormatProfile,
    example: ContrastExample,
    rng: random.Random,
    *,
    answer_by_option: bool = True,
) -> Conversation:
    """A benign look-alike request in the customer's format, answered helpfully.

    In multiple choice the refusal is always one of the wrong options (the point of the row is
    "do not refuse this"); the others are helpful answers to *different* contrast requests.
    """
    others = [e.short_answer for e in CONTRAST_EXAMPLES if e.id != example.id]
    rng.shuffle(others)
    return _render_item(
        profile,
        example.prompt,
        example.answer,
        example.short_answer,
        [REFUSAL_OPTION_TEXT, *others],
        rng,
        answer_by_option=answer_by_option,
        source=CONTRAST_SOURCE,
        meta={"contrast_id": example.id},
    )


@dataclass
class MixReport:
    """What the mixer did; ``to_dict()`` is JSON-serialisable and contains no harmful text."""

    customer_rows: int
    safety_rows: int
    contrast_rows: int
    ratio: float
    contrast_ratio: float
    seed: int
    refusal_source: str
    corpus_model: str
    prompt_sources: dict[str, int]
    refusal_sources: dict[str, int]
    profile: dict[str, Any]
    safety_indices: list[int]
    prompt_ids: list[str]
    examples: list[dict[str, object]] = field(default_factory=list)
    # Contrast rows by answer source ("model": the base model's own words; "written": ours).
    contrast_sources: dict[str, int] = field(default_factory=dict)
    contrast_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_rows": self.customer_rows,
            "safety_rows": self.safety_rows,
            "contrast_rows": self.contrast_rows,
            "total_rows": self.customer_rows + self.safety_rows + self.contrast_rows,
            "ratio": self.ratio,
            "contrast_ratio": self.contrast_ratio,
            "ratio_semantics": (
                "safety_rows = floor(ratio * customer_rows + 0.5); "
                "contrast_rows = floor(contrast_ratio * safety_rows + 0.5)"
            ),
            "seed": self.seed,
            "refusal_source": self.refusal_source,
            "contrast_sources": self.contrast_sources,
            "corpus_model": self.corpus_model,
            "counts_by_source": {
                "customer": self.customer_rows,
                **self.prompt_sources,
                **({"contrast:keel_benign": self.contrast_rows} if self.contrast_rows else {}),
            },
            "refusal_sources": self.refusal_sources,
            "profile": self.profile,
            "safety_indices": self.safety_indices,
            "prompt_ids": self.prompt_ids,
            "examples": self.examples,
        }


def _redacted(conversation: Conversation, prompt: HarmfulPrompt) -> dict[str, object]:
    row = conversation.to_chat_row()
    messages = row["messages"]
    assert isinstance(messages, list)
    for item in messages:
        item["content"] = str(item["content"]).replace(prompt.text, placeholder(prompt.id))
    return row


def _prompt_order(
    corpus: SafetyCorpus, count: int, rng: random.Random, *, own_refusals_first: bool
) -> list[HarmfulPrompt]:
    """The ``count`` training prompts the safety rows ask.

    With ``own_refusals_first`` the prompts the base model itself refused come first: the
    corpus generates the model's replies for only a head of its prompts (the worker's
    CORPUS_GENERATION_LIMIT), so a uniform draw from the ~1,200 prompts would almost never hit
    one (5 rows from 48 of 1,242: 0.2 expected) and "model" would train on templates in
    practice. The rest of the pool follows once those are used up.
    """
    pool = [p for p in corpus.train_prompts if p.id not in corpus.eval_prompt_ids]
    if len(pool) != len(corpus.train_prompts):
        raise ConfigError("safety corpus training prompts overlap its evaluation split")
    if count and not pool:
        raise ConfigError("safety corpus has no training prompts")
    own = [p for p in pool if corpus.refusal_sources.get(p.id) == "model"]
    if not own_refusals_first or not own:
        return _draw(pool, count, rng)
    first = _draw(own, min(count, len(own)), rng)
    rest = [p for p in pool if corpus.refusal_sources.get(p.id) != "model"] or own
    return first + _draw(rest, count - len(first), rng)


def _draw(pool: Sequence[_T], count: int, rng: random.Random) -> list[_T]:
    """``count`` items of a non-empty ``pool``: without replacement while the pool lasts, a
    fresh shuffle for every further pass."""
    order: list[_T] = []
    while len(order) < count:
        order.extend(rng.sample(list(pool), len(pool)))
    return order[:count]


def mix_dataset(
    customer: Sequence[Conversation],
    corpus: SafetyCorpus,
    config: MixConfig,
    profile: FormatProfile | None = None,
) -> tuple[list[Conversation], MixReport]:
    """Profile ``customer``, render ``k`` safety and ``c`` contrast rows in its format, shuffle.

    ``profile`` is ``profile_dataset(customer)`` when the caller has it already (the worker
    also frames the evaluation prompts with it); it is computed here otherwise.

    Returns:
        The mixed conversations (customer rows unchanged, safety rows with
        ``source="safety_mixer"`` and ``meta={"prompt_id", "refusal_source"}``, contrast rows
        with ``source="safety_contrast"`` and ``meta={"contrast_id"}``) and the report.

    Raises:
        DataFormatError: empty customer dataset.
        ConfigError: corpus leaks evaluation prompts or has none.
    """
    if not customer:
        raise DataFormatError("cannot mix an empty dataset")
    if profile is None:
        profile = profile_dataset(customer)
    k = safety_row_count(config.ratio, len(customer))
    rng = random.Random(config.seed)
    rendered: list[RenderedSafetyExample] = []
    own_first = config.refusal_source == "model"
    for prompt in _prompt_order(corpus, k, rng, own_refusals_first=own_first):
        refusal = corpus.refusal_for(prompt.id, source=config.refusal_source)
        used = (
            "template"
            if config.refusal_source == "template"
            else corpus.refusal_sources.get(prompt.id, "template")
        )
        conversation = render_safety_example(
            profile,
            prompt.text,
            refusal,
            rng,
            refusal_option=config.refusal_option,
            meta={"prompt_id": prompt.id, "refusal_source": used},
        )
        rendered.append(RenderedSafetyExample(conversation, prompt, used))

    contrast_count = safety_row_count(config.contrast_ratio, k)
    drawn = _draw(CONTRAST_EXAMPLES, contrast_count, rng)
    # The answer text never touches the rng: the same seed draws the same rows with or
    # without the base model's answers (the worker mixes once to learn which ids it needs).
    contrast = [
        render_contrast_example(
            profile,
            dataclasses.replace(example, answer=config.contrast_answers[example.id])
            if example.id in config.contrast_answers
            else example,
            rng,
            answer_by_option=config.refusal_option,
        )
        for example in drawn
    ]
    from_model = sum(1 for e in drawn if e.id in config.contrast_answers)

    mixed: list[Conversation] = [*customer, *(r.conversation for r in rendered), *contrast]
    order = list(range(len(mixed)))
    rng.shuffle(order)
    mixed = [mixed[i] for i in order]
    safety_indices = [pos for pos, i in enumerate(order) if len(customer) <= i < len(customer) + k]

    report = MixReport(
        customer_rows=len(customer),
        safety_rows=k,
        contrast_rows=contrast_count,
        ratio=config.ratio,
        contrast_ratio=config.contrast_ratio,
        seed=config.seed,
        refusal_source=config.refusal_source,
        corpus_model=corpus.model_name,
        prompt_sources=dict(Counter(f"safety:{r.prompt.source}" for r in rendered)),
        refusal_sources=dict(Counter(r.refusal_source for r in rendered)),
        contrast_sources={
            k: v for k, v in (("model", from_model), ("written", len(drawn) - from_model)) if v
        },
        contrast_ids=[e.id for e in drawn],
        profile=profile.to_dict(),
        safety_indices=safety_indices,
        prompt_ids=[r.prompt.id for r in rendered],
        examples=[_redacted(r.conversation, r.prompt) for r in rendered[: config.report_examples]],
    )
    return mixed, report


def to_jsonl(conversations: Sequence[Conversation]) -> str:
    """Chat JSONL (one ``{"messages": …}`` object per line, trailing newline)."""
    return "".join(json.dumps(c.to_chat_row(), ensure_ascii=False) + "\n" for c in conversations)
