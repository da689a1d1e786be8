"""Uploaded files and job result files; every customer lookup is scoped by tenant."""

from __future__ import annotations

import builtins

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.base import utcnow
from db.ids import FILE_PREFIX, new_id
from db.models import File, FilePurpose, FileStatus
from db.repositories.pagination import (
    Page,
    fetch_page,
    order_keys,
    page_after,
)


class FileRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, file: File) -> File:
        self.session.add(file)
        self.session.flush()
        return file

    def add_result_file(
        self,
        *,
        tenant_id: str,
        job_id: str,
        filename: str,
        storage_path: str,
        bytes: int,
        sha256: str,
    ) -> File:
        """Register a job's output (the adapter zip) as a `fine-tune-results` file."""
        return self.add(
            File(
                id=new_id(FILE_PREFIX),
                tenant_id=tenant_id,
                filename=filename,
                purpose=FilePurpose.FINE_TUNE_RESULTS.value,
                bytes=bytes,
                sha256=sha256,
                storage_path=storage_path,
                status=FileStatus.PROCESSED.value,
                job_id=job_id,
                created_at=utcnow(),
            )
        )

    def get(self, tenant_id: str, file_id: str) -> File | None:
        return self.session.scalar(
            select(File).where(
                File.tenant_id == tenant_id, File.id == file_id, File.deleted_at.is_(None)
            )
        )

    def get_unscoped(self, file_id: str) -> File | None:
        return self.session.get(File, file_id)

    def list(
        self,
        tenant_id: str,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 20,
        descending: bool = True,
    ) -> Page[File]:
        stmt = (
            select(File)
            .where(File.tenant_id == tenant_id, File.deleted_at.is_(None))
            .order_by(*order_keys(File.created_at, File.id, descending=descending))
        )
        if purpose is not None:
            stmt = stmt.where(File.purpose == purpose)
        if after is not None:
            stmt = page_after(stmt, self.get(tenant_id, after), after, descending=descending)
        return fetch_page(self.session, stmt, limit)

    def soft_delete_job_results(self, tenant_id: str, job_id: str) -> builtins.list[File]:
        """Mark a job's undeleted result files (its adapter) deleted; return them."""
        files = builtins.list(
            self.session.scalars(
                select(File).where(
                    File.tenant_id == tenant_id,
                    File.job_id == job_id,
                    File.purpose == FilePurpose.FINE_TUNE_RESULTS.value,
                    File.deleted_at.is_(None),
                )
            )
        )
        now = utcnow()
        for file in files:
            file.deleted_at = now
        self.session.flush()
        return files

    def soft_delete(self, tenant_id: str, file_id: str) -> File | None:
        file = self.get(tenant_id, file_id)
        if file is None:
            return None
        file.deleted_at = utcnow()
        self.session.flush()
        return file
