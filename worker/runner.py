"""run_job(job_id): claim → prepare data → mix → train (SAP) → evaluate → gate → persist.

Plain Python (no Celery): the task calls it, tests call it. Every database write is a short
transaction; none is held open across training. Writes after training are fenced by the token
won at claim time, so a worker that lost its lease can never overwrite its successor's work.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from pathlib import Path

from dataformats import Conversation, validate_jsonl
from db.base import utcnow
from db.blobs import BlobNotFoundError, BlobStore, LocalBlobStore
from db.policy_schema import PolicyDocument
from db.repositories.checkpoints import CheckpointRepository
from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.repositories.policy import PolicyRepository
from db.repositories.usage import TOKEN_WINDOW, UsageRepository
from db.session import session_scope
from db.training_spec import within_daily_tokens
from db.webhook_events import JobWebhookEvent
from sap_core.errors import SapError, TrainingCancelled
from worker.artifacts import JobPaths
from worker.distributed_launch import RankLost
from worker.faults import maybe_die
from worker.job import ClaimedJob
from worker.job_spec import plan_job
from worker.pipeline import JobRecipe, PipelineResult, resolve_device
from worker.progress import DbProgressCallback, LeaseLostError
from worker.publish import publish_outcome
from worker.queue import enqueue_fine_tuning_job, record_job_webhooks, send_and_mark
from worker.reaper import RANK_LOST, times_lost
from worker.settings import WorkerSettings
from worker.shutdown import GracefulShutdown, ShutdownRequested

log = logging.getLogger("keel.worker")


def _claim(
    job_id: str, settings: WorkerSettings
) -> tuple[ClaimedJob, PolicyDocument | None] | None:
    """The claimed job and the policy it trains under (None: the tenant has no trained tokens
    left today)."""
    with session_scope() as session:
        jobs = JobRepository(session)
        token = jobs.claim(job_id, settings.worker_id, settings.lease_seconds)
        if token is None:
            return None
        job = jobs.get_unscoped(job_id)
        assert job is not None
        training = jobs.file_storage_path(job.training_file_id)
        validation = (
            jobs.file_storage_path(job.validation_file_id) if job.validation_file_id else None
        )
        claimed = ClaimedJob(
            id=job.id,
            tenant_id=job.tenant_id,
            model=job.model,
            token=token,
            attempts=job.attempts,
            training_storage_path=training,
            validation_storage_path=validation,
            hyperparameters=dict(job.hyperparameters or {}),
            safety=dict(job.safety or {}),
            seed=int(job.seed or 0),
            suffix=job.suffix,
        )
        used_24h = UsageRepository(session).trained_tokens_since(
            job.tenant_id, utcnow() - TOKEN_WINDOW
        )
        policy = within_daily_tokens(PolicyRepository(session).current(), used_24h)
        EventRepository(session).append(
            job.id,
            job.tenant_id,
            f"Job started on worker {settings.worker_id} (attempt {job.attempts})",
            type="message",
            data={"worker": settings.worker_id},
            attempt=job.attempts,
        )
    return claimed, policy


class DailyTokensExhausted(SapError):
    code = "quota_trained_tokens_exceeded"


def _read_conversations(path: Path) -> list[Conversation]:
    with path.open("rb") as handle:
        report = validate_jsonl(handle, keep=True)
    if not report.ok:
        raise SapError(f"stored training file no longer validates: {report.errors[:3]}")
    return report.conversations


def _fetch(store: BlobStore, storage_path: str, settings: WorkerSettings) -> Path:
    try:
        return store.fetch_file(storage_path, settings.data_dir / storage_path)
    except BlobNotFoundError as exc:
        raise SapError("the job's training file is no longer stored") from exc


def _fetch_checkpoint(store: BlobStore, storage_path: str, settings: WorkerSettings) -> Path | None:
    """The last checkpoint, fetched into this worker's data dir (None: train from the start)."""
    try:
        return store.fetch_tree(storage_path, settings.data_dir / storage_path)
    except BlobNotFoundError:
        log.warning("checkpoint %s is not (completely) stored; starting over", storage_path)
        return None


def run_job(job_id: str, settings: WorkerSettings | None = None) -> None:
    """Train one job if this worker wins the claim; otherwise return (duplicate delivery)."""
    settings = settings or WorkerSettings()
    claimed = _claim(job_id, settings)
    if claimed is None:
        log.info("job %s not claimable (duplicate delivery or not queued)", job_id)
        return
    job, policy = claimed
    store = settings.blob_store()
    try:
        _run_claimed(job, policy, settings, store)
    finally:
        _drop_working_copies(job, settings, store)


