"""The one worker module the API may import: task names and enqueue-by-id. No task code."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery
from pydantic_settings import BaseSettings, SettingsConfigDict

RUN_FINE_TUNING_JOB = "keel.run_fine_tuning_job"
VALIDATE_JOB_FILES = "keel.validate_job_files"
SCREEN_FILE = "keel.screen_file"
GPU_QUEUE = "gpu"
# Validation and screening have their own queue and worker (cli.local_service.validator_argv),
# so a job's files are checked at once, never behind a training job that holds the GPU worker
# for hours.
VALIDATION_QUEUE = "validation"


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


def enqueue_validation(job_id: str) -> None:
    """Send a job in validating_files to the validation queue (worker.validation.validate_job)."""
    _producer_app().send_task(VALIDATE_JOB_FILES, args=[job_id], queue=VALIDATION_QUEUE)


def enqueue_screening(tenant_id: str, file_id: str) -> None:
    """Ask for a file's screening to be computed and cached (worker.validation.screen_file)."""
    _producer_app().send_task(SCREEN_FILE, args=[tenant_id, file_id], queue=VALIDATION_QUEUE)
