"""Thin Celery tasks: take a job id, hand it to the runner. All logic lives in worker.runner."""

from __future__ import annotations

import logging

from celery.signals import worker_process_init, worker_shutting_down

from worker.celery_app import app
from worker.queue import (
    DELIVER_WEBHOOK,
    RUN_FINE_TUNING_JOB,
    SCREEN_FILE,
    VALIDATE_JOB_FILES,
    enqueue_webhook_delivery,
)

log = logging.getLogger(__name__)


@worker_process_init.connect
def _fresh_engine_after_fork(**_: object) -> None:
    # Connection pools must never be shared across fork (SQLAlchemy pooling docs).
    from db.session import dispose_engine

    dispose_engine()


@worker_shutting_down.connect
def _stop_running_jobs(**_: object) -> None:
    # Celery's warm shutdown (SIGTERM to the main process) only waits for the running task;
    # the pool child must hear it to checkpoint and release its job (worker.shutdown).
    from billiard.process import active_children

    from worker.shutdown import forward_to_pool_children

    forward_to_pool_children([int(child.pid) for child in active_children() if child.pid])


@app.task(name=RUN_FINE_TUNING_JOB, acks_late=True, ignore_result=True)
def run_fine_tuning_job(job_id: str) -> None:
    from worker.runner import run_job

    run_job(job_id)


@app.task(name=DELIVER_WEBHOOK, acks_late=True, ignore_result=True)
def deliver_webhook(delivery_id: str) -> None:
    from worker.webhooks import deliver

    countdown = deliver(delivery_id)
    if countdown is not None:
        # The same delivery id (and so the same webhook-id) on every retry.
        enqueue_webhook_delivery(delivery_id, countdown=countdown)


@app.task(name=VALIDATE_JOB_FILES, acks_late=True, ignore_result=True)
def validate_job_files(job_id: str) -> None:
    from worker.validation import validate_job

    validate_job(job_id)


@app.task(name=SCREEN_FILE, acks_late=True, ignore_result=True)
def screen_file(tenant_id: str, file_id: str) -> None:
    from worker.validation import screen_file as screen

    screen(tenant_id, file_id)
