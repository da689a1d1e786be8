"""Append-only job events; `seq` is the cursor order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.ids import EVENT_PREFIX, new_id
from db.models import FineTuningJob, JobEvent
from db.repositories.pagination import InvalidCursorError, Page, fetch_page

LEVELS = ("info", "warn", "error")


class EventRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def append(
        self,
        job_id: str,
        tenant_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: dict[str, Any] | None = None,
        attempt: int | None = None,
    ) -> JobEvent:
        """One event; `data.attempt` is the claim it belongs to (0: before any worker claimed
        the job), read from the job row unless the caller (a worker) knows it."""
        if level not in LEVELS:
            raise ValueError(f"event level must be one of {LEVELS}, got {level!r}")
        if attempt is None:
            attempt = int(
                self.session.scalar(
                    select(FineTuningJob.attempts).where(FineTuningJob.id == job_id)
                )
                or 0
            )
        event = JobEvent(
            id=new_id(EVENT_PREFIX),
            job_id=job_id,
            tenant_id=tenant_id,
            created_at=utcnow(),
            level=level,
            type=type,
            message=message,
            data={**(data or {}), "attempt": attempt},
        )
        self.session.add(event)
        self.session.flush()
        return event

    def page(self, tenant_id: str, job_id: str, after: str | None, limit: int) -> Page[JobEvent]:
        """Newest first (as OpenAI); `after` is an event id, the page continues with older ones."""
        stmt = (
            select(JobEvent)
            .where(JobEvent.tenant_id == tenant_id, JobEvent.job_id == job_id)
            .order_by(JobEvent.seq.desc())
        )
        if after is not None:
            cursor_seq = self.session.scalar(
                select(JobEvent.seq).where(
                    JobEvent.tenant_id == tenant_id,
                    JobEvent.job_id == job_id,
                    JobEvent.id == after,
                )
            )
            if cursor_seq is None:
                raise InvalidCursorError(after)
            stmt = stmt.where(JobEvent.seq < cursor_seq)
        return fetch_page(self.session, stmt, limit)

    def since(self, job_id: str, after_seq: int, limit: int = 500) -> list[JobEvent]:
        """Events newer than `after_seq`, oldest first (for server-sent events)."""
        stmt = (
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > after_seq)
            .order_by(JobEvent.seq.asc())
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def of_type(self, tenant_id: str, job_id: str, type: str, limit: int = 2000) -> list[JobEvent]:
        """The job's events of one type, oldest first (the console's loss chart)."""
        stmt = (
            select(JobEvent)
            .where(
                JobEvent.tenant_id == tenant_id, JobEvent.job_id == job_id, JobEvent.type == type
            )
            .order_by(JobEvent.seq.asc())
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def count_with_reason(self, job_id: str, reason: str) -> int:
        """How many of the job's events record `data.reason` == `reason` (e.g. lease_expired)."""
        return int(
            self.session.scalar(
                select(func.count())
                .select_from(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.data["reason"].as_string() == reason)
            )
            or 0
        )
