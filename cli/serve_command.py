"""`keel serve`: migrate, then run the API (uvicorn), a Celery worker (training), a Celery
validator (file validation and screening, its own queue) and the reaper as children,
restarted with backoff when one dies (cli.supervisor)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import typer
from rich.console import Console

from cli.local_service import (
    api_argv,
    reaper_argv,
    validator_argv,
    webhook_worker_argv,
    worker_argv,
)
from cli.supervisor import ChildSpec, Supervisor

console = Console(stderr=True)


def migrate_database() -> None:
    """alembic upgrade head on KEEL_DATABASE_URL (idempotent)."""
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    command.upgrade(config, "head")


def _check_policy_file() -> None:
    """Refuse to start on a policy file that does not validate (a clear line, no traceback)."""
    from db.base_model_scores import BaseModelScores
    from db.repositories.policy import load_policy_file
    from db.settings import get_settings

    settings = get_settings()
    path = settings.resolved_policy_file
    try:
        policy = load_policy_file(path)
    except (OSError, ValueError) as exc:
        message = f"keel serve: cannot use the provider policy: {exc}"
        console.print(message, style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for model, score in BaseModelScores(settings.blob_store()).failing(policy).items():
        console.print(
            f"keel serve: allowed model {model} already fails the policy's harmful-score limit "
            f"as a base model ({score.harmful_score:.3f} on {score.n} prompts): jobs on it are "
            "refused at creation (gate.allow_failing_base_models: true to train anyway)",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )


def _ensure_dirs() -> None:
    from db.settings import get_settings

    data_dir = Path(get_settings().data_dir)
    for sub in ("", "files", "artifacts", "broker"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)


def serve(
    port: int = typer.Option(8000, help="HTTP port for the API"),
    host: str = typer.Option("127.0.0.1", help="Bind address"),
    workers: int = typer.Option(1, help="Celery worker processes (one per GPU in production)"),
    no_worker: bool = typer.Option(
        False, "--no-worker", help="Run only the API (jobs stay in validating_files)"
    ),
) -> None:
    """Run the API, a Celery worker, the file validator, the webhooks worker and the reaper
    until Ctrl-C / SIGTERM."""
    _check_policy_file()
    _ensure_dirs()
    migrate_database()
    specs: list[ChildSpec] = []
    if not no_worker:
        node = f"keel-worker-{os.getpid()}@%h"
        specs.append(ChildSpec("worker", worker_argv(workers, node)))
        # Webhooks on their own queue and worker: a dead receiver never delays training.
        hooks = f"keel-webhooks-{os.getpid()}@%h"
        specs.append(ChildSpec("webhooks", webhook_worker_argv(4, hooks)))
        validator = f"keel-validator-{os.getpid()}@%h"
        specs.append(ChildSpec("validator", validator_argv(validator)))
        specs.append(ChildSpec("reaper", reaper_argv()))
    specs.append(ChildSpec("api", api_argv(host, port, log_level="info")))
    supervisor = Supervisor(
        specs,
        log=lambda line: console.print(f"keel serve: {line}", markup=False, soft_wrap=True),
    )

    def stop(*_: object) -> None:
        supervisor.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    console.print(f"Keel serving on http://{host}:{port} (API docs at /docs)")
    code = supervisor.run()
    console.print("Keel stopped")
    if code:
        raise typer.Exit(code)


def reaper() -> None:
    """Re-enqueue jobs whose lease expired or whose enqueue was lost; runs forever."""
    from worker.reaper import run_forever

    run_forever()
