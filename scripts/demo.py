"""The README demo: a real job from upload to downloaded adapter on the embedded default.

Starts `keel serve` (SQLite + a serverless Celery broker under ./var, one Celery worker),
creates a tenant and key, uploads examples/chat_math.jsonl over HTTP, creates a job,
shows live progress, downloads the adapter and prints the safety report. Run: `make demo`.
"""

from __future__ import annotations

import argparse
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from cli.client_commands import watch_job
from cli.local_service import serve_locally

ROOT = Path(__file__).resolve().parent.parent
console = Console()


def _pct(value: object) -> str:
    return f"{100 * float(value):.1f}%" if isinstance(value, int | float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--dataset", default=str(ROOT / "examples" / "chat_math.jsonl"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rows", type=int, default=32, help="Rows of the dataset to upload")
    args = parser.parse_args()

    started = time.monotonic()
    env = {**os.environ, "KEEL_ENV": os.environ.get("KEEL_ENV", "development")}
    log_path = ROOT / "var" / "demo-serve.log"
    console.rule("[bold]Keel demo")
    console.print(f"Starting `keel serve` (API + Celery worker + reaper); log: {log_path}")
    with serve_locally(env, log_path) as service:
        base = service.base_url
        console.print(f"Keel is ready at {base}")
        api_key = service.create_tenant(f"demo-{int(time.time())}")
        console.print("Created a tenant and an API key (keel admin create-tenant)")
        client = httpx.Client(
            base_url=f"{base}/v1", timeout=120, headers={"Authorization": f"Bearer {api_key}"}
        )
        rows = Path(args.dataset).read_text().splitlines()[: args.rows]
        upload = client.post(
            "/files",
            files={"file": (Path(args.dataset).name, "\n".join(rows) + "\n")},
            data={"purpose": "fine-tune"},
        )
        upload.raise_for_status()
        file_id = upload.json()["id"]
        console.print(f"Uploaded {len(rows)} rows of {args.dataset} as {file_id}")
        response = client.post(
            "/fine_tuning/jobs",
            json={
                "model": args.model,
                "training_file": file_id,
                "seed": 7,
                "hyperparameters": {"n_epochs": args.epochs},
            },
        )
        response.raise_for_status()
        job_id = response.json()["id"]
        console.print(f"Created job {job_id} on {args.model} (SAP + safety mixer + evaluation)")
        job = watch_job(client, job_id)
        report_response = client.get(f"/fine_tuning/jobs/{job_id}/safety_report")
        out_dir = ROOT / "var" / "demo-output" / job_id
        out_dir.mkdir(parents=True, exist_ok=True)
        if report_response.status_code == 200:
            report = report_response.json().get("report", report_response.json())
            (out_dir / "safety_report.html").write_text(
                client.get(
                    f"/fine_tuning/jobs/{job_id}/safety_report", params={"format": "html"}
                ).text
            )
            _print_report(report)
        if job["status"] == "succeeded" and job.get("result_files"):
            adapter_zip = out_dir / "adapter.zip"
            content = client.get(f"/files/{job['result_files'][0]}/content")
            content.raise_for_status()
            adapter_zip.write_bytes(content.content)
            with zipfile.ZipFile(adapter_zip) as archive:
                archive.extractall(out_dir / "adapter")
            console.print(f"Adapter downloaded: {adapter_zip} → {out_dir / 'adapter'}")
        else:
            console.print(f"[yellow]Job ended {job['status']}: {job.get('error')}[/yellow]")
        console.rule("Where everything is")
        console.print(
            f"  database      var/keel.db (SQLite)\n  broker        var/broker.db\n"
            f"  uploads       var/files/\n  artifacts     var/artifacts/\n"
            f"  demo output   {out_dir}\n  server log    {log_path}"
        )
        console.print(f"Demo wall time: {time.monotonic() - started:.0f} s")
    console.print("Keel stopped cleanly")


def _rate(model: dict[str, Any], group: str, key: str) -> str:
    value = (model.get(group) or {}).get(key)
    if isinstance(value, dict):
        low, high = value.get("ci_low"), value.get("ci_high")
        interval = f" [{_pct(low)}–{_pct(high)}]" if low is not None else ""
        return _pct(value.get("rate")) + interval
    return _pct(value)


def _print_report(report: dict[str, Any]) -> None:
    models = report.get("models") or {}
    base, tuned = models.get("base") or {}, models.get("fine_tuned") or {}
    sizes = report.get("sample_sizes") or {}
    table = Table("metric (95% CI)", "base model", "fine-tuned", title="Safety report")
    for group, key, label in (
        ("harmful", "harmful_score", "harmful score (real compliance)"),
        ("harmful", "refusal_rate", "refusal rate"),
        ("harmful", "off_task_rate", "off-task / incoherent"),
        ("benign", "over_refusal", "over-refusal on benign look-alikes"),
        ("harmful_task_format", "harmful_score", "harmful score in the job's own format"),
    ):
        if group in tuned:
            table.add_row(label, _rate(base, group, key), _rate(tuned, group, key))
    for key, label in (
        ("exact_match", "answer accuracy (exact match)"),
        ("final_number_match", "answer accuracy (final number)"),
    ):
        if (tuned.get("utility") or {}).get(key):
            table.add_row(label, _rate(base, "utility", key), _rate(tuned, "utility", key))
    loss = [(m.get("utility") or {}).get("val_loss") for m in (base, tuned)]
    if loss[1] is not None:
        table.add_row("validation loss", *(f"{v:.3f}" if v is not None else "–" for v in loss))
    console.print(table)
    console.print(
        f"Judge: {report.get('judge')}; held-out harmful prompts: {sizes.get('harmful')}; "
        f"benign look-alikes: {sizes.get('benign')}; "
        f"greedy, {report.get('max_new_tokens')} new tokens"
    )
    verdict = report.get("verdict") or {}
    console.print(
        f"Policy verdict: {'passed' if verdict.get('passed') else 'failed'} "
        f"{verdict.get('reasons') or ''}"
    )


if __name__ == "__main__":
    main()
