"""Fine-tuning jobs: tenant-scoped reads for the API, fenced compare-and-set writes for workers.

Every worker write is ONE UPDATE with a WHERE on (id, fencing_token, status): Postgres decides
who owns a job, so duplicate task deliveries and zombie workers can never both write.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, or_, select, update
from sqlalchemy.orm import Session

from db.base import UTCDateTime, utcnow
from db.job_status import LEASED_STATUSES, JobStatus
from db.models import File, FineTuningJob, Tenant
from db.repositories.pagination import (
    Page,
    fetch_page,
    order_keys,
    page_after,
)

_LEASED = [status.value for status in LEASED_STATUSES]
_FINISH_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def _disabled_tenants() -> Any:
    """Ids of disabled tenants, as a subquery: their jobs are neither claimed nor re-enqueued."""
    return select(Tenant.id).where(Tenant.disabled_at.is_not(None))


@dataclass(frozen=True)
class HeartbeatState:
    cancel_requested: bool
    pause_requested: bool


class JobRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # ----------------------------------------------------------------------- tenant-scoped
    def add(self, job: FineTuningJob) -> FineTuningJob:
        self.session.add(job)
        self.session.flush()
        return job

    def get(self, tenant_id: str, job_id: str) -> FineTuningJob | None:
        return self.session.scalar(
            select(FineTuningJob).where(
                FineTuningJob.tenant_id == tenant_id, FineTuningJob.id == job_id
            )
        )

    def fine_tuned_models(
        self, tenant_id: str, fine_tuned_model: str | None = None
    ) -> builtins.list[tuple[str, datetime | None]]:
        """(name, finished_at) of the caller's usable fine-tuned models, newest first.

        Usable: the job succeeded (its adapter passed the gate or was released) and the model
        was not deleted. ``fine_tuned_model`` narrows it to that one name.
        """
        query = select(FineTuningJob.fine_tuned_model, FineTuningJob.finished_at).where(
            FineTuningJob.tenant_id == tenant_id,
            FineTuningJob.status == JobStatus.SUCCEEDED.value,
            FineTuningJob.fine_tuned_model.is_not(None),
            FineTuningJob.model_deleted_at.is_(None),
        )
        if fine_tuned_model is not None:
            query = query.where(FineTuningJob.fine_tuned_model == fine_tuned_model)
        rows = self.session.execute(query.order_by(FineTuningJob.finished_at.desc()))
        return [(str(name), finished) for name, finished in rows]

    def mark_model_deleted(self, tenant_id: str, fine_tuned_model: str) -> FineTuningJob | None:
        """The caller's succeeded job that produced ``fine_tuned_model``, now marked deleted.

        None when no such undeleted model exists for this tenant. The row is locked (Postgres)
        so two concurrent deletes cannot both succeed.
        """
        job = self.session.scalar(
            select(FineTuningJob)
            .where(
                FineTuningJob.tenant_id == tenant_id,
                FineTuningJob.fine_tuned_model == fine_tuned_model,
                FineTuningJob.status == JobStatus.SUCCEEDED.value,
                FineTuningJob.model_deleted_at.is_(None),
            )
            .with_for_update()
        )
        if job is None:
            return None
        job.model_deleted_at = utcnow()
        self.session.flush()
        return job

    def list(
        self,
        tenant_id: str,
        after: str | None = None,
        limit: int = 20,
        metadata_filter: dict[str, str] | None = None,
    ) -> Page[FineTuningJob]:
        """Newest first; `metadata_filter` keeps jobs whose metadata has every given pair."""
        stmt = (
            select(FineTuningJob)
            .where(FineTuningJob.tenant_id == tenant_id)
            .order_by(*order_keys(FineTuningJob.created_at, FineTuningJob.id, descending=True))
        )
        for key, value in (metadata_filter or {}).items():
            stmt = stmt.where(FineTuningJob.metadata_[key].as_string() == value)
        if after is not None:
            stmt = page_after(stmt, self.get(tenant_id, after), after, descending=True)
        return fetch_page(self.session, stmt, limit)

    def request_cancel(self, tenant_id: str, job_id: str) -> FineTuningJob | None:
        """Cancel now if no worker holds the job; otherwise flag it for the training loop."""
        now = utcnow()
        self.session.execute(
            update(FineTuningJob)
            .where(
                FineTuningJob.tenant_id == tenant_id,
                FineTuningJob.id == job_id,
                FineTuningJob.status.in_(
                    [JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.PAUSED]
                ),
            )
            .values(
                status=JobStatus.CANCELLED.value,
                cancel_requested_at=now,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        self.session.execute(
            update(FineTuningJob)
            .where(
                FineTuningJob.tenant_id == tenant_id,
                FineTuningJob.id == job_id,
                FineTuningJob.status.in_(_LEASED),
                FineTuningJob.cancel_requested_at.is_(None),
            )
            .values(cancel_requested_at=now)
        )
        return self._refresh(tenant_id, job_id)

    def request_pause(self, tenant_id: str, job_id: str) -> FineTuningJob | None:
        """queued → paused at once; running → pausing (the worker checkpoints, then pauses)."""
        now = utcnow()
        return self._transition(
            tenant_id,
            job_id,
            {
                JobStatus.QUEUED: {"status": JobStatus.PAUSED.value, "pause_requested_at": now},
                JobStatus.RUNNING: {"status": JobStatus.PAUSING.value, "pause_requested_at": now},
            },
        )

    def resume(self, tenant_id: str, job_id: str) -> FineTuningJob | None:
        """paused → queued (to be enqueued again); pausing → running (pause withdrawn)."""
        queued = {"status": JobStatus.QUEUED.value, "pause_requested_at": None, "enqueued_at": None}
        running = {"status": JobStatus.RUNNING.value, "pause_requested_at": None}
        return self._transition(
            tenant_id, job_id, {JobStatus.PAUSED: queued, JobStatus.PAUSING: running}
        )

    def _transition(
        self, tenant_id: str, job_id: str, moves: dict[JobStatus, dict[str, Any]]
    ) -> FineTuningJob | None:
        """For each (status → values) in ``moves``, set the values on the tenant's job if it is in
        that status (the status in the WHERE makes each move race-free without a row lock; at
        most one matches); the job as it is afterwards."""
        for current, values in moves.items():
            self.session.execute(
                update(FineTuningJob)
                .where(
                    FineTuningJob.tenant_id == tenant_id,
                    FineTuningJob.id == job_id,
                    FineTuningJob.status == current.value,
                )
                .values(**values)
            )
        return self._refresh(tenant_id, job_id)

    def _refresh(self, tenant_id: str, job_id: str) -> FineTuningJob | None:
        job = self.get(tenant_id, job_id)
        if job is not None:
            self.session.refresh(job)
        return job

    def count_by_status(self) -> dict[str, int]:
        rows = self.session.execute(
            select(FineTuningJob.status, func.count()).group_by(FineTuningJob.status)
        )
        return {str(status): int(count) for status, count in rows}

    def leased(self) -> builtins.list[FineTuningJob]:
        """Every job a worker holds now (running or pausing), oldest heartbeat first: the
        provider's view of who works on what (web console overview)."""
        stmt = (
            select(FineTuningJob)
            .where(FineTuningJob.status.in_(_LEASED))
            .order_by(FineTuningJob.heartbeat_at.asc().nulls_first(), FineTuningJob.id)
        )
        return list(self.session.scalars(stmt))

    # ----------------------------------------------------------------------- worker side
    def get_unscoped(self, job_id: str) -> FineTuningJob | None:
        return self.session.get(FineTuningJob, job_id, populate_existing=True)

    def file_storage_path(self, file_id: str) -> str:
        path = self.session.scalar(select(File.storage_path).where(File.id == file_id))
        if path is None:
            raise LookupError(f"file {file_id} has no stored content")
        return path

    def claim(
        self, job_id: str, worker_id: str, lease_seconds: int, now: datetime | None = None
    ) -> int | None:
        """Compare-and-set claim; returns the new fencing token, or None if not claimable."""
        now = now or utcnow()
        stmt = (
            update(FineTuningJob)
            .where(
                FineTuningJob.id == job_id,
                or_(
                    FineTuningJob.status == JobStatus.QUEUED.value,
                    (FineTuningJob.status.in_(_LEASED)) & (FineTuningJob.lease_expires_at < now),
                ),
                # A disabled tenant's jobs do not start (they stay queued until it is enabled).
                FineTuningJob.tenant_id.not_in(_disabled_tenants()),
            )
            .values(
                status=JobStatus.RUNNING.value,
                lease_owner=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                heartbeat_at=now,
                fencing_token=FineTuningJob.fencing_token + 1,
                attempts=FineTuningJob.attempts + 1,
                started_at=func.coalesce(FineTuningJob.started_at, literal(now, UTCDateTime())),
            )
            .returning(FineTuningJob.fencing_token)
            .execution_options(synchronize_session=False)
        )
        token = self.session.execute(stmt).scalar_one_or_none()
        return None if token is None else int(token)

    def heartbeat(
        self,
        job_id: str,
        token: int,
        lease_seconds: int,
        progress: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> HeartbeatState | None:
        """Extend the lease; None if the token is stale (another worker owns the job)."""
        now = now or utcnow()
        values: dict[str, Any] = {
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
            "heartbeat_at": now,
        }
        if progress is not None:
            values["progress"] = progress
        row = self.session.execute(
            update(FineTuningJob)
            .where(*self._fenced(job_id, token))
            .values(**values)
            .returning(FineTuningJob.cancel_requested_at, FineTuningJob.pause_requested_at)
            .execution_options(synchronize_session=False)
        ).first()
        if row is None:
            return None
        return HeartbeatState(
            cancel_requested=row.cancel_requested_at is not None,
            pause_requested=row.pause_requested_at is not None,
        )

    def finish(
        self,
        job_id: str,
        token: int,
        status: str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        result_files: builtins.list[str] | None = None,
        fine_tuned_model: str | None = None,
        trained_tokens: int | None = None,
    ) -> bool:
        """Fenced move to a terminal status; clears the lease. False if the token is stale."""
        target = JobStatus(status)
        if target not in _FINISH_STATUSES:
            raise ValueError(f"finish() needs a terminal status, got {status!r}")
        values: dict[str, Any] = {
            "status": target.value,
            "finished_at": utcnow(),
            "lease_owner": None,
            "lease_expires_at": None,
            "error_code": error_code,
            "error_message": error_message,
        }
        if result_files is not None:
            values["result_files"] = result_files
        if fine_tuned_model is not None:
            values["fine_tuned_model"] = fine_tuned_model
        if trained_tokens is not None:
            values["trained_tokens"] = trained_tokens
        return self._fenced_update(job_id, token, values)

    def mark_paused(self, job_id: str, token: int) -> bool:
        return self._fenced_update(
            job_id,
            token,
            {"status": JobStatus.PAUSED.value, "lease_owner": None, "lease_expires_at": None},
        )

    def release(self, job_id: str, token: int) -> bool:
        """The holder gives the job back (graceful shutdown): queued, unleased, not enqueued.

        Fenced like every worker write; the next claim bumps the token as usual. False if the
        holder had already lost the job.
        """
        return self._fenced_update(
            job_id,
            token,
            {
                "status": JobStatus.QUEUED.value,
                "lease_owner": None,
                "lease_expires_at": None,
                "enqueued_at": None,
            },
        )

    def set_phase(self, job_id: str, token: int, phase: str) -> bool:
        current = self.session.scalar(
            select(FineTuningJob.progress).where(*self._fenced(job_id, token))
        )
        return self._fenced_update(job_id, token, {"progress": {**(current or {}), "phase": phase}})

    def find_expired_leases(self, now: datetime) -> builtins.list[str]:
        stmt = select(FineTuningJob.id).where(
            FineTuningJob.status.in_(_LEASED), FineTuningJob.lease_expires_at < now
        )
        return list(self.session.scalars(stmt))

    def requeue_expired(self, job_id: str, now: datetime) -> bool:
        """A lease-expired job back to queued with a bumped fencing token (the reaper's move).

        The bump fences the lost worker: if it is only partitioned, not dead, every write it
        still attempts with its old token matches no row.
        """
        return self._update_returning(
            update(FineTuningJob)
            .where(
                FineTuningJob.id == job_id,
                FineTuningJob.status.in_(_LEASED),
                FineTuningJob.lease_expires_at < now,
            )
            .values(
                status=JobStatus.QUEUED.value,
                fencing_token=FineTuningJob.fencing_token + 1,
                lease_owner=None,
                lease_expires_at=None,
                enqueued_at=None,
            )
        )

    def find_unenqueued(self, older_than: datetime) -> builtins.list[str]:
        """Queued jobs never marked enqueued, or enqueued before `older_than` and not claimed.

        A disabled tenant's are left out (no claim would take them); once the tenant is enabled
        the next pass finds them again.
        """
        stmt = select(FineTuningJob.id).where(
            FineTuningJob.status == JobStatus.QUEUED.value,
            or_(FineTuningJob.enqueued_at.is_(None), FineTuningJob.enqueued_at < older_than),
            FineTuningJob.tenant_id.not_in(_disabled_tenants()),
        )
        return list(self.session.scalars(stmt))

    def mark_enqueued(self, job_id: str) -> None:
        self.session.execute(
            update(FineTuningJob)
            .where(FineTuningJob.id == job_id)
            .values(enqueued_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    # ----------------------------------------------------------------------- validation
    def begin_validation(self, job_id: str, now: datetime | None = None) -> FineTuningJob | None:
        """Take a job in validating_files for validation (one more validation attempt; its
        enqueued_at becomes now, so the reaper waits another requeue interval before sending it
        again). None when the job is no longer validating (cancelled, or already validated by a
        duplicate delivery)."""
        taken = self._update_returning(
            update(FineTuningJob)
            .where(
                FineTuningJob.id == job_id,
                FineTuningJob.status == JobStatus.VALIDATING_FILES.value,
            )
            .values(
                validation_attempts=FineTuningJob.validation_attempts + 1,
                enqueued_at=now or utcnow(),
            )
        )
        return self.get_unscoped(job_id) if taken else None

    def touch_validation(self, job_id: str, now: datetime | None = None) -> bool:
        """The validator's sign of life while it works on a big file: the reaper re-sends only a
        validation neither sent nor touched for requeue_after_seconds."""
        return self._update_returning(
            update(FineTuningJob)
            .where(
                FineTuningJob.id == job_id,
                FineTuningJob.status == JobStatus.VALIDATING_FILES.value,
            )
            .values(enqueued_at=now or utcnow())
        )

    def finish_validation(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        error_param: str | None = None,
    ) -> bool:
        """validating_files → queued (to be enqueued for training) or failed, by compare-and-set:
        False when the job left validating_files meanwhile (a cancel wins over a late result)."""
        if status not in (JobStatus.QUEUED, JobStatus.FAILED):
            raise ValueError(f"validation ends in queued or failed, not {status}")
        values: dict[str, Any] = {"status": status.value, "enqueued_at": None}
        if status == JobStatus.FAILED:
            values.update(
                finished_at=utcnow(),
                error_code=error_code,
                error_message=error_message,
                error_param=error_param,
            )
        return self._update_returning(
            update(FineTuningJob)
            .where(
                FineTuningJob.id == job_id,
                FineTuningJob.status == JobStatus.VALIDATING_FILES.value,
            )
            .values(**values)
        )

    def find_unvalidated(self, older_than: datetime) -> builtins.list[FineTuningJob]:
        """Jobs in validating_files whose validation was neither sent nor taken since
        `older_than` (a lost enqueue, or a validator that died mid-file)."""
        stmt = select(FineTuningJob).where(
            FineTuningJob.status == JobStatus.VALIDATING_FILES.value,
            func.coalesce(FineTuningJob.enqueued_at, FineTuningJob.created_at) < older_than,
        )
        return list(self.session.scalars(stmt))

    def release_quarantined(self, job_id: str, fine_tuned_model: str) -> bool:
        """failed (quarantined) → succeeded: only the provider admin's release does this."""
        result = self.session.execute(
            update(FineTuningJob)
            .where(
                FineTuningJob.id == job_id,
                FineTuningJob.status == JobStatus.FAILED.value,
                FineTuningJob.error_code == "safety_evaluation_quarantined",
            )
            .values(
                status=JobStatus.SUCCEEDED.value,
                error_code=None,
                error_message=None,
                error_param=None,
                fine_tuned_model=fine_tuned_model,
            )
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    def _fenced(self, job_id: str, token: int) -> tuple[Any, ...]:
        return (
            FineTuningJob.id == job_id,
            FineTuningJob.fencing_token == token,
            FineTuningJob.status.in_(_LEASED),
        )

    def _fenced_update(self, job_id: str, token: int, values: dict[str, Any]) -> bool:
        return self._update_returning(
            update(FineTuningJob).where(*self._fenced(job_id, token)).values(**values)
        )

    def _update_returning(self, stmt: Any) -> bool:
        updated = self.session.execute(
            stmt.returning(FineTuningJob.id).execution_options(synchronize_session=False)
        ).first()
        return updated is not None
