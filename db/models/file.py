"""Uploaded datasets and job result files (the adapter zip)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, JSONType, UTCDateTime, utcnow


class FilePurpose(StrEnum):
    FINE_TUNE = "fine-tune"
    FINE_TUNE_RESULTS = "fine-tune-results"
    SAFETY_REPORT = "safety-report"


class FileStatus(StrEnum):
    UPLOADED = "uploaded"
    PROCESSED = "processed"
    ERROR = "error"


class File(Base):
    __tablename__ = "file"
    __table_args__ = (
        CheckConstraint(
            "purpose IN ('fine-tune', 'fine-tune-results', 'safety-report')", name="purpose"
        ),
        Index("ix_file_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenant.id"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # Relative to KEEL_DATA_DIR, so the data dir can move.
    storage_path: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(32), default=FileStatus.PROCESSED.value)
    format: Mapped[str | None] = mapped_column(String(32))
    row_count: Mapped[int | None] = mapped_column(Integer)
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Set for result files only; no FK so file and fine_tuning_job do not reference each other.
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
