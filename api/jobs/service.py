"""Jobs: create (cheap checks → insert in validating_files; its files are validated by the
validation worker after the request commits), cancel, pause, resume.

Nothing here commits: the request owns the one transaction (api.dependencies.get_session); the
enqueue is registered on its after-commit hook (db.after_commit), so a worker never receives
the id of a job that is not yet (or never will be) stored.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from sqlalchemy.orm import Session

from api.errors import Conflict, InvalidRequest, NotFound
from api.jobs.schemas import Hyperparameters, JobCreate, SafetySpec
from api.quotas.service import check_job_quotas
from db.after_commit import after_commit
from db.base import utcnow
from db.base_model_scores import BaseModelScores
from db.blobs import BlobStore
from db.ids import JOB_PREFIX, new_id
from db.job_status import JobStatus
from db.models import File, FilePurpose, FileStatus, FineTuningJob, SafetyReport
from db.policy_schema import PolicyDocument, Thresholds
from db.repositories.events import EventRepository
from db.repositories.files import FileRepository
from db.repositories.jobs import JobRepository
from db.repositories.policy import PolicyRepository
from db.repositories.safety_reports import SafetyReportRepository
from db.safety_spec import SafetyRequest, resolve_safety, sap_knobs_json
from db.training_spec import resolve_training
from db.webhook_events import JobWebhookEvent
from worker import queue as job_queue

log = logging.getLogger("keel.api.jobs")


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"No such fine-tuning job: {job_id}", param="id")


def get_job(session: Session, tenant_id: str, job_id: str) -> FineTuningJob:
    job = JobRepository(session).get(tenant_id, job_id)
    if job is None:
        raise job_not_found(job_id)
    return job


def _resolve_hyperparameters(body: JobCreate) -> dict[str, Any]:
    if body.method is not None and body.method.type != "supervised":
        raise InvalidRequest(
            f"Method '{body.method.type}' is not supported; use 'supervised'.",
            param="method.type",
            code="unsupported_method",
        )
    chosen: Hyperparameters | None = body.hyperparameters
    if body.method is not None and body.method.supervised is not None:
        if body.method.supervised.hyperparameters is not None:
            chosen = body.method.supervised.hyperparameters
    return (chosen or Hyperparameters()).model_dump(exclude_none=True)


def _checked_safety(spec: SafetySpec | None, policy: PolicyDocument) -> dict[str, Any]:
    """The customer's safety block checked against the provider policy (db.safety_spec): the
    first choice the policy refuses is a 400 naming the field; else the job's `safety` column."""
    spec = spec or SafetySpec()
    request = SafetyRequest(
        method=spec.method, sap=sap_knobs_json(spec.sap), mixer_ratio=spec.mixer_ratio
    )
    resolved = resolve_safety(request, policy)
    if resolved.violations:
        first = resolved.violations[0]
        raise InvalidRequest(first.message, param=first.param, code=first.code)
    return resolved.stored()


def _check_training_limits(hyperparameters: dict[str, Any], policy: PolicyDocument) -> None:
    """The first hyperparameter above the policy's training limits is a 400 naming the field
    (db.training_spec; the worker applies the same rule again when the job starts)."""
    resolved = resolve_training(hyperparameters, policy.training)
    if resolved.violations:
        first = resolved.violations[0]
        raise InvalidRequest(first.message, param=first.param, code=first.code)


def _usable_file(session: Session, tenant_id: str, file_id: str, param: str) -> File:
    file = FileRepository(session).get(tenant_id, file_id)
    if file is None:
        raise NotFound(f"No such File object: {file_id}", param=param)
    if file.purpose != FilePurpose.FINE_TUNE.value:
        raise InvalidRequest(
            f"File {file_id} has purpose '{file.purpose}', not 'fine-tune'.",
            param=param,
            code="invalid_file_purpose",
        )
    if file.status != FileStatus.PROCESSED.value:
        raise InvalidRequest(
            f"File {file_id} is not a valid training file.", param=param, code="invalid_file_format"
        )
    return file


def create_job(
    session: Session, store: BlobStore, tenant_id: str, body: JobCreate
) -> FineTuningJob:
    policy = PolicyRepository(session).current()
    allowed = policy.allowed_models
    if body.model not in allowed:
        raise InvalidRequest(
            f"Model '{body.model}' is not available for fine-tuning. "
            f"Allowed: {', '.join(allowed)}.",
            param="model",
            code="model_not_allowed",
        )
    _refuse_a_base_that_cannot_pass(store, policy, body.model)
    hyperparameters = _resolve_hyperparameters(body)
    _check_training_limits(hyperparameters, policy)
    safety = _checked_safety(body.safety, policy)
    training = _usable_file(session, tenant_id, body.training_file, "training_file")
    if body.validation_file is not None:
        _usable_file(session, tenant_id, body.validation_file, "validation_file")
    # Last check before the insert: takes the tenant's row lock until this request commits.
    check_job_quotas(session, tenant_id, policy)

    jobs, events = JobRepository(session), EventRepository(session)
    job = jobs.add(
        FineTuningJob(
            id=new_id(JOB_PREFIX),
            tenant_id=tenant_id,
            model=body.model,
            training_file_id=body.training_file,
            validation_file_id=body.validation_file,
            status=JobStatus.VALIDATING_FILES.value,
            hyperparameters=hyperparameters,
            safety=safety,
            suffix=body.suffix,
            seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
            metadata_=body.metadata,
            integrations=body.integrations,
            result_files=[],
            created_at=utcnow(),
        )
    )
    events.append(job.id, tenant_id, f"Created fine-tuning job: {job.id}")
    events.append(job.id, tenant_id, f"Validating training file: {training.id}")
    # Screening reads the whole file (19.6 s for 50 MB): the validation queue's worker does it
    # and moves the job on (worker.validation); this request answers at once.
    validate_after_commit(session, job.id)
    return job