def _drop_working_copies(job: ClaimedJob, settings: WorkerSettings, store: BlobStore) -> None:
    """With an object store, this worker's copies of the job's files go once it stops working on
    it (whatever the outcome): the bucket has what a successor or a download needs, and a
    long-running worker's disk would otherwise fill with every job it ever ran. With the local
    store the data dir *is* the storage: nothing is removed."""
    if isinstance(store, LocalBlobStore):
        return
    paths = [JobPaths.for_job(settings.data_dir, job.tenant_id, job.id).root]
    for stored in (job.training_storage_path, job.validation_storage_path):
        if stored:
            paths.append(settings.data_dir / stored)
    for path in paths:
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            log.warning("job %s: could not remove the working copy %s", job.id, path)


def _run_claimed(
    job: ClaimedJob, policy: PolicyDocument | None, settings: WorkerSettings, store: BlobStore
) -> None:
    callback = DbProgressCallback(
        job.id,
        job.tenant_id,
        job.token,
        lease_seconds=settings.lease_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        data_dir=settings.data_dir,
        attempt=job.attempts,
        checkpoint_every_seconds=settings.checkpoint_every_seconds,
        store=store,
    )
    graceful = GracefulShutdown(lambda: callback.phase)
    callback.shutdown = graceful
    started = time.monotonic()
    with graceful.installed():
        try:
            callback.start()
            result = _train_and_evaluate(job, policy, callback, settings, store)
            maybe_die("before_publish", job.attempts)
            # A SIGTERM from here on lets the outcome be written (one short transaction).
            graceful.finishing = True
            if graceful.requested and result.report is None:
                # The evaluation was interrupted by the shutdown, not failed: redo it.
                raise ShutdownRequested("worker shutting down during evaluation")
        except LeaseLostError:
            log.warning("job %s: lease lost to another worker; stopping without writing", job.id)
            return
        except ShutdownRequested:
            graceful.finishing = True
            _release(job, settings)
            return
        except RankLost as lost:
            # A training process of a data-parallel job died: like a dead worker, the job is
            # queued again and resumes from its last checkpoint (without waiting for a lease).
            graceful.finishing = True
            _rank_lost(job, settings, str(lost))
            return
        except TrainingCancelled as stop:
            graceful.finishing = True
            if stop.reason == "shutdown":
                _release(job, settings)
            else:
                _finish_stopped(job, stop.reason, callback)
            return
        except SapError as exc:
            graceful.finishing = True
            if graceful.requested:  # a shutdown that surfaced wrapped in a library's error
                _release(job, settings)
            else:
                _fail(job, exc.code, str(exc), callback)
            return
        except Exception as exc:  # noqa: BLE001 - any crash fails the job, never the worker
            graceful.finishing = True
            if graceful.requested:
                _release(job, settings)
                return
            log.exception("job %s crashed", job.id)
            _fail(
                job,
                "internal_error",
                f"Training crashed: {type(exc).__name__}",
                callback,
                detail=traceback.format_exc(limit=5),
            )
            return
        finally:
            callback.close()
        publish_outcome(job, result, settings, wall_seconds=time.monotonic() - started)


def _release(job: ClaimedJob, settings: WorkerSettings) -> None:
    """The worker is stopping: the job back to queued (its checkpoints kept) and enqueued now,
    so the next worker resumes it at once instead of after the lease expires."""
    with session_scope() as session:
        latest = CheckpointRepository(session).latest(job.id)
        released = JobRepository(session).release(job.id, job.token)
        if released:
            step = latest.step_number if latest is not None else None
            where = f"from its checkpoint at step {step}" if step else "from the start"
            EventRepository(session).append(
                job.id,
                job.tenant_id,
                f"Worker {settings.worker_id} shutting down; the job is queued again and resumes "
                f"{where} on the next worker",
                level="warn",
                type="message",
                data={"reason": "worker_shutdown", "checkpoint_step": step},
                attempt=job.attempts,
            )
    if not released:
        log.warning("job %s: lease already lost at shutdown; nothing to release", job.id)
        return
    # Broker down: the reaper enqueues it (enqueued_at is unset).
    if send_and_mark(job.id, enqueue_fine_tuning_job, "re-enqueue at shutdown"):
        log.info("job %s released at shutdown and re-enqueued", job.id)


