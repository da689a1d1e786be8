"""The one worker module the API may import: task names, enqueue-by-id, and recording job
webhooks in the caller's transaction. No task code."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache

from celery import Celery
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.orm import Session

from db.after_commit import after_commit
from db.repositories.jobs import JobRepository
from db.repositories.webhooks import WebhookOutboxRepository
from db.session import session_scope
from db.settings import get_settings

RUN_FINE_TUNING_JOB = "keel.run_fine_tuning_job"
VALIDATE_JOB_FILES = "keel.validate_job_files"
SCREEN_FILE = "keel.screen_file"
GPU_QUEUE = "gpu"
DELIVER_WEBHOOK = "keel.deliver_webhook"
# Its own queue and worker: a slow or dead receiver never holds up a training job.
WEBHOOK_QUEUE = "webhooks"
# Validation and screening have their own queue and worker (cli.local_service.validator_argv),
# so a job's files are checked at once, never behind a training job that holds the GPU worker
# for hours.
VALIDATION_QUEUE = "validation"

log = logging.getLogger("keel.queue")


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEEL_", env_file=".env", extra="ignore")

    # Embedded default: kombu's SQLAlchemy transport on a SQLite file: no broker server needed.
    broker_url: str = "sqla+sqlite:///./var/broker.db"


@lru_cache(maxsize=1)
def _producer_app() -> Celery:
    return Celery("keel-producer", broker=BrokerSettings().broker_url)


def enqueue_fine_tuning_job(job_id: str) -> None:
    """Send the job id (and nothing else) to the gpu queue; the worker re-reads the job."""
    _producer_app().send_task(RUN_FINE_TUNING_JOB, args=[job_id], queue=GPU_QUEUE)


def enqueue_webhook_delivery(delivery_id: str, countdown: float | None = None) -> None:
    """Send a delivery id to the webhooks queue; the task re-reads the outbox row."""
    _producer_app().send_task(
        DELIVER_WEBHOOK, args=[delivery_id], queue=WEBHOOK_QUEUE, countdown=countdown
    )


def record_job_webhooks(
    session: Session, tenant_id: str, job_id: str, *event_types: str
) -> list[str]:
    """Write the job's webhook deliveries into the outbox in the caller's transaction (the one
    that changes the job's state) and hand them to the queue once it commits.

    A handoff that never happens (the process dies right after the commit, the broker is down)
    is made by the reaper's dispatcher after ``webhook_dispatch_grace_seconds``.
    """
    grace = timedelta(seconds=get_settings().webhook_dispatch_grace_seconds)
    ids = WebhookOutboxRepository(session).record_job_events(
        tenant_id, job_id, tuple(event_types), dispatch_grace=grace
    )
    if ids:
        after_commit(session, lambda: hand_off_webhooks(ids))
    return ids


def hand_off_webhooks(delivery_ids: list[str]) -> None:
    for delivery_id in delivery_ids:
        try:
            enqueue_webhook_delivery(delivery_id)
        except Exception:  # noqa: BLE001 - the outbox row stays; the dispatcher sends it
            log.warning("handoff of webhook %s failed; the dispatcher will send it", delivery_id)


def enqueue_validation(job_id: str) -> None:
    """Send a job in validating_files to the validation queue (worker.validation.validate_job)."""
    _producer_app().send_task(VALIDATE_JOB_FILES, args=[job_id], queue=VALIDATION_QUEUE)


def enqueue_screening(tenant_id: str, file_id: str) -> None:
    """Ask for a file's screening to be computed and cached (worker.validation.screen_file)."""
    _producer_app().send_task(SCREEN_FILE, args=[tenant_id, file_id], queue=VALIDATION_QUEUE)


def send_and_mark(job_id: str, send: Callable[[str], None], what: str) -> bool:
    """Send ``job_id`` with ``send`` (a queue's enqueue), then record the send (``enqueued_at``)
    in its own short transaction. A failed send (broker down) is logged and left to the reaper,
    which keys on the unset ``enqueued_at``; returns whether the send happened."""
    try:
        send(job_id)
    except Exception:  # noqa: BLE001 - the reaper re-sends what was not sent
        log.warning("%s of %s failed; the reaper will re-send it", what, job_id, exc_info=True)
        return False
    with session_scope() as session:
        JobRepository(session).mark_enqueued(job_id)
    return True