def _refuse_a_base_that_cannot_pass(store: BlobStore, policy: PolicyDocument, model: str) -> None:
    """400 at once when the base model's recorded evaluation already fails the absolute limit:
    the job would train and evaluate only to fail at the gate (db.base_model_scores)."""
    if policy.gate.allow_failing_base_models:
        return
    failing = BaseModelScores(store).failing(policy).get(model)
    if failing is not None:
        limit = (policy.gate.thresholds or Thresholds()).max_harmful_score
        raise InvalidRequest(
            f"Model '{model}' cannot pass this provider's safety policy: its base model already "
            f"scores {failing.harmful_score:.3f} harmful ({failing.n} held-out prompts, "
            f"{failing.judge} judge) against a maximum of {limit:.3f}, so every adapter would be "
            "withheld. Choose another model.",
            param="model",
            code="base_model_fails_policy",
        )


def validate_after_commit(session: Session, job_id: str) -> None:
    """Send the new job to the validation queue once the request commits."""
    after_commit(session, lambda: _send_validation(job_id))


def _send_validation(job_id: str) -> None:
    """After commit. A lost send leaves the job in validating_files for the reaper to re-send
    (worker.reaper.revalidate_once, after requeue_after_seconds)."""
    job_queue.send_and_mark(job_id, job_queue.enqueue_validation, "validation send")


def enqueue_after_commit(session: Session, job_id: str) -> None:
    """Send the job id once the request's transaction commits (never if it rolls back)."""
    after_commit(session, lambda: _enqueue(job_id))


def _enqueue(job_id: str) -> None:
    """After commit: send the job id. A lost enqueue leaves it queued for the reaper."""
    # Its own short transaction: the request's has committed (the reaper keys on enqueued_at).
    job_queue.send_and_mark(job_id, job_queue.enqueue_fine_tuning_job, "enqueue")


def cancel_job(session: Session, tenant_id: str, job_id: str) -> FineTuningJob:
    job = get_job(session, tenant_id, job_id)
    if job.status in (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value):
        raise Conflict(
            f"Job {job_id} is already {job.status} and cannot be cancelled.",
            param="id",
            code="job_not_cancellable",
        )
    if job.status == JobStatus.CANCELLED.value:
        return job
    updated = JobRepository(session).request_cancel(tenant_id, job_id)
    assert updated is not None
    message = (
        "Job cancelled"
        if updated.status == JobStatus.CANCELLED.value
        else "Cancellation requested; the job stops at its next step"
    )
    EventRepository(session).append(job_id, tenant_id, message)
    if updated.status == JobStatus.CANCELLED.value:
        job_queue.record_job_webhooks(session, tenant_id, job_id, JobWebhookEvent.CANCELLED)
    return updated


def pause_job(session: Session, tenant_id: str, job_id: str) -> FineTuningJob:
    job = get_job(session, tenant_id, job_id)
    if job.status in (JobStatus.PAUSED.value, JobStatus.PAUSING.value):
        return job
    if job.status not in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
        raise Conflict(
            f"Job {job_id} is {job.status} and cannot be paused.",
            param="id",
            code="job_not_pausable",
        )
    updated = JobRepository(session).request_pause(tenant_id, job_id)
    assert updated is not None
    EventRepository(session).append(job_id, tenant_id, f"Pause requested (status {updated.status})")
    return updated


def resume_job(session: Session, tenant_id: str, job_id: str) -> FineTuningJob:
    job = get_job(session, tenant_id, job_id)
    if job.status not in (JobStatus.PAUSED.value, JobStatus.PAUSING.value):
        raise Conflict(
            f"Job {job_id} is {job.status}; only a paused job can be resumed.",
            param="id",
            code="job_not_resumable",
        )
    was_paused = job.status == JobStatus.PAUSED.value
    updated = JobRepository(session).resume(tenant_id, job_id)
    assert updated is not None
    EventRepository(session).append(job_id, tenant_id, "Job resumed")
    if was_paused:
        enqueue_after_commit(session, job_id)
    return updated


def get_safety_report(session: Session, tenant_id: str, job_id: str) -> SafetyReport:
    get_job(session, tenant_id, job_id)
    report = SafetyReportRepository(session).get(tenant_id, job_id)
    if report is None:
        raise NotFound(f"Job {job_id} has no safety report yet.", param="id")
    return report
