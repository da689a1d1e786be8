"""The safety gate and publication: decide, persist the report, release or withhold the adapter.

Fail-closed: no report (evaluator crash or timeout), a failed verdict, or a sha256 that does not
match the evaluated adapter never produces a downloadable result file.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from db.repositories.artifacts import ArtifactRepository
from db.repositories.events import EventRepository
from db.repositories.files import FileRepository
from db.repositories.jobs import JobRepository
from db.repositories.safety_reports import SafetyReportRepository
from db.session import session_scope
from db.webhook_events import JobWebhookEvent
from safety_report import GateDecision, SafetyReport, Verdict
from worker.artifacts import sha256_file
from worker.faults import maybe_die
from worker.job import ClaimedJob
from worker.pipeline import PipelineResult
from worker.queue import record_job_webhooks
from worker.settings import WorkerSettings

log = logging.getLogger("keel.gate")


def _verdict(result: PipelineResult, on_failure: str) -> tuple[str, list[str]]:
    if result.report is None:
        return "error", [f"safety evaluation did not complete: {result.evaluation_error}"]
    verdict = result.report.verdict
    if verdict is None or not verdict.to_json():
        return "error", ["no policy thresholds configured: the gate cannot pass an adapter"]
    if verdict.passed:
        if sha256_file(result.adapter_zip) != result.adapter_sha256:
            return "error", ["adapter bytes changed after evaluation (sha256 mismatch)"]
        return "passed", []
    reasons = [str(r) for r in verdict.reasons]
    return ("quarantined" if on_failure == "quarantine" else "failed"), reasons


def publish_outcome(
    job: ClaimedJob,
    result: PipelineResult,
    settings: WorkerSettings,
    *,
    wall_seconds: float,
) -> None:
    verdict, reasons = _verdict(result, result.plan.on_failure)
    relative_zip = result.adapter_zip.resolve().relative_to(settings.data_dir.resolve()).as_posix()
    if verdict in ("passed", "quarantined"):
        # Stored (as a complete object) before any row names it; on a lost lease below it is an
        # orphan, overwritten by the successor's adapter under the same path.
        settings.blob_store().put_file(result.adapter_zip, relative_zip)
    with session_scope() as session:
        jobs = JobRepository(session)
        events = EventRepository(session)
        # The evaluator's report (untouched: a copy), plus the gate's own decision beside it.
        report = result.report.model_copy(deep=True) if result.report else SafetyReport()
        if "verdict" not in report.model_fields_set:
            report.verdict = Verdict(passed=False, reasons=reasons)
        report.gate = GateDecision(verdict=verdict, reasons=reasons, wall_seconds=wall_seconds)
        SafetyReportRepository(session).upsert(
            job_id=job.id,
            tenant_id=job.tenant_id,
            report=_json_safe(report.to_json()),
            verdict=verdict,
            evaluated_sha256=result.adapter_sha256,
            reasons=reasons,
        )
        result_files: list[str] = []
        if verdict in ("passed", "quarantined"):
            adapter_file = FileRepository(session).add_result_file(
                tenant_id=job.tenant_id,
                job_id=job.id,
                filename=f"{job.id}-adapter.zip",
                storage_path=relative_zip,
                bytes=result.adapter_zip.stat().st_size,
                sha256=result.adapter_sha256,
            )
            ArtifactRepository(session).add(
                job_id=job.id,
                tenant_id=job.tenant_id,
                kind="adapter",
                storage_path=relative_zip,
                sha256=result.adapter_sha256,
                bytes=result.adapter_zip.stat().st_size,
                file_id=adapter_file.id,
            )
            result_files = [adapter_file.id]
            session.flush()
            maybe_die("publish_uncommitted", job.attempts)
        summary = _summary(result.report)
        if verdict == "passed":
            done = jobs.finish(
                job.id,
                job.token,
                "succeeded",
                result_files=result_files,
                fine_tuned_model=f"ft:{job.model}:{job.tenant_id}:{job.suffix or 'keel'}:{job.id}",
                trained_tokens=result.trained_tokens,
            )
            message = f"Safety evaluation passed ({summary}); adapter released"
            level = "info"
            hooks: tuple[JobWebhookEvent, ...] = (JobWebhookEvent.SUCCEEDED,)
        elif verdict == "quarantined":
            done = jobs.finish(
                job.id,
                job.token,
                "failed",
                error_code="safety_evaluation_quarantined",
                error_message="The adapter failed the safety policy and is held for provider "
                "review: " + "; ".join(reasons),
                result_files=result_files,
                trained_tokens=result.trained_tokens,
            )
            message = f"Safety evaluation failed policy ({summary}); adapter quarantined"
            level = "warn"
            hooks = (JobWebhookEvent.FAILED, JobWebhookEvent.QUARANTINED)
        elif verdict == "failed":
            done = jobs.finish(
                job.id,
                job.token,
                "failed",
                error_code="safety_evaluation_failed",
                error_message="The fine-tuned model failed the provider's safety policy: "
                + "; ".join(reasons),
                trained_tokens=result.trained_tokens,
            )
            message = f"Safety evaluation failed policy ({summary}); adapter withheld"
            level = "error"
            hooks = (JobWebhookEvent.FAILED, JobWebhookEvent.SAFETY_GATE_FAILED)
        else:
            done = jobs.finish(
                job.id,
                job.token,
                "failed",
                error_code="safety_evaluation_error",
                error_message="The safety evaluation could not complete; the adapter is withheld.",
                trained_tokens=result.trained_tokens,
            )
            message = "Safety evaluation did not complete; adapter withheld"
            level = "error"
            hooks = (JobWebhookEvent.FAILED,)
        if not done:
            # Our fencing token is stale: a successor owns the job. Roll everything back.
            session.rollback()
            log.warning("job %s: lost the lease before publishing; discarding", job.id)
            return
        # In this transaction: the outbox rows commit with the job's final state, or not at all.
        record_job_webhooks(session, job.tenant_id, job.id, *hooks)
        events.append(
            job.id,
            job.tenant_id,
            message,
            level=level,
            type="safety_verdict",
            data={"verdict": verdict, "reasons": reasons},
            attempt=job.attempts,
        )


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON (and the report endpoint) has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _summary(report: SafetyReport | None) -> str:
    if report is None:
        return "no report"
    parts = []
    for name, result in report.models.present() if report.models is not None else ():
        score = result.harmful.harmful_score if result.harmful is not None else None
        if score is not None and score.rate is not None:
            parts.append(f"{name} harmful score {100 * score.rate:.1f}%")
    return ", ".join(parts) or "no scores"
