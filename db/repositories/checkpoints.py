"""Training checkpoints written by the worker (resume points, listed to customers)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.ids import CHECKPOINT_PREFIX, new_id
from db.models import FineTuningJob, JobCheckpoint
from db.repositories.pagination import InvalidCursorError, Page, fetch_page


class CheckpointRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        *,
        job_id: str,
        tenant_id: str,
        step_number: int,
        storage_path: str,
        metrics: dict[str, Any] | None = None,
        fencing_token: int,
        fine_tuned_model_checkpoint: str | None = None,
    ) -> JobCheckpoint:
        if fine_tuned_model_checkpoint is None:
            job = self.session.get(FineTuningJob, job_id)
            model = job.model if job is not None else "unknown"
            suffix = (job.suffix if job is not None else None) or "keel"
            fine_tuned_model_checkpoint = (
                f"ft:{model}:{tenant_id}:{suffix}:{job_id}:ckpt-step-{step_number}"
            )
        checkpoint = JobCheckpoint(
            id=new_id(CHECKPOINT_PREFIX),
            job_id=job_id,
            tenant_id=tenant_id,
            step_number=step_number,
            metrics={"step": step_number, **(metrics or {})},
            storage_path=storage_path,
            fine_tuned_model_checkpoint=fine_tuned_model_checkpoint,
            fencing_token=fencing_token,
            created_at=utcnow(),
        )
        self.session.add(checkpoint)
        self.session.flush()
        return checkpoint

    def latest(self, job_id: str) -> JobCheckpoint | None:
        """The checkpoint with the highest step (ties: the newest write)."""
        return self.session.scalar(
            select(JobCheckpoint)
            .where(JobCheckpoint.job_id == job_id)
            .order_by(JobCheckpoint.step_number.desc(), JobCheckpoint.created_at.desc())
            .limit(1)
        )

    def page(
        self, tenant_id: str, job_id: str, after: str | None, limit: int
    ) -> Page[JobCheckpoint]:
        """Newest (highest step) first; `after` is a checkpoint id."""
        stmt = (
            select(JobCheckpoint)
            .where(JobCheckpoint.tenant_id == tenant_id, JobCheckpoint.job_id == job_id)
            .order_by(JobCheckpoint.step_number.desc(), JobCheckpoint.id.desc())
        )
        if after is not None:
            cursor = self.session.scalar(
                select(JobCheckpoint).where(
                    JobCheckpoint.tenant_id == tenant_id,
                    JobCheckpoint.job_id == job_id,
                    JobCheckpoint.id == after,
                )
            )
            if cursor is None:
                raise InvalidCursorError(after)
            stmt = stmt.where(
                (JobCheckpoint.step_number < cursor.step_number)
                | (
                    (JobCheckpoint.step_number == cursor.step_number)
                    & (JobCheckpoint.id < cursor.id)
                )
            )
        return fetch_page(self.session, stmt, limit)
