"""A tenant's usage against the policy's quotas, and the lock that makes checking it atomic.

Two concurrent creates must not both see the last free slot. `lock_tenant` takes a row lock
on the tenant (``SELECT … FOR UPDATE`` in Postgres) for the rest of the caller's transaction:
the second request waits at the lock until the first commits (or rolls back), and only then
counts, under READ COMMITTED, with the first one's rows visible. SQLite (the embedded mode)
ignores FOR UPDATE; it serialises writers with its database lock instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.job_status import TERMINAL_STATUSES
from db.models import File, FineTuningJob, Tenant

TOKEN_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Usage:
    active_jobs: int
    trained_tokens_24h: int
    stored_bytes: int


class UsageRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def lock_tenant(self, tenant_id: str) -> None:
        """Hold the tenant's row lock until the caller's transaction ends."""
        self.session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())

    def active_jobs(self, tenant_id: str) -> int:
        ended = [status.value for status in TERMINAL_STATUSES]
        count = self.session.scalar(
            select(func.count())
            .select_from(FineTuningJob)
            .where(FineTuningJob.tenant_id == tenant_id, FineTuningJob.status.not_in(ended))
        )
        return int(count or 0)

    def trained_tokens_since(self, tenant_id: str, since: datetime) -> int:
        total = self.session.scalar(
            select(func.coalesce(func.sum(FineTuningJob.trained_tokens), 0)).where(
                FineTuningJob.tenant_id == tenant_id,
                FineTuningJob.finished_at >= since,
            )
        )
        return int(total or 0)

    def stored_bytes(self, tenant_id: str) -> int:
        total = self.session.scalar(
            select(func.coalesce(func.sum(File.bytes), 0)).where(
                File.tenant_id == tenant_id, File.deleted_at.is_(None)
            )
        )
        return int(total or 0)

    def usage(self, tenant_id: str, now: datetime | None = None) -> Usage:
        now = now or utcnow()
        return Usage(
            active_jobs=self.active_jobs(tenant_id),
            trained_tokens_24h=self.trained_tokens_since(tenant_id, now - TOKEN_WINDOW),
            stored_bytes=self.stored_bytes(tenant_id),
        )