def _rank_lost(job: ClaimedJob, settings: WorkerSettings, why: str) -> None:
    """Queue the job again to resume from its last checkpoint, or fail it once training
    processes and workers were lost `max_attempts` times in all (the reaper's count)."""
    with session_scope() as session:
        jobs, events = JobRepository(session), EventRepository(session)
        lost = times_lost(events, job.id)
        if lost >= settings.max_attempts:
            message = f"A training process or the job's worker was lost {lost} times ({why})."
            if jobs.finish(
                job.id, job.token, "failed", error_code="worker_lost", error_message=message
            ):
                record_job_webhooks(session, job.tenant_id, job.id, JobWebhookEvent.FAILED)
                events.append(
                    job.id,
                    job.tenant_id,
                    f"Job failed: {message}",
                    level="error",
                    type="message",
                    data={"code": "worker_lost"},
                    attempt=job.attempts,
                )
            return
        latest = CheckpointRepository(session).latest(job.id)
        released = jobs.release(job.id, job.token)
        if released:
            step = latest.step_number if latest is not None else None
            where = f"from its checkpoint at step {step}" if step else "from the start"
            events.append(
                job.id,
                job.tenant_id,
                f"A training process died ({why}); the job is queued again and resumes {where}",
                level="warn",
                type="message",
                data={"reason": RANK_LOST, "checkpoint_step": step},
                attempt=job.attempts,
            )
    if released and send_and_mark(job.id, enqueue_fine_tuning_job, "re-enqueue after a lost rank"):
        log.info("job %s re-enqueued after a lost training process", job.id)


def _train_and_evaluate(
    job: ClaimedJob,
    policy: PolicyDocument | None,
    callback: DbProgressCallback,
    settings: WorkerSettings,
    store: BlobStore,
) -> PipelineResult:
    if policy is None:
        raise DailyTokensExhausted(
            "Your organization has no trained tokens left of its daily quota "
            "(quotas.max_trained_tokens_per_day); create the job again later."
        )
    # The data dir is this worker's working copy: with an object store, what the job needs is
    # fetched into it, so any worker (any machine, any data dir) can take any job.
    conversations = _read_conversations(_fetch(store, job.training_storage_path, settings))
    validation = (
        _read_conversations(_fetch(store, job.validation_storage_path, settings))
        if job.validation_storage_path
        else None
    )
    paths = JobPaths.for_job(settings.data_dir, job.tenant_id, job.id)
    with session_scope() as session:
        latest = CheckpointRepository(session).latest(job.id)
        checkpoint = latest.storage_path if latest is not None else None
    resume_from = _fetch_checkpoint(store, checkpoint, settings) if checkpoint else None
    return JobRecipe(
        job_id=job.id,
        tenant_id=job.tenant_id,
        model_name=job.model,
        conversations=conversations,
        validation=validation,
        plan_factory=lambda n, model_path: plan_job(
            hyperparameters=job.hyperparameters,
            safety=job.safety,
            policy=policy,
            seed=job.seed,
            n_examples=n,
            model_path=str(model_path),
            output_dir=str(paths.root),
            device=resolve_device(settings.device),
        ),
        paths=paths,
        callback=callback,
        settings=settings,
        resume_from=resume_from,
        attempt=job.attempts,
    ).run()


def _finish_stopped(job: ClaimedJob, reason: str, callback: DbProgressCallback) -> None:
    with session_scope() as session:
        jobs = JobRepository(session)
        if reason == "pause":
            jobs.mark_paused(job.id, job.token)
            message = "Job paused; resume continues from the last checkpoint"
        else:
            if jobs.finish(job.id, job.token, "cancelled"):
                record_job_webhooks(session, job.tenant_id, job.id, JobWebhookEvent.CANCELLED)
            message = "Job cancelled"
        EventRepository(session).append(
            job.id, job.tenant_id, message, type="message", attempt=job.attempts
        )


def _fail(
    job: ClaimedJob, code: str, message: str, callback: DbProgressCallback, detail: str = ""
) -> None:
    if detail:
        log.error("job %s failed: %s\n%s", job.id, message, detail)
    with session_scope() as session:
        finished = JobRepository(session).finish(
            job.id, job.token, "failed", error_code=code, error_message=message
        )
        if finished:
            record_job_webhooks(session, job.tenant_id, job.id, JobWebhookEvent.FAILED)
            EventRepository(session).append(
                job.id,
                job.tenant_id,
                f"Job failed: {message}",
                level="error",
                type="message",
                data={"code": code},
                attempt=job.attempts,
            )
