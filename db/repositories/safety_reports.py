"""One safety report per job: the gate's verdict and the sha256 of the adapter it evaluated."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.ids import REPORT_PREFIX, new_id
from db.models import SafetyReport, Verdict


class SafetyReportRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def upsert(
        self,
        job_id: str,
        tenant_id: str,
        report: dict[str, Any],
        verdict: str,
        evaluated_sha256: str | None,
        reasons: list[str],
    ) -> SafetyReport:
        verdict = Verdict(verdict).value
        row = self.get_unscoped(job_id)
        if row is None:
            row = SafetyReport(id=new_id(REPORT_PREFIX), job_id=job_id, tenant_id=tenant_id)
            self.session.add(row)
        row.report = report
        row.verdict = verdict
        row.evaluated_sha256 = evaluated_sha256
        row.reasons = list(reasons)
        row.created_at = utcnow()
        row.released_at = None
        row.released_by = None
        self.session.flush()
        return row

    def get(self, tenant_id: str, job_id: str) -> SafetyReport | None:
        return self.session.scalar(
            select(SafetyReport).where(
                SafetyReport.tenant_id == tenant_id, SafetyReport.job_id == job_id
            )
        )

    def get_unscoped(self, job_id: str) -> SafetyReport | None:
        return self.session.scalar(select(SafetyReport).where(SafetyReport.job_id == job_id))

    def release(self, job_id: str, admin: str) -> SafetyReport | None:
        """Mark a quarantined report released by `admin`; None unless it is quarantined."""
        row = self.get_unscoped(job_id)
        if row is None or row.verdict != Verdict.QUARANTINED.value:
            return None
        if row.released_at is None:
            row.released_at = utcnow()
            row.released_by = admin
            self.session.flush()
        return row

    def verdicts(self, tenant_id: str, job_ids: list[str]) -> dict[str, str]:
        """job id → verdict for those of `job_ids` (the tenant's) that have a report."""
        if not job_ids:
            return {}
        rows = self.session.execute(
            select(SafetyReport.job_id, SafetyReport.verdict).where(
                SafetyReport.tenant_id == tenant_id, SafetyReport.job_id.in_(job_ids)
            )
        )
        return {str(job_id): str(verdict) for job_id, verdict in rows}

    def awaiting_release(self, limit: int = 200) -> list[SafetyReport]:
        """Quarantined reports no admin has released yet, oldest first (the review queue)."""
        stmt = (
            select(SafetyReport)
            .where(
                SafetyReport.verdict == Verdict.QUARANTINED.value,
                SafetyReport.released_at.is_(None),
            )
            .order_by(SafetyReport.created_at.asc())
            .limit(limit)
        )
        return list(self.session.scalars(stmt))
