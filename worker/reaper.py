"""The reaper: re-enqueue jobs whose worker died (lease expired) or whose enqueue was lost;
dispatch webhook deliveries whose handoff to the webhooks queue was lost (the outbox), and
re-send the validation of jobs stuck in validating_files (a lost enqueue or a dead validator).

Run with `python -m worker.reaper` (or `keel reaper`). Safe to run several: re-enqueueing is
idempotent because a worker only trains a job it wins by compare-and-set.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from db.job_status import JobStatus
from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.repositories.webhooks import WebhookOutboxRepository
from db.session import session_scope
from db.settings import get_settings
from db.webhook_events import JobWebhookEvent
from worker import queue as job_queue
from worker.queue import enqueue_webhook_delivery, record_job_webhooks
from worker.settings import WorkerSettings

log = logging.getLogger("keel.reaper")
LEASE_EXPIRED = "lease_expired"
# A training process of a data-parallel job died (worker.runner): counted with lost leases.
RANK_LOST = "rank_lost"


def times_lost(events: EventRepository, job_id: str) -> int:
    """How often the job's worker or one of its training processes was lost, the loss being
    handled now included (`max_attempts` bounds it)."""
    return (
        events.count_with_reason(job_id, LEASE_EXPIRED)
        + events.count_with_reason(job_id, RANK_LOST)
        + 1
    )


def reap_once(settings: WorkerSettings | None = None, now: datetime | None = None) -> list[str]:
    """One pass; returns the ids of the jobs it re-enqueued."""
    settings = settings or WorkerSettings()
    now = now or datetime.now(UTC)
    requeue: list[str] = []
    with session_scope() as session:
        jobs = JobRepository(session)
        events = EventRepository(session)
        for job_id in jobs.find_expired_leases(now):
            job = jobs.get_unscoped(job_id)
            if job is None:
                continue
            # Lost leases, not claims: a job handed back at a graceful shutdown (a deploy)
            # was not lost, and must not be given up on sooner for it.
            lost = times_lost(events, job_id)
            if lost >= settings.max_attempts:
                finished = jobs.finish(
                    job_id,
                    job.fencing_token,
                    "failed",
                    error_code="worker_lost",
                    error_message=f"The job's worker stopped responding {lost} times.",
                )
                if finished:
                    record_job_webhooks(session, job.tenant_id, job_id, JobWebhookEvent.FAILED)
                events.append(
                    job_id,
                    job.tenant_id,
                    "Giving up: worker lost too often",
                    level="error",
                    type="message",
                    attempt=job.attempts,
                )
                continue
            # Back to queued with a bumped fencing token: the lost worker, if it is only
            # partitioned and not dead, can no longer write anything for this job.
            if not jobs.requeue_expired(job_id, now):
                continue
            events.append(
                job_id,
                job.tenant_id,
                "Worker stopped heartbeating (lease expired); re-enqueueing to resume from the "
                "last checkpoint",
                level="warn",
                type="message",
                data={"attempts": job.attempts, "reason": LEASE_EXPIRED},
                attempt=job.attempts,
            )
            requeue.append(job_id)
        cutoff = now - timedelta(seconds=settings.requeue_after_seconds)
        # A job just requeued above is also queued and unenqueued: enqueue it once, not twice.
        requeue.extend(j for j in jobs.find_unenqueued(cutoff) if j not in requeue)
    for job_id in requeue:  # broker down: the next pass retries
        if job_queue.send_and_mark(job_id, job_queue.enqueue_fine_tuning_job, "re-enqueue"):
            log.info("re-enqueued %s", job_id)
    revalidate_once(settings, now)
    return requeue


def dispatch_webhooks_once(now: datetime | None = None) -> list[str]:
    """Hand to the webhooks queue every pending delivery whose handoff is overdue: never made
    (the process that committed it died first, or the broker was down) or lost with a worker.
    Returns the delivery ids handed over. At-least-once: the task's claim drops duplicates."""
    now = now or datetime.now(UTC)
    grace = timedelta(seconds=get_settings().webhook_dispatch_grace_seconds)
    with session_scope() as session:
        due = WebhookOutboxRepository(session).take_due_for_dispatch(now, grace)
    sent = []
    for delivery_id in due:
        try:
            enqueue_webhook_delivery(delivery_id)
        except Exception:  # broker down: the row comes due again after the grace
            log.exception("dispatch of webhook %s failed", delivery_id)
            continue
        sent.append(delivery_id)
    if sent:
        log.info("dispatched %d webhook deliveries", len(sent))
    return sent


def revalidate_once(settings: WorkerSettings, now: datetime) -> list[str]:
    """Re-send the validation of jobs in validating_files not sent nor taken for
    `requeue_after_seconds` (validation is idempotent: it re-checks the status by
    compare-and-set); fail those whose validator was lost `max_attempts` times."""
    cutoff = now - timedelta(seconds=settings.requeue_after_seconds)
    resend: list[str] = []
    with session_scope() as session:
        jobs, events = JobRepository(session), EventRepository(session)
        for job in jobs.find_unvalidated(cutoff):
            if job.validation_attempts >= settings.max_attempts:
                message = (
                    f"Validating the training file stopped without a result "
                    f"{job.validation_attempts} times (the validator was lost)."
                )
                if jobs.finish_validation(
                    job.id,
                    JobStatus.FAILED,
                    error_code="worker_lost",
                    error_message=message,
                    error_param="training_file",
                ):
                    events.append(job.id, job.tenant_id, message, level="error")
                    record_job_webhooks(session, job.tenant_id, job.id, JobWebhookEvent.FAILED)
                continue
            resend.append(job.id)
    for job_id in resend:  # broker down: the next pass retries
        if job_queue.send_and_mark(job_id, job_queue.enqueue_validation, "validation re-send"):
            log.info("re-sent the validation of %s", job_id)
    return resend


def run_forever() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = WorkerSettings()
    log.info("reaper running every %.0f s", settings.reaper_interval_seconds)
    while True:
        try:
            reap_once(settings)
        except Exception:
            log.exception("reaper pass failed")
        try:
            dispatch_webhooks_once()
        except Exception:
            log.exception("webhook dispatch pass failed")
        time.sleep(settings.reaper_interval_seconds)


if __name__ == "__main__":
    run_forever()
