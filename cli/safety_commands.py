"""`keel safety …`: build the safety corpus (harmful prompts + the base model's refusals)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.callback()
def main() -> None:
    """Build the safety corpus."""


@app.command("build-corpus")
def build_corpus_command(
    model: str = typer.Option(..., "--model", help="Registry model whose refusals are kept"),
    out_dir: Path | None = typer.Option(None, help="Default: var/safety-corpus/<model>"),
    limit: int | None = typer.Option(None, help="Cap on prompts (quick builds)"),
    template_only: bool = typer.Option(
        False, help="Skip generation: every safe response is a template refusal"
    ),
    force: bool = typer.Option(False, help="Rebuild even if a matching build exists"),
    model_dir: Path | None = typer.Option(None, help="Local HF dir (default: the model cache)"),
) -> None:
    """Build and cache the safety corpus; prints counts and sha256 only (never harmful text).

    Generation uses the evaluator's batched greedy generator when it is installed
    (``sap_core.evaluation.generation.make_generate_fn``); otherwise use --template-only.
    """
    from sap_core.errors import SapError
    from sap_core.safety.corpus import build_corpus

    target = out_dir or Path("var") / "safety-corpus" / model
    generate: Callable[[list[str]], list[str]] | None = None
    if not template_only:
        generate = _model_generator(model, model_dir)
    started = time.monotonic()
    try:
        build_corpus(model, target, generate, None, limit, force=force)
    except SapError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    console.print(f"safety corpus for {model} at {target} ({time.monotonic() - started:.1f} s)")
    console.print_json(json.dumps({k: manifest[k] for k in ("counts", "corpus_sha256")}))


def _model_generator(model: str, model_dir: Path | None) -> Callable[[list[str]], list[str]]:
    """Greedy replies from the cached base model (``keel models pull NAME`` first)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sap_core.evaluation.generation import generate_replies
    from worker.settings import WorkerSettings

    path = model_dir or WorkerSettings().model_cache_dir / model
    if not (path / "config.json").exists():
        console.print(
            f"[red]error:[/red] no cached model at {path}; run `keel models pull {model}` "
            "or pass --template-only"
        )
        raise typer.Exit(1)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    # Local directory only, safetensors only, never remote code.
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    network = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=torch.float32
    )
    network.eval()

    def generate(prompts: list[str]) -> list[str]:
        return generate_replies(network, tokenizer, prompts, max_new_tokens=64, batch_size=8)

    return generate
