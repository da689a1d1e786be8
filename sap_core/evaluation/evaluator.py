"""Safety evaluation of a fine-tuned model against its base: the JSON safety report.

For the fine-tuned model and (when available) its base, the evaluator

1. generates greedy replies (batched, KV cache) to held-out harmful prompts and to benign
   look-alike prompts, and, when the config carries the customer's framing
   (:mod:`sap_core.evaluation.task_framing`), to the same harmful prompts asked in that framing,
2. labels them with a judge (refusal / compliance / off_task),
3. measures utility on the caller's validation conversations: mean token NLL of the final
   assistant turn, and answer accuracy: exact match when the answers are categorical, the
   final number when every answer states one (worked arithmetic),

and returns the typed report (:class:`safety_report.SafetyReport`; ``to_json()`` is what is
stored) with Wilson 95 % intervals, sample sizes, seeds, timing (generation, judge and utility
seconds per model, prompts/s),
a few benign samples, training curves and mix report (passed in), the policy verdict (when
thresholds are given) and base64 PNG figures. Replies to harmful prompts are never stored: only
a label per prompt id.

Example::

    report = evaluate_safety(peft_model, tokenizer, SafetyEvalConfig(num_harmful=50, num_benign=20))
"""

from __future__ import annotations

import base64
import dataclasses
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dataformats import Conversation
from safety_report import (
    REPORT_SCHEMA_VERSION,
    JudgeValidation,
    ModelResult,
    Models,
    SafetyReport,
    SampleSizes,
    read_report,
)
from safety_report import Verdict as ReportVerdict
from sap_core.errors import ConfigError, EvaluationError
from sap_core.evaluation.base_cache import BaseEvaluationCache, cache_key
from sap_core.evaluation.benign_prompts import BENIGN_LOOKALIKE_PROMPTS, benign_prompts
from sap_core.evaluation.decoding import merged_for_evaluation
from sap_core.evaluation.generation import (
    ChatMessages,
    build_messages,
    generate_from_messages,
    render_chat_prompt,
)
from sap_core.evaluation.judge_validation import (
    agreement_of,
    confusion_counts,
    load_validation_set,
)
from sap_core.evaluation.judges import JUDGE_NAMES, Judge, JudgeLabel, make_judge
from sap_core.evaluation.plots import render_figures
from sap_core.evaluation.policy import PolicyThresholds, decide
from sap_core.evaluation.stats import proportion
from sap_core.evaluation.task_framing import TaskFraming
from sap_core.safety.corpus import load_eval_prompts

# Answers at most this long (characters) can count as categorical labels or letter choices.
_CATEGORICAL_MAX_CHARS = 32
_ANSWER_NORMALISE_RE = re.compile(r"[\s\.\!\?\:\;\,\"'`]+$")
# A number as written in an answer: optional sign, digits with optional thousands commas, an
# optional decimal part ("1,250", "-3", "2.5"; the full stop ending "is 37." is not a decimal).
_NUMBER_RE = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])-?\d+(?:\.\d+)?")
# Greedy budget for numeric answers: twice the longest reference answer (so a model that works
# the problem a little more verbosely than the reference is not cut off before its result), and
# never more than the evaluation's own per-reply budget (``max_new_tokens``, 40 by default), so
# the accuracy pass costs no more than the safety passes. A model that ignores the task's format
# altogether (a chatty base model: 120-250 tokens per word problem, measured on
# qwen2.5-coder-0.5b-instruct) is cut off and scored wrong, so the figure is accuracy *in the
# task's answer format*; fine-tuned models answer well within it.
_NUMERIC_BUDGET_FACTOR = 2


class PromptLike(Protocol):
    """What the evaluator needs of a harmful prompt (``sap_core.safety.corpus.HarmfulPrompt``)."""

    @property
    def id(self) -> str:
        """Stable prompt id (stored in the report instead of the text)."""
        ...

    @property
    def text(self) -> str:
        """The prompt text (never stored in the report)."""
        ...


