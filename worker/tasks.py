"""Thin Celery tasks: take a job id, hand it to the runner. All logic lives in worker.runner."""

from __future__ import annotations

import logging

from celery.signals import worker_process_init, worker_shutting_down

from worker.celery_app import app
from worker.queue import RUN_FINE_TUNING_JOB

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
