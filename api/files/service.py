"""Files: validate and register uploads, list/delete, and the adapter download gate."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

import screening
from api.errors import AppError, Conflict, Forbidden, InvalidRequest, NotFound, ServiceUnavailable
from api.quotas.service import check_storage_quota
from dataformats import ValidationReport, validate_jsonl
from db.after_commit import after_commit
from db.base import utcnow
from db.blobs import BlobStore
from db.job_status import TERMINAL_STATUSES, JobStatus
from db.models import File, FilePurpose, FileStatus, FineTuningJob, Verdict
from db.repositories.files import FileRepository
from db.repositories.jobs import JobRepository
from db.repositories.policy import PolicyRepository
from db.repositories.safety_reports import SafetyReportRepository
from db.repositories.screenings import ScreeningRepository
from worker import queue as job_queue

UPLOADABLE_PURPOSES = (FilePurpose.FINE_TUNE.value,)
CHUNK_BYTES = 1 << 20


def file_not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="id")


def check_purpose(purpose: str | None) -> str:
    if purpose not in UPLOADABLE_PURPOSES:
        raise InvalidRequest(
            f"'purpose' must be one of {', '.join(UPLOADABLE_PURPOSES)}.",
            param="purpose",
            code="invalid_purpose",
        )
    return purpose


def _validation_error(report: ValidationReport) -> InvalidRequest:
    details = [{"line": e.line, "field": e.field, "message": e.message} for e in report.errors]
    first = str(report.errors[0]) if report.errors else "the file has no rows"
    more = report.error_count - 1
    suffix = f" (and {more} more problem{'s' if more != 1 else ''})" if more > 0 else ""
    return InvalidRequest(
        f"Invalid training file: {first}{suffix}.",
        param="file",
        code="invalid_file_format",
        details=details,
    )


def register_upload(
    session: Session,
    store: BlobStore,
    *,
    tenant_id: str,
    file_id: str,
    filename: str,
    purpose: str,
    storage_path: str,
    size: int,
    sha256: str,
) -> File:
    """Validate the stored JSONL (every problem with line and field); insert the file row."""
    with store.open(storage_path) as handle:
        report = validate_jsonl(handle)
    if not report.ok:
        store.delete(storage_path)
        raise _validation_error(report)
    # Under the tenant's row lock until this request commits (api.quotas.service).
    check_storage_quota(session, tenant_id, PolicyRepository(session).current(), size)
    return FileRepository(session).add(
        File(
            id=file_id,
            tenant_id=tenant_id,
            filename=filename,
            purpose=purpose,
            bytes=size,
            sha256=sha256,
            storage_path=storage_path,
            status=FileStatus.PROCESSED.value,
            format=report.format.value if report.format else None,
            row_count=report.rows,
            validation={"ok": True, "rows": report.rows, "errors": []},
            created_at=utcnow(),
        )
    )


def get_file(session: Session, tenant_id: str, file_id: str) -> File:
    file = FileRepository(session).get(tenant_id, file_id)
    if file is None:
        raise file_not_found(file_id)
    return file


def delete_file(session: Session, store: BlobStore, tenant_id: str, file_id: str) -> File:
    file = FileRepository(session).soft_delete(tenant_id, file_id)
    if file is None:
        raise file_not_found(file_id)
    # A non-terminal job still reads its training data: keep those bytes until it ends.
    in_use = session.scalar(
        select(FineTuningJob.id).where(
            FineTuningJob.tenant_id == tenant_id,
            (FineTuningJob.training_file_id == file_id)
            | (FineTuningJob.validation_file_id == file_id),
            FineTuningJob.status.not_in([s.value for s in TERMINAL_STATUSES]),
        )
    )
    if in_use is None and file.purpose == FilePurpose.FINE_TUNE.value:
        # Once the deletion commits: a failed commit must not leave a row without its bytes.
        storage_path = file.storage_path
        after_commit(session, lambda: store.delete(storage_path))
    return file


def _withheld(message: str, status_code: int) -> AppError:
    error_cls = Conflict if status_code == 409 else Forbidden
    return error_cls(message, code="adapter_withheld", param="id")


def open_gated_content(session: Session, store: BlobStore, file: File) -> BinaryIO:
    """An open handle to the file's bytes; a result file only passes the adapter gate.

    Gate: the job succeeded ∧ (verdict passed ∨ quarantine released by an admin) ∧ the sha256
    of the stored bytes equals the evaluated sha256. The hash is computed over the same open
    handle that is then streamed (a local file, or one GET of the object spooled to a private
    temp file), so bytes written to the path after the check are never served.
    """
    if file.purpose != FilePurpose.FINE_TUNE_RESULTS.value:
        return _open_or_missing(store, file)
    job = JobRepository(session).get(file.tenant_id, file.job_id or "")
    if job is None or job.status != JobStatus.SUCCEEDED.value:
        raise _withheld("The adapter is withheld: the job has not succeeded.", 409)
    report = SafetyReportRepository(session).get(file.tenant_id, job.id)
    if report is None:
        raise _withheld("The adapter is withheld: no safety report exists.", 409)
    released = report.verdict == Verdict.QUARANTINED.value and report.released_at is not None
    if report.verdict != Verdict.PASSED.value and not released:
        raise _withheld(
            f"The adapter is withheld: the safety evaluation verdict is '{report.verdict}'.", 403
        )
    handle = _open_or_missing(store, file, seekable=True)
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
        digest.update(chunk)
    if digest.hexdigest() != report.evaluated_sha256:
        handle.close()
        raise _withheld(
            "The adapter is withheld: its bytes do not match the evaluated adapter.", 409
        )
    handle.seek(0)
    return handle


def _open_or_missing(store: BlobStore, file: File, *, seekable: bool = False) -> BinaryIO:
    try:
        if seekable:
            return store.open_seekable(file.storage_path)
        return store.open(file.storage_path)
    except FileNotFoundError as exc:
        raise NotFound(f"The content of {file.id} is gone.", param="id") from exc


def iter_and_close(handle: BinaryIO) -> Iterator[bytes]:
    try:
        yield from iter(lambda: handle.read(CHUNK_BYTES), b"")
    finally:
        handle.close()


def screening_status(session: Session, file: File) -> dict[str, Any] | None:
    """The file's finished screening under the current policy (cached by the worker, keyed by
    tenant, sha256 and screening fingerprint), or None when none is cached yet."""
    if file.purpose != FilePurpose.FINE_TUNE.value:
        raise InvalidRequest(
            f"File {file.id} has purpose '{file.purpose}'; only training files are screened.",
            param="id",
            code="invalid_file_purpose",
        )
    policy = PolicyRepository(session).current()
    fingerprint = screening.fingerprint(policy.screening.model_dump(mode="json"))
    cached = ScreeningRepository(session).get(file.tenant_id, file.sha256, fingerprint)
    if cached is None or not file.sha256:
        return None
    return {"summary": cached.summary, "results": cached.results}


def request_screening(tenant_id: str, file_id: str) -> None:
    """Ask the validation worker to screen the file (a duplicate request finds its cache)."""
    try:
        job_queue.enqueue_screening(tenant_id, file_id)
    except Exception as exc:
        raise ServiceUnavailable(
            "The task queue is unavailable; retry shortly.", code="broker_unavailable"
        ) from exc
