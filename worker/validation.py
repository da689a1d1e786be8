"""Validate a job's files and screen stored files, off the request path (issues 22 and 23).

`POST /v1/fine_tuning/jobs` does only the cheap checks and answers with the job in
`validating_files`; `validate_job` runs on the validation queue's worker (its own process, so
never behind a training job), screens the training file and moves the job to `queued` (then
enqueues training) or to `failed` with the error the request used to answer with
(`training_file_flagged`, param `training_file`), or when one epoch of the file cannot fit the
tenant's remaining daily trained tokens (`quota_trained_tokens_exceeded`, worker.token_budget).
Every transition is a compare-and-set on
`validating_files`: a cancel, or a duplicate delivery that finished first, wins.

Screening results are cached per tenant by the file's sha256 and the screening fingerprint
(screening.fingerprint, db.models.FileScreening): `POST /v1/files/{id}/screen` and job
validation share them, and a file is screened once per content and configuration.

Plain Python (no Celery): worker.tasks calls it, tests call it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import screening
from dataformats import Conversation, validate_jsonl
from db.base import utcnow
from db.blobs import BlobStore
from db.job_status import JobStatus
from db.models import File
from db.policy_schema import PolicyDocument
from db.repositories.events import EventRepository
from db.repositories.files import FileRepository
from db.repositories.jobs import JobRepository
from db.repositories.policy import PolicyRepository
from db.repositories.screenings import ScreeningRepository
from db.repositories.usage import TOKEN_WINDOW, UsageRepository
from db.session import session_scope
from db.training_spec import resolve_training
from db.webhook_events import JobWebhookEvent
from worker import queue as job_queue
from worker.settings import WorkerSettings
from worker.token_budget import one_epoch_tokens_lower_bound, tokenizer_file

log = logging.getLogger("keel.validation")
# The daily quota's code, as the create request's 429 and the worker's start-time check use it.
QUOTA_TOKENS_CODE = "quota_trained_tokens_exceeded"


@dataclass(frozen=True)
class Rejection:
    """Why validation failed a job: the job's `error` (code, message, param)."""

    code: str
    message: str
    param: str = "training_file"


@dataclass(frozen=True)
class _JobToValidate:
    """What validation needs of the job, read in the transaction that takes it."""

    id: str
    tenant_id: str
    model: str
    hyperparameters: dict[str, Any]
    attempt: int


class StoredFileInvalid(Exception):
    """The stored bytes no longer validate (they did at upload)."""


@dataclass(frozen=True)
class Screening:
    summary: dict[str, Any]
    decision: dict[str, Any]
    results: list[dict[str, Any]]
    cached: bool


def screening_fingerprint(policy: PolicyDocument) -> str:
    return screening.fingerprint(policy.screening.model_dump(mode="json"))


def _read_conversations(store: BlobStore, storage_path: str) -> list[Conversation]:
    with store.open(storage_path) as handle:
        report = validate_jsonl(handle, keep=True)
    if not report.ok:
        raise StoredFileInvalid(report.errors[0] if report.errors else "no rows")
    return report.conversations


class StoredRows:
    """A stored file's rows, parsed at most once per validation: screening and the daily-token
    count share them (parsing 100k rows takes seconds)."""

    def __init__(self, store: BlobStore, storage_path: str) -> None:
        self._store, self._path = store, storage_path
        self._rows: list[Conversation] | None = None

    def get(self) -> list[Conversation]:
        if self._rows is None:
            self._rows = _read_conversations(self._store, self._path)
        return self._rows


def screen_stored_file(
    rows: StoredRows, tenant_id: str, sha256: str, policy: PolicyDocument
) -> Screening:
    """The cached screening of these bytes under this policy, computed and stored on a miss."""
    fingerprint = screening_fingerprint(policy)
    if sha256:  # every upload has one; an empty digest must never share an entry
        with session_scope() as session:
            hit = ScreeningRepository(session).get(tenant_id, sha256, fingerprint)
            if hit is not None:
                return Screening(hit.summary, hit.decision, list(hit.results), cached=True)
    results = screening.screen_conversations(rows.get())
    summary = screening.summarize(results)
    limits = screening.ScreeningLimits(
        max_flagged_fraction=policy.screening.max_flagged_fraction,
        max_flagged_rows=policy.screening.max_flagged_rows,
    )
    flagged_lines = tuple(r.line for r in results if r.flagged)
    decision = screening.decide(summary, limits, flagged_lines).to_dict()
    per_row = [result.to_dict() for result in results]
    if sha256:
        with session_scope() as session:
            ScreeningRepository(session).put(
                tenant_id,
                sha256,
                fingerprint,
                summary=summary.to_dict(),
                decision=decision,
                results=per_row,
            )
    return Screening(summary.to_dict(), decision, per_row, cached=False)


def screen_file(tenant_id: str, file_id: str, settings: WorkerSettings | None = None) -> None:
    """The `POST /v1/files/{id}/screen` task: compute and cache the file's screening."""
    settings = settings or WorkerSettings()
    with session_scope() as session:
        file = FileRepository(session).get(tenant_id, file_id)
        policy = PolicyRepository(session).current()
        if file is None:
            log.info("screen of %s skipped: the file is gone", file_id)
            return
        sha256, storage_path = file.sha256, file.storage_path
    try:
        rows = StoredRows(settings.blob_store(), storage_path)
        screen_stored_file(rows, tenant_id, sha256, policy)
    except (StoredFileInvalid, FileNotFoundError):
        log.warning("screen of %s: the stored file no longer validates", file_id)


