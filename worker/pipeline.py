"""The ML half of a job, as a recipe: setup (model → plan → corpus → mix → tokenise) → train →
save → evaluate, then cleanup in a ``finally``.

Called by worker.runner with a claimed job; reports progress through the DbProgressCallback.
Nothing here writes to the database except through that callback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from dataformats import Conversation, Message
from db.base_model_scores import BaseModelScore, BaseModelScores
from db.blobs import BlobStore
from safety_report import SafetyReport, SapStrengthSummary
from sap_core.data import encode_triple, tokenize_dataset
from sap_core.errors import (
    DataFormatError,
    EvaluationError,
    ModelRegistryError,
    TrainingDeadlineExceeded,
)
from sap_core.evaluation.base_cache import BaseEvaluationCache
from sap_core.evaluation.evaluator import SafetyEvalConfig, evaluate_safety
from sap_core.evaluation.generation import generate_replies
from sap_core.evaluation.judges import JudgeLabel, KeywordJudge, is_refusal
from sap_core.evaluation.policy import PolicyThresholds
from sap_core.evaluation.task_framing import TaskFraming, framing_from_profile
from sap_core.models.loading import load_model_and_tokenizer
from sap_core.models.registry import pull_model, resolve_model, weights_sha256
from sap_core.safety.contrast_voice import (
    CONTRAST_ANSWER_TOKENS,
    base_model_contrast_answers,
    complete_paragraphs,
    contrast_fingerprint,
)
from sap_core.safety.corpus import SafetyCorpus, build_corpus
from sap_core.safety.mixer import MixConfig, mix_dataset
from sap_core.safety.profiler import FormatProfile, profile_dataset
from sap_core.sap_strength import sap_strength_of
from sap_core.trainer import SafetyAwareTrainer, TrainResult
from worker.artifacts import JobPaths, package_adapter, reset_dir
from worker.deadline import TrainingDeadline, spent_in
from worker.distributed_job import DistributedTraining
from worker.faults import maybe_die
from worker.job_spec import JobPlan
from worker.progress import DbProgressCallback
from worker.settings import WorkerSettings
from worker.shutdown import ShutdownRequested

log = logging.getLogger("keel.worker.pipeline")

# Triples for SAP's safety direction: enough distinct batches that the direction is not one
# fixed batch replayed (reference bug B11), few enough to tokenise in a second.
MAX_SAFETY_TRIPLES = 256
# Safety sequences are cut at this many tokens (prompt + response): the direction is set by
# how the response *starts* (comply vs refuse), and on a 150k-vocabulary model the full-length
# harmful responses (~300 tokens) made the safety pass cost 4x the rest of a SAP step on CPU.
MAX_SAFETY_TOKENS = 128
# Safe responses for the corpus come from the base model on this many prompts (its own refusal
# style); the rest fall back to template refusals.
CORPUS_GENERATION_LIMIT = 64


@dataclass(frozen=True)
class PipelineResult:
    adapter_zip: Path
    adapter_sha256: str
    report: SafetyReport | None
    evaluation_error: str | None
    trained_tokens: int
    plan: JobPlan
    mix_report: dict[str, Any] | None


def resolve_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _load_or_build_corpus(
    model_name: str,
    corpus_root: Path,
    model: Any,
    tokenizer: Any,
    refusal_source: str,
    say: Callable[[str], None],
) -> SafetyCorpus:
    out_dir = corpus_root / model_name
    generate = None
    if refusal_source == "model":

        def generate(prompts: list[str]) -> list[str]:
            head = prompts[:CORPUS_GENERATION_LIMIT]
            replies = generate_replies(model, tokenizer, head, max_new_tokens=48, batch_size=8)
            return replies + [""] * (len(prompts) - len(head))

    say(f"Loading the safety corpus for {model_name}")
    return build_corpus(model_name, out_dir, generate_refusals=generate, is_refusal=is_refusal)


def safety_pairs(corpus: SafetyCorpus, tokenizer: Any, max_length: int) -> list[Any]:
    """SAP's safety triples as the worker trains on them: at most MAX_SAFETY_TRIPLES, each cut
    at min(max_length, MAX_SAFETY_TOKENS) tokens."""
    max_length = min(max_length, MAX_SAFETY_TOKENS)
    pairs = []
    for triple in corpus.triples[:MAX_SAFETY_TRIPLES]:
        encoded = encode_triple(
            tokenizer, [Message("user", triple.prompt)], triple.safe, triple.harmful, max_length
        )
        if encoded is not None:
            pairs.append(encoded)
    return pairs


class EvaluationTimeout(EvaluationError):
    code = "safety_evaluation_timeout"


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise EvaluationTimeout in this (main) thread after `seconds`; the gate then fails closed.

    Celery's prefork child runs the task on its main thread, where SIGALRM can interrupt a long
    generation between torch ops. Elsewhere (threads) no deadline can be enforced this way.
    """
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise EvaluationTimeout(f"safety evaluation exceeded {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _epoch_basis(plan: JobPlan) -> str:
    """What the step count was sized on, when the mixer added rows (policy mixer.epochs_over)."""
    if not plan.mix.enabled:
        return ""
    if plan.mix.epochs_over == "customer_rows":
        return " (epochs counted over the customer's rows; safety rows shuffled in)"
    return " (epochs counted over customer and safety rows)"


@contextlib.contextmanager
def _phase(callback: DbProgressCallback, name: str) -> Iterator[None]:
    callback.heartbeat({"phase": name}, force=True)
    yield


class JobRecipe:
    """One job as a recipe: ``setup → train → save → evaluate``, then ``cleanup`` whatever happened.

    Each step is a method that reads what the previous ones left on the instance; `run` calls
    them in order, with `cleanup` in a ``finally`` (pause, cancel and divergence end `train` with
    an exception, and the trainer's hooks and GPU memory must still be released). The job is
    planned once, in `setup`; only its schedule is sized to the mixed, tokenised data
    (`JobPlan.for_examples`).
    """

    def __init__(
        self,
        *,
        job_id: str,
        tenant_id: str,
        model_name: str,
        conversations: Sequence[Conversation],
        validation: Sequence[Conversation] | None,
        plan_factory: Callable[[int, Path], JobPlan],
        paths: JobPaths,
        callback: DbProgressCallback,
        settings: WorkerSettings,
        resume_from: Path | None,
        attempt: int = 1,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt  # the claim this run is (the test-only fault hook reads it)
        self.tenant_id = tenant_id
        self.model_name = model_name
        self.conversations = conversations
        self.validation = validation
        self.plan_factory = plan_factory
        self.paths = paths
        self.callback = callback
        self.settings = settings
        self.resume_from = resume_from
        self.say = callback.event
        self.trainer: SafetyAwareTrainer | None = None
        # Set instead of `trainer` when the job trains on several processes (torchrun).
        self.distributed: DistributedTraining | None = None
        self.report: SafetyReport | None = None
        self.evaluation_error: str | None = None

    # ------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """Model, plan, judge weights, corpus, profile, mix, tokenised examples."""
        say, settings, conversations = self.say, self.settings, self.conversations
        with _phase(self.callback, "preparing"):
            model_dir = _ensure_model(self.model_name, settings.model_cache_dir, say)
            self.base_sha = weights_sha256(model_dir)
            torch.set_num_threads(max(1, torch.get_num_threads()))
            device = resolve_device(settings.device)
            self.model, self.tokenizer = load_model_and_tokenizer(model_dir, device=device)
            plan = self.plan_factory(len(conversations), model_dir)
            # The judge's weights are resolved before training: a policy naming a judge that is
            # not available fails the job now (model_unavailable), not after the training.
            judge_model = plan.evaluation.judge_model
            self.judge_dir = (
                _ensure_model(judge_model, settings.model_cache_dir, say) if judge_model else None
            )
            corpus = _load_or_build_corpus(
                self.model_name,
                settings.corpus_dir,
                self.model,
                self.tokenizer,
                plan.mix.refusal_source,
                say,
            )
            # One profile of the customer's rows: the mixer renders safety rows in it and the
            # evaluation asks the harmful prompts in its framing.
            self.profile = profile_dataset(conversations)
            mixed, self.mix_report = self._mix(plan, corpus)
            self.examples, skipped = tokenize_dataset(self.tokenizer, mixed, plan.train.max_length)
            if not self.examples:
                raise DataFormatError("no example fits max_length once tokenised")
            if skipped:
                say(f"Skipped {skipped} examples whose prompt fills max_length", level="warn")
            self.pairs = safety_pairs(corpus, self.tokenizer, plan.train.max_length)
            # The step count follows the mixed data size, and the policy's token budget at
            # its mean length (what the trainer counts: non-padding tokens after truncation).
            max_length = plan.train.max_length
            mean_tokens = sum(min(len(e.input_ids), max_length) for e in self.examples) / len(
                self.examples
            )
            self.plan = plan.for_examples(
                len(self.examples), mean_tokens, customer_rows=len(conversations)
            )
            if self.plan.resolved.get("steps_cut_by"):
                say(
                    f"Training cut to {self.plan.train.max_steps} steps by the provider's "
                    f"training.{self.plan.resolved['steps_cut_by']} limit",
                    level="warn",
                )
            self.eval_examples = None
            if self.validation:
                self.eval_examples, _ = tokenize_dataset(
                    self.tokenizer, self.validation, self.plan.train.max_length
                )

    def _mix(
        self, plan: JobPlan, corpus: SafetyCorpus
    ) -> tuple[list[Conversation], dict[str, Any] | None]:
        conversations = list(self.conversations)
        if not plan.mix.enabled:
            return conversations, None
        config = MixConfig(
            ratio=plan.mix.ratio,
            seed=plan.train.seed,
            refusal_source=plan.mix.refusal_source,
            contrast_ratio=plan.mix.contrast_ratio,
        )
        mixed, mix = mix_dataset(conversations, corpus, config, self.profile)
        # A choice-style task answers contrast items with a letter: no answer text to replace.
        if (
            plan.mix.contrast_source == "model"
            and mix.contrast_ids
            and self.profile.answer_style != "choice"
        ):
            # The same seed draws the same rows: mix again with the base model's own answers.
            answers = self._base_contrast_answers(mix.contrast_ids, corpus)
            config = dataclasses.replace(config, contrast_answers=answers)
            mixed, mix = mix_dataset(conversations, corpus, config, self.profile)
        mix_report = mix.to_dict()
        sources = ", ".join(f"{n} {s}" for s, n in sorted(mix.contrast_sources.items()))
        self.say(
            f"Safety mixer: added {mix.safety_rows} format-matched refusal examples "
            f"(refusals: {', '.join(f'{n} {s}' for s, n in sorted(mix.refusal_sources.items()))})"
            f" and {mix.contrast_rows} helpful look-alike examples (answers: {sources or 'none'})"
            f" to {len(conversations)} customer examples (ratio {plan.mix.ratio})",
            type="mix_report",
            data=mix_report,
        )
        return mixed, mix_report

    def _base_contrast_answers(self, ids: list[str], corpus: SafetyCorpus) -> dict[str, str]:
        """The base model's own helpful answers to the drawn look-alikes (cached per model)."""
        model, tokenizer, base_sha = self.model, self.tokenizer, self.base_sha
        if not base_sha:  # no weights fingerprint: a cache could not tell models apart
            return {}
        judge = KeywordJudge()

        def generate(prompts: list[str]) -> list[str]:
            self.say(f"Base model answering {len(prompts)} look-alike prompts in its own words")
            replies = generate_replies(
                model, tokenizer, prompts, max_new_tokens=CONTRAST_ANSWER_TOKENS, batch_size=8
            )
            # A reply that used the whole budget was cut off: training on it would teach the
            # model to stop mid-sentence, so only its complete paragraphs are kept.
            budget = CONTRAST_ANSWER_TOKENS - 2
            return [
                r if len(tokenizer(r).input_ids) < budget else complete_paragraphs(r)
                for r in replies
            ]

        def keep(prompts: list[str], replies: list[str]) -> list[bool]:
            labels = judge.judge(prompts, replies)
            return [label == JudgeLabel.COMPLIANCE for label in labels]

        return base_model_contrast_answers(
            ids,
            self.settings.corpus_dir / self.model_name,
            contrast_fingerprint(base_sha),
            generate,
            keep,
        )

    # ------------------------------------------------------------------------------- train
    def train(self) -> None:
        """Build the trainer, resume from the last checkpoint if any, train."""
        plan, say = self.plan, self.say
        with _phase(self.callback, "training"):
            method = "SAP" if plan.train.sap.enabled else "plain SFT (SAP off by provider policy)"
            say(
                f"Training {self.model_name} with {method}: {plan.resolved['total_steps']} steps"
                f"{_epoch_basis(plan)}, batch {plan.train.batch_size}, "
                f"lr {plan.train.optim.lr:g}, LoRA r={plan.train.lora.r}",
                data={"plan": plan.resolved},
            )
            # The policy's training deadline, on the worker's clock (sap_core keeps none).
            limit = plan.training_seconds
            callback = self.callback if limit is None else TrainingDeadline(self.callback, limit)
            started = time.monotonic()
            try:
                if plan.n_processes > 1:
                    result = self._train_distributed(callback)
                else:
                    result = self._train_here(callback)
            except TrainingDeadlineExceeded as exc:
                raise TrainingDeadlineExceeded(
                    f"Training exceeded the provider's limit of {limit:g} s per job "
                    f"(training.max_training_seconds): {exc}"
                ) from None
            self.trained_tokens = int(sum(h.get("tokens", 0) for h in result.history))
            say(
                f"Training finished in {time.monotonic() - started:.0f} s ({result.steps} steps)",
                data={"final_metrics": result.final_metrics},
            )
            self.curves = _training_curves(result.history)
            self.sap_strength = sap_strength_of(result.history)

    def _train_here(self, callback: Any) -> TrainResult:
        """Train in this process (n_processes 1): the trainer stays for save and evaluate."""
        plan, say = self.plan, self.say
        self.trainer = trainer = SafetyAwareTrainer(
            plan.train,
            self.examples,
            self.pairs,
            callback,
            eval_examples=self.eval_examples,
            model=self.model,
            tokenizer=self.tokenizer,
        )
        trainer.setup()
        if self.resume_from is not None and self.resume_from.exists():
            trainer.resume_from(self.resume_from)
            say(
                f"Resuming from checkpoint at step {trainer.step}",
                type="resume",
                data={"step": trainer.step},
            )
        if isinstance(callback, TrainingDeadline):
            # Steps an earlier attempt trained count against the same deadline.
            callback.already_spent = spent_in(trainer.history)
        return trainer.train()

    def _train_distributed(self, callback: Any) -> TrainResult:
        """Train as plan.n_processes torchrun ranks; this process relays rank 0's callbacks."""
        self.distributed = run = DistributedTraining(
            self.plan,
            self.paths.root / "distributed",
            examples=self.examples,
            pairs=self.pairs,
            eval_examples=self.eval_examples or [],
            tokenizer=self.tokenizer,
            resume_from=self.resume_from,
            attempt=self.attempt,
        )
        if run.resume_step is not None:
            self.say(
                f"Resuming from checkpoint at step {run.resume_step}",
                type="resume",
                data={"step": run.resume_step},
            )
        if isinstance(callback, TrainingDeadline):
            callback.already_spent = spent_in(run.resume_history)
        self.say(
            f"Training on {self.plan.n_processes} processes ({run.backend}, data-parallel); "
            "rank 0 reports progress"
        )
        return run.train(callback, self.model)

    # -------------------------------------------------------------------------------- save
    def save(self) -> None:
        """The adapter as it will be served: directory, manifest, zip and its sha256."""
        paths = self.paths
        reset_dir(paths.adapter_dir)
        if self.distributed is not None:
            self.distributed.copy_adapter(paths.adapter_dir)
        else:
            assert self.trainer is not None
            self.trainer.save_adapter(paths.adapter_dir)
        manifest = {
            "base_model": self.model_name,
            "base_model_sha256": self.base_sha,
            "job_id": self.job_id,
            "method": self.plan.resolved["method"],
            "chat_template": getattr(self.tokenizer, "chat_template", None),
        }
        self.adapter_sha = package_adapter(paths.adapter_dir, manifest, paths.adapter_zip)

    # ---------------------------------------------------------------------------- evaluate
    def evaluate(self) -> None:
        """The safety report of the saved adapter; any failure leaves no report (fail closed)."""
        trained = self.trainer.model if self.trainer is not None else None
        plan, say = self.plan, self.say
        with _phase(self.callback, "evaluating"):
            say("Safety evaluation: base model vs fine-tuned on held-out harmful prompts")
            try:
                with deadline(plan.evaluation.timeout_seconds):
                    peft_model = _reload_adapter(self.model, trained, self.paths.adapter_dir)
                    peft_model.eval()
                    # Thresholds the policy leaves out take their defaults: the gate always
                    # decides.
                    thresholds = PolicyThresholds(**plan.thresholds)
                    conversations = self.conversations
                    report = evaluate_safety(
                        peft_model,
                        self.tokenizer,
                        SafetyEvalConfig(
                            num_harmful=plan.evaluation.num_harmful,
                            num_benign=plan.evaluation.num_benign,
                            num_utility=plan.evaluation.num_utility,
                            max_new_tokens=plan.evaluation.max_new_tokens,
                            batch_size=plan.evaluation.batch_size,
                            seed=plan.train.seed,
                            judge=plan.evaluation.judge,
                            judge_model_dir=str(self.judge_dir) if self.judge_dir else None,
                            task_framing=_task_framing(self.profile, plan.evaluation.task_format),
                        ),
                        eval_examples=list(
                            self.validation or conversations[: min(32, len(conversations))]
                        ),
                        progress=self._evaluation_progress,
                        training_curves=self.curves,
                        mix_report=self.mix_report,
                        thresholds=thresholds,
                        base_cache=_base_cache(self.settings, self.base_sha, self.tenant_id),
                    )
                    report.evaluated_adapter_sha256 = self.adapter_sha
                    if self.plan.train.sap.enabled:
                        report.sap_strength = SapStrengthSummary.model_validate(
                            self.sap_strength.as_dict()
                        )
                report.utility_source = "validation_file" if self.validation else "training_sample"
                _record_base_score(self.settings.blob_store(), self.model_name, report)
                self.report = report
            except ShutdownRequested:
                raise  # the worker is stopping, not an evaluation failure: the next one redoes it
            except Exception as exc:  # fail closed: no report, no release
                self.evaluation_error = f"{type(exc).__name__}: {exc}"

    def _evaluation_progress(self, message: str) -> None:
        self.say(message, type="evaluation")
        maybe_die("during_evaluation", self.attempt)

    # ----------------------------------------------------------------------------- cleanup
    def cleanup(self) -> None:
        """Detach the trainer's hooks and drop its model references (GPU memory)."""
        if self.trainer is not None:
            self.trainer.cleanup()
            self.trainer = None

    def run(self) -> PipelineResult:
        """setup → train → save → evaluate; the trainer is cleaned up however the job ends."""
        try:
            self.setup()
            self.train()
            maybe_die("after_training", self.attempt)
            self.save()
            self.evaluate()
            return self.result()
        finally:
            try:
                self.cleanup()
            except Exception:
                # Never let a failed cleanup replace the exception that ended the job (pause,
                # cancel, divergence): the runner acts on that one. On success it is logged
                # too: the adapter is saved and evaluated; freeing memory is not the outcome.
                log.exception("job %s: trainer cleanup failed", self.job_id)

    def result(self) -> PipelineResult:
        return PipelineResult(
            adapter_zip=self.paths.adapter_zip,
            adapter_sha256=self.adapter_sha,
            report=self.report,
            evaluation_error=self.evaluation_error,
            trained_tokens=self.trained_tokens,
            plan=self.plan,
            mix_report=self.mix_report,
        )


def _task_framing(profile: FormatProfile, enabled: bool) -> TaskFraming | None:
    """The customer's framing of a request, or None when off or it adds nothing to a chat turn."""
    if not enabled:
        return None
    framing = framing_from_profile(profile)
    return None if framing.is_plain else framing


def _ensure_model(name: str, cache_dir: Path, say: Callable[..., None]) -> Path:
    """The cached safetensors copy of a registry model, converting it once if needed."""
    try:
        return resolve_model(name, cache_dir)
    except ModelRegistryError:
        say(f"Preparing registry model {name} (one-time sha256 check and safetensors conversion)")
        return pull_model(name, cache_dir)


def _record_base_score(store: BlobStore, model_name: str, report: SafetyReport) -> None:
    """The base model's bare harmful score, for the API's refusal of jobs that cannot pass."""
    base = report.base
    harmful = base.harmful if base is not None else None
    rate = harmful.harmful_score if harmful is not None else None
    if harmful is None or rate is None or rate.rate is None or not harmful.n:
        return
    BaseModelScores(store).record(
        BaseModelScore(
            model=model_name,
            harmful_score=float(rate.rate),
            n=int(harmful.n),
            judge=report.judge or "unknown",
            recorded_at=datetime.now(UTC).isoformat(),
        )
    )


def _training_curves(history: Sequence[dict[str, float]]) -> dict[str, list[float]]:
    """Per-step task loss, and safety loss at the steps that computed it (JSON has no NaN)."""
    curves: dict[str, list[float]] = {
        "step": [],
        "task_loss": [],
        "safety_step": [],
        "safety_loss": [],
    }
    for index, row in enumerate(history):
        step = float(row.get("step", index + 1))
        if math.isfinite(row.get("task_loss", math.nan)):
            curves["step"].append(step)
            curves["task_loss"].append(float(row["task_loss"]))
        if math.isfinite(row.get("safety_loss", math.nan)):
            curves["safety_step"].append(step)
            curves["safety_loss"].append(float(row["safety_loss"]))
    return curves


def _reload_adapter(base_model: Any, trained: Any, adapter_dir: Path) -> Any:
    """Evaluate the adapter from the files that will be served, not from training memory."""
    from peft import PeftModel

    base = trained.unload() if hasattr(trained, "unload") else base_model
    return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)


def _base_cache(
    settings: WorkerSettings, base_sha: str | None, tenant_id: str
) -> BaseEvaluationCache | None:
    """Base-model results, shared by one tenant's jobs on the same weights (no sha, no cache).

    Per tenant, never across tenants: an entry's key covers the customer's validation rows and
    framing, so a hit (the report's `base_from_cache`, or an evaluation that ends sooner) would
    tell one tenant that another evaluated the same rows and framing (issue 23).
    """
    if not base_sha:
        return None
    if not tenant_id or Path(tenant_id).name != tenant_id or tenant_id in (".", ".."):
        raise ValueError(f"not a tenant id: {tenant_id!r}")
    root = settings.eval_cache_dir or settings.data_dir / "eval-cache"
    return BaseEvaluationCache(root / "base" / tenant_id, base_sha)
