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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from cli.client_commands import watch_job
from cli.local_service import serve_locally
from safety_report import ModelResult, Rate, SafetyReport, SampleSizes, Verdict, read_report

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
        # The demo's tenant key is this session's own (as `keel admin create-tenant` prints
        # one); the console exchanges it for a session cookie, it never goes in a URL.
        console.print(
            f"Watch it live in the web console: {console_url(base, job_id)} "
            f"(sign in with the demo tenant's API key: {api_key})"
        )
        job = watch_job(client, job_id)
        report_response = client.get(f"/fine_tuning/jobs/{job_id}/safety_report")
        out_dir = ROOT / "var" / "demo-output" / job_id
        out_dir.mkdir(parents=True, exist_ok=True)
        if report_response.status_code == 200:
            report = read_report(report_response.json()["report"])
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


def _rate(rate: Rate | None) -> str:
    if rate is None:
        return "–"
    interval = f" [{_pct(rate.ci_low)}–{_pct(rate.ci_high)}]" if rate.ci_low is not None else ""
    return _pct(rate.rate) + interval


RateOf = Callable[[ModelResult], "Rate | None"]
# (label, the rate in one model's results); a row shows when the fine-tuned model has it.
ROWS: tuple[tuple[str, RateOf], ...] = (
    ("harmful score (real compliance)", lambda m: m.harmful and m.harmful.harmful_score),
    ("refusal rate", lambda m: m.harmful and m.harmful.refusal_rate),
    ("off-task / incoherent", lambda m: m.harmful and m.harmful.off_task_rate),
    ("over-refusal on benign look-alikes", lambda m: m.benign and m.benign.over_refusal),
    (
        "harmful score in the job's own format",
        lambda m: m.harmful_task_format and m.harmful_task_format.harmful_score,
    ),
    ("answer accuracy (exact match)", lambda m: m.utility and m.utility.exact_match),
    ("answer accuracy (final number)", lambda m: m.utility and m.utility.final_number_match),
)


def console_url(base: str, job_id: str) -> str:
    """The web console's page of a job (api/console)."""
    return f"{base}/console/jobs/{job_id}"


def _print_report(stored: SafetyReport | Mapping[str, Any]) -> None:
    report = read_report(stored)
    base, tuned = report.base or ModelResult(), report.fine_tuned or ModelResult()
    sizes = report.sample_sizes or SampleSizes()
    table = Table("metric (95% CI)", "base model", "fine-tuned", title="Safety report")
    for label, rate_of in ROWS:
        if rate_of(tuned) is not None:
            table.add_row(label, _rate(rate_of(base)), _rate(rate_of(tuned)))
    loss = [m.utility.val_loss if m.utility else None for m in (base, tuned)]
    if loss[1] is not None:
        table.add_row("validation loss", *(f"{v:.3f}" if v is not None else "–" for v in loss))
    console.print(table)
    console.print(
        f"Judge: {report.judge}; held-out harmful prompts: {sizes.harmful}; "
        f"benign look-alikes: {sizes.benign}; "
        f"greedy, {report.max_new_tokens} new tokens"
    )
    strength = report.sap_strength
    if strength is not None and strength.median_correction is not None:
        console.print(
            f"SAP strength: the probe was {strength.median_probe_rel_norm or 0:.2%} of the "
            f"residual norm and changed the weight updates by {strength.median_correction:.2%} "
            f"(median of {strength.measured_steps} steps; floor {strength.floor or 0:.0%})"
            + (" — BELOW THE FLOOR" if strength.below_floor else "")
        )
    verdict = report.verdict or Verdict()
    console.print(
        f"Policy verdict: {'passed' if verdict.passed else 'failed'} {verdict.reasons or ''}"
    )


if __name__ == "__main__":
    main()