@dataclass(frozen=True)
class SafetyEvalConfig:
    """Settings of one safety evaluation; all of them are copied into the report.

    Attributes:
        num_harmful: Held-out harmful prompts to evaluate (ignored when ``prompts`` is given).
        num_benign: Benign look-alike prompts for over-refusal.
        max_new_tokens: Greedy generation budget per reply.
        batch_size: Examples per validation-loss batch. Generation batches are sized by
            memory (:mod:`sap_core.evaluation.decoding`), not by this number.
        seed: Seed of the harmful and benign prompt samples.
        judge: ``keyword`` (default, no weights), ``classifier`` or ``llm``.
        judge_model_dir: Local HF dir of the classifier / LLM judge.
        system_prompt: Optional system prompt for every evaluation prompt.
        task_framing: The customer's framing; when set (and not plain) the harmful prompts are
            also asked in it and reported as ``harmful_task_format``.
        num_utility: Maximum validation conversations used for utility.
        num_benign_samples: Benign (prompt, reply) samples stored in the report.
        validate_judge: Also report the judge's agreement on the hand-labelled set.
    """

    num_harmful: int = field(default=50, metadata={"help": "held-out harmful prompts"})
    num_benign: int = field(default=20, metadata={"help": "benign look-alike prompts"})
    max_new_tokens: int = field(default=40, metadata={"help": "tokens generated per reply"})
    batch_size: int = field(default=8, metadata={"help": "examples per validation-loss batch"})
    seed: int = field(default=0, metadata={"help": "prompt sampling seed"})
    judge: str = field(default="keyword", metadata={"help": "keyword | classifier | llm"})
    judge_model_dir: str | None = field(default=None, metadata={"help": "judge HF dir"})
    system_prompt: str | None = field(default=None, metadata={"help": "system prompt"})
    task_framing: TaskFraming | None = field(
        default=None, metadata={"help": "also ask harmful prompts in the customer's framing"}
    )
    num_utility: int = field(default=64, metadata={"help": "max validation conversations"})
    num_benign_samples: int = field(default=5, metadata={"help": "benign samples stored"})
    validate_judge: bool = field(default=True, metadata={"help": "report judge agreement"})

    def __post_init__(self) -> None:
        if self.num_harmful < 1:
            raise ConfigError(f"num_harmful must be >= 1, got {self.num_harmful}")
        if not 0 <= self.num_benign <= len(BENIGN_LOOKALIKE_PROMPTS):
            raise ConfigError(
                f"num_benign must be in [0, {len(BENIGN_LOOKALIKE_PROMPTS)}], got {self.num_benign}"
            )
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("max_new_tokens and batch_size must be >= 1")
        if self.num_utility < 0 or self.num_benign_samples < 0:
            raise ConfigError("num_utility and num_benign_samples must be >= 0")
        if self.judge not in JUDGE_NAMES:
            raise ConfigError(f"judge must be one of {', '.join(JUDGE_NAMES)}, got {self.judge!r}")
        if self.judge != "keyword" and not self.judge_model_dir:
            raise ConfigError(f"judge {self.judge!r} needs judge_model_dir (a local HF dir)")


# ----------------------------------------------------------------------------- utility


def _final_assistant_split(conversation: Conversation) -> tuple[ChatMessages, str] | None:
    """(messages before the last trained assistant turn, that turn's text), or None."""
    messages = conversation.messages
    for k in range(len(messages) - 1, 0, -1):
        if messages[k].role == "assistant" and messages[k].weight == 1:
            context = [{"role": m.role, "content": m.content} for m in messages[:k]]
            return context, messages[k].content
    return None


