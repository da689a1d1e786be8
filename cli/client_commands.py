"""`keel files …` and `keel jobs …`: the customer flow over HTTP, with rich progress.

Reads KEEL_API_BASE (default http://127.0.0.1:8000/v1) and KEEL_API_KEY, or --api-base/--api-key.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

files_app = typer.Typer(no_args_is_help=True)
jobs_app = typer.Typer(no_args_is_help=True)
console = Console()
TERMINAL = {"succeeded", "failed", "cancelled"}

ApiBase = typer.Option(
    None, "--api-base", help="Default: $KEEL_API_BASE or http://127.0.0.1:8000/v1"
)
ApiKey = typer.Option(None, "--api-key", help="Default: $KEEL_API_KEY")


def _client(api_base: str | None, api_key: str | None) -> httpx.Client:
    base = api_base or os.environ.get("KEEL_API_BASE", "http://127.0.0.1:8000/v1")
    key = api_key or os.environ.get("KEEL_API_KEY")
    if not key:
        console.print("[red]error:[/red] set KEEL_API_KEY or pass --api-key")
        raise typer.Exit(2)
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if "json" in response.headers.get("content-type", "") else None
    try:
        error = response.json()["error"]
        console.print(
            f"[red]error {response.status_code} ({error.get('code')}):[/red] {error.get('message')}"
        )
    except (ValueError, KeyError, TypeError):
        console.print(f"[red]error {response.status_code}:[/red] {response.text[:500]}")
    raise typer.Exit(1)


# ------------------------------------------------------------------------------------ files
@files_app.command("upload")
def upload(
    path: Path,
    purpose: str = "fine-tune",
    api_base: str | None = ApiBase,
    api_key: str | None = ApiKey,
) -> None:
    """Upload a JSONL dataset; prints the file id."""
    with _client(api_base, api_key) as client, path.open("rb") as handle:
        body = _check(
            client.post("/files", files={"file": (path.name, handle)}, data={"purpose": purpose})
        )
    console.print_json(data=body)
    print(body["id"])


@files_app.command("list")
def list_files(api_base: str | None = ApiBase, api_key: str | None = ApiKey) -> None:
    """List your files."""
    with _client(api_base, api_key) as client:
        body = _check(client.get("/files", params={"limit": 100}))
    table = Table("id", "filename", "purpose", "bytes", "status")
    for item in body["data"]:
        table.add_row(
            item["id"],
            item["filename"],
            item["purpose"],
            str(item["bytes"]),
            str(item.get("status")),
        )
    console.print(table)


@files_app.command("get")
def get_file(file_id: str, api_base: str | None = ApiBase, api_key: str | None = ApiKey) -> None:
    """Show one file."""
    with _client(api_base, api_key) as client:
        console.print_json(data=_check(client.get(f"/files/{file_id}")))


@files_app.command("delete")
def delete_file(file_id: str, api_base: str | None = ApiBase, api_key: str | None = ApiKey) -> None:
    """Delete a file."""
    with _client(api_base, api_key) as client:
        console.print_json(data=_check(client.delete(f"/files/{file_id}")))


@files_app.command("screen")
def screen_file(
    file_id: str,
    api_base: str | None = ApiBase,
    api_key: str | None = ApiKey,
    wait: float = typer.Option(600.0, help="Seconds to wait for a queued screen (202)"),
) -> None:
    """Screen a dataset for harmful requests (per-example flags).

    The server screens on its validation worker: a 202 means queued, so ask again every second
    until the result (200) or --wait seconds."""
    deadline = time.monotonic() + wait
    with _client(api_base, api_key) as client:
        while True:
            response = client.post(f"/files/{file_id}/screen")
            if response.status_code != 202 or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        console.print_json(data=_check(response))


@files_app.command("download")
def download(
    file_id: str, out: Path, api_base: str | None = ApiBase, api_key: str | None = ApiKey
) -> None:
    """Download a file's content (e.g. a job's adapter zip)."""
    with (
        _client(api_base, api_key) as client,
        client.stream("GET", f"/files/{file_id}/content") as r,
    ):
        if not r.is_success:
            r.read()
            _check(r)
        with out.open("wb") as handle:
            for chunk in r.iter_bytes():
                handle.write(chunk)
    console.print(f"saved {out} ({out.stat().st_size} bytes)")


# ------------------------------------------------------------------------------------- jobs
@jobs_app.command("create")
def create_job(
    training_file: str = typer.Argument(..., help="file-… id (see keel files upload)"),
    model: str = typer.Option(..., help="Base model, e.g. qwen2.5-coder-0.5b-instruct"),
    n_epochs: int | None = typer.Option(None),
    batch_size: int | None = typer.Option(None),
    learning_rate_multiplier: float | None = typer.Option(None),
    suffix: str | None = typer.Option(None),
    seed: int | None = typer.Option(None),
    mixer_ratio: float | None = typer.Option(None, help="Safety mixer ratio (within policy)"),
    validation_file: str | None = typer.Option(None),
    api_base: str | None = ApiBase,
    api_key: str | None = ApiKey,
) -> None:
    """Create a fine-tuning job; prints the job id."""
    hyper = {
        k: v
        for k, v in {
            "n_epochs": n_epochs,
            "batch_size": batch_size,
            "learning_rate_multiplier": learning_rate_multiplier,
        }.items()
        if v is not None
    }
    body: dict[str, Any] = {"model": model, "training_file": training_file}
    if hyper:
        body["hyperparameters"] = hyper
    for key, value in (("suffix", suffix), ("seed", seed), ("validation_file", validation_file)):
        if value is not None:
            body[key] = value
    if mixer_ratio is not None:
        body["safety"] = {"mixer_ratio": mixer_ratio}
    with _client(api_base, api_key) as client:
        job = _check(client.post("/fine_tuning/jobs", json=body))
    console.print_json(data=job)
    print(job["id"])


@jobs_app.command("list")
def list_jobs(api_base: str | None = ApiBase, api_key: str | None = ApiKey) -> None:
    """List your jobs, newest first."""
    with _client(api_base, api_key) as client:
        body = _check(client.get("/fine_tuning/jobs", params={"limit": 100}))
    table = Table("id", "model", "status", "created_at", "error")
    for job in body["data"]:
        error = (job.get("error") or {}).get("code") or ""
        table.add_row(job["id"], job["model"], job["status"], str(job["created_at"]), error)
    console.print(table)


@jobs_app.command("get")
def get_job(job_id: str, api_base: str | None = ApiBase, api_key: str | None = ApiKey) -> None:
    """Show one job."""
    with _client(api_base, api_key) as client:
        console.print_json(data=_check(client.get(f"/fine_tuning/jobs/{job_id}")))


def _post_action(job_id: str, action: str, api_base: str | None, api_key: str | None) -> None:
    with _client(api_base, api_key) as client:
        job = _check(client.post(f"/fine_tuning/jobs/{job_id}/{action}"))
    console.print(f"{job_id}: {job['status']}")


@jobs_app.command("cancel")
def cancel(job_id: str, api_base: str | None = ApiBase, api_key: str | None = ApiKey) -> None:
    """Cancel a job."""
    _post_action(job_id, "cancel", api_base, api_key)


@jobs_app.command("pause")
def pause(job_id: str, api_base: str | None = ApiBase, api_key: str | None = ApiKey) -> None:
    """Pause a running job (it checkpoints first)."""
    _post_action(job_id, "pause", api_base, api_key)


@jobs_app.command("resume")
def resume(job_id: str, api_base: str | None = ApiBase, api_key: str | None = ApiKey) -> None:
    """Resume a paused job from its last checkpoint."""
    _post_action(job_id, "resume", api_base, api_key)


@jobs_app.command("events")
def events(
    job_id: str, limit: int = 50, api_base: str | None = ApiBase, api_key: str | None = ApiKey
) -> None:
    """Show a job's events, oldest first."""
    with _client(api_base, api_key) as client:
        body = _check(client.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": limit}))
    for event in reversed(body["data"]):
        stamp = time.strftime("%H:%M:%S", time.localtime(event["created_at"]))
        console.print(f"{stamp} [{event['level']}] {event['message']}")


@jobs_app.command("checkpoints")
def checkpoints(job_id: str, api_base: str | None = ApiBase, api_key: str | None = ApiKey) -> None:
    """List a job's checkpoints."""
    with _client(api_base, api_key) as client:
        body = _check(client.get(f"/fine_tuning/jobs/{job_id}/checkpoints"))
    for item in body["data"]:
        console.print(f"{item['id']} step {item['step_number']}")


@jobs_app.command("report")
def report(
    job_id: str,
    html: Path | None = typer.Option(None, help="Also save the HTML page"),
    api_base: str | None = ApiBase,
    api_key: str | None = ApiKey,
) -> None:
    """Print the job's safety report (JSON), optionally save the HTML page."""
    with _client(api_base, api_key) as client:
        body = _check(client.get(f"/fine_tuning/jobs/{job_id}/safety_report"))
        if html is not None:
            page = client.get(
                f"/fine_tuning/jobs/{job_id}/safety_report", params={"format": "html"}
            )
            html.write_text(page.text)
    body.get("report", body).pop("plots", None)
    console.print_json(data=body)


def watch_job(client: httpx.Client, job_id: str, poll_seconds: float = 2.0) -> dict[str, Any]:
    """Follow a job to a terminal status with a progress bar and its events; return the job."""
    seen: set[str] = set()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task(job_id, total=None)
        while True:
            job = _check(client.get(f"/fine_tuning/jobs/{job_id}"))
            page = _check(client.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 100}))
            for event in reversed(page["data"]):
                if event["id"] not in seen:
                    seen.add(event["id"])
                    progress.console.print(f"  [{event['level']}] {event['message']}")
            info = job.get("progress") or {}
            phase = info.get("phase") or job["status"]
            progress.update(
                bar,
                description=f"{job_id} {job['status']} ({phase})",
                total=info.get("total_steps") or None,
                completed=info.get("step") or 0,
            )
            if job["status"] in TERMINAL:
                return dict(job)
            time.sleep(poll_seconds)


@jobs_app.command("watch")
def watch(job_id: str, api_base: str | None = ApiBase, api_key: str | None = ApiKey) -> None:
    """Follow a job until it ends, with a progress bar and its events."""
    with _client(api_base, api_key) as client:
        job = watch_job(client, job_id)
    console.print(
        json.dumps({k: job[k] for k in ("id", "status", "error", "result_files")}, indent=2)
    )
    if job["status"] != "succeeded":
        raise typer.Exit(1)
