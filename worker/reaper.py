"""The reaper: re-enqueue jobs whose worker died (lease expired) or whose enqueue was lost.

Run with `python -m worker.reaper` (or `keel reaper`). Safe to run several: re-enqueueing is
idempotent because a worker only trains a job it wins by compare-and-set.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from db.repositories.events import EventRepository
from db.repositories.jobs import JobRepository
from db.session import session_scope
from worker.queue import enqueue_fine_tuning_job
from worker.settings import WorkerSettings

log = logging.getLogger("keel.reaper")
LEASE_EXPIRED = "lease_expired"


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
            lost = events.count_with_reason(job_id, LEASE_EXPIRED) + 1
            if lost >= settings.max_attempts:
                jobs.finish(
                    job_id,
                    job.fencing_token,
                    "failed",
                    error_code="worker_lost",
                    error_message=f"The job's worker stopped responding {lost} times.",
                )
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
    for job_id in requeue:
        try:
            enqueue_fine_tuning_job(job_id)
        except Exception:  # broker down: the next pass retries
            log.exception("re-enqueue of %s failed", job_id)
            continue
        with session_scope() as session:
            JobRepository(session).mark_enqueued(job_id)
        log.info("re-enqueued %s", job_id)
    return requeue


def run_forever() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = WorkerSettings()
    log.info("reaper running every %.0f s", settings.reaper_interval_seconds)
    while True:
        try:
            reap_once(settings)
        except Exception:
            log.exception("reaper pass failed")
        time.sleep(settings.reaper_interval_seconds)


if __name__ == "__main__":
    run_forever()
