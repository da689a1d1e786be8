"""Fine-tuning jobs, their append-only events and their checkpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, JSONType, UTCDateTime, utcnow
from db.job_status import JobStatus

_STATUS_VALUES = ", ".join(f"'{status.value}'" for status in JobStatus)


class FineTuningJob(Base):
    __tablename__ = "fine_tuning_job"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status"),
        Index("ix_fine_tuning_job_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_fine_tuning_job_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id"))
    model: Mapped[str] = mapped_column(String(200))
    training_file_id: Mapped[str] = mapped_column(ForeignKey("file.id"))
    validation_file_id: Mapped[str | None] = mapped_column(ForeignKey("file.id"))
    status: Mapped[str] = mapped_column(String(32), default=JobStatus.VALIDATING_FILES.value)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    safety: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSONType)
    integrations: Mapped[list[Any] | None] = mapped_column(JSONType)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_param: Mapped[str | None] = mapped_column(String(64))
    fine_tuned_model: Mapped[str | None] = mapped_column(String(400))
    # Set by DELETE /v1/models/{model}: the job keeps its fine_tuned_model name (as OpenAI's
    # does) but the model is no longer listed and its adapter files are gone.
    model_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    result_files: Mapped[list[str]] = mapped_column(JSONType, default=list)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    estimated_finish: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pause_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fencing_token: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Times a validator took the job in validating_files (worker.validation): the reaper gives
    # up after max_attempts, as it does for training attempts.
    validation_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class JobEvent(Base):
    __tablename__ = "job_event"
    __table_args__ = (Index("ix_job_event_job_id_seq", "job_id", "seq"),)

    # seq is the cursor order (monotonic per database); id is the public "ftevent-…".
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_job.id"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    type: Mapped[str] = mapped_column(String(32), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class JobCheckpoint(Base):
    __tablename__ = "job_checkpoint"
    __table_args__ = (Index("ix_job_checkpoint_job_id_step_number", "job_id", "step_number"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_job.id"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id"))
    step_number: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    storage_path: Mapped[str] = mapped_column(String(1024))
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(400))
    fencing_token: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
