"""Artifacts (the packaged adapter) a job produced."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.ids import ARTIFACT_PREFIX, new_id
from db.models import Artifact


class ArtifactRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        *,
        job_id: str,
        tenant_id: str,
        kind: str,
        storage_path: str,
        sha256: str,
        bytes: int,
        file_id: str | None = None,
    ) -> Artifact:
        artifact = Artifact(
            id=new_id(ARTIFACT_PREFIX),
            job_id=job_id,
            tenant_id=tenant_id,
            kind=kind,
            storage_path=storage_path,
            sha256=sha256,
            bytes=bytes,
            file_id=file_id,
            created_at=utcnow(),
        )
        self.session.add(artifact)
        self.session.flush()
        return artifact

    def for_job(self, tenant_id: str, job_id: str) -> list[Artifact]:
        stmt = (
            select(Artifact)
            .where(Artifact.tenant_id == tenant_id, Artifact.job_id == job_id)
            .order_by(Artifact.created_at)
        )
        return list(self.session.scalars(stmt))
