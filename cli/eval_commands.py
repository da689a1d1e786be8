"""`keel eval`: safety-evaluate a local base model, or base + LoRA adapter, outside the service.

    keel eval (--model NAME | --model-dir DIR) [--adapter DIR] [--harmful 50] [--benign 20] \\
              [--max-new-tokens 40] [--task-format train.jsonl] \\
              [--validation-file validation.jsonl] [--eval-cache DIR] [--json report.json] \\
              [--judge llm --judge-model NAME] [--max-harmful-score 0.5 ...]

``--model NAME`` is a registry model already pulled into KEEL_MODEL_CACHE_DIR
(``keel models pull NAME``); ``--model-dir`` is any local safetensors model directory.

``--task-format FILE`` also asks the harmful prompts in that dataset's framing (its system
prompt and user-turn affixes, as the service does for every job): pass the training file of
the adapter to see how it answers when queried the way its customer will query it.

``--validation-file FILE`` measures utility as the service does on a job's validation file:
the validation loss of the final assistant turns and, when the answers are labels or state a
number, the share answered right (exact match / final number).

``--eval-cache DIR`` reuses the base model's results across runs (keyed by the sha256 of its
weights and every evaluation input, as in the service): evaluating several adapters of one base
pays for the base once.

``--judge classifier|llm`` grades with a local model instead of the keyword judge: a registry
name (``--judge-model``, as the provider policy's ``evaluation.judge_model``) or a directory
(``--judge-model-dir``). The report's ``judge_validation`` is that judge's agreement with the
packaged hand-labelled set.

``--max-harmful-score`` turns on the release verdict; the other thresholds then default to the
service's (``PolicyThresholds``: rise over base 0.10, over-refusal 0.60).

Prints rates only; replies to harmful prompts are never printed or written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch
import typer
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from cli.data_commands import read_dataset
from safety_report import JudgedPrompts, ModelResult
from sap_core.errors import ModelRegistryError
from sap_core.evaluation import PolicyThresholds, SafetyEvalConfig, evaluate_safety
from sap_core.evaluation.base_cache import BaseEvaluationCache
from sap_core.evaluation.judges import JUDGE_NAMES
from sap_core.evaluation.task_framing import TaskFraming, framing_from_profile
from sap_core.models.registry import resolve_model, weights_sha256
from sap_core.safety.profiler import profile_dataset
from worker.settings import WorkerSettings

T = TypeVar("T")

app = typer.Typer(help="Safety-evaluate a local model (and optionally a LoRA adapter).")


def load_model(model_dir: Path, adapter: Path | None) -> tuple[Any, Any]:
    """Model (with the adapter applied, frozen, eval mode) and tokenizer; safetensors only."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, use_safetensors=True, local_files_only=True
    )
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    model.eval()
    return model, tokenizer


def _rates(h: JudgedPrompts) -> str:
    score, refusal, off_task = _need(h.harmful_score), _need(h.refusal_rate), _need(h.off_task_rate)
    return (
        f"harmful {_need(score.rate):.1%} [{_need(score.ci_low):.1%}, {_need(score.ci_high):.1%}]  "
        f"refusal {_need(refusal.rate):.1%}  off-task {_need(off_task.rate):.1%}"
    )


def _need(value: T | None) -> T:
    # The evaluator just wrote every one of these; a missing one is a bug, said plainly.
    if value is None:
        raise RuntimeError("the safety report lacks a number the summary prints")
    return value


def _lines(name: str, result: ModelResult) -> list[str]:
    benign, timing = _need(result.benign), _need(result.timing)
    lines = [
        f"{name:>10}: {_rates(_need(result.harmful))}  "
        f"over-refusal {_need(_need(benign.over_refusal).rate):.1%}  "
        f"{timing.prompts_per_second} prompts/s"
    ]
    if result.harmful_task_format is not None:
        lines.append(f"{'':>10}  in the task's format: {_rates(result.harmful_task_format)}")
    utility = result.utility
    if utility is not None and utility.val_loss is not None:
        text = f"{'':>10}  utility: validation loss {utility.val_loss:.4f}"
        for label, block in (
            ("exact match", utility.exact_match),
            ("final number", utility.final_number_match),
        ):
            if block is not None:
                text += f", {label} {_need(block.rate):.1%} ({block.count}/{block.n})"
        lines.append(text)
    return lines


def _base_cache(directory: Path | None, model_dir: Path) -> BaseEvaluationCache | None:
    if directory is None:
        return None
    sha = weights_sha256(model_dir)
    if sha is None:
        typer.echo(f"{model_dir}: no single model.safetensors to fingerprint; cache not used")
        return None
    return BaseEvaluationCache(directory / "base", sha)


def _framing(path: Path | None) -> TaskFraming | None:
    if path is None:
        return None
    framing = framing_from_profile(profile_dataset(read_dataset(path)))
    if framing.is_plain:
        typer.echo(f"{path}: no system prompt or shared affixes; evaluating bare prompts only")
        return None
    return framing


def _resolve(name: str, flag: str) -> Path:
    """A registry model already pulled into the cache, or a usage error naming ``flag``."""
    try:
        return resolve_model(name, WorkerSettings().model_cache_dir)
    except ModelRegistryError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from exc


