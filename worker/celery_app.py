"""The Celery application.

Training: `celery -A worker.celery_app worker -Q gpu -c 1`. Webhooks, in their own worker so a
slow receiver never holds up training: `celery -A worker.celery_app worker -Q webhooks --pool
threads -c 8` (cli.local_service.webhook_worker_argv).
"""

from __future__ import annotations

from celery import Celery

from worker.queue import (
    DELIVER_WEBHOOK,
    GPU_QUEUE,
    RUN_FINE_TUNING_JOB,
    WEBHOOK_QUEUE,
    BrokerSettings,
)

app = Celery("keel", broker=BrokerSettings().broker_url, include=["worker.tasks"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_routes={
        RUN_FINE_TUNING_JOB: {"queue": GPU_QUEUE},
        DELIVER_WEBHOOK: {"queue": WEBHOOK_QUEUE},
    },
    task_default_queue=GPU_QUEUE,
    # Every job in a fresh child so GPU memory and model caches are fully released.
    worker_max_tasks_per_child=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