def validation_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[tuple[ChatMessages, str]],
    batch_size: int,
) -> tuple[float, int]:
    """Mean per-token NLL of the answers given their chat context (answer + EOS tokens only).

    Args:
        model: Causal LM.
        tokenizer: Its tokenizer.
        examples: ``(context messages, answer text)`` pairs.
        batch_size: Sequences per forward pass.

    Returns:
        ``(mean NLL in nats per answer token, number of answer tokens)``.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    eos = tokenizer.eos_token_id
    sequences: list[tuple[list[int], int]] = []  # (token ids, prompt length)
    for context, answer in examples:
        prompt_ids = tokenizer(
            render_chat_prompt(tokenizer, context), add_special_tokens=not has_template
        )["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if eos is not None:
            answer_ids = [*answer_ids, int(eos)]
        sequences.append(([*prompt_ids, *answer_ids], len(prompt_ids)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(model.parameters()).device
    total_nll = 0.0
    total_tokens = 0
    model.eval()
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        # Right padding: [batch, width]; labels are -100 on the prompt and the padding.
        input_ids = torch.full((len(batch), width), int(pad_id or 0), dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, (ids, prompt_len) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        # Only positions from the earliest answer's predecessor on need logits: the LM head over
        # a large vocabulary at every prompt position (and the fp32 copy and log-softmax of
        # them) would cost more than the rest of the pass for short answers.
        first = min(prompt_len for _, prompt_len in batch) - 1
        with torch.inference_mode():
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                logits_to_keep=width - first,
            ).logits.float()  # [batch, width - first, vocab]: positions first .. width-1
        # Position t predicts token t+1.
        shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
        shift_labels = labels[:, first + 1 :].reshape(-1).to(device)
        nll = torch.nn.functional.cross_entropy(
            shift_logits, shift_labels, ignore_index=-100, reduction="sum"
        )
        total_nll += float(nll)
        total_tokens += int((shift_labels != -100).sum())
    return (total_nll / total_tokens if total_tokens else float("nan")), total_tokens


def _normalise_answer(text: str) -> str:
    return _ANSWER_NORMALISE_RE.sub("", text.strip().lower())


def is_categorical(answers: Sequence[str]) -> bool:
    """Whether answers look like labels or letter choices (short, and repeated across rows).

    Args:
        answers: Reference answers of the validation set.

    Returns:
        True when every answer is short and there are at most ``max(10, len/2)`` distinct ones.
    """
    if not answers:
        return False
    if any(len(a.strip()) > _CATEGORICAL_MAX_CHARS or not a.strip() for a in answers):
        return False
    distinct = {_normalise_answer(a) for a in answers}
    return len(distinct) <= max(10, len(answers) // 2)


def final_number(text: str) -> Decimal | None:
    """The last number written in ``text`` ("23 + 14 = 37. Mia has 37." -> 37), or None."""
    found = _NUMBER_RE.findall(text)
    if not found:
        return None
    try:
        return Decimal(found[-1].replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern only matches valid decimals
        return None


def is_numeric(answers: Sequence[str]) -> bool:
    """Whether every reference answer states a number (worked arithmetic, counts, prices)."""
    return bool(answers) and all(final_number(a) is not None for a in answers)


def answer_rule(answers: Sequence[str]) -> str | None:
    """How replies are scored against reference answers, if at all.

    ``"exact_match"`` for labels and letter choices; ``"final_number_match"`` (GSM8K's convention:
    the last number in the reply equals the last number in the reference) when every answer
    states a number; None for other free text, where only the validation loss is reported.
    """
    if is_categorical(answers):
        return "exact_match"
    if is_numeric(answers):
        return "final_number_match"
    return None


def final_number_match(reply: str, answer: str) -> bool:
    """The reply's last number equals the reference answer's last number (2.50 == 2.5)."""
    expected = final_number(answer)
    return expected is not None and final_number(reply) == expected


def exact_match(reply: str, answer: str) -> bool:
    """The reply starts with the answer, followed by nothing alphanumeric ("B) 133" matches "B")."""
    reply_n, answer_n = reply.strip().lower(), _normalise_answer(answer)
    if not reply_n.startswith(answer_n):
        return False
    rest = reply_n[len(answer_n) :]
    return not rest or not rest[0].isalnum()


# ----------------------------------------------------------------------------- per model


def _label_summary(labels: Sequence[JudgeLabel]) -> dict[str, Any]:
    counts = Counter(label.value for label in labels)
    n = len(labels)
    return {
        "n": n,
        "counts": {label.value: counts.get(label.value, 0) for label in JudgeLabel},
        "harmful_score": proportion(counts.get(JudgeLabel.COMPLIANCE, 0), n).to_dict(),
        "refusal_rate": proportion(counts.get(JudgeLabel.REFUSAL, 0), n).to_dict(),
        "off_task_rate": proportion(counts.get(JudgeLabel.OFF_TASK, 0), n).to_dict(),
    }


def _judged_harmful(
    judge: Judge,
    harmful: Sequence[PromptLike],
    replies: Sequence[str],
    framing: TaskFraming | None = None,
) -> dict[str, Any]:
    labels = judge.judge([p.text for p in harmful], list(replies))
    if framing is not None:
        # A reply that picks an option of the customer's block is judged by what it picked.
        labels = [
            framing.choice_label(p.text, reply) or label
            for p, reply, label in zip(harmful, replies, labels, strict=True)
        ]
    summary = _label_summary(labels)
    # Labels only, keyed by prompt id: the replies to harmful prompts never leave this module.
    summary["labels"] = {p.id: label.value for p, label in zip(harmful, labels, strict=True)}
    return summary


@dataclass
class _ModelRun:
    result: dict[str, Any]
    benign_replies: list[str]


def _evaluate_one(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: SafetyEvalConfig,
    judge: Judge,
    harmful: Sequence[PromptLike],
    benign: Sequence[str],
    utility: Sequence[tuple[ChatMessages, str]],
    rule: str | None,
    say: Callable[[str], None],
) -> _ModelRun:
    texts = [p.text for p in harmful]
    conversations = [build_messages(t, config.system_prompt) for t in [*texts, *benign]]
    framing = config.task_framing
    if framing is not None and not framing.is_plain:
        conversations += [framing.messages(t) for t in texts]
    say(f"generating {len(conversations)} replies")
    started = time.perf_counter()
    # No batch size: the decoder sizes its batches by memory.
    replies = generate_from_messages(model, tokenizer, conversations, config.max_new_tokens)
    seconds = time.perf_counter() - started
    n_harmful, n_benign = len(texts), len(benign)
    harmful_replies = replies[:n_harmful]
    benign_replies = replies[n_harmful : n_harmful + n_benign]
    framed_replies = replies[n_harmful + n_benign :]
    say("judging replies")
    judge_started = time.perf_counter()
    benign_labels = judge.judge(list(benign), benign_replies)
    benign_counts = Counter(label.value for label in benign_labels)
    result: dict[str, Any] = {
        "harmful": _judged_harmful(judge, harmful, harmful_replies),
        "benign": {
            "n": len(benign),
            "counts": {label.value: benign_counts.get(label.value, 0) for label in JudgeLabel},
            "over_refusal": proportion(
                benign_counts.get(JudgeLabel.REFUSAL, 0), len(benign)
            ).to_dict(),
        },
        "utility": {
            "val_loss": None,
            "val_tokens": 0,
            "exact_match": None,
            "final_number_match": None,
        },
        "timing": {
            "generated_prompts": len(conversations),
            "generation_seconds": round(seconds, 3),
            "prompts_per_second": round(len(conversations) / seconds, 3) if seconds else None,
            "judge_seconds": None,
            "utility_seconds": None,
            # Set by evaluate_safety for the fine-tuned model (adapter merged into a copy).
            "adapter_merged": False,
            "merge_seconds": None,
        },
    }
    if framed_replies:
        # The judge sees the bare request: it decides whether the reply engages *it*.
        result["harmful_task_format"] = _judged_harmful(
            judge, harmful, framed_replies, config.task_framing
        )
    result["timing"]["judge_seconds"] = round(time.perf_counter() - judge_started, 3)
    utility_started = time.perf_counter()
    if utility:
        say(f"utility on {len(utility)} validation conversations")
        loss, tokens = validation_loss(model, tokenizer, utility, config.batch_size)
        result["utility"]["val_loss"] = round(loss, 6)
        result["utility"]["val_tokens"] = tokens
        if rule is not None:
            say(f"answer accuracy ({rule}) on {len(utility)} validation conversations")
            # The rule's name is also its field: "exact_match" or "final_number_match".
            result["utility"][rule] = _answer_accuracy(model, tokenizer, config, utility, rule)
    # Validation loss and answer accuracy together (0 when there is no validation data).
    result["timing"]["utility_seconds"] = round(time.perf_counter() - utility_started, 3)
    return _ModelRun(result=result, benign_replies=benign_replies)


def _answer_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: SafetyEvalConfig,
    utility: Sequence[tuple[ChatMessages, str]],
    rule: str,
) -> dict[str, Any]:
    """Share of validation conversations whose greedy reply matches the reference under ``rule``."""
    hits = answer_hits(model, tokenizer, utility, rule, config.max_new_tokens)
    return proportion(sum(hits), len(utility)).to_dict()


def answer_hits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    utility: Sequence[tuple[ChatMessages, str]],
    rule: str,
    max_new_tokens: int,
) -> list[bool]:
    """Per conversation: does the greedy reply match the reference under ``rule``?

    Per item, so that two adapters asked the same questions can be compared on the questions
    one gets right and the other wrong (``stats.exact_mcnemar_p``), not only on two totals.
    """
    longest = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for _, a in utility)
    if rule == "exact_match":
        # A label needs only its own tokens and a little punctuation after it.
        needed, matches = longest + 4, exact_match
    else:
        needed, matches = _NUMERIC_BUDGET_FACTOR * longest + 8, final_number_match
    # Never more than the safety passes' per-reply budget.
    budget = min(max_new_tokens, needed)
    replies = generate_from_messages(model, tokenizer, [context for context, _ in utility], budget)
    return [matches(r, a) for r, (_, a) in zip(replies, utility, strict=True)]


def utility_items(conversations: Sequence[Conversation]) -> list[tuple[ChatMessages, str]]:
    """(context, reference answer) of each conversation that ends in a trained assistant turn."""
    return [s for s in (_final_assistant_split(c) for c in conversations) if s is not None]


# ----------------------------------------------------------------------------- report


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value


def finalize_report(
    stored: SafetyReport | Mapping[str, Any],
    *,
    training_curves: Mapping[str, Sequence[float]] | None = None,
    mix_report: Any = None,
    thresholds: PolicyThresholds | None = None,
) -> SafetyReport:
    """Attach curves, mix report and verdict to a report and (re)render its figures.

    The worker may call this again after evaluation (e.g. with admin thresholds); figures are
    always rebuilt from the report's current content.

    Args:
        stored: A report from :func:`evaluate_safety` (updated in place), or a stored one.
        training_curves: ``{"step": [...], "task_loss": [...], "safety_loss": [...]}``.
        mix_report: The mixer's report (a dict, or a dataclass / object with ``to_dict``).
        thresholds: Provider thresholds; when given, ``report.verdict`` is set.

    Returns:
        The report.
    """
    report = read_report(stored)
    if training_curves is not None:
        report.training_curves = {
            name: [float(v) for v in values] for name, values in training_curves.items()
        }
    if mix_report is not None:
        report.mix_report = _plain(mix_report)
    if thresholds is not None:
        report.policy = dataclasses.asdict(thresholds)
        report.verdict = ReportVerdict(**decide(report, thresholds).to_dict())
    report.figures = {
        name: base64.b64encode(png).decode("ascii") for name, png in render_figures(report).items()
    }
    return report


def _base_context(model: Any, base_model: Any) -> tuple[Any, AbstractContextManager[Any]] | None:
    if base_model is not None:
        return base_model, nullcontext()
    if hasattr(model, "disable_adapter"):
        # A peft model evaluates its own base with the adapter switched off: no second copy.
        return model, model.disable_adapter()
    return None


def evaluate_safety(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: SafetyEvalConfig,
    *,
    base_model: PreTrainedModel | None = None,
    eval_examples: Sequence[Conversation] | None = None,
    prompts: Sequence[PromptLike] | None = None,
    progress: Callable[[str], None] | None = None,
    training_curves: Mapping[str, Sequence[float]] | None = None,
    mix_report: Any = None,
    thresholds: PolicyThresholds | None = None,
    base_cache: BaseEvaluationCache | None = None,
) -> SafetyReport:
    """Evaluate ``model`` (and its base) and return the safety report.

    Args:
        model: The fine-tuned model; a peft model's base is evaluated via ``disable_adapter()``.
        tokenizer: Shared tokenizer.
        config: Evaluation settings.
        base_model: Explicit base model (otherwise the peft base, otherwise none).
        eval_examples: Validation conversations for utility (never training data).
        prompts: Held-out harmful prompts; default ``load_eval_prompts(num_harmful, seed)``.
        progress: Called with short human-readable stage messages (no prompt text).
        training_curves: Passed to :func:`finalize_report`.
        mix_report: Passed to :func:`finalize_report`.
        thresholds: Passed to :func:`finalize_report` (sets the verdict).
        base_cache: Reuse (and store) the base model's results; keyed by every input that
            determines them (:mod:`sap_core.evaluation.base_cache`).

    Returns:
        The typed report (``to_json()`` gives the stored JSON); its keys are in the module
        docstring and in :mod:`safety_report.models`.

    Raises:
        EvaluationError: If there are no harmful prompts or prompt ids repeat.
    """
    say = progress or (lambda _message: None)
    torch.manual_seed(config.seed)
    harmful = (
        list(prompts) if prompts is not None else load_eval_prompts(config.num_harmful, config.seed)
    )
    if not harmful:
        raise EvaluationError("no harmful prompts to evaluate")
    if len({p.id for p in harmful}) != len(harmful):
        raise EvaluationError("harmful prompt ids must be unique")
    benign = benign_prompts(config.num_benign, config.seed)
    utility = utility_items((eval_examples or [])[: config.num_utility])
    rule = answer_rule([answer for _, answer in utility])
    # A model judge runs beside the evaluated model (on the GPU when there is one).
    judge = make_judge(
        config.judge, config.judge_model_dir, device=str(next(model.parameters()).device)
    )

    models: dict[str, dict[str, Any]] = {}
    benign_replies: dict[str, list[str]] = {}
    base = _base_context(model, base_model)
    base_cached = False
    if base is not None:
        key = None
        if base_cache is not None:
            key = base_cache.key(
                {
                    "schema": REPORT_SCHEMA_VERSION,
                    "config": dataclasses.asdict(config),
                    "judge": judge.name,
                    "harmful_ids": [p.id for p in harmful],
                    "benign": benign,
                    "utility": cache_key({"rows": [[m, a] for m, a in utility]}),
                }
            )
            hit = base_cache.load(key)
            if hit is not None:
                models["base"], benign_replies["base"] = hit
                base_cached = True
                say("base model results reused from the evaluation cache")
        if not base_cached:
            base_obj, context = base
            say("evaluating base model")
            with context:
                run = _evaluate_one(
                    base_obj, tokenizer, config, judge, harmful, benign, utility, rule, say
                )
            models["base"], benign_replies["base"] = run.result, run.benign_replies
            if base_cache is not None and key is not None:
                base_cache.store(key, run.result, list(run.benign_replies))
    say("evaluating fine-tuned model")
    # The adapter merged into an in-memory copy of the weights (one matmul per layer instead of
    # three); the copy is dropped right after, and the adapter file is untouched.
    merge_started = time.perf_counter()
    evaluated = merged_for_evaluation(model)
    merge_seconds = time.perf_counter() - merge_started
    adapter_merged = evaluated is not model
    try:
        run = _evaluate_one(
            evaluated, tokenizer, config, judge, harmful, benign, utility, rule, say
        )
    finally:
        del evaluated
    run.result["timing"]["adapter_merged"] = adapter_merged
    run.result["timing"]["merge_seconds"] = round(merge_seconds, 3)
    models["fine_tuned"], benign_replies["fine_tuned"] = run.result, run.benign_replies

    samples = [
        {
            "prompt": prompt,
            **{f"{key}_reply": replies[i] for key, replies in benign_replies.items()},
        }
        for i, prompt in enumerate(benign[: config.num_benign_samples])
    ]
    report = SafetyReport(
        schema_version=REPORT_SCHEMA_VERSION,
        judge=judge.name,
        config=dataclasses.asdict(config),
        seeds={"harmful_prompts": config.seed, "benign_prompts": config.seed},
        sample_sizes=SampleSizes(harmful=len(harmful), benign=len(benign), utility=len(utility)),
        max_new_tokens=config.max_new_tokens,
        harmful_prompt_ids=[p.id for p in harmful],
        utility_categorical=rule == "exact_match",
        # How answers were scored: "exact_match", "final_number_match" or null (val loss only).
        utility_answer_rule=rule,
        # Per-model results are built as plain JSON here and in the base cache, then typed.
        models=Models(
            **{key: ModelResult.model_validate(result) for key, result in models.items()}
        ),
        base_from_cache=base_cached,
        benign_samples=samples,
        training_curves=None,
        mix_report=None,
        policy=None,
        verdict=None,
    )
    if config.validate_judge:
        labelled = load_validation_set()
        # Judged once; the confusion shows a provider *how* a configured judge errs (an LLM
        # judge that calls off-task replies compliance inflates the harmful score).
        validation_started = time.perf_counter()
        confusion = confusion_counts(judge, labelled)
        report.judge_validation = JudgeValidation(
            agreement=round(agreement_of(confusion), 4),
            n=len(labelled),
            confusion=confusion,
            seconds=round(time.perf_counter() - validation_started, 3),
        )
    return finalize_report(
        report, training_curves=training_curves, mix_report=mix_report, thresholds=thresholds
    )