def _check_training_file(
    rows: StoredRows, job_tenant: str, file: File, policy: PolicyDocument
) -> Rejection | None:
    if not policy.screening.enabled:
        return None
    result = screen_stored_file(rows, job_tenant, file.sha256, policy)
    if result.decision.get("rejected"):
        return Rejection("training_file_flagged", str(result.decision["message"]))
    return None


def _check_daily_tokens(
    rows: StoredRows,
    settings: WorkerSettings,
    job: _JobToValidate,
    file: File,
    policy: PolicyDocument,
) -> Rejection | None:
    """The tenant's remaining daily trained tokens against a lower bound of one epoch of the
    file (worker.token_budget)."""
    daily = policy.quotas.max_trained_tokens_per_day
    if daily is None:
        return None
    with session_scope() as session:
        used = UsageRepository(session).trained_tokens_since(job.tenant_id, utcnow() - TOKEN_WINDOW)
    left = daily - used
    if left <= 0:
        return Rejection(
            QUOTA_TOKENS_CODE,
            f"Your organization trained {used} tokens in the last 24 hours; the limit is {daily} "
            "(quotas.max_trained_tokens_per_day). Create the job again later.",
        )
    tokenizer = tokenizer_file(settings.model_cache_dir, job.model)
    if tokenizer is None:
        log.info("job %s: no tokenizer for %s here; daily token check skipped", job.id, job.model)
        return None
    max_length = resolve_training(job.hyperparameters, policy.training).max_length
    tokens = one_epoch_tokens_lower_bound(rows.get(), tokenizer, max_length)
    if tokens is None or tokens <= left:
        return None
    return Rejection(
        QUOTA_TOKENS_CODE,
        f"One epoch of training file {file.id} is at least {tokens} tokens, and your organization "
        f"has {left} of its {daily} trained tokens per day left "
        "(quotas.max_trained_tokens_per_day). Create the job again later, or use a smaller file.",
    )


class _Touching:
    """While validation runs, touch the job every `interval` seconds (a thread of its own), so
    the reaper does not take a long screen for a lost one and start a duplicate."""

    def __init__(self, job_id: str, interval: float) -> None:
        self._job_id, self._interval = job_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"touch-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with session_scope() as session:
                    JobRepository(session).touch_validation(self._job_id)
            except Exception:  # noqa: BLE001 - a missed touch only risks a duplicate
                log.warning("touch of %s failed", self._job_id, exc_info=True)

    def __enter__(self) -> _Touching:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def validate_job(job_id: str, settings: WorkerSettings | None = None) -> str | None:
    """Validate one job in validating_files; returns its new status (None: not ours to do)."""
    settings = settings or WorkerSettings()
    with session_scope() as session:
        jobs = JobRepository(session)
        job = jobs.begin_validation(job_id)
        if job is None:
            log.info("job %s is not validating_files (cancelled or done); skipping", job_id)
            return None
        taken = _JobToValidate(
            job.id,
            job.tenant_id,
            job.model,
            dict(job.hyperparameters or {}),
            job.validation_attempts,
        )
        tenant_id, attempt = taken.tenant_id, taken.attempt
        # The job's own file, read unscoped: a file deleted after the job was created keeps its
        # bytes until the job ends (api.files.service.delete_file).
        file = session.get(File, job.training_file_id)
        assert file is not None
        session.expunge(file)
        policy = PolicyRepository(session).current()
        if attempt > 1:
            EventRepository(session).append(
                job_id,
                tenant_id,
                f"Validating training file again (attempt {attempt})",
                type="message",
                data={"validation_attempt": attempt},
            )
    rows = StoredRows(settings.blob_store(), file.storage_path)
    try:
        with _Touching(job_id, interval=max(1.0, settings.requeue_after_seconds / 3)):
            rejection = _check_training_file(rows, tenant_id, file, policy) or (
                _check_daily_tokens(rows, settings, taken, file, policy)
            )
    except (StoredFileInvalid, FileNotFoundError):
        rejection = Rejection(
            "invalid_file_format", f"File {file.id} is not a valid training file.", "training_file"
        )
    except Exception as exc:  # noqa: BLE001 - a crash fails the job, never the validator
        log.exception("validation of %s crashed", job_id)
        rejection = Rejection(
            "internal_error", f"Validating the training file crashed: {type(exc).__name__}"
        )
    with session_scope() as session:
        jobs, events = JobRepository(session), EventRepository(session)
        if rejection is not None:
            if not jobs.finish_validation(
                job_id,
                JobStatus.FAILED,
                error_code=rejection.code,
                error_message=rejection.message,
                error_param=rejection.param,
            ):
                return None
            events.append(
                job_id,
                tenant_id,
                f"Training file rejected: {rejection.message}",
                level="error",
                data={"code": rejection.code},
            )
            # The outbox rows commit with the failed state, or not at all.
            job_queue.record_job_webhooks(session, tenant_id, job_id, JobWebhookEvent.FAILED)
            return JobStatus.FAILED.value
        if not jobs.finish_validation(job_id, JobStatus.QUEUED):
            return None
        events.append(job_id, tenant_id, "Files validated, moving job to queued state")
    _enqueue_training(job_id)
    return JobStatus.QUEUED.value


def _enqueue_training(job_id: str) -> None:
    """After the queued transition commits; a lost enqueue is the reaper's (enqueued_at null)."""
    job_queue.send_and_mark(job_id, job_queue.enqueue_fine_tuning_job, "enqueue")
