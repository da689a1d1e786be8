"""The Celery application.

Training: `celery -A worker.celery_app worker -Q gpu -c 1`. File validation and screening:
`… worker -Q validation` (cli.local_service.validator_argv). Webhooks, in their own worker so a
slow receiver never holds up training: `… worker -Q webhooks --pool threads -c 8`
(cli.local_service.webhook_worker_argv).
"""

from __future__ import annotations

from celery import Celery

from worker.queue import (
    DELIVER_WEBHOOK,
    GPU_QUEUE,
    RUN_FINE_TUNING_JOB,
    SCREEN_FILE,
    VALIDATE_JOB_FILES,
    VALIDATION_QUEUE,
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
        VALIDATE_JOB_FILES: {"queue": VALIDATION_QUEUE},
        SCREEN_FILE: {"queue": VALIDATION_QUEUE},
    },
    task_default_queue=GPU_QUEUE,
    # Every job in a fresh child so GPU memory and model caches are fully released (the
    # validation worker overrides this on its command line: it keeps the screening index).
    worker_max_tasks_per_child=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    # A fresh pool child (one per job) must report "up" within this long or Celery kills it
    # and forks another. The default 4 s is too short on a busy host: children were killed in
    # a loop and a recovered job waited minutes for its claim (tests/faults, load average 10+).
    worker_proc_alive_timeout=60,
)
