"""Thin Celery tasks: take a job id, hand it to the runner. All logic lives in worker.runner."""

from __future__ import annotations

import logging

from celery.signals import worker_process_init

from worker.celery_app import app
from worker.queue import DELIVER_WEBHOOK, RUN_FINE_TUNING_JOB, enqueue_webhook_delivery

log = logging.getLogger(__name__)


@worker_process_init.connect
def _fresh_engine_after_fork(**_: object) -> None:
    # Connection pools must never be shared across fork (SQLAlchemy pooling docs).
    from db.session import dispose_engine

    dispose_engine()


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