def _model_dir(name: str | None, model_dir: Path | None) -> Path:
    """Exactly one of a registry name and a directory; a name must be pulled already."""
    if (name is None) == (model_dir is None):
        raise typer.BadParameter("give exactly one of --model NAME and --model-dir DIR")
    if model_dir is not None:
        return model_dir
    assert name is not None
    return _resolve(name, "--model")


def _judge_model_dir(judge: str, name: str | None, model_dir: Path | None) -> Path | None:
    """The judge's weights: none for the keyword judge, else exactly one of name and dir."""
    if judge not in JUDGE_NAMES:
        raise typer.BadParameter(f"choose one of {', '.join(JUDGE_NAMES)}", param_hint="--judge")
    if judge == "keyword":
        if name is not None or model_dir is not None:
            raise typer.BadParameter("the keyword judge has no model", param_hint="--judge-model")
        return None
    if (name is None) == (model_dir is None):
        raise typer.BadParameter(
            f"judge {judge!r} needs exactly one of --judge-model NAME and --judge-model-dir DIR"
        )
    return model_dir if model_dir is not None else _resolve(str(name), "--judge-model")


def _jsonl_option(flag: str, help_text: str) -> Any:
    """An optional existing JSONL file (read and validated by ``read_dataset``)."""
    return typer.Option(None, flag, exists=True, dir_okay=False, help=help_text)


@app.callback(invoke_without_command=True)
def eval_command(
    model_name: str | None = typer.Option(None, "--model", help="Registry model name (pulled)"),
    model_dir: Path | None = typer.Option(None, "--model-dir", exists=True, file_okay=False),
    adapter: Path | None = typer.Option(None, "--adapter", exists=True, file_okay=False),
    harmful: int = typer.Option(50, "--harmful", min=1),
    benign: int = typer.Option(20, "--benign", min=0),
    max_new_tokens: int = typer.Option(40, "--max-new-tokens", min=1),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    judge: str = typer.Option("keyword", "--judge", help=f"one of {', '.join(JUDGE_NAMES)}"),
    judge_model: str | None = typer.Option(
        None, "--judge-model", help="Registry model for a classifier/llm judge (pulled)"
    ),
    judge_model_dir: Path | None = typer.Option(
        None, "--judge-model-dir", exists=True, file_okay=False
    ),
    max_harmful_score: float | None = typer.Option(
        None, "--max-harmful-score", help="turns on the release verdict"
    ),
    max_harmful_increase: float = typer.Option(
        PolicyThresholds.max_harmful_increase, "--max-harmful-increase"
    ),
    max_over_refusal: float = typer.Option(PolicyThresholds.max_over_refusal, "--max-over-refusal"),
    max_benign_unhelpful: float | None = typer.Option(
        None, "--max-benign-unhelpful", help="cap on look-alikes refused or answered off-task"
    ),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0 = default)"),
    task_format: Path | None = _jsonl_option(
        "--task-format",
        "JSONL dataset whose framing (system prompt, affixes) the harmful prompts also get",
    ),
    validation_file: Path | None = _jsonl_option(
        "--validation-file",
        "JSONL chat dataset to measure utility on (validation loss, answer accuracy)",
    ),
    eval_cache: Path | None = typer.Option(
        None, "--eval-cache", file_okay=False, help="Reuse base-model results kept in DIR"
    ),
    json_out: Path | None = typer.Option(None, "--json"),
) -> None:
    """Evaluate a model (and its base when --adapter is given); print rates, write JSON."""
    if threads:
        torch.set_num_threads(threads)
    judge_dir = _judge_model_dir(judge, judge_model, judge_model_dir)
    config = SafetyEvalConfig(
        num_harmful=harmful,
        num_benign=benign,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        judge=judge,
        judge_model_dir=str(judge_dir) if judge_dir else None,
        task_framing=_framing(task_format),
    )
    thresholds = (
        PolicyThresholds(
            max_harmful_score,
            max_harmful_increase,
            max_over_refusal,
            max_benign_unhelpful=max_benign_unhelpful,
        )
        if max_harmful_score is not None
        else None
    )
    directory = _model_dir(model_name, model_dir)
    model, tokenizer = load_model(directory, adapter)
    report = evaluate_safety(
        model,
        tokenizer,
        config,
        eval_examples=read_dataset(validation_file) if validation_file else None,
        thresholds=thresholds,
        base_cache=_base_cache(eval_cache, directory),
        progress=lambda message: typer.echo(f"[eval] {message}", err=True),
    )
    for result, name in (
        (report.base, "base"),
        (report.fine_tuned, "adapter" if adapter else "model"),
    ):
        if result is not None:
            typer.echo("\n".join(_lines(name, result)))
    validation = report.judge_validation
    typer.echo(f"judge {report.judge} agreement {validation.to_json() if validation else {}}")
    if report.verdict is not None:
        verdict = report.verdict
        typer.echo("verdict: " + ("PASSED" if verdict.passed else "FAILED"))
        for reason in verdict.reasons:
            typer.echo(f"  - {reason}")
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_json(), indent=2))
        typer.echo(f"report written to {json_out}")
