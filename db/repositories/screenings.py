"""Cached screening results (db.models.FileScreening), always scoped by tenant."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import FileScreening


class ScreeningRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, tenant_id: str, sha256: str, fingerprint: str) -> FileScreening | None:
        return self.session.scalar(
            select(FileScreening).where(
                FileScreening.tenant_id == tenant_id,
                FileScreening.sha256 == sha256,
                FileScreening.fingerprint == fingerprint,
            )
        )

    def put(
        self,
        tenant_id: str,
        sha256: str,
        fingerprint: str,
        *,
        summary: dict[str, Any],
        decision: dict[str, Any],
        results: list[dict[str, Any]],
    ) -> FileScreening:
        """Store a finished screening; when a concurrent screen of the same bytes stored it
        first, keep that one (both computed the same result)."""
        row = FileScreening(
            tenant_id=tenant_id,
            sha256=sha256,
            fingerprint=fingerprint,
            summary=summary,
            decision=decision,
            results=results,
            created_at=utcnow(),
        )
        try:
            with self.session.begin_nested():
                self.session.add(row)
        except IntegrityError:
            existing = self.get(tenant_id, sha256, fingerprint)
            assert existing is not None
            return existing
        return row
