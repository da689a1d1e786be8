"""Worker settings (env prefix KEEL_)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from db.blob_config import BlobSettings


class WorkerSettings(BlobSettings):
    # hide_input_in_errors: a refused setting (KEEL_S3_SECRET_ACCESS_KEY) is never echoed.
    model_config = SettingsConfigDict(
        env_prefix="KEEL_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    # data_dir and the blob store (db.blob_config). With KEEL_BLOB_URL set, data_dir is this
    # worker's own working copy and cache: training files, checkpoints and adapters go through
    # the bucket, so another worker with another data_dir can resume the job.
    model_cache_dir: Path = Path("./var/models")
    corpus_dir: Path = Path("./var/safety-corpus")
    # Base-model evaluation results shared by jobs on the same weights (None: data_dir/eval-cache).
    eval_cache_dir: Path | None = None
    # A job's lease: a worker that stops heartbeating for this long loses the job to the reaper.
    lease_seconds: int = 120
    heartbeat_seconds: float = 5.0
    checkpoint_every: int = 20
    # A running job also checkpoints when this many seconds passed since its last checkpoint
    # (and always at its last step): a dead worker loses at most this much training, however
    # long the policy's every-n-steps interval is. A LoRA checkpoint is small (adapter +
    # optimizer state), so a few minutes costs little.
    checkpoint_every_seconds: float = Field(default=180.0, gt=0)
    reaper_interval_seconds: float = 15.0
    # A queued job whose task message has not been claimed after this long is re-enqueued.
    requeue_after_seconds: int = 300
    device: str = "auto"
    max_attempts: int = 3
    # Evaluated per process (the Celery child that trains), not once in the parent.
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
